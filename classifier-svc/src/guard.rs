//! The jailbreak guard: a classification head (`EmbeddingHead`, trained by `router-train`) on
//! the prompt embedding the router computes anyway, so the guard costs one small matrix
//! product per request, not a second encoder pass. A fine-tuned sequence classifier
//! (`router-train finetune-jailbreak`) is the other kind of `prompt_guard.model_id`: more
//! accurate, a second encoder pass, run by the service on its own worker ([`score_of`]).
//!
//! The guard reports the most likely jailbreak label and its probability; the policy compares
//! it with the threshold (`categories[].jailbreak_threshold`, `prompt_guard.threshold`, the
//! head's own calibrated threshold, 0.5, in that order) and blocks.

use std::path::Path;
use std::sync::Mutex;

use anyhow::{bail, Context, Result};
use tracing::{info, warn};

use crate::config::PromptGuardConfig;
use crate::model::head::EmbeddingHead;
use crate::policy::GuardScore;
use crate::CpuBackend;

/// Labels of a head's benign class (any other label is a kind of jailbreak), compared in
/// lower case.
pub const BENIGN_LABELS: &[&str] = &["benign", "safe", "normal", "legitimate", "no_jailbreak", "negative", "0"];

/// Scores prompt embeddings for jailbreak attempts.
pub trait JailbreakDetector: Send + Sync {
    fn score(&self, embedding: &[f32]) -> Result<GuardScore>;
}

/// The trained head, on the CPU backend (it is a few small matrices).
pub struct HeadDetector {
    head: Mutex<EmbeddingHead<CpuBackend>>,
    labels: Vec<String>,
    /// Class indices that count as jailbreak.
    positive: Vec<usize>,
    threshold: Option<f32>,
    input_dim: usize,
}

impl HeadDetector {
    /// Loads a head directory; `dim` is the router's embedding size.
    pub fn load(dir: &Path, dim: usize) -> Result<Self> {
        let (head, meta) = EmbeddingHead::<CpuBackend>::load(dir, &Default::default())?;
        if meta.input_dim != dim {
            bail!(
                "head input_dim {} does not match the embedding model's size {dim} (encoder `{}`)",
                meta.input_dim,
                meta.encoder
            );
        }
        let labels = meta.labels()?;
        let positive = positive_labels(&labels, meta.positive_label.as_deref())?;
        Ok(Self { head: Mutex::new(head), labels, positive, threshold: meta.threshold, input_dim: dim })
    }

    pub fn labels(&self) -> &[String] {
        &self.labels
    }

    /// The head's own threshold (chosen when it was trained), if it has one.
    pub fn threshold(&self) -> Option<f32> {
        self.threshold
    }
}

impl JailbreakDetector for HeadDetector {
    fn score(&self, embedding: &[f32]) -> Result<GuardScore> {
        if embedding.len() != self.input_dim {
            bail!("embedding of size {}, the head takes {}", embedding.len(), self.input_dim);
        }
        let logits = {
            let head = self.head.lock().unwrap_or_else(|e| e.into_inner());
            head.logits_of(&[embedding.to_vec()], &Default::default())?
        };
        let probs = softmax(&logits[0]);
        Ok(best_positive(&self.labels, &self.positive, &probs, self.threshold))
    }
}

/// Class indices that count as jailbreak: `positive_label` if given, else every label that is
/// not a benign one; an error when that does not split the labels.
pub fn positive_labels(labels: &[String], positive_label: Option<&str>) -> Result<Vec<usize>> {
    let positive: Vec<usize> = match positive_label {
        Some(p) => match labels.iter().position(|l| l == p) {
            Some(i) => vec![i],
            None => bail!("positive_label `{p}` is not one of the labels {labels:?}"),
        },
        None => (0..labels.len())
            .filter(|&i| !BENIGN_LABELS.contains(&labels[i].to_lowercase().as_str()))
            .collect(),
    };
    if positive.is_empty() || positive.len() == labels.len() {
        bail!("cannot tell the jailbreak labels from the benign ones in {labels:?}");
    }
    Ok(positive)
}

/// The guard's verdict from class probabilities: the most likely jailbreak label.
pub fn score_of(labels: &[String], probs: &[f32], head_threshold: Option<f32>) -> Result<GuardScore> {
    if probs.len() != labels.len() {
        bail!("{} probabilities for {} labels", probs.len(), labels.len());
    }
    Ok(best_positive(labels, &positive_labels(labels, None)?, probs, head_threshold))
}

fn best_positive(labels: &[String], positive: &[usize], probs: &[f32], head_threshold: Option<f32>) -> GuardScore {
    let best = positive
        .iter()
        .copied()
        .max_by(|&a, &b| probs[a].total_cmp(&probs[b]))
        .expect("at least one jailbreak label");
    GuardScore { label: labels[best].clone(), probability: probs[best], head_threshold }
}

pub fn softmax(logits: &[f32]) -> Vec<f32> {
    let m = logits.iter().copied().fold(f32::MIN, f32::max);
    let e: Vec<f32> = logits.iter().map(|x| (x - m).exp()).collect();
    let s: f32 = e.iter().sum();
    e.iter().map(|x| x / s).collect()
}

/// Calibrated probabilities: the softmax of `logits` divided by a fitted `temperature`.
pub fn calibrated(logits: &[f32], temperature: f32) -> Vec<f32> {
    softmax(&logits.iter().map(|v| v / temperature).collect::<Vec<_>>())
}

/// The guard of a config: `None` ("not configured") when `prompt_guard.model_id` is empty or
/// names a directory that does not exist; an error when the directory is not a usable head.
/// The head is loaded even while `prompt_guard.enabled` is false, so a reload can switch the
/// guard on.
pub fn load(cfg: &PromptGuardConfig, dim: usize) -> Result<Option<HeadDetector>> {
    let Some(dir) = cfg.model_id.as_ref().filter(|p| !p.as_os_str().is_empty()) else {
        if cfg.enabled {
            warn!("prompt_guard: no model_id; jailbreak guard not configured");
        }
        return Ok(None);
    };
    if !dir.exists() {
        warn!(model = %dir.display(), "prompt_guard.model_id: not found; jailbreak guard not configured");
        return Ok(None);
    }
    if crate::category_head::is_sequence_classifier(dir) {
        // A fine-tuned classifier of the text: the service runs it on its own worker.
        return Ok(None);
    }
    let d = HeadDetector::load(dir, dim).with_context(|| format!("prompt_guard.model_id: {}", dir.display()))?;
    info!(model = %dir.display(), labels = ?d.labels, enabled = cfg.enabled, "jailbreak guard loaded");
    Ok(Some(d))
}
