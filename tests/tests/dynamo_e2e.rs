//! The router in front of NVIDIA Dynamo for real: a real Envoy with the filter, the real sidecar
//! (release `classifier-svc`, the shipped routing policy) and Dynamo 1.6.1's own OpenAI frontend
//! with the KV router, a prefill and a decode mocker worker per model (`tests/src/dynamo.rs`).
//! One stack serves every scenario in turn (start-up costs seconds of Python and model loading);
//! the fault scenarios run last and heal what they break.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use router_tests::client::{HttpClient, Reply};
use router_tests::dynamo::{self, DynamoOptions, DynamoStack, Role};
use router_tests::envoy::{repo_root, EnvoyConfig, EnvoyProcess};
use router_tests::sidecar::SidecarProcess;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const MATH: &str = "What is the integral of x^2 from 0 to 3?";
const HISTORY: &str = "Which treaty ended the Thirty Years' War in 1648?";
/// Every request opts out of the semantic cache: each must reach Dynamo.
const NO_CACHE: [(&str, &str); 1] = [("x-vsr-skip-cache", "true")];

struct Stack {
    envoy: EnvoyProcess,
    dynamo: DynamoStack,
    _sidecar: SidecarProcess,
}

impl Stack {
    async fn start() -> Stack {
        // Dynamo and the sidecar start side by side; Envoy needs both ports.
        let dynamo = tokio::task::spawn_blocking(|| DynamoStack::start(DynamoOptions::default()));
        let sidecar = tokio::task::spawn_blocking(|| SidecarProcess::start("classifier-svc/config/router.yaml", &[]));
        let (dynamo, sidecar) = (dynamo.await.unwrap().expect("dynamo"), sidecar.await.unwrap().expect("sidecar"));
        // Every model is behind the one Dynamo frontend: both clusters point at it.
        let filter = r#"{"default_model":"qwen3-8b","timeout_ms":2000}"#;
        let config = EnvoyConfig::new(sidecar.grpc_port, dynamo.http_port, dynamo.http_port, filter);
        let envoy = tokio::task::spawn_blocking(move || EnvoyProcess::start(config)).await.unwrap().unwrap();
        Stack { envoy, dynamo, _sidecar: sidecar }
    }

    async fn chat(&self, body: Value) -> Reply {
        HttpClient::default().post(&self.envoy.url("/v1/chat/completions"), body.to_string(), &NO_CACHE).await.unwrap()
    }

    /// `dynamo_frontend_requests_total` for `model` and `status` (success / error), summed.
    fn dynamo_requests(&self, model: &str, status: &str) -> u64 {
        self.dynamo
            .metrics()
            .lines()
            .filter(|l| l.starts_with("dynamo_frontend_requests_total{"))
            .filter(|l| l.contains(&format!("model=\"{model}\"")) && l.contains(&format!("status=\"{status}\"")))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>() as u64
    }
}

fn ask(model: &str, prompt: &str, max_tokens: u32) -> Value {
    json!({"model": model, "max_tokens": max_tokens, "messages": [{"role": "user", "content": prompt}]})
}

#[tokio::test(flavor = "multi_thread")]
async fn the_router_in_front_of_dynamo() {
    let mut s = Stack::start().await;
    println!("dynamo: frontend on 127.0.0.1:{}, listing {:?}", s.dynamo.http_port, s.dynamo.listed_models());
    everything_listens_on_loopback(&s);
    mom_is_rewritten_and_answered_by_the_selected_model(&s).await;
    streaming_usage_is_counted_from_the_final_chunk(&s).await;
    an_unknown_model_gets_dynamos_404_promptly(&s).await;
    nvext_passes_through_untouched(&s).await;
    decode_worker_killed_mid_stream(&mut s).await;
    frontend_restarted_under_load(&mut s).await;
}

fn everything_listens_on_loopback(s: &Stack) {
    let addrs = s.dynamo.listening_addrs();
    // The frontend, the relay's two sockets, and a request-plane server per worker at least.
    assert!(addrs.len() >= 3 + s.dynamo.models.len() * 2, "too few listening sockets found: {addrs:?}");
    let exposed: Vec<_> = addrs.iter().filter(|a| !a.ip().is_loopback()).collect();
    assert!(exposed.is_empty(), "Dynamo listens beyond loopback: {exposed:?}");
    // Every address Dynamo logs (bound, advertised, connected to) is loopback too.
    let ipv4 = regex::Regex::new(r"\b\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}\b").unwrap();
    let logs = s.dynamo.logs();
    let addresses: Vec<&str> = logs.iter().flat_map(|l| ipv4.find_iter(l).map(|m| m.as_str())).collect();
    assert!(addresses.len() >= s.dynamo.models.len() * 2, "too few addresses in Dynamo's logs: {addresses:?}");
    let foreign: Vec<&String> = logs.iter().filter(|l| ipv4.find_iter(l).any(|m| m.as_str() != "127.0.0.1")).collect();
    assert!(foreign.is_empty(), "non-loopback addresses in Dynamo's logs: {foreign:#?}");
}

async fn mom_is_rewritten_and_answered_by_the_selected_model(s: &Stack) {
    let before = s.dynamo_requests("deepseek-r1-math", "success");
    let started = Instant::now();
    let r = s.chat(ask("MoM", MATH, 8)).await;
    assert_eq!(r.status, 200, "{}\n{}", r.text(), s.dynamo.log_tail(30));
    assert_eq!(r.header("x-vsr-fallback"), None, "classified: {:?}", r.headers);
    assert_eq!(r.header("x-vsr-selected-category"), Some("math"));
    assert_eq!(r.header("x-vsr-selected-model"), Some("deepseek-r1-math"));
    let body = r.json();
    assert_eq!(body["model"], "deepseek-r1-math", "Dynamo answered as the selected model: {body}");
    assert_eq!(body["object"], "chat.completion");
    assert_eq!(body["usage"]["completion_tokens"], 8, "the mocker generated max_tokens: {body}");
    assert_eq!(s.dynamo_requests("deepseek-r1-math", "success"), before + 1, "Dynamo's metrics count it");
    println!("MoM → deepseek-r1-math through Dynamo in {:?}", started.elapsed());

    // A question for the general model: Dynamo answers as that one.
    let r = s.chat(ask("MoM", HISTORY, 4)).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-vsr-selected-model"), Some("qwen3-8b"), "{:?}", r.headers);
    assert_eq!(r.json()["model"], "qwen3-8b");
}

async fn streaming_usage_is_counted_from_the_final_chunk(s: &Stack) {
    let completion = "semantic_router.tokens.completion.deepseek-r1-math";
    let prompt = "semantic_router.tokens.prompt.deepseek-r1-math";
    let (c0, p0) = (s.envoy.counter(completion), s.envoy.counter(prompt));
    let mut body = ask("MoM", MATH, 12);
    body["stream"] = json!(true);
    body["stream_options"] = json!({"include_usage": true});
    let r = s.chat(body).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("content-type"), Some("text/event-stream"));
    let text = r.text();
    assert!(text.trim_end().ends_with("data: [DONE]"), "{text}");
    let chunks: Vec<Value> = text
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter(|d| *d != "[DONE]")
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    assert!(chunks.len() > 2, "streamed in chunks: {text}");
    assert!(chunks.iter().all(|c| c["model"] == "deepseek-r1-math"), "{text}");
    let usage = chunks.last().unwrap()["usage"].clone();
    assert_eq!(usage["completion_tokens"], 12, "the final chunk carries the usage: {text}");
    assert_eq!(s.envoy.counter(completion) - c0, 12, "completion tokens counted from the final chunk");
    assert_eq!(s.envoy.counter(prompt) - p0, usage["prompt_tokens"].as_u64().unwrap());
}

async fn an_unknown_model_gets_dynamos_404_promptly(s: &Stack) {
    let explicit = s.envoy.counter("semantic_router.requests.explicit");
    let started = Instant::now();
    let r = s.chat(ask("no-such-model", "hello", 4)).await;
    let elapsed = started.elapsed();
    assert_eq!(r.status, 404, "Dynamo's status comes back: {}", r.text());
    assert_eq!(r.json()["message"], "Model not found", "Dynamo's own body: {}", r.text());
    assert!(elapsed < Duration::from_secs(2), "answered promptly, took {elapsed:?}");
    assert_eq!(s.envoy.counter("semantic_router.requests.explicit"), explicit + 1, "no callout for an explicit model");

    // A known model with Dynamo's own validation error (the mocker needs max_tokens): 400 passes back.
    let r = s.chat(json!({"model": "qwen3-8b", "messages": [{"role": "user", "content": "hi"}]})).await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("max_tokens"), "{}", r.text());
}

async fn nvext_passes_through_untouched(s: &Stack) {
    // `extra_fields: ["worker_id"]` asks Dynamo to say which workers served the request: the
    // answer proves the field arrived as sent, through the filter's body rewrite (MoM) too.
    for model in ["qwen3-8b", "MoM"] {
        let mut body = ask(model, MATH, 4);
        body["nvext"] = json!({"annotations": ["router-e2e"], "extra_fields": ["worker_id"]});
        let r = s.chat(body).await;
        assert_eq!(r.status, 200, "{model}: {}", r.text());
        let answer = r.json();
        let workers = &answer["nvext"]["worker_id"];
        assert!(workers["decode_worker_id"].is_u64(), "{model}: Dynamo saw nvext: {answer}");
        assert!(workers["prefill_worker_id"].is_u64(), "{model}: disaggregated, a prefill worker took part: {answer}");
    }
    // A field Dynamo rejects comes back as Dynamo's 400: nothing in front of it dropped nvext.
    let mut body = ask("MoM", MATH, 4);
    body["nvext"] = json!({"no_such_field": true});
    let r = s.chat(body).await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("no_such_field"), "{}", r.text());
}

/// Opens a streaming request and returns the status and the body to read frame by frame.
async fn open_stream(url: &str, body: Value) -> (u16, hyper::body::Incoming) {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let request = http::Request::post(url)
        .header("content-type", "application/json")
        .header("x-vsr-skip-cache", "true")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap();
    let response = tokio::time::timeout(Duration::from_secs(10), client.request(request)).await.expect("headers in time").unwrap();
    (response.status().as_u16(), response.into_body())
}

async fn decode_worker_killed_mid_stream(s: &mut Stack) {
    let mut body = ask("deepseek-r1-math", "Write a very long proof.", 5000);
    body["stream"] = json!(true);
    let (status, mut stream) = open_stream(&s.envoy.url("/v1/chat/completions"), body).await;
    assert_eq!(status, 200);
    let mut received = String::new();
    while received.matches("data: ").count() < 3 {
        let frame = tokio::time::timeout(Duration::from_secs(10), stream.frame()).await.expect("tokens flow").unwrap().unwrap();
        if let Ok(data) = frame.into_data() {
            received.push_str(&String::from_utf8_lossy(&data));
        }
    }
    s.dynamo.kill_worker("deepseek-r1-math", Role::Decode);
    let killed = Instant::now();
    // The stream must end (cleanly or with an error), not hang.
    let ended = loop {
        match tokio::time::timeout(Duration::from_secs(20), stream.frame()).await {
            Err(_) => panic!("the stream hung after the decode worker died: {}", &received[received.len().saturating_sub(500)..]),
            Ok(None) => break "ended",
            Ok(Some(Err(_))) => break "reset",
            Ok(Some(Ok(frame))) => {
                if let Ok(data) = frame.into_data() {
                    received.push_str(&String::from_utf8_lossy(&data));
                }
            }
        }
    };
    let tail = &received[received.len().saturating_sub(300)..];
    println!("decode worker killed mid-stream: stream {ended} {:?} later; tail: {tail:?}", killed.elapsed());
    assert!(!received.contains("\"finish_reason\":\"length\""), "the stream did not run to completion");

    // Until a decode worker is back, the model's requests fail promptly with a clean error.
    let started = Instant::now();
    let r = s.chat(ask("deepseek-r1-math", "hello", 4)).await;
    println!("request with no decode worker: {} in {:?}: {}", r.status, started.elapsed(), r.text());
    assert!(r.status >= 400 && r.status != 504, "a clean error: {} {}", r.status, r.text());
    assert!(serde_json::from_slice::<Value>(&r.body).is_ok(), "a JSON error body: {}", r.text());
    // The other model is unaffected.
    assert_eq!(s.chat(ask("qwen3-8b", "hello", 4)).await.status, 200);

    s.dynamo.start_worker("deepseek-r1-math", Role::Decode).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let r = s.chat(ask("MoM", MATH, 4)).await;
        if r.status == 200 && r.json()["model"] == "deepseek-r1-math" {
            break;
        }
        assert!(Instant::now() < deadline, "the new decode worker never served: {} {}", r.status, r.text());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn frontend_restarted_under_load(s: &mut Stack) {
    let outcomes: Arc<Mutex<BTreeMap<String, u64>>> = Arc::default();
    let running = Arc::new(AtomicBool::new(true));
    let url = s.envoy.url("/v1/chat/completions");
    let workers: Vec<_> = (0..8)
        .map(|w| {
            let (outcomes, running, url) = (outcomes.clone(), running.clone(), url.clone());
            tokio::spawn(async move {
                // A hung request fails the test through the client's deadline.
                let client = HttpClient::new(Duration::from_secs(15));
                let prompt = if w % 2 == 0 { MATH } else { HISTORY };
                let body = ask("MoM", prompt, 4).to_string();
                let mut errors = Vec::new();
                while running.load(Ordering::Relaxed) {
                    let r = client.post(&url, body.clone(), &NO_CACHE).await.expect("answered, not hung");
                    let key = format!("{} {}", r.status, r.header("x-vsr-fallback").unwrap_or("routed"));
                    *outcomes.lock().unwrap().entry(key).or_default() += 1;
                    if r.status != 200 {
                        errors.push((r.status, r.text()));
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
                errors
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let down = Instant::now();
    s.dynamo.kill_frontend();
    tokio::time::sleep(Duration::from_millis(500)).await;
    // Start a new frontend (waits until it lists every model and found the prefill workers).
    let dynamo = &mut s.dynamo;
    tokio::task::block_in_place(|| dynamo.restart_frontend()).expect("frontend back");
    let outage = down.elapsed();
    tokio::time::sleep(Duration::from_millis(2000)).await;
    let before_end: u64 = outcomes.lock().unwrap().get("200 routed").copied().unwrap_or(0);
    tokio::time::sleep(Duration::from_millis(1000)).await;
    running.store(false, Ordering::Relaxed);
    let mut errors = Vec::new();
    for w in workers {
        errors.extend(w.await.unwrap());
    }
    let outcomes = outcomes.lock().unwrap().clone();
    let retries = ["backend_primary", "backend_secondary"].map(|c| s.envoy.envoy_stat(&format!("cluster.{c}.upstream_rq_retry"))).iter().sum::<u64>();
    let mut kinds: BTreeMap<String, u64> = BTreeMap::new();
    for (status, body) in &errors {
        *kinds.entry(format!("{status} {}", &body[..body.len().min(120)])).or_default() += 1;
    }
    println!("frontend restarted under load ({outage:?} without a frontend): {outcomes:?}; Envoy retries: {retries}; errors: {kinds:#?}");
    assert!(outcomes.get("200 routed").copied().unwrap_or(0) > before_end, "served again after the restart: {outcomes:?}");
    for (status, body) in &errors {
        // A Dynamo frontend that has just started answers 404 with an empty body until the first
        // chat model registers with it (its chat endpoint is off until then; seen with 1.6.1 and
        // no model: `/health` already says healthy). That is Dynamo's answer, passed on as is.
        if *status == 404 && body.is_empty() {
            continue;
        }
        assert!(matches!(status, 502 | 503), "only unavailability while the frontend is down: {status} {body}");
        // Dynamo's own errors and Envoy's (no backend after its retries) are both error objects.
        let v: serde_json::Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("a JSON error body ({e}): {status} {body}"));
        assert!(v["error"]["message"].is_string() || v["message"].is_string(), "an error message: {status} {body}");
    }
    // Whatever fell back to the default model is counted in Envoy's stats.
    let fallbacks: u64 = outcomes.iter().filter(|(k, _)| !k.ends_with("routed")).map(|(_, v)| v).sum();
    let counted: u64 = ["timeout", "bad_reply", "unavailable", "grpc_error"]
        .iter()
        .map(|r| s.envoy.counter(&format!("semantic_router.fallback.{r}")))
        .sum();
    assert_eq!(counted, fallbacks, "every fallback counted: {outcomes:?}");
}

/// The models the shipped routing policy can pick are the ones the Dynamo stack serves.
#[test]
fn the_routing_policy_picks_only_models_dynamo_serves() {
    let text = std::fs::read_to_string(repo_root().join("classifier-svc/config/router.yaml")).unwrap();
    let config: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
    let mut models = vec![config["default_model"].as_str().unwrap().to_string()];
    for category in config["categories"].as_sequence().unwrap() {
        for score in category["model_scores"].as_sequence().unwrap() {
            models.push(score["model"].as_str().unwrap().to_string());
        }
    }
    for model in models {
        assert!(dynamo::MODELS.contains(&model.as_str()), "router.yaml routes to {model}, which Dynamo does not serve");
    }
    let justfile = std::fs::read_to_string(repo_root().join("justfile")).unwrap();
    let prepared = justfile.lines().find_map(|l| l.strip_prefix("dynamo_models := ")).expect("dynamo_models in the justfile");
    assert_eq!(prepared.trim_matches('"').split_whitespace().collect::<Vec<_>>(), dynamo::MODELS, "`just dynamo` prepares every model");
}
