//! The gRPC server: `Classify`, `Embed`, `SemanticCache.Store` and standard health over one
//! [`Engine`], plus start-up and shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use router_proto::v1::classifier_server::{Classifier, ClassifierServer};
use router_proto::v1::semantic_cache_server::{SemanticCache, SemanticCacheServer};
use router_proto::v1::{StoreReply, StoreRequest};
use router_proto::v1::{ClassifyRequest, ClassifyResponse, EmbedRequest, EmbedResponse, Embedding};
use tokio::net::TcpListener;
use tonic::{Request, Response, Status};
use tonic_health::ServingStatus;
use tracing::{debug, info, info_span, warn, Instrument};

use crate::batcher::BatchError;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::engine::{Engine, MAX_EMBED_TEXTS, SERVING_LOG};

fn to_status(e: BatchError) -> Status {
    match e {
        BatchError::QueueFull(n) => Status::resource_exhausted(format!("classifier overloaded: {n} requests queued")),
        BatchError::Stopped => Status::unavailable("classifier is shutting down"),
        BatchError::Failed(m) => Status::internal(m),
    }
}

#[derive(Clone)]
pub struct ClassifierService {
    engine: Arc<OnceLock<Engine>>,
    metrics: Arc<Metrics>,
}

impl ClassifierService {
    fn engine(&self) -> Result<&Engine, Status> {
        self.engine
            .get()
            .ok_or_else(|| Status::unavailable("classifier is loading its models"))
    }

}

#[tonic::async_trait]
impl Classifier for ClassifierService {
    async fn classify(
        &self,
        request: Request<ClassifyRequest>,
    ) -> Result<Response<ClassifyResponse>, Status> {
        let req = request.into_inner();
        // A child of the call's span (crate::rpc_layer), which joined the client's trace.
        let span = info_span!("classify", request_id = %req.request_id);
        let result = match self.engine() {
            Ok(engine) => engine.classify_observed(&req).instrument(span.clone()).await.map_err(to_status),
            Err(s) => Err(s),
        };
        let _entered = span.enter();
        match result {
            Ok((d, pii_types)) => {
                self.metrics.observe_decision(&d, &pii_types);
                let jailbreak = d.jailbreak.as_ref().map(|j| j.confidence);
                info!(
                    request_id = %req.request_id,
                    category = %d.category,
                    decision = %d.decision,
                    signals = %d.matched_signals.join(","),
                    model = %d.selected_model,
                    confidence = d.confidence,
                    reason = d.reason().wire(),
                    blocked = d.block.as_ref().map(|b| b.code.as_str()).unwrap_or(""),
                    jailbreak_score = jailbreak.unwrap_or(0.0),
                    pii = %pii_types.join(","),
                    reasoning = d.reasoning.as_ref().map(|r| if r.enabled { "on" } else { "off" }).unwrap_or(""),
                    system_prompt = d.system_prompt.is_some(),
                    micros = d.processing_micros,
                    context_turns = req.context.len(),
                    "classified"
                );
                debug!(request_id = %req.request_id, text = %req.text, "classified text");
                Ok(Response::new(ClassifyResponse { decision: Some(d) }))
            }
            Err(s) => {
                warn!(request_id = %req.request_id, code = ?s.code(), message = s.message(), "classify failed");
                Err(s)
            }
        }
    }

    async fn embed(&self, request: Request<EmbedRequest>) -> Result<Response<EmbedResponse>, Status> {
        let t = Instant::now();
        let texts = request.into_inner().texts;
        let n = texts.len();
        let result = async {
            if n > MAX_EMBED_TEXTS {
                return Err(Status::invalid_argument(format!(
                    "at most {MAX_EMBED_TEXTS} texts per Embed call, got {n}"
                )));
            }
            let engine = self.engine()?;
            engine.embed(texts).await.map_err(to_status)
        }
        .await;
        let vectors = result?;
        info!(texts = n, micros = t.elapsed().as_micros() as u64, "embedded");
        Ok(Response::new(EmbedResponse {
            embeddings: vectors.into_iter().map(|values| Embedding { values }).collect(),
        }))
    }
}

#[tonic::async_trait]
impl SemanticCache for ClassifierService {
    async fn store(&self, request: Request<StoreRequest>) -> Result<Response<StoreReply>, Status> {
        let req = request.into_inner();
        let result = self.engine().map(|engine| engine.cache.store(&req.request_id, req.body));
        let stored = result?;
        debug!(request_id = %req.request_id, stored, "semantic cache store");
        Ok(Response::new(StoreReply { stored }))
    }
}

/// Binds the configured addresses and runs until `shutdown` resolves.
pub async fn serve(config: Config, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<()> {
    let addr = config.listen_addr()?;
    let grpc = TcpListener::bind(addr)
        .await
        .with_context(|| format!("server.listen: cannot bind {addr}"))?;
    let metrics = match config.metrics_addr()? {
        Some(a) => Some(
            TcpListener::bind(a)
                .await
                .with_context(|| format!("server.metrics_listen: cannot bind {a}"))?,
        ),
        None => None,
    };
    serve_with_listeners(config, grpc, metrics, shutdown).await
}

/// Like [`serve`], on already bound listeners (tests use ephemeral ports).
///
/// Health is NOT_SERVING from the start until the model is loaded and warm, then SERVING for
/// `""` and `semantic_router.v1.Classifier`; [`SERVING_LOG`] is logged at that moment.
pub async fn serve_with_listeners(
    config: Config,
    grpc: TcpListener,
    metrics_listener: Option<TcpListener>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let metrics = Arc::new(Metrics::new());
    let grpc_addr: SocketAddr = grpc.local_addr()?;
    let metrics_task = metrics_listener.map(|l| {
        info!(addr = %l.local_addr().map(|a| a.to_string()).unwrap_or_default(), "metrics endpoint at /metrics");
        tokio::spawn(crate::metrics::serve_metrics(l, metrics.clone()))
    });

    let (reporter, health) = tonic_health::server::health_reporter();
    let service_name = <ClassifierServer<ClassifierService> as tonic::server::NamedService>::NAME;
    reporter.set_service_status("", ServingStatus::NotServing).await;
    reporter.set_service_status(service_name, ServingStatus::NotServing).await;

    let engine = Arc::new(OnceLock::new());
    let svc = ClassifierService { engine: engine.clone(), metrics: metrics.clone() };

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut server_stop = stop_rx.clone();
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            // Counts, times and traces every call per method (crate::rpc_layer).
            .layer(crate::rpc_layer::RpcLayer::new(metrics.clone()))
            .add_service(health)
            .add_service(SemanticCacheServer::new(svc.clone()))
            .add_service(ClassifierServer::new(svc))
            .serve_with_incoming_shutdown(
                tonic::transport::server::TcpIncoming::from(grpc),
                async move {
                    let _ = server_stop.wait_for(|s| *s).await;
                },
            ),
    );
    info!(addr = %grpc_addr, "gRPC listening (NOT_SERVING until warm)");

    // Shutdown may arrive while the model is still loading.
    let stop = stop_tx.clone();
    let shutdown_task = tokio::spawn(async move {
        shutdown.await;
        info!("shutdown requested");
        let _ = stop.send(true);
    });

    for key in &config.ignored_keys {
        warn!(key = %key, "config: vLLM Semantic Router key not supported here; ignored");
    }
    for w in &config.warnings {
        warn!("config: {w}");
    }
    let mut reload_task = None;
    let cfg = config.clone();
    let m = metrics.clone();
    let mut loading = tokio::task::spawn_blocking(move || Engine::build(&cfg, m));
    let mut stopped = stop_rx.clone();
    let built = tokio::select! {
        r = &mut loading => Some(r),
        _ = stopped.wait_for(|s| *s) => None,
    };
    match built {
        Some(Ok(Ok(e))) => {
            let _ = engine.set(e);
            reporter.set_service_status("", ServingStatus::Serving).await;
            reporter.set_service_status(service_name, ServingStatus::Serving).await;
            info!(addr = %grpc_addr, "{SERVING_LOG}");
            if let Some(path) = config.source.clone() {
                let every = Duration::from_secs(config.server.config_reload_seconds);
                reload_task = Some(tokio::spawn(crate::reload::watch(path, engine.clone(), every)));
            }
        }
        Some(Ok(Err(e))) => {
            let _ = stop_tx.send(true);
            let _ = server.await;
            shutdown_task.abort();
            return Err(e);
        }
        Some(Err(e)) => {
            let _ = stop_tx.send(true);
            shutdown_task.abort();
            bail!("model loading panicked: {e}");
        }
        None => {}
    }

    let result = server.await;
    shutdown_task.abort();
    if let Some(t) = reload_task {
        t.abort();
    }
    if let Some(t) = metrics_task {
        t.abort();
    }
    result.context("gRPC server task")?.context("gRPC server")?;
    info!("stopped");
    Ok(())
}

/// Resolves on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}
