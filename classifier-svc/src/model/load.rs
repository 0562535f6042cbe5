//! Building models from HF-format directories: `config.json`, `model.safetensors`,
//! `tokenizer.json`.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use burn::tensor::backend::Backend;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::bert::{
    BertClassificationHead, BertConfig, BertForSequenceClassification, BertForSequenceClassificationConfig,
    BertForTokenClassification,
};
use super::hf;
use super::modernbert::{ModernBertClassifier, ModernBertConfig, Pooling};
use super::{Encoder, Head, Model, Task};
use crate::tokenize::TextTokenizer;
use crate::weights::Weights;

/// Options for [`Model::load`].
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    /// Maximum sequence length (special tokens included); default: the tokenizer's truncation
    /// length, bounded by the model's position limit.
    pub max_len: Option<usize>,
    /// Overrides the task read from `architectures` (e.g. use a classifier's encoder for
    /// embeddings).
    pub task: Option<Task>,
}

fn task_of(config: &Value) -> Task {
    let arch = config
        .get("architectures")
        .and_then(|a| a.get(0))
        .and_then(|a| a.as_str())
        .unwrap_or("");
    if arch.ends_with("ForSequenceClassification") {
        Task::SequenceClassification
    } else if arch.ends_with("ForTokenClassification") {
        Task::TokenClassification
    } else {
        Task::Embedding
    }
}

fn labels_of(config: &Value) -> Result<Vec<String>> {
    let Some(map) = config.get("id2label").and_then(|m| m.as_object()) else {
        if let Some(n) = config.get("num_labels").and_then(|n| n.as_u64()) {
            return Ok((0..n).map(|i| format!("LABEL_{i}")).collect());
        }
        bail!("config.json: classifier without `id2label`");
    };
    let mut labels = vec![String::new(); map.len()];
    for (k, v) in map {
        let i: usize = k
            .parse()
            .map_err(|_| anyhow!("config.json: id2label key `{k}` is not an index"))?;
        let slot = labels
            .get_mut(i)
            .ok_or_else(|| anyhow!("config.json: id2label index {i} out of range"))?;
        *slot = v.as_str().unwrap_or_default().to_string();
    }
    Ok(labels)
}

/// An HF model directory: `config.json` (read here), `model.safetensors`, `tokenizer.json`.
pub struct Checkpoint {
    pub dir: PathBuf,
    pub config: Value,
    pub model_type: String,
}

impl Checkpoint {
    pub fn open(dir: &Path) -> Result<Self> {
        let path = dir.join("config.json");
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let config: Value = serde_json::from_str(&text)
            .with_context(|| format!("{} is not valid JSON", path.display()))?;
        let model_type = config
            .get("model_type")
            .and_then(|m| m.as_str())
            .ok_or_else(|| anyhow!("{}: missing `model_type`", path.display()))?
            .to_string();
        Ok(Self { dir: dir.to_path_buf(), config, model_type })
    }

    /// The typed view of `config.json` an architecture reads.
    pub fn config<T: DeserializeOwned>(&self) -> Result<T> {
        serde_json::from_value(self.config.clone())
            .map_err(|e| anyhow!("{}: {e}", self.dir.join("config.json").display()))
    }

    /// The BERT configuration; an error for other architectures.
    pub fn bert_config(&self) -> Result<BertConfig> {
        if self.model_type != "bert" {
            bail!("{}: model_type `{}`, expected bert", self.dir.display(), self.model_type);
        }
        let cfg: BertConfig = self.config()?;
        check_heads(cfg.hidden_size, cfg.num_attention_heads)?;
        Ok(cfg)
    }

    /// The weights, names under the base model's `prefix` also found without it.
    pub fn weights(&self, prefix: &str) -> Result<Weights> {
        Ok(Weights::open(&self.dir.join("model.safetensors"))?.with_base_prefix(prefix))
    }

    pub fn pad_id(&self) -> u32 {
        self.config.get("pad_token_id").and_then(|p| p.as_u64()).unwrap_or(0) as u32
    }

    /// The tokenizer, truncating to `max_len` (default: its own truncation length) within the
    /// model's `max_pos` positions.
    pub fn tokenizer(&self, max_len: Option<usize>, max_pos: usize) -> Result<TextTokenizer> {
        let path = self.dir.join("tokenizer.json");
        if !path.exists() {
            bail!("missing tokenizer file {}", path.display());
        }
        TextTokenizer::load(&path, max_len, max_pos)
    }
}

fn check_heads(hidden: usize, heads: usize) -> Result<()> {
    if hidden % heads != 0 {
        bail!("config.json: hidden_size {hidden} is not a multiple of num_attention_heads {heads}");
    }
    Ok(())
}

/// A BERT checkpoint (`BertModel` or `BertFor*`) as a new sequence classifier of `num_labels`
/// outputs: the encoder from the checkpoint, the pooler too when it has one, the classifier
/// new. Returns the model and whether the pooler is new. Seed the backend first: the new
/// weights come from its RNG when first used.
pub fn bert_for_fine_tuning<B: Backend>(
    checkpoint: &Checkpoint,
    num_labels: usize,
    dropout: f64,
    device: &B::Device,
) -> Result<(BertForSequenceClassification<B>, bool)> {
    let cfg = checkpoint.bert_config()?;
    let w = checkpoint.weights("bert.")?;
    let BertForSequenceClassification { bert, head } =
        BertForSequenceClassificationConfig::new(cfg, num_labels).with_dropout(dropout).init(device);
    let bert = hf::load(bert, &w)?;
    let (pooler, fresh) = hf::load_partial(head.pooler, &w)?;
    let new_pooler = !fresh.is_empty();
    Ok((BertForSequenceClassification { bert, head: BertClassificationHead { pooler, ..head } }, new_pooler))
}

impl<B: Backend> Model<B> {
    /// Loads a BERT or ModernBERT checkpoint from an HF-format directory.
    pub fn load(dir: &Path, options: &LoadOptions, device: &B::Device) -> Result<Self> {
        let checkpoint = Checkpoint::open(dir)?;
        let config = &checkpoint.config;
        let task = options.task.unwrap_or_else(|| task_of(config));
        let labels = match task {
            Task::Embedding => Vec::new(),
            _ => labels_of(config)?,
        };
        let n = labels.len();
        let (encoder, head, hidden_size, max_pos, half_window) = match checkpoint.model_type.as_str() {
            "bert" => {
                let cfg = checkpoint.bert_config()?;
                let w = checkpoint.weights("bert.")?;
                let (encoder, head) = match task {
                    Task::Embedding => (hf::load(cfg.init(device), &w)?, Head::None),
                    Task::SequenceClassification => {
                        let m = BertForSequenceClassificationConfig::new(cfg.clone(), n).init(device);
                        let BertForSequenceClassification { bert, head } = hf::load(m, &w)?;
                        (bert, Head::BertSequence(head))
                    }
                    Task::TokenClassification => {
                        let BertForTokenClassification { bert, classifier } =
                            hf::load(cfg.init_token_classifier(n, device), &w)?;
                        (bert, Head::BertToken { classifier })
                    }
                };
                (Encoder::Bert(encoder), head, cfg.hidden_size, cfg.max_position_embeddings, None)
            }
            "modernbert" => {
                let cfg: ModernBertConfig = checkpoint.config()?;
                check_heads(cfg.hidden_size, cfg.num_attention_heads)?;
                let w = checkpoint.weights("model.")?;
                let (encoder, head) = match task {
                    Task::Embedding => (hf::load(cfg.init(device), &w)?, Head::None),
                    _ => {
                        let ModernBertClassifier { model, head, classifier } =
                            hf::load(cfg.init_classifier(n, device), &w)?;
                        let head = match task {
                            Task::SequenceClassification => Head::ModernBertSequence {
                                head,
                                classifier,
                                mean_pooling: cfg.classifier_pooling == Pooling::Mean,
                            },
                            _ => Head::ModernBertToken { head, classifier },
                        };
                        (model, head)
                    }
                };
                let hw = cfg.half_window();
                (Encoder::ModernBert(encoder), head, cfg.hidden_size, cfg.max_position_embeddings, Some(hw))
            }
            other => bail!(
                "{}: unsupported model_type `{other}` (supported: bert, modernbert)",
                dir.join("config.json").display()
            ),
        };
        let tokenizer = checkpoint.tokenizer(options.max_len, max_pos)?;
        Ok(Self {
            encoder,
            head,
            task,
            labels,
            tokenizer,
            hidden_size,
            half_window,
            pad_id: checkpoint.pad_id(),
            seq_buckets: Vec::new(),
            device: device.clone(),
        })
    }
}
