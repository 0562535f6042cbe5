//! Pieces shared by the encoder architectures.

use burn::tensor::module::attention;
use burn::tensor::ops::AttentionModuleOptions;
use burn::tensor::{activation, backend::Backend, Tensor};
use serde::Deserialize;

/// Feed-forward activations named as in HF `config.json` (`hidden_act`, `hidden_activation`,
/// `classifier_activation`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
pub enum Activation {
    /// Exact (erf) GELU, HF's `gelu`.
    #[default]
    #[serde(rename = "gelu")]
    Gelu,
    /// Tanh-approximated GELU.
    #[serde(alias = "gelu_new", alias = "gelu_pytorch_tanh", alias = "gelu_fast")]
    GeluTanh,
    #[serde(rename = "relu")]
    Relu,
    #[serde(alias = "silu", alias = "swish")]
    Silu,
    #[serde(rename = "tanh")]
    Tanh,
}

impl Activation {
    pub fn forward<B: Backend, const D: usize>(self, x: Tensor<B, D>) -> Tensor<B, D> {
        match self {
            Activation::Gelu => activation::gelu(x),
            Activation::GeluTanh => activation::gelu_approximate(x),
            Activation::Relu => activation::relu(x),
            Activation::Silu => activation::silu(x),
            Activation::Tanh => x.tanh(),
        }
    }
}

/// Multi-head scaled dot-product attention from a fused `[B, S, 3H]` QKV projection.
///
/// `rotary` (cos, sin of shape `[S, head_dim]`) is applied to Q and K when present; `bias` is an
/// additive `[B, 1, S, S]` score bias (padding and/or sliding window), broadcast over heads.
/// Returns `[B, S, H]`.
pub fn multi_head_attention<B: Backend>(
    qkv: Tensor<B, 3>,
    n_heads: usize,
    rotary: Option<(Tensor<B, 2>, Tensor<B, 2>)>,
    bias: Option<Tensor<B, 4>>,
) -> Tensor<B, 3> {
    let [b, s, h3] = qkv.dims();
    let h = h3 / 3;
    let hd = h / n_heads;
    // [B, S, 3, nh, hd] -> [3, B, nh, S, hd]
    let qkv = qkv.reshape([b, s, 3, n_heads, hd]).permute([2, 0, 3, 1, 4]);
    let mut parts = qkv.chunk(3, 0).into_iter().map(|t| t.squeeze_dim::<4>(0));
    let (mut q, mut k, v) = (
        parts.next().unwrap(),
        parts.next().unwrap(),
        parts.next().unwrap(),
    );
    if let Some((cos, sin)) = rotary {
        let cos = cos.unsqueeze::<4>();
        let sin = sin.unsqueeze::<4>();
        q = apply_rotary(q, cos.clone(), sin.clone());
        k = apply_rotary(k, cos, sin);
    }
    let ctx = attention(q, k, v, None, bias, AttentionModuleOptions::default());
    ctx.swap_dims(1, 2).reshape([b, s, h])
}

/// `x * cos + rotate_half(x) * sin` with `rotate_half([x1, x2]) = [-x2, x1]` (HF convention).
fn apply_rotary<B: Backend>(x: Tensor<B, 4>, cos: Tensor<B, 4>, sin: Tensor<B, 4>) -> Tensor<B, 4> {
    let hd = x.dims()[3];
    let x1 = x.clone().narrow(3, 0, hd / 2);
    let x2 = x.clone().narrow(3, hd / 2, hd / 2);
    let rotated = Tensor::cat(vec![x2.neg(), x1], 3);
    x * cos + rotated * sin
}

/// Rotary tables for positions `0..max_pos`: (cos, sin), each `[max_pos, head_dim]`.
pub fn rotary_tables(max_pos: usize, head_dim: usize, theta: f64) -> (Vec<f32>, Vec<f32>) {
    let half = head_dim / 2;
    let mut cos = vec![0f32; max_pos * head_dim];
    let mut sin = vec![0f32; max_pos * head_dim];
    for p in 0..max_pos {
        for i in 0..half {
            // Same arithmetic as the reference: inv_freq in f32, then position * inv_freq in f32.
            let inv_freq = (1.0 / theta.powf((2 * i) as f64 / head_dim as f64)) as f32;
            let angle = p as f32 * inv_freq;
            let (s, c) = angle.sin_cos();
            for j in [i, i + half] {
                cos[p * head_dim + j] = c;
                sin[p * head_dim + j] = s;
            }
        }
    }
    (cos, sin)
}
