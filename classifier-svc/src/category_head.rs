//! The trained category classifier (`EmbeddingHead`, trained by `router-train train-category`)
//! on the prompt embedding the router computes anyway. When configured
//! (`classifier.category_model.model_id`), its probabilities replace embedding similarity as the
//! category scores, and `classifier.category_model.threshold` is a probability, as in vLLM
//! Semantic Router's category model.

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

/// `None` when no head is configured or its directory does not exist (embedding similarity
/// routes then); an error when the directory is not a usable head.
pub fn load(model_id: Option<&Path>, dim: usize) -> Result<Option<CategoryHead>> {
    let Some(dir) = model_id.filter(|p| !p.as_os_str().is_empty()) else { return Ok(None) };
    if !dir.exists() {
        warn!(model = %dir.display(), "classifier.category_model.model_id: not found; routing by embedding similarity");
        return Ok(None);
    }
    let head = CategoryHead::load(dir, dim).with_context(|| format!("classifier.category_model.model_id: {}", dir.display()))?;
    info!(model = %dir.display(), labels = head.labels.len(), "category head loaded");
    Ok(Some(head))
}
