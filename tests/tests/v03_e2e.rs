//! A vLLM Semantic Router v0.3 policy (`classifier-svc/config/router-v0.3.yaml`, unchanged) in
//! the real sidecar behind a real Envoy with the filter: keyword, context and domain signals,
//! a nested AND/OR/NOT decision outranking a plain one, a LoRA name as the model sent, the
//! decision's plugins (system prompt, upstream header changes, request parameter limits, an
//! answer from Envoy itself, the semantic cache on for one decision while the global switch is
//! off), and the default model when no decision matches.

use router_tests::client::HttpClient;
use router_tests::envoy::{EnvoyConfig, EnvoyProcess};
use router_tests::openai_sim;
use router_tests::sidecar::SidecarProcess;
use serde_json::{json, Value};

const CONFIG: &str = "classifier-svc/config/router-v0.3.yaml";

#[tokio::test(flavor = "multi_thread")]
async fn v03_decisions_route_through_envoy() {
    // Domains by embedding similarity to the file's descriptions, as on a machine that has not
    // trained the category model: what this test checks is the decisions, and a trained model's
    // call on the odd prompts below (a long filler story, say) would make it depend on training.
    let env = [("SR__CLASSIFIER__CATEGORY_MODEL__MODEL_ID", "")];
    let sidecar = tokio::task::spawn_blocking(move || SidecarProcess::start(CONFIG, &env)).await.unwrap().expect("sidecar");
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
    // Its header_mutation plugin: added, updated and deleted on the upstream request.
    let r = client
        .post(&url, ask("URGENT: what is the integral of x^2 from 0 to 3?"), &[("x-debug-trace", "1"), ("x-route-source", "client")])
        .await
        .unwrap();
    assert_eq!(r.header("x-vsr-selected-decision"), Some("urgent_math"));
    let upstream = secondary_sim.last().unwrap();
    assert_eq!(upstream.header("x-route-tier"), Some("priority"));
    assert_eq!(upstream.header("x-route-source"), Some("semantic-router"));
    assert_eq!(upstream.header("x-debug-trace"), None);

    // fast_response: Envoy answers as an OpenAI completion (and as a stream); no backend call.
    let before = primary_sim.count() + secondary_sim.count();
    let r = client.post(&url, ask("Give me some stock tips for tomorrow"), &[]).await.unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-vsr-selected-decision"), Some("out_of_scope"));
    assert_eq!(r.json()["choices"][0]["message"]["content"], "This assistant does not give investment or gambling advice.");
    let streamed = json!({"model": "MoM", "stream": true, "messages": [{"role": "user", "content": "Which stock should I buy?"}]});
    let r = client.post(&url, streamed.to_string(), &[]).await.unwrap();
    assert_eq!(r.header("content-type"), Some("text/event-stream"));
    assert!(r.text().contains("does not give investment") && r.text().ends_with("data: [DONE]\n\n"), "{}", r.text());
    assert_eq!(primary_sim.count() + secondary_sim.count(), before);

    // request_params: blocked parameters removed, max_tokens capped, on the LoRA the decision names.
    let body = json!({"model": "MoM", "logprobs": true, "max_tokens": 50000,
        "messages": [{"role": "user", "content": "I lost my pasword, what now?"}]});
    let r = client.post(&url, body.to_string(), &[]).await.unwrap();
    assert_eq!(route(&r), (Some("local_only_pii".into()), "qwen3-8b-private".into()), "{:?}", r.headers);
    let seen: Value = serde_json::from_slice(&primary_sim.last().unwrap().body).unwrap();
    assert_eq!((seen.get("logprobs"), seen["max_tokens"].as_u64()), (None, Some(1024)));

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

    // The embedding rule → `account_support`, whose semantic-cache plugin turns the cache on
    // for it although `semantic_cache.enabled` is false: its repeat is answered by Envoy.
    let billing = ask("how do I change the billing details of my subscription");
    let r = client.post(&url, billing.clone(), &[]).await.unwrap();
    assert_eq!((r.header("x-vsr-selected-decision"), r.header("x-vsr-cache-hit")), (Some("account_support"), None), "{:?}", r.headers);
    // The answer is stored asynchronously after the response.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let repeat = client.post(&url, billing, &[]).await.unwrap();
    assert_eq!(repeat.header("x-vsr-cache-hit"), Some("true"), "{:?}", repeat.headers);
    assert_eq!(repeat.body, r.body, "served the stored answer");

    // No decision matches: the default model, and no decision header.
    let r = client.post(&url, ask("Tell me a joke about the sea."), &[]).await.unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(route(&r), (None, "qwen3-8b".into()), "{:?}", r.headers);
    assert_eq!(primary_sim.count(), 5, "the cache hit never reached a backend");
    assert_eq!(secondary_sim.count(), 3);
    drop(sidecar);
}
