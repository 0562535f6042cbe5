//! An Envoy Gateway extension server for the semantic router.
//!
//! Envoy Gateway's Wasm extension (`EnvoyExtensionPolicy`) cannot set
//! `PluginConfig.allow_on_headers_stop_iteration`, which the router's filter needs (it holds the
//! request headers until it has classified the body). Envoy Gateway calls this server from its
//! xDS translator (`extensionManager.hooks.xdsTranslator.post: [HTTPListener]`) with every
//! listener it generates; the server sets the flag on the Wasm filters with our plugin root id
//! and returns everything else unchanged. See `deploy/README.md`.

pub mod patch;
pub mod proto;
pub mod service;
pub mod wire;

// The server end to end over gRPC. A module of the unit tests rather than a test binary of its
// own: that binary alone took longer to build than this whole crate.
#[cfg(test)]
mod grpc_tests;

pub use patch::{patch_listener, Options, Report, DEFAULT_ROOT_ID};
pub use service::{serve, serve_on, shutdown_signal, Extension, SERVING_LOG};
