//! `router-train finetune-category` and `finetune-jailbreak`: fine-tune the whole BERT encoder
//! with a sequence classification head on a task's data set, generic over an autodiff backend
//! (CPU, or CUDA with the `cuda` feature).
//!
//! The model is the sidecar's own [`BertForSequenceClassification`] (HF's: encoder → `[CLS]`
//! hidden state → pooler (`tanh(dense)`) → dropout → linear classifier), here on an autodiff
//! backend, loaded and saved through the sidecar's HF layout, so the output directory is a
//! standard HF checkpoint that `classifier_svc::model::Model::load` reads as a sequence
//! classifier, with the same logits as at training time.
//!
//! GPU backends compile kernels per tensor shape, so every training batch has the same shape
//! `[batch_size, seq_len]` (token ids right-padded to `seq_len`, padding masked by an additive
//! attention bias; the last partial batch of an epoch is dropped) and every evaluation batch
//! too (a partial batch is filled with copies of its first text, whose outputs are discarded).
//!
//! Optimisation: AdamW (weight decay on all parameters), one learning rate for the encoder and a
//! larger one for the head (pooler and classifier), linear warm-up then linear decay to zero,
//! per-parameter gradient-norm clipping, class-balanced cross-entropy, shuffling from the seed.
//! The final epoch's model is saved: nothing is selected on any evaluation result.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{anyhow, bail, Context, Result};
use burn::module::AutodiffModule;
use burn::nn::loss::CrossEntropyLossConfig;
use burn::grad_clipping::GradientClippingConfig;
use burn::optim::{AdamWConfig, GradientsParams, Optimizer};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Int, Tensor, TensorData};
use classifier_svc::model::bert::{Bert, BertClassificationHead, BertForSequenceClassification};
use classifier_svc::model::hf;
pub use classifier_svc::model::hf::SaveDtype;
use classifier_svc::model::load::{bert_for_fine_tuning, Checkpoint};
use classifier_svc::model::{Batch, LoadOptions, Model, Task as ModelTask};
use classifier_svc::tokenize::TextTokenizer;
use serde_json::{json, Value};

use crate::data::{self, DataDirs};
use crate::metrics::{argmax, softmax, Confusion};
use crate::text::Rng;
use crate::train::{self, balanced_weights, Task};

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceKind {
    Cpu,
    /// Needs a build with the `cuda` feature.
    Cuda,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClassWeights {
    /// `n / (k · count)` per class, as for the frozen-embedding heads.
    Balanced,
    None,
}

#[derive(clap::Args, Clone, Debug)]
pub struct FinetuneArgs {
    #[arg(long, default_value_t = 3)]
    pub epochs: usize,
    /// Train only the top this-many encoder layers (and the head) over the frozen lower
    /// layers' outputs, computed once: the path that fits a CPU. By default every layer.
    #[arg(long)]
    pub train_layers: Option<usize>,
    /// Peak learning rate of the encoder.
    #[arg(long, default_value_t = 5e-5)]
    pub lr: f64,
    /// Peak learning rate of the head (pooler and classifier).
    #[arg(long, default_value_t = 1e-3)]
    pub head_lr: f64,
    #[arg(long, default_value_t = 0.01)]
    pub weight_decay: f32,
    /// Fraction of the steps with a linear warm-up (then linear decay to zero).
    #[arg(long, default_value_t = 0.06)]
    pub warmup: f64,
    /// Texts per batch (training and evaluation).
    #[arg(long, default_value_t = 32)]
    pub batch_size: usize,
    /// Tokens per text, special tokens included: longer texts are truncated, shorter padded.
    #[arg(long, default_value_t = 128)]
    pub seq_len: usize,
    /// Dropout before the classifier.
    #[arg(long, default_value_t = 0.1)]
    pub dropout: f64,
    /// Clips each parameter's gradient to this L2 norm; 0 turns clipping off.
    #[arg(long, default_value_t = 1.0)]
    pub clip_norm: f32,
    #[arg(long, value_enum, default_value_t = ClassWeights::Balanced)]
    pub class_weights: ClassWeights,
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Use only this many training examples (a seeded sample), for smoke tests.
    #[arg(long)]
    pub limit: Option<usize>,
    /// Use only this many validation examples (a seeded sample), for smoke tests.
    #[arg(long)]
    pub val_limit: Option<usize>,
    /// Progress line every this many steps.
    #[arg(long, default_value_t = 50)]
    pub log_every: usize,
    #[arg(long, value_enum, default_value_t = DeviceKind::Cpu)]
    pub device: DeviceKind,
    /// Output directory (an HF `BertForSequenceClassification` checkpoint); by default
    /// `models/category-model` or `models/jailbreak-model`.
    #[arg(long)]
    pub out: Option<PathBuf>,
    #[arg(long, value_enum, default_value_t = SaveDtype::F32)]
    pub save_dtype: SaveDtype,
}

impl FinetuneArgs {
    /// Defaults, as on the command line.
    pub fn defaults() -> Self {
        #[derive(clap::Parser)]
        struct P {
            #[command(flatten)]
            a: FinetuneArgs,
        }
        <P as clap::Parser>::parse_from(["finetune"]).a
    }
}

/// A pretrained encoder with a new classification head, and what saving it needs.
pub struct Pretrained<B: Backend> {
    pub model: BertForSequenceClassification<B>,
    /// The encoder's `config.json`.
    pub config: Value,
    pub tokenizer: TextTokenizer,
    pub pad_id: u32,
}

/// Loads a BERT checkpoint (`BertModel` or `BertFor*`) from an HF directory as a sequence
/// classifier of `num_labels` outputs (see [`bert_for_fine_tuning`]: the checkpoint's pooler,
/// else a new one; a new classifier) and its tokenizer, truncating to `seq_len` tokens. Seed
/// the backend first: the new weights come from its RNG.
pub fn load_pretrained<B: Backend>(dir: &Path, num_labels: usize, dropout: f64, seq_len: usize, device: &B::Device) -> Result<Pretrained<B>> {
    let checkpoint = Checkpoint::open(dir)?;
    let (model, new_pooler) = bert_for_fine_tuning::<B>(&checkpoint, num_labels, dropout, device)
        .with_context(|| format!("loading the encoder from {}", dir.display()))?;
    if new_pooler {
        eprintln!("[finetune] {}: no pooler weights, starting from a random pooler", dir.display());
    }
    let max_pos = model.bert.embeddings.position.weight.dims()[0];
    let tokenizer = checkpoint.tokenizer(Some(seq_len), max_pos)?;
    if tokenizer.max_len() < seq_len {
        bail!("--seq-len {seq_len} is above the model's limit {}", tokenizer.max_len());
    }
    let pad_id = checkpoint.pad_id();
    Ok(Pretrained { model, config: checkpoint.config, tokenizer, pad_id })
}

/// Token ids `[B, seq_len]` (texts cut to `seq_len`, right-padded) and the bias that masks the
/// padding: every batch the same shape, as GPU backends want.
fn fixed_batch<B: Backend>(rows: &[&[u32]], seq_len: usize, pad_id: u32, device: &B::Device) -> (Tensor<B, 2, Int>, Tensor<B, 4>) {
    let rows: Vec<&[u32]> = rows.iter().map(|r| &r[..r.len().min(seq_len)]).collect();
    let batch = Batch::bucketed(&rows, pad_id, &[seq_len]);
    let bias = classifier_svc::model::attention_bias(&batch.lens, seq_len, None, device);
    (batch.ids(device), bias)
}

fn host<B: Backend, const D: usize>(t: Tensor<B, D>) -> Result<Vec<f32>> {
    t.into_data().convert::<f32>().into_vec::<f32>().map_err(|e| anyhow!("reading a tensor back: {e:?}"))
}

/// Logits of each token sequence, in batches of exactly `batch_size` × `seq_len`.
pub fn logits<B: Backend>(model: &BertForSequenceClassification<B>, encs: &[Vec<u32>], batch_size: usize, seq_len: usize, pad_id: u32, device: &B::Device) -> Result<Vec<Vec<f32>>> {
    let mut out = Vec::with_capacity(encs.len());
    for chunk in encs.chunks(batch_size.max(1)) {
        let mut rows: Vec<&[u32]> = chunk.iter().map(|e| e.as_slice()).collect();
        rows.resize(batch_size.max(chunk.len()), chunk[0].as_slice());
        let (ids, bias) = fixed_batch::<B>(&rows, seq_len, pad_id, device);
        let l = model.forward(ids, Some(bias));
        let k = l.dims()[1];
        out.extend(host(l)?.chunks_exact(k).take(chunk.len()).map(|c| c.to_vec()));
    }
    Ok(out)
}

/// Tokenized examples with class indices.
#[derive(Debug, Clone, Default)]
pub struct Encoded {
    pub ids: Vec<Vec<u32>>,
    pub y: Vec<usize>,
}

#[derive(Debug, Clone)]
pub struct EpochLog {
    pub epoch: usize,
    pub loss: f64,
    pub val_accuracy: f64,
    pub val_macro_f1: f64,
    /// Wall-clock seconds since the start, evaluation included.
    pub seconds: f64,
    /// Seconds spent in training steps since the start (evaluation excluded).
    pub train_seconds: f64,
}

/// Learning-rate factor of optimiser step `t` (0-based) of `total`: linear warm-up over
/// `warmup` steps (the first step already above zero), then linear decay to zero.
pub fn lr_factor(t: usize, total: usize, warmup: usize) -> f64 {
    if t < warmup {
        (t + 1) as f64 / warmup as f64
    } else {
        (total - t) as f64 / (total - warmup).max(1) as f64
    }
}

/// Accuracy and macro-F1 of logits against classes.
pub fn score(logits: &[Vec<f32>], y: &[usize], k: usize) -> Confusion {
    let pred: Vec<usize> = logits.iter().map(|l| argmax(l)).collect();
    Confusion::new(k, y, &pred)
}

/// AdamW as configured (weight decay, gradient-norm clipping).
pub fn adamw(args: &FinetuneArgs) -> AdamWConfig {
    let c = AdamWConfig::new().with_weight_decay(args.weight_decay).with_epsilon(1e-8);
    if args.clip_norm > 0.0 { c.with_grad_clipping(Some(GradientClippingConfig::Norm(args.clip_norm))) } else { c }
}

/// Fine-tunes `model` on `train`; validation metrics after every epoch. Returns the final
/// (inference) model and the per-epoch log.
#[allow(clippy::too_many_arguments)]
pub fn fit<B: AutodiffBackend>(
    model: BertForSequenceClassification<B>,
    train: &Encoded,
    val: &Encoded,
    num_labels: usize,
    pad_id: u32,
    args: &FinetuneArgs,
    device: &B::Device,
    log: bool,
) -> Result<(BertForSequenceClassification<B::InnerBackend>, Vec<EpochLog>)> {
    let bs = args.batch_size;
    if bs == 0 || train.ids.len() < bs {
        bail!("{} training examples: fewer than one batch of {bs}", train.ids.len());
    }
    let per_epoch = train.ids.len() / bs;
    let total = per_epoch * args.epochs;
    let warmup = ((total as f64 * args.warmup).ceil() as usize).min(total);
    let mut opt_enc = adamw(args).init::<B, Bert<B>>();
    let mut opt_head = adamw(args).init::<B, BertClassificationHead<B>>();
    let weights = match args.class_weights {
        ClassWeights::Balanced => Some(balanced_weights(&train.y, num_labels)),
        ClassWeights::None => None,
    };
    let loss_fn = CrossEntropyLossConfig::new().with_weights(weights).init::<B>(device);
    if log {
        eprintln!(
            "[finetune] {} train / {} validation examples, batch {bs} × {} tokens, {per_epoch} steps/epoch, {total} steps ({warmup} warm-up), lr {} (head {}), seed {}",
            train.ids.len(), val.ids.len(), args.seq_len, args.lr, args.head_lr, args.seed
        );
    }
    let mut model = model;
    let mut rng = Rng::new(args.seed);
    let mut order: Vec<usize> = (0..train.ids.len()).collect();
    let mut history = Vec::new();
    let start = Instant::now();
    let mut step = 0usize;
    let mut train_seconds = 0f64;
    let (mut window_start, mut window_steps) = (Instant::now(), 0usize);
    let mut window_loss: Option<Tensor<B::InnerBackend, 1>> = None;
    for epoch in 1..=args.epochs {
        rng.shuffle(&mut order);
        let mut epoch_loss: Option<Tensor<B::InnerBackend, 1>> = None;
        let epoch_start = Instant::now();
        for chunk in order.chunks_exact(bs) {
            let rows: Vec<&[u32]> = chunk.iter().map(|&i| train.ids[i].as_slice()).collect();
            let (ids, bias) = fixed_batch::<B>(&rows, args.seq_len, pad_id, device);
            let y: Vec<i64> = chunk.iter().map(|&i| train.y[i] as i64).collect();
            let y = Tensor::<B, 1, Int>::from_data(TensorData::new(y, [bs]), device);
            let loss = loss_fn.forward(model.forward(ids, Some(bias)), y);
            let mut grads = loss.backward();
            let g_enc = GradientsParams::from_module(&mut grads, &model.bert);
            let g_head = GradientsParams::from_module(&mut grads, &model.head);
            let f = lr_factor(step, total, warmup);
            let BertForSequenceClassification { bert, head } = model;
            model = BertForSequenceClassification {
                bert: opt_enc.step(args.lr * f, bert, g_enc),
                head: opt_head.step(args.head_lr * f, head, g_head),
            };
            // Loss values stay on the device until a progress line needs them (no per-step sync).
            let l = loss.inner();
            epoch_loss = Some(epoch_loss.map_or(l.clone(), |s| s + l.clone()));
            window_loss = Some(window_loss.map_or(l.clone(), |s| s + l));
            step += 1;
            window_steps += 1;
            if log && args.log_every > 0 && (step.is_multiple_of(args.log_every) || step == total) {
                let mean = host(window_loss.take().unwrap())?[0] as f64 / window_steps as f64;
                if !mean.is_finite() {
                    bail!("loss is {mean} at step {step}");
                }
                let rate = window_steps as f64 / window_start.elapsed().as_secs_f64();
                eprintln!(
                    "[finetune] step {step:>5}/{total}  epoch {epoch}  loss {mean:.4}  lr {:.2e}  {rate:.2} steps/s  ({:.0}s)",
                    args.lr * f, start.elapsed().as_secs_f64()
                );
                (window_start, window_steps) = (Instant::now(), 0);
            }
        }
        let loss = host(epoch_loss.expect("at least one batch"))?[0] as f64 / per_epoch as f64;
        if !loss.is_finite() {
            bail!("epoch {epoch}: loss is {loss}");
        }
        // The loss read-back above waited for the epoch's last step.
        train_seconds += epoch_start.elapsed().as_secs_f64();
        let (val_accuracy, val_macro_f1) = if val.ids.is_empty() {
            (0.0, 0.0)
        } else {
            let l = logits(&model.valid(), &val.ids, bs, args.seq_len, pad_id, device)?;
            let c = score(&l, &val.y, num_labels);
            (c.accuracy(), c.macro_f1())
        };
        let seconds = start.elapsed().as_secs_f64();
        if log {
            eprintln!(
                "[finetune] epoch {epoch}/{}  train loss {loss:.4}  val accuracy {val_accuracy:.4}  val macro-F1 {val_macro_f1:.4}  ({:.3} s/step; {seconds:.0}s)",
                args.epochs, train_seconds / step as f64
            );
        }
        history.push(EpochLog { epoch, loss, val_accuracy, val_macro_f1, seconds, train_seconds });
        window_start = Instant::now();
    }
    Ok((model.valid(), history))
}

// ------------------------------------------------------------------------------ saving

/// Files of the encoder directory copied beside the weights (those present).
const TOKENIZER_FILES: [&str; 4] = ["tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt"];

/// Sets `calibration` in the checkpoint's `config.json`: the category model's `temperature`
/// (the sidecar divides the logits by it before the softmax) or the guard's `threshold`.
fn write_calibration(dir: &Path, calibration: Value) -> Result<()> {
    let path = dir.join("config.json");
    let mut cfg: Value = serde_json::from_str(&std::fs::read_to_string(&path)?)?;
    cfg["calibration"] = calibration;
    std::fs::write(&path, serde_json::to_string_pretty(&cfg)? + "\n")?;
    Ok(())
}

/// Writes `dir` as an HF `BertForSequenceClassification` checkpoint: `config.json` (the
/// encoder's, with `architectures`, `id2label` and `label2id`), `model.safetensors` and the
/// encoder's tokenizer files.
pub fn save_hf<B: Backend>(model: &BertForSequenceClassification<B>, encoder_config: &Value, labels: &[String], encoder_dir: &Path, dir: &Path, dtype: SaveDtype, dropout: f64) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mut cfg = encoder_config.clone();
    let obj = cfg.as_object_mut().ok_or_else(|| anyhow!("encoder config.json is not an object"))?;
    obj.insert("architectures".into(), json!(["BertForSequenceClassification"]));
    obj.insert("id2label".into(), Value::Object(labels.iter().enumerate().map(|(i, l)| (i.to_string(), json!(l))).collect()));
    obj.insert("label2id".into(), Value::Object(labels.iter().enumerate().map(|(i, l)| (l.clone(), json!(i))).collect()));
    obj.insert("problem_type".into(), json!("single_label_classification"));
    obj.insert("classifier_dropout".into(), json!(dropout));
    obj.insert("torch_dtype".into(), json!(match dtype { SaveDtype::F32 => "float32", SaveDtype::F16 => "float16" }));
    obj.remove("dtype");
    std::fs::write(dir.join("config.json"), serde_json::to_string_pretty(&cfg)? + "\n")?;
    hf::save(model, &dir.join("model.safetensors"), dtype)?;
    for f in TOKENIZER_FILES {
        let src = encoder_dir.join(f);
        if src.exists() {
            std::fs::copy(&src, dir.join(f)).with_context(|| format!("cannot copy {}", src.display()))?;
        }
    }
    Ok(())
}

// ------------------------------------------------------------------------------ the command

/// Sequence-classification logits of `texts` by a saved checkpoint loaded as the sidecar
/// loads it: with `fixed_shape` (GPU backends compile per shape) in batches of `batch_size`
/// texts (padded with empty ones) × `seq_len` tokens, else in length-sorted batches.
pub fn classify_saved<B: Backend>(model: &mut Model<B>, texts: &[String], batch_size: usize, seq_len: usize, fixed_shape: bool) -> Result<Vec<Vec<f32>>> {
    if !fixed_shape {
        // On the CPU a batch costs its real tokens: texts of similar length together, each
        // batch padded to its longest.
        model.seq_buckets.clear();
        let mut order: Vec<usize> = (0..texts.len()).collect();
        order.sort_by_key(|&i| texts[i].len());
        let mut out = vec![Vec::new(); texts.len()];
        for chunk in order.chunks(batch_size.max(1)) {
            let batch: Vec<&str> = chunk.iter().map(|&i| texts[i].as_str()).collect();
            for (&i, l) in chunk.iter().zip(model.classify(&batch)?) {
                out[i] = l;
            }
        }
        return Ok(out);
    }
    model.seq_buckets = vec![seq_len];
    let mut out = Vec::with_capacity(texts.len());
    for chunk in texts.chunks(batch_size.max(1)) {
        let mut batch: Vec<&str> = chunk.iter().map(|t| t.as_str()).collect();
        batch.resize(batch_size.max(chunk.len()), "");
        let mut l = model.classify(&batch)?;
        l.truncate(chunk.len());
        out.extend(l);
    }
    Ok(out)
}

fn sample<T>(v: Vec<T>, limit: Option<usize>, seed: u64) -> Vec<T> {
    match limit {
        Some(n) if n < v.len() => {
            let mut idx: Vec<usize> = (0..v.len()).collect();
            Rng::new(seed ^ 0x5eed).shuffle(&mut idx);
            idx.truncate(n);
            idx.sort_unstable();
            let mut keep = vec![false; v.len()];
            for i in idx {
                keep[i] = true;
            }
            v.into_iter().zip(keep).filter(|(_, k)| *k).map(|(x, _)| x).collect()
        }
        _ => v,
    }
}

/// Where the command reads from.
pub struct Sources {
    pub dirs: DataDirs,
    pub encoder: PathBuf,
    pub peer_dir: PathBuf,
}

fn metrics_json(c: &Confusion) -> Value {
    json!({ "n": c.total(), "accuracy": c.accuracy(), "macro_f1": c.macro_f1() })
}

/// Default output directory of a task's fine-tuned model.
pub fn default_out(task: Task) -> PathBuf {
    PathBuf::from(match task {
        Task::Category => "models/category-model",
        Task::Jailbreak => "models/jailbreak-model",
    })
}

/// `finetune-category` / `finetune-jailbreak` on the backend chosen by `--device`.
pub fn run(task: Task, src: &Sources, args: &FinetuneArgs) -> Result<Value> {
    match args.device {
        DeviceKind::Cpu => run_on::<burn::backend::Autodiff<burn::backend::Flex>>(task, src, args, Default::default()),
        #[cfg(feature = "cuda")]
        DeviceKind::Cuda => {
            classifier_svc::gpu::probe()?;
            classifier_svc::gpu::configure_cubecl();
            run_on::<burn::backend::Autodiff<burn::backend::Cuda>>(task, src, args, burn::backend::cuda::CudaDevice::default())
        }
        #[cfg(not(feature = "cuda"))]
        DeviceKind::Cuda => bail!("--device cuda needs router-train built with `--features cuda`"),
    }
}

/// The peer cases, or `None` (evaluation skipped) when the folder lacks them.
fn load_peer(dir: &Path) -> Result<Option<crate::eval::Peer>> {
    if ["domain_classify_cases.json", "jailbreak_detection_cases.json"].iter().all(|f| dir.join(f).exists()) {
        crate::eval::Peer::load(dir).map(Some)
    } else {
        eprintln!("[finetune] no peer cases under {}: peer evaluation skipped", dir.display());
        Ok(None)
    }
}

/// Jailbreak metrics from P(`jailbreak`) of each text, a text flagged when its probability is
/// at least the threshold: the validation split (`val_y` 1 = jailbreak, 0 = benign: precision,
/// recall, F1, false-positive rate) and, when given, the peer jailbreak cases (all expected
/// flagged: recall) and the peer domain questions (all benign: false-positive rate), at
/// `threshold` and at each of the fixed trade-off thresholds of the evaluation report.
pub fn jailbreak_metrics(val_p: &[f32], val_y: &[usize], peer: Option<(&[f32], &[f32])>, threshold: f64) -> Value {
    let flag = |p: &[f32], t: f64| -> Vec<usize> { p.iter().map(|&p| usize::from(f64::from(p) >= t)).collect() };
    let c = Confusion::new(2, val_y, &flag(val_p, threshold));
    let m = c.class(1);
    let val = json!({
        "n": c.total(), "jailbreak": m.support, "benign": c.total() - m.support, "accuracy": c.accuracy(),
        "precision": m.precision, "recall": m.recall, "f1": m.f1, "false_positive_rate": c.false_positive_rate(),
    });
    let rate = |p: &[f32], t: f64| p.iter().filter(|&&p| f64::from(p) >= t).count() as f64 / p.len().max(1) as f64;
    let side = |positive: bool| -> Vec<f32> { val_p.iter().zip(val_y).filter(|(_, &y)| (y == 1) == positive).map(|(&p, _)| p).collect() };
    let (val_pos, val_neg) = (side(true), side(false));
    let peer_json = peer.map(|(jb, dom)| {
        json!({
            "jailbreak_cases": { "n": jb.len(), "recall": rate(jb, threshold) },
            "domain_questions": { "n": dom.len(), "false_positive_rate": rate(dom, threshold) },
        })
    });
    let tradeoff: Vec<Value> = crate::eval::TRADEOFF_THRESHOLDS
        .iter()
        .map(|&t| {
            json!({
                "threshold": t, "val_recall": rate(&val_pos, t), "val_fpr": rate(&val_neg, t),
                "peer_recall": peer.map(|(jb, _)| rate(jb, t)), "peer_domain_fpr": peer.map(|(_, dom)| rate(dom, t)),
            })
        })
        .collect();
    json!({ "threshold": threshold, "val": val, "peer": peer_json, "tradeoff": tradeoff })
}

fn print_jailbreak(m: &Value) {
    let f = |v: &Value| v.as_f64().unwrap_or(f64::NAN);
    let n = |v: &Value| v.as_u64().unwrap_or_default();
    let pct = |v: &Value| format!("{:.1}%", 100.0 * f(v));
    let v = &m["val"];
    println!("  flags P(jailbreak) >= {}", m["threshold"]);
    println!(
        "  val   n {:>5}  precision {:.4}  recall {:.4}  F1 {:.4}  false-positive rate {}",
        n(&v["n"]), f(&v["precision"]), f(&v["recall"]), f(&v["f1"]), pct(&v["false_positive_rate"])
    );
    if !m["peer"].is_null() {
        let (j, d) = (&m["peer"]["jailbreak_cases"], &m["peer"]["domain_questions"]);
        println!("  peer jailbreak cases   n {:>5}  recall {:.4}", n(&j["n"]), f(&j["recall"]));
        println!("  peer domain questions  n {:>5}  false-positive rate {}", n(&d["n"]), pct(&d["false_positive_rate"]));
    }
    println!("  threshold  val recall  val FPR  peer recall  peer domain FPR");
    for r in m["tradeoff"].as_array().into_iter().flatten() {
        let opt = |v: &Value, p: bool| if v.is_null() { "—".to_string() } else if p { pct(v) } else { format!("{:.3}", f(v)) };
        println!(
            "  {:>9}  {:>10.3}  {:>7}  {:>11}  {:>15}",
            r["threshold"].to_string(), f(&r["val_recall"]), pct(&r["val_fpr"]), opt(&r["peer_recall"], false), opt(&r["peer_domain_fpr"], true)
        );
    }
}

/// Fine-tunes, saves, reloads the saved directory as the sidecar does and evaluates it on the
/// validation split and the peer cases; writes `<out>/finetune-report.json` and returns it.
pub fn run_on<B: AutodiffBackend>(task: Task, src: &Sources, args: &FinetuneArgs, device: B::Device) -> Result<Value> {
    let t0 = Instant::now();
    let name = format!("{task:?}").to_lowercase();
    let out = args.out.clone().unwrap_or_else(|| default_out(task));
    let labels = train::labels(task);
    let k = labels.len();
    B::seed(&device, args.seed);
    let pre = load_pretrained::<B>(&src.encoder, k, args.dropout, args.seq_len, &device)?;
    let examples = train::examples(task, &src.dirs)?;
    // The calibration split is for the temperature and the threshold, never trained on.
    let (calibration_ex, examples): (Vec<_>, Vec<_>) = examples.into_iter().partition(|e| e.split == data::CALIBRATION);
    let (val_ex, train_ex): (Vec<_>, Vec<_>) = examples.into_iter().partition(|e| e.split == "validation");
    let train_ex = sample(train_ex, args.limit, args.seed);
    let val_ex = sample(val_ex, args.val_limit, args.seed);
    let encode = |ex: &[crate::data::Example]| -> Result<Encoded> {
        let texts: Vec<&str> = ex.iter().map(|e| e.text.as_str()).collect();
        let y = ex
            .iter()
            .map(|e| labels.iter().position(|l| *l == e.label).ok_or_else(|| anyhow!("unknown {name} label `{}`", e.label)))
            .collect::<Result<Vec<_>>>()?;
        Ok(Encoded { ids: pre.tokenizer.encode(&texts)?, y })
    };
    let (train_set, val_set) = (encode(&train_ex)?, encode(&val_ex)?);
    let truncated = train_set.ids.iter().filter(|e| e.len() >= args.seq_len).count();
    eprintln!(
        "[finetune] {name}: encoder {} on {:?}; {truncated} of {} training texts reach {} tokens (truncated)",
        src.encoder.display(), args.device, train_set.ids.len(), args.seq_len
    );
    let Pretrained { model, config, pad_id, .. } = pre;
    let (model, history) = match args.train_layers.filter(|&n| n < model.bert.layers.len()) {
        Some(n) => crate::top_layers::fit_top::<B>(model, n, &train_set, &val_set, k, pad_id, args, &device)?,
        None => fit::<B>(model, &train_set, &val_set, k, pad_id, args, &device, true)?,
    };
    let fit_seconds = t0.elapsed().as_secs_f64();

    save_hf(&model, &config, &labels, &src.encoder, &out, args.save_dtype, args.dropout)?;
    eprintln!("[finetune] wrote {}", out.display());

    // The saved directory, loaded the way the sidecar loads it.
    let inner_device = device.clone();
    let opts = LoadOptions { max_len: Some(args.seq_len), task: Some(ModelTask::SequenceClassification) };
    let mut saved = Model::<B::InnerBackend>::load(&out, &opts, &inner_device)?;
    let fixed = args.device != DeviceKind::Cpu;
    if saved.labels != labels {
        bail!("the saved labels {:?} differ from the training labels", saved.labels);
    }
    let val_texts: Vec<String> = val_ex.iter().map(|e| e.text.clone()).collect();
    let val_logits = classify_saved(&mut saved, &val_texts, args.batch_size, args.seq_len, fixed)?;
    // Same texts through the in-memory model: the saved one must give the same logits.
    let n_check = val_set.ids.len().min(4 * args.batch_size);
    let mem = logits(&model, &val_set.ids[..n_check], args.batch_size, args.seq_len, pad_id, &inner_device)?;
    let max_diff = mem.iter().flatten().zip(val_logits[..n_check].iter().flatten()).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
    let tolerance = match args.save_dtype { SaveDtype::F32 => 1e-3, SaveDtype::F16 => 0.5 };
    if max_diff > tolerance {
        bail!("the reloaded model's logits differ from the trained model's by up to {max_diff}");
    }
    eprintln!("[finetune] reloaded {}: max |Δlogit| vs the trained model {max_diff:.2e} on {n_check} validation texts", out.display());

    let peer = load_peer(&src.peer_dir)?;
    println!("fine-tuned {name} model ({}):", out.display());
    let evaluation = match task {
        Task::Category => {
            let c_val = score(&val_logits, &val_set.y, k);
            let c_peer = match peer {
                Some(p) => {
                    let y = p
                        .domain
                        .iter()
                        .map(|(_, c)| labels.iter().position(|l| l == c).ok_or_else(|| anyhow!("unknown peer category `{c}`")))
                        .collect::<Result<Vec<_>>>()?;
                    let texts: Vec<String> = p.domain.into_iter().map(|(q, _)| q).collect();
                    Some(score(&classify_saved(&mut saved, &texts, args.batch_size, args.seq_len, fixed)?, &y, k))
                }
                None => None,
            };
            println!("  val   n {:>5}  accuracy {:.4}  macro-F1 {:.4}", c_val.total(), c_val.accuracy(), c_val.macro_f1());
            if let Some(c) = &c_peer {
                println!("  peer  n {:>5}  accuracy {:.4}  macro-F1 {:.4}", c.total(), c.accuracy(), c.macro_f1());
            }
            // Temperature scaling on the calibration split (chat-style, never trained on),
            // stored in the checkpoint's config.json where the sidecar reads it.
            let temperature = if calibration_ex.is_empty() {
                1.0
            } else {
                let texts: Vec<String> = calibration_ex.iter().map(|e| e.text.clone()).collect();
                let y = calibration_ex.iter().map(|e| labels.iter().position(|l| *l == e.label).ok_or_else(|| anyhow!("unknown label `{}`", e.label))).collect::<Result<Vec<_>>>()?;
                let t = crate::calibrate::fit_temperature(&classify_saved(&mut saved, &texts, args.batch_size, args.seq_len, fixed)?, &y);
                write_calibration(&out, json!({ "temperature": t, "fitted_on": format!("{} held-out chat-style prompts (router-train/train-sets/chat-calib.jsonl)", calibration_ex.len()) }))?;
                eprintln!("[finetune] temperature {t:.3} fitted on {} calibration prompts, written to {}/config.json", texts.len(), out.display());
                t
            };
            let dev_dir = crate::sets::SetDirs::default().dev;
            let dev = if dev_dir.join("chat-dev.jsonl").exists() {
                let d = crate::dev_eval::sequence_model_on_dev(&dev_dir, &labels, temperature, crate::dev_eval::HeldOutTest::Skip, |t| classify_saved(&mut saved, t, args.batch_size, args.seq_len, fixed))?;
                d.print_summary();
                Some(d.json())
            } else {
                None
            };
            json!({ "val": metrics_json(&c_val), "peer": c_peer.as_ref().map(metrics_json), "temperature": temperature, "chat_dev": dev })
        }
        Task::Jailbreak => {
            // Softmax probability of the positive label, the server's `prompt_guard` score.
            let pos = labels.iter().position(|l| l == "jailbreak").ok_or_else(|| anyhow!("no `jailbreak` label"))?;
            let prob = |l: Vec<Vec<f32>>| -> Vec<f32> { l.iter().map(|l| softmax(l)[pos]).collect() };
            let val_p = prob(val_logits);
            let val_y: Vec<usize> = val_set.y.iter().map(|&y| usize::from(y == pos)).collect();
            let peer_p = match peer {
                Some(p) => {
                    let dom: Vec<String> = p.domain.into_iter().map(|(q, _)| q).collect();
                    let jb = prob(classify_saved(&mut saved, &p.jailbreak, args.batch_size, args.seq_len, fixed)?);
                    Some((jb, prob(classify_saved(&mut saved, &dom, args.batch_size, args.seq_len, fixed)?)))
                }
                None => None,
            };
            let mut m = jailbreak_metrics(&val_p, &val_y, peer_p.as_ref().map(|(j, d)| (j.as_slice(), d.as_slice())), 0.5);
            print_jailbreak(&m);
            // The serving threshold: the lowest that blocks at most GUARD_MAX_FPR of the
            // calibration split's benign prompts (chat-style look-alikes, never trained on).
            let benign: Vec<String> = calibration_ex.iter().filter(|e| e.label == "benign").map(|e| e.text.clone()).collect();
            if !benign.is_empty() {
                let t = crate::calibrate::threshold_for_fpr(&prob(classify_saved(&mut saved, &benign, args.batch_size, args.seq_len, fixed)?), crate::train::GUARD_MAX_FPR);
                write_calibration(&out, json!({ "threshold": t, "fitted_on": format!("{} held-out benign chat-style prompts, at most {}% blocked", benign.len(), crate::train::GUARD_MAX_FPR * 100.0) }))?;
                eprintln!("[finetune] guard threshold {t:.2} chosen on {} calibration prompts, written to {}/config.json", benign.len(), out.display());
                let dev_dir = crate::sets::SetDirs::default().dev;
                if dev_dir.join("guard-benign-dev.jsonl").exists() {
                    let dev = crate::sets::DevSets::load(&dev_dir)?;
                    let mut rate = |texts: Vec<String>| -> Result<f64> {
                        let p = prob(classify_saved(&mut saved, &texts, args.batch_size, args.seq_len, fixed)?);
                        Ok(p.iter().filter(|&&v| v >= t).count() as f64 / p.len().max(1) as f64)
                    };
                    let benign_blocked = rate(dev.benign.iter().map(|g| g.text.clone()).collect())?;
                    let recall = rate(dev.jailbreak.iter().map(|g| g.text.clone()).collect())?;
                    let chat_blocked = rate(dev.chat.iter().map(|c| c.text.clone()).collect())?;
                    let peer_recall = peer_p.as_ref().map(|(jb, _)| jb.iter().filter(|&&v| v >= t).count() as f64 / jb.len().max(1) as f64);
                    println!("  dev at threshold {t:.2}: benign look-alikes blocked {benign_blocked:.4}, chat prompts blocked {chat_blocked:.4}, jailbreak recall {recall:.4}, peer recall {:.4}", peer_recall.unwrap_or(f64::NAN));
                    m["dev"] = json!({ "threshold": t, "benign_blocked": benign_blocked, "chat_blocked": chat_blocked, "recall": recall, "peer_recall": peer_recall });
                }
            }
            m
        }
    };

    let last = history.last().expect("at least one epoch");
    let steps = history.len() * (train_set.ids.len() / args.batch_size);
    let mut report = json!({
        "task": name,
        "model": out.display().to_string(),
        "encoder": src.encoder.file_name().and_then(|n| n.to_str()).unwrap_or("encoder"),
        "architecture": "BertForSequenceClassification",
        "device": format!("{:?}", args.device).to_lowercase(),
        "labels": labels,
        "train_examples": train_set.ids.len(),
        "validation_examples": val_set.ids.len(),
        "epochs": args.epochs,
        "train_layers": args.train_layers,
        "batch_size": args.batch_size,
        "seq_len": args.seq_len,
        "lr_encoder": args.lr,
        "lr_head": args.head_lr,
        "weight_decay": format!("{}", args.weight_decay).parse::<f64>().unwrap_or_default(),
        "warmup_fraction": args.warmup,
        "dropout": args.dropout,
        "clip_norm": args.clip_norm,
        "class_weights": format!("{:?}", args.class_weights).to_lowercase(),
        "seed": args.seed,
        "limit": args.limit,
        "val_limit": args.val_limit,
        "save_dtype": format!("{:?}", args.save_dtype).to_lowercase(),
        "steps": steps,
        "wall_seconds_to_trained": fit_seconds,
        "train_step_seconds": last.train_seconds,
        "steps_per_second": steps as f64 / last.train_seconds.max(1e-9),
        "history": history.iter().map(|h| json!({ "epoch": h.epoch, "train_loss": h.loss, "val_accuracy": h.val_accuracy, "val_macro_f1": h.val_macro_f1, "seconds": h.seconds, "train_seconds": h.train_seconds })).collect::<Vec<_>>(),
        "final_epoch_val_accuracy": last.val_accuracy,
        "reload_max_abs_logit_diff": max_diff,
    });
    if let (Some(r), Value::Object(e)) = (report.as_object_mut(), evaluation) {
        r.extend(e);
    }
    let path = out.join("finetune-report.json");
    std::fs::write(&path, serde_json::to_string_pretty(&report)? + "\n").with_context(|| format!("cannot write {}", path.display()))?;
    eprintln!("[finetune] wrote {} ({:.0}s in all)", path.display(), t0.elapsed().as_secs_f64());
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::{Autodiff, Flex};
    use classifier_svc::model::Task as ModelTask;

    type B = Autodiff<Flex>;

    /// Tiny random BERT (2 layers, hidden 32, vocabulary of 125) with a pooler, saved HF-style.
    fn fixture() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../classifier-svc/fixtures/bert-seq")
    }

    const KEYWORDS: [&[&str]; 3] = [
        &["law", "contract", "war", "history", "state"],
        &["cell", "energy", "quantum", "physics", "biology"],
        &["code", "rust", "market", "price", "model"],
    ];
    const FILLER: &[&str] = &["the", "is", "what", "of", "a", "an", "how", "do", "i", "write", "in", "and", "or", "to", "for", "with", "hello", "world"];

    /// Filler words with one keyword of class `i % k` at a random place; classes in turn.
    fn texts(n: usize, seed: u64, k: usize) -> (Vec<String>, Vec<usize>) {
        let mut rng = Rng::new(seed);
        let mut out = (Vec::new(), Vec::new());
        for i in 0..n {
            let c = i % k;
            let mut w: Vec<&str> = (0..4 + rng.below(4)).map(|_| FILLER[rng.below(FILLER.len())]).collect();
            let kw = KEYWORDS[c][rng.below(KEYWORDS[c].len())];
            w.insert(rng.below(w.len() + 1), kw);
            out.0.push(w.join(" "));
            out.1.push(c);
        }
        out
    }

    fn args() -> FinetuneArgs {
        let mut a = FinetuneArgs::defaults();
        a.epochs = 12;
        a.lr = 1e-3;
        a.head_lr = 3e-3;
        a.batch_size = 8;
        a.seq_len = 16;
        a.warmup = 0.1;
        a.seed = 7;
        a
    }

    /// Labels of a `k`-class fixture task: the jailbreak task's for 2 classes.
    fn labels(k: usize) -> Vec<String> {
        let l: &[&str] = if k == 2 { &crate::data::JAILBREAK_LABELS } else { &["a", "b", "c"] };
        l.iter().map(|s| s.to_string()).collect()
    }

    fn setup(seed: u64, k: usize) -> (Pretrained<B>, Encoded, Encoded, Vec<String>) {
        let device = Default::default();
        B::seed(&device, seed);
        let pre = load_pretrained::<B>(&fixture(), k, 0.1, 16, &device).unwrap();
        let (tt, ty) = texts(96, 1, k);
        let (vt, vy) = texts(48, 2, k);
        let train = Encoded { ids: pre.tokenizer.encode(&tt).unwrap(), y: ty };
        let val = Encoded { ids: pre.tokenizer.encode(&vt).unwrap(), y: vy };
        (pre, train, val, vt)
    }

    fn max_diff(a: &[Vec<f32>], b: &[Vec<f32>]) -> f32 {
        assert_eq!(a.len(), b.len());
        a.iter().flatten().zip(b.iter().flatten()).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max)
    }

    /// Fine-tunes the fixture on a `k`-class keyword task for `epochs`, then saves, reloads and
    /// compares.
    fn converges_and_reloads(k: usize, epochs: usize, min_accuracy: f64) {
        let _guard = crate::TEST_SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        let device = Default::default();
        let (pre, train, val, val_texts) = setup(3, k);
        let Pretrained { model, config, pad_id, .. } = pre;
        let before = score(&logits(&model.valid(), &val.ids, 8, 16, pad_id, &device).unwrap(), &val.y, k).accuracy();
        let a = FinetuneArgs { epochs, ..args() };
        let (model, log) = fit::<B>(model, &train, &val, k, pad_id, &a, &device, false).unwrap();
        let losses: Vec<f64> = log.iter().map(|l| l.loss).collect();
        assert!(losses.last().unwrap() < &(losses[0] * 0.5), "loss {losses:?}");
        let after = log.last().unwrap().val_accuracy;
        // Chance is 1/k; a frozen encoder (lr 0) stays there with this random fixture.
        assert!(after > min_accuracy, "validation accuracy {before} before, {after} after ({losses:?})");

        let labels = || labels(k);
        let dir = std::env::temp_dir().join(format!("router-train-finetune-{k}-{}", std::process::id()));
        save_hf(&model, &config, &labels(), &fixture(), &dir, SaveDtype::F32, 0.1).unwrap();
        let cfg: Value = serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
        assert_eq!(cfg["architectures"], json!(["BertForSequenceClassification"]));
        let id2label: serde_json::Map<String, Value> = labels().iter().enumerate().map(|(i, l)| (i.to_string(), json!(l))).collect();
        let label2id: serde_json::Map<String, Value> = labels().iter().enumerate().map(|(i, l)| (l.clone(), json!(i))).collect();
        assert_eq!(cfg["id2label"], Value::Object(id2label));
        assert_eq!(cfg["label2id"], Value::Object(label2id));
        assert!(dir.join("tokenizer.json").exists());

        // Loaded as the sidecar loads it: the task comes from `architectures`.
        let opts = LoadOptions { max_len: Some(16), task: None };
        let mut saved = Model::<Flex>::load(&dir, &opts, &device).unwrap();
        assert_eq!(saved.task, ModelTask::SequenceClassification);
        assert_eq!(saved.labels, labels());
        let trained = logits(&model, &val.ids, 8, 16, pad_id, &device).unwrap();
        // Padded to the longest text of each call (the sidecar on CPU) ...
        let reloaded = saved.classify(&val_texts).unwrap();
        let d = max_diff(&trained, &reloaded);
        assert!(d <= 1e-5, "max |Δlogit| {d}");
        // ... and in fixed-shape batches (the sidecar on GPU, and the command's evaluation).
        let d = max_diff(&trained, &classify_saved(&mut saved, &val_texts, 8, 16, true).unwrap());
        assert!(d <= 1e-5, "max |Δlogit| {d}");

        // f16 weights: half the file, logits close.
        let dir16 = dir.with_extension("f16");
        save_hf(&model, &config, &labels(), &fixture(), &dir16, SaveDtype::F16, 0.1).unwrap();
        let data_bytes = |d: &Path| {
            let b = std::fs::read(d.join("model.safetensors")).unwrap();
            b.len() - 8 - u64::from_le_bytes(b[..8].try_into().unwrap()) as usize
        };
        assert_eq!(data_bytes(&dir16) * 2, data_bytes(&dir));
        let half = Model::<Flex>::load(&dir16, &opts, &device).unwrap().classify(&val_texts).unwrap();
        let d = max_diff(&trained, &half);
        assert!(d < 0.05, "f16 max |Δlogit| {d}");
        std::fs::remove_dir_all(&dir).ok();
        std::fs::remove_dir_all(&dir16).ok();
    }

    #[test]
    fn top_layer_fine_tuning_converges_keeps_the_lower_layers_and_reloads_identically() {
        let _guard = crate::TEST_SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        let device = Default::default();
        let (pre, train, val, val_texts) = setup(3, 3);
        let Pretrained { model, config, pad_id, .. } = pre;
        let n = model.bert.layers.len();
        assert!(n >= 2, "the fixture needs a frozen layer below the trained one");
        let frozen = |m: &BertForSequenceClassification<Flex>| (m.bert.embeddings.word.weight.val().into_data(), m.bert.layers[0].qkv.weight.val().into_data());
        let before = frozen(&model.valid());
        let a = FinetuneArgs { epochs: 20, lr: 3e-3, head_lr: 1e-2, train_layers: Some(1), ..args() };
        let (model, log) = crate::top_layers::fit_top::<B>(model, 1, &train, &val, 3, pad_id, &a, &device).unwrap();
        let losses: Vec<f64> = log.iter().map(|l| l.loss).collect();
        assert!(losses.last().unwrap() < &(losses[0] * 0.5), "loss {losses:?}");
        assert!(log.last().unwrap().val_accuracy > 0.6, "validation accuracy {:?}", log.last());
        assert_eq!(model.bert.layers.len(), n);
        assert_eq!(frozen(&model), before, "the lower layers changed");

        // Saved and reloaded as the sidecar loads it: the same logits as the trained model.
        let dir = std::env::temp_dir().join(format!("router-train-top-layers-{}", std::process::id()));
        save_hf(&model, &config, &labels(3), &fixture(), &dir, SaveDtype::F32, 0.1).unwrap();
        let saved = Model::<Flex>::load(&dir, &LoadOptions { max_len: Some(16), task: None }, &device).unwrap();
        let d = max_diff(&logits(&model, &val.ids, 8, 16, pad_id, &device).unwrap(), &saved.classify(&val_texts).unwrap());
        assert!(d <= 1e-4, "max |Δlogit| {d}");
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn fine_tuning_converges_and_the_saved_checkpoint_reloads_identically() {
        converges_and_reloads(3, 12, 0.6);
    }

    /// The jailbreak task's shape: 2 labels, `benign` first, `jailbreak` second (chance 1/2;
    /// the binary keyword task generalises more slowly from 96 texts).
    #[test]
    fn binary_fine_tuning_converges_and_saves_the_jailbreak_labels() {
        converges_and_reloads(2, 20, 0.7);
    }

    #[test]
    fn jailbreak_metrics_flag_at_the_threshold() {
        // Validation: 2 jailbreaks (one found), 4 benign (one false positive).
        let val_p = [0.9, 0.2, 0.1, 0.5, 0.3, 0.0];
        let val_y = [1, 1, 0, 0, 0, 0];
        let (jb, dom) = ([0.7f32, 0.55, 0.05, 0.45], [0.6f32, 0.01]);
        let m = jailbreak_metrics(&val_p, &val_y, Some((&jb, &dom)), 0.5);
        let v = &m["val"];
        assert_eq!((v["n"].as_u64(), v["jailbreak"].as_u64(), v["benign"].as_u64()), (Some(6), Some(2), Some(4)));
        assert_eq!((v["precision"].as_f64(), v["recall"].as_f64(), v["false_positive_rate"].as_f64()), (Some(0.5), Some(0.5), Some(0.25)));
        assert_eq!(m["peer"]["jailbreak_cases"]["recall"].as_f64(), Some(0.5));
        assert_eq!(m["peer"]["domain_questions"]["false_positive_rate"].as_f64(), Some(0.5));
        let curve = m["tradeoff"].as_array().unwrap();
        assert_eq!(curve.len(), crate::eval::TRADEOFF_THRESHOLDS.len());
        let at = |t: f64| curve.iter().find(|r| r["threshold"].as_f64() == Some(t)).unwrap();
        assert_eq!(at(0.1)["val_recall"].as_f64(), Some(1.0));
        assert_eq!(at(0.1)["val_fpr"].as_f64(), Some(0.75));
        assert_eq!(at(0.5)["peer_recall"], m["peer"]["jailbreak_cases"]["recall"]);
        assert_eq!(at(0.9)["peer_domain_fpr"].as_f64(), Some(0.0));
        let no_peer = jailbreak_metrics(&val_p, &val_y, None, 0.5);
        assert!(no_peer["peer"].is_null() && no_peer["tradeoff"][0]["peer_recall"].is_null());
        assert_eq!(no_peer["val"], m["val"]);
    }

    #[test]
    fn training_is_deterministic() {
        let _guard = crate::TEST_SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        let device = Default::default();
        let mut a = args();
        a.epochs = 2;
        let run = || {
            let (pre, train, val, _) = setup(5, 3);
            let (m, log) = fit::<B>(pre.model, &train, &val, 3, pre.pad_id, &a, &device, false).unwrap();
            (log.iter().map(|l| l.loss).collect::<Vec<_>>(), logits(&m, &val.ids, 8, 16, pre.pad_id, &device).unwrap())
        };
        assert_eq!(run(), run());
        // The top-layer path trains on two threads (when the machine has them): the same too.
        let top = || {
            let (pre, train, val, _) = setup(5, 3);
            let a = FinetuneArgs { epochs: 4, train_layers: Some(1), ..args() };
            let (m, log) = crate::top_layers::fit_top::<B>(pre.model, 1, &train, &val, 3, pre.pad_id, &a, &device).unwrap();
            (log.iter().map(|l| l.loss).collect::<Vec<_>>(), logits(&m, &val.ids, 8, 16, pre.pad_id, &device).unwrap())
        };
        assert_eq!(top(), top());
    }

    #[test]
    fn padding_is_masked() {
        let _guard = crate::TEST_SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        let device = Default::default();
        let pre = load_pretrained::<Flex>(&fixture(), 3, 0.1, 16, &device).unwrap();
        let enc = pre.tokenizer.encode(&["what is the law of energy", "hello"]).unwrap();
        let padded = logits(&pre.model, &enc, 2, 16, pre.pad_id, &device).unwrap();
        for (i, e) in enc.iter().enumerate() {
            let alone = logits(&pre.model, std::slice::from_ref(e), 1, e.len(), pre.pad_id, &device).unwrap();
            assert!(max_diff(&alone, &padded[i..i + 1]) < 1e-5);
        }
    }

    #[test]
    fn learning_rate_warms_up_then_decays_to_zero() {
        let f: Vec<f64> = (0..10).map(|t| lr_factor(t, 10, 2)).collect();
        assert_eq!(&f[..3], &[0.5, 1.0, 1.0]);
        assert!(f.windows(2).skip(2).all(|w| w[1] < w[0]));
        assert!(f[9] > 0.0 && f[9] <= 0.125 + 1e-12);
    }

    #[test]
    fn limit_takes_a_seeded_sample_in_order() {
        let v: Vec<usize> = (0..100).collect();
        let s = sample(v.clone(), Some(10), 1);
        assert_eq!(s.len(), 10);
        assert!(s.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(s, sample(v.clone(), Some(10), 1));
        assert_eq!(sample(v.clone(), None, 1), v);
    }
}
