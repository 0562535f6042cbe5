//! Per-method request counts and latency for this router's gRPC services, as a tower layer
//! around the whole server: every method is measured the same way and no handler counts by
//! hand. Health checks are not counted (they are not this router's traffic).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use tonic::codegen::http;

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
pub struct RpcMetricsLayer {
    metrics: Arc<Metrics>,
}

impl RpcMetricsLayer {
    pub fn new(metrics: Arc<Metrics>) -> Self {
        Self { metrics }
    }
}

impl<S> tower::Layer<S> for RpcMetricsLayer {
    type Service = RpcMetrics<S>;

    fn layer(&self, inner: S) -> RpcMetrics<S> {
        RpcMetrics { inner, metrics: self.metrics.clone() }
    }
}

#[derive(Clone)]
pub struct RpcMetrics<S> {
    inner: S,
    metrics: Arc<Metrics>,
}

impl<S, B, R> tower::Service<http::Request<B>> for RpcMetrics<S>
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
        let method = method_of(request.uri().path()).map(str::to_owned);
        let metrics = self.metrics.clone();
        let t = Instant::now();
        let response = self.inner.call(request);
        Box::pin(async move {
            let result = response.await;
            if let Some(method) = method {
                metrics.latency.with_label_values(&[&method]).observe(t.elapsed().as_secs_f64());
                // A transport error never reached a handler: counted as Internal.
                let code = result.as_ref().map_or_else(|_| "Internal".to_string(), |r| code_label(r.headers()));
                metrics.requests.with_label_values(&[&method, &code]).inc();
            }
            result
        })
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
