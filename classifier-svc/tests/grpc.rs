//! gRPC end to end: the real server on an ephemeral port, the real MiniLM and the shipped config.

use std::path::Path;
use std::time::{Duration, Instant};

use classifier_svc::config::Config;
use router_proto::v1::classifier_client::ClassifierClient;
use router_proto::v1::{ClassifyRequest, EmbedRequest};
use tokio::net::TcpListener;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn classify_embed_and_health_over_grpc() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let minilm = root.join("models/all-MiniLM-L6-v2");
    assert!(
        minilm.join("model.safetensors").exists(),
        "{} is missing: run `just models` first",
        minilm.display()
    );
    let mut cfg = Config::load(&root.join("classifier-svc/config/router.yaml")).unwrap();
    cfg.bert_model.model_id = minilm;

    let grpc = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let metrics = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = grpc.local_addr().unwrap();
    let metrics_addr = metrics.local_addr().unwrap();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(classifier_svc::serve_with_listeners(cfg, grpc, Some(metrics), async {
        let _ = stop_rx.await;
    }));

    let url = format!("http://{addr}");
    let mut health = loop {
        if let Ok(ch) = tonic::transport::Channel::from_shared(url.clone()).unwrap().connect().await {
            break HealthClient::new(ch);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let status = |svc: &str| HealthCheckRequest { service: svc.into() };
    let start = Instant::now();
    loop {
        let s = health.check(status("semantic_router.v1.Classifier")).await.unwrap().into_inner().status;
        if s == ServingStatus::Serving as i32 {
            break;
        }
        assert_eq!(s, ServingStatus::NotServing as i32);
        assert!(start.elapsed() < Duration::from_secs(300), "never became SERVING");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let s = health.check(status("")).await.unwrap().into_inner().status;
    assert_eq!(s, ServingStatus::Serving as i32);

    let mut client = ClassifierClient::connect(url).await.unwrap();
    let d = client
        .classify(ClassifyRequest {
            text: "What is the integral of x^2?".into(),
            request_id: "test-1".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .decision
        .unwrap();
    assert_eq!(d.category, "math");
    assert_eq!(d.selected_model, "deepseek-r1-math");
    assert_eq!(d.reason().wire(), "category");
    assert_eq!(d.scores.len(), 14);
    assert!(d.processing_micros > 0);

    let out = client
        .embed(EmbedRequest { texts: vec!["hello world".into(), "".into(), "Grüße 🙂".into()] })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(out.embeddings.len(), 3);
    for e in &out.embeddings {
        assert_eq!(e.values.len(), 384);
        let norm: f32 = e.values.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-4, "norm {norm}");
    }

    let too_many = client.embed(EmbedRequest { texts: vec!["x".into(); 257] }).await.unwrap_err();
    assert_eq!(too_many.code(), tonic::Code::InvalidArgument);

    // Metrics endpoint.
    let body = {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect(metrics_addr).await.unwrap();
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
        let mut b = String::new();
        s.read_to_string(&mut b).await.unwrap();
        b
    };
    assert!(body.starts_with("HTTP/1.1 200"), "{body}");
    assert!(body.contains("sr_classifier_decisions_total{category=\"math\",model=\"deepseek-r1-math\""), "{body}");
    assert!(body.contains("sr_classifier_batch_size_bucket"));
    // Per method and result, from the server's layer (health checks are not counted).
    for line in [
        r#"sr_classifier_requests_total{code="OK",method="Classify"} 1"#,
        r#"sr_classifier_requests_total{code="OK",method="Embed"} 1"#,
        r#"sr_classifier_requests_total{code="InvalidArgument",method="Embed"} 1"#,
        r#"sr_classifier_request_duration_seconds_count{method="Classify"} 1"#,
    ] {
        assert!(body.contains(line), "missing {line}\n{body}");
    }
    assert!(!body.contains("method=\"Check\""), "{body}");

    stop_tx.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(30), server).await.unwrap().unwrap().unwrap();
}
