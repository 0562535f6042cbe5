//! Data pipeline, training and evaluation of the router's classifier heads.
//!
//! - [`data`]: fetches the source packages and builds the data sets;
//! - [`embed`]: frozen-encoder embeddings with an on-disk cache;
//! - [`train`]: training of an [`classifier_svc::model::head::EmbeddingHead`];
//! - [`finetune`]: fine-tuning of the whole encoder with a sequence-classification head;
//! - [`metrics`], [`eval`]: metrics and the evaluation report.

pub mod benign;
pub mod calibrate;
pub mod data;
pub mod dev_eval;
pub mod embed;
pub mod eval;
pub mod finetune;
pub mod followups;
pub mod lexicon;
pub mod metrics;
pub mod sets;
pub mod subjects;
pub mod text;
pub mod top_layers;
pub mod train;

/// The backend's RNG is global: tests that seed it and train run one at a time.
#[cfg(test)]
pub(crate) static TEST_SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());
