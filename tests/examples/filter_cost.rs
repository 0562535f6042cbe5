//! CPU cost of the filter per request by body size, running the real .wasm in the wasmtime host
//! (Cranelift, like Envoy's V8 a JIT): headers, body in 64 KiB chunks, Classify reply, rewrite.
//! Both route modes: `header` (pauses at headers, sets the routing headers, clears the route
//! cache) and `body` (headers continue, only the body is rewritten).
//! Then the response side of a routed request: the filter reads every chunk for token usage
//! (a JSON answer, or an SSE stream whose last event carries `usage`).
//! `cargo run --release -p router-tests --example filter_cost` (= `just bench-filter`).

#[path = "../tests/support/wasm_host.rs"]
#[allow(dead_code)]
mod wasm_host;

use prost::Message;
use router_proto::v1::{ClassifyResponse, Decision};
use router_tests::envoy::wasm_filter_path;
use std::time::Instant;
use wasm_host::{compile, ProxyWasmHost};

fn body_of(size: usize) -> String {
    let mut messages = Vec::new();
    let mut len = 0;
    while len < size {
        let turn = serde_json::json!({"role": if messages.len() % 2 == 0 {"user"} else {"assistant"}, "content": "lorem ipsum dolor sit amet ".repeat(10)});
        len += turn.to_string().len() + 1;
        messages.push(turn);
    }
    messages.push(serde_json::json!({"role": "user", "content": "What is the derivative of x^3?"}));
    serde_json::json!({"model": "MoM", "messages": messages, "temperature": 0.2}).to_string()
}

fn main() -> anyhow::Result<()> {
    let (engine, module) = compile(&wasm_filter_path())?;
    let reply = ClassifyResponse { decision: Some(Decision { selected_model: "deepseek-r1-math".into(), category: "math".into(), ..Default::default() }) }.encode_to_vec();
    println!("| route mode | body | requests | µs/request p50 | µs/request p99 | ns/byte p50 |\n|---|---|---|---|---|---|");
    let modes = ["header", "body"];
    let mut hosts = Vec::new();
    for mode in modes {
        let config = format!(r#"{{"default_model":"qwen3-8b","max_body_bytes":8388608,"route_mode":"{mode}"}}"#);
        hosts.push(ProxyWasmHost::start(&engine, &module, &config, &["semantic_router_classifier"])?);
    }
    request_side(&mut hosts, &modes, &reply)?;
    // Each host ran in its mode: only header mode asks Envoy to pick the route again.
    assert!(!hosts[0].state().foreign_calls.is_empty() && hosts[1].state().foreign_calls.is_empty());
    let config = r#"{"default_model":"qwen3-8b","max_body_bytes":8388608}"#;
    let mut host = ProxyWasmHost::start(&engine, &module, config, &["semantic_router_classifier"])?;
    response_side(&mut host, &reply)?;
    Ok(())
}

/// Headers, the body in 64 KiB chunks, the Classify reply and the rewrite, per body size; the
/// route modes interleaved request by request, so load on the machine hits both alike.
fn request_side(hosts: &mut [ProxyWasmHost], modes: &[&str], reply: &[u8]) -> anyhow::Result<()> {
    for (label, size, n) in [("1 KB", 1024, 2000), ("64 KB", 64 * 1024, 500), ("2 MB", 2 * 1024 * 1024, 40)] {
        let body = body_of(size);
        let len = body.len().to_string();
        let headers = [(":method", "POST"), (":path", "/v1/chat/completions"), ("content-length", len.as_str()), ("x-request-id", "r")];
        let mut samples: Vec<Vec<f64>> = vec![Vec::with_capacity(n); hosts.len()];
        for i in 0..n + 5 {
            for (m, host) in hosts.iter_mut().enumerate() {
                let ctx = host.new_http_context()?;
                let t = Instant::now();
                host.on_request_headers(ctx, &headers, false)?;
                let chunks: Vec<&[u8]> = body.as_bytes().chunks(64 * 1024).collect();
                for (k, chunk) in chunks.iter().enumerate() {
                    host.on_request_body(ctx, chunk, k + 1 == chunks.len())?;
                }
                let token = host.state().grpc_calls.last().expect("classify call").token;
                host.grpc_reply(ctx, token, reply)?;
                let elapsed = t.elapsed().as_secs_f64() * 1e6;
                host.done(ctx)?;
                host.state_mut().grpc_calls.clear();
                if i >= 5 {
                    samples[m].push(elapsed);
                }
            }
        }
        for (mode, mut samples) in modes.iter().zip(samples) {
            samples.sort_by(f64::total_cmp);
            let p50 = samples[samples.len() / 2];
            println!(
                "| {mode} | {label} ({} B) | {n} | {p50:.1} | {:.1} | {:.2} |",
                body.len(),
                samples[samples.len() * 99 / 100],
                p50 * 1000.0 / body.len() as f64
            );
        }
    }
    Ok(())
}

/// A routed request, then its answer delivered in chunks as Envoy would: the time is the
/// response callbacks alone (headers + every chunk).
fn response_side(host: &mut ProxyWasmHost, reply: &[u8]) -> anyhow::Result<()> {
    let request = r#"{"model":"MoM","messages":[{"role":"user","content":"What is the derivative of x^3?"}]}"#;
    let len = request.len().to_string();
    let headers = [(":method", "POST"), (":path", "/v1/chat/completions"), ("content-length", len.as_str()), ("x-request-id", "r")];
    println!("\n| response | chunks | µs/response p50 | µs/response p99 | ns/byte p50 |\n|---|---|---|---|---|");
    for (label, content_type, chunks) in [
        ("JSON, 1 KB", "application/json", vec![json_answer(1024)]),
        ("JSON, 64 KB", "application/json", json_answer(64 * 1024).chunks(16 * 1024).map(<[u8]>::to_vec).collect()),
        ("SSE, 200 events", "text/event-stream", sse_answer(200)),
        ("SSE, 4,000 events", "text/event-stream", sse_answer(4000)),
    ] {
        let bytes: usize = chunks.iter().map(Vec::len).sum();
        let n = if bytes > 100_000 { 300 } else { 2000 };
        let mut samples = Vec::with_capacity(n);
        for i in 0..n + 5 {
            let ctx = host.new_http_context()?;
            host.on_request_headers(ctx, &headers, false)?;
            host.on_request_body(ctx, request.as_bytes(), true)?;
            let token = host.state().grpc_calls.last().expect("classify call").token;
            host.grpc_reply(ctx, token, reply)?;
            let t = Instant::now();
            host.on_response_headers(ctx, &[(":status", "200"), ("content-type", content_type)])?;
            for (k, chunk) in chunks.iter().enumerate() {
                host.on_response_body(ctx, chunk, k + 1 == chunks.len())?;
            }
            let elapsed = t.elapsed().as_secs_f64() * 1e6;
            host.done(ctx)?;
            host.state_mut().grpc_calls.clear();
            if i >= 5 {
                samples.push(elapsed);
            }
        }
        assert!(host.state().metric_values.values().any(|&v| v > 0), "usage was counted");
        samples.sort_by(f64::total_cmp);
        let p50 = samples[samples.len() / 2];
        println!(
            "| {label} ({bytes} B) | {} | {p50:.1} | {:.1} | {:.2} |",
            chunks.len(),
            samples[samples.len() * 99 / 100],
            p50 * 1000.0 / bytes as f64
        );
    }
    Ok(())
}

fn json_answer(size: usize) -> Vec<u8> {
    let content = "The derivative of x cubed is three x squared. ".repeat(size / 40 + 1);
    serde_json::json!({
        "id": "chatcmpl-1", "object": "chat.completion", "model": "deepseek-r1-math",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": &content[..size]}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 12, "completion_tokens": size / 4, "total_tokens": 12 + size / 4}
    })
    .to_string()
    .into_bytes()
}

/// One chunk per event, as a model server flushes tokens; the last event carries `usage`.
fn sse_answer(events: usize) -> Vec<Vec<u8>> {
    let mut out: Vec<Vec<u8>> = (0..events)
        .map(|i| {
            let chunk = serde_json::json!({"id": "chatcmpl-1", "object": "chat.completion.chunk", "model": "deepseek-r1-math",
                "choices": [{"index": 0, "delta": {"content": format!("token{i} ")}, "finish_reason": null}]});
            format!("data: {chunk}\n\n").into_bytes()
        })
        .collect();
    let last = serde_json::json!({"id": "chatcmpl-1", "object": "chat.completion.chunk", "model": "deepseek-r1-math",
        "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 12, "completion_tokens": events, "total_tokens": 12 + events}});
    out.push(format!("data: {last}\n\ndata: [DONE]\n\n").into_bytes());
    out
}
