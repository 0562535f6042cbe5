//! Semantic-router classifier sidecar: BERT-family encoders on burn behind a gRPC service.
//!
//! - [`model`]: BERT / ModernBERT encoders and heads, generic over the burn backend.
//! - [`policy`]: embedding-similarity categories → model, reasoning, system prompt, guard and
//!   PII policy; [`config`] and [`schema`]: native and vLLM Semantic Router config files.
//! - [`guard`]: the jailbreak head; [`pii`]: structured PII detectors.
//! - [`reload`]: config hot reload; [`logging`]: text or JSON logs.
//! - [`batcher`]: dynamic batching of concurrent requests.
//! - [`engine`]: the models, loaded once, the policy snapshot and the request path to a
//!   decision; [`server`]: the gRPC server (`Classify`, `Embed`, health) and [`server::serve`],
//!   counted, timed and traced per method by [`rpc_layer`].

pub mod batcher;
pub mod bench;
pub mod cache;
pub mod category_head;
pub mod config;
pub mod engine;
pub mod gpu;
pub mod guard;
pub mod logging;
pub mod metrics;
pub mod model;
pub mod pii;
pub mod pii_model;
pub mod policy;
pub mod reload;
pub mod rpc_layer;
pub mod schema;
pub mod server;
pub mod telemetry;
pub mod tokenize;
pub mod weights;

pub use config::Config;
pub use engine::{Engine, SERVING_LOG};
pub use server::{serve, serve_with_listeners, shutdown_signal};

/// The CPU backend of the default build.
pub type CpuBackend = burn::backend::Flex;
