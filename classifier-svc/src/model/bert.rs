//! BERT encoder (HF `BertModel` and its sequence / token classification heads).

use burn::module::Module;
use burn::nn::{Embedding, EmbeddingConfig, LayerNorm, LayerNormConfig, Linear, LinearConfig};
use burn::tensor::{backend::Backend, Int, Tensor};
use serde::Deserialize;

use super::common::{multi_head_attention, Activation};

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
}

fn default_type_vocab() -> usize {
    2
}
fn default_eps() -> f64 {
    1e-12
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
    /// A randomly initialised encoder with this configuration.
    pub fn init<B: Backend>(&self, device: &B::Device) -> Bert<B> {
        let h = self.hidden_size;
        let ln = || LayerNormConfig::new(h).with_epsilon(self.layer_norm_eps).init(device);
        Bert {
            embeddings: BertEmbeddings {
                word: EmbeddingConfig::new(self.vocab_size, h).init(device),
                position: EmbeddingConfig::new(self.max_position_embeddings, h).init(device),
                token_type: EmbeddingConfig::new(self.type_vocab_size, h).init(device),
                norm: ln(),
            },
            layers: (0..self.num_hidden_layers)
                .map(|_| BertLayer {
                    qkv: LinearConfig::new(h, 3 * h).init(device),
                    attn_out: LinearConfig::new(h, h).init(device),
                    attn_norm: ln(),
                    intermediate: LinearConfig::new(h, self.intermediate_size).init(device),
                    output: LinearConfig::new(self.intermediate_size, h).init(device),
                    out_norm: ln(),
                    n_heads: self.num_attention_heads,
                    act: self.hidden_act,
                })
                .collect(),
        }
    }
}

impl<B: Backend> BertLayer<B> {
    pub fn forward(&self, x: Tensor<B, 3>, bias: Option<Tensor<B, 4>>) -> Tensor<B, 3> {
        let ctx = multi_head_attention(self.qkv.forward(x.clone()), self.n_heads, None, bias);
        let x = self.attn_norm.forward(self.attn_out.forward(ctx) + x);
        let y = self
            .output
            .forward(self.act.forward(self.intermediate.forward(x.clone())));
        self.out_norm.forward(y + x)
    }
}

impl<B: Backend> Bert<B> {
    /// `input_ids` `[B, S]`, `bias` an additive `[B, 1, S, S]` attention bias masking padding
    /// (`None` when nothing is padded). Returns the last hidden state `[B, S, H]`.
    pub fn forward(&self, input_ids: Tensor<B, 2, Int>, bias: Option<Tensor<B, 4>>) -> Tensor<B, 3> {
        let [_, s] = input_ids.dims();
        let e = &self.embeddings;
        // Positions 0..S plus token type 0, added as one [1, S, H] row block.
        let pos = e.position.weight.val().narrow(0, 0, s);
        let typ = e.token_type.weight.val().narrow(0, 0, 1);
        let mut x = e.norm.forward(e.word.forward(input_ids) + (pos + typ).unsqueeze::<3>());
        for layer in &self.layers {
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
