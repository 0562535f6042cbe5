//! The real sidecar (release `classifier-svc`, all-MiniLM-L6-v2 on burn's CPU backend, the shipped
//! routing policy) behind a real Envoy with the filter: what `just run` serves.

use router_tests::client::HttpClient;
use router_tests::envoy::{repo_root, EnvoyConfig, EnvoyProcess};
use router_tests::openai_sim;
use router_tests::sidecar::SidecarProcess;
use serde_json::json;
use std::time::Duration;

struct Stack {
    envoy: EnvoyProcess,
    primary_sim: std::sync::Arc<openai_sim::SimState>,
    secondary_sim: std::sync::Arc<openai_sim::SimState>,
    _sidecar: SidecarProcess,
}

/// The real sidecar (shipped policy, or `config`), two simulated backends, Envoy with the filter.
async fn stack(config: Option<String>) -> Stack {
    stack_with_env(config, Vec::new()).await
}

/// [`stack`] with extra environment for the sidecar (`SR__...` config overrides).
async fn stack_with_env(config: Option<String>, env: Vec<(&'static str, String)>) -> Stack {
    let config = config.unwrap_or_else(|| "classifier-svc/config/router.yaml".into());
    let sidecar = tokio::task::spawn_blocking(move || {
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        SidecarProcess::start(&config, &env)
    })
    .await
    .unwrap()
    .expect("sidecar");
    let grpc_port = sidecar.grpc_port;
    let (primary, primary_sim) = openai_sim::spawn("127.0.0.1:0".parse().unwrap(), "primary").await.unwrap();
    let (secondary, secondary_sim) = openai_sim::spawn("127.0.0.1:0".parse().unwrap(), "secondary").await.unwrap();
    let filter = r#"{"default_model":"qwen3-8b","timeout_ms":2000}"#;
    let config = EnvoyConfig::new(grpc_port, primary.port(), secondary.port(), filter);
    let envoy = tokio::task::spawn_blocking(move || EnvoyProcess::start(config)).await.unwrap().unwrap();
    Stack { envoy, primary_sim, secondary_sim, _sidecar: sidecar }
}

#[tokio::test(flavor = "multi_thread")]
async fn real_model_routes_by_meaning() {
    // Routing by similarity to the categories' descriptions and examples, on every machine:
    // a trained category model, where one exists locally, is measured by `just eval` instead.
    let no_model = vec![("SR__CLASSIFIER__CATEGORY_MODEL__MODEL_ID", String::new())];
    let Stack { envoy, primary_sim, secondary_sim, _sidecar } = stack_with_env(None, no_model).await;
    let client = HttpClient::default();
    let ask = |prompt: &str| json!({"model": "MoM", "messages": [{"role": "user", "content": prompt}]}).to_string();

    let r = client.post(&envoy.url("/v1/chat/completions"), ask("What is the integral of x^2 from 0 to 3?"), &[]).await.unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-vsr-fallback"), None, "classified, not fallen back: {:?}", r.headers);
    assert_eq!(r.header("x-vsr-selected-category"), Some("math"));
    assert_eq!(r.json()["model"], "deepseek-r1-math");
    assert_eq!(secondary_sim.count(), 1);

    let r = client
        .post(&envoy.url("/v1/chat/completions"), ask("Which treaty ended the Thirty Years' War in 1648?"), &[])
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-vsr-selected-category"), Some("history"));
    assert_eq!(r.json()["model"], "qwen3-8b");
    assert_eq!(primary_sim.count(), 1);
    let confidence: f32 = r.header("x-vsr-confidence").unwrap().parse().unwrap();
    assert!((0.0..=1.0).contains(&confidence));
}

#[tokio::test(flavor = "multi_thread")]
async fn semantic_cache_answers_repeats_and_paraphrases_from_envoy() {
    let Stack { envoy, primary_sim, secondary_sim, _sidecar } = stack(None).await;
    let client = HttpClient::default();
    let backend = || primary_sim.count() + secondary_sim.count();
    let ask = |prompt: &str, stream: bool| {
        json!({"model": "MoM", "stream": stream, "messages": [{"role": "user", "content": prompt}]}).to_string()
    };
    let url = envoy.url("/v1/chat/completions");
    let tenant = |t: &'static str| [("x-tenant-id", t)];

    let first = client.post(&url, ask("Which treaty ended the Thirty Years' War?", false), &tenant("acme")).await.unwrap();
    assert_eq!((first.status, first.header("x-vsr-cache-hit")), (200, None));
    assert_eq!(backend(), 1);
    // The answer is stored asynchronously after the response.
    tokio::time::sleep(Duration::from_millis(300)).await;

    let repeat = client.post(&url, ask("Which treaty ended the Thirty Years' War?", false), &tenant("acme")).await.unwrap();
    assert_eq!(repeat.header("x-vsr-cache-hit"), Some("true"), "{:?}", repeat.headers);
    assert_eq!(repeat.body, first.body, "served the stored answer");
    let paraphrase = client.post(&url, ask("Which treaty ended the Thirty Years War?", false), &tenant("acme")).await.unwrap();
    assert_eq!(paraphrase.header("x-vsr-cache-hit"), Some("true"));
    let streamed = client.post(&url, ask("Which treaty ended the Thirty Years' War?", true), &tenant("acme")).await.unwrap();
    assert_eq!(streamed.header("content-type"), Some("text/event-stream"));
    assert!(streamed.text().ends_with("data: [DONE]\n\n"));
    assert_eq!(backend(), 1, "hits never reach a backend");

    let other_tenant = client.post(&url, ask("Which treaty ended the Thirty Years' War?", false), &tenant("globex")).await.unwrap();
    assert_eq!(other_tenant.header("x-vsr-cache-hit"), None, "tenants never share answers");
    let unrelated = client.post(&url, ask("How do I bake sourdough bread?", false), &tenant("acme")).await.unwrap();
    assert_eq!(unrelated.header("x-vsr-cache-hit"), None);
    let skip = [("x-tenant-id", "acme"), ("x-vsr-skip-cache", "true")];
    let skipped = client.post(&url, ask("Which treaty ended the Thirty Years' War?", false), &skip).await.unwrap();
    assert_eq!(skipped.header("x-vsr-cache-hit"), None, "the client opted out");
    assert_eq!(backend(), 4);
    assert_eq!(envoy.counter("semantic_router.cache.hits"), 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn pii_policy_reroutes_and_hot_reload_keeps_serving_under_load() {
    // The shipped policy, reloaded every second from a copy this test edits.
    let dir = tempfile::tempdir().unwrap();
    let config_path = dir.path().join("router.yaml");
    let shipped = std::fs::read_to_string(repo_root().join("classifier-svc/config/router.yaml")).unwrap();
    let fast_reload = shipped.replacen("config_reload_seconds: 5", "config_reload_seconds: 1", 1);
    assert_ne!(fast_reload, shipped, "the shipped config sets config_reload_seconds: 5");
    std::fs::write(&config_path, &fast_reload).unwrap();
    let Stack { envoy, _sidecar, .. } = stack(Some(config_path.display().to_string())).await;
    let client = HttpClient::default();
    let ask = |prompt: &str| json!({"model": "MoM", "messages": [{"role": "user", "content": prompt}]}).to_string();
    let url = envoy.url("/v1/chat/completions");
    let skip = [("x-vsr-skip-cache", "true")];

    // PII: the math model may only see e-mail addresses; a card number moves the request on.
    let r = client.post(&url, ask("What is the integral of x^2 from 0 to 3?"), &skip).await.unwrap();
    assert_eq!(r.json()["model"], "deepseek-r1-math");
    let r = client
        .post(&url, ask("What is the integral of x^2 from 0 to 3? My card is 4111 1111 1111 1111."), &skip)
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["model"], "qwen3-8b", "{:?}", r.headers);
    assert!(r.header("x-vsr-pii-types").unwrap_or_default().contains("CREDIT_CARD"), "{:?}", r.headers);
    // A name is found by the PII token classifier, not by a pattern.
    let r = client
        .post(&url, ask("What is the integral of x^2 from 0 to 3? Please explain it for my student Maria Gonzalez."), &skip)
        .await
        .unwrap();
    assert_eq!(r.json()["model"], "qwen3-8b", "{:?}", r.headers);
    assert_eq!(r.header("x-vsr-pii-types"), Some("PERSON"), "{:?}", r.headers);

    // Hot reload under load: math moves to qwen3-8b; a broken edit in between changes nothing.
    let running = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let mut workers = Vec::new();
    for _ in 0..4 {
        let (client, url, running) = (client.clone(), url.clone(), running.clone());
        let body = ask("Solve the equation 3x + 5 = 20");
        workers.push(tokio::spawn(async move {
            let mut statuses = Vec::new();
            while running.load(std::sync::atomic::Ordering::Relaxed) {
                let r = client.post(&url, body.clone(), &[("x-vsr-skip-cache", "true")]).await.expect("answered");
                statuses.push(r.status);
            }
            statuses
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    std::fs::write(&config_path, fast_reload.replace("default_model: qwen3-8b", "default_model: [broken")).unwrap();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let r = client.post(&url, ask("What is the integral of x^2 from 0 to 3?"), &skip).await.unwrap();
    assert_eq!(r.json()["model"], "deepseek-r1-math", "a bad file leaves the old policy serving");
    std::fs::write(&config_path, fast_reload.replace("model: deepseek-r1-math", "model: qwen3-8b")).unwrap();
    let mut moved = false;
    for _ in 0..40 {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let r = client.post(&url, ask("What is the integral of x^2 from 0 to 3?"), &skip).await.unwrap();
        if r.json()["model"] == "qwen3-8b" && r.header("x-vsr-selected-category") == Some("math") {
            moved = true;
            break;
        }
    }
    running.store(false, std::sync::atomic::Ordering::Relaxed);
    let mut total = 0;
    for w in workers {
        let statuses = w.await.unwrap();
        total += statuses.len();
        assert!(statuses.iter().all(|s| *s == 200), "every request answered 200 through the reloads");
    }
    assert!(moved, "the new policy took effect without a restart");
    println!("hot reload under load: {total} requests, all 200");
}

/// A test double of an OpenTelemetry collector: records the spans exported to it.
#[derive(Default, Clone)]
struct CollectorDouble {
    spans: std::sync::Arc<std::sync::Mutex<Vec<opentelemetry_proto::tonic::trace::v1::Span>>>,
}

#[tonic::async_trait]
impl opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::TraceService for CollectorDouble {
    async fn export(
        &self,
        request: tonic::Request<opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse>, tonic::Status> {
        let spans = request.into_inner().resource_spans.into_iter().flat_map(|r| r.scope_spans).flat_map(|s| s.spans);
        self.spans.lock().unwrap().extend(spans);
        Ok(tonic::Response::new(Default::default()))
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn sidecar_spans_join_the_clients_trace_over_otlp() {
    use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::TraceServiceServer;
    let collector = CollectorDouble::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let collector_addr = listener.local_addr().unwrap();
    let service = TraceServiceServer::new(collector.clone());
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    let env = vec![
        ("SR__OBSERVABILITY__TRACING__ENABLED", "true".to_string()),
        ("SR__OBSERVABILITY__TRACING__EXPORTER__ENDPOINT", collector_addr.to_string()),
        ("OTEL_BSP_SCHEDULE_DELAY", "100".to_string()),
    ];
    let Stack { envoy, _sidecar, .. } = stack_with_env(None, env).await;

    let (trace_id, parent_id) = ("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7");
    let traceparent = format!("00-{trace_id}-{parent_id}-01");
    let body = json!({"model": "MoM", "messages": [{"role": "user", "content": "What is the integral of x^2?"}]}).to_string();
    let r = HttpClient::default()
        .post(&envoy.url("/v1/chat/completions"), body, &[("traceparent", traceparent.as_str()), ("x-vsr-skip-cache", "true")])
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-vsr-fallback"), None);

    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let spans = loop {
        let spans: Vec<_> = collector.spans.lock().unwrap().iter().filter(|s| hex(&s.trace_id) == trace_id).cloned().collect();
        let named = |name: &str| spans.iter().any(|s| s.name == name);
        if named("semantic_router.v1.Classifier/Classify") && named("classify") && named("embed") {
            break spans;
        }
        assert!(std::time::Instant::now() < deadline, "no call/classify/embed spans in the client's trace: {:?}", collector.spans.lock().unwrap().iter().map(|s| (s.name.clone(), hex(&s.trace_id))).collect::<Vec<_>>());
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let rpc = spans.iter().find(|s| s.name == "semantic_router.v1.Classifier/Classify").expect("the call's span");
    assert_eq!(hex(&rpc.parent_span_id), parent_id, "the call's span's parent is the client's span");
    let classify = spans.iter().find(|s| s.name == "classify").unwrap();
    assert_eq!(classify.parent_span_id, rpc.span_id, "the request span is a child of the call's span");
    let embed = spans.iter().find(|s| s.name == "embed").unwrap();
    assert_eq!(embed.parent_span_id, classify.span_id, "stages are children of the request span");
}
