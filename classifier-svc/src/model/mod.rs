//! BERT-family encoders on burn, generic over the backend.
//!
//! Each architecture follows burn's idiom (`XxxConfig::init(&device)` → module → `forward`);
//! [`hf`] fills such a module from an HF checkpoint (and writes one) through the module's
//! name mapping, and [`load`] reads a model directory into a [`Model`], apart from the model
//! code.

pub mod bert;
pub mod common;
mod cpu_kernels;
pub mod head;
pub mod hf;
pub mod load;
pub use load::LoadOptions;
pub mod modernbert;
pub mod shared;

use anyhow::{bail, Result};
use burn::nn::Linear;
use burn::tensor::{backend::Backend, Int, Tensor, TensorData};

use crate::tokenize::TextTokenizer;
use bert::{Bert, BertClassificationHead};
use modernbert::{ModernBert, ModernBertHead};

/// What a checkpoint is for, from `architectures` in `config.json`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Task {
    /// Plain encoder: mean-pooled, L2-normalised sentence embeddings.
    Embedding,
    SequenceClassification,
    TokenClassification,
}

pub enum Encoder<B: Backend> {
    Bert(Bert<B>),
    ModernBert(ModernBert<B>),
}

pub enum Head<B: Backend> {
    /// Embedding models: no head.
    None,
    /// The head of a [`bert::BertForSequenceClassification`].
    BertSequence(BertClassificationHead<B>),
    BertToken {
        classifier: Linear<B>,
    },
    ModernBertSequence {
        head: ModernBertHead<B>,
        classifier: Linear<B>,
        mean_pooling: bool,
    },
    ModernBertToken {
        head: ModernBertHead<B>,
        classifier: Linear<B>,
    },
}

/// A loaded model: encoder, head, tokenizer and label names.
pub struct Model<B: Backend> {
    pub encoder: Encoder<B>,
    pub head: Head<B>,
    pub task: Task,
    /// Label names by class index (`id2label`); empty for embedding models.
    pub labels: Vec<String>,
    pub tokenizer: TextTokenizer,
    pub hidden_size: usize,
    /// ModernBERT: half-width of the local attention window.
    pub half_window: Option<usize>,
    pub pad_id: u32,
    /// Sequence lengths batches are padded up to (GPU backends compile kernels per shape, so
    /// a few buckets keep the set of shapes small). Empty: pad to the longest text only.
    pub seq_buckets: Vec<usize>,
    pub device: B::Device,
}

/// Token ids of a batch, right-padded to the longest sequence.
#[derive(Debug, Clone)]
pub struct Batch {
    pub ids: Vec<i64>,
    pub lens: Vec<usize>,
    pub seq_len: usize,
}

impl Batch {
    pub fn new<E: AsRef<[u32]>>(encodings: &[E], pad_id: u32) -> Self {
        Self::bucketed(encodings, pad_id, &[])
    }

    /// Pads to the smallest bucket that fits the longest text (or to that text's length when
    /// no bucket fits).
    pub fn bucketed<E: AsRef<[u32]>>(encodings: &[E], pad_id: u32, buckets: &[usize]) -> Self {
        let longest = encodings.iter().map(|e| e.as_ref().len()).max().unwrap_or(0).max(1);
        let seq_len = buckets
            .iter()
            .copied()
            .filter(|&b| b >= longest)
            .min()
            .unwrap_or(longest);
        let mut ids = Vec::with_capacity(encodings.len() * seq_len);
        let mut lens = Vec::with_capacity(encodings.len());
        for e in encodings {
            let e = e.as_ref();
            ids.extend(e.iter().map(|&t| t as i64));
            ids.extend(std::iter::repeat_n(pad_id as i64, seq_len - e.len()));
            lens.push(e.len().max(1));
        }
        Self { ids, lens, seq_len }
    }

    pub fn size(&self) -> usize {
        self.lens.len()
    }

    fn padded(&self) -> bool {
        self.lens.iter().any(|&l| l < self.seq_len)
    }

    /// Token ids `[B, S]`.
    pub fn ids<B: Backend>(&self, device: &B::Device) -> Tensor<B, 2, Int> {
        Tensor::from_data(TensorData::new(self.ids.clone(), [self.size(), self.seq_len]), device)
    }

    /// The additive bias masking the padding (see [`attention_bias`]); `None` when nothing is
    /// padded.
    pub fn padding_bias<B: Backend>(&self, device: &B::Device) -> Option<Tensor<B, 4>> {
        self.padded().then(|| attention_bias(&self.lens, self.seq_len, None, device))
    }
}

/// Additive score bias for masked keys. Finite, so a fully masked row cannot produce NaNs.
const MASKED: f32 = -1.0e30;

/// `[B, 1, S, S]` additive bias for sequences of `lens` tokens padded to `s`: keys past each
/// sequence's length are masked (an empty sequence still attends to its first key); with
/// `window`, keys farther than `window` positions from the query are masked too.
pub fn attention_bias<B: Backend>(lens: &[usize], s: usize, window: Option<usize>, device: &B::Device) -> Tensor<B, 4> {
    let b = lens.len();
    let mut bias = vec![0f32; b * s * s];
    for (n, &len) in lens.iter().enumerate() {
        let len = len.max(1);
        for i in 0..s {
            let row = &mut bias[(n * s + i) * s..(n * s + i + 1) * s];
            for (j, v) in row.iter_mut().enumerate() {
                let outside = window.is_some_and(|w| i.abs_diff(j) > w);
                if j >= len || outside {
                    *v = MASKED;
                }
            }
        }
    }
    Tensor::from_data(TensorData::new(bias, [b, 1, s, s]), device)
}

impl<B: Backend> Model<B> {
    /// Token ids for each text (special tokens included, truncated to the max length).
    pub fn tokenize<S: AsRef<str>>(&self, texts: &[S]) -> Result<Vec<Vec<u32>>> {
        self.tokenizer.encode(texts)
    }

    /// A padded batch (bucketed when [`Model::seq_buckets`] is set).
    pub fn batch(&self, encodings: &[Vec<u32>]) -> Batch {
        Batch::bucketed(encodings, self.pad_id, &self.seq_buckets)
    }

    /// Last hidden state `[B, S, H]` of a padded batch.
    pub fn hidden(&self, batch: &Batch) -> Tensor<B, 3> {
        let s = batch.seq_len;
        let ids = batch.ids(&self.device);
        let padded = batch.padded();
        match &self.encoder {
            Encoder::Bert(m) => m.forward(ids, batch.padding_bias(&self.device)),
            Encoder::ModernBert(m) => {
                let w = self.half_window.unwrap_or(usize::MAX);
                let global = batch.padding_bias(&self.device);
                let local = (padded || s > w + 1)
                    .then(|| attention_bias(&batch.lens, s, Some(w), &self.device));
                m.forward(ids, global, local)
            }
        }
    }

    fn mask(&self, batch: &Batch) -> Tensor<B, 3> {
        let (b, s) = (batch.size(), batch.seq_len);
        let mut m = vec![0f32; b * s];
        for (n, &len) in batch.lens.iter().enumerate() {
            m[n * s..n * s + len].fill(1.0);
        }
        Tensor::from_data(TensorData::new(m, [b, s, 1]), &self.device)
    }

    /// Mean of the hidden states over the real tokens: `[B, H]`.
    fn mean_pool(&self, hidden: Tensor<B, 3>, batch: &Batch) -> Tensor<B, 2> {
        let [b, s, h] = hidden.dims();
        let summed = if batch.padded() {
            (hidden * self.mask(batch)).sum_dim(1)
        } else {
            hidden.sum_dim(1)
        };
        let _ = s;
        let lens: Vec<f32> = batch.lens.iter().map(|&l| l as f32).collect();
        let lens = Tensor::<B, 2>::from_data(TensorData::new(lens, [b, 1]), &self.device);
        summed.reshape([b, h]) / lens
    }

    /// Mean-pooled, L2-normalised embeddings of an already tokenized batch.
    pub fn embed_batch(&self, batch: &Batch) -> Result<Vec<Vec<f32>>> {
        self.pooled_embeddings(self.hidden(batch), batch)
    }

    /// Mean-pooled, L2-normalised embeddings from the last hidden state of `batch`.
    pub fn pooled_embeddings(&self, hidden: Tensor<B, 3>, batch: &Batch) -> Result<Vec<Vec<f32>>> {
        let pooled = self.mean_pool(hidden, batch);
        let h = pooled.dims()[1];
        let flat = to_vec(pooled)?;
        Ok(flat
            .chunks_exact(h)
            .map(|v| {
                let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
                v.iter().map(|x| x / norm).collect()
            })
            .collect())
    }

    /// Mean-pooled, L2-normalised sentence embeddings.
    pub fn embed<S: AsRef<str>>(&self, texts: &[S]) -> Result<Vec<Vec<f32>>> {
        let enc = self.tokenize(texts)?;
        self.embed_batch(&self.batch(&enc))
    }

    /// Sequence-classification logits, one row per text.
    pub fn classify<S: AsRef<str>>(&self, texts: &[S]) -> Result<Vec<Vec<f32>>> {
        let batch = self.batch(&self.tokenize(texts)?);
        let hidden = self.hidden(&batch);
        let logits = match &self.head {
            Head::BertSequence(head) => head.forward(hidden),
            Head::ModernBertSequence { head, classifier, mean_pooling } => {
                let pooled = if *mean_pooling {
                    self.mean_pool(hidden, &batch)
                } else {
                    let [b, _, h] = hidden.dims();
                    hidden.narrow(1, 0, 1).reshape([b, h])
                };
                classifier.forward(head.forward(pooled))
            }
            _ => bail!("this model has no sequence-classification head ({:?})", self.task),
        };
        let n = logits.dims()[1];
        Ok(to_vec(logits)?.chunks_exact(n).map(|c| c.to_vec()).collect())
    }

    /// Token-classification logits: per text, one row per token (special tokens included).
    pub fn classify_tokens<S: AsRef<str>>(&self, texts: &[S]) -> Result<Vec<Vec<Vec<f32>>>> {
        self.token_logits(&self.batch(&self.tokenize(texts)?))
    }

    /// Token-classification logits of an already tokenized batch: per text, one row per real
    /// token.
    pub fn token_logits(&self, batch: &Batch) -> Result<Vec<Vec<Vec<f32>>>> {
        let hidden = self.hidden(batch);
        let logits = match &self.head {
            Head::BertToken { classifier } => classifier.forward(hidden),
            Head::ModernBertToken { head, classifier } => classifier.forward(head.forward(hidden)),
            _ => bail!("this model has no token-classification head ({:?})", self.task),
        };
        let [_, s, n] = logits.dims();
        let flat = to_vec(logits)?;
        Ok(batch
            .lens
            .iter()
            .enumerate()
            .map(|(b, &len)| {
                (0..len)
                    .map(|t| flat[(b * s + t) * n..(b * s + t + 1) * n].to_vec())
                    .collect()
            })
            .collect())
    }
}

fn to_vec<B: Backend, const D: usize>(t: Tensor<B, D>) -> Result<Vec<f32>> {
    t.into_data()
        .convert::<f32>()
        .into_vec::<f32>()
        .map_err(|e| anyhow::anyhow!("reading tensor back: {e:?}"))
}


#[cfg(test)]
mod tests {
    use super::*;

    type B = crate::CpuBackend;

    #[test]
    fn padding_is_masked_and_an_empty_text_attends_to_one_key() {
        let device = Default::default();
        let batch = Batch::bucketed(&[&[2u32, 7, 3][..], &[]], 0, &[4]);
        assert_eq!((batch.seq_len, batch.lens.as_slice()), (4, &[3, 1][..]));
        assert_eq!(batch.ids, [2, 7, 3, 0, 0, 0, 0, 0]);
        let bias = to_vec(batch.padding_bias::<B>(&device).expect("padded")).unwrap();
        assert_eq!(&bias[..4], &[0.0, 0.0, 0.0, MASKED]);
        assert_eq!(&bias[16..20], &[0.0, MASKED, MASKED, MASKED]);
        assert!(Batch::new(&[[1u32, 2]], 0).padding_bias::<B>(&device).is_none(), "nothing padded, no bias");
    }
}
