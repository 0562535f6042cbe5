//! Faults under load through a real Envoy: while 16 clients send requests, the classifier stalls
//! past the callout timeout, answers garbage, dies, and comes back. In fail-open mode every request
//! must be answered 200 (routed or on the default model), none may hang, and routing must resume.

use router_tests::classifier_double::{Behaviour, ClassifierDouble};
use router_tests::client::HttpClient;
use router_tests::envoy::{EnvoyConfig, EnvoyProcess};
use router_tests::openai_sim;
use serde_json::json;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread")]
async fn fail_open_under_load_loses_nothing() {
    let (a, _) = openai_sim::spawn("127.0.0.1:0".parse().unwrap(), "primary").await.unwrap();
    let (b, _) = openai_sim::spawn("127.0.0.1:0".parse().unwrap(), "secondary").await.unwrap();
    let classifier = ClassifierDouble::start(Behaviour::Decide).await;
    let addr = classifier.addr;
    let config = EnvoyConfig::new(addr.port(), a.port(), b.port(), r#"{"default_model":"qwen3-8b","timeout_ms":200}"#);
    let envoy = Arc::new(tokio::task::spawn_blocking(move || EnvoyProcess::start(config)).await.unwrap().unwrap());

    let outcomes: Arc<Mutex<BTreeMap<String, u64>>> = Arc::default();
    let running = Arc::new(AtomicBool::new(true));
    let mut workers = Vec::new();
    for w in 0..16 {
        let (envoy, outcomes, running) = (envoy.clone(), outcomes.clone(), running.clone());
        workers.push(tokio::spawn(async move {
            // A hung request fails the test through the client's deadline.
            let client = HttpClient::new(Duration::from_secs(5));
            let prompt = if w % 2 == 0 { "What is the integral of x^2?" } else { "Tell me about Rome" };
            let body = json!({"model": "MoM", "messages": [{"role": "user", "content": prompt}]}).to_string();
            while running.load(Ordering::Relaxed) {
                let r = client.post(&envoy.url("/v1/chat/completions"), body.clone(), &[]).await.expect("answered");
                let key = format!("{} {}", r.status, r.header("x-vsr-fallback").unwrap_or("routed"));
                *outcomes.lock().unwrap().entry(key).or_default() += 1;
            }
        }));
    }

    let phase = |d| tokio::time::sleep(Duration::from_millis(d));
    phase(700).await;
    classifier.set(Behaviour::Stall(Duration::from_millis(800)));
    phase(700).await;
    classifier.set(Behaviour::Garbage);
    phase(500).await;
    classifier.stop();
    phase(700).await;
    let revived = ClassifierDouble::start_on(addr, Behaviour::Decide).await;
    phase(1000).await;
    running.store(false, Ordering::Relaxed);
    for w in workers {
        w.await.expect("worker finished");
    }

    let outcomes = outcomes.lock().unwrap().clone();
    let total: u64 = outcomes.values().sum();
    println!("faults under load: {total} requests: {outcomes:?}");
    assert!(outcomes.keys().all(|k| k.starts_with("200 ")), "only 200s in fail-open: {outcomes:?}");
    for expected in ["200 routed", "200 timeout", "200 bad_reply", "200 unavailable"] {
        assert!(outcomes.contains_key(expected), "missing {expected}: {outcomes:?}");
    }
    assert!(revived.calls() > 0, "routing resumed after the restart");
    let fallbacks: u64 = outcomes.iter().filter(|(k, _)| !k.ends_with("routed")).map(|(_, v)| v).sum();
    let counted: u64 = ["timeout", "bad_reply", "unavailable", "grpc_error"]
        .iter()
        .map(|r| envoy.counter(&format!("semantic_router.fallback.{r}")))
        .sum();
    assert_eq!(counted, fallbacks, "every fallback is counted in Envoy's stats");
}
