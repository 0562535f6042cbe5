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
