//! The LM client against the local OpenAI-compatible server (real HTTP on loopback).

use std::time::Duration;

use dspex_testlm::Behavior;
use serde_json::{json, Value};

use super::*;

async fn server(b: Behavior) -> String {
    dspex_testlm::start("127.0.0.1:0".parse().unwrap(), b, 7)
        .await
        .unwrap()
        .base_url()
}

async fn server_stats(base: &str) -> Value {
    let url = base.replace("/v1", "/control/stats");
    reqwest::get(url).await.unwrap().json().await.unwrap()
}

fn config(base: &str) -> LmConfig {
    let mut c = LmConfig::new("test-model", base);
    c.cache = false;
    c.max_retries = 2;
    c
}

async fn lm(c: LmConfig) -> Lm {
    Lm::new(c).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_answers_with_usage_and_the_cache_answers_repeats_without_a_request() {
    let base = server(Behavior::default()).await;
    let mut c = config(&base);
    c.cache = true;
    c.model = "cache-test-model".into();
    let lm = lm(c).await;
    let a = lm.chat(&ChatRequest::prompt("hello there")).await.unwrap();
    assert_eq!(a.text, "echo: hello there");
    assert_eq!(
        a.usage,
        Usage {
            prompt_tokens: 2,
            completion_tokens: 3
        }
    );
    assert!(!a.cached);
    let b = lm.chat(&ChatRequest::prompt("hello there")).await.unwrap();
    assert!(b.cached);
    assert_eq!(b.text, a.text);
    // a rollout id keeps a deliberate repeat apart
    let mut r = ChatRequest::prompt("hello there");
    r.rollout_id = Some("2".into());
    assert!(!lm.chat(&r).await.unwrap().cached);
    assert_eq!(server_stats(&base).await["requests"], 2);
    let s = lm.stats();
    assert_eq!(
        (
            s["calls"].as_u64(),
            s["cache_hits"].as_u64(),
            s["requests"].as_u64()
        ),
        (Some(3), Some(1), Some(2))
    );
    assert_eq!(s["total_tokens"], 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retryable_answers_are_retried_and_other_4xx_are_not() {
    let base = server(Behavior {
        retry_after: Some(0.01),
        ..Default::default()
    })
    .await;
    let lm = lm(config(&base)).await;
    let ok = lm
        .chat(&ChatRequest::prompt("x [[flaky:2]]"))
        .await
        .unwrap();
    assert_eq!(ok.text, "echo: x [[flaky:2]]");
    assert_eq!(lm.stats()["retries"], 2);
    let e = lm
        .chat(&ChatRequest::prompt("y [[flaky:5]]"))
        .await
        .unwrap_err();
    assert_eq!(e.status(), Some(503));
    assert!(e.to_string().contains("after 3 attempts"), "{e}");
    let before = server_stats(&base).await["requests"].as_u64().unwrap();
    let e = lm
        .chat(&ChatRequest::prompt("z [[status:400]]"))
        .await
        .unwrap_err();
    assert_eq!(e.status(), Some(400));
    assert_eq!(
        server_stats(&base).await["requests"].as_u64().unwrap(),
        before + 1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_and_unknown_model_errors_say_what_to_fix() {
    let base = server(Behavior {
        api_key: Some("sk-right".into()),
        models: vec!["known".into()],
        ..Default::default()
    })
    .await;
    let mut c = config(&base);
    c.model = "known".into();
    c.api_key_env = "MY_KEY_VAR".into();
    let e = lm(c.clone())
        .await
        .chat(&ChatRequest::prompt("hi"))
        .await
        .unwrap_err();
    assert_eq!(e.status(), Some(401));
    assert!(e.to_string().contains("MY_KEY_VAR"), "{e}");
    c.api_key = Some("sk-right".into());
    assert!(lm(c.clone())
        .await
        .chat(&ChatRequest::prompt("hi"))
        .await
        .is_ok());
    c.model = "unknown".into();
    let e = lm(c)
        .await
        .chat(&ChatRequest::prompt("hi"))
        .await
        .unwrap_err();
    assert_eq!(e.status(), Some(404));
    assert!(e.to_string().contains("\"unknown\""), "{e}");
    assert!(!format!("{e:?}").contains("sk-right"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_is_down_fails_after_the_retries_with_their_count() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut c = config(&format!("http://127.0.0.1:{port}/v1"));
    c.max_retries = 1;
    let e = lm(c)
        .await
        .chat(&ChatRequest::prompt("hi"))
        .await
        .unwrap_err();
    assert!(matches!(e, LmError::Transport { attempts: 2, .. }), "{e}");
    assert!(e.to_string().to_lowercase().contains("connect"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_huge_dropped_and_slow_answers_are_errors_not_hangs() {
    let base = server(Behavior::default()).await;
    let mut c = config(&base);
    c.max_retries = 1;
    c.timeout = Duration::from_millis(300);
    c.max_response_bytes = 10_000;
    let lm = lm(c).await;
    let e = lm
        .chat(&ChatRequest::prompt("[[malformed]]"))
        .await
        .unwrap_err();
    assert!(
        matches!(e, LmError::BadAnswer { .. }) && e.to_string().contains("not JSON"),
        "{e}"
    );
    let e = lm
        .chat(&ChatRequest::prompt("[[huge:50000]]"))
        .await
        .unwrap_err();
    assert!(
        e.to_string()
            .contains("larger than the limit of 10000 bytes"),
        "{e}"
    );
    let e = lm.chat(&ChatRequest::prompt("[[drop]]")).await.unwrap_err();
    assert!(matches!(e, LmError::Transport { attempts: 2, .. }), "{e}");
    let e = lm
        .chat(&ChatRequest::prompt("[[sleep:2000]]"))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("timeout"), "{e}");
    let e = lm
        .chat(&ChatRequest::prompt("[[slow-body:400]]"))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("timeout"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_parameters_are_refused_before_any_request() {
    let base = server(Behavior::default()).await;
    let mut c = config(&base);
    c.temperature = -0.5;
    assert!(Lm::new(c.clone())
        .await
        .unwrap_err()
        .to_string()
        .contains("temperature"));
    c.temperature = 0.0;
    c.max_tokens = Some(0);
    assert!(Lm::new(c.clone())
        .await
        .unwrap_err()
        .to_string()
        .contains("max_tokens"));
    c.max_tokens = None;
    c.base_url = "ftp://x".into();
    assert!(Lm::new(c.clone())
        .await
        .unwrap_err()
        .to_string()
        .contains("scheme"));
    c.base_url = base.clone();
    let lm = lm(c).await;
    let mut r = ChatRequest::prompt("hi");
    r.overrides.insert("temperature".into(), json!(7));
    assert!(lm
        .chat(&r)
        .await
        .unwrap_err()
        .to_string()
        .contains("between 0 and 2"));
    let r = ChatRequest {
        messages: json!([{"content": "no role"}]),
        ..Default::default()
    };
    assert!(lm
        .chat(&r)
        .await
        .unwrap_err()
        .to_string()
        .contains("messages[0]"));
    let mut r = ChatRequest::prompt("hi");
    r.overrides.insert("model".into(), json!("other"));
    assert!(lm.chat(&r).await.is_err());
    assert_eq!(server_stats(&base).await["requests"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_calls_allows_exactly_that_many_calls_under_concurrency() {
    let base = server(Behavior {
        latency: Duration::from_millis(20),
        ..Default::default()
    })
    .await;
    let mut c = config(&base);
    c.budget.max_calls = Some(5);
    let lm = lm(c).await;
    let calls = (0..12).map(|i| {
        let lm = lm.clone();
        tokio::spawn(async move { lm.chat(&ChatRequest::prompt(&format!("q{i}"))).await })
    });
    let mut ok = 0;
    let mut refused = 0;
    for h in calls {
        match h.await.unwrap() {
            Ok(_) => ok += 1,
            Err(LmError::BudgetExceeded(m)) => {
                assert!(m.contains("max_calls=5"), "{m}");
                refused += 1
            }
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!((ok, refused), (5, 7));
    assert_eq!(server_stats(&base).await["requests"], 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hedge_answers_a_straggler_with_a_second_request() {
    let base = server(Behavior::default()).await;
    let mut c = config(&base);
    c.hedge_after = Some(Duration::from_millis(50));
    let lm = lm(c).await;
    let a = lm
        .chat(&ChatRequest::prompt("[[slow-first:3000]]"))
        .await
        .unwrap();
    assert!(a.latency < 1.0, "{}", a.latency);
    let s = lm.stats();
    assert_eq!(
        (s["hedges"].as_u64(), s["requests"].as_u64()),
        (Some(1), Some(2))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_disk_cache_outlives_the_lm_and_is_found_by_a_new_one() {
    let base = server(Behavior::default()).await;
    let dir = std::env::temp_dir().join(format!("dspex-lm-cache-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut c = config(&base);
    c.cache = true;
    c.cache_path = Some(dir.join("cache.sqlite"));
    {
        let lm = lm(c.clone()).await;
        lm.chat(&ChatRequest::prompt("disk one")).await.unwrap();
    }
    // the first LM and its in-memory layer are gone: the answer comes from the file
    let lm2 = lm(c.clone()).await;
    // a batch mixing a disk hit, a miss, an invalid request and the hit again: answers in order
    let invalid = ChatRequest {
        messages: json!([]),
        ..Default::default()
    };
    let reqs = vec![
        ChatRequest::prompt("disk one"),
        ChatRequest::prompt("disk two"),
        invalid,
        ChatRequest::prompt("disk one"),
    ];
    let many = lm2.chat_many(&reqs).await;
    let cached: Vec<Option<bool>> = many
        .iter()
        .map(|r| r.as_ref().ok().map(|c| c.cached))
        .collect();
    assert_eq!(cached, [Some(true), Some(false), None, Some(true)]);
    assert_eq!(many[1].as_ref().unwrap().text, "echo: disk two");
    assert!(matches!(many[2], Err(LmError::InvalidArgument(_))));
    assert_eq!(server_stats(&base).await["requests"], 2);
    assert_eq!(lm2.stats()["cache_hits"], 2);
    let path = c.cache_path.clone().unwrap();
    let stats = cache::disk_stats(&path).await.unwrap();
    assert_eq!(stats["entries"], 2);
    let mut out = Vec::new();
    assert_eq!(cache::disk_export(&path, &mut out).await.unwrap(), 2);
    let text = String::from_utf8(out).unwrap();
    assert!(!text.contains(&base), "the cache keeps no base URL");
    assert_eq!(cache::disk_clear(&path, None).await.unwrap(), 2);
    assert_eq!(cache::disk_import(&path, &text).await.unwrap(), 2);
    assert!(cache::disk_import(&path, "{not json")
        .await
        .unwrap_err()
        .to_string()
        .contains("line 1"));
    drop(lm2);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttling_under_load_lowers_the_concurrency_and_every_call_succeeds() {
    let base = server(Behavior {
        latency: Duration::from_millis(20),
        max_inflight: Some(8),
        retry_after: Some(0.02),
        ..Default::default()
    })
    .await;
    let mut c = config(&base);
    c.max_concurrency = 32;
    c.max_retries = 20;
    let lm = lm(c).await;
    let calls: Vec<_> = (0..300)
        .map(|i| {
            let lm = lm.clone();
            tokio::spawn(async move { lm.chat(&ChatRequest::prompt(&format!("load {i}"))).await })
        })
        .collect();
    for h in calls {
        h.await.unwrap().unwrap();
    }
    let s = lm.stats();
    assert_eq!(s["calls"], 300);
    assert!(s["throttled"].as_u64().unwrap() > 0);
    assert!(s["concurrency"]["limit"].as_u64().unwrap() < 32, "{s}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embeddings_come_back_in_order() {
    let base = server(Behavior::default()).await;
    let lm = lm(config(&base)).await;
    let e = lm
        .embed(&["a b".into(), "c".into(), "a b".into()])
        .await
        .unwrap();
    assert_eq!(e.vectors.len(), 3);
    assert_eq!(e.vectors[0], e.vectors[2]);
    assert_ne!(e.vectors[0], e.vectors[1]);
    assert_eq!(e.vectors[0].len(), 16);
}

#[test]
fn the_cache_key_is_the_hash_of_the_canonical_request_json() {
    // the bytes hashed must stay those of the sorted JSON object, or existing cache files miss
    use sha2::{Digest, Sha256};
    let body = json!({"model": "m", "messages": [{"role": "user", "content": "h\u{e9} \"x\"\n"}], "temperature": 0.5});
    for rollout in [None, Some("r1")] {
        let canonical = json!({"kind": "chat", "body": body, "rollout_id": rollout}).to_string();
        let expected: String = Sha256::digest(canonical.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(cache::key("chat", &body, rollout), expected);
    }
}

#[test]
fn a_cached_answer_of_any_shape_reads_as_the_server_answer_did() {
    let url = "http://x/v1/chat/completions";
    for text in [
        r#"{"choices":[{"message":{"content":"a"},"finish_reason":"stop"},{"message":{}}],"usage":{"prompt_tokens":2,"completion_tokens":1},"model":"m"}"#,
        r#"{"choices":[{"message":{"content":null},"finish_reason":7}],"usage":{"prompt_tokens":"x"},"model":3}"#,
        r#"{"choices":[{"message":{"content":"a"}}]}"#,
    ] {
        let v: Value = serde_json::from_str(text).unwrap();
        let (a, b) = (
            completion_of_text(text, url).unwrap(),
            parse_completion(&v, url).unwrap(),
        );
        assert_eq!(
            (a.text, a.choices, a.finish_reason, a.usage, a.model),
            (b.text, b.choices, b.finish_reason, b.usage, b.model)
        );
    }
    for text in [
        r#"{"choices":[]}"#,
        r#"{"choices":[{"message":{"content":5}}]}"#,
        r#"{"x":1}"#,
    ] {
        let v: Value = serde_json::from_str(text).unwrap();
        assert_eq!(
            completion_of_text(text, url).unwrap_err().to_string(),
            parse_completion(&v, url).unwrap_err().to_string()
        );
    }
    assert!(completion_of_text("{not json", url).is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scope_budget_is_shared_by_the_lms_charged_to_it_and_leaves_their_own_alone() {
    let base = server(Behavior::default()).await;
    let scope = Arc::new(Budget::new(BudgetLimits {
        max_calls: Some(3),
        ..Default::default()
    }));
    let mut c = config(&base);
    c.budget.max_calls = Some(10);
    let (a, b) = (lm(c.clone()).await, lm(c).await);
    let (sa, sb) = (a.with_budget(scope.clone()), b.with_budget(scope.clone()));
    let mut outcomes = Vec::new();
    for (i, l) in [&sa, &sb, &sa, &sb, &sa].into_iter().enumerate() {
        outcomes.push(l.chat(&ChatRequest::prompt(&format!("s{i}"))).await.is_ok());
    }
    assert_eq!(outcomes, [true, true, true, false, false]);
    assert_eq!(scope.spent().0, 3);
    // the refused calls were given back to the LMs' own budgets
    assert_eq!(
        (
            a.stats()["budget"]["calls"].as_u64(),
            b.stats()["budget"]["calls"].as_u64()
        ),
        (Some(2), Some(1))
    );
    assert!(a.chat(&ChatRequest::prompt("own")).await.is_ok());
}
