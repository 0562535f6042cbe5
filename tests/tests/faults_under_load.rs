//! Faults under load through a real Envoy: while 16 clients send requests, the classifier stalls
//! past the callout timeout, answers garbage, dies, and comes back. In fail-open mode every request
//! must be answered 200 (routed or on the default model), none may hang, and routing must resume.
//! Then the model backends crash and restart under the same load: Envoy's retries must hide it.

use router_tests::classifier_double::{Behaviour, ClassifierDouble};
use router_tests::client::HttpClient;
use router_tests::envoy::{EnvoyConfig, EnvoyProcess};
use router_tests::openai_sim;
use serde_json::json;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// 16 closed-loop clients (half with a math prompt, routed to the secondary backend) counting
/// outcomes by status and the response header `label`, until [`Load::finish`].
struct Load {
    outcomes: Arc<Mutex<BTreeMap<String, u64>>>,
    running: Arc<AtomicBool>,
    workers: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    fn start(envoy: &Arc<EnvoyProcess>, label: &'static str, unlabelled: &'static str) -> Self {
        let outcomes: Arc<Mutex<BTreeMap<String, u64>>> = Arc::default();
        let running = Arc::new(AtomicBool::new(true));
        let workers = (0..16)
            .map(|w| {
                let (envoy, outcomes, running) = (envoy.clone(), outcomes.clone(), running.clone());
                tokio::spawn(async move {
                    // A hung request fails the test through the client's deadline.
                    let client = HttpClient::new(Duration::from_secs(5));
                    let prompt = if w % 2 == 0 { "What is the integral of x^2?" } else { "Tell me about Rome" };
                    let body = json!({"model": "MoM", "messages": [{"role": "user", "content": prompt}]}).to_string();
                    while running.load(Ordering::Relaxed) {
                        let r = client.post(&envoy.url("/v1/chat/completions"), body.clone(), &[]).await.expect("answered");
                        let key = format!("{} {}", r.status, r.header(label).unwrap_or(unlabelled));
                        *outcomes.lock().unwrap().entry(key).or_default() += 1;
                    }
                })
            })
            .collect();
        Self { outcomes, running, workers }
    }

    async fn finish(self) -> BTreeMap<String, u64> {
        self.running.store(false, Ordering::Relaxed);
        for w in self.workers {
            w.await.expect("worker finished");
        }
        self.outcomes.lock().unwrap().clone()
    }
}

fn phase(millis: u64) -> tokio::time::Sleep {
    tokio::time::sleep(Duration::from_millis(millis))
}

#[tokio::test(flavor = "multi_thread")]
async fn fail_open_under_load_loses_nothing() {
    let (a, _) = openai_sim::spawn("127.0.0.1:0".parse().unwrap(), "primary").await.unwrap();
    let (b, _) = openai_sim::spawn("127.0.0.1:0".parse().unwrap(), "secondary").await.unwrap();
    let classifier = ClassifierDouble::start(Behaviour::Decide).await;
    let addr = classifier.addr;
    let config = EnvoyConfig::new(addr.port(), a.port(), b.port(), r#"{"default_model":"qwen3-8b","timeout_ms":200}"#);
    let envoy = Arc::new(tokio::task::spawn_blocking(move || EnvoyProcess::start(config)).await.unwrap().unwrap());

    let load = Load::start(&envoy, "x-vsr-fallback", "routed");

    phase(700).await;
    classifier.set(Behaviour::Stall(Duration::from_millis(800)));
    phase(700).await;
    classifier.set(Behaviour::Garbage);
    phase(500).await;
    classifier.stop();
    phase(700).await;
    let revived = ClassifierDouble::start_on(addr, Behaviour::Decide).await;
    phase(1000).await;
    let outcomes = load.finish().await;
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

#[tokio::test(flavor = "multi_thread")]
async fn backend_restarts_under_load_lose_nothing() {
    let any = || "127.0.0.1:0".parse().unwrap();
    let primary = openai_sim::KillableSim::start(any(), "primary").await.unwrap();
    let secondary = openai_sim::KillableSim::start(any(), "secondary").await.unwrap();
    let (primary_addr, secondary_addr) = (primary.addr, secondary.addr);
    let classifier = ClassifierDouble::start(Behaviour::Decide).await;
    let config = EnvoyConfig::new(classifier.addr.port(), primary_addr.port(), secondary_addr.port(), r#"{"default_model":"qwen3-8b","timeout_ms":200}"#);
    let envoy = Arc::new(tokio::task::spawn_blocking(move || EnvoyProcess::start(config)).await.unwrap().unwrap());

    let load = Load::start(&envoy, "x-backend-name", "-");

    phase(600).await;
    primary.kill();
    phase(300).await;
    let primary_again = openai_sim::KillableSim::start(primary_addr, "primary").await.unwrap();
    phase(600).await;
    secondary.kill();
    phase(300).await;
    let secondary_again = openai_sim::KillableSim::start(secondary_addr, "secondary").await.unwrap();
    phase(800).await;
    let outcomes = load.finish().await;
    let total: u64 = outcomes.values().sum();
    let stat = |name: &str| {
        ["backend_primary", "backend_secondary"].map(|c| envoy.envoy_stat(&format!("cluster.{c}.{name}"))).iter().sum::<u64>()
    };
    let (retries, overflow, connect_failures) =
        (stat("upstream_rq_retry"), stat("upstream_rq_retry_overflow"), stat("upstream_cx_connect_fail"));
    let served = [&primary, &primary_again, &secondary, &secondary_again].map(|s| s.state.count());
    println!(
        "backend restarts under load: {total} requests: {outcomes:?}; served by primary {} then {}, \
         secondary {} then {}; Envoy: {connect_failures} connect failures, {retries} retries, \
         {overflow} over the retry budget",
        served[0], served[1], served[2], served[3]
    );
    assert!(outcomes.keys().all(|k| k.starts_with("200 ")), "only 200s across backend restarts: {outcomes:?}");
    assert!(served.iter().all(|&n| n > 0), "each backend served before and after its restart: {served:?}");
}
