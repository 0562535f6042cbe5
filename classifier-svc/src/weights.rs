//! Reading HF safetensors checkpoints into burn tensors.
//!
//! The model code never sees file formats: the HF layout ([`crate::model::hf`]) asks a
//! [`Weights`] for a parameter's values by checkpoint name and expected shape and gets them in
//! burn's layout (or a clear error naming the tensor and the shapes).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
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
    /// The base model's prefix (`bert.`, `model.`): names under it are also found without it,
    /// as a base-model checkpoint (`BertModel`) stores them.
    base_prefix: Option<String>,
}

impl Weights {
    pub fn open(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path)
            .with_context(|| format!("cannot read weights file {}", path.display()))?;
        let st = SafeTensors::deserialize(&bytes)
            .map_err(|e| anyhow!("{} is not a valid safetensors file: {e}", path.display()))?;
        let mut tensors = HashMap::new();
        for (name, view) in st.tensors() {
            let Some(values) = floats(view.dtype(), view.data()) else {
                continue;
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
            base_prefix: None,
        })
    }

    /// Sets the base model's prefix (see [`Weights::base_prefix`]).
    pub fn with_base_prefix(mut self, prefix: &str) -> Self {
        self.base_prefix = Some(prefix.to_string());
        self
    }

    pub fn contains(&self, name: &str) -> bool {
        self.resolve(name).is_some()
    }

    /// The stored tensor of `name`: the name itself, else without the base prefix; a LayerNorm's
    /// `weight` / `bias` also under the legacy `gamma` / `beta`.
    fn resolve(&self, name: &str) -> Option<(&str, &HostTensor)> {
        let bare = self.base_prefix.as_deref().and_then(|p| name.strip_prefix(p));
        let legacy = |n: &str| {
            n.strip_suffix(".weight")
                .map(|s| format!("{s}.gamma"))
                .or_else(|| n.strip_suffix(".bias").map(|s| format!("{s}.beta")))
        };
        let mut candidates = vec![name.to_string()];
        candidates.extend(bare.map(str::to_string));
        candidates.extend(legacy(name));
        candidates.extend(bare.and_then(legacy));
        candidates.iter().find_map(|n| {
            self.tensors
                .get_key_value(n.as_str())
                .map(|(k, v)| (k.as_str(), v))
        })
    }

    /// The error of a tensor the checkpoint lacks, with the names that look like it.
    pub fn not_found(&self, name: &str) -> anyhow::Error {
        let mut near: Vec<&String> = self
            .tensors
            .keys()
            .filter(|k| k.ends_with(name.rsplit('.').next().unwrap_or(name)))
            .collect();
        near.sort();
        near.truncate(5);
        anyhow!(
            "tensor `{name}` not found in {} (base prefix {:?}; similar names: {:?})",
            self.path.display(),
            self.base_prefix,
            near
        )
    }

    fn get(&self, name: &str, shape: &[usize]) -> Result<&HostTensor> {
        let Some((full, t)) = self.resolve(name) else {
            return Err(self.not_found(name));
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

    /// The values of one burn parameter of `shape`, stored as the tensors `names`: several are
    /// concatenated along burn's output dimension (Q, K and V into one linear). `transposed`:
    /// each is a PyTorch `nn.Linear` weight `[out, in]`, laid out as burn's `[in, out]` so
    /// the forward pass is one contiguous matmul. `None` when the checkpoint has none of them.
    pub fn read(&self, names: &[String], transposed: bool, shape: &[usize]) -> Result<Option<Vec<f32>>> {
        if !names.iter().any(|n| self.contains(n)) {
            return Ok(None);
        }
        let parts = names.len();
        if !transposed {
            let mut each = shape.to_vec();
            each[0] /= parts;
            let mut out = Vec::with_capacity(shape.iter().product());
            for name in names {
                out.extend_from_slice(&self.get(name, &each)?.values);
            }
            return Ok(Some(out));
        }
        let &[d_in, d_out] = shape else {
            bail!("a linear weight has 2 dimensions, not {shape:?}");
        };
        let each = d_out / parts;
        let mut w = vec![0f32; d_in * d_out];
        for (k, name) in names.iter().enumerate() {
            let t = self.get(name, &[each, d_in])?;
            for o in 0..each {
                let row = &t.values[o * d_in..(o + 1) * d_in];
                for (i, v) in row.iter().enumerate() {
                    w[i * d_out + k * each + o] = *v;
                }
            }
        }
        Ok(Some(w))
    }
}

/// A float tensor's little-endian bytes as f32; `None` for other types.
pub fn floats(dtype: Dtype, data: &[u8]) -> Option<Vec<f32>> {
    Some(match dtype {
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
        _ => return None,
    })
}
