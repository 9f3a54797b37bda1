//! Hostile clients against a real `dspex serve` process on loopback, one scenario after another,
//! with the server's resident memory (VmRSS from /proc) before and after each and a check that it
//! still serves a well-behaved client:
//!
//! - an evaluator that heartbeats but stops reading its Attach stream (its trials must be re-run
//!   by another evaluator, every trial of the run COMPLETE);
//! - thousands of Attach streams over a few connections (past `--max-streams`: refused);
//! - sessions opened until `--max-sessions` refuses more;
//! - slow senders: unary calls whose request body never ends (each ends at its deadline);
//! - rapid resets: HTTP/2 streams opened and reset at once, by the ten thousand;
//! - header blocks far over the limit;
//! - a thousand idle HTTP/2 connections (closed by the server after `--idle-timeout`).
//!
//! `cargo bench -p dspex-engine --bench hostile -- [--out FILE]`

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use dspex_engine::grpc::pb;
use dspex_engine::grpc::pb::attach_request::Msg as In;
use dspex_engine::grpc::pb::attach_response::Msg as Out;
use dspex_engine::grpc::pb::engine_client::EngineClient;
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tonic::transport::Channel;

const MAX_STREAMS: usize = 4096;
const MAX_SESSIONS: usize = 2000;
/// Seconds before the server closes a connection with no call in flight.
const IDLE_TIMEOUT_S: u64 = 5;

struct Server {
    child: Child,
    addr: String,
}

impl Server {
    fn start() -> Server {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let addr = format!("127.0.0.1:{port}");
        let child = Command::new(env!("CARGO_BIN_EXE_dspex"))
            .args(["serve", "--addr", &addr, "--heartbeat-ms", "200"])
            .args(["--max-streams", &MAX_STREAMS.to_string()])
            .args(["--max-sessions", &MAX_SESSIONS.to_string()])
            .args(["--idle-timeout", &IDLE_TIMEOUT_S.to_string()])
            .env("DSPEX_LOG", "error")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start dspex serve");
        Server { child, addr }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn rss_mb(&self) -> f64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .expect("the server is gone");
        let kb: f64 = status
            .lines()
            .find(|l| l.starts_with("VmRSS:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(f64::NAN);
        (kb / 1024.0 * 10.0).round() / 10.0
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn client(url: &str) -> EngineClient<Channel> {
    for _ in 0..200 {
        if let Ok(ch) = Channel::from_shared(url.to_string())
            .unwrap()
            .connect()
            .await
        {
            return EngineClient::new(ch);
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("cannot connect to {url}");
}

/// The server answers a well-behaved client.
async fn serves(url: &str) -> bool {
    let mut c = client(url).await;
    tokio::time::timeout(
        Duration::from_secs(10),
        c.list_studies(pb::ListStudiesRequest {}),
    )
    .await
    .is_ok_and(|r| r.is_ok())
}

/// An Attach stream's Hello; `hb_ms`: how often this client promises a heartbeat.
fn hello(study: &str, capacity: u32, start: Option<u64>, hb_ms: u32) -> pb::AttachRequest {
    pb::AttachRequest {
        msg: Some(In::Hello(pb::Hello {
            study: study.into(),
            callables: vec![],
            capacity,
            start: start.map(|n| pb::RunSpec {
                n_trials: Some(n),
                timeout: None,
                max_concurrency: None,
                trial_timeout: None,
                max_retries: 5,
            }),
            worker: "hostile".into(),
            heartbeat_ms: hb_ms,
        })),
    }
}

async fn attach(
    c: &mut EngineClient<Channel>,
    first: pb::AttachRequest,
) -> (
    mpsc::UnboundedSender<pb::AttachRequest>,
    tonic::Streaming<pb::AttachResponse>,
) {
    let (tx, rx) = mpsc::unbounded_channel();
    tx.send(first).unwrap();
    let st = c
        .attach(tokio_stream::wrappers::UnboundedReceiverStream::new(rx))
        .await
        .expect("attach")
        .into_inner();
    (tx, st)
}

async fn deaf_evaluator(url: &str) -> Value {
    let mut c = client(url).await;
    c.create_study(pb::CreateStudyRequest {
        name: Some("deaf".into()),
        directions: vec![],
        sampler: Some(pb::Component {
            kind: "random".into(),
            options_json: "{}".into(),
        }),
        pruner: None,
        load_if_exists: false,
    })
    .await
    .unwrap();
    let n = 200;
    let (_owner_tx, mut owner) = attach(&mut c, hello("deaf", 0, Some(n), 60_000)).await;
    let (deaf_tx, _deaf) = attach(&mut c, hello("deaf", 64, None, 200)).await;
    let beats = tokio::spawn(async move {
        let beat = pb::AttachRequest {
            msg: Some(In::Heartbeat(pb::Heartbeat { received: 0 })),
        };
        while deaf_tx.send(beat.clone()).is_ok() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (tx, mut good) = attach(&mut c, hello("deaf", 4, None, 200)).await;
    let mut done = 0;
    let mut received = 0u64;
    while let Ok(Some(m)) = good.message().await {
        match m.msg {
            Some(Out::Evaluate(e)) => {
                received += 1;
                done += 1;
                tx.send(pb::AttachRequest {
                    msg: Some(In::Finished(pb::Finished {
                        trial: e.trial,
                        outcome: Some(pb::Outcome {
                            kind: Some(pb::outcome::Kind::Values(pb::Values { values: vec![1.0] })),
                        }),
                        abort: None,
                    })),
                })
                .unwrap();
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
    while let Ok(Some(m)) = owner.message().await {
        if matches!(m.msg, Some(Out::RunEnded(_))) {
            break;
        }
    }
    beats.abort();
    let count = |states: Vec<i32>| {
        let mut c = c.clone();
        async move {
            match c
                .study_call(pb::StudyCallRequest {
                    study: "deaf".into(),
                    op: Some(pb::study_call_request::Op::NTrials(pb::NTrials { states })),
                })
                .await
                .unwrap()
                .into_inner()
                .result
            {
                Some(pb::study_call_reply::Result::Count(n)) => n,
                _ => 0,
            }
        }
    };
    let complete = count(vec![pb::TrialState::Complete as i32]).await;
    let failed = count(vec![pb::TrialState::Fail as i32]).await;
    json!({"run_trials": n, "complete": complete, "failed_with_the_deaf_evaluator": failed,
           "evaluated_by_the_good_one": done, "ok": complete == n})
}

/// Attach streams that join the study and wait (capacity 0, a heartbeat promised once a
/// minute), 600 per connection on 8 connections.
async fn many_streams(url: &str) -> (Value, Vec<mpsc::UnboundedSender<pb::AttachRequest>>) {
    let mut open = Vec::new();
    let (mut accepted, mut refused, mut other) = (0, 0, 0);
    for _ in 0..8 {
        let c = client(url).await;
        for _ in 0..600 {
            let (tx, rx) = mpsc::unbounded_channel();
            tx.send(hello("deaf", 0, None, 60_000)).unwrap();
            match c
                .clone()
                .attach(tokio_stream::wrappers::UnboundedReceiverStream::new(rx))
                .await
            {
                Ok(_) => {
                    accepted += 1;
                    open.push(tx);
                }
                Err(s) if s.code() == tonic::Code::ResourceExhausted => refused += 1,
                Err(_) => other += 1,
            }
        }
    }
    (
        json!({"asked": 4800, "accepted": accepted, "refused_resource_exhausted": refused,
               "other_errors": other, "ok": accepted <= MAX_STREAMS && refused > 0}),
        open,
    )
}

async fn many_sessions(url: &str) -> Value {
    let c = client(url).await;
    let (mut opened, mut refused_with) = (0usize, String::new());
    for _ in 0..MAX_SESSIONS + 100 {
        let (tx, rx) = mpsc::unbounded_channel();
        tx.send(pb::SessionRequest {
            id: 1,
            op: Some(pb::session_request::Op::Open(pb::OpenSession {
                ttl_seconds: 60.0,
                ..Default::default()
            })),
        })
        .unwrap();
        match c
            .clone()
            .session(tokio_stream::wrappers::UnboundedReceiverStream::new(rx))
            .await
        {
            Ok(r) => {
                let mut st = r.into_inner();
                match st.message().await {
                    Ok(Some(m)) if matches!(m.kind, Some(pb::session_reply::Kind::Opened(_))) => {
                        opened += 1
                    }
                    Ok(other) => {
                        refused_with = format!("{other:?}");
                        break;
                    }
                    Err(s) => {
                        refused_with = format!("{:?}: {}", s.code(), s.message());
                        break;
                    }
                }
            }
            Err(s) => {
                refused_with = format!("{:?}: {}", s.code(), s.message());
                break;
            }
        }
        drop(tx);
    }
    json!({"opened": opened, "refused_with": refused_with, "ok": opened == MAX_SESSIONS})
}

fn request(addr: &str, path: &str, headers: &[(&str, String)]) -> http::Request<()> {
    let mut r = http::Request::post(format!("http://{addr}{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers");
    for (k, v) in headers {
        r = r.header(*k, v);
    }
    r.body(()).unwrap()
}

async fn h2_connect(addr: &str) -> Option<h2::client::SendRequest<bytes::Bytes>> {
    let tcp = tokio::net::TcpStream::connect(addr).await.ok()?;
    let (h2, conn) = h2::client::handshake(tcp).await.ok()?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    h2.ready().await.ok()
}

async fn slow_senders(srv: &Server) -> (Value, f64) {
    let mut pending = Vec::new();
    for _ in 0..10 {
        let Some(mut h2) = h2_connect(&srv.addr).await else {
            continue;
        };
        for _ in 0..50 {
            let Ok(ready) = h2.clone().ready().await else {
                break;
            };
            h2 = ready;
            let headers = [("grpc-timeout", "2S".to_string())];
            let Ok((resp, mut send)) = h2.send_request(
                request(&srv.addr, "/dspex.v1.Engine/CreateStudy", &headers),
                false,
            ) else {
                break;
            };
            let _ = send.send_data(bytes::Bytes::from_static(&[0, 0, 0, 0, 100, 0x0a]), false);
            pending.push((resp, send));
        }
    }
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let during = srv.rss_mb();
    let t0 = Instant::now();
    let mut ended = 0;
    let n = pending.len();
    for (resp, _send) in pending {
        if let Ok(Ok(r)) = tokio::time::timeout(Duration::from_secs(10), resp).await {
            if r.headers().get("grpc-status").is_some_and(|s| s != "0") {
                ended += 1;
            }
        }
    }
    (
        json!({"calls": n, "ended_at_deadline": ended, "waited_s": t0.elapsed().as_secs_f64(),
               "ok": ended == n}),
        during,
    )
}

async fn rapid_resets(addr: &str) -> Value {
    let mut reset = 0;
    let mut goaway = 0;
    for _ in 0..4 {
        let Some(mut h2) = h2_connect(addr).await else {
            continue;
        };
        for _ in 0..20_000 {
            let Ok(ready) = h2.clone().ready().await else {
                goaway += 1;
                break;
            };
            h2 = ready;
            let Ok((_resp, mut send)) =
                h2.send_request(request(addr, "/dspex.v1.Engine/ListStudies", &[]), false)
            else {
                goaway += 1;
                break;
            };
            send.send_reset(h2::Reason::CANCEL);
            reset += 1;
        }
    }
    json!({"streams_reset": reset, "connections_closed_by_server": goaway})
}

async fn oversized_headers(addr: &str) -> Value {
    let (mut refused, mut served) = (0, 0);
    for _ in 0..200 {
        let Some(mut h2) = h2_connect(addr).await else {
            refused += 1;
            continue;
        };
        let big = [("x-big", "y".repeat(256 * 1024))];
        match h2.send_request(request(addr, "/dspex.v1.Engine/ListStudies", &big), true) {
            Ok((resp, _)) => match tokio::time::timeout(Duration::from_secs(10), resp).await {
                Ok(Ok(r))
                    if r.status() == http::StatusCode::OK
                        && r.headers().get("grpc-status").is_none() =>
                {
                    served += 1
                }
                _ => refused += 1,
            },
            Err(_) => refused += 1,
        }
    }
    json!({"requests": 200, "refused": refused, "served": served, "ok": served == 0})
}

async fn idle_connections(srv: &Server) -> (Value, f64) {
    let mut conns = Vec::new();
    for _ in 0..1000 {
        if let Some(h2) = h2_connect(&srv.addr).await {
            conns.push(h2);
        }
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let during = srv.rss_mb();
    let n = conns.len();
    // Past the idle timeout, the server has closed them: a closed connection is never ready.
    tokio::time::sleep(Duration::from_secs(IDLE_TIMEOUT_S + 1)).await;
    let mut closed = 0;
    for h2 in conns {
        let ready = tokio::time::timeout(Duration::from_millis(100), h2.ready()).await;
        closed += usize::from(matches!(ready, Ok(Err(_))));
    }
    let r = json!({"connections": n, "closed_by_the_server": closed, "ok": closed == n});
    (r, during)
}

#[tokio::main]
async fn main() {
    let mut out: Option<String> = None;
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--out" => out = it.next(),
            "--bench" => {}
            other => panic!("unknown argument {other:?}"),
        }
    }
    let srv = Server::start();
    let url = srv.url();
    assert!(serves(&url).await, "the server did not start");
    let settle = || tokio::time::sleep(Duration::from_millis(1500));
    let mut rows = Vec::new();
    let mut row =
        |name: &str, before: f64, during: Option<f64>, after: f64, result: Value, up: bool| {
            let r = json!({"scenario": name, "rss_before_mb": before, "rss_during_mb": during,
                       "rss_after_mb": after, "still_serving": up, "result": result});
            println!("{r}");
            rows.push(r);
        };

    let before = srv.rss_mb();
    let r = deaf_evaluator(&url).await;
    settle().await;
    row(
        "evaluator that stops reading",
        before,
        None,
        srv.rss_mb(),
        r,
        serves(&url).await,
    );

    let before = srv.rss_mb();
    let (r, open) = many_streams(&url).await;
    let during = srv.rss_mb();
    drop(open);
    settle().await;
    row(
        "4,800 Attach streams on 8 connections",
        before,
        Some(during),
        srv.rss_mb(),
        r,
        serves(&url).await,
    );

    let before = srv.rss_mb();
    let r = many_sessions(&url).await;
    settle().await;
    row(
        "sessions until --max-sessions",
        before,
        None,
        srv.rss_mb(),
        r,
        serves(&url).await,
    );

    let before = srv.rss_mb();
    let (r, during) = slow_senders(&srv).await;
    settle().await;
    row(
        "500 unary calls whose body never ends (2 s deadline)",
        before,
        Some(during),
        srv.rss_mb(),
        r,
        serves(&url).await,
    );

    let before = srv.rss_mb();
    let r = rapid_resets(&srv.addr).await;
    settle().await;
    row(
        "rapid reset: 4 x 20,000 streams opened and reset",
        before,
        None,
        srv.rss_mb(),
        r,
        serves(&url).await,
    );

    let before = srv.rss_mb();
    let r = oversized_headers(&srv.addr).await;
    settle().await;
    row(
        "200 requests with a 256 KiB header",
        before,
        None,
        srv.rss_mb(),
        r,
        serves(&url).await,
    );

    let before = srv.rss_mb();
    let (r, during) = idle_connections(&srv).await;
    settle().await;
    row(
        "1,000 idle HTTP/2 connections",
        before,
        Some(during),
        srv.rss_mb(),
        r,
        serves(&url).await,
    );

    let text = serde_json::to_string_pretty(&rows).unwrap();
    if let Some(out) = out {
        std::fs::write(out, text + "\n").expect("write --out");
    }
    let failed: Vec<&Value> = rows
        .iter()
        .filter(|r| r["still_serving"] != json!(true) || r["result"]["ok"] == json!(false))
        .collect();
    if !failed.is_empty() {
        eprintln!("FAILED: {failed:?}");
        std::process::exit(1);
    }
}
