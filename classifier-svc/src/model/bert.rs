//! BERT encoder (HF `BertModel` and its sequence / token classification heads).

use burn::module::Module;
use burn::nn::{Dropout, DropoutConfig, Embedding, EmbeddingConfig, Initializer, LayerNorm, LayerNormConfig, Linear, LinearConfig};
use burn::tensor::{backend::Backend, Int, Tensor};
use serde::Deserialize;

use super::common::{multi_head_attention, Activation};
use super::hf::HfLayout;

/// The fields of a HF BERT `config.json` that the forward pass needs.
#[derive(Debug, Clone, Deserialize)]
pub struct BertConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    pub max_position_embeddings: usize,
    #[serde(default = "default_type_vocab")]
    pub type_vocab_size: usize,
    #[serde(default = "default_eps")]
    pub layer_norm_eps: f64,
    #[serde(default)]
    pub hidden_act: Activation,
    /// Standard deviation of the normal initialisation of new weights.
    #[serde(default = "default_init_std")]
    pub initializer_range: f64,
    #[serde(default = "default_dropout")]
    pub hidden_dropout_prob: f64,
    /// Dropout before a classifier; `None`: `hidden_dropout_prob`.
    #[serde(default)]
    pub classifier_dropout: Option<f64>,
}

fn default_type_vocab() -> usize {
    2
}
fn default_eps() -> f64 {
    1e-12
}
fn default_init_std() -> f64 {
    0.02
}
fn default_dropout() -> f64 {
    0.1
}

#[derive(Module, Debug)]
pub struct BertEmbeddings<B: Backend> {
    pub word: Embedding<B>,
    pub position: Embedding<B>,
    pub token_type: Embedding<B>,
    pub norm: LayerNorm<B>,
}

#[derive(Module, Debug)]
pub struct BertLayer<B: Backend> {
    /// Query, key and value projections fused into one `[H, 3H]` linear.
    pub qkv: Linear<B>,
    pub attn_out: Linear<B>,
    pub attn_norm: LayerNorm<B>,
    pub intermediate: Linear<B>,
    pub output: Linear<B>,
    pub out_norm: LayerNorm<B>,
    pub n_heads: usize,
    #[module(skip)]
    pub act: Activation,
}

/// The encoder: embeddings and transformer layers (no pooler).
#[derive(Module, Debug)]
pub struct Bert<B: Backend> {
    pub embeddings: BertEmbeddings<B>,
    pub layers: Vec<BertLayer<B>>,
}

impl BertConfig {
    /// A new encoder initialised as HF initialises BERT: weights normal(0,
    /// `initializer_range`), biases zero, LayerNorms identity. The parameters are created
    /// lazily, so loading a checkpoint over them ([`super::hf::load`]) never computes them.
    pub fn init<B: Backend>(&self, device: &B::Device) -> Bert<B> {
        let h = self.hidden_size;
        let ln = || LayerNormConfig::new(h).with_epsilon(self.layer_norm_eps).init(device);
        let embedding = |n: usize| EmbeddingConfig::new(n, h).with_initializer(self.normal()).init(device);
        Bert {
            embeddings: BertEmbeddings {
                word: embedding(self.vocab_size),
                position: embedding(self.max_position_embeddings),
                token_type: embedding(self.type_vocab_size),
                norm: ln(),
            },
            layers: (0..self.num_hidden_layers)
                .map(|_| BertLayer {
                    qkv: self.linear(h, 3 * h, device),
                    attn_out: self.linear(h, h, device),
                    attn_norm: ln(),
                    intermediate: self.linear(h, self.intermediate_size, device),
                    output: self.linear(self.intermediate_size, h, device),
                    out_norm: ln(),
                    n_heads: self.num_attention_heads,
                    act: self.hidden_act,
                })
                .collect(),
        }
    }

    /// A new pooler (`tanh(dense(hidden[:, 0]))`).
    pub fn init_pooler<B: Backend>(&self, device: &B::Device) -> BertPooler<B> {
        BertPooler { dense: self.linear(self.hidden_size, self.hidden_size, device) }
    }

    /// Dropout before a classifier, as HF reads it from the config.
    pub fn classifier_dropout(&self) -> f64 {
        self.classifier_dropout.unwrap_or(self.hidden_dropout_prob)
    }

    fn normal(&self) -> Initializer {
        Initializer::Normal { mean: 0.0, std: self.initializer_range }
    }

    /// A linear with normal weights and a zero bias.
    pub fn linear<B: Backend>(&self, d_in: usize, d_out: usize, device: &B::Device) -> Linear<B> {
        let mut linear = LinearConfig::new(d_in, d_out).with_initializer(self.normal()).init(device);
        linear.bias = Some(Initializer::Zeros.init([d_out], device));
        linear
    }
}

impl<B: Backend> BertLayer<B> {
    pub fn forward(&self, x: Tensor<B, 3>, bias: Option<Tensor<B, 4>>) -> Tensor<B, 3> {
        // On flex with AVX-512 the whole layer runs in fused CPU kernels.
        if let Some(y) = super::cpu_kernels::bert_layer(self, &x, bias.as_ref()) {
            return y;
        }
        self.forward_ops(x, bias)
    }

    /// The layer in burn ops: every other backend, and the reference for the CPU kernels.
    pub fn forward_ops(&self, x: Tensor<B, 3>, bias: Option<Tensor<B, 4>>) -> Tensor<B, 3> {
        let ctx = multi_head_attention(self.qkv.forward(x.clone()), self.n_heads, None, bias);
        let x = self.attn_norm.forward(self.attn_out.forward(ctx) + x);
        let y = self
            .output
            .forward(self.act.forward(self.intermediate.forward(x.clone())));
        self.out_norm.forward(y + x)
    }
}

impl<B: Backend> BertLayer<B> {
    /// The layer's output at the first position only (`[B, 1, H]`), all positions attended:
    /// what a classifier that reads `[CLS]` needs from the last layer. Keys and values are
    /// projected for every token, the query, attention output and feed-forward for one, so
    /// the layer costs about a sixth of [`BertLayer::forward`].
    pub fn forward_first(&self, x: Tensor<B, 3>, bias: Option<Tensor<B, 4>>) -> Tensor<B, 3> {
        let [b, s, h] = x.dims();
        let (nh, hd) = (self.n_heads, h / self.n_heads);
        let w = self.qkv.weight.val();
        let bq = self.qkv.bias.as_ref().map(|p| p.val());
        let first = x.clone().narrow(1, 0, 1);
        let project = |input: Tensor<B, 3>, from: usize, width: usize| {
            let y = input.matmul(w.clone().narrow(1, from, width).unsqueeze::<3>());
            match &bq {
                Some(bias) => y + bias.clone().narrow(0, from, width).unsqueeze::<3>(),
                None => y,
            }
        };
        let q = project(first.clone(), 0, h).reshape([b, 1, nh, hd]).swap_dims(1, 2);
        let kv = project(x, h, 2 * h).reshape([b, s, 2, nh, hd]).permute([2, 0, 3, 1, 4]);
        let mut parts = kv.chunk(2, 0).into_iter().map(|t| t.squeeze_dim::<4>(0));
        let (k, v) = (parts.next().unwrap(), parts.next().unwrap());
        let bias = bias.map(|m| m.narrow(2, 0, 1));
        let ctx = burn::tensor::module::attention(q, k, v, None, bias, burn::tensor::ops::AttentionModuleOptions::default());
        let ctx = ctx.swap_dims(1, 2).reshape([b, 1, h]);
        let x = self.attn_norm.forward(self.attn_out.forward(ctx) + first);
        let y = self.output.forward(self.act.forward(self.intermediate.forward(x.clone())));
        self.out_norm.forward(y + x)
    }
}

impl<B: Backend> Bert<B> {
    /// `input_ids` `[B, S]`, `bias` an additive `[B, 1, S, S]` attention bias masking padding
    /// (`None` when nothing is padded). Returns the last hidden state `[B, S, H]`.
    pub fn forward(&self, input_ids: Tensor<B, 2, Int>, bias: Option<Tensor<B, 4>>) -> Tensor<B, 3> {
        let x = self.embed(input_ids);
        self.forward_layers(x, 0..self.layers.len(), bias)
    }

    /// The embedding block's output `[B, S, H]` (word + position + token type 0, normalised).
    pub fn embed(&self, input_ids: Tensor<B, 2, Int>) -> Tensor<B, 3> {
        let [_, s] = input_ids.dims();
        let e = &self.embeddings;
        // Positions 0..S plus token type 0, added as one [1, S, H] row block.
        let pos = e.position.weight.val().narrow(0, 0, s);
        let typ = e.token_type.weight.val().narrow(0, 0, 1);
        e.norm.forward(e.word.forward(input_ids) + (pos + typ).unsqueeze::<3>())
    }

    /// Runs the transformer layers `layers` (indices) on hidden states `x`: the lower layers
    /// alone give the activations that top-layer fine-tuning starts from.
    pub fn forward_layers(&self, mut x: Tensor<B, 3>, layers: std::ops::Range<usize>, bias: Option<Tensor<B, 4>>) -> Tensor<B, 3> {
        for layer in &self.layers[layers] {
            x = layer.forward(x, bias.clone());
        }
        x
    }
}

/// BERT's pooler: `tanh(dense(hidden[:, 0]))`.
#[derive(Module, Debug)]
pub struct BertPooler<B: Backend> {
    pub dense: Linear<B>,
}

impl<B: Backend> BertPooler<B> {
    pub fn forward(&self, hidden: Tensor<B, 3>) -> Tensor<B, 2> {
        let [b, _, h] = hidden.dims();
        let cls = hidden.narrow(1, 0, 1).reshape([b, h]);
        self.dense.forward(cls).tanh()
    }
}

/// Pooler, dropout (training only) and classifier over the encoder's hidden states.
#[derive(Module, Debug)]
pub struct BertClassificationHead<B: Backend> {
    pub pooler: BertPooler<B>,
    pub dropout: Dropout,
    pub classifier: Linear<B>,
}

impl<B: Backend> BertClassificationHead<B> {
    /// Hidden states `[B, S, H]` (only the first position is read) → logits `[B, K]`.
    pub fn forward(&self, hidden: Tensor<B, 3>) -> Tensor<B, 2> {
        self.classifier.forward(self.dropout.forward(self.pooler.forward(hidden)))
    }
}

/// HF `BertForSequenceClassification`: encoder → `[CLS]` → pooler → dropout → classifier.
#[derive(Module, Debug)]
pub struct BertForSequenceClassification<B: Backend> {
    pub bert: Bert<B>,
    pub head: BertClassificationHead<B>,
}

/// Shape of a [`BertForSequenceClassification`].
#[derive(Debug, Clone)]
pub struct BertForSequenceClassificationConfig {
    pub bert: BertConfig,
    pub num_labels: usize,
    /// Dropout before the classifier (training only).
    pub dropout: f64,
}

impl BertForSequenceClassificationConfig {
    /// With the dropout the encoder's config names.
    pub fn new(bert: BertConfig, num_labels: usize) -> Self {
        let dropout = bert.classifier_dropout();
        Self { bert, num_labels, dropout }
    }

    pub fn with_dropout(self, dropout: f64) -> Self {
        Self { dropout, ..self }
    }

    /// A new model initialised as HF initialises it (see [`BertConfig::init`]).
    pub fn init<B: Backend>(&self, device: &B::Device) -> BertForSequenceClassification<B> {
        let c = &self.bert;
        BertForSequenceClassification {
            bert: c.init(device),
            head: BertClassificationHead {
                pooler: c.init_pooler(device),
                dropout: DropoutConfig::new(self.dropout).init(),
                classifier: c.linear(c.hidden_size, self.num_labels, device),
            },
        }
    }
}

impl<B: Backend> BertForSequenceClassification<B> {
    /// `input_ids` `[B, S]`, `bias` the additive `[B, 1, S, S]` padding bias (`None` when
    /// nothing is padded) → logits `[B, K]`.
    pub fn forward(&self, input_ids: Tensor<B, 2, Int>, bias: Option<Tensor<B, 4>>) -> Tensor<B, 2> {
        self.head.forward(self.bert.forward(input_ids, bias))
    }
}

/// HF `BertForTokenClassification` (inference): encoder → per-token classifier.
#[derive(Module, Debug)]
pub struct BertForTokenClassification<B: Backend> {
    pub bert: Bert<B>,
    pub classifier: Linear<B>,
}

impl BertConfig {
    /// A new token classifier of `num_labels` outputs.
    pub fn init_token_classifier<B: Backend>(&self, num_labels: usize, device: &B::Device) -> BertForTokenClassification<B> {
        BertForTokenClassification { bert: self.init(device), classifier: self.linear(self.hidden_size, num_labels, device) }
    }
}

// ------------------------------------------------------------------ checkpoint names

/// HF module of an encoder layer's burn module.
fn layer_module(name: &str) -> Option<&'static str> {
    Some(match name {
        "attn_out" => "attention.output.dense",
        "attn_norm" => "attention.output.LayerNorm",
        "intermediate" => "intermediate.dense",
        "output" => "output.dense",
        "out_norm" => "output.LayerNorm",
        _ => return None,
    })
}

impl<B: Backend> HfLayout for Bert<B> {
    fn hf_names(path: &[&str]) -> Option<Vec<String>> {
        let name = match path {
            ["embeddings", "word"] => "embeddings.word_embeddings".to_string(),
            ["embeddings", "position"] => "embeddings.position_embeddings".to_string(),
            ["embeddings", "token_type"] => "embeddings.token_type_embeddings".to_string(),
            ["embeddings", "norm"] => "embeddings.LayerNorm".to_string(),
            // HF's three attention projections, fused into one linear.
            ["layers", i, "qkv"] => {
                return Some(
                    ["query", "key", "value"]
                        .iter()
                        .map(|p| format!("bert.encoder.layer.{i}.attention.self.{p}"))
                        .collect(),
                )
            }
            ["layers", i, module] => format!("encoder.layer.{i}.{}", layer_module(module)?),
            _ => return None,
        };
        Some(vec![format!("bert.{name}")])
    }
}

impl<B: Backend> HfLayout for BertPooler<B> {
    fn hf_names(path: &[&str]) -> Option<Vec<String>> {
        matches!(path, ["dense"]).then(|| vec!["bert.pooler.dense".to_string()])
    }
}

impl<B: Backend> HfLayout for BertForSequenceClassification<B> {
    fn hf_names(path: &[&str]) -> Option<Vec<String>> {
        match path {
            ["bert", rest @ ..] => Bert::<B>::hf_names(rest),
            ["head", "pooler", rest @ ..] => BertPooler::<B>::hf_names(rest),
            ["head", "classifier"] => Some(vec!["classifier".to_string()]),
            _ => None,
        }
    }
}

impl<B: Backend> HfLayout for BertForTokenClassification<B> {
    fn hf_names(path: &[&str]) -> Option<Vec<String>> {
        match path {
            ["bert", rest @ ..] => Bert::<B>::hf_names(rest),
            ["classifier"] => Some(vec!["classifier".to_string()]),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::Distribution;

    type B = crate::CpuBackend;

    #[test]
    fn the_first_position_alone_matches_the_full_layer() {
        let device = Default::default();
        let config = BertConfig {
            vocab_size: 16,
            hidden_size: 32,
            num_hidden_layers: 1,
            num_attention_heads: 4,
            intermediate_size: 64,
            max_position_embeddings: 16,
            type_vocab_size: 2,
            layer_norm_eps: 1e-12,
            hidden_act: Activation::Gelu,
            initializer_range: 0.02,
            hidden_dropout_prob: 0.1,
            classifier_dropout: None,
        };
        let layer = &config.init::<B>(&device).layers[0];
        let x = Tensor::<B, 3>::random([2, 5, 32], Distribution::Normal(0.0, 1.0), &device);
        // The second row is padded after 3 tokens.
        let mut bias = vec![0f32; 2 * 5 * 5];
        for i in 0..5 {
            bias[(5 + i) * 5 + 3..(5 + i + 1) * 5].fill(-1.0e30);
        }
        let bias = Tensor::<B, 4>::from_data(burn::tensor::TensorData::new(bias, [2, 1, 5, 5]), &device);
        let full = layer.forward(x.clone(), Some(bias.clone())).narrow(1, 0, 1);
        let first = layer.forward_first(x, Some(bias));
        let diff = (full - first).abs().max().into_scalar();
        assert!(diff < 1e-4, "max |difference| {diff}");
    }
}
