//! Hostile and malformed input through a real Envoy: every case has its expected status, nothing
//! that should be rejected reaches a backend, and the VM keeps serving afterwards.

use router_tests::classifier_double::{Behaviour, ClassifierDouble};
use router_tests::client::HttpClient;
use router_tests::envoy::{EnvoyConfig, EnvoyProcess};
use router_tests::openai_sim::{self, SimState};
use serde_json::json;
use std::io::{Read, Write};
use std::sync::Arc;
use std::time::Duration;

struct Stack {
    envoy: EnvoyProcess,
    classifier: Arc<ClassifierDouble>,
    backends: [Arc<SimState>; 2],
}

impl Stack {
    fn backend_requests(&self) -> u64 {
        self.backends.iter().map(|b| b.count()).sum()
    }
}

async fn stack() -> Stack {
    let (a, sa) = openai_sim::spawn("127.0.0.1:0".parse().unwrap(), "primary").await.unwrap();
    let (b, sb) = openai_sim::spawn("127.0.0.1:0".parse().unwrap(), "secondary").await.unwrap();
    let classifier = ClassifierDouble::start(Behaviour::Decide).await;
    let config = EnvoyConfig::new(
        classifier.addr.port(),
        a.port(),
        b.port(),
        r#"{"default_model":"qwen3-8b","max_body_bytes":2097152}"#,
    );
    let envoy = tokio::task::spawn_blocking(move || EnvoyProcess::start(config)).await.unwrap().unwrap();
    Stack { envoy, classifier, backends: [sa, sb] }
}

/// Sends raw bytes on a fresh connection and returns the status code of the first response.
fn raw_status(port: u16, request: &[u8]) -> u16 {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    stream.write_all(request).unwrap();
    let mut response = Vec::new();
    let mut buf = [0u8; 4096];
    while !response.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => response.extend_from_slice(&buf[..n]),
        }
    }
    let text = String::from_utf8_lossy(&response);
    text.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0)
}

fn chunked(path: &str, body: &[u8]) -> Vec<u8> {
    let mut request = format!(
        "POST {path} HTTP/1.1\r\nHost: router\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    )
    .into_bytes();
    for chunk in body.chunks(7) {
        request.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        request.extend_from_slice(chunk);
        request.extend_from_slice(b"\r\n");
    }
    request.extend_from_slice(b"0\r\n\r\n");
    request
}

#[tokio::test(flavor = "multi_thread")]
async fn hostile_bodies_get_their_expected_status() {
    let s = stack().await;
    let client = HttpClient::new(Duration::from_secs(20));
    let url = s.envoy.url("/v1/chat/completions");
    let user = |content: serde_json::Value| json!({"model": "MoM", "messages": [{"role": "user", "content": content}]});

    let deep = format!("{}{}", "[".repeat(5000), "]".repeat(5000));
    let many_messages: Vec<_> = (0..10_000).map(|i| json!({"role": if i % 2 == 0 {"user"} else {"assistant"}, "content": format!("turn {i}")})).collect();
    let mut invalid_utf8 = br#"{"model":"MoM","messages":[{"role":"user","content":""#.to_vec();
    invalid_utf8.extend_from_slice(&[0xc3, 0x28, 0xa0, 0xa1]);
    invalid_utf8.extend_from_slice(br#""}]}"#);
    let mut raw_nul = br#"{"model":"MoM","messages":[{"role":"user","content":"a"#.to_vec();
    raw_nul.push(0);
    raw_nul.extend_from_slice(br#"b"}]}"#);

    // (name, body, expected status, reaches a backend)
    let cases: Vec<(&str, Vec<u8>, u16, bool)> = vec![
        ("truncated JSON", br#"{"model":"MoM","messages":[{"role":"us"#.to_vec(), 400, false),
        ("not JSON", b"model=MoM&messages=hi".to_vec(), 400, false),
        ("JSON array", b"[1,2,3]".to_vec(), 400, false),
        ("empty body", Vec::new(), 400, false),
        ("model is a number", json!({"model": 7, "messages": [{"role": "user", "content": "x"}]}).to_string().into_bytes(), 400, false),
        ("model is null", json!({"model": null, "messages": [{"role": "user", "content": "x"}]}).to_string().into_bytes(), 400, false),
        ("messages is an object", json!({"model": "MoM", "messages": {"role": "user"}}).to_string().into_bytes(), 400, false),
        ("content is a number", user(json!(42)).to_string().into_bytes(), 400, false),
        ("role is a number", json!({"model": "MoM", "messages": [{"role": 1, "content": "x"}]}).to_string().into_bytes(), 400, false),
        ("stream is a string", json!({"model": "MoM", "stream": "yes", "messages": [{"role": "user", "content": "x"}]}).to_string().into_bytes(), 400, false),
        ("empty messages", json!({"model": "MoM", "messages": []}).to_string().into_bytes(), 400, false),
        ("unknown role", json!({"model": "MoM", "messages": [{"role": "root", "content": "x"}]}).to_string().into_bytes(), 400, false),
        ("duplicate model keys", br#"{"model":"MoM","model":"qwen3-8b","messages":[{"role":"user","content":"x"}]}"#.to_vec(), 400, false),
        ("deep nesting", format!(r#"{{"model":"MoM","messages":[{{"role":"user","content":{deep}}}]}}"#).into_bytes(), 400, false),
        ("invalid UTF-8", invalid_utf8, 400, false),
        ("raw NUL byte in a string", raw_nul, 400, false),
        ("escaped NUL in a string", user(json!("a\u{0}b")).to_string().into_bytes(), 200, true),
        ("image-only content parts", user(json!([{"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}])).to_string().into_bytes(), 200, true),
        ("10k messages", json!({"model": "MoM", "messages": many_messages}).to_string().into_bytes(), 200, true),
        ("1 MB string", user(json!("y".repeat(1_000_000))).to_string().into_bytes(), 200, true),
        ("3 MB string, over the limit", user(json!("z".repeat(3_000_000))).to_string().into_bytes(), 413, false),
        ("emoji and non-ASCII", user(json!("∫ x² dx = ? 🤔 积分")).to_string().into_bytes(), 200, true),
    ];
    let mut summary = Vec::new();
    for (name, body, expected, reaches_backend) in &cases {
        let before = s.backend_requests();
        let r = client.post(&url, body.clone(), &[]).await.unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(r.status, *expected, "{name}: {}", r.text().chars().take(300).collect::<String>());
        if *expected >= 400 {
            assert_eq!(r.json()["error"]["type"], "invalid_request_error", "{name}");
        }
        assert_eq!(s.backend_requests() - before, *reaches_backend as u64, "{name}: backend requests");
        summary.push(format!("{name}: {}", r.status));
    }
    println!("hostile bodies: {} cases\n  {}", cases.len(), summary.join("\n  "));

    // The VM survived all of it.
    let r = client.post(&url, user(json!("What is the integral of x?")).to_string(), &[]).await.unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-vsr-selected-category"), Some("math"));
    assert!(s.classifier.calls() >= 4);
}

#[tokio::test(flavor = "multi_thread")]
async fn chunked_bodies_and_smuggling_attempts() {
    let s = stack().await;
    let port = s.envoy.config.listen_port;
    let body = json!({"model": "MoM", "messages": [{"role": "user", "content": "Solve the equation x + 1 = 2"}]}).to_string();

    let status = tokio::task::spawn_blocking(move || raw_status(port, &chunked("/v1/chat/completions", body.as_bytes())))
        .await
        .unwrap();
    assert_eq!(status, 200, "chunked body is buffered, classified and forwarded");
    assert_eq!(s.backends[1].count(), 1, "routed to the math backend");
    let seen = s.backends[1].last().unwrap();
    assert_eq!(serde_json::from_slice::<serde_json::Value>(&seen.body).unwrap()["model"], "deepseek-r1-math");

    // Both Content-Length and Transfer-Encoding: Envoy rejects it before any filter runs.
    let smuggle = b"POST /v1/chat/completions HTTP/1.1\r\nHost: router\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /v1/models HTTP/1.1\r\nHost: x\r\n\r\n".to_vec();
    let before = s.backend_requests();
    let status = tokio::task::spawn_blocking(move || raw_status(port, &smuggle)).await.unwrap();
    assert_eq!(status, 400);
    assert_eq!(s.backend_requests(), before, "nothing smuggled through");

    // A header block that spoofs the route with odd casing and repeats.
    let body = json!({"model": "MoM", "messages": [{"role": "user", "content": "Tell me a story"}]}).to_string();
    let spoof = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: router\r\nContent-Type: application/json\r\nX-Selected-Model: deepseek-r1-math\r\nx-selected-model: deepseek-r1-math\r\nX-VSR-Fallback: none\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let status = tokio::task::spawn_blocking(move || raw_status(port, spoof.as_bytes())).await.unwrap();
    assert_eq!(status, 200);
    let seen = s.backends[0].last().expect("routed to the general backend, not the spoofed one");
    assert_eq!(seen.header("x-selected-model"), Some("qwen3-8b"));
    assert_eq!(seen.header("x-vsr-fallback"), None);
}
