//! Fuzzing on stable Rust: property tests feed random and mutated input to the engine's
//! decoders and entry points (study.toml, distribution JSON, sampler and pruner options,
//! programs and program studies, every unary gRPC call, the Session stream). Each input must
//! be accepted or refused with an error: no panic (a panic hook counts them, including ones in
//! tasks the engine spawns) and no hang (every call has a deadline).
//!
//! `PROPTEST_CASES` sets the cases per target (CI: the default below); `scripts/fuzz.sh` runs
//! many more.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Once};
use std::time::Duration;

use dspex_engine::config::{pruner_from_component, sampler_from_component, StudyFile};
use dspex_engine::grpc::pb;
use dspex_engine::grpc::pb::engine_client::EngineClient;
use dspex_engine::grpc::pb::engine_server::Engine;
use dspex_engine::grpc::{self, EngineService, ServeOptions};
use dspex_engine::program::Program;
use dspex_engine::program_study::ProgramStudySpec;
use dspex_engine::InMemoryStorage;
use dspex_optimizer::Distribution;
use proptest::prelude::*;
use prost::Message;
use serde_json::json;
use tonic::Request;

static PANICS: AtomicUsize = AtomicUsize::new(0);

/// Counts every panic of the process (the test's own threads and the engine's tasks).
fn count_panics() {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            PANICS.fetch_add(1, Ordering::SeqCst);
            default(info);
        }));
    });
}

fn no_panics() {
    assert_eq!(
        PANICS.load(Ordering::SeqCst),
        0,
        "the engine panicked (see the output above)"
    );
}

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|c| c.parse().ok())
            .unwrap_or(256),
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// One edit of a byte string: overwrite, insert, delete a run, or copy a run elsewhere.
#[derive(Debug, Clone)]
enum Edit {
    Set(usize, u8),
    Insert(usize, Vec<u8>),
    Delete(usize, usize),
    Copy(usize, usize, usize),
}

fn edits() -> impl Strategy<Value = Vec<Edit>> {
    let interesting = prop_oneof![
        any::<u8>(),
        Just(0u8),
        Just(0xff),
        Just(b'"'),
        Just(b'['),
        Just(b'='),
        Just(b'\n'),
        Just(b'-'),
    ];
    let edit = prop_oneof![
        (any::<usize>(), interesting).prop_map(|(p, b)| Edit::Set(p, b)),
        (any::<usize>(), prop::collection::vec(any::<u8>(), 1..9))
            .prop_map(|(p, b)| Edit::Insert(p, b)),
        (any::<usize>(), 1usize..16).prop_map(|(p, n)| Edit::Delete(p, n)),
        (any::<usize>(), 1usize..64, any::<usize>()).prop_map(|(a, n, b)| Edit::Copy(a, n, b)),
    ];
    prop::collection::vec(edit, 0..8)
}

fn mutate(seed: &[u8], edits: &[Edit]) -> Vec<u8> {
    let mut v = seed.to_vec();
    for e in edits {
        let at = |p: usize, len: usize| if len == 0 { 0 } else { p % (len + 1) };
        match e {
            Edit::Set(p, b) if !v.is_empty() => {
                let i = p % v.len();
                v[i] = *b;
            }
            Edit::Set(..) => {}
            Edit::Insert(p, bytes) => {
                let i = at(*p, v.len());
                v.splice(i..i, bytes.iter().copied());
            }
            Edit::Delete(p, n) => {
                let i = at(*p, v.len());
                let j = (i + n).min(v.len());
                v.drain(i..j);
            }
            Edit::Copy(a, n, b) => {
                let i = at(*a, v.len());
                let j = (i + n).min(v.len());
                let run: Vec<u8> = v[i..j].to_vec();
                let k = at(*b, v.len());
                v.splice(k..k, run);
            }
        }
    }
    v
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

const STUDY_TOML: &str = include_str!("../../../examples/study.toml");

const DISTRIBUTIONS: &[&str] = &[
    r#"{"name": "FloatDistribution", "attributes": {"low": 0.001, "high": 1.0, "log": true, "step": null}}"#,
    r#"{"name": "FloatDistribution", "attributes": {"low": -5, "high": 5, "log": false, "step": 0.5}}"#,
    r#"{"name": "IntDistribution", "attributes": {"low": 1, "high": 64, "log": true, "step": 1}}"#,
    r#"{"name": "IntDistribution", "attributes": {"low": -9223372036854775808, "high": 9223372036854775807, "log": false, "step": 3}}"#,
    r#"{"name": "CategoricalDistribution", "attributes": {"choices": ["a", 1, 2.5, null, true]}}"#,
    r#"{"name": "UniformDistribution", "attributes": {"low": 0, "high": 1}}"#,
];

const COMPONENTS: &[(&str, &str, bool)] = &[
    (
        "tpe",
        r#"{"seed": 3, "n_startup_trials": 5, "multivariate": true, "constant_liar": true}"#,
        true,
    ),
    ("random", r#"{"seed": 0}"#, true),
    (
        "grid",
        r#"{"search_space": {"x": [0, 1, 2], "y": ["a", "b"]}, "seed": 1}"#,
        true,
    ),
    (
        "gp",
        r#"{"seed": 2, "n_startup_trials": 3, "independent_sampler": {"kind": "tpe", "seed": 2}}"#,
        true,
    ),
    (
        "qmc",
        r#"{"qmc_type": "halton", "scramble": true, "seed": 1}"#,
        true,
    ),
    (
        "brute_force",
        r#"{"seed": 1, "avoid_premature_stop": true}"#,
        true,
    ),
    (
        "cmaes",
        r#"{"seed": 1, "x0": {"x": 0.5}, "sigma0": 0.3, "popsize": 6, "restart_strategy": "ipop", "with_margin": true}"#,
        true,
    ),
    (
        "nsgaii",
        r#"{"seed": 1, "population_size": 4, "crossover": {"kind": "sbx"}, "mutation": {"kind": "polynomial"}}"#,
        true,
    ),
    (
        "nsgaiii",
        r#"{"seed": 1, "population_size": 4, "crossover": {"kind": "undx"}}"#,
        true,
    ),
    (
        "partial_fixed",
        r#"{"fixed_params": {"x": 1.5}, "base_sampler": {"kind": "random", "seed": 2}}"#,
        true,
    ),
    (
        "median",
        r#"{"n_startup_trials": 2, "n_warmup_steps": 1, "interval_steps": 1}"#,
        false,
    ),
    (
        "percentile",
        r#"{"percentile": 25.0, "n_startup_trials": 1}"#,
        false,
    ),
    (
        "successive_halving",
        r#"{"min_resource": 1, "reduction_factor": 3}"#,
        false,
    ),
    (
        "hyperband",
        r#"{"min_resource": 1, "max_resource": 27, "reduction_factor": 3}"#,
        false,
    ),
    ("threshold", r#"{"lower": 0.0, "upper": 1.0}"#, false),
    ("wilcoxon", r#"{"p_threshold": 0.1}"#, false),
    (
        "patient",
        r#"{"patience": 2, "wrapped_pruner": {"kind": "median"}}"#,
        false,
    ),
];

fn program_seed() -> serde_json::Value {
    let k = Distribution::from_json(DISTRIBUTIONS[2]).unwrap().to_json();
    json!({"steps": [
        {"name": "retrieve", "module": "retrieve", "args": {"index": "docs", "k": {"distribution": k}}},
        {"name": "predict", "module": "chain_of_thought",
         "args": {"signature": "context, question -> answer", "lm": "m", "temperature": 0.5}},
    ]})
}

fn program_study_seed() -> serde_json::Value {
    json!({
        "program": program_seed(),
        "examples": [{"question": "q1", "answer": "a1"}, {"question": "q2", "answer": "a2"}],
        "metric_tool": "metric",
        "n_trials": 4,
        "concurrency": 2,
        "minibatch_size": 1,
        "failure_score": 0.0,
        "timeout": 5.0,
        "seed": 0,
    })
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn study_toml_text(e in edits()) {
        count_panics();
        let t = text(&mutate(STUDY_TOML.as_bytes(), &e));
        if let Err(err) = StudyFile::parse(&t, Path::new("study.toml")) {
            prop_assert!(!err.to_string().is_empty());
        }
        no_panics();
    }

    #[test]
    fn distribution_json(seed in 0..DISTRIBUTIONS.len(), e in edits()) {
        count_panics();
        let t = text(&mutate(DISTRIBUTIONS[seed].as_bytes(), &e));
        if let Ok(d) = Distribution::from_json(&t) {
            // What is accepted survives a round trip unchanged.
            let again = Distribution::from_json(&d.to_json().to_string());
            prop_assert_eq!(again.as_ref().ok(), Some(&d), "{}", t);
        }
        no_panics();
    }

    #[test]
    fn sampler_and_pruner_options(seed in 0..COMPONENTS.len(), kind in 0..COMPONENTS.len(), e in edits()) {
        count_panics();
        let (_, options, _) = COMPONENTS[seed];
        let (kind, _, sampler) = COMPONENTS[kind];
        let options = text(&mutate(options.as_bytes(), &e));
        if sampler {
            let _ = sampler_from_component(kind, &options).map_err(|e| assert!(!e.to_string().is_empty()));
        } else {
            let _ = pruner_from_component(kind, &options).map_err(|e| assert!(!e.to_string().is_empty()));
        }
        no_panics();
    }

    #[test]
    fn programs_and_program_studies(study in any::<bool>(), e in edits()) {
        count_panics();
        let seed = if study { program_study_seed() } else { program_seed() };
        let t = text(&mutate(seed.to_string().as_bytes(), &e));
        if let Ok(v) = serde_json::from_str::<serde_json::Value>(&t) {
            if study {
                let _ = ProgramStudySpec::from_json(&v);
            } else {
                let _ = Program::from_json(&v);
            }
        }
        no_panics();
    }
}

/// A valid encoding of each unary request, against a study "s" with a few trials.
fn unary_seeds() -> Vec<(u8, Vec<u8>)> {
    use pb::study_call_request::Op as S;
    use pb::trial_call::Op as T;
    let float = pb::Distribution {
        kind: Some(pb::distribution::Kind::FloatDist(pb::FloatDistribution {
            low: -1.0,
            high: 1.0,
            log: false,
            step: None,
        })),
    };
    let study = |op| pb::StudyCallRequest {
        study: "s".into(),
        op: Some(op),
    };
    let trial = |number, op| pb::TrialCallRequest {
        call: Some(pb::TrialCall {
            study: "s".into(),
            number,
            op: Some(op),
        }),
    };
    let mut seeds = vec![
        (
            0,
            pb::CreateStudyRequest {
                name: Some("t".into()),
                directions: vec![0, 1],
                sampler: Some(pb::Component {
                    kind: "tpe".into(),
                    options_json: r#"{"seed": 1}"#.into(),
                }),
                pruner: Some(pb::Component {
                    kind: "median".into(),
                    options_json: "{}".into(),
                }),
                load_if_exists: true,
            }
            .encode_to_vec(),
        ),
        (1, pb::GetStudyRequest { name: "s".into() }.encode_to_vec()),
        (
            2,
            pb::DeleteStudyRequest { name: "t".into() }.encode_to_vec(),
        ),
        (
            3,
            pb::ListTrialsRequest {
                study: "s".into(),
                states: vec![1, 3],
            }
            .encode_to_vec(),
        ),
        (
            5,
            pb::CloseSessionRequest {
                session_id: "x".into(),
            }
            .encode_to_vec(),
        ),
    ];
    let studies = [
        S::Ask(pb::Empty {}),
        S::BestTrial(pb::Empty {}),
        S::SetUserAttr(pb::SetAttr {
            key: "k".into(),
            value_json: r#"{"a": [1, 2.5, null]}"#.into(),
        }),
        S::Enqueue(pb::Enqueue {
            params: [(
                "x".to_string(),
                pb::ParamValue {
                    kind: Some(pb::param_value::Kind::FloatValue(0.5)),
                },
            )]
            .into(),
            user_attrs_json: r#"{"u": 1}"#.into(),
            skip_if_exists: false,
        }),
        S::NTrials(pb::NTrials { states: vec![1] }),
    ];
    seeds.extend(studies.into_iter().map(|op| (4, study(op).encode_to_vec())));
    let trials = [
        T::Suggest(pb::Suggest {
            name: "x".into(),
            distribution: Some(float),
            given: None,
        }),
        T::Report(pb::Report {
            step: 3,
            value: 0.25,
        }),
        T::ShouldPrune(pb::Empty {}),
        T::SetUserAttr(pb::SetAttr {
            key: "k".into(),
            value_json: "1".into(),
        }),
        T::Tell(pb::Tell {
            outcome: Some(pb::Outcome {
                kind: Some(pb::outcome::Kind::Values(pb::Values { values: vec![0.5] })),
            }),
            strict: false,
            with_trial: true,
        }),
        T::GetTrial(pb::Empty {}),
    ];
    for number in [0, 1] {
        for op in trials.clone() {
            seeds.push((6, trial(number, op).encode_to_vec()));
        }
    }
    seeds
}

/// Calls the unary method `method` with `bytes` when they decode as its request.
async fn call(svc: &EngineService, method: u8, bytes: &[u8]) {
    macro_rules! go {
        ($ty:ty, $m:ident) => {
            if let Ok(req) = <$ty>::decode(bytes) {
                let _ = svc.$m(Request::new(req)).await;
            }
        };
    }
    match method {
        0 => go!(pb::CreateStudyRequest, create_study),
        1 => go!(pb::GetStudyRequest, get_study),
        2 => go!(pb::DeleteStudyRequest, delete_study),
        3 => go!(pb::ListTrialsRequest, list_trials),
        4 => go!(pb::StudyCallRequest, study_call),
        5 => go!(pb::CloseSessionRequest, close_session),
        _ => go!(pb::TrialCallRequest, trial_call),
    }
}

#[test]
fn unary_calls_with_mutated_messages() {
    count_panics();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let svc = EngineService::new(Arc::new(InMemoryStorage::new()));
    let seeds = unary_seeds();
    rt.block_on(async {
        let created = pb::CreateStudyRequest {
            name: Some("s".into()),
            directions: vec![0],
            ..Default::default()
        };
        svc.create_study(Request::new(created)).await.unwrap();
        // Two running trials for the trial calls to act on.
        for (m, b) in seeds
            .iter()
            .filter(|(m, _)| *m == 4)
            .take(1)
            .cycle()
            .take(2)
        {
            call(&svc, *m, b).await;
        }
    });
    let mut runner = proptest::test_runner::TestRunner::new(config());
    runner
        .run(&(0..seeds.len(), edits()), |(i, e)| {
            let (method, seed) = &seeds[i];
            let bytes = mutate(seed, &e);
            rt.block_on(async {
                tokio::time::timeout(Duration::from_secs(10), call(&svc, *method, &bytes))
                    .await
                    .expect("a call hung");
            });
            Ok(())
        })
        .unwrap();
    // Still serving (a mutated delete may have removed "s": ask for the list).
    rt.block_on(async {
        let r = svc
            .list_studies(Request::new(pb::ListStudiesRequest {}))
            .await;
        assert!(r.is_ok(), "{r:?}");
    });
    no_panics();
}

/// The Session stream over a real loopback server: a valid open, then mutated messages of
/// every kind, then a `list` that must still be answered (or the stream refused with a status).
#[test]
fn session_stream_with_mutated_messages() {
    use pb::session_request::Op;
    count_panics();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let value = |v: f64| pb::Value {
        kind: Some(pb::value::Kind::FloatValue(v)),
    };
    let ops = vec![
        Op::Define(pb::DefineVariable {
            name: "lr".into(),
            r#type: "float".into(),
            value: Some(value(0.1)),
            constraints: Some(pb::ValueMap {
                entries: [
                    ("min".to_string(), value(0.0)),
                    ("max".to_string(), value(1.0)),
                ]
                .into(),
            }),
            tunable: true,
        }),
        Op::Get("lr".into()),
        Op::Set(pb::SetVariables {
            changes: vec![pb::VariableChange {
                name: "lr".into(),
                value: Some(value(0.2)),
                expected_version: Some(1),
            }],
        }),
        Op::List(pb::ListVariables {
            pattern: Some("l*".into()),
        }),
        Op::Index(pb::IndexDocuments {
            name: "docs".into(),
            texts: vec!["the cat sat".into(), "a dog ran".into()],
            ids: vec![],
            stop_words: true,
            stem: true,
        }),
        Op::Call(pb::CallTool {
            tool: "search".into(),
            args: [(
                "query".to_string(),
                pb::Value {
                    kind: Some(pb::value::Kind::StrValue("cat".into())),
                },
            )]
            .into(),
        }),
        Op::RegisterTool(pb::ToolSpec {
            name: "t".into(),
            description: "d".into(),
            params: vec![pb::ToolParam {
                name: "a".into(),
                r#type: "int".into(),
                required: true,
                default: None,
                description: String::new(),
            }],
            extra_args: false,
            returns: "int".into(),
            timeout_seconds: 1.0,
            shared: false,
        }),
        Op::AddLm(pb::AddLm {
            name: "m".into(),
            config_json: r#"{"model": "x", "api_base": "http://127.0.0.1:1/v1"}"#.into(),
        }),
        Op::Program(pb::ProgramOp {
            action: "validate".into(),
            spec_json: program_seed().to_string(),
        }),
        Op::Delete("lr".into()),
    ];
    let seeds: Vec<Vec<u8>> = ops
        .into_iter()
        .enumerate()
        .map(|(i, op)| {
            pb::SessionRequest {
                id: i as u64 + 1,
                op: Some(op),
            }
            .encode_to_vec()
        })
        .collect();
    let (url, _stop) = rt.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let svc = EngineService::new(Arc::new(InMemoryStorage::new()));
        tokio::spawn(grpc::serve(listener, svc, ServeOptions::default(), async {
            let _ = rx.await;
        }));
        (format!("http://{addr}"), tx)
    });
    let mut client = rt.block_on(async {
        for _ in 0..100 {
            if let Ok(c) = EngineClient::connect(url.clone()).await {
                return c;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("the server did not start")
    });
    let cases = prop::collection::vec((0..seeds.len(), edits()), 1..6);
    let mut cfg = config();
    cfg.cases = cfg.cases.div_ceil(4).max(1); // each case is a whole stream
    let mut runner = proptest::test_runner::TestRunner::new(cfg);
    runner
        .run(&cases, |msgs| {
            let mut stream = vec![pb::SessionRequest {
                id: 0,
                op: Some(Op::Open(pb::OpenSession {
                    session_id: String::new(),
                    ttl_seconds: 30.0,
                })),
            }];
            stream.extend(
                msgs.iter().filter_map(|(i, e)| {
                    pb::SessionRequest::decode(&mutate(&seeds[*i], e)[..]).ok()
                }),
            );
            stream.push(pb::SessionRequest {
                id: 999_999,
                op: Some(Op::List(pb::ListVariables { pattern: None })),
            });
            stream.push(pb::SessionRequest {
                id: 1_000_000,
                op: Some(Op::Close(pb::Empty {})),
            });
            let mut c = client.clone();
            rt.block_on(async move {
                tokio::time::timeout(Duration::from_secs(20), async move {
                    let Ok(resp) = c.session(tokio_stream::iter(stream)).await else {
                        return;
                    };
                    let mut replies = resp.into_inner();
                    while let Ok(Some(_)) = replies.message().await {}
                })
                .await
                .expect("a session stream hung");
            });
            Ok(())
        })
        .unwrap();
    rt.block_on(async {
        assert!(
            client.list_sessions(pb::Empty {}).await.is_ok(),
            "the server stopped answering"
        );
    });
    no_panics();
}

/// A value written over one column of one stored row.
#[derive(Debug, Clone)]
enum Cell {
    Null,
    Int(i64),
    Real(f64),
    Text(String),
    Blob(Vec<u8>),
}

fn cells() -> impl Strategy<Value = Cell> {
    prop_oneof![
        Just(Cell::Null),
        any::<i64>().prop_map(Cell::Int),
        prop_oneof![
            Just(-1i64),
            Just(0),
            Just(1),
            Just(2),
            Just(i64::MAX),
            Just(i64::MIN)
        ]
        .prop_map(Cell::Int),
        any::<f64>().prop_map(Cell::Real),
        prop_oneof![Just(f64::NAN), Just(f64::INFINITY), Just(-0.0), Just(1e308)]
            .prop_map(Cell::Real),
        ".{0,40}".prop_map(Cell::Text),
        prop_oneof![
            Just("COMPLETE"),
            Just("RUNNING"),
            Just("WAITING"),
            Just("FINITE"),
            Just("INF_NEG"),
            Just("NAN"),
            Just("{"),
            Just(r#"{"name": "FloatDistribution", "attributes": {"low": 1, "high": 0}}"#),
            Just(r#"{"name": "CategoricalDistribution", "attributes": {"choices": []}}"#),
            Just("2026-13-45 25:61:61"),
            Just("1.5e999"),
            Just("null"),
        ]
        .prop_map(|s| Cell::Text(s.to_string())),
        proptest::collection::vec(any::<u8>(), 0..16).prop_map(Cell::Blob),
    ]
}

/// Every column of Optuna's schema that the engine reads.
const COLUMNS: &[(&str, &str)] = &[
    ("studies", "study_name"),
    ("study_directions", "direction"),
    ("study_directions", "objective"),
    ("study_user_attributes", "value_json"),
    ("study_system_attributes", "key"),
    ("trials", "number"),
    ("trials", "study_id"),
    ("trials", "state"),
    ("trials", "datetime_start"),
    ("trials", "datetime_complete"),
    ("trial_params", "trial_id"),
    ("trial_params", "param_name"),
    ("trial_params", "param_value"),
    ("trial_params", "distribution_json"),
    ("trial_values", "objective"),
    ("trial_values", "value"),
    ("trial_values", "value_type"),
    ("trial_intermediate_values", "step"),
    ("trial_intermediate_values", "intermediate_value"),
    ("trial_intermediate_values", "intermediate_value_type"),
    ("trial_user_attributes", "key"),
    ("trial_user_attributes", "value_json"),
    ("trial_system_attributes", "value_json"),
    ("trial_heartbeats", "heartbeat"),
    ("version_info", "schema_version"),
    ("alembic_version", "version_num"),
];

/// A SQLite study written by the engine (finished, pruned, failed and running trials with
/// float, int and categorical parameters, intermediate values, attributes, heartbeats).
fn seed_database(path: &Path) {
    use dspex_engine::optimizer::{
        CategoricalDistribution, FloatDistribution, IntDistribution, ParamValue, StudyDirection,
        TrialState,
    };
    use dspex_engine::{SqlOptions, SqlStorage, Storage};
    let url = format!("sqlite:///{}", path.display());
    let options = SqlOptions {
        heartbeat_interval: Some(Duration::from_secs(60)),
        ..SqlOptions::default()
    };
    let st = SqlStorage::open(&url, options).unwrap();
    let s = st
        .create_new_study(&[StudyDirection::Minimize], Some("s"))
        .unwrap();
    st.set_study_user_attr(s, "u", json!({"a": [1, 2]}))
        .unwrap();
    st.set_study_system_attr(s, "k", json!("v")).unwrap();
    let x = Distribution::Float(FloatDistribution::new(0.0, 1.0, false, None).unwrap());
    let n = Distribution::Int(IntDistribution::new(1, 9, false, 1).unwrap());
    let c = Distribution::Categorical(
        CategoricalDistribution::new(vec![ParamValue::Str("a".into()), ParamValue::None]).unwrap(),
    );
    for (i, state) in [
        TrialState::Complete,
        TrialState::Pruned,
        TrialState::Fail,
        TrialState::Running,
    ]
    .into_iter()
    .enumerate()
    {
        let t = st.create_new_trial(s, None).unwrap();
        st.set_trial_param(s, t, "x", 0.25 * i as f64, &x).unwrap();
        st.set_trial_param(s, t, "n", 3.0, &n).unwrap();
        st.set_trial_param(s, t, "c", (i % 2) as f64, &c).unwrap();
        st.set_trial_intermediate_value(s, t, 0, 0.5).unwrap();
        st.set_trial_user_attr(s, t, "note", json!(i)).unwrap();
        st.set_trial_system_attr(s, t, "sys", json!({"k": null}))
            .unwrap();
        if state != TrialState::Running {
            let values = (state == TrialState::Complete).then(|| vec![f64::INFINITY]);
            st.set_trial_state_values(s, t, state, values, None)
                .unwrap();
        }
    }
    st.flush().unwrap();
}

/// Storage rows with corrupted columns: each case overwrites one column of one row of a study
/// the engine wrote (any type: NULL, extreme numbers, NaN, text, bytes) and reads the study
/// back in a fresh storage. Every read is answered or refused with an error: no panic.
#[test]
fn storage_rows_with_corrupted_columns() {
    use dspex_engine::{SqlOptions, SqlStorage, Storage};
    use sqlx::{Connection, Executor};
    count_panics();
    let dir = std::env::temp_dir().join(format!("dspex-fuzz-rows-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let seed = dir.join("seed.db");
    seed_database(&seed);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let connect = |p: &Path| {
        let p = p.to_path_buf();
        async move {
            sqlx::sqlite::SqliteConnection::connect(&format!("sqlite://{}", p.display()))
                .await
                .unwrap()
        }
    };
    // One file per case: fold the write-ahead log into the seed first.
    rt.block_on(async {
        let mut db = connect(&seed).await;
        db.execute("PRAGMA journal_mode=DELETE").await.unwrap();
    });
    let case = dir.join("case.db");
    let refused = AtomicUsize::new(0);
    let mut runner = proptest::test_runner::TestRunner::new(config());
    runner
        .run(
            &(0..COLUMNS.len(), 0usize..8, cells()),
            |(col, row, cell)| {
                let (table, column) = COLUMNS[col];
                std::fs::copy(&seed, &case).unwrap();
                let written = rt.block_on(async {
                    let mut db = connect(&case).await;
                    let sql = format!(
                        "UPDATE {table} SET {column} = ? WHERE rowid = \
                         (SELECT rowid FROM {table} LIMIT 1 OFFSET {row} % \
                         (SELECT MAX(COUNT(*), 1) FROM {table}))"
                    );
                    let q = sqlx::query(sqlx::AssertSqlSafe(sql));
                    let q = match cell {
                        Cell::Null => q.bind(None::<i64>),
                        Cell::Int(v) => q.bind(v),
                        Cell::Real(v) => q.bind(v),
                        Cell::Text(v) => q.bind(v),
                        Cell::Blob(v) => q.bind(v),
                    };
                    q.execute(&mut db).await.is_ok()
                });
                if !written {
                    return Ok(()); // a constraint of the schema refused the value
                }
                let url = format!("sqlite:///{}", case.display());
                let Ok(st) = SqlStorage::open(&url, SqlOptions::default()) else {
                    refused.fetch_add(1, Ordering::Relaxed);
                    return Ok(());
                };
                let read = st.get_all_studies().and_then(|_| {
                    let s = st.get_study_id_from_name("s")?;
                    st.get_study_directions(s)?;
                    st.get_study_user_attrs(s)?;
                    st.get_study_system_attrs(s)?;
                    st.get_all_trials(s, None)
                });
                match read {
                    Ok(_) => {}
                    Err(e) => {
                        assert!(!e.to_string().is_empty());
                        refused.fetch_add(1, Ordering::Relaxed);
                    }
                }
                Ok(())
            },
        )
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    eprintln!(
        "corrupted rows: {} refused with an error",
        refused.load(Ordering::Relaxed)
    );
    no_panics();
}
