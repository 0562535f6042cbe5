//! Drives the built filter (`target/.../wasm_filter.wasm`) through the wasmtime proxy-wasm host.

use prost::Message;
use router_proto::v1::{Block, ClassifyRequest, ClassifyResponse, Decision};
use router_tests::envoy::wasm_filter_path;
use crate::support::wasm_host::{compile, Action, GrpcCall, ProxyWasmHost};
use std::sync::OnceLock;
use wasmtime::{Engine, Module};

const CLUSTER: &str = "semantic_router_classifier";
const CONFIG: &str = r#"{"default_model":"qwen3-8b","timeout_ms":250}"#;
const CHAT: &str = r#"{"model":"MoM","messages":[{"role":"system","content":"s"},{"role":"user","content":"What is the derivative of x^3?"}],"stream":false}"#;

fn module() -> &'static (Engine, Module) {
    static MODULE: OnceLock<(Engine, Module)> = OnceLock::new();
    MODULE.get_or_init(|| compile(&wasm_filter_path()).expect("compile the filter module"))
}

fn host(config: &str) -> ProxyWasmHost {
    let (engine, module) = module();
    ProxyWasmHost::start(engine, module, config, &[CLUSTER]).expect("plugin starts")
}

fn post_headers(body: &str) -> Vec<(&'static str, String)> {
    vec![
        (":method", "POST".into()),
        (":path", "/v1/chat/completions".into()),
        (":authority", "router".into()),
        ("content-type", "application/json".into()),
        ("content-length", body.len().to_string()),
        ("x-request-id", "rid-42".into()),
        ("x-selected-model", "spoofed-premium".into()),
        ("x-vsr-selected-category", "spoofed".into()),
    ]
}

/// Sends headers and the body in two chunks; returns (context, actions).
fn send(host: &mut ProxyWasmHost, body: &str) -> (u32, Vec<Action>) {
    let ctx = host.new_http_context().unwrap();
    let headers = post_headers(body);
    let headers: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
    let mut actions = vec![host.on_request_headers(ctx, &headers, false).unwrap()];
    let (a, b) = body.as_bytes().split_at(body.len() / 2);
    actions.push(host.on_request_body(ctx, a, false).unwrap());
    actions.push(host.on_request_body(ctx, b, true).unwrap());
    (ctx, actions)
}

/// Classify callouts (the plugin also makes cancelled health probes of the cluster).
fn classify_calls(host: &ProxyWasmHost) -> Vec<GrpcCall> {
    host.state().grpc_calls.iter().filter(|c| c.method == "Classify").cloned().collect()
}

fn decision(model: &str, category: &str) -> Vec<u8> {
    ClassifyResponse {
        decision: Some(Decision {
            selected_model: model.into(),
            category: category.into(),
            confidence: 0.875,
            reason: router_proto::v1::Reason::Category as i32,
            ..Default::default()
        }),
    }
    .encode_to_vec()
}

#[test]
fn classifies_rewrites_and_resumes() {
    let mut host = host(CONFIG);
    let (ctx, actions) = send(&mut host, CHAT);
    assert_eq!(actions, vec![Action::Pause, Action::Pause, Action::Pause]);
    assert_eq!(host.state().request_header("x-selected-model"), None, "spoofed header stripped at headers time");
    assert_eq!(host.state().request_header("x-vsr-selected-category"), None);

    let call = classify_calls(&host)[0].clone();
    assert_eq!(call.cluster, CLUSTER);
    assert_eq!((call.service.as_str(), call.method.as_str()), ("semantic_router.v1.Classifier", "Classify"));
    assert_eq!(call.timeout_ms, 250);
    let sent = ClassifyRequest::decode(call.message.as_slice()).unwrap();
    assert_eq!(sent.text, "What is the derivative of x^3?");
    assert_eq!(sent.request_id, "rid-42");
    assert_eq!(sent.path, "/v1/chat/completions");

    host.grpc_reply(ctx, call.token, &decision("deepseek-r1-math", "math")).unwrap();
    let s = host.state();
    assert_eq!(s.continued.get(&0), Some(&1), "request resumed once");
    assert_eq!(s.foreign_calls, vec!["clear_route_cache".to_string()]);
    let body = String::from_utf8(s.request_body.clone()).unwrap();
    assert_eq!(body, CHAT.replace("\"MoM\"", "\"deepseek-r1-math\""), "only the model changed, key order kept");
    assert_eq!(s.request_header("content-length"), Some(body.len().to_string().as_str()));
    assert_eq!(s.request_header("x-selected-model"), Some("deepseek-r1-math"));
    assert_eq!(s.request_header("x-vsr-selected-category"), Some("math"));
    assert_eq!(s.request_header("x-vsr-confidence"), Some("0.8750"));
    assert_eq!(s.metric("semantic_router.requests.routed"), 1);
    assert_eq!(s.histogram("semantic_router.callout_latency_us").len(), 1);

    host.on_response_headers(ctx, &[(":status", "200")]).unwrap();
    assert_eq!(host.state().response_header("x-vsr-selected-model"), Some("deepseek-r1-math"));
    host.done(ctx).unwrap();
}

#[test]
fn explicit_model_makes_no_callout() {
    let mut host = host(CONFIG);
    let body = r#"{"model":"qwen3-8b","messages":[{"role":"user","content":"hi"}]}"#;
    let (_, actions) = send(&mut host, body);
    assert_eq!(actions.last(), Some(&Action::Continue));
    let s = host.state();
    assert!(classify_calls(&host).is_empty());
    assert_eq!(s.request_header("x-selected-model"), Some("qwen3-8b"));
    assert_eq!(s.request_body, body.as_bytes());
    assert_eq!(s.metric("semantic_router.requests.explicit"), 1);
}

#[test]
fn grpc_failures_fall_back_without_hanging() {
    for (status, reason) in [(4u32, "timeout"), (14, "unavailable"), (13, "grpc_error")] {
        let mut host = host(CONFIG);
        let (ctx, _) = send(&mut host, CHAT);
        let token = classify_calls(&host)[0].token;
        host.grpc_close(ctx, token, status).unwrap();
        let s = host.state();
        assert_eq!(s.continued.get(&0), Some(&1), "{reason}: resumed");
        assert_eq!(s.request_header("x-selected-model"), Some("qwen3-8b"));
        assert_eq!(s.request_header("x-vsr-fallback"), Some(reason));
        assert_eq!(s.metric(&format!("semantic_router.fallback.{reason}")), 1);
        let body: serde_json::Value = serde_json::from_slice(&s.request_body).unwrap();
        assert_eq!(body["model"], "qwen3-8b");
    }
}

#[test]
fn undecodable_reply_falls_back() {
    let mut host = host(CONFIG);
    let (ctx, _) = send(&mut host, CHAT);
    let token = classify_calls(&host)[0].token;
    host.grpc_reply(ctx, token, &[0x08, 0x96, 0x01, 0xff]).unwrap();
    assert_eq!(host.state().request_header("x-vsr-fallback"), Some("bad_reply"));
    assert_eq!(host.state().continued.get(&0), Some(&1));
}

#[test]
fn unknown_cluster_falls_back_instead_of_aborting_the_vm() {
    let (engine, module) = module();
    let config = r#"{"default_model":"qwen3-8b","classifier_cluster":"no_such_cluster"}"#;
    let mut host = ProxyWasmHost::start(engine, module, config, &[CLUSTER]).unwrap();
    assert!(host.state().logged("is not defined in Envoy"), "{:?}", host.state().logs);
    assert_eq!(host.state().tick_period_ms, 5000, "re-probes on a tick");
    let (_, actions) = send(&mut host, CHAT);
    assert_eq!(actions.last(), Some(&Action::Continue));
    assert_eq!(host.state().request_header("x-vsr-fallback"), Some("dispatch_failed"));

    // The cluster appears (e.g. via CDS): the next tick finds it and routing resumes.
    host.state_mut().known_clusters.push("no_such_cluster".into());
    host.tick().unwrap();
    assert_eq!(host.state().tick_period_ms, 0);
    let before = classify_calls(&host).len();
    send(&mut host, CHAT);
    assert_eq!(classify_calls(&host).len(), before + 1);
}

#[test]
fn fail_closed_answers_503() {
    let mut host = host(r#"{"default_model":"qwen3-8b","fail_mode":"closed"}"#);
    let (ctx, _) = send(&mut host, CHAT);
    let token = classify_calls(&host)[0].token;
    host.grpc_close(ctx, token, 14).unwrap();
    let r = host.state().local_responses[0].clone();
    assert_eq!(r.status, 503);
    assert_eq!(r.json()["error"]["code"], "router_unavailable");
    assert_eq!(host.state().continued.get(&0), None, "not resumed");
}

#[test]
fn bad_input_is_answered_locally() {
    let cases = [
        ("{\"model\":\"MoM\",", 400),
        (r#"{"model":"MoM","messages":[]}"#, 400),
        (r#"{"model":42,"messages":[{"role":"user","content":"x"}]}"#, 400),
        (r#"{"model":"MoM","messages":[{"role":"user","content":"x"}],"model":"b"}"#, 400),
    ];
    for (body, status) in cases {
        let mut host = host(CONFIG);
        let (_, actions) = send(&mut host, body);
        assert_eq!(actions.last(), Some(&Action::Pause));
        let r = host.state().local_responses[0].clone();
        assert_eq!(r.status, status, "{body}");
        assert!(r.headers.contains(&("content-type".into(), "application/json".into())));
        assert!(r.json()["error"]["message"].is_string());
        assert!(classify_calls(&host).is_empty());
    }
}

#[test]
fn body_over_the_limit_gets_413() {
    let mut host = host(r#"{"default_model":"qwen3-8b","max_body_bytes":64}"#);
    let (_, _) = send(&mut host, CHAT);
    let r = host.state().local_responses[0].clone();
    assert_eq!(r.status, 413);
    assert_eq!(r.json()["error"]["code"], "request_too_large");
}

#[test]
fn block_decision_is_answered_locally() {
    let mut host = host(CONFIG);
    let (ctx, _) = send(&mut host, CHAT);
    let token = classify_calls(&host)[0].token;
    let reply = ClassifyResponse {
        decision: Some(Decision {
            selected_model: "qwen3-8b".into(),
            block: Some(Block {
                status: 400,
                r#type: "content_policy_violation".into(),
                code: "jailbreak".into(),
                message: "Request blocked by the jailbreak guard".into(),
            }),
            ..Default::default()
        }),
    };
    host.grpc_reply(ctx, token, &reply.encode_to_vec()).unwrap();
    let r = host.state().local_responses[0].clone();
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error"]["type"], "content_policy_violation");
    assert_eq!(host.state().continued.get(&0), None);
}

#[test]
fn invalid_configuration_fails_plugin_start_loudly() {
    let (engine, module) = module();
    for (config, needle) in [
        ("", "default_model"),
        (r#"{"default_model":"m","timeout":1}"#, "unknown field `timeout`"),
        ("not json", "invalid plugin configuration"),
    ] {
        let err = ProxyWasmHost::start(engine, module, config, &[CLUSTER]).err().expect("rejected");
        assert!(err.to_string().contains(needle), "{config}: {err}");
    }
}

#[test]
fn streaming_and_other_endpoints() {
    let mut host = host(CONFIG);
    let ctx = host.new_http_context().unwrap();
    let body = r#"{"model":"auto","prompt":"Prove the theorem"}"#;
    let len = body.len().to_string();
    let headers = [(":method", "POST"), (":path", "/v1/completions"), ("content-length", len.as_str())];
    assert_eq!(host.on_request_headers(ctx, &headers, false).unwrap(), Action::Pause);
    assert_eq!(host.on_request_body(ctx, body.as_bytes(), true).unwrap(), Action::Pause);
    let sent = ClassifyRequest::decode(classify_calls(&host)[0].message.as_slice()).unwrap();
    assert_eq!(sent.text, "Prove the theorem");

    // GET /v1/models: untouched apart from spoofed headers.
    let ctx = host.new_http_context().unwrap();
    let headers = [(":method", "GET"), (":path", "/v1/models"), ("x-vsr-fallback", "x")];
    assert_eq!(host.on_request_headers(ctx, &headers, true).unwrap(), Action::Continue);
    assert_eq!(host.state().request_header("x-vsr-fallback"), None);
}

/// Body route mode: headers continue (Envoy then forgets them: this host answers later header
/// accesses with BadArgument, which would trap the module), the body is held and rewritten.
#[test]
fn body_mode_continues_at_headers_and_rewrites_only_the_body() {
    let mut host = host(r#"{"default_model":"qwen3-8b","timeout_ms":250,"route_mode":"body"}"#);
    let (ctx, actions) = send(&mut host, CHAT);
    assert_eq!(actions, vec![Action::Continue, Action::Pause, Action::Pause]);
    let s = host.state();
    assert!(s.request_headers_released);
    assert_eq!(s.request_header("content-length"), None, "removed before the headers left");
    assert_eq!(s.request_header("x-selected-model"), None, "spoofed header stripped before the headers left");
    assert_eq!(s.request_header("x-vsr-selected-category"), None);
    let call = classify_calls(&host)[0].clone();
    let sent = ClassifyRequest::decode(call.message.as_slice()).unwrap();
    assert_eq!((sent.request_id.as_str(), sent.path.as_str()), ("rid-42", "/v1/chat/completions"), "read while the headers were there");

    host.grpc_reply(ctx, call.token, &decision("deepseek-r1-math", "math")).unwrap();
    let s = host.state();
    assert_eq!(s.continued.get(&0), Some(&1), "request resumed once");
    assert!(s.foreign_calls.is_empty(), "no route cache clear");
    assert_eq!(String::from_utf8(s.request_body.clone()).unwrap(), CHAT.replace("\"MoM\"", "\"deepseek-r1-math\""));
    assert_eq!(s.request_header("x-selected-model"), None, "no routing header after the headers left");
    assert_eq!(s.metric("semantic_router.requests.routed"), 1);
    host.on_response_headers(ctx, &[(":status", "200")]).unwrap();
    assert_eq!(host.state().response_header("x-vsr-selected-model"), Some("deepseek-r1-math"));
    assert_eq!(host.state().response_header("x-vsr-selected-category"), Some("math"));

    // A block after the headers left is still a local reply; the held body is never resumed.
    let (ctx, _) = send(&mut host, CHAT);
    let token = classify_calls(&host).last().unwrap().token;
    let reply = ClassifyResponse {
        decision: Some(Decision {
            selected_model: "qwen3-8b".into(),
            block: Some(Block { status: 400, r#type: "content_policy_violation".into(), code: "jailbreak".into(), message: "no".into() }),
            ..Default::default()
        }),
    };
    host.grpc_reply(ctx, token, &reply.encode_to_vec()).unwrap();
    assert_eq!(host.state().local_responses.last().unwrap().status, 400);
    assert_eq!(host.state().continued.get(&0), Some(&1), "only the first request resumed");
}
