//! Prometheus metrics and a minimal HTTP endpoint serving them at `/metrics`.

use std::time::Duration;

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
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
    /// Decisions by category, selected model and reason.
    pub decisions: IntCounterVec,
    /// Requests by the policy decision that routed them (`none`: the default model).
    pub policy_decisions: IntCounterVec,
    /// RPCs by method and gRPC status code.
    pub requests: IntCounterVec,
    /// Time per classification stage (`embed`: queue, tokenization and forward pass;
    /// `guard`; `pii`; `policy`).
    pub stage_seconds: HistogramVec,
    /// Requests blocked by the jailbreak guard, by jailbreak type.
    pub jailbreak_blocks: IntCounterVec,
    /// PII detections by type (counted once per request and type).
    pub pii_detections: IntCounterVec,
    /// Requests blocked by a model's PII policy, by denied type.
    pub pii_violations: IntCounterVec,
    /// Decisions carrying a reasoning setting, by model and mode (`on` / `off`).
    pub reasoning: IntCounterVec,
    /// Decisions carrying a system prompt, by category and mode.
    pub system_prompts: IntCounterVec,
    /// Config reloads by result (`ok`, `error`).
    pub config_reloads: IntCounterVec,
    /// 1 when the jailbreak guard has a model loaded.
    pub guard_configured: IntGauge,
    /// Semantic cache: hits, misses (lookups that found nothing), lookup time, entries,
    /// evictions, answers stored.
    pub cache_hits: IntCounter,
    pub cache_misses: IntCounter,
    pub cache_lookup_seconds: Histogram,
    pub cache_entries: IntGauge,
    pub cache_evictions: IntGauge,
    pub cache_stores: IntCounter,
    /// The same events under vLLM Semantic Router's metric names, so its dashboards work.
    pub vsr: VsrMetrics,
}

/// vLLM Semantic Router's metric names (and label names) for the events it also has.
pub struct VsrMetrics {
    pub category_classifications: IntCounterVec,
    pub classifier_latency: HistogramVec,
    pub routing_latency: Histogram,
    pub request_errors: IntCounterVec,
    pub pii_violations: IntCounterVec,
    pub reasoning_decisions: IntCounterVec,
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
        let stage_seconds = HistogramVec::new(
            HistogramOpts::new("sr_classifier_stage_duration_seconds", "Time per classification stage")
                .buckets(vec![
                    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                    0.25, 0.5, 1.0,
                ]),
            &["stage"],
        )
        .unwrap();
        let counter = |name: &str, help: &str, labels: &[&str]| IntCounterVec::new(Opts::new(name, help), labels).unwrap();
        let jailbreak_blocks = counter("sr_classifier_jailbreak_blocks_total", "Requests blocked by the jailbreak guard", &["type"]);
        let pii_detections = counter("sr_classifier_pii_detections_total", "PII detections by type", &["type"]);
        let pii_violations = counter("sr_classifier_pii_violations_total", "Requests blocked by a PII policy, by denied type", &["type"]);
        let reasoning = counter("sr_classifier_reasoning_decisions_total", "Decisions with a reasoning setting", &["model", "mode"]);
        let system_prompts = counter("sr_classifier_system_prompt_decisions_total", "Decisions with a system prompt", &["category", "mode"]);
        let policy_decisions = counter("sr_classifier_policy_decisions_total", "Requests by the policy decision that routed them", &["decision", "model"]);
        let config_reloads = counter("sr_classifier_config_reloads_total", "Config reloads by result", &["result"]);
        let guard_configured =
            IntGauge::new("sr_classifier_guard_configured", "1 when the jailbreak guard has a model").unwrap();
        let cache_hits = IntCounter::new("llm_cache_hits_total", "Semantic-cache hits").unwrap();
        let cache_misses = IntCounter::new("llm_cache_misses_total", "Semantic-cache lookups without a hit").unwrap();
        let cache_lookup_seconds = Histogram::with_opts(
            HistogramOpts::new("llm_cache_lookup_duration_seconds", "Semantic-cache lookup time")
                .buckets(prometheus::exponential_buckets(0.00001, 2.0, 14).unwrap()),
        )
        .unwrap();
        let cache_entries = IntGauge::new("llm_cache_entries", "Answers in the semantic cache").unwrap();
        let cache_evictions = IntGauge::new("llm_cache_evictions_total", "Answers evicted because the cache was full").unwrap();
        let cache_stores = IntCounter::new("llm_cache_stores_total", "Answers stored in the semantic cache").unwrap();
        let latency_buckets = vec![0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5];
        let vsr = VsrMetrics {
            category_classifications: counter("llm_category_classifications_count", "Classifications by category", &["category"]),
            classifier_latency: HistogramVec::new(
                HistogramOpts::new("llm_classifier_latency_seconds", "Classifier latency").buckets(latency_buckets.clone()),
                &["classifier"],
            )
            .unwrap(),
            routing_latency: Histogram::with_opts(
                HistogramOpts::new("llm_model_routing_latency_seconds", "Time to make a routing decision").buckets(latency_buckets),
            )
            .unwrap(),
            request_errors: counter("llm_request_errors_total", "Requests refused by the router", &["model", "reason"]),
            pii_violations: counter("llm_pii_violations_total", "Requests refused by a PII policy", &["model"]),
            reasoning_decisions: counter(
                "llm_reasoning_decisions_total",
                "Reasoning decisions",
                &["category", "model", "enabled", "effort"],
            ),
        };
        for c in [
            Box::new(vsr.category_classifications.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(vsr.classifier_latency.clone()),
            Box::new(vsr.routing_latency.clone()),
            Box::new(vsr.request_errors.clone()),
            Box::new(vsr.pii_violations.clone()),
            Box::new(vsr.reasoning_decisions.clone()),
            Box::new(cache_hits.clone()),
            Box::new(cache_misses.clone()),
            Box::new(cache_lookup_seconds.clone()),
            Box::new(cache_entries.clone()),
            Box::new(cache_evictions.clone()),
            Box::new(cache_stores.clone()),
            Box::new(latency.clone()),
            Box::new(batch_size.clone()),
            Box::new(batch_seconds.clone()),
            Box::new(queue_depth.clone()),
            Box::new(decisions.clone()),
            Box::new(requests.clone()),
            Box::new(stage_seconds.clone()),
            Box::new(jailbreak_blocks.clone()),
            Box::new(pii_detections.clone()),
            Box::new(pii_violations.clone()),
            Box::new(reasoning.clone()),
            Box::new(system_prompts.clone()),
            Box::new(config_reloads.clone()),
            Box::new(policy_decisions.clone()),
            Box::new(guard_configured.clone()),
        ] {
            registry.register(c).unwrap();
        }
        Self {
            registry,
            latency,
            batch_size,
            batch_seconds,
            queue_depth,
            decisions,
            policy_decisions,
            requests,
            stage_seconds,
            jailbreak_blocks,
            pii_detections,
            pii_violations,
            reasoning,
            system_prompts,
            config_reloads,
            guard_configured,
            cache_hits,
            cache_misses,
            cache_lookup_seconds,
            cache_entries,
            cache_evictions,
            cache_stores,
            vsr,
        }
    }

    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut buf)
            .expect("text encoding");
        String::from_utf8(buf).unwrap_or_default()
    }
}

impl Metrics {
    /// Counts what one decision did (blocks, PII, reasoning, system prompt).
    pub fn observe_decision(&self, d: &router_proto::v1::Decision, pii_types: &[&str]) {
        use crate::policy::{CODE_JAILBREAK, CODE_PII};
        self.decisions
            .with_label_values(&[d.category.as_str(), d.selected_model.as_str(), d.reason().wire()])
            .inc();
        let decision = if d.decision.is_empty() { "none" } else { d.decision.as_str() };
        self.policy_decisions.with_label_values(&[decision, d.selected_model.as_str()]).inc();
        let seconds = d.processing_micros as f64 / 1e6;
        let category = if d.category.is_empty() { "unknown" } else { d.category.as_str() };
        self.vsr.category_classifications.with_label_values(&[category]).inc();
        self.vsr.classifier_latency.with_label_values(&["category"]).observe(seconds);
        self.vsr.routing_latency.observe(seconds);
        if let Some(b) = &d.block {
            let reason = if b.code == CODE_JAILBREAK { "jailbreak_block" } else if b.code == CODE_PII { "pii_policy_denied" } else { "blocked" };
            self.vsr.request_errors.with_label_values(&[d.selected_model.as_str(), reason]).inc();
            if b.code == CODE_PII {
                self.vsr.pii_violations.with_label_values(&[d.selected_model.as_str()]).inc();
            }
        }
        if let Some(r) = &d.reasoning {
            let effort = if r.effort.is_empty() { "" } else { r.effort.as_str() };
            self.vsr
                .reasoning_decisions
                .with_label_values(&[category, d.selected_model.as_str(), if r.enabled { "true" } else { "false" }, effort])
                .inc();
        }
        for t in pii_types {
            self.pii_detections.with_label_values(&[t]).inc();
        }
        if let Some(b) = &d.block {
            if b.code == CODE_JAILBREAK {
                let label = d.jailbreak.as_ref().map(|j| j.label.as_str()).unwrap_or("");
                self.jailbreak_blocks.with_label_values(&[label]).inc();
            } else if b.code == CODE_PII {
                for t in d.pii.iter().flat_map(|p| &p.types) {
                    self.pii_violations.with_label_values(&[t.as_str()]).inc();
                }
            }
        }
        if let Some(r) = &d.reasoning {
            self.reasoning
                .with_label_values(&[d.selected_model.as_str(), if r.enabled { "on" } else { "off" }])
                .inc();
        }
        if let Some(p) = &d.system_prompt {
            let mode = if p.mode == router_proto::v1::system_prompt::Mode::Insert as i32 { "insert" } else { "replace" };
            self.system_prompts.with_label_values(&[d.category.as_str(), mode]).inc();
        }
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

#[cfg(test)]
mod vsr_names {
    use super::Metrics;
    use router_proto::v1::{Block, Decision, Reasoning};

    #[test]
    fn decisions_also_count_under_vllm_semantic_router_names() {
        let m = Metrics::new();
        m.observe_decision(
            &Decision {
                category: "math".into(),
                selected_model: "m".into(),
                processing_micros: 2_000,
                reasoning: Some(Reasoning { enabled: true, chat_template_kwarg: "thinking".into(), effort: String::new() }),
                ..Default::default()
            },
            &[],
        );
        m.observe_decision(
            &Decision {
                selected_model: "m".into(),
                block: Some(Block { status: 400, code: crate::policy::CODE_JAILBREAK.into(), ..Default::default() }),
                ..Default::default()
            },
            &[],
        );
        let text = m.render();
        for line in [
            r#"llm_category_classifications_count{category="math"} 1"#,
            r#"llm_reasoning_decisions_total{category="math",effort="",enabled="true",model="m"} 1"#,
            r#"llm_request_errors_total{model="m",reason="jailbreak_block"} 1"#,
            "llm_model_routing_latency_seconds_count 2",
        ] {
            assert!(text.contains(line), "missing {line}");
        }
    }
}
