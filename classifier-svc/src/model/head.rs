//! Classification heads on frozen sentence embeddings (`architecture: EmbeddingHead`).
//!
//! A head maps the mean-pooled, L2-normalised embedding of an encoder (e.g. all-MiniLM-L6-v2,
//! `input_dim` 384) through zero or more hidden layers (`Linear → ReLU → Dropout`) to one logit
//! per label. Heads are trained by `router-train` and saved as a model directory:
//!
//! - `config.json`: [`HeadMeta`] (architecture, encoder, `input_dim`, `hidden_sizes`,
//!   `id2label`, `label2id`, optional decision threshold for binary heads);
//! - `model.safetensors`: `layers.{i}.weight` / `layers.{i}.bias` for the hidden layers and
//!   `classifier.weight` / `classifier.bias`, weights as `[out, in]` (PyTorch `nn.Linear`
//!   layout), f32;
//! - `labels.txt`: the label names, one a line, by class index.
//!
//! The server loads a head with [`EmbeddingHead::load`] and runs it on the embeddings it
//! already computes with the encoder named in `config.json`: `forward` gives logits, and
//! [`EmbeddingHead::probabilities`] their softmax.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use burn::config::Config;
use burn::module::Module;
use burn::nn::{Dropout, DropoutConfig, Linear, LinearConfig, Relu};
use burn::tensor::activation::softmax;
use burn::tensor::{backend::Backend, Tensor, TensorData};
use serde::{Deserialize, Serialize};

use super::hf::{self, HfLayout};
use crate::weights::Weights;

/// The `architecture` value of a head's `config.json`.
pub const ARCHITECTURE: &str = "EmbeddingHead";

/// Shape of an [`EmbeddingHead`].
#[derive(Config, Debug)]
pub struct EmbeddingHeadConfig {
    /// Embedding size of the encoder (384 for all-MiniLM-L6-v2).
    pub input_dim: usize,
    /// Widths of the hidden layers; empty: a linear (logistic-regression) head.
    pub hidden_sizes: Vec<usize>,
    pub num_labels: usize,
    /// Dropout after each hidden layer (training only).
    #[config(default = 0.1)]
    pub dropout: f64,
}

/// `embeddings [B, input_dim]` → hidden layers → `logits [B, num_labels]`.
#[derive(Module, Debug)]
pub struct EmbeddingHead<B: Backend> {
    pub layers: Vec<Linear<B>>,
    pub classifier: Linear<B>,
    pub dropout: Dropout,
    pub activation: Relu,
}

impl EmbeddingHeadConfig {
    pub fn init<B: Backend>(&self, device: &B::Device) -> EmbeddingHead<B> {
        let mut layers = Vec::with_capacity(self.hidden_sizes.len());
        let mut d_in = self.input_dim;
        for &h in &self.hidden_sizes {
            layers.push(LinearConfig::new(d_in, h).init(device));
            d_in = h;
        }
        EmbeddingHead {
            layers,
            classifier: LinearConfig::new(d_in, self.num_labels).init(device),
            dropout: DropoutConfig::new(self.dropout).init(),
            activation: Relu::new(),
        }
    }
}

/// The `config.json` of a head directory.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct HeadMeta {
    pub architecture: String,
    /// Name of the encoder whose embeddings the head reads (a directory under `models/`).
    pub encoder: String,
    pub input_dim: usize,
    pub hidden_sizes: Vec<usize>,
    pub num_labels: usize,
    pub id2label: BTreeMap<String, String>,
    pub label2id: BTreeMap<String, usize>,
    /// Embedding input: mean-pooled, L2-normalised.
    #[serde(default = "default_pooling")]
    pub pooling: String,
    /// Maximum sequence length (tokens) the embeddings were computed with.
    #[serde(default)]
    pub max_seq_len: Option<usize>,
    /// Binary heads: the label that triggers an action (e.g. `jailbreak`), and the probability
    /// of that label at or above which it is predicted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub positive_label: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold: Option<f32>,
    /// Temperature that calibrates the probabilities (logits are divided by it before the
    /// softmax); fitted on a held-out split after training. `None`: 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f32>,
    /// Free-form provenance (data sources, seed, epochs, validation metrics).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub training: Option<serde_json::Value>,
}

fn default_pooling() -> String {
    "mean_l2".into()
}

impl HeadMeta {
    pub fn new(encoder: &str, input_dim: usize, hidden_sizes: Vec<usize>, labels: &[String]) -> Self {
        Self {
            architecture: ARCHITECTURE.into(),
            encoder: encoder.into(),
            input_dim,
            hidden_sizes,
            num_labels: labels.len(),
            id2label: labels.iter().enumerate().map(|(i, l)| (i.to_string(), l.clone())).collect(),
            label2id: labels.iter().enumerate().map(|(i, l)| (l.clone(), i)).collect(),
            pooling: default_pooling(),
            max_seq_len: None,
            positive_label: None,
            threshold: None,
            temperature: None,
            training: None,
        }
    }

    /// Label names by class index.
    pub fn labels(&self) -> Result<Vec<String>> {
        let mut labels = vec![None; self.num_labels];
        for (k, v) in &self.id2label {
            let i: usize = k.parse().map_err(|_| anyhow!("id2label key `{k}` is not an index"))?;
            let slot = labels
                .get_mut(i)
                .ok_or_else(|| anyhow!("id2label index {i} out of range (num_labels {})", self.num_labels))?;
            *slot = Some(v.clone());
        }
        labels
            .into_iter()
            .enumerate()
            .map(|(i, l)| l.ok_or_else(|| anyhow!("id2label has no label for index {i}")))
            .collect()
    }

    pub fn head_config(&self) -> EmbeddingHeadConfig {
        EmbeddingHeadConfig::new(self.input_dim, self.hidden_sizes.clone(), self.num_labels)
    }

    pub fn read(dir: &Path) -> Result<Self> {
        let path = dir.join("config.json");
        let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
        let meta: Self =
            serde_json::from_str(&text).with_context(|| format!("{} is not a head config", path.display()))?;
        if meta.architecture != ARCHITECTURE {
            bail!("{}: architecture `{}`, expected `{ARCHITECTURE}`", path.display(), meta.architecture);
        }
        meta.labels()?;
        Ok(meta)
    }
}

impl<B: Backend> EmbeddingHead<B> {
    /// Logits `[B, num_labels]` of embeddings `[B, input_dim]`.
    pub fn forward(&self, embeddings: Tensor<B, 2>) -> Tensor<B, 2> {
        let mut x = embeddings;
        for layer in &self.layers {
            x = self.dropout.forward(self.activation.forward(layer.forward(x)));
        }
        self.classifier.forward(x)
    }

    /// Softmax of the logits.
    pub fn probabilities(&self, embeddings: Tensor<B, 2>) -> Tensor<B, 2> {
        softmax(self.forward(embeddings), 1)
    }

    /// Logits of host embeddings (one row per text), read back to the host.
    pub fn logits_of(&self, embeddings: &[Vec<f32>], device: &B::Device) -> Result<Vec<Vec<f32>>> {
        if embeddings.is_empty() {
            return Ok(Vec::new());
        }
        let d = embeddings[0].len();
        let flat: Vec<f32> = embeddings.iter().flat_map(|e| e.iter().copied()).collect();
        let x = Tensor::<B, 2>::from_data(TensorData::new(flat, [embeddings.len(), d]), device);
        let logits = self.forward(x);
        let n = logits.dims()[1];
        let v = logits
            .into_data()
            .convert::<f32>()
            .into_vec::<f32>()
            .map_err(|e| anyhow!("reading logits back: {e:?}"))?;
        Ok(v.chunks_exact(n).map(|c| c.to_vec()).collect())
    }

    /// Loads a head directory (`config.json` + `model.safetensors`).
    pub fn load(dir: &Path, device: &B::Device) -> Result<(Self, HeadMeta)> {
        let meta = HeadMeta::read(dir)?;
        let w = Weights::open(&dir.join("model.safetensors"))?;
        let head = hf::load(meta.head_config().with_dropout(0.0).init(device), &w)?;
        Ok((head, meta))
    }

    /// Writes `config.json`, `model.safetensors` and `labels.txt` into `dir` (created).
    pub fn save(&self, dir: &Path, meta: &HeadMeta) -> Result<()> {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        hf::save(self, &dir.join("model.safetensors"), hf::SaveDtype::F32)?;
        let cfg = dir.join("config.json");
        std::fs::write(&cfg, serde_json::to_string_pretty(meta)? + "\n")
            .with_context(|| format!("cannot write {}", cfg.display()))?;
        let labels = meta.labels()?.join("\n") + "\n";
        std::fs::write(dir.join("labels.txt"), labels)
            .with_context(|| format!("cannot write labels.txt in {}", dir.display()))?;
        Ok(())
    }
}

/// Saved under the burn field names: `layers.{i}` and `classifier`.
impl<B: Backend> HfLayout for EmbeddingHead<B> {
    fn hf_names(path: &[&str]) -> Option<Vec<String>> {
        match path {
            ["layers", i] => Some(vec![format!("layers.{i}")]),
            ["classifier"] => Some(vec!["classifier".to_string()]),
            _ => None,
        }
    }
}
