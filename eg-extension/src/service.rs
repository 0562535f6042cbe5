//! The gRPC service Envoy Gateway calls (`envoygateway.extension.EnvoyGatewayExtension`).
//!
//! `PostHTTPListenerModify` (hook `HTTPListener`) and `PostTranslateModify` (hook `Translation`,
//! listeners included with `translation.listener.includeAll`) set the flag on our Wasm filters;
//! either hook is enough. The other hooks answer with the resource they received, unchanged:
//! Envoy Gateway only calls the hooks its configuration lists, and with several extension
//! servers it passes one's answer to the next, so echoing is the safe no-op (an empty answer to
//! `PostTranslateModify` would delete every resource).

use std::net::SocketAddr;
use std::sync::Arc;

use tonic::{Request, Response, Status};
use tracing::{debug, info, warn};

use crate::patch::{patch_listener, Options, Report};
use crate::proto::service::envoy_gateway_extension_server::{EnvoyGatewayExtension, EnvoyGatewayExtensionServer};
use crate::proto::*;

/// Logged once the server accepts connections.
pub const SERVING_LOG: &str = "eg-extension serving";

#[derive(Debug, Clone)]
pub struct Extension {
    opts: Arc<Options>,
}

impl Extension {
    pub fn new(opts: Options) -> Self {
        Extension { opts: Arc::new(opts) }
    }

    /// Patches one encoded listener; returns what to send back (the input when unchanged).
    fn listener(&self, hook: &str, listener: Vec<u8>) -> Result<Vec<u8>, Status> {
        let (out, report) = patch_listener(&listener, &self.opts).map_err(|e| {
            warn!(hook, error = %e, "cannot parse the listener");
            Status::invalid_argument(format!("listener: {e}"))
        })?;
        log_report(hook, &listener, &report);
        Ok(out.unwrap_or(listener))
    }
}

fn listener_name(listener: &[u8]) -> String {
    crate::wire::fields(listener)
        .ok()
        .and_then(|fs| fs.into_iter().rfind(|f| f.number == 1 && f.wire_type == crate::wire::LEN))
        .map(|f| String::from_utf8_lossy(f.payload).into_owned())
        .unwrap_or_default()
}

fn log_report(hook: &str, listener: &[u8], report: &Report) {
    let name = listener_name(listener);
    if !report.patched.is_empty() {
        info!(hook, listener = %name, filters = ?report.patched, "set allow_on_headers_stop_iteration");
    }
    if !report.already_set.is_empty() {
        debug!(hook, listener = %name, filters = ?report.already_set, "allow_on_headers_stop_iteration already set");
    }
    if !report.discovered.is_empty() {
        warn!(hook, listener = %name, filters = ?report.discovered, "HTTP filters configured through ECDS are not edited");
    }
    if report == &Report::default() {
        debug!(hook, listener = %name, "no semantic-router Wasm filter");
    }
}

#[tonic::async_trait]
impl EnvoyGatewayExtension for Extension {
    async fn post_route_modify(&self, req: Request<PostRouteModifyRequest>) -> Result<Response<PostRouteModifyResponse>, Status> {
        Ok(Response::new(PostRouteModifyResponse { route: req.into_inner().route }))
    }

    async fn post_virtual_host_modify(
        &self,
        req: Request<PostVirtualHostModifyRequest>,
    ) -> Result<Response<PostVirtualHostModifyResponse>, Status> {
        Ok(Response::new(PostVirtualHostModifyResponse { virtual_host: req.into_inner().virtual_host }))
    }

    async fn post_http_listener_modify(
        &self,
        req: Request<PostHTTPListenerModifyRequest>,
    ) -> Result<Response<PostHTTPListenerModifyResponse>, Status> {
        let listener = match req.into_inner().listener {
            Some(l) => Some(self.listener("HTTPListener", l)?),
            None => None,
        };
        Ok(Response::new(PostHTTPListenerModifyResponse { listener }))
    }

    async fn post_cluster_modify(&self, req: Request<PostClusterModifyRequest>) -> Result<Response<PostClusterModifyResponse>, Status> {
        Ok(Response::new(PostClusterModifyResponse { cluster: req.into_inner().cluster }))
    }

    async fn post_endpoints_modify(
        &self,
        req: Request<PostEndpointsModifyRequest>,
    ) -> Result<Response<PostEndpointsModifyResponse>, Status> {
        Ok(Response::new(PostEndpointsModifyResponse { load_assignment: req.into_inner().load_assignment }))
    }

    async fn post_translate_modify(
        &self,
        req: Request<PostTranslateModifyRequest>,
    ) -> Result<Response<PostTranslateModifyResponse>, Status> {
        let r = req.into_inner();
        let listeners = r.listeners.into_iter().map(|l| self.listener("Translation", l)).collect::<Result<Vec<_>, _>>()?;
        Ok(Response::new(PostTranslateModifyResponse { clusters: r.clusters, secrets: r.secrets, listeners, routes: r.routes }))
    }
}

/// Serves the extension and gRPC health on `listener` until `shutdown` completes.
pub async fn serve_on(
    listener: tokio::net::TcpListener,
    opts: Options,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let addr = listener.local_addr()?;
    let (reporter, health) = tonic_health::server::health_reporter();
    reporter.set_serving::<EnvoyGatewayExtensionServer<Extension>>().await;
    // The overall status ("") too: that is what the kubelet's gRPC probe asks for.
    reporter.set_service_status("", tonic_health::ServingStatus::Serving).await;
    info!(%addr, root_ids = ?opts.root_ids, "{SERVING_LOG}");
    let incoming = tonic::transport::server::TcpIncoming::from(listener);
    tonic::transport::Server::builder()
        .add_service(health)
        .add_service(EnvoyGatewayExtensionServer::new(Extension::new(opts)))
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await?;
    info!("eg-extension stopped");
    Ok(())
}

/// Binds `addr` and serves (see [`serve_on`]).
pub async fn serve(
    addr: SocketAddr,
    opts: Options,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    serve_on(listener, opts, shutdown).await
}

/// Completes on SIGINT or SIGTERM.
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
    info!("shutting down");
}
