//! Reading HF safetensors checkpoints into burn tensors.
//!
//! The model code never sees file formats: loaders ask a [`Weights`] for a tensor by name and
//! expected shape and get a `Tensor<B, D>` (or a clear error naming the tensor and the shapes).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use burn::module::Param;
use burn::nn::{Embedding, LayerNorm, LayerNormConfig, Linear};
use burn::tensor::{backend::Backend, Tensor, TensorData};
use safetensors::{Dtype, SafeTensors};

/// One float tensor of a checkpoint, converted to f32 on the host.
struct HostTensor {
    shape: Vec<usize>,
    values: Vec<f32>,
}

/// All float tensors of one `model.safetensors`, by name. Integer buffers (e.g.
/// `embeddings.position_ids`) are skipped.
pub struct Weights {
    path: PathBuf,
    tensors: HashMap<String, HostTensor>,
    /// Prefixes tried in order when looking a name up (e.g. `bert.`, then none).
    prefixes: Vec<String>,
}

impl Weights {
    pub fn open(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path)
            .with_context(|| format!("cannot read weights file {}", path.display()))?;
        let st = SafeTensors::deserialize(&bytes)
            .map_err(|e| anyhow!("{} is not a valid safetensors file: {e}", path.display()))?;
        let mut tensors = HashMap::new();
        for (name, view) in st.tensors() {
            let data = view.data();
            let values: Vec<f32> = match view.dtype() {
                Dtype::F32 => data
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect(),
                Dtype::F16 => data
                    .chunks_exact(2)
                    .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
                    .collect(),
                Dtype::BF16 => data
                    .chunks_exact(2)
                    .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
                    .collect(),
                Dtype::F64 => data
                    .chunks_exact(8)
                    .map(|c| f64::from_le_bytes(c.try_into().unwrap()) as f32)
                    .collect(),
                _ => continue,
            };
            tensors.insert(
                name,
                HostTensor {
                    shape: view.shape().to_vec(),
                    values,
                },
            );
        }
        Ok(Self {
            path: path.to_path_buf(),
            tensors,
            prefixes: vec![String::new()],
        })
    }

    /// Sets the prefixes tried when resolving names (first match wins).
    pub fn with_prefixes(mut self, prefixes: &[&str]) -> Self {
        self.prefixes = prefixes.iter().map(|p| p.to_string()).collect();
        self
    }

    pub fn contains(&self, name: &str) -> bool {
        self.resolve(name).is_some()
    }

    fn resolve(&self, name: &str) -> Option<(&str, &HostTensor)> {
        self.prefixes.iter().find_map(|p| {
            let full = format!("{p}{name}");
            self.tensors
                .get_key_value(&full)
                .map(|(k, v)| (k.as_str(), v))
        })
    }

    fn get(&self, name: &str, shape: &[usize]) -> Result<&HostTensor> {
        let Some((full, t)) = self.resolve(name) else {
            let mut near: Vec<&String> = self
                .tensors
                .keys()
                .filter(|k| k.ends_with(name.rsplit('.').next().unwrap_or(name)))
                .collect();
            near.sort();
            near.truncate(5);
            bail!(
                "tensor `{name}` not found in {} (tried prefixes {:?}; similar names: {:?})",
                self.path.display(),
                self.prefixes,
                near
            );
        };
        if t.shape != shape {
            bail!(
                "tensor `{full}` in {} has shape {:?}, expected {:?} from config.json",
                self.path.display(),
                t.shape,
                shape
            );
        }
        Ok(t)
    }

    /// A tensor of exactly `shape`.
    pub fn tensor<B: Backend, const D: usize>(
        &self,
        name: &str,
        shape: [usize; D],
        device: &B::Device,
    ) -> Result<Tensor<B, D>> {
        let t = self.get(name, &shape)?;
        Ok(Tensor::from_data(
            TensorData::new(t.values.clone(), shape),
            device,
        ))
    }

    /// A PyTorch `nn.Linear` (`weight` is `[out, in]`), stored transposed as burn's row layout
    /// `[in, out]` so the forward pass is a plain contiguous matmul.
    pub fn linear<B: Backend>(
        &self,
        name: &str,
        d_in: usize,
        d_out: usize,
        bias: bool,
        device: &B::Device,
    ) -> Result<Linear<B>> {
        self.linear_fused(&[name], d_in, d_out, bias, device)
    }

    /// Several linears over the same input fused along the output dimension (e.g. Q, K, V),
    /// so the forward pass runs one matmul instead of several.
    pub fn linear_fused<B: Backend>(
        &self,
        names: &[&str],
        d_in: usize,
        d_out_each: usize,
        bias: bool,
        device: &B::Device,
    ) -> Result<Linear<B>> {
        let d_out = d_out_each * names.len();
        let mut w = vec![0f32; d_in * d_out];
        let mut b = Vec::with_capacity(d_out);
        for (n, name) in names.iter().enumerate() {
            let t = self.get(&format!("{name}.weight"), &[d_out_each, d_in])?;
            for o in 0..d_out_each {
                let row = &t.values[o * d_in..(o + 1) * d_in];
                for (i, v) in row.iter().enumerate() {
                    w[i * d_out + n * d_out_each + o] = *v;
                }
            }
            if bias {
                b.extend_from_slice(&self.get(&format!("{name}.bias"), &[d_out_each])?.values);
            }
        }
        let weight = Tensor::<B, 2>::from_data(TensorData::new(w, [d_in, d_out]), device);
        let bias = bias.then(|| {
            Param::from_tensor(Tensor::<B, 1>::from_data(TensorData::new(b, [d_out]), device))
        });
        Ok(Linear {
            weight: Param::from_tensor(weight),
            bias,
        })
    }

    /// A LayerNorm; accepts both `weight`/`bias` and the legacy `gamma`/`beta` names.
    pub fn layer_norm<B: Backend>(
        &self,
        name: &str,
        d: usize,
        eps: f64,
        bias: bool,
        device: &B::Device,
    ) -> Result<LayerNorm<B>> {
        let mut ln = LayerNormConfig::new(d)
            .with_epsilon(eps)
            .with_bias(bias)
            .init(device);
        let (wn, bn) = if !self.contains(&format!("{name}.weight"))
            && self.contains(&format!("{name}.gamma"))
        {
            ("gamma", "beta")
        } else {
            ("weight", "bias")
        };
        ln.gamma = Param::from_tensor(self.tensor(&format!("{name}.{wn}"), [d], device)?);
        if bias {
            ln.beta = Some(Param::from_tensor(self.tensor(
                &format!("{name}.{bn}"),
                [d],
                device,
            )?));
        }
        Ok(ln)
    }

    pub fn embedding<B: Backend>(
        &self,
        name: &str,
        n: usize,
        d: usize,
        device: &B::Device,
    ) -> Result<Embedding<B>> {
        Ok(Embedding {
            weight: Param::from_tensor(self.tensor(&format!("{name}.weight"), [n, d], device)?),
        })
    }
}
