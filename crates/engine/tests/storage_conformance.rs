//! One conformance suite for every `Storage` backend: each test function below runs against the
//! in-memory storage, SQLite (a temporary file), a journal file and PostgreSQL (when DSPEX_TEST_PG_URL is set;
//! without it the PostgreSQL tests are skipped with a note, or fail when CI=true).
//!
//! The generated tests are `memory::<test>`, `sqlite::<test>`, `journal::<test>` (an Optuna
//! journal file) and `postgres::<test>` (see
//! `conformance!` at the end), so `cargo test --test storage_conformance sqlite::` runs one
//! backend. PostgreSQL tests share one database and may run in parallel: every study name is
//! unique to its test and process, and listings are filtered to the test's own studies.
//!
//! The contract is the trait's documentation (`storage/mod.rs`) plus what the in-memory backend
//! does. Documented backend differences are allowed explicitly, never by loosening a check:
//! - the SQL and journal backends keep fixed (enqueued) params also in the trial system attribute
//!   `fixed_params` (docs/ARCHITECTURE.md §7), so that attribute may be present, and then equals
//!   the fixed params;
//! - the SQL and journal backends keep datetimes with microsecond precision, so times the storage chose
//!   itself (now) are compared within 1 µs after a reopen.

mod common;
use common::pg_url;
use std::collections::BTreeMap;
use std::fmt::Debug;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use dspex_engine::optimizer::{
    CategoricalDistribution, Distribution, FloatDistribution, IntDistribution, ParamValue,
    SearchSpace, StudyDirection, TrialState,
};
use dspex_engine::storage::{open_url, with_history, ParamContext};
use dspex_engine::{
    AttrMap, AttrValue, EngineError, ErrorCode, InMemoryStorage, SqlOptions, SqlStorage, Storage,
    StudyId, TrialRecord,
};
use serde_json::json;

use StudyDirection::{Maximize, Minimize};
use TrialState::{Complete, Fail, Pruned, Running, Waiting};

// ------------------------------------------------------------------ backends

/// A temporary directory removed on drop.
struct TempDir(std::path::PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// One storage under test, and how to open it again (another process, as far as the database
/// is concerned).
struct Backend {
    storage: Arc<dyn Storage>,
    /// The same storage, for `flush` (SQL only).
    sql: Option<SqlStorage>,
    /// The URL to reopen (SQL only; the in-memory storage "reopens" as itself).
    url: Option<String>,
    /// Prefix of every study name of this test (unique per test and process).
    prefix: String,
    _dir: Option<TempDir>,
}

impl Drop for Backend {
    /// A shared PostgreSQL database keeps no study of a passed test (best effort; a failed
    /// test's studies stay there to look at).
    fn drop(&mut self) {
        if self._dir.is_some() || self.sql.is_none() || std::thread::panicking() {
            return;
        }
        if let Ok(all) = self.storage.get_all_studies() {
            for s in all.iter().filter(|s| s.name.starts_with(&self.prefix)) {
                let _ = self.storage.delete_study(s.study_id);
            }
        }
    }
}

fn unique(test: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("conf-{test}-{}-{nanos:x}", std::process::id())
}

impl Backend {
    fn memory(test: &str) -> Backend {
        Backend {
            storage: Arc::new(InMemoryStorage::new()),
            sql: None,
            url: None,
            prefix: unique(test),
            _dir: None,
        }
    }

    fn sqlite(test: &str) -> Backend {
        let (prefix, dir) = Self::temp_dir(test);
        let url = format!("sqlite:///{}", dir.0.join("conformance.db").display());
        Self::sql(url, prefix, Some(dir))
    }

    fn journal(test: &str) -> Backend {
        let (prefix, dir) = Self::temp_dir(test);
        let url = format!("journal://{}", dir.0.join("journal.log").display());
        Backend {
            storage: open_url(&url).expect("open the journal"),
            sql: None,
            url: Some(url),
            prefix,
            _dir: Some(dir),
        }
    }

    /// The test's study name prefix and a fresh temporary directory named after it.
    fn temp_dir(test: &str) -> (String, TempDir) {
        let prefix = unique(test);
        let dir = std::env::temp_dir().join(format!("dspex-{prefix}"));
        std::fs::create_dir_all(&dir).expect("temp dir");
        (prefix, TempDir(dir))
    }

    fn postgres(test: &str) -> Option<Backend> {
        let url = pg_url()?;
        Some(Self::sql(url, unique(test), None))
    }

    fn sql(url: String, prefix: String, dir: Option<TempDir>) -> Backend {
        let sql = SqlStorage::open(&url, SqlOptions::default()).expect("open the SQL storage");
        Backend {
            storage: Arc::new(sql.clone()),
            sql: Some(sql),
            url: Some(url),
            prefix,
            _dir: dir,
        }
    }

    fn st(&self) -> &dyn Storage {
        self.storage.as_ref()
    }

    /// A study name unique to this test.
    fn name(&self, tag: &str) -> String {
        format!("{}-{tag}", self.prefix)
    }

    fn study(&self, tag: &str, directions: &[StudyDirection]) -> StudyId {
        self.st()
            .create_new_study(directions, Some(&self.name(tag)))
            .unwrap()
    }

    /// A second handle on the same data: a fresh `SqlStorage` on the URL (after writing the
    /// batched updates of running trials), or the in-memory storage itself.
    fn reopen(&self) -> Arc<dyn Storage> {
        match (&self.sql, &self.url) {
            (Some(sql), Some(url)) => {
                sql.flush().unwrap();
                // Loaded three trials at a time: every reopen crosses chunk boundaries.
                let options = SqlOptions {
                    load_chunk: Some(3),
                    ..SqlOptions::default()
                };
                Arc::new(SqlStorage::open(url, options).unwrap())
            }
            (None, Some(url)) => open_url(url).unwrap(),
            _ => self.storage.clone(),
        }
    }
}

// ------------------------------------------------------------------ helpers

fn float(low: f64, high: f64, log: bool) -> Distribution {
    Distribution::Float(FloatDistribution::new(low, high, log, None).unwrap())
}

fn int(low: i64, high: i64, step: i64) -> Distribution {
    Distribution::Int(IntDistribution::new(low, high, false, step).unwrap())
}

fn int_log(low: i64, high: i64) -> Distribution {
    Distribution::Int(IntDistribution::new(low, high, true, 1).unwrap())
}

fn cat(choices: Vec<ParamValue>) -> Distribution {
    Distribution::Categorical(CategoricalDistribution::new(choices).unwrap())
}

fn abc() -> Distribution {
    cat(vec![
        ParamValue::Str("a".into()),
        ParamValue::None,
        ParamValue::Int(2),
    ])
}

/// A time with whole microseconds (what SQL keeps), far from DST changes in most zones.
fn at(micros: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_micros(micros)
}

/// The error of `r`, checked to have `code`.
#[track_caller]
fn err<T: Debug>(r: Result<T, EngineError>, code: ErrorCode) -> EngineError {
    match r {
        Ok(v) => panic!("expected a {} error, got Ok({v:?})", code.as_str()),
        Err(e) => {
            assert_eq!(e.code(), code, "{e:?}");
            e
        }
    }
}

#[track_caller]
fn study_not_found<T: Debug>(r: Result<T, EngineError>) {
    let e = err(r, ErrorCode::NotFound);
    assert!(matches!(e, EngineError::StudyNotFound(_)), "{e:?}");
}

#[track_caller]
fn trial_not_found<T: Debug>(r: Result<T, EngineError>, number: u64) {
    let e = err(r, ErrorCode::NotFound);
    assert_eq!(e, EngineError::TrialNotFound(number));
}

/// Checks a `TrialNotRunning` error about trial `number` in state `state`.
#[track_caller]
fn not_running<T: Debug>(r: Result<T, EngineError>, number: u64, state: TrialState) {
    let e = err(r, ErrorCode::FailedPrecondition);
    match e {
        EngineError::TrialNotRunning {
            number: n,
            state: s,
            ..
        } => assert_eq!((n, s), (number, state), "{e:?}"),
        other => panic!("expected TrialNotRunning, got {other:?}"),
    }
}

#[track_caller]
fn incompatible<T: Debug>(r: Result<T, EngineError>, param: &str) {
    let e = err(r, ErrorCode::InvalidArgument);
    assert!(
        matches!(&e, EngineError::IncompatibleDistribution { name, .. } if name == param),
        "{e:?}"
    );
}

#[track_caller]
fn close_to_now(t: Option<SystemTime>) {
    let t = t.expect("a datetime");
    let now = SystemTime::now();
    let d = now.duration_since(t).unwrap_or_else(|e| e.duration());
    assert!(d < Duration::from_secs(60), "{t:?} is not now ({now:?})");
}

/// NaN-aware float equality.
fn same_f64(a: f64, b: f64) -> bool {
    a == b || (a.is_nan() && b.is_nan())
}

fn same_values(a: &Option<Vec<f64>>, b: &Option<Vec<f64>>) -> bool {
    match (a, b) {
        (None, None) => true,
        (Some(a), Some(b)) => a.len() == b.len() && a.iter().zip(b).all(|(x, y)| same_f64(*x, *y)),
        _ => false,
    }
}

#[track_caller]
fn same_times(a: Option<SystemTime>, b: Option<SystemTime>, what: &str) {
    match (a, b) {
        (None, None) => {}
        (Some(a), Some(b)) => {
            let d = a.duration_since(b).unwrap_or_else(|e| e.duration());
            assert!(d < Duration::from_micros(1), "{what}: {a:?} vs {b:?}");
        }
        _ => panic!("{what}: {a:?} vs {b:?}"),
    }
}

/// The system attributes a caller set: without `fixed_params`, which the SQL backend also
/// keeps there (and which must then equal the record's fixed params).
#[track_caller]
fn caller_system_attrs(t: &TrialRecord) -> AttrMap {
    let mut attrs = t.system_attrs.clone();
    if let Some(v) = attrs.remove("fixed_params") {
        let fixed = t
            .fixed_params
            .as_ref()
            .expect("fixed_params attribute without fixed params");
        let expected: serde_json::Map<String, AttrValue> = fixed
            .iter()
            .map(|(k, v)| (k.clone(), v.to_json()))
            .collect();
        assert_eq!(v, AttrValue::Object(expected), "trial {}", t.number);
    }
    attrs
}

/// Two records of one trial read through two handles.
#[track_caller]
fn same_record(a: &TrialRecord, b: &TrialRecord) {
    let n = a.number;
    assert_eq!(a.number, b.number);
    assert_eq!(a.state, b.state, "trial {n}");
    assert_eq!(a.params, b.params, "trial {n}");
    assert_eq!(a.internal_params, b.internal_params, "trial {n}");
    assert_eq!(a.distributions, b.distributions, "trial {n}");
    assert!(
        same_values(&a.values, &b.values),
        "trial {n}: {:?} vs {:?}",
        a.values,
        b.values
    );
    assert_eq!(
        a.intermediate_values.keys().collect::<Vec<_>>(),
        b.intermediate_values.keys().collect::<Vec<_>>(),
        "trial {n}"
    );
    for (s, v) in &a.intermediate_values {
        assert!(same_f64(*v, b.intermediate_values[s]), "trial {n} step {s}");
    }
    assert_eq!(a.user_attrs, b.user_attrs, "trial {n}");
    assert_eq!(a.system_attrs, b.system_attrs, "trial {n}");
    same_times(
        a.datetime_start,
        b.datetime_start,
        &format!("trial {n} start"),
    );
    same_times(
        a.datetime_complete,
        b.datetime_complete,
        &format!("trial {n} complete"),
    );
    assert_eq!(a.fail_reason, b.fail_reason, "trial {n}");
    assert_eq!(a.fixed_params, b.fixed_params, "trial {n}");
}

fn complete(st: &dyn Storage, s: StudyId, n: u64, v: f64) {
    st.set_trial_state_values(s, n, Complete, Some(vec![v]), None)
        .unwrap();
}

fn waiting(fixed: &[(&str, ParamValue)]) -> TrialRecord {
    let mut t = TrialRecord::new(0, Waiting);
    t.fixed_params = Some(
        fixed
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect(),
    );
    t
}

/// A study id no backend has.
const NO_STUDY: StudyId = 999_999_999;
/// A trial number no test reaches.
const NO_TRIAL: u64 = 10_000;

// ------------------------------------------------------------------ studies

fn studies_create_get_delete(b: &Backend) {
    let st = b.st();
    let name = b.name("s");
    let s = st
        .create_new_study(&[Minimize, Maximize], Some(&name))
        .unwrap();
    assert_eq!(st.get_study_id_from_name(&name).unwrap(), s);
    assert_eq!(st.get_study_name(s).unwrap(), name);
    assert_eq!(
        st.get_study_directions(s).unwrap(),
        vec![Minimize, Maximize]
    );
    // A taken name.
    let e = err(
        st.create_new_study(&[Minimize], Some(&name)),
        ErrorCode::AlreadyExists,
    );
    assert_eq!(e, EngineError::DuplicatedStudy(name.clone()));
    assert_eq!(
        st.get_study_directions(s).unwrap(),
        vec![Minimize, Maximize]
    );
    // No direction.
    err(
        st.create_new_study(&[], Some(&b.name("nodir"))),
        ErrorCode::InvalidArgument,
    );
    study_not_found(st.get_study_id_from_name(&b.name("nodir")));
    // Generated names are unique and can be looked up.
    let u1 = st.create_new_study(&[Maximize], None).unwrap();
    let u2 = st.create_new_study(&[Maximize], None).unwrap();
    assert!(u1 != u2 && u1 != s && u2 != s);
    let (n1, n2) = (
        st.get_study_name(u1).unwrap(),
        st.get_study_name(u2).unwrap(),
    );
    assert!(!n1.is_empty() && n1 != n2, "{n1:?} {n2:?}");
    assert_eq!(st.get_study_id_from_name(&n1).unwrap(), u1);
    assert_eq!(st.get_study_directions(u2).unwrap(), vec![Maximize]);
    // Deletion takes the study and its trials; other studies stay.
    st.create_new_trial(s, None).unwrap();
    st.create_new_trial(u1, None).unwrap();
    st.delete_study(s).unwrap();
    study_not_found(st.get_study_id_from_name(&name));
    study_not_found(st.get_study_name(s));
    study_not_found(st.get_study_directions(s));
    study_not_found(st.get_all_trials(s, None));
    study_not_found(st.delete_study(s));
    assert!(st.get_all_studies().unwrap().iter().all(|x| x.name != name));
    assert_eq!(st.get_study_name(u1).unwrap(), n1);
    assert_eq!(st.get_n_trials(u1, None).unwrap(), 1);
    // The name can be used again, for a fresh study.
    let again = st.create_new_study(&[Maximize], Some(&name)).unwrap();
    assert_eq!(st.get_study_id_from_name(&name).unwrap(), again);
    assert_eq!(st.get_study_directions(again).unwrap(), vec![Maximize]);
    assert_eq!(st.get_n_trials(again, None).unwrap(), 0);
    assert_eq!(st.create_new_trial(again, None).unwrap(), 0);
    for id in [u1, u2, again] {
        st.delete_study(id).unwrap();
    }
}

fn studies_listed_with_summaries(b: &Backend) {
    let st = b.st();
    let a = b.study("a", &[Minimize]);
    let m = b.study("m", &[Maximize, Minimize]);
    st.set_study_user_attr(a, "owner", json!("me")).unwrap();
    st.set_study_system_attr(m, "sys", json!([1, 2])).unwrap();
    for _ in 0..3 {
        st.create_new_trial(a, None).unwrap();
    }
    st.create_new_trial(a, Some(&waiting(&[]))).unwrap();
    let all = st.get_all_studies().unwrap();
    // Other tests may share the database: look at ours only, in the listed order.
    let ours: Vec<_> = all
        .iter()
        .filter(|x| x.study_id == a || x.study_id == m)
        .collect();
    assert_eq!(ours.len(), 2, "{all:?}");
    let ids: Vec<_> = all.iter().map(|x| x.study_id).collect();
    let mut sorted = ids.clone();
    sorted.sort();
    assert_eq!(ids, sorted, "studies are listed by id");
    let sa = ours.iter().find(|x| x.study_id == a).unwrap();
    let sm = ours.iter().find(|x| x.study_id == m).unwrap();
    assert_eq!(sa.name, b.name("a"));
    assert_eq!(sa.directions, vec![Minimize]);
    assert_eq!(sa.n_trials, 4);
    assert_eq!(
        sa.user_attrs,
        AttrMap::from([("owner".into(), json!("me"))])
    );
    assert!(sa.system_attrs.is_empty());
    // Undocumented which time it is (study creation or first trial start); with trials, a
    // time in the past.
    close_to_now(sa.datetime_start);
    assert_eq!(sm.name, b.name("m"));
    assert_eq!(sm.directions, vec![Maximize, Minimize]);
    assert_eq!(sm.n_trials, 0);
    assert!(sm.user_attrs.is_empty());
    assert_eq!(
        sm.system_attrs,
        AttrMap::from([("sys".into(), json!([1, 2]))])
    );
}

fn study_attrs(b: &Backend) {
    let st = b.st();
    let s = b.study("s", &[Minimize]);
    let other = b.study("other", &[Minimize]);
    assert!(st.get_study_user_attrs(s).unwrap().is_empty());
    assert!(st.get_study_system_attrs(s).unwrap().is_empty());
    let values = [
        ("null", json!(null)),
        ("bool", json!(true)),
        ("int", json!(-3)),
        ("float", json!(2.5)),
        ("str", json!("x \"quoted\" é")),
        ("list", json!([1, "a", null, [2]])),
        ("obj", json!({"k": {"n": [1, 2]}, "e": {}})),
    ];
    for (k, v) in &values {
        st.set_study_user_attr(s, k, v.clone()).unwrap();
    }
    st.set_study_system_attr(s, "int", json!("system")).unwrap();
    st.set_study_system_attr(s, "only_system", json!(1))
        .unwrap();
    // Overwrite.
    st.set_study_user_attr(s, "int", json!(4)).unwrap();
    st.set_study_system_attr(s, "only_system", json!(2))
        .unwrap();
    let mut expected: AttrMap = values
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect();
    expected.insert("int".into(), json!(4));
    assert_eq!(st.get_study_user_attrs(s).unwrap(), expected);
    assert_eq!(
        st.get_study_system_attrs(s).unwrap(),
        AttrMap::from([
            ("int".into(), json!("system")),
            ("only_system".into(), json!(2)),
        ])
    );
    // Per study.
    assert!(st.get_study_user_attrs(other).unwrap().is_empty());
    assert!(st.get_study_system_attrs(other).unwrap().is_empty());
    // Another handle reads them.
    let st2 = b.reopen();
    assert_eq!(st2.get_study_user_attrs(s).unwrap(), expected);
    assert_eq!(st2.get_study_system_attrs(s).unwrap().len(), 2);
}

fn missing_studies_are_not_found(b: &Backend) {
    let st = b.st();
    let x = NO_STUDY;
    study_not_found(st.get_study_id_from_name(&b.name("nope")));
    study_not_found(st.delete_study(x));
    study_not_found(st.get_study_name(x));
    study_not_found(st.get_study_directions(x));
    study_not_found(st.set_study_user_attr(x, "k", json!(1)));
    study_not_found(st.set_study_system_attr(x, "k", json!(1)));
    study_not_found(st.get_study_user_attrs(x));
    study_not_found(st.get_study_system_attrs(x));
    study_not_found(st.create_new_trial(x, None));
    study_not_found(st.create_new_trial(x, Some(&waiting(&[]))));
    study_not_found(st.pop_waiting_trial(x));
    study_not_found(st.set_trial_param(x, 0, "p", 0.5, &float(0.0, 1.0, false)));
    study_not_found(st.set_trial_relative_params(x, 0, &BTreeMap::new(), &SearchSpace::new()));
    study_not_found(st.set_trial_fixed_params(x, 0, BTreeMap::new()));
    study_not_found(st.set_trial_state_values(x, 0, Complete, Some(vec![1.0]), None));
    study_not_found(st.set_trial_intermediate_value(x, 0, 0, 1.0));
    study_not_found(st.set_trial_user_attr(x, 0, "k", json!(1)));
    study_not_found(st.set_trial_system_attr(x, 0, "k", json!(1)));
    study_not_found(st.get_trial(x, 0));
    study_not_found(st.get_trial_state(x, 0));
    study_not_found(st.get_all_trials(x, None));
    study_not_found(st.get_n_trials(x, None));
    study_not_found(st.param_context(x, 0, "p"));
    study_not_found(with_history(st, x, |h| h.trials().len()));
}

fn missing_trials_are_not_found(b: &Backend) {
    let st = b.st();
    let s = b.study("s", &[Minimize]);
    st.create_new_trial(s, None).unwrap();
    let x = NO_TRIAL;
    trial_not_found(st.get_trial(s, x), x);
    trial_not_found(st.get_trial_state(s, x), x);
    trial_not_found(
        st.set_trial_param(s, x, "p", 0.5, &float(0.0, 1.0, false)),
        x,
    );
    trial_not_found(
        st.set_trial_relative_params(s, x, &BTreeMap::new(), &SearchSpace::new()),
        x,
    );
    trial_not_found(st.set_trial_fixed_params(s, x, BTreeMap::new()), x);
    trial_not_found(
        st.set_trial_state_values(s, x, Complete, Some(vec![1.0]), None),
        x,
    );
    trial_not_found(st.set_trial_intermediate_value(s, x, 0, 1.0), x);
    trial_not_found(st.set_trial_user_attr(s, x, "k", json!(1)), x);
    trial_not_found(st.set_trial_system_attr(s, x, "k", json!(1)), x);
    trial_not_found(st.param_context(s, x, "p"), x);
    // Nothing was created on the way.
    assert_eq!(st.get_n_trials(s, None).unwrap(), 1);
}

// ------------------------------------------------------------------ trial creation

fn trial_numbers_are_dense_per_study(b: &Backend) {
    let st = b.st();
    let s1 = b.study("one", &[Minimize]);
    let s2 = b.study("two", &[Minimize, Maximize]);
    for i in 0..4u64 {
        assert_eq!(st.create_new_trial(s1, None).unwrap(), 2 * i);
        assert_eq!(st.create_new_trial(s2, None).unwrap(), i);
        // Templates and WAITING trials take numbers too.
        let t = if i % 2 == 0 {
            waiting(&[])
        } else {
            // The template's number is ignored: the storage numbers trials.
            TrialRecord::new(1234, Pruned)
        };
        assert_eq!(st.create_new_trial(s1, Some(&t)).unwrap(), 2 * i + 1);
    }
    assert_eq!(st.get_n_trials(s1, None).unwrap(), 8);
    assert_eq!(st.get_n_trials(s2, None).unwrap(), 4);
    let numbers = |s| {
        st.get_all_trials(s, None)
            .unwrap()
            .iter()
            .map(|t| t.number)
            .collect::<Vec<_>>()
    };
    assert_eq!(numbers(s1), (0..8).collect::<Vec<_>>());
    assert_eq!(numbers(s2), (0..4).collect::<Vec<_>>());
    for n in 0..8 {
        assert_eq!(st.get_trial(s1, n).unwrap().number, n);
    }
    // Popping a WAITING trial keeps its number; new trials continue after the last.
    assert_eq!(st.pop_waiting_trial(s1).unwrap(), Some(1));
    assert_eq!(st.create_new_trial(s1, None).unwrap(), 8);
    // Deleting a study does not renumber another.
    st.delete_study(s2).unwrap();
    assert_eq!(st.create_new_trial(s1, None).unwrap(), 9);
}

fn new_trial_is_running_and_empty(b: &Backend) {
    let st = b.st();
    let s = b.study("s", &[Minimize]);
    let n = st.create_new_trial(s, None).unwrap();
    let t = st.get_trial(s, n).unwrap();
    assert_eq!(t.number, n);
    assert_eq!(t.state, Running);
    assert_eq!(st.get_trial_state(s, n).unwrap(), Running);
    close_to_now(t.datetime_start);
    assert_eq!(t.datetime_complete, None);
    assert!(t.params.is_empty() && t.internal_params.is_empty() && t.distributions.is_empty());
    assert_eq!(t.values, None);
    assert!(t.intermediate_values.is_empty());
    assert!(t.user_attrs.is_empty() && t.system_attrs.is_empty());
    assert_eq!(t.fail_reason, None);
    assert_eq!(t.fixed_params, None);
    // A running trial can be finished.
    complete(st, s, n, 1.0);
}

/// A template with every field set, as `add_trial` passes it.
fn full_template(state: TrialState) -> TrialRecord {
    let mut t = TrialRecord::new(5, state);
    for (name, internal, dist) in [
        ("x", 0.25, float(0.0, 1.0, false)),
        ("lr", 1e-3, float(1e-5, 1.0, true)),
        ("i", 4.0, int(0, 10, 2)),
        ("c", 1.0, abc()),
    ] {
        t.params.insert(name.into(), dist.to_external(internal));
        t.internal_params.insert(name.into(), internal);
        t.distributions.insert(name.into(), dist);
    }
    t.intermediate_values = BTreeMap::from([
        (0, 1.5),
        (1, f64::INFINITY),
        (2, f64::NEG_INFINITY),
        (3, f64::NAN),
        (10, -0.5),
    ]);
    t.user_attrs = AttrMap::from([
        ("u".into(), json!({"nested": [1, 2.5, "x"]})),
        ("n".into(), json!(null)),
    ]);
    t.system_attrs = AttrMap::from([("s".into(), json!("v"))]);
    t.datetime_start = Some(at(1_700_000_000_123_456));
    if state.is_finished() {
        t.datetime_complete = Some(at(1_700_000_042_654_321));
    }
    t
}

#[track_caller]
fn check_template_fields(got: &TrialRecord, t: &TrialRecord) {
    assert_eq!(got.params, t.params);
    assert_eq!(
        got.params["c"],
        ParamValue::None,
        "categoricals come back as their choice"
    );
    assert_eq!(got.params["i"], ParamValue::Int(4));
    assert_eq!(got.internal_params, t.internal_params);
    assert_eq!(got.distributions, t.distributions);
    assert_eq!(got.intermediate_values.len(), t.intermediate_values.len());
    for (s, v) in &t.intermediate_values {
        assert!(same_f64(got.intermediate_values[s], *v), "step {s}");
    }
    assert_eq!(got.user_attrs, t.user_attrs);
}

fn template_trials_keep_every_field(b: &Backend) {
    let st = b.st();
    let s = b.study("s", &[Minimize, Maximize]);
    // COMPLETE, with infinite values.
    let mut c = full_template(Complete);
    c.values = Some(vec![0.5, f64::INFINITY]);
    let n = st.create_new_trial(s, Some(&c)).unwrap();
    let got = st.get_trial(s, n).unwrap();
    assert_eq!(got.number, n);
    assert_eq!(got.state, Complete);
    assert_eq!(got.values, Some(vec![0.5, f64::INFINITY]));
    check_template_fields(&got, &c);
    assert_eq!(caller_system_attrs(&got), c.system_attrs);
    assert_eq!(got.datetime_start, c.datetime_start);
    assert_eq!(got.datetime_complete, c.datetime_complete);
    assert_eq!(got.fail_reason, None);
    // PRUNED, with and without values, and without times (the storage sets them).
    let mut p = full_template(Pruned);
    p.values = Some(vec![-1.0, 2.0]);
    let np = st.create_new_trial(s, Some(&p)).unwrap();
    let got = st.get_trial(s, np).unwrap();
    assert_eq!(got.state, Pruned);
    assert_eq!(got.values, Some(vec![-1.0, 2.0]));
    check_template_fields(&got, &p);
    let bare = TrialRecord::new(0, Pruned);
    let nb = st.create_new_trial(s, Some(&bare)).unwrap();
    let got = st.get_trial(s, nb).unwrap();
    assert_eq!(got.values, None);
    close_to_now(got.datetime_start);
    close_to_now(got.datetime_complete);
    // FAIL with a reason: kept as the field and as the system attribute `fail_reason`.
    let mut f = full_template(Fail);
    f.fail_reason = Some("it broke".into());
    let nf = st.create_new_trial(s, Some(&f)).unwrap();
    let got = st.get_trial(s, nf).unwrap();
    assert_eq!(got.state, Fail);
    assert_eq!(got.values, None);
    assert_eq!(got.fail_reason.as_deref(), Some("it broke"));
    let mut sys = f.system_attrs.clone();
    sys.insert("fail_reason".into(), json!("it broke"));
    assert_eq!(caller_system_attrs(&got), sys);
    // A reason on a trial that did not fail is not recorded.
    let mut cr = TrialRecord::new(0, Complete);
    cr.values = Some(vec![1.0, 2.0]);
    cr.fail_reason = Some("ignored".into());
    let ncr = st.create_new_trial(s, Some(&cr)).unwrap();
    let got = st.get_trial(s, ncr).unwrap();
    assert_eq!(got.fail_reason, None);
    assert!(!got.system_attrs.contains_key("fail_reason"));
    // RUNNING: the params etc. are there, the trial is unfinished and can be finished.
    let r = full_template(Running);
    let nr = st.create_new_trial(s, Some(&r)).unwrap();
    let got = st.get_trial(s, nr).unwrap();
    assert_eq!(got.state, Running);
    check_template_fields(&got, &r);
    assert_eq!(got.datetime_start, r.datetime_start);
    assert_eq!(got.datetime_complete, None);
    assert_eq!(got.values, None);
    st.set_trial_intermediate_value(s, nr, 11, 3.0).unwrap();
    st.set_trial_state_values(s, nr, Complete, Some(vec![1.0, 2.0]), None)
        .unwrap();
    let got = st.get_trial(s, nr).unwrap();
    assert_eq!(got.state, Complete);
    assert_eq!(got.intermediate_values.len(), 6);
    close_to_now(got.datetime_complete);
    // RUNNING without a start time starts now.
    let nr2 = st
        .create_new_trial(s, Some(&TrialRecord::new(0, Running)))
        .unwrap();
    close_to_now(st.get_trial(s, nr2).unwrap().datetime_start);
    // The study's parameter distributions now include the template's.
    let ctx = st.param_context(s, nr2, "lr").unwrap();
    assert_eq!(ctx.study_distribution, Some(float(1e-5, 1.0, true)));
    reads_the_same_after_reopen(b, s);
}

/// Another handle on the same storage reads every trial of study `s` as this one does.
fn reads_the_same_after_reopen(b: &Backend, s: StudyId) {
    let st = b.st();
    let st2 = b.reopen();
    let here = st.get_all_trials(s, None).unwrap();
    let there = st2.get_all_trials(s, None).unwrap();
    assert_eq!(here.len(), there.len());
    for (a, b2) in here.iter().zip(there.iter()) {
        same_record(a, b2);
    }
}

fn invalid_templates_create_nothing(b: &Backend) {
    let st = b.st();
    let s = b.study("s", &[Minimize, Minimize]);
    let n0 = st.create_new_trial(s, None).unwrap();
    st.set_trial_param(s, n0, "x", 0.5, &float(0.0, 1.0, false))
        .unwrap();
    st.set_trial_param(s, n0, "c", 0.0, &abc()).unwrap();
    let complete_with = |values: Option<Vec<f64>>| {
        let mut t = TrialRecord::new(0, Complete);
        t.values = values;
        t
    };
    // COMPLETE needs one value per direction, none of them NaN.
    for values in [
        None,
        Some(vec![]),
        Some(vec![1.0]),
        Some(vec![1.0, 2.0, 3.0]),
    ] {
        err(
            st.create_new_trial(s, Some(&complete_with(values))),
            ErrorCode::InvalidArgument,
        );
    }
    err(
        st.create_new_trial(s, Some(&complete_with(Some(vec![1.0, f64::NAN])))),
        ErrorCode::InvalidArgument,
    );
    let with_param = |name: &str, internal: f64, dist: Option<Distribution>| {
        let mut t = complete_with(Some(vec![1.0, 2.0]));
        t.internal_params.insert(name.into(), internal);
        if let Some(d) = dist {
            t.params.insert(name.into(), d.to_external(internal));
            t.distributions.insert(name.into(), d);
        }
        t
    };
    // A value outside its distribution.
    err(
        st.create_new_trial(s, Some(&with_param("y", 2.0, Some(float(0.0, 1.0, false))))),
        ErrorCode::InvalidArgument,
    );
    err(
        st.create_new_trial(s, Some(&with_param("j", 3.0, Some(int(0, 10, 2))))),
        ErrorCode::InvalidArgument,
    );
    // A parameter without a distribution.
    err(
        st.create_new_trial(s, Some(&with_param("z", 0.5, None))),
        ErrorCode::InvalidArgument,
    );
    // Distributions incompatible with the study's (another kind, log, other choices).
    incompatible(
        st.create_new_trial(s, Some(&with_param("x", 0.5, Some(float(1e-3, 1.0, true))))),
        "x",
    );
    incompatible(
        st.create_new_trial(s, Some(&with_param("x", 1.0, Some(int(0, 5, 1))))),
        "x",
    );
    incompatible(
        st.create_new_trial(
            s,
            Some(&with_param("c", 0.0, Some(cat(vec![ParamValue::Int(1)])))),
        ),
        "c",
    );
    // The same checks for a WAITING template.
    let mut w = waiting(&[]);
    w.internal_params.insert("x".into(), 1.0);
    w.distributions.insert("x".into(), int(0, 5, 1));
    incompatible(st.create_new_trial(s, Some(&w)), "x");
    assert_eq!(st.get_n_trials(s, None).unwrap(), 1);
    assert_eq!(st.pop_waiting_trial(s).unwrap(), None);
    // A compatible one (another range, same kind) is fine.
    let n = st
        .create_new_trial(s, Some(&with_param("x", 2.0, Some(float(0.0, 4.0, false)))))
        .unwrap();
    assert_eq!(n, 1);
    assert_eq!(st.get_n_trials(s, None).unwrap(), 2);
}

// ------------------------------------------------------------------ running trials

fn params_and_distribution_compatibility(b: &Backend) {
    let st = b.st();
    let s = b.study("s", &[Minimize]);
    let n = st.create_new_trial(s, None).unwrap();
    let (fx, fl, fi, fc) = (
        float(-1.0, 1.0, false),
        float(1e-4, 1.0, true),
        int(0, 10, 2),
        abc(),
    );
    st.set_trial_param(s, n, "x", -0.5, &fx).unwrap();
    st.set_trial_param(s, n, "lr", 0.01, &fl).unwrap();
    st.set_trial_param(s, n, "i", 6.0, &fi).unwrap();
    st.set_trial_param(s, n, "c", 2.0, &fc).unwrap();
    let t = st.get_trial(s, n).unwrap();
    assert_eq!(
        t.params,
        BTreeMap::from([
            ("c".to_string(), ParamValue::Int(2)),
            ("i".to_string(), ParamValue::Int(6)),
            ("lr".to_string(), ParamValue::Float(0.01)),
            ("x".to_string(), ParamValue::Float(-0.5)),
        ])
    );
    assert_eq!(
        t.internal_params,
        BTreeMap::from([
            ("c".to_string(), 2.0),
            ("i".to_string(), 6.0),
            ("lr".to_string(), 0.01),
            ("x".to_string(), -0.5),
        ])
    );
    assert_eq!(t.distributions["x"], fx);
    assert_eq!(t.distributions["lr"], fl);
    assert_eq!(t.distributions["i"], fi);
    assert_eq!(t.distributions["c"], fc);
    // Same name, same distribution: the value is replaced.
    st.set_trial_param(s, n, "x", 0.75, &fx).unwrap();
    assert_eq!(st.get_trial(s, n).unwrap().internal_params["x"], 0.75);
    // Same trial, another (even compatible) distribution: refused.
    incompatible(
        st.set_trial_param(s, n, "x", 0.5, &float(0.0, 2.0, false)),
        "x",
    );
    // Incompatible with the study: another kind, log setting or choices.
    incompatible(st.set_trial_param(s, n, "x", 1.0, &int(0, 3, 1)), "x");
    incompatible(st.set_trial_param(s, n, "i", 2.0, &int_log(1, 16)), "i");
    incompatible(
        st.set_trial_param(
            s,
            n,
            "c",
            0.0,
            &cat(vec![ParamValue::Int(2), ParamValue::None]),
        ),
        "c",
    );
    // Outside the distribution.
    err(
        st.set_trial_param(s, n, "y", 2.0, &fx),
        ErrorCode::InvalidArgument,
    );
    err(
        st.set_trial_param(s, n, "j", 3.0, &fi),
        ErrorCode::InvalidArgument,
    );
    err(
        st.set_trial_param(s, n, "d", 3.0, &fc),
        ErrorCode::InvalidArgument,
    );
    let t = st.get_trial(s, n).unwrap();
    assert_eq!(
        t.params.len(),
        4,
        "failed calls change nothing: {:?}",
        t.params
    );
    assert_eq!(t.internal_params["x"], 0.75);
    complete(st, s, n, 0.0);
    // A later trial may use another range of the same kind; the study keeps the first
    // distribution per name.
    let m = st.create_new_trial(s, None).unwrap();
    st.set_trial_param(s, m, "x", 3.0, &float(0.0, 5.0, false))
        .unwrap();
    st.set_trial_param(s, m, "i", 7.0, &int(1, 9, 1)).unwrap();
    incompatible(
        st.set_trial_param(s, m, "lr", 0.5, &float(1e-4, 1.0, false)),
        "lr",
    );
    incompatible(
        st.set_trial_param(s, m, "c", 1.0, &float(0.0, 2.0, false)),
        "c",
    );
    assert_eq!(
        st.param_context(s, m, "x").unwrap().study_distribution,
        Some(fx.clone())
    );
    let t = st.get_trial(s, m).unwrap();
    assert_eq!(t.params["x"], ParamValue::Float(3.0));
    assert_eq!(t.params["i"], ParamValue::Int(7));
    // Only RUNNING trials take params.
    not_running(st.set_trial_param(s, n, "z", 0.0, &fx), n, Complete);
    let w = st.create_new_trial(s, Some(&waiting(&[]))).unwrap();
    not_running(st.set_trial_param(s, w, "z", 0.0, &fx), w, Waiting);
    // What another handle reads.
    let st2 = b.reopen();
    for k in [n, m] {
        same_record(&st.get_trial(s, k).unwrap(), &st2.get_trial(s, k).unwrap());
    }
}

fn intermediate_values(b: &Backend) {
    let st = b.st();
    let s = b.study("s", &[Minimize]);
    let n = st.create_new_trial(s, None).unwrap();
    assert!(st.set_trial_intermediate_value(s, n, 0, 1.0).unwrap());
    assert!(st
        .set_trial_intermediate_value(s, n, 3, f64::INFINITY)
        .unwrap());
    assert!(st
        .set_trial_intermediate_value(s, n, 1, f64::NEG_INFINITY)
        .unwrap());
    assert!(st.set_trial_intermediate_value(s, n, 2, f64::NAN).unwrap());
    assert!(st.set_trial_intermediate_value(s, n, 100, -2.5).unwrap());
    // A step already reported: false, and the first value stays.
    assert!(!st.set_trial_intermediate_value(s, n, 0, 9.0).unwrap());
    assert!(!st.set_trial_intermediate_value(s, n, 2, 9.0).unwrap());
    let check = |t: &TrialRecord| {
        let iv = &t.intermediate_values;
        assert_eq!(
            iv.keys().copied().collect::<Vec<_>>(),
            vec![0, 1, 2, 3, 100]
        );
        assert_eq!(iv[&0], 1.0);
        assert_eq!(iv[&1], f64::NEG_INFINITY);
        assert!(iv[&2].is_nan());
        assert_eq!(iv[&3], f64::INFINITY);
        assert_eq!(iv[&100], -2.5);
        assert_eq!(t.last_step(), Some((100, -2.5)));
    };
    check(&st.get_trial(s, n).unwrap());
    // Visible to samplers and pruners.
    let hv = with_history(st, s, |h| h.trial(n).unwrap().intermediate_values.clone()).unwrap();
    assert_eq!(hv.len(), 5);
    st.set_trial_state_values(s, n, Pruned, Some(vec![-2.5]), None)
        .unwrap();
    check(&st.get_trial(s, n).unwrap());
    // Only RUNNING trials take reports.
    not_running(st.set_trial_intermediate_value(s, n, 101, 0.0), n, Pruned);
    not_running(st.set_trial_intermediate_value(s, n, 0, 0.0), n, Pruned);
    let w = st.create_new_trial(s, Some(&waiting(&[]))).unwrap();
    not_running(st.set_trial_intermediate_value(s, w, 0, 0.0), w, Waiting);
    check(&b.reopen().get_trial(s, n).unwrap());
}

fn finishing_trials(b: &Backend) {
    let st = b.st();
    let s = b.study("s", &[Minimize, Maximize]);
    let new = || st.create_new_trial(s, None).unwrap();
    // COMPLETE: one value per direction (infinite is fine), not NaN; a refused finish leaves
    // the trial RUNNING.
    let c = new();
    for values in [None, Some(vec![1.0]), Some(vec![1.0, 2.0, 3.0])] {
        err(
            st.set_trial_state_values(s, c, Complete, values, None),
            ErrorCode::InvalidArgument,
        );
    }
    err(
        st.set_trial_state_values(s, c, Complete, Some(vec![f64::NAN, 1.0]), None),
        ErrorCode::InvalidArgument,
    );
    assert_eq!(st.get_trial_state(s, c).unwrap(), Running);
    assert_eq!(st.get_trial(s, c).unwrap().datetime_complete, None);
    st.set_trial_state_values(s, c, Complete, Some(vec![f64::NEG_INFINITY, 2.0]), None)
        .unwrap();
    let t = st.get_trial(s, c).unwrap();
    assert_eq!(t.state, Complete);
    assert_eq!(t.values, Some(vec![f64::NEG_INFINITY, 2.0]));
    assert_eq!(t.fail_reason, None);
    close_to_now(t.datetime_complete);
    assert!(t.datetime_complete >= t.datetime_start);
    assert!(t.duration().is_some());
    // PRUNED, with or without values.
    let p = new();
    st.set_trial_state_values(s, p, Pruned, Some(vec![0.5, 0.25]), None)
        .unwrap();
    assert_eq!(st.get_trial(s, p).unwrap().values, Some(vec![0.5, 0.25]));
    let p2 = new();
    st.set_trial_state_values(s, p2, Pruned, None, None)
        .unwrap();
    assert_eq!(st.get_trial(s, p2).unwrap().values, None);
    // FAIL records its reason (field and system attribute) ...
    let f = new();
    st.set_trial_system_attr(s, f, "kept", json!(1)).unwrap();
    st.set_trial_state_values(s, f, Fail, None, Some("boom: \"quoted\"".into()))
        .unwrap();
    let t = st.get_trial(s, f).unwrap();
    assert_eq!(t.state, Fail);
    assert_eq!(t.values, None);
    assert_eq!(t.fail_reason.as_deref(), Some("boom: \"quoted\""));
    assert_eq!(
        caller_system_attrs(&t),
        AttrMap::from([
            ("fail_reason".into(), json!("boom: \"quoted\"")),
            ("kept".into(), json!(1)),
        ])
    );
    close_to_now(t.datetime_complete);
    // ... when it has one; other states ignore it.
    let f2 = new();
    st.set_trial_state_values(s, f2, Fail, None, None).unwrap();
    let t = st.get_trial(s, f2).unwrap();
    assert_eq!(t.fail_reason, None);
    assert!(t.system_attrs.is_empty());
    let c2 = new();
    st.set_trial_state_values(s, c2, Complete, Some(vec![1.0, 1.0]), Some("no".into()))
        .unwrap();
    let t = st.get_trial(s, c2).unwrap();
    assert_eq!(t.fail_reason, None);
    assert!(t.system_attrs.is_empty());
    // A finished trial cannot be finished (or restarted) again, and stays as it was.
    for (n, state) in [(c, Complete), (p, Pruned), (f, Fail)] {
        let before = st.get_trial(s, n).unwrap();
        for to in [Complete, Pruned, Fail, Running, Waiting] {
            let e = err(
                st.set_trial_state_values(s, n, to, Some(vec![0.0, 0.0]), Some("again".into())),
                ErrorCode::FailedPrecondition,
            );
            assert!(
                matches!(e, EngineError::TrialNotRunning { number, state: got, .. } if number == n && got == state),
                "{e:?}"
            );
        }
        same_record(&before, &st.get_trial(s, n).unwrap());
    }
    // A running trial cannot go back to WAITING or "start" again.
    let r = new();
    for to in [Running, Waiting] {
        err(
            st.set_trial_state_values(s, r, to, None, None),
            ErrorCode::InvalidArgument,
        );
    }
    assert_eq!(st.get_trial_state(s, r).unwrap(), Running);
    reads_the_same_after_reopen(b, s);
}

fn trial_attrs(b: &Backend) {
    let st = b.st();
    let s = b.study("s", &[Minimize]);
    let n = st.create_new_trial(s, None).unwrap();
    st.set_trial_user_attr(s, n, "a", json!({"x": [1, 2]}))
        .unwrap();
    st.set_trial_user_attr(s, n, "b", json!(null)).unwrap();
    st.set_trial_system_attr(s, n, "a", json!("system"))
        .unwrap();
    st.set_trial_user_attr(s, n, "b", json!(2.5)).unwrap();
    let t = st.get_trial(s, n).unwrap();
    assert_eq!(
        t.user_attrs,
        AttrMap::from([("a".into(), json!({"x": [1, 2]})), ("b".into(), json!(2.5))])
    );
    assert_eq!(
        t.system_attrs,
        AttrMap::from([("a".into(), json!("system"))])
    );
    complete(st, s, n, 1.0);
    // Finished and WAITING trials take attributes too.
    st.set_trial_user_attr(s, n, "after", json!(true)).unwrap();
    st.set_trial_system_attr(s, n, "a", json!("again")).unwrap();
    let w = st.create_new_trial(s, Some(&waiting(&[]))).unwrap();
    st.set_trial_user_attr(s, w, "w", json!([])).unwrap();
    st.set_trial_system_attr(s, w, "w", json!({})).unwrap();
    let check = |st: &dyn Storage| {
        let t = st.get_trial(s, n).unwrap();
        assert_eq!(t.user_attrs.len(), 3);
        assert_eq!(t.user_attrs["after"], json!(true));
        assert_eq!(
            t.system_attrs,
            AttrMap::from([("a".into(), json!("again"))])
        );
        assert_eq!(t.values, Some(vec![1.0]));
        let t = st.get_trial(s, w).unwrap();
        assert_eq!(t.user_attrs, AttrMap::from([("w".into(), json!([]))]));
        assert_eq!(
            caller_system_attrs(&t),
            AttrMap::from([("w".into(), json!({}))])
        );
        assert_eq!(t.state, Waiting);
    };
    check(st);
    check(b.reopen().as_ref());
    // Attributes of one trial stay there.
    let m = st.create_new_trial(s, None).unwrap();
    let t = st.get_trial(s, m).unwrap();
    assert!(t.user_attrs.is_empty() && t.system_attrs.is_empty());
}

// ------------------------------------------------------------------ reads

fn state_filters_and_counts(b: &Backend) {
    let st = b.st();
    let s = b.study("s", &[Minimize]);
    let states = [
        Complete, Running, Waiting, Pruned, Fail, Complete, Waiting, Running,
    ];
    for (i, state) in states.iter().enumerate() {
        let n = match state {
            Waiting => st.create_new_trial(s, Some(&waiting(&[]))).unwrap(),
            _ => st.create_new_trial(s, None).unwrap(),
        };
        assert_eq!(n, i as u64);
        if state.is_finished() {
            let values = (*state == Complete).then(|| vec![i as f64]);
            st.set_trial_state_values(s, n, *state, values, None)
                .unwrap();
        }
    }
    for (i, state) in states.iter().enumerate() {
        assert_eq!(st.get_trial_state(s, i as u64).unwrap(), *state);
    }
    let check = |st: &dyn Storage| {
        let numbers = |filter: Option<&[TrialState]>| {
            let ts = st.get_all_trials(s, filter).unwrap();
            assert_eq!(st.get_n_trials(s, filter).unwrap(), ts.len(), "{filter:?}");
            for t in &ts {
                assert_eq!(t.state, states[t.number as usize]);
            }
            ts.iter().map(|t| t.number).collect::<Vec<_>>()
        };
        assert_eq!(numbers(None), (0..8).collect::<Vec<_>>());
        assert_eq!(numbers(Some(&[Complete])), vec![0, 5]);
        assert_eq!(numbers(Some(&[Running])), vec![1, 7]);
        assert_eq!(numbers(Some(&[Waiting])), vec![2, 6]);
        assert_eq!(numbers(Some(&[Pruned])), vec![3]);
        assert_eq!(numbers(Some(&[Fail])), vec![4]);
        assert_eq!(numbers(Some(&[Fail, Complete, Pruned])), vec![0, 3, 4, 5]);
        assert_eq!(numbers(Some(&[Complete, Complete])), vec![0, 5]);
        assert_eq!(numbers(Some(&[])), Vec::<u64>::new());
        assert_eq!(
            numbers(Some(&[Complete, Running, Waiting, Pruned, Fail])),
            (0..8).collect::<Vec<_>>()
        );
    };
    check(st);
    check(b.reopen().as_ref());
    // An empty study.
    let e = b.study("empty", &[Minimize]);
    assert!(st.get_all_trials(e, None).unwrap().is_empty());
    assert_eq!(st.get_n_trials(e, None).unwrap(), 0);
    assert_eq!(st.get_n_trials(e, Some(&[Complete])).unwrap(), 0);
}

fn history_view(b: &Backend) {
    let st = b.st();
    let s = b.study("s", &[Maximize, Minimize]);
    let fx = float(0.0, 1.0, false);
    let n0 = st.create_new_trial(s, None).unwrap();
    st.set_trial_param(s, n0, "x", 0.25, &fx).unwrap();
    st.set_trial_param(s, n0, "c", 1.0, &abc()).unwrap();
    st.set_trial_state_values(s, n0, Complete, Some(vec![1.0, 2.0]), None)
        .unwrap();
    let mut t = TrialRecord::new(0, Pruned);
    t.internal_params.insert("x".into(), 0.75);
    t.distributions.insert("x".into(), fx.clone());
    st.create_new_trial(s, Some(&t)).unwrap();
    let n2 = st.create_new_trial(s, None).unwrap();
    st.set_trial_param(s, n2, "x", 0.5, &fx).unwrap();
    st.create_new_trial(s, Some(&waiting(&[("x", ParamValue::Float(0.1))])))
        .unwrap();
    let check = |st: &dyn Storage| {
        with_history(st, s, |h| {
            assert_eq!(h.directions(), &[Maximize, Minimize]);
            assert!(h.is_multi_objective());
            let ts = h.trials();
            assert_eq!(ts.len(), 4);
            assert_eq!(
                ts.iter().map(|t| t.state).collect::<Vec<_>>(),
                vec![Complete, Pruned, Running, Waiting]
            );
            assert_eq!(h.states(), &[Complete, Pruned, Running, Waiting]);
            assert_eq!(
                ts[0].params,
                BTreeMap::from([("c".into(), 1.0), ("x".into(), 0.25)])
            );
            assert_eq!(ts[0].values, Some(vec![1.0, 2.0]));
            assert_eq!(ts[0].distributions["c"], abc());
            assert_eq!(ts[1].params["x"], 0.75);
            assert_eq!(ts[2].params["x"], 0.5);
            assert!(ts[3].params.is_empty());
            assert_eq!(h.n_complete(), 1);
        })
        .unwrap();
    };
    check(st);
    check(b.reopen().as_ref());
}

fn param_context_and_relative_params(b: &Backend) {
    let st = b.st();
    let s = b.study("s", &[Minimize]);
    let (fx, fy) = (float(0.0, 1.0, false), int(0, 10, 1));
    let n0 = st.create_new_trial(s, None).unwrap();
    st.set_trial_param(s, n0, "x", 0.5, &fx).unwrap();
    complete(st, s, n0, 1.0);
    let n = st.create_new_trial(s, None).unwrap();
    // Nothing about `x` in this trial yet; the study knows its distribution.
    assert_eq!(
        st.param_context(s, n, "x").unwrap(),
        ParamContext {
            study_distribution: Some(fx.clone()),
            ..ParamContext::default()
        }
    );
    assert_eq!(
        st.param_context(s, n, "new").unwrap(),
        ParamContext::default()
    );
    // Relative (jointly sampled) params are there until suggested.
    let space: SearchSpace = [("x".to_string(), fx.clone()), ("y".to_string(), fy.clone())].into();
    let params = BTreeMap::from([("x".to_string(), 0.125), ("y".to_string(), 3.0)]);
    st.set_trial_relative_params(s, n, &params, &space).unwrap();
    let ctx = st.param_context(s, n, "x").unwrap();
    assert_eq!(ctx.relative, Some((0.125, fx.clone())));
    assert_eq!(ctx.existing, None);
    assert_eq!(
        st.param_context(s, n, "y").unwrap().relative,
        Some((3.0, fy.clone()))
    );
    assert!(
        st.get_trial(s, n).unwrap().params.is_empty(),
        "relative params are not params"
    );
    st.set_trial_param(s, n, "x", 0.125, &fx).unwrap();
    let ctx = st.param_context(s, n, "x").unwrap();
    assert_eq!(ctx.existing, Some((0.125, fx.clone())));
    assert_eq!(ctx.relative, None);
    assert_eq!(ctx.study_distribution, Some(fx.clone()));
    // Fixed params (external values).
    let fixed = BTreeMap::from([
        ("z".to_string(), ParamValue::Str("b".into())),
        ("y".to_string(), ParamValue::Int(4)),
    ]);
    st.set_trial_fixed_params(s, n, fixed.clone()).unwrap();
    assert_eq!(
        st.param_context(s, n, "z").unwrap().fixed,
        Some(ParamValue::Str("b".into()))
    );
    let ctx = st.param_context(s, n, "y").unwrap();
    assert_eq!(ctx.fixed, Some(ParamValue::Int(4)));
    assert_eq!(ctx.relative, Some((3.0, fy.clone())));
    let t = st.get_trial(s, n).unwrap();
    assert_eq!(t.fixed_params, Some(fixed.clone()));
    assert!(caller_system_attrs(&t).is_empty());
    // Unsuggested relative params go when the trial finishes; fixed ones stay on the record.
    complete(st, s, n, 2.0);
    let ctx = st.param_context(s, n, "y").unwrap();
    assert_eq!(ctx.relative, None);
    assert_eq!(ctx.existing, None);
    assert_eq!(
        st.get_trial(s, n).unwrap().fixed_params,
        Some(fixed.clone())
    );
    assert_eq!(st.get_trial(s, n).unwrap().params.len(), 1);
    // Relative params need a RUNNING trial.
    not_running(
        st.set_trial_relative_params(s, n, &params, &space),
        n,
        Complete,
    );
    let w = st.create_new_trial(s, Some(&waiting(&[]))).unwrap();
    not_running(
        st.set_trial_relative_params(s, w, &params, &space),
        w,
        Waiting,
    );
    // Fixed params may be replaced (the sampler's, when the trial starts).
    st.set_trial_fixed_params(
        s,
        w,
        BTreeMap::from([("x".to_string(), ParamValue::Float(0.9))]),
    )
    .unwrap();
    assert_eq!(
        st.param_context(s, w, "x").unwrap().fixed,
        Some(ParamValue::Float(0.9))
    );
    let st2 = b.reopen();
    assert_eq!(st2.get_trial(s, n).unwrap().fixed_params, Some(fixed));
    assert_eq!(
        st2.param_context(s, w, "x").unwrap().fixed,
        Some(ParamValue::Float(0.9))
    );
}

// ------------------------------------------------------------------ WAITING trials

fn waiting_trials_are_popped_in_order(b: &Backend) {
    let st = b.st();
    let s = b.study("s", &[Minimize]);
    let other = b.study("other", &[Minimize]);
    assert_eq!(st.pop_waiting_trial(s).unwrap(), None);
    let mut w0 = waiting(&[("x", ParamValue::Float(0.25)), ("c", ParamValue::None)]);
    w0.user_attrs.insert("tag".into(), json!("first"));
    let n0 = st.create_new_trial(s, Some(&w0)).unwrap();
    let r = st.create_new_trial(s, None).unwrap();
    let n1 = st.create_new_trial(s, Some(&waiting(&[]))).unwrap();
    let n2 = st.create_new_trial(s, Some(&waiting(&[]))).unwrap();
    let n3 = st.create_new_trial(s, Some(&waiting(&[]))).unwrap();
    assert_eq!((n0, r, n1, n2, n3), (0, 1, 2, 3, 4));
    let t = st.get_trial(s, n0).unwrap();
    assert_eq!(t.state, Waiting);
    assert_eq!(t.datetime_start, None);
    assert_eq!(t.datetime_complete, None);
    assert_eq!(t.fixed_params, w0.fixed_params);
    assert_eq!(t.user_attrs, w0.user_attrs);
    assert!(t.params.is_empty());
    assert!(caller_system_attrs(&t).is_empty());
    assert_eq!(st.get_n_trials(s, Some(&[Waiting])).unwrap(), 4);
    // Another study's queue is its own.
    assert_eq!(st.pop_waiting_trial(other).unwrap(), None);
    // A WAITING trial finished or started directly is not popped.
    st.set_trial_state_values(s, n1, Fail, None, Some("cancelled".into()))
        .unwrap();
    assert_eq!(
        st.get_trial(s, n1).unwrap().fail_reason.as_deref(),
        Some("cancelled")
    );
    st.set_trial_state_values(s, n2, Running, None, None)
        .unwrap();
    let t = st.get_trial(s, n2).unwrap();
    assert_eq!(t.state, Running);
    close_to_now(t.datetime_start);
    // Oldest first; a popped trial is RUNNING, starts now and keeps what it was enqueued with.
    assert_eq!(st.pop_waiting_trial(s).unwrap(), Some(n0));
    let t = st.get_trial(s, n0).unwrap();
    assert_eq!(t.state, Running);
    close_to_now(t.datetime_start);
    assert_eq!(t.fixed_params, w0.fixed_params);
    assert_eq!(t.user_attrs, w0.user_attrs);
    assert_eq!(
        st.param_context(s, n0, "x").unwrap().fixed,
        Some(ParamValue::Float(0.25))
    );
    assert_eq!(st.pop_waiting_trial(s).unwrap(), Some(n3));
    assert_eq!(st.pop_waiting_trial(s).unwrap(), None);
    assert_eq!(st.get_n_trials(s, Some(&[Waiting])).unwrap(), 0);
    // Popped trials run like any other.
    st.set_trial_param(s, n0, "x", 0.25, &float(0.0, 1.0, false))
        .unwrap();
    assert!(st.set_trial_intermediate_value(s, n0, 0, 0.5).unwrap());
    complete(st, s, n0, 0.5);
    complete(st, s, n3, 0.75);
    complete(st, s, n2, 1.0);
    let t = st.get_trial(s, n0).unwrap();
    assert_eq!(t.params["x"], ParamValue::Float(0.25));
    assert_eq!(t.values, Some(vec![0.5]));
    // Enqueued later: popped next.
    let n5 = st.create_new_trial(s, Some(&waiting(&[]))).unwrap();
    assert_eq!(n5, 5);
    assert_eq!(st.pop_waiting_trial(s).unwrap(), Some(n5));
    // Another handle sees the popped trial as RUNNING and cannot pop it again.
    let st2 = b.reopen();
    assert_eq!(st2.get_trial_state(s, n5).unwrap(), Running);
    assert_eq!(st2.pop_waiting_trial(s).unwrap(), None);
}

fn waiting_template_keeps_params_and_values(b: &Backend) {
    let st = b.st();
    let s = b.study("s", &[Minimize]);
    // A WAITING template with params and intermediate values (a retried trial that inherits
    // its intermediate values): the params are the trial's, the reports are kept.
    let mut w = waiting(&[("y", ParamValue::Int(3))]);
    w.internal_params.insert("x".into(), 0.5);
    w.distributions.insert("x".into(), float(0.0, 1.0, false));
    w.params.insert("x".into(), ParamValue::Float(0.5));
    w.intermediate_values = BTreeMap::from([(0, 2.0), (1, 1.0)]);
    w.system_attrs.insert("failed_trial".into(), json!(0));
    let n = st.create_new_trial(s, Some(&w)).unwrap();
    let check = |t: &TrialRecord, state: TrialState| {
        assert_eq!(t.state, state);
        assert_eq!(t.params, w.params);
        assert_eq!(t.internal_params, w.internal_params);
        assert_eq!(t.distributions, w.distributions);
        assert_eq!(t.intermediate_values, w.intermediate_values);
        assert_eq!(t.fixed_params, w.fixed_params);
        assert_eq!(caller_system_attrs(t), w.system_attrs);
        assert_eq!(t.values, None);
    };
    check(&st.get_trial(s, n).unwrap(), Waiting);
    check(&b.reopen().get_trial(s, n).unwrap(), Waiting);
    assert_eq!(st.pop_waiting_trial(s).unwrap(), Some(n));
    check(&st.get_trial(s, n).unwrap(), Running);
    let ctx = st.param_context(s, n, "x").unwrap();
    assert_eq!(ctx.existing, Some((0.5, float(0.0, 1.0, false))));
    // A step reported before is not reported again; new ones are.
    assert!(!st.set_trial_intermediate_value(s, n, 1, 9.0).unwrap());
    assert!(st.set_trial_intermediate_value(s, n, 2, 0.5).unwrap());
    complete(st, s, n, 0.5);
    let t = st.get_trial(s, n).unwrap();
    assert_eq!(t.intermediate_values.len(), 3);
    assert_eq!(t.intermediate_values[&1], 1.0);
    same_record(&t, &b.reopen().get_trial(s, n).unwrap());
}

// ------------------------------------------------------------------ the suite

fn everything_survives_reopen(b: &Backend) {
    let st = b.st();
    let s = b.study("s", &[Minimize, Maximize]);
    st.set_study_user_attr(s, "u", json!({"a": 1})).unwrap();
    st.set_study_system_attr(s, "s", json!("x")).unwrap();
    let fx = float(0.0, 1.0, false);
    // A finished trial, a running one with unflushed writes, a WAITING one, a template.
    let a = st.create_new_trial(s, None).unwrap();
    st.set_trial_param(s, a, "x", 0.5, &fx).unwrap();
    st.set_trial_intermediate_value(s, a, 0, 0.25).unwrap();
    st.set_trial_user_attr(s, a, "k", json!([1])).unwrap();
    st.set_trial_state_values(s, a, Complete, Some(vec![1.0, 2.0]), None)
        .unwrap();
    let r = st.create_new_trial(s, None).unwrap();
    st.set_trial_param(s, r, "x", 0.75, &fx).unwrap();
    st.set_trial_param(s, r, "c", 2.0, &abc()).unwrap();
    st.set_trial_intermediate_value(s, r, 5, f64::NAN).unwrap();
    st.set_trial_system_attr(s, r, "sys", json!(true)).unwrap();
    st.set_trial_fixed_params(
        s,
        r,
        BTreeMap::from([("x".to_string(), ParamValue::Float(0.75))]),
    )
    .unwrap();
    st.create_new_trial(s, Some(&waiting(&[("x", ParamValue::Float(0.1))])))
        .unwrap();
    let mut f = full_template(Fail);
    f.fail_reason = Some("why".into());
    st.create_new_trial(s, Some(&f)).unwrap();
    let st2 = b.reopen();
    let s2 = st2.get_study_id_from_name(&b.name("s")).unwrap();
    assert_eq!(s2, s);
    assert_eq!(st2.get_study_name(s).unwrap(), b.name("s"));
    assert_eq!(
        st2.get_study_directions(s).unwrap(),
        vec![Minimize, Maximize]
    );
    assert_eq!(
        st2.get_study_user_attrs(s).unwrap(),
        st.get_study_user_attrs(s).unwrap()
    );
    assert_eq!(
        st2.get_study_system_attrs(s).unwrap(),
        st.get_study_system_attrs(s).unwrap()
    );
    let (one, two) = (
        st.get_all_trials(s, None).unwrap(),
        st2.get_all_trials(s, None).unwrap(),
    );
    assert_eq!(one.len(), 4);
    assert_eq!(two.len(), 4);
    for (x, y) in one.iter().zip(&two) {
        same_record(x, y);
    }
    let summary = |st: &dyn Storage| {
        let all = st.get_all_studies().unwrap();
        let x = all.into_iter().find(|x| x.study_id == s).unwrap();
        (
            x.name,
            x.directions,
            x.n_trials,
            x.user_attrs,
            x.system_attrs,
        )
    };
    assert_eq!(summary(st), summary(st2.as_ref()));
    // The running trial goes on through the first handle.
    st.set_trial_state_values(s, r, Complete, Some(vec![0.0, 0.0]), None)
        .unwrap();
    same_record(
        &st.get_trial(s, r).unwrap(),
        &b.reopen().get_trial(s, r).unwrap(),
    );
}

/// Constraint values in a trial's system attributes (a `constraints` list, `constraints:<key>`
/// values) are the history's constraints and violation, for a trial made from a template too, and after a
/// reopen.
fn constraint_violations_reach_the_history(b: &Backend) {
    let st = b.st();
    let s = b.study("s", &[Minimize]);
    let n0 = st.create_new_trial(s, None).unwrap();
    st.set_trial_system_attr(s, n0, "constraints", json!([1.5, -2.0, 0.5]))
        .unwrap();
    let n1 = st.create_new_trial(s, None).unwrap();
    st.set_trial_system_attr(s, n1, "constraints:a", json!(-1.0))
        .unwrap();
    st.set_trial_system_attr(s, n1, "constraints:b", json!(0.0))
        .unwrap();
    let mut t = TrialRecord::new(0, Complete);
    t.values = Some(vec![1.0]);
    t.system_attrs.insert("constraints:c".into(), json!(3.0));
    let n2 = st.create_new_trial(s, Some(&t)).unwrap();
    let n3 = st.create_new_trial(s, None).unwrap();
    st.set_trial_system_attr(s, n3, "other", json!(1.0))
        .unwrap();
    for (n, v) in [(n0, 1.0), (n1, 2.0), (n3, 3.0)] {
        complete(st, s, n, v);
    }
    let check = |st: &dyn Storage| {
        with_history(st, s, |h| {
            let v: Vec<Option<f64>> = h.trials().iter().map(|t| t.violation).collect();
            assert_eq!(v, vec![Some(2.0), Some(0.0), Some(3.0), None]);
            let c: Vec<Option<Vec<f64>>> =
                h.trials().iter().map(|t| t.constraints.clone()).collect();
            assert_eq!(
                c,
                vec![
                    Some(vec![1.5, -2.0, 0.5]),
                    Some(vec![-1.0, 0.0]),
                    Some(vec![3.0]),
                    None
                ]
            );
            assert!(h.trials()[n2 as usize].infeasible() && !h.trials()[n1 as usize].infeasible());
        })
        .unwrap();
    };
    check(st);
    check(b.reopen().as_ref());
}

/// Generates `memory::<test>`, `sqlite::<test>` and `postgres::<test>` for each test function.
macro_rules! conformance {
    ($($test:ident),* $(,)?) => {
        mod memory {
            $(#[test] fn $test() { super::$test(&super::Backend::memory(stringify!($test))); })*
        }
        mod sqlite {
            $(#[test] fn $test() { super::$test(&super::Backend::sqlite(stringify!($test))); })*
        }
        mod journal {
            $(#[test] fn $test() { super::$test(&super::Backend::journal(stringify!($test))); })*
        }
        mod postgres {
            $(#[test] fn $test() {
                if let Some(b) = super::Backend::postgres(stringify!($test)) {
                    super::$test(&b);
                }
            })*
        }
    };
}

conformance!(
    studies_create_get_delete,
    studies_listed_with_summaries,
    study_attrs,
    missing_studies_are_not_found,
    missing_trials_are_not_found,
    trial_numbers_are_dense_per_study,
    new_trial_is_running_and_empty,
    template_trials_keep_every_field,
    invalid_templates_create_nothing,
    params_and_distribution_compatibility,
    intermediate_values,
    finishing_trials,
    trial_attrs,
    state_filters_and_counts,
    history_view,
    param_context_and_relative_params,
    waiting_trials_are_popped_in_order,
    waiting_template_keeps_params_and_values,
    everything_survives_reopen,
    constraint_violations_reach_the_history,
);
