//! Fine-tuning only the top encoder layers (`finetune-category --train-layers K`), the path that
//! fits a 2-core CPU: the frozen lower layers run once per text (no gradients, no padding beyond
//! a length-sorted batch), their outputs stay in memory, and every epoch runs only the top `K`
//! layers, the pooler and the classifier forward and backward.
//!
//! What it saves is the same HF `BertForSequenceClassification` checkpoint as the full
//! fine-tune (the lower layers are the pretrained ones), so the sidecar serves it unchanged.
//!
//! Batches are drawn by length (a shuffled pool sorted into batches of similar length, the
//! batches shuffled again): on the CPU a batch costs its real tokens, not a fixed shape.

use std::time::Instant;

use anyhow::{bail, Result};
use burn::module::{AutodiffModule, Module};
use burn::nn::loss::CrossEntropyLossConfig;
use burn::optim::{GradientsAccumulator, GradientsParams, Optimizer};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Int, Tensor, TensorData};
use classifier_svc::model::bert::{Bert, BertClassificationHead, BertForSequenceClassification, BertLayer};
use classifier_svc::model::{attention_bias, Batch};

use crate::finetune::{adamw, lr_factor, score, ClassWeights, Encoded, EpochLog, FinetuneArgs};
use crate::text::Rng;
use crate::train::balanced_weights;

/// Batches of similar length are formed within pools of this many batches.
const POOL_BATCHES: usize = 16;

/// The trainable part: the top encoder layers, the pooler and the classifier.
#[derive(Module, Debug)]
pub struct TopClassifier<B: Backend> {
    pub layers: Vec<BertLayer<B>>,
    pub head: BertClassificationHead<B>,
}

impl<B: Backend> TopClassifier<B> {
    /// Hidden states after the frozen layers `[B, S, H]` (padding masked by `bias`) → logits.
    pub fn forward(&self, x: Tensor<B, 3>, bias: Option<Tensor<B, 4>>) -> Tensor<B, 2> {
        self.head.forward(self.top(x, bias))
    }

    /// The top layers; only `[CLS]` reaches the pooler, so the last one computes that position alone.
    fn top(&self, mut x: Tensor<B, 3>, bias: Option<Tensor<B, 4>>) -> Tensor<B, 3> {
        let (last, below) = self.layers.split_last().expect("at least one layer");
        for layer in below {
            x = layer.forward(x, bias.clone());
        }
        last.forward_first(x, bias)
    }

    /// The training forward: as [`Self::forward`], with the classifier's dropout applied as
    /// `keep` (`[B, H]`, 0 or 1/(1-p); from [`dropout_keep`]) instead of by the head's own
    /// dropout module. burn's CPU backend draws random numbers from one process-wide generator,
    /// so two training threads drawing their masks in whatever order they get there would make
    /// every run different; these masks depend only on the seed, the step and the share.
    fn forward_train(&self, x: Tensor<B, 3>, bias: Option<Tensor<B, 4>>, keep: Tensor<B, 2>) -> Tensor<B, 2> {
        self.head.classifier.forward(self.head.pooler.forward(self.top(x, bias)) * keep)
    }
}

/// The seed of the dropout mask of share `share` (< 256) of training step `step`. (At step 0,
/// share 0 it is the run's seed itself, which the batch order's generator also starts from;
/// harmless, and kept so that trained models stay the same.)
fn dropout_seed(seed: u64, step: usize, share: usize) -> u64 {
    seed ^ (((step as u64) << 8) | share as u64).wrapping_mul(0x2545_f491_4f6c_dd1d)
}

/// A dropout mask for `rows` × `hidden` values: each kept with probability `1 - p` and scaled
/// by `1 / (1 - p)`, the rest 0; the same for the same `seed` whatever thread draws it.
fn dropout_keep(seed: u64, rows: usize, hidden: usize, p: f64) -> Vec<f32> {
    if p <= 0.0 {
        return vec![1.0; rows * hidden];
    }
    let mut rng = Rng::new(seed);
    let scale = (1.0 / (1.0 - p)) as f32;
    // 53 random bits as a uniform number in [0, 1).
    (0..rows * hidden).map(|_| if ((rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64) < p { 0.0 } else { scale }).collect()
}

/// Hidden states after the frozen lower layers: one `[len, H]` block per text, unpadded.
pub struct Activations {
    data: Vec<f32>,
    /// Start of each text's block in `data`, in floats.
    offsets: Vec<usize>,
    lens: Vec<usize>,
    hidden: usize,
}

impl Activations {
    pub fn len(&self) -> usize {
        self.lens.len()
    }

    pub fn is_empty(&self) -> bool {
        self.lens.is_empty()
    }

    /// The texts `idx` right-padded to the longest of them: `[B, S, H]` and the padding bias
    /// (`None` when all have the same length).
    fn batch<B: Backend>(&self, idx: &[usize], device: &B::Device) -> (Tensor<B, 3>, Option<Tensor<B, 4>>) {
        let h = self.hidden;
        let s = idx.iter().map(|&i| self.lens[i]).max().unwrap_or(1).max(1);
        let mut x = vec![0f32; idx.len() * s * h];
        for (n, &i) in idx.iter().enumerate() {
            let len = self.lens[i];
            x[n * s * h..(n * s + len) * h].copy_from_slice(&self.data[self.offsets[i]..self.offsets[i] + len * h]);
        }
        let lens: Vec<usize> = idx.iter().map(|&i| self.lens[i]).collect();
        let bias = lens.iter().any(|&l| l < s).then(|| attention_bias::<B>(&lens, s, None, device));
        (Tensor::from_data(TensorData::new(x, [idx.len(), s, h]), device), bias)
    }
}

/// Runs the embeddings and layers `0..lower` of `bert` over every token sequence (longest
/// first cut to `seq_len`), in length-sorted batches, with a progress line every 10 s.
pub fn lower_activations<B: Backend>(bert: &Bert<B>, lower: usize, encs: &[Vec<u32>], seq_len: usize, pad_id: u32, batch_size: usize, what: &str, device: &B::Device) -> Result<Activations> {
    let hidden = bert.embeddings.word.weight.dims()[1];
    let lens: Vec<usize> = encs.iter().map(|e| e.len().min(seq_len).max(1)).collect();
    let mut offsets = Vec::with_capacity(lens.len());
    let mut total = 0usize;
    for &l in &lens {
        offsets.push(total);
        total += l * hidden;
    }
    let mut data = vec![0f32; total];
    let mut order: Vec<usize> = (0..encs.len()).collect();
    order.sort_by_key(|&i| lens[i]);
    let chunks: Vec<&[usize]> = order.chunks(batch_size.max(1)).collect();
    let total_tokens: usize = lens.iter().sum();
    let start = Instant::now();
    let progress = std::sync::Mutex::new((Instant::now(), 0usize, 0usize));
    // One batch per thread at a time (burn's CPU backend keeps about one core busy per pass).
    let run = |chunk: &[usize]| -> Result<Vec<f32>> {
        let rows: Vec<Vec<u32>> = chunk.iter().map(|&i| encs[i][..lens[i].min(encs[i].len())].to_vec()).collect();
        let batch = Batch::new(&rows, pad_id);
        let x = bert.forward_layers(bert.embed(batch.ids(device)), 0..lower, batch.padding_bias(device));
        let flat = x.into_data().convert::<f32>().into_vec::<f32>().map_err(|e| anyhow::anyhow!("reading activations back: {e:?}"))?;
        let mut p = progress.lock().unwrap_or_else(|e| e.into_inner());
        p.1 += chunk.len();
        p.2 += chunk.iter().map(|&i| lens[i]).sum::<usize>();
        if p.0.elapsed().as_secs_f32() > 10.0 || p.1 == encs.len() {
            let el = start.elapsed().as_secs_f32();
            // Longer texts come last: estimate by tokens, not texts.
            let eta = el / p.2.max(1) as f32 * (total_tokens - p.2) as f32;
            eprintln!("[finetune] frozen layers 1-{lower}, {what}: {}/{} texts, elapsed {el:.0}s, eta {eta:.0}s", p.1, encs.len());
            p.0 = Instant::now();
        }
        Ok(flat)
    };
    let threads = worker_threads().min(chunks.len()).max(1);
    let outputs: Vec<Vec<(usize, Vec<f32>)>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let (run, chunks) = (&run, &chunks);
                scope.spawn(move || (t..chunks.len()).step_by(threads).map(|c| run(chunks[c]).map(|flat| (c, flat))).collect::<Result<Vec<_>>>())
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("activation worker panicked")).collect::<Result<Vec<_>>>()
    })?;
    for (c, flat) in outputs.into_iter().flatten() {
        let s = flat.len() / (chunks[c].len() * hidden);
        for (n, &i) in chunks[c].iter().enumerate() {
            let len = lens[i];
            data[offsets[i]..offsets[i] + len * hidden].copy_from_slice(&flat[n * s * hidden..(n * s + len) * hidden]);
        }
    }
    Ok(Activations { data, offsets, lens, hidden })
}

/// Threads for the CPU passes: one per available core.
fn worker_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Batches of `bs` texts for one epoch: a shuffled order cut into pools, each pool sorted by
/// length and cut into batches, all batches shuffled (a partial last batch is kept).
fn length_batches(lens: &[usize], bs: usize, rng: &mut Rng) -> Vec<Vec<usize>> {
    let mut order: Vec<usize> = (0..lens.len()).collect();
    rng.shuffle(&mut order);
    let mut batches: Vec<Vec<usize>> = Vec::new();
    for pool in order.chunks(bs * POOL_BATCHES) {
        let mut pool = pool.to_vec();
        pool.sort_by_key(|&i| lens[i]);
        batches.extend(pool.chunks(bs).map(|c| c.to_vec()));
    }
    rng.shuffle(&mut batches);
    batches
}

/// Logits of every text of `acts` by the top layers, in length-sorted batches.
fn top_logits<B: Backend>(model: &TopClassifier<B>, acts: &Activations, bs: usize, device: &B::Device) -> Result<Vec<Vec<f32>>> {
    let mut order: Vec<usize> = (0..acts.len()).collect();
    order.sort_by_key(|&i| acts.lens[i]);
    let mut out = vec![Vec::new(); acts.len()];
    for chunk in order.chunks(bs.max(1)) {
        let (x, bias) = acts.batch::<B>(chunk, device);
        let l = model.forward(x, bias);
        let k = l.dims()[1];
        let flat = l.into_data().convert::<f32>().into_vec::<f32>().map_err(|e| anyhow::anyhow!("reading logits back: {e:?}"))?;
        for (n, &i) in chunk.iter().enumerate() {
            out[i] = flat[n * k..(n + 1) * k].to_vec();
        }
    }
    Ok(out)
}

/// Fine-tunes the top `train_layers` layers of `model` (and its head) on `train`, the lower
/// ones frozen; validation metrics after every epoch. Returns the whole model for inference
/// (the pretrained lower layers with the trained top) and the per-epoch log.
#[allow(clippy::too_many_arguments)]
pub fn fit_top<B: AutodiffBackend>(
    model: BertForSequenceClassification<B>,
    train_layers: usize,
    train: &Encoded,
    val: &Encoded,
    num_labels: usize,
    pad_id: u32,
    args: &FinetuneArgs,
    device: &B::Device,
) -> Result<(BertForSequenceClassification<B::InnerBackend>, Vec<EpochLog>)> {
    let bs = args.batch_size;
    let n_layers = model.bert.layers.len();
    if train_layers == 0 || train_layers > n_layers {
        bail!("--train-layers {train_layers}: the encoder has {n_layers} layers");
    }
    if bs == 0 || train.ids.len() < bs {
        bail!("{} training examples: fewer than one batch of {bs}", train.ids.len());
    }
    let lower = n_layers - train_layers;
    let BertForSequenceClassification { bert, head } = model;
    let Bert { embeddings, mut layers } = bert;
    let top_layers = layers.split_off(lower);
    // The frozen part runs without autodiff.
    let frozen: Bert<B::InnerBackend> = Bert { embeddings, layers }.valid();
    let inner_device = device.clone();
    let t0 = Instant::now();
    let train_acts = lower_activations(&frozen, lower, &train.ids, args.seq_len, pad_id, bs, "training texts", &inner_device)?;
    let val_acts = lower_activations(&frozen, lower, &val.ids, args.seq_len, pad_id, bs, "validation texts", &inner_device)?;
    let acts_seconds = t0.elapsed().as_secs_f64();
    let train_tokens: usize = train_acts.lens.iter().sum();
    eprintln!(
        "[finetune] frozen activations of {} + {} texts ({train_tokens} training tokens, {:.0} MB) in {acts_seconds:.0}s",
        train_acts.len(), val_acts.len(), (train_acts.data.len() + val_acts.data.len()) as f64 * 4.0 / 1e6
    );

    let per_epoch = train.ids.len().div_ceil(bs);
    let total = per_epoch * args.epochs;
    let warmup = ((total as f64 * args.warmup).ceil() as usize).min(total);
    let mut opt_top = adamw(args).init::<B, Vec<BertLayer<B>>>();
    let mut opt_head = adamw(args).init::<B, BertClassificationHead<B>>();
    let weights = match args.class_weights {
        ClassWeights::Balanced => Some(balanced_weights(&train.y, num_labels)),
        ClassWeights::None => None,
    };
    let loss_fn = CrossEntropyLossConfig::new().with_weights(weights).init::<B>(device);
    eprintln!(
        "[finetune] top {train_layers} of {n_layers} layers: {} train / {} validation examples, batch {bs}, {per_epoch} steps/epoch, {total} steps ({warmup} warm-up), lr {} (head {}), seed {}",
        train.ids.len(), val.ids.len(), args.lr, args.head_lr, args.seed
    );
    let mut model = TopClassifier { layers: top_layers, head };
    // The classifier's dropout, applied by `forward_train` with masks of its own.
    let (hidden, dropout) = (train_acts.hidden, model.head.dropout.prob);
    let threads = worker_threads().min(bs).max(1);
    let mut rng = Rng::new(args.seed);
    let mut history = Vec::new();
    let start = Instant::now();
    let (mut step, mut train_seconds) = (0usize, 0f64);
    let (mut window_start, mut window_steps, mut window_loss) = (Instant::now(), 0usize, 0f64);
    for epoch in 1..=args.epochs {
        let epoch_start = Instant::now();
        let mut epoch_loss = 0f64;
        for idx in length_batches(&train_acts.lens, bs, &mut rng) {
            // Data parallel: each thread takes a share of the batch, forward and backward;
            // the shares' losses are weighted by their size, so the summed gradients are the
            // whole batch's.
            let shares: Vec<&[usize]> = idx.chunks(idx.len().div_ceil(threads)).collect();
            let results = std::thread::scope(|scope| {
                let handles: Vec<_> = shares
                    .iter()
                    .enumerate()
                    .map(|(n, share)| {
                        let (loss_fn, train_acts) = (&loss_fn, &train_acts);
                        // A copy with its own autodiff leaves (same parameter ids): threads
                        // that share leaves serialise, and deadlock, on burn's graph lock.
                        let model = TopClassifier::<B>::from_inner(model.valid());
                        let weight = share.len() as f32 / idx.len() as f32;
                        scope.spawn(move || {
                            let (x, bias) = train_acts.batch::<B>(share, device);
                            let y: Vec<i64> = share.iter().map(|&i| train.y[i] as i64).collect();
                            let y = Tensor::<B, 1, Int>::from_data(TensorData::new(y, [share.len()]), device);
                            let keep = dropout_keep(dropout_seed(args.seed, step, n), share.len(), hidden, dropout);
                            let keep = Tensor::<B, 2>::from_data(TensorData::new(keep, [share.len(), hidden]), device);
                            let loss = loss_fn.forward(model.forward_train(x, bias, keep), y) * weight;
                            let mut grads = loss.backward();
                            let g_top = GradientsParams::from_module(&mut grads, &model.layers);
                            let g_head = GradientsParams::from_module(&mut grads, &model.head);
                            // On the CPU the loss is ready; reading it costs nothing.
                            let l = { use burn::tensor::ElementConversion; loss.into_scalar().elem::<f64>() };
                            (g_top, g_head, l)
                        })
                    })
                    .collect();
                handles.into_iter().map(|h| h.join().expect("training worker panicked")).collect::<Vec<_>>()
            });
            let (mut acc_top, mut acc_head) = (GradientsAccumulator::<Vec<BertLayer<B>>>::new(), GradientsAccumulator::<BertClassificationHead<B>>::new());
            let mut l = 0f64;
            for (g_top, g_head, share_loss) in results {
                acc_top.accumulate(&model.layers, g_top);
                acc_head.accumulate(&model.head, g_head);
                l += share_loss;
            }
            let f = lr_factor(step, total, warmup);
            let TopClassifier { layers, head } = model;
            model = TopClassifier { layers: opt_top.step(args.lr * f, layers, acc_top.grads()), head: opt_head.step(args.head_lr * f, head, acc_head.grads()) };
            if !l.is_finite() {
                bail!("loss is {l} at step {step}");
            }
            epoch_loss += l;
            window_loss += l;
            step += 1;
            window_steps += 1;
            if args.log_every > 0 && (step.is_multiple_of(args.log_every) || step == total) {
                let rate = window_steps as f64 / window_start.elapsed().as_secs_f64();
                let eta = (total - step) as f64 / rate;
                eprintln!(
                    "[finetune] step {step:>5}/{total}  epoch {epoch}  loss {:.4}  lr {:.2e}  {rate:.2} steps/s  ({:.0}s, eta {eta:.0}s)",
                    window_loss / window_steps as f64, args.lr * f, start.elapsed().as_secs_f64()
                );
                (window_start, window_steps, window_loss) = (Instant::now(), 0, 0.0);
            }
        }
        train_seconds += epoch_start.elapsed().as_secs_f64();
        let loss = epoch_loss / per_epoch as f64;
        let (val_accuracy, val_macro_f1) = if val_acts.is_empty() {
            (0.0, 0.0)
        } else {
            let c = score(&top_logits(&model.valid(), &val_acts, bs, &inner_device)?, &val.y, num_labels);
            (c.accuracy(), c.macro_f1())
        };
        let seconds = start.elapsed().as_secs_f64();
        eprintln!(
            "[finetune] epoch {epoch}/{}  train loss {loss:.4}  val accuracy {val_accuracy:.4}  val macro-F1 {val_macro_f1:.4}  ({:.3} s/step; {seconds:.0}s)",
            args.epochs, train_seconds / step as f64
        );
        history.push(EpochLog { epoch, loss, val_accuracy, val_macro_f1, seconds, train_seconds });
        // The next progress line measures training steps only, not the validation pass.
        (window_start, window_steps, window_loss) = (Instant::now(), 0, 0.0);
    }
    let TopClassifier { layers: top, head } = model.valid();
    let Bert { embeddings, mut layers } = frozen;
    layers.extend(top);
    Ok((BertForSequenceClassification { bert: Bert { embeddings, layers }, head }, history))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn length_batches_cover_every_text_once_in_batches_of_similar_length() {
        let lens: Vec<usize> = (0..200).map(|i| 1 + (i * 37) % 90).collect();
        let batches = length_batches(&lens, 8, &mut Rng::new(3));
        let mut seen: Vec<usize> = batches.iter().flatten().copied().collect();
        seen.sort_unstable();
        assert_eq!(seen, (0..200).collect::<Vec<_>>());
        assert!(batches.iter().all(|b| !b.is_empty() && b.len() <= 8));
        // Sorted within a pool: the spread inside a batch is far below the spread overall.
        let spread: usize = batches.iter().map(|b| b.iter().map(|&i| lens[i]).max().unwrap() - b.iter().map(|&i| lens[i]).min().unwrap()).sum();
        assert!(spread / batches.len() < 20, "mean spread {}", spread / batches.len());
    }
}
