//! Semantic-router classifier sidecar: BERT-family encoders on burn behind a gRPC service.

pub mod model;
pub mod tokenize;
pub mod weights;

/// The CPU backend of the default build.
pub type CpuBackend = burn::backend::Flex;
