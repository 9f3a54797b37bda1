//! SQL storages (SQLite always; PostgreSQL when DSPEX_TEST_PG_URL is set, required when CI=true).

mod common;
use common::pg_url;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use dspex_engine::optimizer::samplers::{TpeOptions, TpeSampler};
use dspex_engine::optimizer::{
    CategoricalDistribution, Distribution, FloatDistribution, IntDistribution, ParamValue,
    StudyDirection, TrialState,
};
use dspex_engine::{
    Done, EngineError, Outcome, Pulled, Run, RunOptions, SqlOptions, SqlStorage, Storage, Study,
    TrialRecord,
};

fn tmp_db(tag: &str) -> (tempdir::Dir, String) {
    let d = tempdir::Dir::new(tag);
    let url = format!("sqlite:///{}", d.path.join("s.db").display());
    (d, url)
}

mod tempdir {
    use std::path::PathBuf;
    pub struct Dir {
        pub path: PathBuf,
    }
    impl Dir {
        pub fn new(tag: &str) -> Dir {
            let r: u64 = rand_id();
            let path =
                std::env::temp_dir().join(format!("dspex-sql-{tag}-{}-{r:x}", std::process::id()));
            std::fs::create_dir_all(&path).expect("temp dir");
            Dir { path }
        }
    }
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
    fn rand_id() -> u64 {
        use std::time::{SystemTime, UNIX_EPOCH};
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0)
    }
}

fn fdist(log: bool) -> Distribution {
    Distribution::Float(FloatDistribution::new(1e-3, 10.0, log, None).unwrap())
}

fn idist() -> Distribution {
    Distribution::Int(IntDistribution::new(0, 10, false, 2).unwrap())
}

fn cdist() -> Distribution {
    Distribution::Categorical(
        CategoricalDistribution::new(vec![
            ParamValue::Str("a".into()),
            ParamValue::None,
            ParamValue::Int(2),
        ])
        .unwrap(),
    )
}

/// Runs one evaluator thread until the run closes.
fn evaluate(run: &Arc<Run>) {
    loop {
        match run.pull(1, Duration::from_millis(50)) {
            Pulled::Closed => break,
            Pulled::Empty => continue,
            Pulled::Requests(reqs) => {
                for r in reqs {
                    let s = run.study();
                    let x = match s.suggest(r.number, "x", &fdist(true)).unwrap().value {
                        ParamValue::Float(x) => x,
                        other => panic!("{other:?}"),
                    };
                    s.suggest(r.number, "i", &idist()).unwrap();
                    s.suggest(r.number, "c", &cdist()).unwrap();
                    s.report(r.number, 0, x * 2.0).unwrap();
                    s.storage()
                        .set_trial_user_attr(
                            s.id(),
                            r.number,
                            "u",
                            serde_json::json!({"k": [1, 2]}),
                        )
                        .unwrap();
                    s.tell(r.number, Outcome::Values(vec![(x - 1.0).powi(2)]), false)
                        .unwrap();
                    run.done(r.number, Done::Finished);
                }
            }
        }
    }
}

fn optimize(study: &Arc<Study>, n: u64, concurrency: usize) {
    let run = Run::start(
        study.clone(),
        RunOptions {
            n_trials: Some(n),
            concurrency,
            ..RunOptions::default()
        },
    )
    .unwrap();
    let hs: Vec<_> = (0..concurrency)
        .map(|_| {
            let run = run.clone();
            thread::spawn(move || evaluate(&run))
        })
        .collect();
    for h in hs {
        h.join().unwrap();
    }
    run.wait(Duration::from_secs(60)).unwrap();
}

fn tpe() -> Arc<TpeSampler> {
    Arc::new(
        TpeSampler::new(TpeOptions {
            seed: Some(3),
            n_startup_trials: 5,
            ..TpeOptions::default()
        })
        .unwrap(),
    )
}

fn open(url: &str) -> Arc<dyn Storage> {
    Arc::new(SqlStorage::open(url, SqlOptions::default()).unwrap())
}

fn round_trip(url: &str, name: &str) {
    let st = open(url);
    let study = Study::create(
        st.clone(),
        Some(name),
        vec![StudyDirection::Minimize],
        Some(tpe()),
        None,
        false,
    )
    .unwrap();
    study
        .set_user_attr("ua", serde_json::json!({"x": [1, 2]}))
        .unwrap();
    optimize(&study, 12, 2);
    let before = study.trials(None).unwrap();
    assert_eq!(before.len(), 12);
    assert!(before.iter().all(|t| t.state == TrialState::Complete));
    // A fresh storage (another process) reads the same study.
    let st2 = open(url);
    let again = Study::load(st2.clone(), name, Some(tpe()), None).unwrap();
    let after = again.trials(None).unwrap();
    assert_eq!(before.len(), after.len());
    for (a, b) in before.iter().zip(&after) {
        assert_eq!(a.number, b.number);
        assert_eq!(a.state, b.state);
        assert_eq!(a.params, b.params);
        assert_eq!(a.distributions, b.distributions);
        assert_eq!(a.values, b.values);
        assert_eq!(a.intermediate_values, b.intermediate_values);
        assert_eq!(a.user_attrs, b.user_attrs);
        let (sa, sb) = (a.datetime_start.unwrap(), b.datetime_start.unwrap());
        let d = sa
            .duration_since(sb)
            .or_else(|_| sb.duration_since(sa))
            .unwrap();
        assert!(d < Duration::from_micros(2), "{d:?}");
    }
    assert_eq!(
        again.user_attrs().unwrap()["ua"],
        serde_json::json!({"x": [1, 2]})
    );
    // And continues it.
    optimize(&again, 5, 1);
    assert_eq!(again.trials(None).unwrap().len(), 17);
    assert_eq!(study.trials(None).unwrap().len(), 17);
    // Duplicate name.
    let dup = Study::create(
        st2.clone(),
        Some(name),
        vec![StudyDirection::Minimize],
        None,
        None,
        false,
    );
    assert!(
        matches!(dup, Err(EngineError::DuplicatedStudy(_))),
        "{dup:?}"
    );
    // Summaries and deletion.
    let all = st2.get_all_studies().unwrap();
    let s = all.iter().find(|s| s.name == name).unwrap();
    assert_eq!(s.n_trials, 17);
    st2.delete_study(s.study_id).unwrap();
    assert!(matches!(
        st2.get_study_id_from_name(name),
        Err(EngineError::StudyNotFound(_))
    ));
}

#[test]
fn sqlite_round_trip_and_continue() {
    let (_d, url) = tmp_db("rt");
    round_trip(&url, "rt");
}

#[test]
fn postgres_round_trip_and_continue() {
    let Some(url) = pg_url() else { return };
    let name = format!("rt-{}", std::process::id());
    round_trip(&url, &name);
}

#[test]
fn sqlite_template_trials_and_infinite_values() {
    let (_d, url) = tmp_db("tpl");
    let st = open(&url);
    let study = Study::create(
        st.clone(),
        Some("two"),
        vec![StudyDirection::Minimize, StudyDirection::Maximize],
        None,
        None,
        false,
    )
    .unwrap();
    let mut t = TrialRecord::new(0, TrialState::Complete);
    t.values = Some(vec![1.5, f64::INFINITY]);
    t.internal_params.insert("x".into(), 0.5);
    t.distributions.insert("x".into(), fdist(false));
    t.params.insert("x".into(), ParamValue::Float(0.5));
    t.system_attrs.insert("s".into(), serde_json::json!("v"));
    st.create_new_trial(study.id(), Some(&t)).unwrap();
    let mut p = TrialRecord::new(0, TrialState::Pruned);
    p.intermediate_values = BTreeMap::from([(0, 0.5), (1, f64::NEG_INFINITY), (2, f64::NAN)]);
    study.add_trial(&p).unwrap();
    let n = study
        .enqueue(
            BTreeMap::from([("x".to_string(), ParamValue::Float(0.25))]),
            Default::default(),
            false,
        )
        .unwrap()
        .unwrap();
    let other = Study::load(open(&url), "two", None, None).unwrap();
    let ts = other.trials(None).unwrap();
    assert_eq!(ts[0].values, Some(vec![1.5, f64::INFINITY]));
    assert_eq!(ts[0].system_attrs["s"], serde_json::json!("v"));
    assert_eq!(ts[1].intermediate_values[&1], f64::NEG_INFINITY);
    assert!(ts[1].intermediate_values[&2].is_nan());
    assert_eq!(ts[2].state, TrialState::Waiting);
    assert_eq!(
        ts[2].fixed_params.as_ref().unwrap()["x"],
        ParamValue::Float(0.25)
    );
    // The other process pops the waiting trial; the first sees it running then complete.
    assert_eq!(other.ask().unwrap(), n);
    let v = other.suggest(n, "x", &fdist(false)).unwrap();
    assert_eq!(v.value, ParamValue::Float(0.25));
    other
        .tell(n, Outcome::Values(vec![1.0, 2.0]), false)
        .unwrap();
    assert_eq!(study.trial(n).unwrap().state, TrialState::Complete);
    assert_eq!(study.trial(n).unwrap().params["x"], ParamValue::Float(0.25));
    // Nothing left waiting.
    assert_eq!(st.pop_waiting_trial(study.id()).unwrap(), None);
}

#[test]
fn bad_urls_and_unreachable_databases() {
    for bad in ["mysql://x", "sqlite:", "nothing", "sqlite:///"] {
        let e = SqlStorage::open(bad, SqlOptions::default()).unwrap_err();
        assert!(matches!(e, EngineError::InvalidArgument(_)), "{bad}: {e:?}");
    }
    let e =
        SqlStorage::open("sqlite:////nonexistent-dir/x/y.db", SqlOptions::default()).unwrap_err();
    assert!(
        matches!(&e, EngineError::Storage(m) if m.contains("cannot open")),
        "{e:?}"
    );
    // A closed port.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let e = SqlStorage::open(
        &format!("postgresql://postgres@127.0.0.1:{port}/postgres"),
        SqlOptions::default(),
    )
    .unwrap_err();
    assert!(
        matches!(&e, EngineError::Storage(m) if m.contains("cannot connect")),
        "{e:?}"
    );
}

#[test]
fn running_trial_writes_are_batched_and_finish_is_atomic() {
    let (_d, url) = tmp_db("batch");
    let st = Arc::new(SqlStorage::open(&url, SqlOptions::default()).unwrap());
    let study = Study::create(
        st.clone(),
        Some("b"),
        vec![StudyDirection::Minimize],
        None,
        None,
        false,
    )
    .unwrap();
    let n = study.ask().unwrap();
    study.suggest(n, "x", &fdist(false)).unwrap();
    study.report(n, 0, 1.0).unwrap();
    st.set_trial_user_attr(study.id(), n, "k", serde_json::json!(1))
        .unwrap();
    st.flush().unwrap();
    let other = open(&url);
    let id = other.get_study_id_from_name("b").unwrap();
    let t = other.get_trial(id, n).unwrap();
    assert_eq!(t.state, TrialState::Running);
    assert!(t.params.contains_key("x"));
    assert_eq!(t.intermediate_values[&0], 1.0);
    assert_eq!(t.user_attrs["k"], serde_json::json!(1));
    // Later writes go with the finish, in its transaction.
    study.suggest(n, "y", &idist()).unwrap();
    study.report(n, 1, 2.0).unwrap();
    study.tell(n, Outcome::Values(vec![0.5]), false).unwrap();
    let t = open(&url).get_trial(id, n).unwrap();
    assert_eq!(t.state, TrialState::Complete);
    assert_eq!(t.values, Some(vec![0.5]));
    assert!(t.params.contains_key("y"));
    assert_eq!(t.intermediate_values.len(), 2);
    // Without an explicit flush, the batch reaches the database within the flush interval.
    let m = study.ask().unwrap();
    study.suggest(m, "x", &fdist(false)).unwrap();
    thread::sleep(dspex_engine::storage::FLUSH_INTERVAL * 3);
    assert!(open(&url)
        .get_trial(id, m)
        .unwrap()
        .params
        .contains_key("x"));
}

#[test]
fn a_trial_failed_by_another_process_heartbeat_check_cannot_be_told() {
    let (_d, url) = tmp_db("stale");
    let slow = SqlOptions {
        heartbeat_interval: Some(Duration::from_secs(60)),
        ..SqlOptions::default()
    };
    let a: Arc<dyn Storage> = Arc::new(SqlStorage::open(&url, slow).unwrap());
    let study = Study::create(
        a.clone(),
        Some("s"),
        vec![StudyDirection::Minimize],
        None,
        None,
        false,
    )
    .unwrap();
    let n = study.ask().unwrap();
    study.suggest(n, "x", &fdist(false)).unwrap();
    thread::sleep(Duration::from_millis(400));
    let b = SqlStorage::open(
        &url,
        SqlOptions {
            heartbeat_interval: Some(Duration::from_millis(100)),
            grace_period: Some(Duration::from_millis(200)),
            retry: Some(dspex_engine::RetryPolicy::default()),
            load_chunk: None,
        },
    )
    .unwrap();
    let id = b.get_study_id_from_name("s").unwrap();
    assert_eq!(b.fail_stale_trials(id).unwrap(), vec![n]);
    // The retry is a WAITING copy.
    let retry = b.get_trial(id, n + 1).unwrap();
    assert_eq!(retry.state, TrialState::Waiting);
    assert_eq!(retry.system_attrs["failed_trial"], serde_json::json!(n));
    let e = study
        .tell(n, Outcome::Values(vec![1.0]), false)
        .unwrap_err();
    assert!(
        matches!(
            e,
            EngineError::TrialNotRunning {
                state: TrialState::Fail,
                ..
            }
        ),
        "{e:?}"
    );
    assert_eq!(study.trial(n).unwrap().state, TrialState::Fail);
}
