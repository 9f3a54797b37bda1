//! Load on one engine over real gRPC on loopback: `--streams` evaluators on Attach streams
//! (capacity 1 each, one define-by-run suggest per trial, then Finished) working through a run,
//! while `--asktell` clients run ask → suggest → tell with unary calls, until `--trials` trials in
//! all. Rust clients, so that the figures are the engine's and not the OS scheduler's (Python
//! processes would be on 2 cores).
//!
//! Checks that no trial is lost or duplicated (every number handed out once, every trial
//! COMPLETE, the study's count exact) and reports throughput and latency percentiles: dispatch
//! (an evaluator's Finished sent → its next Evaluate received), the suggest round trip on the
//! stream, and an ask/tell client's whole trial.
//!
//! `cargo bench -p dspex-engine --bench load -- [--trials 100000] [--streams 64] [--asktell 8]
//! [--storage memory|sqlite:///path.db] [--out FILE]`

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use dspex_engine::grpc::pb;
use dspex_engine::grpc::pb::attach_request::Msg as In;
use dspex_engine::grpc::pb::attach_response::Msg as Out;
use dspex_engine::grpc::pb::engine_client::EngineClient;
use dspex_engine::grpc::{self, EngineService, ServeOptions};
use dspex_engine::{InMemoryStorage, SqlOptions, SqlStorage, Storage};
use tokio::sync::mpsc;
use tonic::transport::Channel;

struct Args {
    trials: u64,
    streams: usize,
    asktell: usize,
    storage: String,
    out: Option<String>,
}

fn args() -> Args {
    let mut a = Args {
        trials: 100_000,
        streams: 64,
        asktell: 8,
        storage: "memory".into(),
        out: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let mut v = || it.next().unwrap_or_else(|| panic!("{k} needs a value"));
        match k.as_str() {
            "--trials" => a.trials = v().parse().expect("--trials: a number"),
            "--streams" => a.streams = v().parse().expect("--streams: a number"),
            "--asktell" => a.asktell = v().parse().expect("--asktell: a number"),
            "--storage" => a.storage = v(),
            "--out" => a.out = Some(v()),
            "--bench" => {}
            other => panic!("unknown argument {other:?}"),
        }
    }
    a
}

fn suggest_x(study: &str, number: u64) -> pb::TrialCall {
    pb::TrialCall {
        study: study.into(),
        number,
        op: Some(pb::trial_call::Op::Suggest(pb::Suggest {
            name: "x".into(),
            distribution: Some(pb::Distribution {
                kind: Some(pb::distribution::Kind::FloatDist(pb::FloatDistribution {
                    low: -1.0,
                    high: 1.0,
                    log: false,
                    step: None,
                })),
            }),
            given: None,
        })),
    }
}

fn value_of(reply: Option<pb::TrialReply>) -> f64 {
    match reply.and_then(|r| r.result) {
        Some(pb::trial_reply::Result::Suggested(s)) => match s.value.and_then(|v| v.kind) {
            Some(pb::param_value::Kind::FloatValue(x)) => x,
            other => panic!("suggest answered {other:?}"),
        },
        other => panic!("suggest answered {other:?}"),
    }
}

fn values(v: f64) -> pb::Outcome {
    pb::Outcome {
        kind: Some(pb::outcome::Kind::Values(pb::Values {
            values: vec![v * v],
        })),
    }
}

/// Latencies of one client, in microseconds.
#[derive(Default)]
struct Lat {
    dispatch: Vec<u64>,
    suggest: Vec<u64>,
    trial: Vec<u64>,
    numbers: Vec<u64>,
}

fn us(d: Duration) -> u64 {
    d.as_micros() as u64
}

/// One evaluator on an Attach stream, until its run ends.
async fn evaluator(mut c: EngineClient<Channel>) -> Lat {
    let (tx, rx) = mpsc::unbounded_channel();
    let hello = pb::Hello {
        study: "load".into(),
        callables: vec![],
        capacity: 1,
        start: None,
        worker: "load".into(),
        heartbeat_ms: 1000,
    };
    tx.send(pb::AttachRequest {
        msg: Some(In::Hello(hello)),
    })
    .unwrap();
    let mut st = c
        .attach(tokio_stream::wrappers::UnboundedReceiverStream::new(rx))
        .await
        .expect("attach")
        .into_inner();
    let mut lat = Lat::default();
    let mut finished_at: Option<Instant> = None;
    let mut received = 0u64;
    let mut next_id = 0u64;
    while let Some(m) = st.message().await.expect("stream") {
        match m.msg {
            Some(Out::Evaluate(e)) => {
                received += 1;
                if let Some(t) = finished_at.take() {
                    lat.dispatch.push(us(t.elapsed()));
                }
                lat.numbers.push(e.trial);
                next_id += 1;
                let t0 = Instant::now();
                tx.send(pb::AttachRequest {
                    msg: Some(In::Call(pb::Call {
                        id: next_id,
                        call: Some(suggest_x("", e.trial)),
                    })),
                })
                .unwrap();
                let x = loop {
                    match st.message().await.expect("stream").and_then(|m| m.msg) {
                        Some(Out::Reply(r)) if r.id == next_id => break value_of(r.reply),
                        Some(Out::Heartbeat(_)) => {}
                        other => panic!("expected a reply, got {other:?}"),
                    }
                };
                lat.suggest.push(us(t0.elapsed()));
                tx.send(pb::AttachRequest {
                    msg: Some(In::Finished(pb::Finished {
                        trial: e.trial,
                        outcome: Some(values(x)),
                        abort: None,
                    })),
                })
                .unwrap();
                finished_at = Some(Instant::now());
            }
            Some(Out::Heartbeat(_)) => {
                let _ = tx.send(pb::AttachRequest {
                    msg: Some(In::Heartbeat(pb::Heartbeat { received })),
                });
            }
            Some(Out::RunEnded(_)) => break,
            _ => {}
        }
    }
    lat
}

/// One ask/tell client: `n` trials with unary calls.
async fn asker(mut c: EngineClient<Channel>, n: u64) -> Lat {
    let mut lat = Lat::default();
    for _ in 0..n {
        let t0 = Instant::now();
        let asked = c
            .study_call(pb::StudyCallRequest {
                study: "load".into(),
                op: Some(pb::study_call_request::Op::Ask(pb::Empty {})),
            })
            .await
            .expect("ask")
            .into_inner();
        let Some(pb::study_call_reply::Result::Number(number)) = asked.result else {
            panic!("ask answered {asked:?}");
        };
        lat.numbers.push(number);
        let t1 = Instant::now();
        let r = c
            .trial_call(pb::TrialCallRequest {
                call: Some(suggest_x("load", number)),
            })
            .await
            .expect("suggest")
            .into_inner();
        let x = value_of(r.reply);
        lat.suggest.push(us(t1.elapsed()));
        let tell = pb::TrialCall {
            study: "load".into(),
            number,
            op: Some(pb::trial_call::Op::Tell(pb::Tell {
                outcome: Some(values(x)),
                strict: true,
                with_trial: false,
            })),
        };
        let r = c
            .trial_call(pb::TrialCallRequest { call: Some(tell) })
            .await
            .expect("tell")
            .into_inner();
        if let Some(pb::trial_reply::Result::Error(e)) = r.reply.and_then(|r| r.result) {
            panic!("tell of trial {number} failed: {e:?}");
        }
        lat.trial.push(us(t0.elapsed()));
    }
    lat
}

fn pct(v: &mut [u64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_unstable();
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i] as f64 / 1000.0
}

fn summary(v: &mut [u64]) -> serde_json::Value {
    serde_json::json!({
        "n": v.len(),
        "p50_ms": pct(v, 0.5),
        "p99_ms": pct(v, 0.99),
        "max_ms": pct(v, 1.0),
    })
}

async fn count(c: &mut EngineClient<Channel>, states: Vec<i32>) -> u64 {
    let r = c
        .study_call(pb::StudyCallRequest {
            study: "load".into(),
            op: Some(pb::study_call_request::Op::NTrials(pb::NTrials { states })),
        })
        .await
        .expect("n_trials")
        .into_inner();
    match r.result {
        Some(pb::study_call_reply::Result::Count(n)) => n,
        other => panic!("n_trials answered {other:?}"),
    }
}

#[tokio::main]
async fn main() {
    let a = args();
    let storage: Arc<dyn Storage> = if a.storage == "memory" {
        Arc::new(InMemoryStorage::new())
    } else {
        Arc::new(SqlStorage::open(&a.storage, SqlOptions::default()).expect("storage"))
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let service = EngineService::new(storage);
    tokio::spawn(grpc::serve(
        listener,
        service,
        ServeOptions::default(),
        std::future::pending(),
    ));
    let channel = loop {
        if let Ok(ch) = Channel::from_shared(url.clone()).unwrap().connect().await {
            break ch;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let mut c = EngineClient::new(channel.clone()).max_decoding_message_size(64 << 20);
    c.create_study(pb::CreateStudyRequest {
        name: Some("load".into()),
        directions: vec![],
        sampler: Some(pb::Component {
            kind: "random".into(),
            options_json: r#"{"seed": 0}"#.into(),
        }),
        pruner: None,
        load_if_exists: false,
    })
    .await
    .expect("create study");

    let per_asker = if a.asktell == 0 {
        0
    } else {
        a.trials / 10 / a.asktell as u64
    };
    let by_askers = per_asker * a.asktell as u64;
    let by_run = a.trials - by_askers;
    // The run's owner: capacity 0, it only starts the run and waits for its end.
    let (otx, orx) = mpsc::unbounded_channel();
    otx.send(pb::AttachRequest {
        msg: Some(In::Hello(pb::Hello {
            study: "load".into(),
            callables: vec![],
            capacity: 0,
            start: Some(pb::RunSpec {
                n_trials: Some(by_run),
                timeout: None,
                max_concurrency: None,
                trial_timeout: None,
                max_retries: 0,
            }),
            worker: "owner".into(),
            heartbeat_ms: 60_000,
        })),
    })
    .unwrap();
    let mut owner = c
        .attach(tokio_stream::wrappers::UnboundedReceiverStream::new(orx))
        .await
        .expect("start the run")
        .into_inner();

    let t0 = Instant::now();
    // Separate connections, as separate processes would have (one HTTP/2 connection each).
    let mut tasks = Vec::new();
    for _ in 0..a.streams {
        let ch = Channel::from_shared(url.clone())
            .unwrap()
            .connect()
            .await
            .unwrap();
        tasks.push(tokio::spawn(evaluator(EngineClient::new(ch))));
    }
    for _ in 0..a.asktell {
        let ch = Channel::from_shared(url.clone())
            .unwrap()
            .connect()
            .await
            .unwrap();
        tasks.push(tokio::spawn(asker(EngineClient::new(ch), per_asker)));
    }
    let mut lats = Vec::new();
    for t in tasks {
        lats.push(t.await.expect("client task"));
    }
    let wall = t0.elapsed().as_secs_f64();
    while let Ok(Some(m)) = owner.message().await {
        if matches!(m.msg, Some(Out::RunEnded(_))) {
            break;
        }
    }
    drop(otx);

    let (ev, ak) = lats.split_at_mut(a.streams);
    let mut seen = HashSet::new();
    let mut dup = 0u64;
    let mut all = |l: &Lat| {
        for n in &l.numbers {
            if !seen.insert(*n) {
                dup += 1;
            }
        }
    };
    ev.iter().for_each(&mut all);
    ak.iter().for_each(&mut all);
    let handed_out = seen.len() as u64;
    let total = count(&mut c, vec![]).await;
    let complete = count(&mut c, vec![pb::TrialState::Complete as i32]).await;
    let gather = |ls: &mut [Lat], f: fn(&mut Lat) -> &mut Vec<u64>| {
        ls.iter_mut()
            .flat_map(|l| f(l).drain(..))
            .collect::<Vec<u64>>()
    };
    let per_stream: Vec<usize> = ev.iter().map(|l| l.numbers.len()).collect();
    let result = serde_json::json!({
        "trials": a.trials,
        "streams": a.streams,
        "asktell_clients": a.asktell,
        "storage": a.storage,
        "by_streams": per_stream.iter().sum::<usize>(),
        "by_asktell": by_askers,
        "stream_trials_min_max": [per_stream.iter().min(), per_stream.iter().max()],
        "wall_s": (wall * 100.0).round() / 100.0,
        "trials_per_s": (a.trials as f64 / wall).round(),
        "duplicates": dup,
        "handed_out": handed_out,
        "study_trials": total,
        "study_complete": complete,
        "dispatch": summary(&mut gather(ev, |l| &mut l.dispatch)),
        "stream_suggest": summary(&mut gather(ev, |l| &mut l.suggest)),
        "asktell_suggest": summary(&mut gather(ak, |l| &mut l.suggest)),
        "asktell_trial": summary(&mut gather(ak, |l| &mut l.trial)),
    });
    let text = serde_json::to_string_pretty(&result).unwrap();
    println!("{text}");
    if let Some(out) = &a.out {
        std::fs::write(out, text + "\n").expect("write --out");
    }
    let ok = dup == 0 && handed_out == a.trials && total == a.trials && complete == a.trials;
    if !ok {
        eprintln!("FAILED: trials lost or duplicated");
        std::process::exit(1);
    }
}
