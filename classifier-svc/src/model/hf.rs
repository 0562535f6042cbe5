//! HF checkpoints and burn modules: one name mapping, read and written through it.
//!
//! A module built by its `Config::init` is filled from a `model.safetensors` by [`load`]: a
//! module mapper walks the module's parameters, asks the module's [`HfLayout`] for the
//! checkpoint name of each one's module and reads it in burn's layout (PyTorch's `[out, in]`
//! linear weights transposed once, here, and Q, K, V fused into one linear where the module
//! fuses them). [`tensors`] walks the same parameters the other way, so [`save`] writes a file
//! with HF's names and layouts that this loader and `transformers` both read.
//!
//! A parameter's kind comes from the burn module that owns it: a `Linear` (weight transposed),
//! a `LayerNorm` (`gamma` / `beta` stored as `weight` / `bias`) or an `Embedding` (as is).

use std::borrow::Cow;
use std::collections::HashMap;
use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::tensor::{backend::Backend, Tensor, TensorData};
use half::f16;
use safetensors::{Dtype, SafeTensors};

use crate::weights::Weights;

/// Where a module's parameters are in an HF checkpoint.
pub trait HfLayout {
    /// Checkpoint names of the burn module at `path` (field names from this module down, e.g.
    /// `["bert", "layers", "0", "qkv"]`) with the base model's prefix: one HF module, or
    /// several that burn fuses along the output dimension. `None`: the layout has no name for
    /// it (an error when loading or saving).
    fn hf_names(path: &[&str]) -> Option<Vec<String>>;
}

/// Float type of the tensors [`save`] writes (the loader reads both into f32).
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum SaveDtype {
    F32,
    /// Half the size; the logits of the saved model then differ slightly from the trained one.
    F16,
}

/// One tensor as HF stores it: name, PyTorch shape, f32 values.
#[derive(Debug, Clone, PartialEq)]
pub struct HfTensor {
    pub name: String,
    pub shape: Vec<usize>,
    pub values: Vec<f32>,
}

/// The checkpoint tensors of one burn parameter, and whether they are linear weights
/// (transposed between PyTorch and burn).
fn checkpoint_names(layout: fn(&[&str]) -> Option<Vec<String>>, path: &[String], owner: &str) -> Result<(Vec<String>, bool)> {
    let (param, module) = path.split_last().ok_or_else(|| anyhow!("a parameter outside any module"))?;
    let module: Vec<&str> = module.iter().map(String::as_str).collect();
    let hf = layout(&module).ok_or_else(|| anyhow!("no checkpoint name for the burn parameter `{}`", path.join(".")))?;
    let suffix = match (owner, param.as_str()) {
        ("Struct:Linear", "weight") => return Ok((hf.iter().map(|n| format!("{n}.weight")).collect(), true)),
        ("Struct:Linear", "bias") | ("Struct:LayerNorm", "beta") => "bias",
        ("Struct:LayerNorm", "gamma") | ("Struct:Embedding", "weight") => "weight",
        _ => bail!("the burn parameter `{}` of {owner} has no HF counterpart", path.join(".")),
    };
    Ok((hf.iter().map(|n| format!("{n}.{suffix}")).collect(), false))
}

/// Module and container names from the root to the current parameter.
#[derive(Default)]
struct ParamPath {
    names: Vec<String>,
    containers: Vec<String>,
}

impl ParamPath {
    fn enter(&mut self, name: &str, container: &str) {
        self.names.push(name.to_string());
        self.containers.push(container.to_string());
    }

    fn exit(&mut self) {
        self.names.pop();
        self.containers.pop();
    }

    fn owner(&self) -> &str {
        self.containers.last().map_or("", String::as_str)
    }
}

/// Fills parameters from a checkpoint; parameters it has no tensor for keep their
/// initialisation (still lazy, so never computed when a checkpoint fills them).
struct Reader<'a> {
    weights: &'a Weights,
    layout: fn(&[&str]) -> Option<Vec<String>>,
    path: ParamPath,
    /// Burn paths left as initialised, with the first checkpoint name looked for.
    absent: Vec<(String, String)>,
    errors: Vec<anyhow::Error>,
}

impl<B: Backend> ModuleMapper<B> for Reader<'_> {
    fn enter_module(&mut self, name: &str, container_type: &str) {
        self.path.enter(name, container_type);
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.exit();
    }

    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        let shape = param.lazy_shape().to_vec();
        let read = checkpoint_names(self.layout, &self.path.names, self.path.owner())
            .and_then(|(names, transposed)| Ok((self.weights.read(&names, transposed, &shape)?, names)));
        match read {
            Ok((Some(values), _)) => {
                let (id, device) = (param.id, param.lazy_device());
                let tensor = Tensor::from_data(TensorData::new(values, shape), &device);
                param.transform_for_load(tensor, id)
            }
            Ok((None, names)) => {
                self.absent.push((self.path.names.join("."), names[0].clone()));
                param
            }
            Err(e) => {
                self.errors.push(e);
                param
            }
        }
    }
}

/// Fills `module` from `weights`; every parameter must be in the checkpoint.
pub fn load<B: Backend, M: Module<B> + HfLayout>(module: M, weights: &Weights) -> Result<M> {
    let (module, absent) = fill(module, weights)?;
    match absent.first() {
        Some((_, name)) => Err(weights.not_found(name)),
        None => Ok(module),
    }
}

/// Fills `module` from `weights` where the checkpoint has its parameters; returns the burn
/// paths of those it lacks, left as `init` made them (e.g. a new classifier).
pub fn load_partial<B: Backend, M: Module<B> + HfLayout>(module: M, weights: &Weights) -> Result<(M, Vec<String>)> {
    let (module, absent) = fill(module, weights)?;
    Ok((module, absent.into_iter().map(|(path, _)| path).collect()))
}

fn fill<B: Backend, M: Module<B> + HfLayout>(module: M, weights: &Weights) -> Result<(M, Vec<(String, String)>)> {
    let mut reader = Reader { weights, layout: M::hf_names, path: ParamPath::default(), absent: Vec::new(), errors: Vec::new() };
    let module = module.map(&mut reader);
    if let Some(e) = reader.errors.into_iter().next() {
        return Err(e);
    }
    Ok((module, reader.absent))
}

/// Collects parameters as HF tensors.
struct Writer {
    layout: fn(&[&str]) -> Option<Vec<String>>,
    path: ParamPath,
    out: Vec<HfTensor>,
    errors: Vec<anyhow::Error>,
}

impl Writer {
    fn push(&mut self, values: Vec<f32>, shape: &[usize]) -> Result<()> {
        let (names, transposed) = checkpoint_names(self.layout, &self.path.names, self.path.owner())?;
        let parts = names.len();
        if !transposed {
            let each = values.len() / parts;
            let mut part_shape = shape.to_vec();
            part_shape[0] /= parts;
            for (name, chunk) in names.into_iter().zip(values.chunks_exact(each)) {
                self.out.push(HfTensor { name, shape: part_shape.clone(), values: chunk.to_vec() });
            }
            return Ok(());
        }
        let &[d_in, d_out] = shape else {
            bail!("a linear weight has 2 dimensions, not {shape:?}");
        };
        let each = d_out / parts;
        for (k, name) in names.into_iter().enumerate() {
            let mut t = vec![0f32; each * d_in];
            for o in 0..each {
                for i in 0..d_in {
                    t[o * d_in + i] = values[i * d_out + k * each + o];
                }
            }
            self.out.push(HfTensor { name, shape: vec![each, d_in], values: t });
        }
        Ok(())
    }
}

impl<B: Backend> ModuleVisitor<B> for Writer {
    fn enter_module(&mut self, name: &str, container_type: &str) {
        self.path.enter(name, container_type);
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.exit();
    }

    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        let tensor = param.val();
        let shape = tensor.dims().to_vec();
        let pushed = tensor
            .into_data()
            .convert::<f32>()
            .into_vec::<f32>()
            .map_err(|e| anyhow!("reading `{}` back: {e:?}", self.path.names.join(".")))
            .and_then(|values| self.push(values, &shape));
        if let Err(e) = pushed {
            self.errors.push(e);
        }
    }
}

/// The module's parameters under their HF names, in PyTorch layouts, in module order.
pub fn tensors<B: Backend, M: Module<B> + HfLayout>(module: &M) -> Result<Vec<HfTensor>> {
    let mut writer = Writer { layout: M::hf_names, path: ParamPath::default(), out: Vec::new(), errors: Vec::new() };
    module.visit(&mut writer);
    match writer.errors.into_iter().next() {
        Some(e) => Err(e),
        None => Ok(writer.out),
    }
}

/// Writes the module's parameters as an HF `model.safetensors` at `path`.
pub fn save<B: Backend, M: Module<B> + HfLayout>(module: &M, path: &Path, dtype: SaveDtype) -> Result<()> {
    let tensors = tensors(module)?;
    let bytes = tensors.into_iter().map(|t| {
        let (dt, data) = match dtype {
            SaveDtype::F32 => (Dtype::F32, t.values.iter().flat_map(|v| v.to_le_bytes()).collect()),
            SaveDtype::F16 => (Dtype::F16, t.values.iter().flat_map(|v| f16::from_f32(*v).to_le_bytes()).collect()),
        };
        (t.name, dt, t.shape, Cow::Owned(data))
    });
    write_safetensors(path, bytes.collect())
}

/// The one safetensors writer: `format: pt` metadata, as `transformers` expects.
fn write_safetensors(path: &Path, tensors: Vec<(String, Dtype, Vec<usize>, Cow<[u8]>)>) -> Result<()> {
    let views = tensors
        .iter()
        .map(|(name, dtype, shape, data)| {
            safetensors::tensor::TensorView::new(*dtype, shape.clone(), &data[..])
                .map(|v| (name.clone(), v))
                .map_err(|e| anyhow!("tensor {name}: {e}"))
        })
        .collect::<Result<Vec<_>>>()?;
    let info = HashMap::from([("format".to_string(), "pt".to_string())]);
    safetensors::tensor::serialize_to_file(views, Some(info), path).map_err(|e| anyhow!("cannot write {}: {e}", path.display()))
}

/// Copies an HF model directory with every F32 tensor of `model.safetensors` stored as F16
/// (other tensors, e.g. integer buffers, and all other files unchanged): half the size, and
/// the loader reads it back into f32.
pub fn f16_copy(from: &Path, to: &Path) -> Result<()> {
    let src = from.join("model.safetensors");
    let bytes = std::fs::read(&src).with_context(|| format!("cannot read {}", src.display()))?;
    let st = SafeTensors::deserialize(&bytes).map_err(|e| anyhow!("{} is not a valid safetensors file: {e}", src.display()))?;
    let tensors = st
        .tensors()
        .into_iter()
        .map(|(name, view)| {
            let shape = view.shape().to_vec();
            if view.dtype() == Dtype::F32 {
                let half: Vec<u8> = view
                    .data()
                    .chunks_exact(4)
                    .flat_map(|c| f16::from_f32(f32::from_le_bytes([c[0], c[1], c[2], c[3]])).to_le_bytes())
                    .collect();
                (name, Dtype::F16, shape, Cow::Owned(half))
            } else {
                (name, view.dtype(), shape, Cow::Borrowed(view.data()))
            }
        })
        .collect();
    std::fs::create_dir_all(to).with_context(|| format!("cannot create {}", to.display()))?;
    write_safetensors(&to.join("model.safetensors"), tensors)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        if entry.file_type()?.is_file() && entry.file_name() != "model.safetensors" {
            std::fs::copy(entry.path(), to.join(entry.file_name()))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::bert::{BertConfig, BertForSequenceClassification, BertForSequenceClassificationConfig};
    use crate::model::load::Checkpoint;
    use crate::model::modernbert::ModernBertConfig;
    use crate::model::{LoadOptions, Model};

    type B = crate::CpuBackend;

    fn fixture(name: &str) -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures").join(name)
    }

    /// Every float tensor of a file written by `transformers`: name, shape, values.
    fn file_tensors(dir: &Path) -> Vec<HfTensor> {
        let bytes = std::fs::read(dir.join("model.safetensors")).unwrap();
        let st = SafeTensors::deserialize(&bytes).unwrap();
        let mut out: Vec<HfTensor> = st
            .tensors()
            .into_iter()
            .filter(|(_, v)| v.dtype() == Dtype::F32)
            .map(|(name, v)| HfTensor { name, shape: v.shape().to_vec(), values: crate::weights::floats(v.dtype(), v.data()).unwrap() })
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    /// Loaded through the layout and written back: the checkpoint `transformers` wrote, tensor
    /// for tensor (fused Q/K/V split again, linear weights transposed back).
    fn round_trip<M: Module<B> + HfLayout>(dir: &Path, module: M, prefix: &str) {
        let w = Weights::open(&dir.join("model.safetensors")).unwrap().with_base_prefix(prefix);
        let mut ours = tensors(&load(module, &w).unwrap()).unwrap();
        ours.sort_by(|a, b| a.name.cmp(&b.name));
        assert_eq!(ours, file_tensors(dir), "{}", dir.display());
    }

    #[test]
    fn a_loaded_checkpoint_writes_back_unchanged() {
        let device = Default::default();
        let dir = fixture("bert-seq");
        let cfg: BertConfig = Checkpoint::open(&dir).unwrap().config().unwrap();
        round_trip::<BertForSequenceClassification<B>>(&dir, BertForSequenceClassificationConfig::new(cfg, 3).init(&device), "bert.");
        let dir = fixture("bert-tok");
        let cfg: BertConfig = Checkpoint::open(&dir).unwrap().config().unwrap();
        let n = Checkpoint::open(&dir).unwrap().config["id2label"].as_object().unwrap().len();
        round_trip(&dir, cfg.init_token_classifier::<B>(n, &device), "bert.");
        let dir = fixture("modernbert-seq-cls");
        let cfg: ModernBertConfig = Checkpoint::open(&dir).unwrap().config().unwrap();
        let n = Checkpoint::open(&dir).unwrap().config["id2label"].as_object().unwrap().len();
        round_trip(&dir, cfg.init_classifier::<B>(n, &device), "model.");
    }

    #[test]
    fn a_parameter_the_checkpoint_lacks_is_reported_or_left_as_initialised() {
        let device = Default::default();
        let dir = fixture("bert-seq");
        let cfg: BertConfig = Checkpoint::open(&dir).unwrap().config().unwrap();
        let bert = Weights::open(&dir.join("model.safetensors")).unwrap().with_base_prefix("bert.");
        let other = Weights::open(&fixture("modernbert-seq-cls").join("model.safetensors")).unwrap();
        let e = format!("{:#}", load(cfg.init_pooler::<B>(&device), &other).err().expect("must fail"));
        assert!(e.contains("bert.pooler.dense.weight") && e.contains("not found"), "{e}");
        let (_, absent) = load_partial(cfg.init_pooler::<B>(&device), &other).unwrap();
        assert_eq!(absent, ["dense.weight", "dense.bias"]);
        let (_, absent) = load_partial(cfg.init_pooler::<B>(&device), &bert).unwrap();
        assert!(absent.is_empty());
    }

    #[test]
    fn an_f16_copy_loads_with_close_outputs() {
        let device = Default::default();
        let dir = std::env::temp_dir().join(format!("classifier-svc-f16-copy-{}", std::process::id()));
        f16_copy(&fixture("bert-seq"), &dir).unwrap();
        assert!(dir.join("tokenizer.json").exists() && dir.join("config.json").exists());
        let opts = LoadOptions { max_len: Some(16), task: None };
        let text = ["what is the law of energy"];
        let a = Model::<B>::load(&fixture("bert-seq"), &opts, &device).unwrap().classify(&text).unwrap();
        let b = Model::<B>::load(&dir, &opts, &device).unwrap().classify(&text).unwrap();
        let d = a[0].iter().zip(&b[0]).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max);
        assert!(d > 0.0 && d < 0.05, "{a:?} vs {b:?}");
        let size = |d: &Path| std::fs::metadata(d.join("model.safetensors")).unwrap().len();
        assert!(size(&dir) * 10 < size(&fixture("bert-seq")) * 6, "the copy is about half the size");
        std::fs::remove_dir_all(&dir).ok();
    }
}
