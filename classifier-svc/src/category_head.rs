//! The trained category classifier. When configured (`classifier.category_model.model_id`), its
//! probabilities replace embedding similarity as the category scores, and
//! `classifier.category_model.threshold` is a probability, as in vLLM Semantic Router's category
//! model. Two kinds of directory:
//! - a head (`EmbeddingHead`, `router-train train-category`) on the prompt embedding the router
//!   computes anyway: one small matrix product per request;
//! - a fine-tuned sequence classifier (HF `*ForSequenceClassification`, `router-train
//!   finetune-category`): more accurate, but a second encoder pass per request, so the service
//!   runs it on its own batching worker while the embedding runs ([`is_sequence_classifier`]).

use std::path::Path;
use std::sync::Mutex;

use anyhow::{bail, Context, Result};
use tracing::{info, warn};

use crate::guard::softmax;
use crate::model::head::EmbeddingHead;
use crate::CpuBackend;

pub struct CategoryHead {
    head: Mutex<EmbeddingHead<CpuBackend>>,
    labels: Vec<String>,
    input_dim: usize,
}

impl CategoryHead {
    pub fn load(dir: &Path, dim: usize) -> Result<Self> {
        let (head, meta) = EmbeddingHead::<CpuBackend>::load(dir, &Default::default())?;
        if meta.input_dim != dim {
            bail!("head input_dim {} does not match the embedding model's size {dim} (encoder `{}`)", meta.input_dim, meta.encoder);
        }
        let labels = meta.labels()?;
        Ok(Self { head: Mutex::new(head), labels, input_dim: dim })
    }

    pub fn labels(&self) -> &[String] {
        &self.labels
    }

    /// (label, probability) for every label of the head.
    pub fn probabilities(&self, embedding: &[f32]) -> Result<Vec<(String, f32)>> {
        if embedding.len() != self.input_dim {
            bail!("embedding of size {}, the head takes {}", embedding.len(), self.input_dim);
        }
        let logits = {
            let head = self.head.lock().unwrap_or_else(|e| e.into_inner());
            head.logits_of(&[embedding.to_vec()], &Default::default())?
        };
        Ok(self.labels.iter().cloned().zip(softmax(&logits[0])).collect())
    }
}

/// Whether `dir` holds a full sequence-classification checkpoint (its `config.json` names an
/// `*ForSequenceClassification` architecture) rather than a head.
pub fn is_sequence_classifier(dir: &Path) -> bool {
    std::fs::read_to_string(dir.join("config.json"))
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .and_then(|v| v["architectures"].as_array().cloned())
        .is_some_and(|a| a.iter().any(|x| x.as_str().is_some_and(|s| s.ends_with("ForSequenceClassification"))))
}

/// The configured category model directory, or `None` (with a warning) when it does not exist.
pub fn configured_dir(model_id: Option<&Path>) -> Option<&Path> {
    let dir = model_id.filter(|p| !p.as_os_str().is_empty())?;
    if !dir.exists() {
        warn!(model = %dir.display(), "classifier.category_model.model_id: not found; routing by embedding similarity");
        return None;
    }
    Some(dir)
}

/// The head of `model_id`: `None` when no head is configured, its directory does not exist
/// (embedding similarity routes then) or it is a sequence classifier (loaded by the service);
/// an error when the directory is not a usable head.
pub fn load(model_id: Option<&Path>, dim: usize) -> Result<Option<CategoryHead>> {
    let Some(dir) = configured_dir(model_id) else { return Ok(None) };
    if is_sequence_classifier(dir) {
        return Ok(None);
    }
    let head = CategoryHead::load(dir, dim).with_context(|| format!("classifier.category_model.model_id: {}", dir.display()))?;
    info!(model = %dir.display(), labels = head.labels.len(), "category head loaded");
    Ok(Some(head))
}
