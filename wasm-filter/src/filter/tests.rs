//! Native tests of the request state machine against a recording host double.

use super::*;
use crate::metrics::FallbackReason;
use router_proto::v1::{Block, CategoryScore, GuardVerdict, Header, Reason};
use std::cell::RefCell;

#[derive(Default)]
struct RecordingHost {
    request_headers: Vec<(String, String)>,
    response_headers: Vec<(String, String)>,
    body: Vec<u8>,
    local_response: Option<(u32, Vec<(String, String)>, Vec<u8>)>,
    dispatched: Vec<(String, Vec<u8>, Duration)>,
    dispatched_metadata: Vec<(String, String)>,
    dispatch_error: Option<String>,
    grpc_reply: Option<Vec<u8>>,
    route_cache_cleared: usize,
    resumed: usize,
    counters: RefCell<Vec<Counter>>,
    response_chunk: Vec<u8>,
    stored: Vec<Vec<u8>>,
    usage: RefCell<Vec<(String, u64, u64)>>,
    token_times: RefCell<Vec<(String, String, crate::latency::TokenTimes)>>,
    /// Envoy forgets the request headers once `on_request_headers` continues; the SDK aborts
    /// the VM on a later access, so here it panics.
    headers_released: bool,
    /// Header reads (single or whole map, request or response): each is a host call in Envoy.
    header_reads: std::cell::Cell<usize>,
}

impl RecordingHost {
    fn request(path: &str, body: &str) -> Self {
        Self {
            request_headers: vec![
                (":method".into(), "POST".into()),
                (":path".into(), path.into()),
                ("content-length".into(), body.len().to_string()),
                ("x-request-id".into(), "req-1".into()),
            ],
            body: body.as_bytes().to_vec(),
            ..Default::default()
        }
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.request_headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    fn body_json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap()
    }

    fn response_header(&self, name: &str) -> Option<String> {
        self.response_headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.clone())
    }

    fn counted(&self, counter: Counter) -> bool {
        self.counters.borrow().contains(&counter)
    }
}

impl Host for RecordingHost {
    fn request_header(&self, name: &str) -> Option<String> {
        assert!(!self.headers_released, "request header {name} read after on_request_headers continued");
        self.header_reads.set(self.header_reads.get() + 1);
        self.header(name).map(str::to_string)
    }
    fn request_headers(&self) -> Vec<(String, String)> {
        assert!(!self.headers_released, "request headers read after on_request_headers continued");
        self.header_reads.set(self.header_reads.get() + 1);
        self.request_headers.clone()
    }
    fn set_request_header(&mut self, name: &str, value: &str) {
        self.remove_request_header(name);
        self.request_headers.push((name.into(), value.into()));
    }
    fn remove_request_header(&mut self, name: &str) {
        assert!(!self.headers_released, "request header {name} removed after on_request_headers continued");
        self.request_headers.retain(|(n, _)| n != name);
    }
    fn add_response_header(&mut self, name: &str, value: &str) {
        self.response_headers.push((name.into(), value.into()));
    }
    fn response_headers(&self) -> Vec<(String, String)> {
        self.header_reads.set(self.header_reads.get() + 1);
        self.response_headers.clone()
    }
    fn response_body(&self, size: usize) -> Option<Vec<u8>> {
        Some(self.response_chunk[..size.min(self.response_chunk.len())].to_vec())
    }
    fn dispatch_store(&mut self, _cluster: &str, message: &[u8]) -> Result<(), String> {
        self.stored.push(message.to_vec());
        Ok(())
    }
    fn request_body(&self, size: usize) -> Option<Vec<u8>> {
        Some(self.body[..size.min(self.body.len())].to_vec())
    }
    fn replace_request_body(&mut self, body: &[u8]) {
        self.body = body.to_vec();
    }
    fn send_local_response(&mut self, status: u32, headers: &[(&str, &str)], body: &[u8]) {
        let headers = headers.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect();
        self.local_response = Some((status, headers, body.to_vec()));
    }
    fn dispatch_classify(
        &mut self,
        cluster: &str,
        message: &[u8],
        metadata: &[(&str, String)],
        timeout: Duration,
    ) -> Result<u32, String> {
        if let Some(e) = &self.dispatch_error {
            return Err(e.clone());
        }
        self.dispatched.push((cluster.into(), message.to_vec(), timeout));
        self.dispatched_metadata = metadata.iter().map(|(n, v)| (n.to_string(), v.clone())).collect();
        Ok(7)
    }
    fn grpc_response_body(&self, _size: usize) -> Option<Vec<u8>> {
        self.grpc_reply.clone()
    }
    fn clear_route_cache(&mut self) -> Result<(), String> {
        self.route_cache_cleared += 1;
        Ok(())
    }
    fn resume_request(&mut self) {
        self.resumed += 1;
    }
    fn now_nanos(&self) -> u64 {
        1_000_000
    }
    fn log(&self, _level: LogLevel, _message: &str) {}
    fn count(&self, counter: Counter) {
        self.counters.borrow_mut().push(counter);
    }
    fn record_callout_latency(&self, _micros: u64) {}
    fn record_usage(&self, model: &str, prompt_tokens: u64, completion_tokens: u64) {
        self.usage.borrow_mut().push((model.into(), prompt_tokens, completion_tokens));
    }
    fn record_token_times(&self, model: &str, decision: &str, times: crate::latency::TokenTimes) {
        self.token_times.borrow_mut().push((model.into(), decision.into(), times));
    }
}

fn config(extra: &str) -> Rc<FilterConfig> {
    let json = format!(r#"{{"default_model":"fallback-model"{extra}}}"#);
    Rc::new(FilterConfig::parse(json.as_bytes()).unwrap())
}

const CHAT: &str = r#"{"model":"MoM","messages":[{"role":"user","content":"What is 2+2?"}],"temperature":0.2}"#;

/// Runs headers + whole body; returns the flows.
fn send(filter: &mut RequestFilter, host: &mut RecordingHost) -> (Flow, Flow) {
    let len = host.body.len();
    let h = filter.on_request_headers(host, false);
    host.headers_released = h == Flow::Continue;
    let b = filter.on_request_body(host, len, true);
    (h, b)
}

fn reply(decision: Decision) -> Vec<u8> {
    ClassifyResponse { decision: Some(decision) }.encode_to_vec()
}

#[test]
fn auto_model_is_classified_and_rewritten() {
    let mut host = RecordingHost::request("/v1/chat/completions", CHAT);
    let mut filter = RequestFilter::new(config(""));
    assert_eq!(send(&mut filter, &mut host), (Flow::Pause, Flow::Pause));

    let (cluster, message, timeout) = host.dispatched[0].clone();
    assert_eq!(cluster, "semantic_router_classifier");
    assert_eq!(timeout, Duration::from_millis(300));
    let sent = ClassifyRequest::decode(message.as_slice()).unwrap();
    assert_eq!(sent.text, "What is 2+2?");
    assert_eq!(sent.requested_model, "MoM");
    assert_eq!(sent.request_id, "req-1");

    host.grpc_reply = Some(reply(Decision {
        selected_model: "math-model".into(),
        category: "math".into(),
        confidence: 0.91,
        scores: vec![CategoryScore { category: "math".into(), score: 0.91 }],
        reason: Reason::Category as i32,
        ..Default::default()
    }));
    filter.on_classify_response(&mut host, 7, 0, 10);

    assert_eq!(host.resumed, 1);
    assert_eq!(host.route_cache_cleared, 1);
    assert_eq!(
        String::from_utf8(host.body.clone()).unwrap(),
        CHAT.replace(r#""model":"MoM""#, r#""model":"math-model""#)
    );
    assert_eq!(host.header("content-length"), Some(host.body.len().to_string().as_str()));
    assert_eq!(host.header("x-selected-model"), Some("math-model"));
    assert_eq!(host.header("x-vsr-selected-category"), Some("math"));
    assert_eq!(host.header("x-vsr-confidence"), Some("0.9100"));
    assert_eq!(host.header("x-vsr-selected-reason"), Some("category"));
    assert_eq!(host.header("x-vsr-selected-decision"), None, "no decision matched");
    assert!(host.counted(Counter::Routed));

    filter.on_response_headers(&mut host);
    assert!(host.response_headers.contains(&("x-vsr-selected-model".into(), "math-model".into())));
    for name in ["x-vsr-selected-model", "x-vsr-selected-category", "x-vsr-selected-reason"] {
        let n = host.response_headers.iter().filter(|(h, _)| h == name).count();
        assert_eq!(n, 1, "{name} once on the response");
    }
}

#[test]
fn w3c_trace_context_rides_on_the_callout_when_well_formed() {
    let parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let mut host = RecordingHost::request("/v1/chat/completions", CHAT);
    host.request_headers.push(("traceparent".into(), parent.into()));
    host.request_headers.push(("tracestate".into(), "vendor=abc".into()));
    let mut filter = RequestFilter::new(config(""));
    send(&mut filter, &mut host);
    let want = vec![("traceparent".to_string(), parent.to_string()), ("tracestate".to_string(), "vendor=abc".to_string())];
    assert_eq!(host.dispatched_metadata, want);

    for bad in [
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
        "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
        "garbage",
    ] {
        let mut host = RecordingHost::request("/v1/chat/completions", CHAT);
        host.request_headers.push(("traceparent".into(), bad.into()));
        host.request_headers.push(("tracestate".into(), "vendor=abc".into()));
        let mut filter = RequestFilter::new(config(""));
        send(&mut filter, &mut host);
        assert_eq!(host.dispatched.len(), 1, "the callout still happens");
        assert!(host.dispatched_metadata.is_empty(), "{bad:?} is not forwarded");
    }

    let mut host = RecordingHost::request("/v1/chat/completions", CHAT);
    host.request_headers.push(("traceparent".into(), parent.into()));
    host.request_headers.push(("tracestate".into(), "k=".to_string() + &"v".repeat(600)));
    let mut filter = RequestFilter::new(config(""));
    send(&mut filter, &mut host);
    assert_eq!(host.dispatched_metadata, vec![("traceparent".to_string(), parent.to_string())], "oversized tracestate dropped");
}

#[test]
fn a_routed_request_reads_each_header_map_from_the_host_once() {
    let mut host = RecordingHost::request("/v1/chat/completions", CHAT);
    host.request_headers.push(("Traceparent".into(), "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into()));
    host.request_headers.push(("x-tenant-id".into(), "acme".into()));
    let mut filter = RequestFilter::new(config(""));
    send(&mut filter, &mut host);
    host.grpc_reply = Some(reply(Decision { selected_model: "math-model".into(), ..Default::default() }));
    filter.on_classify_response(&mut host, 7, 0, 10);
    assert_eq!(host.header_reads.get(), 1, "one whole-map read serves every request-header lookup");
    let sent = ClassifyRequest::decode(host.dispatched[0].1.as_slice()).unwrap();
    assert_eq!((sent.tenant.as_str(), sent.path.as_str(), sent.request_id.as_str()), ("acme", "/v1/chat/completions", "req-1"));
    assert_eq!(host.dispatched_metadata.len(), 1, "header names match case-insensitively");
    assert_eq!(host.header("content-length"), Some(host.body.len().to_string().as_str()));

    host.response_headers = vec![(":status".into(), "200".into()), ("Content-Type".into(), "text/event-stream".into())];
    filter.on_response_headers(&mut host);
    assert_eq!(host.header_reads.get(), 2, "and one read serves the response's");
    assert!(filter.token_clock.is_some(), "a 200 event stream is timed (content-type matched case-insensitively)");
}

#[test]
fn spoofed_routing_headers_are_stripped_everywhere() {
    let mut host = RecordingHost::request("/v1/models", "");
    host.request_headers[0].1 = "GET".into();
    host.request_headers.push(("x-selected-model".into(), "premium".into()));
    host.request_headers.push(("x-vsr-selected-category".into(), "math".into()));
    let mut filter = RequestFilter::new(config(""));
    assert_eq!(filter.on_request_headers(&mut host, true), Flow::Continue);
    assert_eq!(host.header("x-selected-model"), None);
    assert_eq!(host.header("x-vsr-selected-category"), None);
}

#[test]
fn explicit_model_routes_without_callout() {
    let body = r#"{"model":"premium","messages":[{"role":"user","content":"hi"}]}"#;
    let mut host = RecordingHost::request("/v1/chat/completions", body);
    host.request_headers.push(("x-selected-model".into(), "spoofed".into()));
    let mut filter = RequestFilter::new(config(""));
    assert_eq!(send(&mut filter, &mut host), (Flow::Pause, Flow::Continue));
    assert!(host.dispatched.is_empty());
    assert_eq!(host.header("x-selected-model"), Some("premium"));
    assert_eq!(host.body, body.as_bytes(), "explicit model body is untouched");
    assert_eq!(host.route_cache_cleared, 1);
    assert!(host.counted(Counter::Explicit));
}

#[test]
fn every_callout_failure_falls_back_to_the_default_model() {
    let cases: [(Option<&str>, u32, Option<Vec<u8>>, FallbackReason); 5] = [
        (Some("BadArgument"), 0, None, FallbackReason::DispatchFailed),
        (None, 4, None, FallbackReason::Timeout),
        (None, 14, None, FallbackReason::Unavailable),
        (None, 0, Some(b"\xff\xff\xff garbage".to_vec()), FallbackReason::BadReply),
        (None, 0, Some(reply(Decision::default())), FallbackReason::EmptyDecision),
    ];
    for (dispatch_error, status, grpc_reply, reason) in cases {
        let mut host = RecordingHost::request("/v1/chat/completions", CHAT);
        host.dispatch_error = dispatch_error.map(str::to_string);
        host.grpc_reply = grpc_reply;
        let mut filter = RequestFilter::new(config(""));
        let (_, body_flow) = send(&mut filter, &mut host);
        if dispatch_error.is_some() {
            assert_eq!(body_flow, Flow::Continue, "{reason:?}: resumes inline");
        } else {
            assert_eq!(body_flow, Flow::Pause);
            filter.on_classify_response(&mut host, 7, status, 10);
            assert_eq!(host.resumed, 1, "{reason:?}");
        }
        assert_eq!(host.body_json()["model"], "fallback-model", "{reason:?}");
        assert_eq!(host.header("x-selected-model"), Some("fallback-model"));
        assert_eq!(host.header("x-vsr-fallback"), Some(reason.as_str()));
        assert!(host.counted(Counter::Fallback(reason)));
        assert!(host.local_response.is_none());
    }
}

#[test]
fn fail_closed_answers_503() {
    let mut host = RecordingHost::request("/v1/chat/completions", CHAT);
    let mut filter = RequestFilter::new(config(r#","fail_mode":"closed""#));
    send(&mut filter, &mut host);
    filter.on_classify_response(&mut host, 7, 14, 0);
    let (status, _, body) = host.local_response.clone().unwrap();
    assert_eq!(status, 503);
    assert!(String::from_utf8(body).unwrap().contains("router_unavailable"));
    assert_eq!(host.resumed, 0);
    assert!(host.counted(Counter::FailedClosed));
}

#[test]
fn stale_or_foreign_tokens_are_ignored() {
    let mut host = RecordingHost::request("/v1/chat/completions", CHAT);
    let mut filter = RequestFilter::new(config(""));
    send(&mut filter, &mut host);
    filter.on_classify_response(&mut host, 99, 0, 0);
    assert_eq!(host.resumed, 0);
    assert!(host.local_response.is_none());
}

#[test]
fn bad_input_gets_openai_errors() {
    let cases = [
        ("{not json", 400, "could not parse"),
        (r#"{"model":"MoM"}"#, 400, "messages"),
        (r#"{"model":["MoM"],"messages":[{"role":"user","content":"x"}]}"#, 400, "must be a string"),
    ];
    for (body, status, needle) in cases {
        let mut host = RecordingHost::request("/v1/chat/completions", body);
        let mut filter = RequestFilter::new(config(""));
        let (_, flow) = send(&mut filter, &mut host);
        assert_eq!(flow, Flow::Pause);
        let (got, headers, resp) = host.local_response.clone().unwrap();
        assert_eq!(got, status, "{body}");
        assert!(headers.contains(&("content-type".into(), "application/json".into())));
        let v: serde_json::Value = serde_json::from_slice(&resp).unwrap();
        assert!(v["error"]["message"].as_str().unwrap().contains(needle), "{body}: {v}");
        assert!(host.dispatched.is_empty());
        assert!(host.counted(Counter::Rejected));
    }
}

#[test]
fn oversized_bodies_get_413_early_and_late() {
    let mut host = RecordingHost::request("/v1/chat/completions", CHAT);
    let mut filter = RequestFilter::new(config(r#","max_body_bytes":16"#));
    assert_eq!(filter.on_request_headers(&mut host, false), Flow::Pause);
    assert_eq!(host.local_response.as_ref().unwrap().0, 413);

    // Chunked: no content-length, the limit trips while buffering.
    let mut host = RecordingHost::request("/v1/chat/completions", CHAT);
    host.remove_request_header("content-length");
    let mut filter = RequestFilter::new(config(r#","max_body_bytes":16"#));
    assert_eq!(filter.on_request_headers(&mut host, false), Flow::Pause);
    assert_eq!(filter.on_request_body(&mut host, 10, false), Flow::Pause);
    assert!(host.local_response.is_none());
    filter.on_request_body(&mut host, 20, false);
    assert_eq!(host.local_response.as_ref().unwrap().0, 413);
}

#[test]
fn block_decision_answers_locally() {
    let mut host = RecordingHost::request("/v1/chat/completions", CHAT);
    let mut filter = RequestFilter::new(config(""));
    send(&mut filter, &mut host);
    host.grpc_reply = Some(reply(Decision {
        selected_model: "m".into(),
        block: Some(Block {
            status: 400,
            r#type: "content_policy_violation".into(),
            code: "jailbreak_detected".into(),
            message: "blocked".into(),
        }),
        reason: Reason::JailbreakBlocked as i32,
        jailbreak: Some(GuardVerdict { flagged: true, label: "jailbreak".into(), confidence: 0.97 }),
        ..Default::default()
    }));
    filter.on_classify_response(&mut host, 7, 0, 1);
    let (status, headers, body) = host.local_response.clone().unwrap();
    assert_eq!(status, 400);
    for (name, value) in [
        ("x-vsr-jailbreak-blocked", "true"),
        ("x-vsr-jailbreak-type", "jailbreak"),
        ("x-vsr-jailbreak-confidence", "0.970"),
        ("x-vsr-selected-reason", "jailbreak_blocked"),
    ] {
        assert!(headers.contains(&(name.into(), value.into())), "{name}: {headers:?}");
    }
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["error"]["type"], "content_policy_violation");
    assert_eq!(v["error"]["code"], "jailbreak_detected");
    assert_eq!(host.resumed, 0);
}

#[test]
fn empty_prompt_skips_the_callout() {
    let body = r#"{"model":"auto","messages":[{"role":"user","content":""}]}"#;
    let mut host = RecordingHost::request("/v1/chat/completions", body);
    let mut filter = RequestFilter::new(config(r#","fail_mode":"closed""#));
    let (_, flow) = send(&mut filter, &mut host);
    assert_eq!(flow, Flow::Continue);
    assert!(host.dispatched.is_empty());
    assert_eq!(host.header("x-vsr-fallback"), Some("no_prompt"));
}

#[test]
fn non_routed_paths_and_methods_pass_through() {
    let mut host = RecordingHost::request("/v1/embeddings", CHAT);
    let mut filter = RequestFilter::new(config(""));
    assert_eq!(send(&mut filter, &mut host), (Flow::Continue, Flow::Continue));
    assert!(host.dispatched.is_empty());
    assert_eq!(host.body, CHAT.as_bytes());
}

#[test]
fn header_values_cannot_inject_lines() {
    let mut host = RecordingHost::request("/v1/chat/completions", CHAT);
    let mut filter = RequestFilter::new(config(""));
    send(&mut filter, &mut host);
    host.grpc_reply = Some(reply(Decision {
        selected_model: "m\r\nx-evil: 1".into(),
        category: "c".into(),
        ..Default::default()
    }));
    filter.on_classify_response(&mut host, 7, 0, 1);
    assert_eq!(host.header("x-selected-model"), Some("mx-evil: 1"));
}

#[test]
fn reasoning_and_system_prompt_are_applied_for_the_selected_model() {
    use router_proto::v1::{system_prompt::Mode, Reasoning, SystemPrompt};
    let mut host = RecordingHost::request("/v1/chat/completions", CHAT);
    let mut filter = RequestFilter::new(config(""));
    send(&mut filter, &mut host);
    host.grpc_reply = Some(reply(Decision {
        selected_model: "deepseek-r1-math".into(),
        category: "math".into(),
        reasoning: Some(Reasoning { enabled: true, chat_template_kwarg: "thinking".into(), effort: String::new() }),
        system_prompt: Some(SystemPrompt { text: "You are a mathematician.".into(), mode: Mode::Insert as i32 }),
        ..Default::default()
    }));
    filter.on_classify_response(&mut host, 7, 0, 1);
    let body = host.body_json();
    assert_eq!(body["model"], "deepseek-r1-math");
    assert_eq!(body["chat_template_kwargs"]["thinking"], true);
    assert_eq!(body["messages"][0]["role"], "system");
    assert_eq!(body["messages"][0]["content"], "You are a mathematician.");
    assert_eq!(body["messages"][1]["content"], "What is 2+2?");
    assert_eq!(host.header("x-vsr-selected-reasoning"), Some("on"));
    assert_eq!(host.header("x-vsr-injected-system-prompt"), Some("true"));
    assert_eq!(host.header("content-length"), Some(host.body.len().to_string().as_str()));
}

#[test]
fn body_mutations_only_touch_chat_completions() {
    use router_proto::v1::{system_prompt::Mode, SystemPrompt};
    let body = r#"{"model":"auto","prompt":"Prove it"}"#;
    let mut host = RecordingHost::request("/v1/completions", body);
    let mut filter = RequestFilter::new(config(""));
    send(&mut filter, &mut host);
    host.grpc_reply = Some(reply(Decision {
        selected_model: "m".into(),
        system_prompt: Some(SystemPrompt { text: "S".into(), mode: Mode::Replace as i32 }),
        ..Default::default()
    }));
    filter.on_classify_response(&mut host, 7, 0, 1);
    assert_eq!(String::from_utf8(host.body.clone()).unwrap(), r#"{"model":"m","prompt":"Prove it"}"#);
    assert_eq!(host.header("x-vsr-injected-system-prompt"), None);
}

/// Mutation fuzzing of body parsing, rewriting and decision application (no external fuzzer
/// needed): `FUZZ_ITERATIONS` sets the length (`just fuzz` runs a long one; CI a short one).
/// Invariants: no panic; bad input gets a 400/413 JSON error; a routed body stays valid JSON
/// equal to the input except for `model`.
#[test]
fn fuzz_body_handling() {
    let iterations: u64 = std::env::var("FUZZ_ITERATIONS").ok().and_then(|v| v.parse().ok()).unwrap_or(20_000);
    let seeds: &[&str] = &[
        CHAT,
        r#"{"model":"auto","messages":[{"role":"system","content":"s"},{"role":"user","content":[{"type":"text","text":"hi"}]}],"stream":true}"#,
        r#"{"model":"MoM","messages":[{"role":"user","content":"a"},{"role":"assistant","content":null,"tool_calls":[]},{"role":"user","content":"b\u00e9\n"}],"n":2}"#,
        r#"{ "messages" : [ { "content" : "x" , "role" : "user" } ] , "model" : "MoM" , "z" : [1, {"model": 2}] }"#,
    ];
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let alphabet = b"{}[]\",:\\ \n0123456789.-+eEtrufalsnMoDmodel\x00\xff\xc3";
    let (mut rejected, mut routed) = (0u64, 0u64);
    for i in 0..iterations {
        let mut body = seeds[(i % seeds.len() as u64) as usize].as_bytes().to_vec();
        for _ in 0..(1 + next() % 4) {
            let at = (next() as usize) % (body.len() + 1);
            match next() % 4 {
                0 if at < body.len() => body[at] = alphabet[(next() as usize) % alphabet.len()],
                1 => body.insert(at, alphabet[(next() as usize) % alphabet.len()]),
                2 if at < body.len() => {
                    body.remove(at);
                }
                _ => {
                    let from = (next() as usize) % body.len().max(1);
                    let len = ((next() as usize) % 12).min(body.len() - from);
                    let piece = body[from..from + len].to_vec();
                    body.splice(at..at, piece);
                }
            }
        }
        let text = String::from_utf8_lossy(&body).into_owned();
        let mut host = RecordingHost::request("/v1/chat/completions", "");
        host.body = body.clone();
        host.set_request_header("content-length", &body.len().to_string());
        // Both route modes share the body handling; alternate them.
        let mut filter = RequestFilter::new(config(if i % 2 == 0 { "" } else { BODY_MODE }));
        let (_, flow) = send(&mut filter, &mut host);
        if let Some((status, _, response)) = &host.local_response {
            assert!(matches!(status, 400 | 413), "{text:?} → {status}");
            let v: serde_json::Value = serde_json::from_slice(response).expect("error body is JSON");
            assert!(v["error"]["message"].is_string());
            rejected += 1;
            continue;
        }
        let original: serde_json::Value = serde_json::from_slice(&body).unwrap_or_else(|e| panic!("accepted invalid JSON {text:?}: {e}"));
        if flow == Flow::Pause {
            host.grpc_reply = Some(reply(Decision { selected_model: "m\"1".into(), ..Default::default() }));
            filter.on_classify_response(&mut host, 7, 0, 1);
            assert_eq!(host.resumed, 1);
        }
        let rewritten: serde_json::Value = serde_json::from_slice(&host.body).unwrap_or_else(|e| panic!("{text:?} rewritten to invalid JSON: {e}"));
        let (mut a, mut b) = (original.clone(), rewritten.clone());
        a.as_object_mut().unwrap().remove("model");
        b.as_object_mut().unwrap().remove("model");
        assert_eq!(a, b, "only the model may change: {text:?}");
        routed += 1;
    }
    println!("fuzz: {iterations} inputs, {rejected} rejected, {routed} routed");
    assert!(rejected > 0 && routed > 0, "mutations should produce both outcomes");
}

mod semantic_cache {
    use super::*;
    use router_proto::v1::{CacheHit, StoreRequest};

    const COMPLETION: &str = r#"{"id":"c","object":"chat.completion","created":1,"model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"4"},"finish_reason":"stop"}]}"#;

    fn hit() -> Decision {
        Decision {
            selected_model: "m".into(),
            category: "math".into(),
            cache_hit: Some(CacheHit { body: COMPLETION.as_bytes().to_vec(), similarity: 0.97 }),
            ..Default::default()
        }
    }

    #[test]
    fn hits_are_answered_locally_as_json_or_sse() {
        for (body, stream) in [(CHAT.to_string(), false), (CHAT.replace("\"temperature\"", "\"stream\":true,\"temperature\""), true)] {
            let mut host = RecordingHost::request("/v1/chat/completions", &body);
            let mut filter = RequestFilter::new(config(""));
            send(&mut filter, &mut host);
            host.grpc_reply = Some(reply(hit()));
            filter.on_classify_response(&mut host, 7, 0, 1);
            let (status, headers, answer) = host.local_response.clone().unwrap();
            assert_eq!(status, 200);
            assert!(headers.contains(&("x-vsr-cache-hit".into(), "true".into())));
            assert_eq!(host.resumed, 0, "the backend never sees it");
            if stream {
                assert!(headers.contains(&("content-type".into(), "text/event-stream".into())));
                assert!(String::from_utf8(answer).unwrap().ends_with("data: [DONE]\n\n"));
            } else {
                assert_eq!(answer, COMPLETION.as_bytes());
            }
            assert!(host.counted(Counter::CacheHit));
        }
    }

    #[test]
    fn traits_and_skip_header_reach_the_sidecar() {
        let body = r#"{"model":"MoM","messages":[{"role":"user","content":"x"}],"temperature":0.9,"cache_salt":"abc"}"#;
        let mut host = RecordingHost::request("/v1/chat/completions", body);
        host.request_headers.push(("x-vsr-skip-cache".into(), "true".into()));
        host.request_headers.push(("x-tenant-id".into(), "acme".into()));
        let mut filter = RequestFilter::new(config(""));
        send(&mut filter, &mut host);
        let sent = ClassifyRequest::decode(host.dispatched[0].1.as_slice()).unwrap();
        let traits = sent.traits.unwrap();
        assert!(traits.skip_cache);
        assert_eq!(traits.temperature, Some(0.9));
        assert_eq!(traits.cache_salt, "abc");
        assert_eq!(sent.tenant, "acme");
        assert_eq!(host.header("x-vsr-skip-cache"), None, "stripped like every x-vsr-* header");
    }

    fn stored_after(status: &str, content_type: &str, chunks: &[&str]) -> Vec<Vec<u8>> {
        let mut host = RecordingHost::request("/v1/chat/completions", CHAT);
        let mut filter = RequestFilter::new(config(""));
        send(&mut filter, &mut host);
        host.grpc_reply = Some(reply(Decision { selected_model: "m".into(), cache_store: true, ..Default::default() }));
        filter.on_classify_response(&mut host, 7, 0, 1);
        host.response_headers = vec![(":status".into(), status.into()), ("content-type".into(), content_type.into())];
        filter.on_response_headers(&mut host);
        for (i, chunk) in chunks.iter().enumerate() {
            host.response_chunk = chunk.as_bytes().to_vec();
            assert_eq!(filter.on_response_body(&mut host, chunk.len(), i + 1 == chunks.len()), Flow::Continue);
        }
        host.stored
    }

    #[test]
    fn successful_answers_are_stored_errors_and_partial_streams_are_not() {
        let (a, b) = COMPLETION.split_at(40);
        let stored = stored_after("200", "application/json", &[a, b]);
        assert_eq!(stored.len(), 1);
        let request = StoreRequest::decode(stored[0].as_slice()).unwrap();
        assert_eq!(request.request_id, "req-1");
        assert_eq!(request.body, COMPLETION.as_bytes());

        assert!(stored_after("500", "application/json", &[COMPLETION]).is_empty());
        let sse = String::from_utf8(crate::sse::completion_to_sse(COMPLETION.as_bytes()).unwrap()).unwrap();
        let (x, y) = sse.split_at(sse.len() / 2);
        let stored = stored_after("200", "text/event-stream", &[x, y]);
        let body: serde_json::Value = serde_json::from_slice(&StoreRequest::decode(stored[0].as_slice()).unwrap().body).unwrap();
        assert_eq!(body["choices"][0]["message"]["content"], "4");
        assert!(stored_after("200", "text/event-stream", &[x]).is_empty(), "partial stream");
    }
}

#[test]
fn token_usage_is_counted_per_selected_model() {
    let body = r#"{"model":"premium","messages":[{"role":"user","content":"hi"}]}"#;
    let mut host = RecordingHost::request("/v1/chat/completions", body);
    let mut filter = RequestFilter::new(config(""));
    send(&mut filter, &mut host);
    host.response_headers = vec![(":status".into(), "200".into()), ("content-type".into(), "application/json".into())];
    filter.on_response_headers(&mut host);
    let response = br#"{"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":9}}"#;
    let (a, b) = response.split_at(30);
    for (chunk, end) in [(a, false), (b, true)] {
        host.response_chunk = chunk.to_vec();
        filter.on_response_body(&mut host, chunk.len(), end);
    }
    assert_eq!(host.usage.borrow().clone(), vec![("premium".to_string(), 3, 9)]);
}

#[test]
fn skip_processing_and_debug_only_when_allowed() {
    for allowed in [false, true] {
        let extra = if allowed { r#","allow_skip_processing":true,"allow_debug":true"# } else { "" };
        let mut host = RecordingHost::request("/v1/chat/completions", CHAT);
        host.request_headers.push(("x-vsr-skip-processing".into(), "true".into()));
        let mut filter = RequestFilter::new(config(extra));
        let (_, flow) = send(&mut filter, &mut host);
        if allowed {
            assert_eq!(flow, Flow::Continue);
            assert!(host.dispatched.is_empty());
            assert_eq!(host.header("x-vsr-skipped"), Some("true"));
            assert_eq!(host.body_json()["model"], "fallback-model");
        } else {
            assert_eq!(flow, Flow::Pause, "ignored: classified as usual");
            assert_eq!(host.dispatched.len(), 1);
        }

        let mut host = RecordingHost::request("/v1/chat/completions", CHAT);
        host.request_headers.push(("x-vsr-debug".into(), "true".into()));
        let mut filter = RequestFilter::new(config(extra));
        send(&mut filter, &mut host);
        host.grpc_reply = Some(reply(Decision {
            selected_model: "m".into(),
            category: "math".into(),
            scores: vec![CategoryScore { category: "math".into(), score: 0.9 }, CategoryScore { category: "physics".into(), score: 0.05 }],
            processing_micros: 1234,
            ..Default::default()
        }));
        filter.on_classify_response(&mut host, 7, 0, 1);
        assert_eq!(host.header("x-vsr-debug-scores").is_some(), allowed);
        if allowed {
            assert_eq!(host.header("x-vsr-debug-scores"), Some("math=0.900,physics=0.050"));
            assert_eq!(host.header("x-vsr-debug-processing-us"), Some("1234"));
        }
    }
}

#[test]
fn classifier_text_is_bounded_on_char_boundaries() {
    let long = "é".repeat(3000); // 6000 bytes
    let body = serde_json::json!({"model": "MoM", "messages": [
        {"role": "user", "content": long}, {"role": "assistant", "content": "ok"}, {"role": "user", "content": long}]})
    .to_string();
    let mut host = RecordingHost::request("/v1/chat/completions", &body);
    let mut filter = RequestFilter::new(config(r#","max_classify_bytes":1001"#));
    send(&mut filter, &mut host);
    let sent = ClassifyRequest::decode(host.dispatched[0].1.as_slice()).unwrap();
    assert_eq!(sent.text.len(), 1000, "cut back to a character boundary");
    assert!(sent.context.iter().all(|t| t.content.len() <= 1001));
    assert_eq!(host.body, body.as_bytes(), "the body itself is untouched until the decision");
}

const BODY_MODE: &str = r#","route_mode":"body""#;

/// `route_mode: body`: headers go upstream at once (without content-length), only the body's
/// `model` carries the decision, and the decision headers go back to the client only.
mod body_mode {
    use super::*;
    use router_proto::v1::CacheHit;

    /// Request headers the backend would see: no routing header, no decision header.
    fn assert_no_routing_headers(host: &RecordingHost) {
        let leaked: Vec<_> = host.request_headers.iter().filter(|(n, _)| n == "x-selected-model" || n.starts_with("x-vsr-")).collect();
        assert!(leaked.is_empty(), "routing headers on the upstream request: {leaked:?}");
    }

    const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    fn spoofed(body: &str) -> RecordingHost {
        let mut host = RecordingHost::request("/v1/chat/completions", body);
        host.request_headers.push(("x-tenant-id".into(), "acme".into()));
        host.request_headers.push(("traceparent".into(), TRACEPARENT.into()));
        host.request_headers.push(("x-selected-model".into(), "premium".into()));
        host.request_headers.push(("x-vsr-selected-category".into(), "math".into()));
        host
    }

    #[test]
    fn headers_continue_stripped_and_without_content_length_then_the_body_is_rewritten() {
        let mut host = spoofed(CHAT);
        let mut filter = RequestFilter::new(config(BODY_MODE));
        assert_eq!(filter.on_request_headers(&mut host, false), Flow::Continue, "no pause at headers");
        host.headers_released = true;
        assert_eq!(host.header("content-length"), None, "a stale length never goes upstream");
        assert_no_routing_headers(&host);
        assert_eq!(host.header("x-request-id"), Some("req-1"), "other headers are kept");

        // The body is held (StopIterationAndBuffer) until its end, then held for the callout.
        assert_eq!(filter.on_request_body(&mut host, 10, false), Flow::Pause);
        assert_eq!(filter.on_request_body(&mut host, CHAT.len(), true), Flow::Pause);
        assert_eq!(host.dispatched.len(), 1);
        // What the callout needs from the headers was read while they were there.
        let sent = ClassifyRequest::decode(host.dispatched[0].1.as_slice()).unwrap();
        assert_eq!((sent.request_id.as_str(), sent.path.as_str(), sent.tenant.as_str()), ("req-1", "/v1/chat/completions", "acme"));
        assert_eq!(host.dispatched_metadata, vec![("traceparent".to_string(), TRACEPARENT.to_string())]);
        host.grpc_reply = Some(reply(Decision {
            selected_model: "math-model".into(),
            category: "math".into(),
            confidence: 0.91,
            decision: "math".into(),
            ..Default::default()
        }));
        filter.on_classify_response(&mut host, 7, 0, 10);

        assert_eq!(host.resumed, 1);
        assert_eq!(host.route_cache_cleared, 0, "no header-based route change");
        assert_eq!(host.body_json()["model"], "math-model");
        assert_eq!(String::from_utf8(host.body.clone()).unwrap(), CHAT.replace(r#""model":"MoM""#, r#""model":"math-model""#));
        assert_eq!(host.header("content-length"), None);
        assert_no_routing_headers(&host);
        assert!(host.counted(Counter::Routed));

        host.response_headers.push((":status".into(), "200".into()));
        filter.on_response_headers(&mut host);
        for (name, value) in [("x-vsr-selected-model", "math-model"), ("x-vsr-selected-category", "math"), ("x-vsr-selected-decision", "math"), ("x-selected-model", "math-model")] {
            assert_eq!(host.response_header(name).as_deref(), Some(value), "{name} on the response");
        }
        host.response_chunk = br#"{"usage":{"prompt_tokens":3,"completion_tokens":4}}"#.to_vec();
        let size = host.response_chunk.len();
        filter.on_response_body(&mut host, size, true);
        assert_eq!(*host.usage.borrow(), vec![("math-model".to_string(), 3, 4)], "usage counted for the body's model");
    }

    #[test]
    fn explicit_model_goes_through_untouched() {
        let body = r#"{"model":"premium","messages":[{"role":"user","content":"hi"}]}"#;
        let mut host = spoofed(body);
        let mut filter = RequestFilter::new(config(BODY_MODE));
        assert_eq!(send(&mut filter, &mut host), (Flow::Continue, Flow::Continue));
        assert!(host.dispatched.is_empty());
        assert_eq!(host.body, body.as_bytes());
        assert_eq!(host.route_cache_cleared, 0);
        assert_no_routing_headers(&host);
        assert!(host.counted(Counter::Explicit));
    }

    #[test]
    fn failures_fall_back_by_rewriting_the_body() {
        let mut host = RecordingHost::request("/v1/chat/completions", CHAT);
        host.dispatch_error = Some("cluster not found".into());
        let mut filter = RequestFilter::new(config(BODY_MODE));
        assert_eq!(send(&mut filter, &mut host), (Flow::Continue, Flow::Continue));
        assert_eq!(host.body_json()["model"], "fallback-model");
        assert_no_routing_headers(&host);
        assert!(host.counted(Counter::Fallback(FallbackReason::DispatchFailed)));
        filter.on_response_headers(&mut host);
        assert_eq!(host.response_header("x-vsr-fallback").as_deref(), Some("dispatch_failed"));

        // A callout that fails after dispatch resumes the held body, rewritten.
        let mut host = RecordingHost::request("/v1/chat/completions", CHAT);
        let mut filter = RequestFilter::new(config(BODY_MODE));
        send(&mut filter, &mut host);
        filter.on_classify_response(&mut host, 7, 14, 0);
        assert_eq!((host.resumed, host.route_cache_cleared), (1, 0));
        assert_eq!(host.body_json()["model"], "fallback-model");
    }

    #[test]
    fn blocks_cache_hits_and_bad_bodies_are_answered_locally_after_the_headers_left() {
        let block = Decision {
            selected_model: "m".into(),
            block: Some(Block { status: 400, r#type: "content_policy_violation".into(), code: "jailbreak".into(), message: "no".into() }),
            ..Default::default()
        };
        let hit = Decision {
            selected_model: "m".into(),
            cache_hit: Some(CacheHit { body: br#"{"object":"chat.completion","choices":[]}"#.to_vec(), similarity: 0.99 }),
            ..Default::default()
        };
        for (decision, status) in [(block, 400), (hit, 200)] {
            let mut host = RecordingHost::request("/v1/chat/completions", CHAT);
            let mut filter = RequestFilter::new(config(BODY_MODE));
            assert_eq!(send(&mut filter, &mut host), (Flow::Continue, Flow::Pause));
            host.grpc_reply = Some(reply(decision));
            filter.on_classify_response(&mut host, 7, 0, 1);
            assert_eq!(host.local_response.as_ref().unwrap().0, status);
            assert_eq!(host.resumed, 0, "the held body never goes upstream");
        }

        let mut host = RecordingHost::request("/v1/chat/completions", "{\"model\":");
        let mut filter = RequestFilter::new(config(BODY_MODE));
        assert_eq!(send(&mut filter, &mut host), (Flow::Continue, Flow::Pause));
        assert_eq!(host.local_response.as_ref().unwrap().0, 400);
    }

    #[test]
    fn what_can_be_refused_at_headers_is_refused_before_anything_leaves() {
        // Declared too large, or no body at all: answered while the headers are still held.
        let mut host = RecordingHost::request("/v1/chat/completions", CHAT);
        let mut filter = RequestFilter::new(config(&format!("{BODY_MODE},\"max_body_bytes\":16")));
        assert_eq!(filter.on_request_headers(&mut host, false), Flow::Pause);
        assert_eq!(host.local_response.as_ref().unwrap().0, 413);

        let mut host = RecordingHost::request("/v1/chat/completions", "");
        let mut filter = RequestFilter::new(config(BODY_MODE));
        assert_eq!(filter.on_request_headers(&mut host, true), Flow::Pause);
        assert_eq!(host.local_response.as_ref().unwrap().0, 400);

        // Other paths keep their content-length.
        let mut host = RecordingHost::request("/v1/embeddings", "{}");
        let mut filter = RequestFilter::new(config(BODY_MODE));
        assert_eq!(filter.on_request_headers(&mut host, false), Flow::Continue);
        assert_eq!(host.header("content-length"), Some("2"));
    }

    #[test]
    fn skip_processing_rewrites_the_body_only() {
        let mut host = RecordingHost::request("/v1/chat/completions", CHAT);
        host.request_headers.push(("x-vsr-skip-processing".into(), "true".into()));
        let mut filter = RequestFilter::new(config(&format!("{BODY_MODE},\"allow_skip_processing\":true")));
        assert_eq!(send(&mut filter, &mut host), (Flow::Continue, Flow::Continue));
        assert!(host.dispatched.is_empty());
        assert_eq!(host.body_json()["model"], "fallback-model");
        assert_no_routing_headers(&host);
    }
}

#[test]
fn fast_response_answers_as_the_model_streaming_too() {
    use router_proto::v1::LocalReply;
    for stream in [false, true] {
        let body = format!(r#"{{"model":"MoM","stream":{stream},"messages":[{{"role":"user","content":"hi"}}]}}"#);
        let mut host = RecordingHost::request("/v1/chat/completions", &body);
        let mut filter = RequestFilter::new(config(""));
        send(&mut filter, &mut host);
        host.grpc_reply = Some(reply(Decision {
            selected_model: "qwen3-8b".into(),
            decision: "busy".into(),
            local_reply: Some(LocalReply { message: "Busy; try again later.".into() }),
            ..Default::default()
        }));
        filter.on_classify_response(&mut host, 7, 0, 1);
        let (status, headers, answer) = host.local_response.clone().unwrap();
        assert_eq!(status, 200);
        assert!(headers.contains(&("x-vsr-selected-decision".into(), "busy".into())), "rendered from the typed field: {headers:?}");
        assert!(host.counted(Counter::FastResponse));
        assert_eq!(host.resumed, 0, "the backend never sees it");
        let text = String::from_utf8(answer).unwrap();
        if stream {
            assert!(headers.contains(&("content-type".into(), "text/event-stream".into())));
            assert!(text.contains("chat.completion.chunk") && text.ends_with("data: [DONE]\n\n"), "{text}");
        } else {
            let v: serde_json::Value = serde_json::from_str(&text).unwrap();
            assert_eq!(v["choices"][0]["message"]["content"], "Busy; try again later.");
            assert_eq!(v["model"], "qwen3-8b");
        }
    }
}

#[test]
fn header_mutation_and_request_params_edit_the_upstream_request() {
    use router_proto::v1::{HeaderMutation, RequestParams};
    let body = r#"{"model":"MoM","messages":[{"role":"user","content":"hi"}],"logprobs":true,"max_tokens":9000}"#;
    let mut host = RecordingHost::request("/v1/chat/completions", body);
    host.request_headers.push(("x-debug-trace".into(), "1".into()));
    let mut filter = RequestFilter::new(config(""));
    send(&mut filter, &mut host);
    host.grpc_reply = Some(reply(Decision {
        selected_model: "m".into(),
        header_mutation: Some(HeaderMutation {
            add: vec![Header { name: "x-route-tier".into(), value: "priority".into() }],
            set: vec![Header { name: "x-selected-model".into(), value: "evil".into() }],
            remove: vec!["x-debug-trace".into()],
        }),
        request_params: Some(RequestParams { blocked_params: vec!["logprobs".into()], max_tokens: Some(1024), max_n: None }),
        ..Default::default()
    }));
    filter.on_classify_response(&mut host, 7, 0, 1);
    assert_eq!(host.header("x-route-tier"), Some("priority"));
    assert_eq!(host.header("x-debug-trace"), None);
    assert_eq!(host.header("x-selected-model"), Some("m"), "a plugin never overrides the route");
    let v = host.body_json();
    assert_eq!((v.get("logprobs"), v["max_tokens"].as_u64()), (None, Some(1024)));
    assert_eq!(v["model"], "m");
    assert_eq!(host.header("content-length"), Some(host.body.len().to_string().as_str()));
}
