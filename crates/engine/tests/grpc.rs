//! The gRPC service on a real loopback port: tokens, oversized and malformed messages, garbage
//! on the Attach stream, silent evaluators. The server must answer each with an error and stay
//! up.

use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, BufMut};
use dspex_engine::grpc::pb;
use dspex_engine::grpc::pb::attach_request::Msg as In;
use dspex_engine::grpc::pb::attach_response::Msg as Out;
use dspex_engine::grpc::pb::engine_client::EngineClient;
use dspex_engine::grpc::{self, EngineService, ServeOptions};
use dspex_engine::InMemoryStorage;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::transport::Channel;
use tonic::{Code, Request, Status};

async fn start(token: Option<&str>, max: usize) -> (String, tokio::sync::oneshot::Sender<()>) {
    start_with(ServeOptions {
        token: token.map(str::to_string),
        max_message_bytes: max,
        ..Default::default()
    })
    .await
}

async fn start_with(opts: ServeOptions) -> (String, tokio::sync::oneshot::Sender<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let service =
        EngineService::with_heartbeat(Arc::new(InMemoryStorage::new()), Duration::from_millis(50));
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(grpc::serve(listener, service, opts, async {
        let _ = rx.await;
    }));
    (format!("http://{addr}"), tx)
}

async fn client(url: &str) -> EngineClient<Channel> {
    for _ in 0..50 {
        if let Ok(c) = EngineClient::connect(url.to_string()).await {
            return c;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("cannot connect to {url}");
}

fn create(name: &str) -> pb::CreateStudyRequest {
    pb::CreateStudyRequest {
        name: Some(name.into()),
        directions: vec![],
        sampler: Some(pb::Component {
            kind: "random".into(),
            options_json: r#"{"seed": 0}"#.into(),
        }),
        pruner: None,
        load_if_exists: false,
    }
}

#[tokio::test]
async fn token_is_checked_on_every_call() {
    let (url, _stop) = start(Some("s3cret"), 1 << 20).await;
    let mut c = client(&url).await;
    let e = c.create_study(create("a")).await.unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated);
    let mut req = Request::new(create("a"));
    req.metadata_mut()
        .insert("authorization", "Bearer wrong".parse().unwrap());
    assert_eq!(
        c.create_study(req).await.unwrap_err().code(),
        Code::Unauthenticated
    );
    let mut req = Request::new(create("a"));
    req.metadata_mut()
        .insert("authorization", "Bearer s3cret".parse().unwrap());
    assert!(c.create_study(req).await.is_ok());
}

#[tokio::test]
async fn oversized_messages_are_rejected_and_the_server_stays_up() {
    let (url, _stop) = start(None, 64 * 1024).await;
    let mut c = client(&url).await;
    let big = create(&"x".repeat(200 * 1024));
    let e = c.create_study(big).await.unwrap_err();
    assert!(
        matches!(e.code(), Code::OutOfRange | Code::ResourceExhausted),
        "{e}"
    );
    assert!(e.message().contains("too large"), "{e}");
    assert!(c.create_study(create("ok")).await.is_ok());
    let list = c
        .list_studies(pb::ListStudiesRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(list.studies.len(), 1);
}

/// Sends raw bytes as a message.
#[derive(Clone, Default)]
struct Raw;
struct RawEnc;
struct RawDec;

impl Codec for Raw {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawEnc;
    type Decoder = RawDec;
    fn encoder(&mut self) -> RawEnc {
        RawEnc
    }
    fn decoder(&mut self) -> RawDec {
        RawDec
    }
}

impl Encoder for RawEnc {
    type Item = Vec<u8>;
    type Error = Status;
    fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for RawDec {
    type Item = Vec<u8>;
    type Error = Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, Status> {
        let v = src.chunk().to_vec();
        src.advance(v.len());
        Ok(Some(v))
    }
}

#[tokio::test]
async fn malformed_messages_are_rejected_and_the_server_stays_up() {
    let (url, _stop) = start(None, 1 << 20).await;
    let channel = Channel::from_shared(url.clone())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut raw = tonic::client::Grpc::new(channel);
    raw.ready().await.unwrap();
    let path = http::uri::PathAndQuery::from_static("/dspex.v1.Engine/CreateStudy");
    let junk = vec![0xff, 0xff, 0xff, 0xff, 0x0f, 0x01];
    let e = raw
        .unary(Request::new(junk), path.clone(), Raw)
        .await
        .unwrap_err();
    assert!(
        matches!(e.code(), Code::Internal | Code::InvalidArgument),
        "{e}"
    );
    // a malformed Attach stream
    raw.ready().await.unwrap();
    let path = http::uri::PathAndQuery::from_static("/dspex.v1.Engine/Attach");
    let s = tokio_stream::iter(vec![vec![0x0a, 0xff, 0xff]]);
    let r = raw.streaming(Request::new(s), path, Raw).await;
    match r {
        Err(e) => assert_ne!(e.code(), Code::Ok),
        Ok(resp) => {
            let mut st = resp.into_inner();
            assert!(st.message().await.is_err());
        }
    }
    let mut c = client(&url).await;
    assert!(c.create_study(create("still-up")).await.is_ok());
}

/// Reflection (for grpcurl) is served when asked for and absent otherwise (`dspex serve` turns
/// it off on non-loopback addresses unless --reflection).
#[tokio::test]
async fn reflection_is_served_only_when_asked_for() {
    for on in [true, false] {
        let (url, _stop) = start_with(ServeOptions {
            reflection: on,
            ..Default::default()
        })
        .await;
        client(&url).await; // waits until the server listens
        let channel = Channel::from_shared(url).unwrap().connect().await.unwrap();
        let mut raw = tonic::client::Grpc::new(channel);
        raw.ready().await.unwrap();
        let path = http::uri::PathAndQuery::from_static(
            "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
        );
        // ServerReflectionRequest { list_services: "" }
        let ask = tokio_stream::iter(vec![vec![0x3a, 0x00]]);
        let answer = match raw.streaming(Request::new(ask), path, Raw).await {
            Ok(resp) => resp.into_inner().message().await,
            Err(e) => Err(e),
        };
        if on {
            let bytes = answer.unwrap().expect("an answer");
            let text = String::from_utf8_lossy(&bytes);
            assert!(text.contains("dspex.v1.Engine"), "{text}");
        } else {
            assert_eq!(answer.unwrap_err().code(), Code::Unimplemented);
        }
    }
}

fn hello(study: &str, capacity: u32, hb: u32, start: Option<pb::RunSpec>) -> pb::AttachRequest {
    pb::AttachRequest {
        msg: Some(In::Hello(pb::Hello {
            study: study.into(),
            callables: vec![],
            capacity,
            start,
            worker: "test".into(),
            heartbeat_ms: hb,
        })),
    }
}

async fn next_evaluate(st: &mut tonic::Streaming<pb::AttachResponse>) -> Option<u64> {
    loop {
        match st.message().await {
            Ok(Some(pb::AttachResponse {
                msg: Some(Out::Evaluate(e)),
            })) => return Some(e.trial),
            Ok(Some(pb::AttachResponse {
                msg: Some(Out::RunEnded(_)),
            }))
            | Ok(None)
            | Err(_) => return None,
            Ok(Some(_)) => {}
        }
    }
}

fn finished(trial: u64, v: f64) -> pb::AttachRequest {
    pb::AttachRequest {
        msg: Some(In::Finished(pb::Finished {
            trial,
            outcome: Some(pb::Outcome {
                kind: Some(pb::outcome::Kind::Values(pb::Values { values: vec![v] })),
            }),
            abort: None,
        })),
    }
}

#[tokio::test]
async fn garbage_and_silence_on_the_stream_lose_the_trial_which_is_retried() {
    let (url, _stop) = start(None, 1 << 20).await;
    let mut c = client(&url).await;
    c.create_study(create("s")).await.unwrap();

    // The owner starts the run (capacity 0: it evaluates nothing).
    let spec = pb::RunSpec {
        max_concurrency: Some(1),
        ..run_spec(3, 2)
    };
    let (_otx, mut owner) = attach(&mut c, hello("s", 0, 1000, Some(spec))).await;

    // A silent evaluator: takes a trial and never heartbeats.
    let (_stx, mut silent) = attach(&mut c, hello("s", 1, 50, None)).await;
    let lost1 = next_evaluate(&mut silent).await.unwrap();
    // It gets dropped for lack of heartbeat.
    assert!(next_evaluate(&mut silent).await.is_none());

    // A garbage evaluator: finishes a trial it was never given, then sends an empty message.
    let (gtx, mut garbage) = attach(&mut c, hello("s", 1, 1000, None)).await;
    let lost2 = next_evaluate(&mut garbage).await.unwrap();
    gtx.send(finished(9999, 1.0)).unwrap();
    gtx.send(pb::AttachRequest { msg: None }).unwrap();
    assert!(next_evaluate(&mut garbage).await.is_none());

    // A good evaluator finishes the study, retries included.
    let (tx, mut good) = attach(&mut c, hello("s", 1, 1000, None)).await;
    while let Some(n) = next_evaluate(&mut good).await {
        tx.send(finished(n, n as f64)).unwrap();
    }
    assert!(next_evaluate(&mut owner).await.is_none());

    let trials = trials_of(&mut c, "s").await;
    let state = |n: u64| trials.iter().find(|t| t.number == n).map(|t| t.state);
    assert_eq!(state(lost1), Some(pb::TrialState::Fail as i32));
    assert_eq!(state(lost2), Some(pb::TrialState::Fail as i32));
    let complete = trials
        .iter()
        .filter(|t| t.state == pb::TrialState::Complete as i32)
        .count();
    assert_eq!(complete, 3);
    assert_eq!(trials.len(), 5);
    let retried: Vec<&pb::Trial> = trials
        .iter()
        .filter(|t| t.system_attrs_json.contains("failed_trial"))
        .collect();
    assert_eq!(retried.len(), 2);
    let reason = trials
        .iter()
        .find(|t| t.number == lost1)
        .and_then(|t| t.fail_reason.clone())
        .unwrap_or_default();
    assert!(reason.contains("heartbeat"), "{reason}");
}

fn session_req(id: u64, op: pb::session_request::Op) -> pb::SessionRequest {
    pb::SessionRequest { id, op: Some(op) }
}

async fn session_reply(st: &mut tonic::Streaming<pb::SessionReply>) -> pb::SessionReply {
    tokio::time::timeout(Duration::from_secs(10), st.message())
        .await
        .expect("the engine did not answer")
        .unwrap()
        .expect("the session stream ended")
}

#[tokio::test]
async fn a_cancelled_request_is_answered_with_an_error_and_others_go_on() {
    use pb::session_reply::Kind;
    use pb::session_request::Op;
    let (url, _stop) = start(None, 4 << 20).await;
    let mut c = client(&url).await;
    let (tx, rx) = mpsc::unbounded_channel();
    tx.send(session_req(1, Op::Open(pb::OpenSession::default())))
        .unwrap();
    let mut st = c
        .session(tokio_stream::wrappers::UnboundedReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    assert!(matches!(
        session_reply(&mut st).await.kind,
        Some(Kind::Opened(_))
    ));
    // a tool this stream serves, which it will never answer
    let spec = pb::ToolSpec {
        name: "hang".into(),
        returns: "any".into(),
        timeout_seconds: 600.0,
        ..Default::default()
    };
    tx.send(session_req(2, Op::RegisterTool(spec))).unwrap();
    assert!(matches!(
        session_reply(&mut st).await.kind,
        Some(Kind::Done(_))
    ));
    let call = pb::CallTool {
        tool: "hang".into(),
        args: Default::default(),
    };
    tx.send(session_req(3, Op::Call(call))).unwrap();
    let asked = session_reply(&mut st).await;
    assert!(matches!(asked.kind, Some(Kind::Call(_))), "{asked:?}");
    // a cancel of a request that is not under way is ignored; the pending one is answered
    tx.send(session_req(99, Op::Cancel(pb::Empty {}))).unwrap();
    tx.send(session_req(3, Op::Cancel(pb::Empty {}))).unwrap();
    let r = session_reply(&mut st).await;
    assert_eq!(r.id, 3);
    match r.kind {
        Some(Kind::Error(e)) => assert!(e.message.contains("cancelled"), "{e:?}"),
        other => panic!("expected an error, got {other:?}"),
    }
    // the stream goes on
    tx.send(session_req(4, Op::ToolSpecs(pb::Empty {})))
        .unwrap();
    let r = session_reply(&mut st).await;
    assert_eq!(r.id, 4);
    assert!(matches!(r.kind, Some(Kind::Tools(_))), "{r:?}");
}

async fn trials_of(c: &mut EngineClient<Channel>, study: &str) -> Vec<pb::Trial> {
    c.list_trials(pb::ListTrialsRequest {
        study: study.into(),
        states: vec![],
    })
    .await
    .unwrap()
    .into_inner()
    .trials
}

/// Opens an Attach stream whose first message is `first`; returns its sender and replies.
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
        .unwrap()
        .into_inner();
    (tx, st)
}

fn run_spec(n_trials: u64, max_retries: u32) -> pb::RunSpec {
    pb::RunSpec {
        n_trials: Some(n_trials),
        timeout: None,
        max_concurrency: None,
        trial_timeout: None,
        max_retries,
    }
}

/// An evaluator that keeps heartbeating but stops reading its stream: the trials sent to it are
/// not confirmed read within its patience, so it is detached and they run elsewhere.
#[tokio::test]
async fn an_evaluator_that_stops_reading_loses_its_trials_to_the_others() {
    let (url, _stop) = start(None, 4 << 20).await;
    let mut c = client(&url).await;
    c.create_study(create("s")).await.unwrap();
    let (_otx, mut owner) = attach(&mut c, hello("s", 0, 1000, Some(run_spec(6, 3)))).await;

    // Deaf: capacity 2, heartbeats every 30 ms confirming nothing, never reads.
    let (dtx, _deaf) = attach(&mut c, hello("s", 2, 50, None)).await;
    let beats = tokio::spawn(async move {
        let beat = pb::AttachRequest {
            msg: Some(In::Heartbeat(pb::Heartbeat { received: 0 })),
        };
        while dtx.send(beat.clone()).is_ok() {
            tokio::time::sleep(Duration::from_millis(30)).await;
        }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;

    let (tx, mut good) = attach(&mut c, hello("s", 1, 1000, None)).await;
    while let Some(n) = next_evaluate(&mut good).await {
        tx.send(finished(n, n as f64)).unwrap();
    }
    assert!(next_evaluate(&mut owner).await.is_none());
    beats.abort();

    let trials = trials_of(&mut c, "s").await;
    let count = |s: pb::TrialState| trials.iter().filter(|t| t.state == s as i32).count();
    assert_eq!(count(pb::TrialState::Complete), 6);
    assert_eq!(count(pb::TrialState::Fail), 2, "{trials:?}");
    for t in trials
        .iter()
        .filter(|t| t.state == pb::TrialState::Fail as i32)
    {
        let reason = t.fail_reason.clone().unwrap_or_default();
        assert!(reason.contains("stopped reading"), "{reason}");
    }
}

/// Attach and Session streams beyond the engine's limit are refused with RESOURCE_EXHAUSTED and
/// a message naming the limit; a closed stream frees its slot.
#[tokio::test]
async fn streams_beyond_the_engine_limit_are_refused() {
    use pb::session_request::Op;
    let (url, _stop) = start_with(ServeOptions {
        max_streams: 2,
        ..Default::default()
    })
    .await;
    let mut c = client(&url).await;
    c.create_study(create("s")).await.unwrap();
    let open_session = |mut c: EngineClient<Channel>| async move {
        let (tx, rx) = mpsc::unbounded_channel();
        tx.send(session_req(1, Op::Open(pb::OpenSession::default())))
            .unwrap();
        let r = c
            .session(tokio_stream::wrappers::UnboundedReceiverStream::new(rx))
            .await;
        r.map(|resp| (tx, resp.into_inner()))
    };
    let (_t1, mut s1) = open_session(c.clone()).await.unwrap();
    session_reply(&mut s1).await;
    let (a2, _s2) = attach(&mut c, hello("s", 1, 1000, None)).await;
    let refused = open_session(c.clone()).await.unwrap_err();
    assert_eq!(refused.code(), Code::ResourceExhausted);
    assert!(refused.message().contains("--max-streams 2"), "{refused}");
    let (atx, arx) = mpsc::unbounded_channel();
    atx.send(hello("s", 1, 1000, None)).unwrap();
    let refused = c
        .attach(tokio_stream::wrappers::UnboundedReceiverStream::new(arx))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::ResourceExhausted);
    // the Attach stream ends: its slot is free again
    drop(a2);
    let mut ok = None;
    for _ in 0..100 {
        if let Ok(s) = open_session(c.clone()).await {
            ok = Some(s);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (_t3, mut s3) = ok.expect("the slot of a closed stream was not freed");
    assert!(matches!(
        session_reply(&mut s3).await.kind,
        Some(pb::session_reply::Kind::Opened(_))
    ));
}

/// Raw HTTP/2 abuse: thousands of streams opened and reset at once, headers far over the
/// limit, a unary request whose body never ends. The server refuses or drops each, and keeps
/// serving well-behaved clients.
#[tokio::test]
async fn http2_abuse_leaves_the_server_serving() {
    let (url, _stop) = start(None, 4 << 20).await;
    let mut c = client(&url).await;
    let addr = url.trim_start_matches("http://").to_string();
    let connect = || async {
        let tcp = tokio::net::TcpStream::connect(&addr).await.unwrap();
        let (h2, conn) = h2::client::handshake(tcp).await.unwrap();
        tokio::spawn(async move {
            let _ = conn.await;
        });
        h2
    };
    let request = |headers: &[(&str, String)], path: &str| {
        let mut r = http::Request::post(format!("http://{addr}{path}"))
            .header("content-type", "application/grpc")
            .header("te", "trailers");
        for (k, v) in headers {
            r = r.header(*k, v);
        }
        r.body(()).unwrap()
    };

    // Rapid reset: open streams and reset each at once.
    let mut h2 = connect().await;
    let mut reset = 0;
    for _ in 0..5000 {
        let Ok(ready) = h2.clone().ready().await else {
            break; // the server closed the connection (GOAWAY): fine
        };
        h2 = ready;
        let Ok((_resp, mut send)) =
            h2.send_request(request(&[], "/dspex.v1.Engine/ListStudies"), false)
        else {
            break;
        };
        send.send_reset(h2::Reason::CANCEL);
        reset += 1;
    }
    assert!(reset > 0);

    // Oversized headers: refused (an error or a non-OK answer), never served.
    let mut h2 = connect().await.ready().await.unwrap();
    let big = vec![("x-big", "y".repeat(256 * 1024))];
    if let Ok((resp, _send)) = h2.send_request(request(&big, "/dspex.v1.Engine/ListStudies"), true)
    {
        match tokio::time::timeout(Duration::from_secs(10), resp).await {
            Ok(Ok(r)) => assert_ne!(r.status(), http::StatusCode::OK, "{r:?}"),
            Ok(Err(_)) => {}
            Err(_) => panic!("no answer to an oversized header block"),
        }
    }

    // A slow sender with a deadline: the body never ends; the call ends at its deadline.
    let mut h2 = connect().await.ready().await.unwrap();
    let deadline = vec![("grpc-timeout", "300m".to_string())];
    let (resp, mut send) = h2
        .send_request(request(&deadline, "/dspex.v1.Engine/CreateStudy"), false)
        .unwrap();
    send.send_data(bytes::Bytes::from_static(&[0, 0, 0, 0, 100, 0x0a]), false)
        .unwrap();
    let t0 = std::time::Instant::now();
    let resp = tokio::time::timeout(Duration::from_secs(10), resp)
        .await
        .expect("the deadline was not kept")
        .unwrap();
    let elapsed = t0.elapsed();
    let status = resp
        .headers()
        .get("grpc-status")
        .map(|v| v.to_str().unwrap().to_string());
    assert!(status.is_some_and(|s| s != "0"), "{resp:?}");
    assert!(elapsed < Duration::from_secs(5), "{elapsed:?}");

    // Well-behaved clients are still served.
    assert!(c.create_study(create("still-up")).await.is_ok());
}

/// A connection with no call in flight is closed after the idle timeout; one holding a stream
/// open (a server-streaming health watch) is not, and answers calls on the same connection
/// after the timeout has passed; a tonic client reconnects for its next call.
#[tokio::test]
async fn idle_connections_are_closed_and_busy_ones_kept() {
    let (url, _stop) = start_with(ServeOptions {
        idle_timeout: Some(Duration::from_millis(300)),
        ..Default::default()
    })
    .await;
    let mut c = client(&url).await;
    let addr = url.trim_start_matches("http://").to_string();
    let connect = || async {
        let tcp = tokio::net::TcpStream::connect(&addr).await.unwrap();
        let (h2, conn) = h2::client::handshake(tcp).await.unwrap();
        (h2, tokio::spawn(conn))
    };
    let request = |path: &str| {
        http::Request::post(format!("http://{addr}{path}"))
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(())
            .unwrap()
    };
    // An empty HealthCheckRequest / HealthWatchRequest: service "" (the server as a whole).
    let empty = bytes::Bytes::from_static(&[0, 0, 0, 0, 0]);

    // Idle from the start: closed by the server.
    let (_idle, idle_conn) = connect().await;
    let closed = tokio::time::timeout(Duration::from_secs(5), idle_conn).await;
    assert!(closed.is_ok(), "an idle connection stayed open");

    // A watch holds a call open: the connection outlives the timeout and still serves calls.
    let (h2, mut busy_conn) = connect().await;
    let mut h2 = h2.ready().await.unwrap();
    let (watch, mut watch_send) = h2
        .send_request(request("/grpc.health.v1.Health/Watch"), false)
        .unwrap();
    watch_send.send_data(empty.clone(), true).unwrap();
    let watch = watch.await.unwrap();
    assert_eq!(watch.status(), http::StatusCode::OK);
    tokio::select! {
        _ = &mut busy_conn => panic!("a connection with a call in flight was closed"),
        _ = tokio::time::sleep(Duration::from_millis(900)) => {}
    }
    let mut h2 = h2.ready().await.unwrap();
    let (check, mut send) = h2
        .send_request(request("/grpc.health.v1.Health/Check"), false)
        .unwrap();
    send.send_data(empty, true).unwrap();
    let check = tokio::time::timeout(Duration::from_secs(5), check)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(check.status(), http::StatusCode::OK);
    // Once the watch ends (reset by the client, which keeps its end of the connection), the
    // connection is idle and the server closes it.
    drop((watch, watch_send, send, check));
    let closed = tokio::time::timeout(Duration::from_secs(5), busy_conn).await;
    assert!(
        closed.is_ok(),
        "the connection stayed open after its last call"
    );
    drop(h2);

    // A tonic client whose connection was closed while idle reconnects for its next call.
    assert!(c.create_study(create("before")).await.is_ok());
    tokio::time::sleep(Duration::from_millis(900)).await;
    assert!(c.create_study(create("after")).await.is_ok());
}
