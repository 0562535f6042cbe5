//! OpenTelemetry tracing (`observability.tracing`): the `tracing` spans of each request
//! (classify → embed, pii_model, guard, pii, policy) exported over OTLP/gRPC, with the caller's
//! W3C trace context (the `traceparent` metadata the filter forwards from the client request)
//! as their parent, so the sidecar's work shows up inside the client's trace.

use anyhow::{bail, Context as _, Result};
use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry::KeyValue;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
use opentelemetry_sdk::Resource;

use crate::config::TracingConfig;

const SAMPLING_TYPES: &[&str] = &["always_on", "always_off", "probabilistic"];

/// Checks `observability.tracing` (only when enabled: a disabled section may carry anything
/// another router reads).
pub fn validate(cfg: &TracingConfig) -> Result<()> {
    if !cfg.enabled {
        return Ok(());
    }
    if cfg.provider != "opentelemetry" {
        bail!("observability.tracing.provider: `{}` is not supported (opentelemetry)", cfg.provider);
    }
    if cfg.exporter.kind != "otlp" {
        bail!("observability.tracing.exporter.type: `{}` is not supported (otlp, over gRPC)", cfg.exporter.kind);
    }
    if !cfg.exporter.insecure || cfg.exporter.endpoint.starts_with("https://") {
        bail!(
            "observability.tracing.exporter.insecure: TLS to the collector is not built in; export to a \
             collector on the pod or node (plain gRPC) and let it forward over TLS"
        );
    }
    if !SAMPLING_TYPES.contains(&cfg.sampling.kind.as_str()) {
        bail!("observability.tracing.sampling.type: `{}` is not one of {SAMPLING_TYPES:?}", cfg.sampling.kind);
    }
    if !(0.0..=1.0).contains(&cfg.sampling.rate) {
        bail!("observability.tracing.sampling.rate: must be in [0, 1], got {}", cfg.sampling.rate);
    }
    Ok(())
}

/// The tracer provider for an enabled config, batching spans to the OTLP collector. Must be
/// built inside the Tokio runtime (the gRPC channel runs on it).
pub fn provider(cfg: &TracingConfig) -> Result<Option<SdkTracerProvider>> {
    if !cfg.enabled {
        return Ok(None);
    }
    validate(cfg)?;
    let endpoint = if cfg.exporter.endpoint.contains("://") {
        cfg.exporter.endpoint.clone()
    } else {
        format!("http://{}", cfg.exporter.endpoint)
    };
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint)
        .build()
        .context("observability.tracing.exporter")?;
    // A caller that sampled its trace gets our spans; new traces follow the configured policy.
    let root = match cfg.sampling.kind.as_str() {
        "always_off" => Sampler::AlwaysOff,
        "probabilistic" => Sampler::TraceIdRatioBased(cfg.sampling.rate),
        _ => Sampler::AlwaysOn,
    };
    let mut attributes = vec![KeyValue::new("service.version", cfg.resource.service_version.clone())];
    if !cfg.resource.deployment_environment.is_empty() {
        attributes.push(KeyValue::new("deployment.environment.name", cfg.resource.deployment_environment.clone()));
    }
    let resource = Resource::builder()
        .with_service_name(cfg.resource.service_name.clone())
        .with_attributes(attributes)
        .build();
    Ok(Some(
        SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_sampler(Sampler::ParentBased(Box::new(root)))
            .with_resource(resource)
            .build(),
    ))
}

/// The caller's trace context from a gRPC call's metadata (its HTTP/2 headers: `traceparent`,
/// `tracestate`); an empty context when there is none or it is malformed.
pub fn remote_context(headers: &tonic::codegen::http::HeaderMap) -> opentelemetry::Context {
    TraceContextPropagator::new().extract(&HeaderExtractor(headers))
}

struct HeaderExtractor<'a>(&'a tonic::codegen::http::HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::trace::TraceContextExt;

    #[test]
    fn the_callers_traceparent_becomes_the_remote_parent() {
        let mut headers = tonic::codegen::http::HeaderMap::new();
        headers.insert("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".parse().unwrap());
        let cx = remote_context(&headers);
        let span = cx.span();
        let sc = span.span_context();
        assert!(sc.is_remote() && sc.is_sampled());
        assert_eq!(sc.trace_id().to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(sc.span_id().to_string(), "00f067aa0ba902b7");
        assert!(!remote_context(&tonic::codegen::http::HeaderMap::new()).span().span_context().is_valid());
    }

    #[test]
    fn only_supported_settings_pass_when_enabled() {
        let mut cfg = TracingConfig::default();
        cfg.exporter.kind = "stdout".into();
        assert!(validate(&cfg).is_ok(), "disabled: not checked");
        cfg.enabled = true;
        assert!(validate(&cfg).unwrap_err().to_string().contains("observability.tracing.exporter.type"));
        cfg.exporter.kind = "otlp".into();
        cfg.sampling.rate = 1.5;
        assert!(validate(&cfg).unwrap_err().to_string().contains("observability.tracing.sampling.rate"));
        cfg.sampling.rate = 0.1;
        cfg.sampling.kind = "probabilistic".into();
        assert!(validate(&cfg).is_ok());
        cfg.exporter.insecure = false;
        assert!(validate(&cfg).is_err());
    }
}
