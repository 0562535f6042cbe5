//! Building models from HF-format directories: `config.json`, `model.safetensors`,
//! `tokenizer.json`.

use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use burn::tensor::backend::Backend;
use serde_json::Value;

use super::bert::{Bert, BertConfig, BertEmbeddings, BertLayer, BertPooler};
use super::modernbert::{ModernBert, ModernBertConfig, ModernBertHead, ModernBertLayer, Pooling};
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

impl<B: Backend> Model<B> {
    /// Loads a BERT or ModernBERT checkpoint from an HF-format directory.
    pub fn load(dir: &Path, options: &LoadOptions, device: &B::Device) -> Result<Self> {
        let cfg_path = dir.join("config.json");
        let text = std::fs::read_to_string(&cfg_path)
            .with_context(|| format!("cannot read {}", cfg_path.display()))?;
        let config: Value = serde_json::from_str(&text)
            .with_context(|| format!("{} is not valid JSON", cfg_path.display()))?;
        let model_type = config
            .get("model_type")
            .and_then(|m| m.as_str())
            .ok_or_else(|| anyhow!("{}: missing `model_type`", cfg_path.display()))?
            .to_string();
        let task = options.task.unwrap_or_else(|| task_of(&config));
        let labels = match task {
            Task::Embedding => Vec::new(),
            _ => labels_of(&config)?,
        };
        let pad_id = config
            .get("pad_token_id")
            .and_then(|p| p.as_u64())
            .unwrap_or(0) as u32;
        let weights_path = dir.join("model.safetensors");
        let tok_path = dir.join("tokenizer.json");
        if !tok_path.exists() {
            bail!("missing tokenizer file {}", tok_path.display());
        }
        let parse_err = |e: serde_json::Error| anyhow!("{}: {e}", cfg_path.display());
        let (encoder, head, hidden_size, max_pos, half_window) = match model_type.as_str() {
            "bert" => {
                let cfg: BertConfig = serde_json::from_value(config.clone()).map_err(parse_err)?;
                let w = Weights::open(&weights_path)?.with_prefixes(&["bert.", ""]);
                let encoder = load_bert(&cfg, &w, device)?;
                let n = labels.len();
                let h = cfg.hidden_size;
                let head = match task {
                    Task::Embedding => Head::None,
                    Task::SequenceClassification => Head::BertSequence {
                        pooler: BertPooler {
                            dense: w.linear("pooler.dense", h, h, true, device)?,
                        },
                        classifier: w.linear("classifier", h, n, true, device)?,
                    },
                    Task::TokenClassification => Head::BertToken {
                        classifier: w.linear("classifier", h, n, true, device)?,
                    },
                };
                (Encoder::Bert(encoder), head, h, cfg.max_position_embeddings, None)
            }
            "modernbert" => {
                let cfg: ModernBertConfig =
                    serde_json::from_value(config.clone()).map_err(parse_err)?;
                let w = Weights::open(&weights_path)?.with_prefixes(&["model.", ""]);
                let encoder = load_modernbert(&cfg, &w, device)?;
                let h = cfg.hidden_size;
                let n = labels.len();
                let head = |w: &Weights| -> Result<ModernBertHead<B>> {
                    Ok(ModernBertHead {
                        dense: w.linear("head.dense", h, h, cfg.classifier_bias, device)?,
                        norm: w.layer_norm("head.norm", h, cfg.norm_eps, cfg.norm_bias, device)?,
                        act: cfg.classifier_activation,
                    })
                };
                let head = match task {
                    Task::Embedding => Head::None,
                    Task::SequenceClassification => Head::ModernBertSequence {
                        head: head(&w)?,
                        classifier: w.linear("classifier", h, n, true, device)?,
                        mean_pooling: cfg.classifier_pooling == Pooling::Mean,
                    },
                    Task::TokenClassification => Head::ModernBertToken {
                        head: head(&w)?,
                        classifier: w.linear("classifier", h, n, true, device)?,
                    },
                };
                let hw = cfg.half_window();
                (Encoder::ModernBert(encoder), head, h, cfg.max_position_embeddings, Some(hw))
            }
            other => bail!(
                "{}: unsupported model_type `{other}` (supported: bert, modernbert)",
                cfg_path.display()
            ),
        };
        let tokenizer = TextTokenizer::load(&tok_path, options.max_len, max_pos)?;
        Ok(Self {
            encoder,
            head,
            task,
            labels,
            tokenizer,
            hidden_size,
            half_window,
            pad_id,
            seq_buckets: Vec::new(),
            device: device.clone(),
        })
    }
}

fn load_bert<B: Backend>(cfg: &BertConfig, w: &Weights, device: &B::Device) -> Result<Bert<B>> {
    let h = cfg.hidden_size;
    let eps = cfg.layer_norm_eps;
    let embeddings = BertEmbeddings {
        word: w.embedding("embeddings.word_embeddings", cfg.vocab_size, h, device)?,
        position: w.embedding(
            "embeddings.position_embeddings",
            cfg.max_position_embeddings,
            h,
            device,
        )?,
        token_type: w.embedding("embeddings.token_type_embeddings", cfg.type_vocab_size, h, device)?,
        norm: w.layer_norm("embeddings.LayerNorm", h, eps, true, device)?,
    };
    let layers = (0..cfg.num_hidden_layers)
        .map(|i| {
            let p = format!("encoder.layer.{i}");
            let a = format!("{p}.attention.self");
            Ok(BertLayer {
                qkv: w.linear_fused(
                    &[&format!("{a}.query"), &format!("{a}.key"), &format!("{a}.value")],
                    h,
                    h,
                    true,
                    device,
                )?,
                attn_out: w.linear(&format!("{p}.attention.output.dense"), h, h, true, device)?,
                attn_norm: w.layer_norm(&format!("{p}.attention.output.LayerNorm"), h, eps, true, device)?,
                intermediate: w.linear(
                    &format!("{p}.intermediate.dense"),
                    h,
                    cfg.intermediate_size,
                    true,
                    device,
                )?,
                output: w.linear(&format!("{p}.output.dense"), cfg.intermediate_size, h, true, device)?,
                out_norm: w.layer_norm(&format!("{p}.output.LayerNorm"), h, eps, true, device)?,
                n_heads: cfg.num_attention_heads,
                act: cfg.hidden_act,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    if h % cfg.num_attention_heads != 0 {
        bail!("config.json: hidden_size {h} is not a multiple of num_attention_heads {}", cfg.num_attention_heads);
    }
    Ok(Bert { embeddings, layers })
}

fn load_modernbert<B: Backend>(
    cfg: &ModernBertConfig,
    w: &Weights,
    device: &B::Device,
) -> Result<ModernBert<B>> {
    let h = cfg.hidden_size;
    let (eps, nb) = (cfg.norm_eps, cfg.norm_bias);
    if h % cfg.num_attention_heads != 0 {
        bail!("config.json: hidden_size {h} is not a multiple of num_attention_heads {}", cfg.num_attention_heads);
    }
    let layers = (0..cfg.num_hidden_layers)
        .map(|i| {
            let p = format!("layers.{i}");
            Ok(ModernBertLayer {
                attn_norm: if i == 0 {
                    None
                } else {
                    Some(w.layer_norm(&format!("{p}.attn_norm"), h, eps, nb, device)?)
                },
                wqkv: w.linear(&format!("{p}.attn.Wqkv"), h, 3 * h, cfg.attention_bias, device)?,
                wo: w.linear(&format!("{p}.attn.Wo"), h, h, cfg.attention_bias, device)?,
                mlp_norm: w.layer_norm(&format!("{p}.mlp_norm"), h, eps, nb, device)?,
                wi: w.linear(&format!("{p}.mlp.Wi"), h, 2 * cfg.intermediate_size, cfg.mlp_bias, device)?,
                mlp_wo: w.linear(&format!("{p}.mlp.Wo"), cfg.intermediate_size, h, cfg.mlp_bias, device)?,
                n_heads: cfg.num_attention_heads,
                global: cfg.is_global(i),
                act: cfg.hidden_activation,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(ModernBert {
        tok_embeddings: w.embedding("embeddings.tok_embeddings", cfg.vocab_size, h, device)?,
        embed_norm: w.layer_norm("embeddings.norm", h, eps, nb, device)?,
        layers,
        final_norm: w.layer_norm("final_norm", h, eps, nb, device)?,
        rope_global: cfg.rope(true, device),
        rope_local: cfg.rope(false, device),
    })
}
