//! ModernBERT encoder (HF `ModernBertModel`) and its prediction head.
//!
//! Pre-norm layers without LayerNorm bias, rotary position embeddings, attention alternating
//! between global layers and local sliding-window layers, and a GeGLU MLP.

use burn::module::Module;
use burn::nn::{Embedding, EmbeddingConfig, LayerNorm, LayerNormConfig, Linear, LinearConfig};
use burn::tensor::{backend::Backend, Int, Tensor, TensorData};
use serde::Deserialize;

use super::common::{multi_head_attention, rotary_tables, Activation};
use super::hf::HfLayout;

/// The fields of a HF ModernBERT `config.json` that the forward pass needs. Both the older
/// layout (`global_attn_every_n_layers`, `global_rope_theta`, `local_rope_theta`) and the newer
/// one (`layer_types`, `rope_parameters`) are understood.
#[derive(Debug, Clone, Deserialize)]
pub struct ModernBertConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    #[serde(default = "d_max_pos")]
    pub max_position_embeddings: usize,
    #[serde(default = "d_every")]
    pub global_attn_every_n_layers: usize,
    #[serde(default = "d_local")]
    pub local_attention: usize,
    #[serde(default = "d_global_theta")]
    pub global_rope_theta: f64,
    #[serde(default)]
    pub local_rope_theta: Option<f64>,
    #[serde(default)]
    pub layer_types: Option<Vec<String>>,
    #[serde(default)]
    pub rope_parameters: Option<serde_json::Value>,
    #[serde(default = "d_eps")]
    pub norm_eps: f64,
    #[serde(default)]
    pub norm_bias: bool,
    #[serde(default)]
    pub attention_bias: bool,
    #[serde(default)]
    pub mlp_bias: bool,
    #[serde(default)]
    pub classifier_bias: bool,
    #[serde(default)]
    pub hidden_activation: Activation,
    #[serde(default)]
    pub classifier_activation: Activation,
    #[serde(default)]
    pub classifier_pooling: Pooling,
}

/// How a sequence classifier reduces the hidden states to one vector.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Pooling {
    #[default]
    Cls,
    Mean,
}

fn d_max_pos() -> usize {
    8192
}
fn d_every() -> usize {
    3
}
fn d_local() -> usize {
    128
}
fn d_global_theta() -> f64 {
    160_000.0
}
fn d_eps() -> f64 {
    1e-5
}

impl ModernBertConfig {
    /// Whether layer `i` attends globally (otherwise: sliding window of `local_attention`).
    pub fn is_global(&self, i: usize) -> bool {
        match &self.layer_types {
            Some(types) => types.get(i).map(|t| t != "sliding_attention").unwrap_or(true),
            None => i % self.global_attn_every_n_layers.max(1) == 0,
        }
    }

    fn rope_theta(&self, global: bool) -> f64 {
        let key = if global { "full_attention" } else { "sliding_attention" };
        if let Some(theta) = self
            .rope_parameters
            .as_ref()
            .and_then(|p| p.get(key))
            .and_then(|p| p.get("rope_theta"))
            .and_then(|t| t.as_f64())
        {
            return theta;
        }
        if global {
            self.global_rope_theta
        } else {
            self.local_rope_theta.unwrap_or(self.global_rope_theta)
        }
    }

    /// Half-width of the local attention window: a local query at `i` sees keys `j` with
    /// `|i - j| <= window`.
    pub fn half_window(&self) -> usize {
        self.local_attention / 2
    }

    /// A randomly initialised encoder with this configuration.
    pub fn init<B: Backend>(&self, device: &B::Device) -> ModernBert<B> {
        let h = self.hidden_size;
        let ln = || {
            LayerNormConfig::new(h)
                .with_epsilon(self.norm_eps)
                .with_bias(self.norm_bias)
                .init(device)
        };
        ModernBert {
            tok_embeddings: EmbeddingConfig::new(self.vocab_size, h).init(device),
            embed_norm: ln(),
            layers: (0..self.num_hidden_layers)
                .map(|i| ModernBertLayer {
                    attn_norm: (i != 0).then(ln),
                    wqkv: LinearConfig::new(h, 3 * h)
                        .with_bias(self.attention_bias)
                        .init(device),
                    wo: LinearConfig::new(h, h).with_bias(self.attention_bias).init(device),
                    mlp_norm: ln(),
                    wi: LinearConfig::new(h, 2 * self.intermediate_size)
                        .with_bias(self.mlp_bias)
                        .init(device),
                    mlp_wo: LinearConfig::new(self.intermediate_size, h)
                        .with_bias(self.mlp_bias)
                        .init(device),
                    n_heads: self.num_attention_heads,
                    global: self.is_global(i),
                    act: self.hidden_activation,
                })
                .collect(),
            final_norm: ln(),
            rope_global: self.rope(true, device),
            rope_local: self.rope(false, device),
        }
    }

    /// Rotary (cos, sin) tables `[max_position_embeddings, head_dim]`.
    pub fn rope<B: Backend>(&self, global: bool, device: &B::Device) -> (Tensor<B, 2>, Tensor<B, 2>) {
        let hd = self.hidden_size / self.num_attention_heads;
        let n = self.max_position_embeddings;
        let (cos, sin) = rotary_tables(n, hd, self.rope_theta(global));
        (
            Tensor::from_data(TensorData::new(cos, [n, hd]), device),
            Tensor::from_data(TensorData::new(sin, [n, hd]), device),
        )
    }

    /// A new sequence or token classifier of `num_labels` outputs (both have this shape).
    pub fn init_classifier<B: Backend>(&self, num_labels: usize, device: &B::Device) -> ModernBertClassifier<B> {
        ModernBertClassifier {
            model: self.init(device),
            head: self.head_init(device),
            classifier: LinearConfig::new(self.hidden_size, num_labels).init(device),
        }
    }

    pub fn head_init<B: Backend>(&self, device: &B::Device) -> ModernBertHead<B> {
        let h = self.hidden_size;
        ModernBertHead {
            dense: LinearConfig::new(h, h).with_bias(self.classifier_bias).init(device),
            norm: LayerNormConfig::new(h)
                .with_epsilon(self.norm_eps)
                .with_bias(self.norm_bias)
                .init(device),
            act: self.classifier_activation,
        }
    }
}

#[derive(Module, Debug)]
pub struct ModernBertLayer<B: Backend> {
    /// Identity on the first layer (the embeddings are already normalised).
    pub attn_norm: Option<LayerNorm<B>>,
    pub wqkv: Linear<B>,
    pub wo: Linear<B>,
    pub mlp_norm: LayerNorm<B>,
    /// GeGLU input projection: `[H, 2I]`, first half the input, second half the gate.
    pub wi: Linear<B>,
    pub mlp_wo: Linear<B>,
    pub n_heads: usize,
    pub global: bool,
    #[module(skip)]
    pub act: Activation,
}

#[derive(Module, Debug)]
pub struct ModernBert<B: Backend> {
    pub tok_embeddings: Embedding<B>,
    pub embed_norm: LayerNorm<B>,
    pub layers: Vec<ModernBertLayer<B>>,
    pub final_norm: LayerNorm<B>,
    pub rope_global: (Tensor<B, 2>, Tensor<B, 2>),
    pub rope_local: (Tensor<B, 2>, Tensor<B, 2>),
}

impl<B: Backend> ModernBertLayer<B> {
    pub fn forward(
        &self,
        x: Tensor<B, 3>,
        rope: (Tensor<B, 2>, Tensor<B, 2>),
        bias: Option<Tensor<B, 4>>,
    ) -> Tensor<B, 3> {
        let h = match &self.attn_norm {
            Some(norm) => norm.forward(x.clone()),
            None => x.clone(),
        };
        let ctx = multi_head_attention(self.wqkv.forward(h), self.n_heads, Some(rope), bias);
        let x = x + self.wo.forward(ctx);
        let wi = self.wi.forward(self.mlp_norm.forward(x.clone()));
        let i = wi.dims()[2] / 2;
        let input = wi.clone().narrow(2, 0, i);
        let gate = wi.narrow(2, i, i);
        x + self.mlp_wo.forward(self.act.forward(input) * gate)
    }
}

impl<B: Backend> ModernBert<B> {
    /// `input_ids` `[B, S]`; `global_bias` masks padding (`None` when nothing is padded);
    /// `local_bias` masks padding and keys outside the sliding window (`None` when the window
    /// covers the whole sequence and nothing is padded). Returns `[B, S, H]` after `final_norm`.
    pub fn forward(
        &self,
        input_ids: Tensor<B, 2, Int>,
        global_bias: Option<Tensor<B, 4>>,
        local_bias: Option<Tensor<B, 4>>,
    ) -> Tensor<B, 3> {
        let [_, s] = input_ids.dims();
        let mut x = self.embed_norm.forward(self.tok_embeddings.forward(input_ids));
        let rope = |(cos, sin): &(Tensor<B, 2>, Tensor<B, 2>)| {
            (cos.clone().narrow(0, 0, s), sin.clone().narrow(0, 0, s))
        };
        let (g, l) = (rope(&self.rope_global), rope(&self.rope_local));
        for layer in &self.layers {
            x = if layer.global {
                layer.forward(x, g.clone(), global_bias.clone())
            } else {
                layer.forward(x, l.clone(), local_bias.clone())
            };
        }
        self.final_norm.forward(x)
    }
}

/// `norm(act(dense(x)))`, applied before the classifier.
#[derive(Module, Debug)]
pub struct ModernBertHead<B: Backend> {
    pub dense: Linear<B>,
    pub norm: LayerNorm<B>,
    #[module(skip)]
    pub act: Activation,
}

impl<B: Backend> ModernBertHead<B> {
    pub fn forward<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        self.norm.forward(self.act.forward(self.dense.forward(x)))
    }
}

/// HF `ModernBertForSequenceClassification` and `ModernBertForTokenClassification` (inference):
/// encoder, prediction head and classifier; the sequence classifier pools first
/// ([`ModernBertConfig::classifier_pooling`]).
#[derive(Module, Debug)]
pub struct ModernBertClassifier<B: Backend> {
    pub model: ModernBert<B>,
    pub head: ModernBertHead<B>,
    pub classifier: Linear<B>,
}

impl<B: Backend> HfLayout for ModernBert<B> {
    fn hf_names(path: &[&str]) -> Option<Vec<String>> {
        let name = match path {
            ["tok_embeddings"] => "embeddings.tok_embeddings".to_string(),
            ["embed_norm"] => "embeddings.norm".to_string(),
            ["final_norm"] => "final_norm".to_string(),
            ["layers", i, module] => {
                let hf = match *module {
                    "attn_norm" => "attn_norm",
                    "wqkv" => "attn.Wqkv",
                    "wo" => "attn.Wo",
                    "mlp_norm" => "mlp_norm",
                    "wi" => "mlp.Wi",
                    "mlp_wo" => "mlp.Wo",
                    _ => return None,
                };
                format!("layers.{i}.{hf}")
            }
            _ => return None,
        };
        Some(vec![format!("model.{name}")])
    }
}

impl<B: Backend> HfLayout for ModernBertClassifier<B> {
    fn hf_names(path: &[&str]) -> Option<Vec<String>> {
        match path {
            ["model", rest @ ..] => ModernBert::<B>::hf_names(rest),
            ["head", module] => Some(vec![format!("head.{module}")]),
            ["classifier"] => Some(vec!["classifier".to_string()]),
            _ => None,
        }
    }
}
