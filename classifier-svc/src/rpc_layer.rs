//! Per-method request counts, latency and a tracing span for this router's gRPC services, as a
//! tower layer around the whole server: every method is measured and traced the same way and no
//! handler does it by hand. Health checks are neither counted nor traced (they are not this
//! router's traffic).
//!
//! The span joins the caller's trace (`traceparent` / `tracestate` in the call's metadata, which
//! the filter forwards from the client request); what a handler records (the `classify` span and
//! its stages) nests under it.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use tonic::codegen::http;
use tracing::field::Empty;
use tracing::{info_span, Instrument};

use crate::metrics::Metrics;

/// The package every service of the contract lives in (`semantic_router.v1.Classifier`, ...).
const PACKAGE_PREFIX: &str = "/semantic_router.v1.";

/// The method of a call to one of this router's services (`/semantic_router.v1.Classifier/Classify`
/// → `Classify`); `None` for other services.
pub fn method_of(path: &str) -> Option<&str> {
    let (_, method) = path.strip_prefix(PACKAGE_PREFIX)?.split_once('/')?;
    (!method.is_empty() && !method.contains('/')).then_some(method)
}

/// The result label of a response: `OK`, or the name of the gRPC code of an error (a handler's
/// error goes out trailers-only, its `grpc-status` in the headers).
pub fn code_label(headers: &http::HeaderMap) -> String {
    let status = headers.get("grpc-status").and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<i32>().ok());
    match status {
        None | Some(0) => "OK".to_string(),
        Some(n) => format!("{:?}", tonic::Code::from_i32(n)),
    }
}

#[derive(Clone)]
pub struct RpcLayer {
    metrics: Arc<Metrics>,
}

impl RpcLayer {
    pub fn new(metrics: Arc<Metrics>) -> Self {
        Self { metrics }
    }
}

impl<S> tower::Layer<S> for RpcLayer {
    type Service = Rpc<S>;

    fn layer(&self, inner: S) -> Rpc<S> {
        Rpc { inner, metrics: self.metrics.clone() }
    }
}

#[derive(Clone)]
pub struct Rpc<S> {
    inner: S,
    metrics: Arc<Metrics>,
}

impl<S, B, R> tower::Service<http::Request<B>> for Rpc<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<R>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let Some(method) = method_of(request.uri().path()).map(str::to_owned) else {
            return Box::pin(self.inner.call(request));
        };
        let span = info_span!(
            "rpc",
            otel.name = %request.uri().path().trim_start_matches('/'),
            otel.kind = "server",
            rpc.system = "grpc",
            rpc.method = %method,
            rpc.grpc.status_code = Empty,
        );
        // Without the OpenTelemetry layer (tracing off) there is nothing to join.
        let _ = tracing_opentelemetry::OpenTelemetrySpanExt::set_parent(
            &span,
            crate::telemetry::remote_context(request.headers()),
        );
        let metrics = self.metrics.clone();
        let t = Instant::now();
        // The handler's future is built inside the span, so what it records nests under it.
        let response = span.in_scope(|| self.inner.call(request));
        Box::pin(
            async move {
                let result = response.await;
                metrics.latency.with_label_values(&[&method]).observe(t.elapsed().as_secs_f64());
                // A transport error never reached a handler: counted as Internal.
                let code = result.as_ref().map_or_else(|_| "Internal".to_string(), |r| code_label(r.headers()));
                tracing::Span::current().record("rpc.grpc.status_code", code.as_str());
                metrics.requests.with_label_values(&[&method, &code]).inc();
                result
            }
            .instrument(span),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_this_routers_methods_are_named() {
        assert_eq!(method_of("/semantic_router.v1.Classifier/Classify"), Some("Classify"));
        assert_eq!(method_of("/semantic_router.v1.SemanticCache/Store"), Some("Store"));
        assert_eq!(method_of("/grpc.health.v1.Health/Check"), None);
        assert_eq!(method_of("/semantic_router.v1.Classifier/"), None);
    }

    #[test]
    fn codes_are_named_as_tonic_names_them() {
        let mut h = http::HeaderMap::new();
        assert_eq!(code_label(&h), "OK");
        h.insert("grpc-status", "8".parse().unwrap());
        assert_eq!(code_label(&h), "ResourceExhausted");
        h.insert("grpc-status", "14".parse().unwrap());
        assert_eq!(code_label(&h), "Unavailable");
    }
}
