//! A vLLM Semantic Router v0.3 policy (`classifier-svc/config/router-v0.3.yaml`, unchanged) in
//! the real sidecar behind a real Envoy with the filter: keyword, context and domain signals,
//! a nested AND/OR/NOT decision outranking a plain one, a LoRA name as the model sent, the
//! decision's system prompt, and the default model when no decision matches.

use router_tests::client::HttpClient;
use router_tests::envoy::{EnvoyConfig, EnvoyProcess};
use router_tests::openai_sim;
use router_tests::sidecar::SidecarProcess;
use serde_json::{json, Value};

const CONFIG: &str = "classifier-svc/config/router-v0.3.yaml";

#[tokio::test(flavor = "multi_thread")]
async fn v03_decisions_route_through_envoy() {
    let sidecar = tokio::task::spawn_blocking(|| SidecarProcess::start(CONFIG, &[])).await.unwrap().expect("sidecar");
    let (primary, primary_sim) = openai_sim::spawn("127.0.0.1:0".parse().unwrap(), "primary").await.unwrap();
    let (secondary, secondary_sim) = openai_sim::spawn("127.0.0.1:0".parse().unwrap(), "secondary").await.unwrap();
    let filter = r#"{"default_model":"qwen3-8b","timeout_ms":3000}"#;
    let config = EnvoyConfig::new(sidecar.grpc_port, primary.port(), secondary.port(), filter);
    let envoy = tokio::task::spawn_blocking(move || EnvoyProcess::start(config)).await.unwrap().unwrap();
    let client = HttpClient::default();
    let url = envoy.url("/v1/chat/completions");
    let ask = |prompt: &str| json!({"model": "MoM", "messages": [{"role": "user", "content": prompt}]}).to_string();
    // (decision header, model the backend saw)
    let route = |r: &router_tests::client::Reply| {
        (r.header("x-vsr-selected-decision").map(str::to_string), r.json()["model"].as_str().unwrap_or_default().to_string())
    };

    // Domain: the category classifier's math verdict → decision `math` → the math model.
    let r = client.post(&url, ask("What is the integral of x^2 from 0 to 3?"), &[]).await.unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(route(&r), (Some("math".into()), "deepseek-r1-math".into()), "{:?}", r.headers);
    assert_eq!(r.header("x-vsr-selected-category"), Some("math"));
    assert_eq!(r.header("x-vsr-selected-reason"), Some("decision"));
    assert_eq!(r.header("x-vsr-selected-reasoning"), Some("on"), "modelRefs[0].use_reasoning");
    assert_eq!(secondary_sim.count(), 1);

    // AND(domain math, OR(keyword urgent, ...), NOT(jailbreak)) at priority 300 beats `math`
    // (200), and its system_prompt plugin is inserted before the client's messages.
    let r = client.post(&url, ask("URGENT: what is the integral of x^2 from 0 to 3?"), &[]).await.unwrap();
    assert_eq!(route(&r), (Some("urgent_math".into()), "deepseek-r1-math".into()), "{:?}", r.headers);
    assert_eq!(r.header("x-vsr-injected-system-prompt"), Some("true"));
    let seen: Value = serde_json::from_slice(&secondary_sim.last().unwrap().body).unwrap();
    assert_eq!(seen["messages"][0]["role"], "system");
    assert_eq!(seen["messages"][0]["content"], "Answer every part, briefly and exactly.");

    // Keyword (bm25) or the computer-science domain → `code`, whose modelRef names a LoRA
    // adapter: that is the model sent.
    let r = client.post(&url, ask("How do I debug this Python code? The script crashes."), &[]).await.unwrap();
    assert_eq!(route(&r), (Some("code".into()), "qwen3-32b-coder".into()), "{:?}", r.headers);

    // Context: a conversation over 2K (estimated) tokens → `long_context`.
    let filler = "The weather was mild and the river ran slowly past the old stone bridge. ".repeat(120);
    let long = json!({"model": "MoM", "messages": [
        {"role": "user", "content": filler},
        {"role": "assistant", "content": "Noted."},
        {"role": "user", "content": "Summarise the story."}
    ]})
    .to_string();
    let r = client.post(&url, long, &[]).await.unwrap();
    assert_eq!(route(&r), (Some("long_context".into()), "qwen3-32b".into()), "{:?}", r.headers);

    // No decision matches: the default model, and no decision header.
    let r = client.post(&url, ask("Tell me a joke about the sea."), &[]).await.unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(route(&r), (None, "qwen3-8b".into()), "{:?}", r.headers);
    assert_eq!(primary_sim.count(), 3);
    assert_eq!(secondary_sim.count(), 2);
    drop(sidecar);
}
