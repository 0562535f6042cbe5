//! Prometheus metrics and a minimal HTTP endpoint serving them at `/metrics`.

use std::time::Duration;

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, Opts, Registry,
    TextEncoder,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::batcher::BatchObserver;

pub struct Metrics {
    pub registry: Registry,
    /// End-to-end handling time per RPC, by method.
    pub latency: HistogramVec,
    /// Texts per forward pass.
    pub batch_size: Histogram,
    /// Forward-pass time per batch.
    pub batch_seconds: Histogram,
    pub queue_depth: IntGauge,
    /// Decisions by category and selected model.
    pub decisions: IntCounterVec,
    /// RPCs by method and gRPC status code.
    pub requests: IntCounterVec,
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let latency = HistogramVec::new(
            HistogramOpts::new("sr_classifier_request_duration_seconds", "Time to answer an RPC")
                .buckets(vec![
                    0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075, 0.1, 0.25,
                    0.5, 1.0, 2.5,
                ]),
            &["method"],
        )
        .unwrap();
        let batch_size = Histogram::with_opts(
            HistogramOpts::new("sr_classifier_batch_size", "Texts per forward pass")
                .buckets(vec![1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0]),
        )
        .unwrap();
        let batch_seconds = Histogram::with_opts(
            HistogramOpts::new("sr_classifier_batch_duration_seconds", "Forward-pass time per batch")
                .buckets(prometheus::exponential_buckets(0.001, 2.0, 14).unwrap()),
        )
        .unwrap();
        let queue_depth =
            IntGauge::new("sr_classifier_queue_depth", "Requests waiting for the model").unwrap();
        let decisions = IntCounterVec::new(
            Opts::new("sr_classifier_decisions_total", "Routing decisions"),
            &["category", "model", "reason"],
        )
        .unwrap();
        let requests = IntCounterVec::new(
            Opts::new("sr_classifier_requests_total", "RPCs by method and status"),
            &["method", "code"],
        )
        .unwrap();
        for c in [
            Box::new(latency.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(batch_size.clone()),
            Box::new(batch_seconds.clone()),
            Box::new(queue_depth.clone()),
            Box::new(decisions.clone()),
            Box::new(requests.clone()),
        ] {
            registry.register(c).unwrap();
        }
        Self { registry, latency, batch_size, batch_seconds, queue_depth, decisions, requests }
    }

    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut buf)
            .expect("text encoding");
        String::from_utf8(buf).unwrap_or_default()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl BatchObserver for Metrics {
    fn batch(&self, texts: usize, _requests: usize, elapsed: Duration) {
        self.batch_size.observe(texts as f64);
        self.batch_seconds.observe(elapsed.as_secs_f64());
    }
    fn queue_depth(&self, depth: usize) {
        self.queue_depth.set(depth as i64);
    }
}

/// Serves `GET /metrics` (Prometheus text format) until the task is dropped.
pub async fn serve_metrics(listener: TcpListener, metrics: std::sync::Arc<Metrics>) {
    loop {
        let Ok((mut sock, _)) = listener.accept().await else {
            continue;
        };
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            let mut n = 0;
            // Read until the end of the request head (or the buffer is full).
            while n < buf.len() {
                match tokio::time::timeout(Duration::from_secs(5), sock.read(&mut buf[n..])).await {
                    Ok(Ok(0)) | Err(_) | Ok(Err(_)) => break,
                    Ok(Ok(k)) => {
                        n += k;
                        if buf[..n].windows(4).any(|w| w == b"\r\n\r\n") {
                            break;
                        }
                    }
                }
            }
            let head = String::from_utf8_lossy(&buf[..n]);
            let path = head.split_whitespace().nth(1).unwrap_or("");
            let (status, ctype, body) = if path == "/metrics" || path.starts_with("/metrics?") {
                ("200 OK", "text/plain; version=0.0.4", metrics.render())
            } else {
                ("404 Not Found", "text/plain", "not found\n".to_string())
            };
            let resp = format!(
                "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = sock.write_all(resp.as_bytes()).await;
            let _ = sock.shutdown().await;
        });
    }
}
