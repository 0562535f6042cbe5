//! The sidecar's configuration: one YAML file (vLLM Semantic Router key names where they
//! exist) plus environment overrides `SR__<SECTION>__<KEY>` (e.g. `SR__SERVER__LISTEN`).

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Result};
use serde::{Deserialize, Serialize};

/// Environment variable prefix for overrides; `__` separates nested keys.
pub const ENV_PREFIX: &str = "SR";

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub server: ServerConfig,
    /// The sentence-embedding model used for category similarity and for `Embed`.
    pub bert_model: BertModelConfig,
    #[serde(default)]
    pub batching: BatchingConfig,
    #[serde(default)]
    pub classifier: ClassifierConfig,
    /// Model used when no category passes the threshold.
    pub default_model: String,
    pub categories: Vec<Category>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// gRPC listen address.
    pub listen: String,
    /// Prometheus `/metrics` listen address; empty disables it.
    pub metrics_listen: String,
    /// Shape buckets (sequence lengths) run once at start so the first requests are fast.
    pub warmup_seq_lens: Vec<usize>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:50051".into(),
            metrics_listen: "127.0.0.1:9190".into(),
            warmup_seq_lens: vec![16, 32, 64, 128],
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BertModelConfig {
    /// HF-format directory (config.json, model.safetensors, tokenizer.json), relative to the
    /// working directory.
    pub model_id: PathBuf,
    /// Maximum tokens per text, special tokens included (longer texts are truncated).
    #[serde(default = "d_max_seq_len")]
    pub max_seq_len: usize,
    /// `cpu` or `cuda` (the latter needs a build with the `cuda` feature).
    #[serde(default)]
    pub device: Device,
}

fn d_max_seq_len() -> usize {
    128
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum Device {
    #[default]
    Cpu,
    Cuda,
}

impl std::str::FromStr for Device {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "cpu" => Ok(Device::Cpu),
            "cuda" => Ok(Device::Cuda),
            other => bail!("unknown device `{other}` (expected cpu or cuda)"),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct BatchingConfig {
    /// Most texts in one forward pass.
    pub max_batch_size: usize,
    /// How long the first request of a batch waits for company, in microseconds.
    pub max_wait_micros: u64,
    /// Requests waiting beyond this many are refused with RESOURCE_EXHAUSTED.
    pub queue_capacity: usize,
}

impl Default for BatchingConfig {
    fn default() -> Self {
        Self {
            max_batch_size: 32,
            max_wait_micros: 1000,
            queue_capacity: 256,
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClassifierConfig {
    pub category_model: CategoryModelConfig,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct CategoryModelConfig {
    /// Minimum cosine similarity for a category to win.
    pub threshold: f32,
    /// How a category's examples are compared with the prompt.
    pub matching: Matching,
    /// Weight of the earlier turns in the prompt vector (0 ignores the context).
    pub context_weight: f32,
}

impl Default for CategoryModelConfig {
    fn default() -> Self {
        Self {
            threshold: 0.3,
            matching: Matching::Centroid,
            context_weight: 0.3,
        }
    }
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum Matching {
    /// Cosine with the normalised mean of the description and example embeddings.
    #[default]
    Centroid,
    /// Best cosine over the description and the individual examples.
    MaxSimilarity,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Category {
    pub name: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub examples: Vec<String>,
    pub model_scores: Vec<ModelScore>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ModelScore {
    pub model: String,
    pub score: f32,
    #[serde(default)]
    pub use_reasoning: bool,
}

impl Config {
    /// Reads the YAML file, applies `SR__...` environment overrides and validates.
    pub fn load(path: &Path) -> Result<Self> {
        if !path.exists() {
            bail!("config file {} not found", path.display());
        }
        let raw = config::Config::builder()
            .add_source(config::File::from(path).format(config::FileFormat::Yaml))
            .add_source(
                config::Environment::with_prefix(ENV_PREFIX)
                    .separator("__")
                    .try_parsing(true)
                    .list_separator(",")
                    .with_list_parse_key("server.warmup_seq_lens"),
            )
            .build()
            .map_err(|e| anyhow!("{}: {e}", path.display()))?;
        let cfg: Config = raw
            .try_deserialize()
            .map_err(|e| anyhow!("{}: {e}", path.display()))?;
        cfg.validate().map_err(|e| anyhow!("{}: {e}", path.display()))?;
        Ok(cfg)
    }

    /// Parses YAML text (no environment overrides) and validates.
    pub fn from_yaml(text: &str) -> Result<Self> {
        let raw = config::Config::builder()
            .add_source(config::File::from_str(text, config::FileFormat::Yaml))
            .build()?;
        let cfg: Config = raw.try_deserialize()?;
        cfg.validate()?;
        Ok(cfg)
    }

    pub fn validate(&self) -> Result<()> {
        self.listen_addr()?;
        self.metrics_addr()?;
        if self.bert_model.model_id.as_os_str().is_empty() {
            bail!("bert_model.model_id: must not be empty");
        }
        if self.bert_model.max_seq_len < 2 {
            bail!("bert_model.max_seq_len: must be at least 2, got {}", self.bert_model.max_seq_len);
        }
        let b = &self.batching;
        if b.max_batch_size == 0 {
            bail!("batching.max_batch_size: must be at least 1");
        }
        if b.queue_capacity == 0 {
            bail!("batching.queue_capacity: must be at least 1");
        }
        let c = &self.classifier.category_model;
        if !(-1.0..=1.0).contains(&c.threshold) {
            bail!("classifier.category_model.threshold: must be a cosine similarity in [-1, 1], got {}", c.threshold);
        }
        if !(0.0..1.0).contains(&c.context_weight) {
            bail!("classifier.category_model.context_weight: must be in [0, 1), got {}", c.context_weight);
        }
        if self.default_model.trim().is_empty() {
            bail!("default_model: must not be empty");
        }
        if self.categories.is_empty() {
            bail!("categories: at least one category is needed");
        }
        let mut names = HashSet::new();
        for (i, cat) in self.categories.iter().enumerate() {
            if cat.name.trim().is_empty() {
                bail!("categories[{i}].name: must not be empty");
            }
            if !names.insert(cat.name.as_str()) {
                bail!("categories[{i}].name: duplicate category `{}`", cat.name);
            }
            if cat.description.trim().is_empty() && cat.examples.is_empty() {
                bail!("categories[{i}] ({}): needs a description or examples", cat.name);
            }
            if cat.model_scores.is_empty() {
                bail!("categories[{i}].model_scores ({}): must not be empty", cat.name);
            }
            for (j, ms) in cat.model_scores.iter().enumerate() {
                if ms.model.trim().is_empty() {
                    bail!("categories[{i}].model_scores[{j}].model: must not be empty");
                }
                if !ms.score.is_finite() {
                    bail!("categories[{i}].model_scores[{j}].score: must be a finite number");
                }
            }
        }
        Ok(())
    }

    pub fn listen_addr(&self) -> Result<SocketAddr> {
        self.server
            .listen
            .parse()
            .map_err(|e| anyhow!("server.listen: `{}` is not a socket address: {e}", self.server.listen))
    }

    /// `None` when the metrics endpoint is disabled.
    pub fn metrics_addr(&self) -> Result<Option<SocketAddr>> {
        if self.server.metrics_listen.is_empty() {
            return Ok(None);
        }
        self.server.metrics_listen.parse().map(Some).map_err(|e| {
            anyhow!(
                "server.metrics_listen: `{}` is not a socket address: {e}",
                self.server.metrics_listen
            )
        })
    }
}
