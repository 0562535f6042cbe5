//! The chat-style development sets in the evaluation report: category accuracy and per-class
//! metrics, calibration (ECE), the router's threshold, multi-turn follow-ups, and the guard on
//! benign look-alikes and varied jailbreaks. The models are run through the sidecar's own code
//! (`CategoryHead::categorize`, `HeadDetector::score`), so calibration and the context mix are
//! measured as they serve.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use anyhow::{anyhow, Result};
use classifier_svc::category_head::{CategoryHead, NO_TOPIC};
use classifier_svc::guard::{HeadDetector, JailbreakDetector};
use serde_json::{json, Value};

use crate::calibrate;
use crate::embed::{Embedder, DIM};
use crate::metrics::Confusion;
use crate::sets::DevSets;

/// The filter's default number of earlier turns sent with the last user message.
const CONTEXT_TURNS: usize = 4;
/// Weight of the earlier turns in the prompt vector before the head learnt `no_topic`
/// (`classifier.category_model.context_weight`), for the multi-turn comparison.
const OLD_CONTEXT_WEIGHT: f32 = 0.3;

fn pct(x: f64) -> String {
    format!("{:.1}%", 100.0 * x)
}

/// Category index (of `labels`, the 14 categories) and confidence of each distribution.
fn top(probs: &[(String, f32)], labels: &[String]) -> (usize, f32) {
    let (best, p) = probs.iter().filter(|(l, _)| l != NO_TOPIC).fold(("", f32::MIN), |b, (l, p)| if *p > b.1 { (l.as_str(), *p) } else { b });
    (labels.iter().position(|l| l == best).unwrap_or(0), p)
}

pub struct DevReport {
    pub markdown: String,
    pub json: Value,
}

/// The development-set sections of the report. `threshold` is the router's category
/// threshold (`classifier.category_model.threshold`).
#[allow(clippy::too_many_arguments)]
pub fn report(
    dir: &Path,
    embedder: &mut Embedder,
    category_head: &Path,
    jailbreak_head: &Path,
    category_model: &Path,
    tuned_guard: Option<&crate::eval::FineTunedGuard>,
    threshold: f32,
    peer_jailbreak: &[String],
) -> Result<DevReport> {
    let dev = DevSets::load(dir)?;
    let head = CategoryHead::load(category_head, DIM)?;
    let labels: Vec<String> = head.labels().iter().filter(|l| *l != NO_TOPIC).cloned().collect();
    let n = labels.len();
    let index = |l: &str| labels.iter().position(|x| x == l).ok_or_else(|| anyhow!("unknown category `{l}`"));
    let mut md = String::new();

    // ------------------------------------------------------------ single prompts
    let y = dev.chat.iter().map(|c| index(&c.category)).collect::<Result<Vec<_>>>()?;
    let x = embedder.embed(&dev.chat.iter().map(|c| c.text.clone()).collect::<Vec<_>>(), "chat dev")?;
    let probs = x.iter().map(|v| head.categorize(v, None)).collect::<Result<Vec<_>>>()?;
    let (pred, conf): (Vec<usize>, Vec<f32>) = probs.iter().map(|p| top(p, &labels)).unzip();
    let c = Confusion::new(n, &y, &pred);
    let correct: Vec<bool> = pred.iter().zip(&y).map(|(p, t)| p == t).collect();
    let ece = calibrate::ece(&conf, &correct, 10);
    // The same head without its temperature: what calibration changed.
    let raw = head.uncalibrated();
    let raw_conf: Vec<f32> = x.iter().map(|v| raw.categorize(v, None).map(|p| top(&p, &labels).1)).collect::<Result<_>>()?;
    let raw_ece = calibrate::ece(&raw_conf, &correct, 10);
    let routed: Vec<usize> = (0..y.len()).filter(|&i| conf[i] >= threshold).collect();
    let routed_acc = routed.iter().filter(|&&i| correct[i]).count() as f64 / routed.len().max(1) as f64;
    let with_threshold: Vec<usize> = (0..y.len()).map(|i| if conf[i] >= threshold { pred[i] } else { n }).collect();
    let c_thr = Confusion::new(n + 1, &y, &with_threshold);

    let _ = writeln!(md, "## Chat-style development set (the traffic the router exists for)\n");
    let _ = writeln!(md, "`router-train/sets/` (provenance in its `PROVENANCE.md`): prompts written the way people type into an assistant, never trained on, never used for a temperature or a threshold. The category head runs through the sidecar's own code with its fitted temperature.\n");
    let _ = writeln!(md, "| measure | value |\n|---|---|");
    let _ = writeln!(md, "| prompts | {} ({} categories) |", y.len(), n);
    let _ = writeln!(md, "| accuracy (top category) | **{}** |", pct(c.accuracy()));
    let _ = writeln!(md, "| macro-F1 | {:.3} |", c.macro_f1());
    let _ = writeln!(md, "| expected calibration error (10 bins), calibrated / uncalibrated | {:.3} / {:.3} (temperature {:.2}) |", ece, raw_ece, head.temperature());
    let _ = writeln!(md, "| routed at threshold {threshold} (the rest: default model, `low_confidence`) | {} of prompts, {} of them right |", pct(routed.len() as f64 / y.len() as f64), pct(routed_acc));
    let _ = writeln!(md, "| right category with the threshold (below it counts as wrong) | {} |", pct(c_thr.accuracy()));
    // The fine-tuned encoder, when one was trained (`finetune-category`): the same sets
    // through the sidecar's rule, with its own temperature.
    let mut tuned = None;
    if category_model.join("model.safetensors").exists() {
        let model = classifier_svc::model::Model::<burn::backend::Flex>::load(category_model, &Default::default(), &Default::default())?;
        let temperature = classifier_svc::category_head::calibration_of(category_model)?.temperature;
        let d = sequence_model_on_dev(dir, &model.labels, temperature, HeldOutTest::Include, |t| crate::eval::classify_all(&model, t, "dev"))?;
        let _ = writeln!(md, "| **fine-tuned encoder** (`{}`, a branch of the embedding pass), accuracy | **{}** (macro-F1 {:.3}) |", category_model.display(), pct(d.chat.accuracy()), d.chat.macro_f1());
        let _ = writeln!(md, "| fine-tuned encoder, expected calibration error | {:.3} (temperature {temperature:.2}) |", d.ece);
        tuned = Some(d);
    }
    let _ = writeln!(md, "\n| category | P | R | F1 | n |\n|---|---|---|---|---|");
    for (i, l) in labels.iter().enumerate() {
        let m = c.class(i);
        let _ = writeln!(md, "| {l} | {:.3} | {:.3} | {:.3} | {} |", m.precision, m.recall, m.f1, m.support);
    }
    let _ = writeln!(md, "\n![Confusion matrix, chat-style development set](confusion-dev.png)\n");
    let _ = writeln!(md, "### Confusion matrix, chat-style development set\n");
    crate::eval::confusion_table(&mut md, &labels, &c, None);

    // ------------------------------------------------------------ multi-turn
    let my = dev.multiturn.iter().map(|c| index(&c.category)).collect::<Result<Vec<_>>>()?;
    let requests: Vec<(String, String)> = dev.multiturn.iter().map(|c| c.as_request(CONTEXT_TURNS)).collect();
    let tx = embedder.embed(&requests.iter().map(|r| r.0.clone()).collect::<Vec<_>>(), "multi-turn last messages")?;
    let cx = embedder.embed(&requests.iter().map(|r| r.1.clone()).collect::<Vec<_>>(), "multi-turn context")?;
    let (mut kept, mut alone, mut old_mix) = (0usize, 0usize, 0usize);
    for i in 0..my.len() {
        kept += usize::from(top(&head.categorize(&tx[i], Some(&cx[i]))?, &labels).0 == my[i]);
        alone += usize::from(top(&head.categorize(&tx[i], None)?, &labels).0 == my[i]);
        let mut mixed: Vec<f32> = tx[i].iter().zip(&cx[i]).map(|(t, c)| (1.0 - OLD_CONTEXT_WEIGHT) * t + OLD_CONTEXT_WEIGHT * c).collect();
        classifier_svc::policy::normalize(&mut mixed);
        old_mix += usize::from(top(&head.categorize(&mixed, None)?, &labels).0 == my[i]);
    }
    let m = my.len().max(1) as f64;
    let _ = writeln!(md, "\n### Multi-turn: a last message without a topic of its own\n");
    let _ = writeln!(md, "{} conversations; the filter sends the last user message and the {CONTEXT_TURNS} turns before it. Kept = the conversation's category chosen.\n", my.len());
    let _ = writeln!(md, "| how the earlier turns are used | kept |\n|---|---|");
    if let Some(d) = &tuned {
        let _ = writeln!(md, "| **fine-tuned encoder, `no_topic` mix (serving)** | **{}** |", pct(d.multiturn_kept));
    }
    let _ = writeln!(md, "| head, `no_topic` mix: P(c given the last message) + P(no_topic given it) × P(c given the earlier turns) | {} |", pct(kept as f64 / m));
    let _ = writeln!(md, "| embedding mix, context weight {OLD_CONTEXT_WEIGHT} (before) | {} |", pct(old_mix as f64 / m));
    let _ = writeln!(md, "| last message alone | {} |", pct(alone as f64 / m));
    if let Some(d) = tuned.as_ref().filter(|d| !d.multiturn_misses.is_empty()) {
        let _ = writeln!(md, "\nWhat the fine-tuned encoder missed:\n\n| last message | conversation | chosen | P(no_topic) |\n|---|---|---|---|");
        for m in &d.multiturn_misses {
            let _ = writeln!(md, "| {} | {} | {} | {:.2} |", m.last.replace('|', "/"), m.expected, m.chosen, m.no_topic);
        }
    }
    if let Some(SequenceDev { multiturn_long: (long_kept, long_n), multiturn_test: test, .. }) = &tuned {
        // The set's shape, read from it: answer lengths and earlier questions per conversation.
        let answer_words = dev.multiturn_long.iter().flat_map(|c| &c.messages).filter(|m| m.role == "assistant").map(|m| m.content.split_whitespace().count());
        let (shortest, longest) = answer_words.fold((usize::MAX, 0), |(lo, hi), w| (lo.min(w), hi.max(w)));
        let questions = dev.multiturn_long.iter().map(|c| c.messages.iter().filter(|m| m.role == "user").count() - 1);
        let (fewest, most) = questions.fold((usize::MAX, 0), |(lo, hi), q| (lo.min(q), hi.max(q)));
        let _ = writeln!(
            md,
            "\nHow earlier turns are used (four turns, the user's first) was chosen while reading this set's misses, so the figure above is optimistic. A second development set written later to look like longer chats (`router-train/sets/multiturn-dev-long.jsonl`: {long_n} conversations, answers of {shortest}–{longest} words, {fewest} to {most} earlier questions, topic-free middle turns in half of them) kept **{}** with the same rule.",
            pct(*long_kept)
        );
        if let Some((kept, n)) = test {
            let _ = writeln!(
                md,
                "On the held-out multi-turn test set (`router-train/sets/multiturn-test.jsonl`: {n} conversations with answers of 80–250 words and up to five earlier questions, never read while choosing anything) the fine-tuned encoder keeps **{}**.",
                pct(*kept)
            );
        }
    }

    // ------------------------------------------------------------ guard
    let guard = HeadDetector::load(jailbreak_head, DIM)?;
    let gthr = guard.threshold().unwrap_or(0.5);
    let score = |texts: &[String], what: &str, e: &mut Embedder| -> Result<Vec<f32>> {
        e.embed(texts, what)?.iter().map(|v| guard.score(v).map(|s| s.probability)).collect()
    };
    let texts = GuardTexts::of(&dev, peer_jailbreak);
    let head_scores = GuardScores {
        benign: score(&texts.benign, "guard benign dev", embedder)?,
        attack: score(&texts.attack, "guard jailbreak dev", embedder)?,
        chat: score(&texts.chat, "chat dev", embedder)?,
        peer: score(&texts.peer, "peer jailbreak", embedder)?,
    };
    let _ = writeln!(md, "\n### Jailbreak guard on the development sets\n");
    let _ = writeln!(md, "Threshold {gthr:.2}: the head's own, chosen on the calibration split (at most {} of its benign prompts blocked), not on these sets.\n", pct(crate::train::GUARD_MAX_FPR));
    let guard_json = guard_section(&mut md, &dev, &head_scores, gthr);
    // A fine-tuned guard (`finetune-jailbreak`), when one was trained: the same sets and table.
    let mut tuned_guard_json = Value::Null;
    if let Some(guard) = tuned_guard {
        let scores = GuardScores {
            benign: guard.probabilities(&texts.benign, "guard benign dev")?,
            attack: guard.probabilities(&texts.attack, "guard jailbreak dev")?,
            chat: guard.probabilities(&texts.chat, "chat dev")?,
            peer: guard.probabilities(&texts.peer, "peer jailbreak")?,
        };
        let t = guard.threshold.unwrap_or(0.5);
        let _ = writeln!(md, "\n### Fine-tuned guard (`{}`) on the development sets\n", guard.dir.display());
        let _ = writeln!(md, "Threshold {t:.2}: the model's own, chosen on its calibration split the same way. It is the default guard (`prompt_guard.model_id`); served, it runs its own top 2 layers per request as a branch of the embedding pass (BENCHMARKS.md).\n");
        tuned_guard_json = guard_section(&mut md, &dev, &scores, t);
    }

    let json = json!({
        "labels": labels,
        "chat": { "n": c.total(), "accuracy": c.accuracy(), "macro_f1": c.macro_f1(), "matrix": c.matrix, "ece": ece, "ece_uncalibrated": raw_ece,
                  "temperature": head.temperature(), "threshold": threshold, "routed": routed.len() as f64 / y.len() as f64, "routed_accuracy": routed_acc, "accuracy_with_threshold": c_thr.accuracy() },
        "chat_finetuned": tuned.as_ref().map_or(Value::Null, SequenceDev::json),
        "multiturn": { "n": my.len(), "kept": kept as f64 / m, "kept_embedding_mix": old_mix as f64 / m, "kept_last_message_alone": alone as f64 / m },
        "guard": guard_json,
        "guard_finetuned": tuned_guard_json,
    });
    Ok(DevReport { markdown: md, json })
}

/// The guard's texts: benign look-alikes, our jailbreaks, the chat prompts, the peer cases.
struct GuardTexts {
    benign: Vec<String>,
    attack: Vec<String>,
    chat: Vec<String>,
    peer: Vec<String>,
}

impl GuardTexts {
    fn of(dev: &DevSets, peer_jailbreak: &[String]) -> Self {
        Self {
            benign: dev.benign.iter().map(|g| g.text.clone()).collect(),
            attack: dev.jailbreak.iter().map(|g| g.text.clone()).collect(),
            chat: dev.chat.iter().map(|c| c.text.clone()).collect(),
            peer: peer_jailbreak.to_vec(),
        }
    }
}

/// P(jailbreak) for each text of [`GuardTexts`], in the same order.
struct GuardScores {
    benign: Vec<f32>,
    attack: Vec<f32>,
    chat: Vec<f32>,
    peer: Vec<f32>,
}

/// One guard on the development sets at threshold `gthr`: the rates, the families, the
/// trade-off and the operating point for at most [`GUARD_DEV_MAX_BENIGN`] benign blocked.
fn guard_section(md: &mut String, dev: &DevSets, p: &GuardScores, gthr: f32) -> Value {
    let (benign_p, attack_p, chat_p, peer_p) = (&p.benign, &p.attack, &p.chat, &p.peer);
    let rate = |p: &[f32], t: f32| p.iter().filter(|&&v| v >= t).count() as f64 / p.len().max(1) as f64;
    let _ = writeln!(md, "| set | n | blocked |\n|---|---|---|");
    let _ = writeln!(md, "| benign look-alikes (must pass) | {} | **{}** |", benign_p.len(), pct(rate(benign_p, gthr)));
    let _ = writeln!(md, "| chat-style category prompts (must pass) | {} | {} |", chat_p.len(), pct(rate(chat_p, gthr)));
    let _ = writeln!(md, "| our jailbreaks (must be blocked: recall) | {} | **{}** |", attack_p.len(), pct(rate(attack_p, gthr)));
    let _ = writeln!(md, "| peer jailbreak cases (recall) | {} | **{}** |", peer_p.len(), pct(rate(peer_p, gthr)));
    let by_family = |items: &[(String, f32)]| -> BTreeMap<String, (usize, usize)> {
        let mut m: BTreeMap<String, (usize, usize)> = BTreeMap::new();
        for (f, p) in items {
            let e = m.entry(f.clone()).or_default();
            e.0 += 1;
            e.1 += usize::from(*p >= gthr);
        }
        m
    };
    let _ = writeln!(md, "\n| family | kind | n | blocked |\n|---|---|---|---|");
    let fam_b = by_family(&dev.benign.iter().map(|g| g.family.clone()).zip(benign_p.iter().copied()).collect::<Vec<_>>());
    let fam_j = by_family(&dev.jailbreak.iter().map(|g| g.family.clone()).zip(attack_p.iter().copied()).collect::<Vec<_>>());
    for (kind, fams) in [("benign", &fam_b), ("jailbreak", &fam_j)] {
        for (f, (n, b)) in fams {
            let _ = writeln!(md, "| {f} | {kind} | {n} | {} |", pct(*b as f64 / *n as f64));
        }
    }
    let thresholds = [0.1f32, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.97, 0.98, 0.99, 0.995];
    let _ = writeln!(md, "\n#### Trade-off on the development sets (`prompt_guard.threshold`)\n");
    let _ = writeln!(md, "| threshold | benign look-alikes blocked | chat prompts blocked | recall, our jailbreaks | recall, peer jailbreaks |\n|---|---|---|---|---|");
    let point = |t: f32| json!({ "threshold": t, "benign_blocked": rate(benign_p, t), "chat_blocked": rate(chat_p, t), "recall": rate(attack_p, t), "peer_recall": rate(peer_p, t) });
    let mut curve = Vec::new();
    for &t in &thresholds {
        let _ = writeln!(md, "| {t} | {} | {} | {:.3} | {:.3} |", pct(rate(benign_p, t)), pct(rate(chat_p, t)), rate(attack_p, t), rate(peer_p, t));
        curve.push(point(t));
    }
    // The operating point of the project's guard target: the lowest threshold (0.001 steps) that
    // blocks at most GUARD_DEV_MAX_BENIGN of the benign look-alikes. Chosen on this set, so its
    // benign rate is fitted, not measured; the recall beside it is what that choice costs.
    let dev_threshold = (500..1000).map(|k| k as f32 / 1000.0).find(|&t| rate(benign_p, t) <= GUARD_DEV_MAX_BENIGN);
    match dev_threshold {
        Some(t) => {
            let _ = writeln!(
                md,
                "\nAt most {} of the benign look-alikes blocked (chosen on this set, so that rate is fitted): threshold **{t:.3}**, chat prompts blocked {}, recall {:.3} on our jailbreaks and {:.3} on the peer cases.",
                pct(GUARD_DEV_MAX_BENIGN),
                pct(rate(chat_p, t)),
                rate(attack_p, t),
                rate(peer_p, t)
            );
        }
        None => {
            let _ = writeln!(md, "\nNo threshold up to 0.999 blocks at most {} of the benign look-alikes.", pct(GUARD_DEV_MAX_BENIGN));
        }
    }
    let mut at = point(gthr);
    at["curve"] = json!(curve);
    at["at_dev_benign_target"] = dev_threshold.map(point).unwrap_or(Value::Null);
    at
}

/// Benign look-alikes a guard may block (the project's target), for the operating point read off the
/// development set's trade-off curve.
pub const GUARD_DEV_MAX_BENIGN: f64 = 0.02;

/// A fine-tuned sequence classifier (`finetune-category`) on the chat-style development set
/// and the multi-turn follow-ups, through the sidecar's rule
/// ([`classifier_svc::category_head::categorize_probabilities`]) with `temperature`.
pub struct SequenceDev {
    pub chat: Confusion,
    /// Confidence of the top category and whether it was right, per chat prompt.
    pub confidence: Vec<f32>,
    pub ece: f64,
    pub multiturn_kept: f64,
    pub multiturn_n: usize,
    /// The follow-ups that lost the conversation's category, for reading what limits it.
    pub multiturn_misses: Vec<MultiturnMiss>,
    /// Kept on the second development set (long answers, up to five earlier questions), and its size.
    pub multiturn_long: (f64, usize),
    /// Kept on the held-out multi-turn test set (never read while choosing anything), and its
    /// size; `None` without the set or when not asked for ([`HeldOutTest::Skip`]).
    pub multiturn_test: Option<(f64, usize)>,
}

pub struct MultiturnMiss {
    pub last: String,
    pub expected: String,
    pub chosen: String,
    /// P(no_topic | last message): low when the follow-up looked like a topic of its own.
    pub no_topic: f32,
}

impl SequenceDev {
    /// What `finetune-*` and `dev-eval` print: the development sets, and the follow-ups missed
    /// (not the held-out multi-turn test: settings are compared by this output; `eval` reports it).
    pub fn print_summary(&self) {
        println!("  chat dev n {:>5}  accuracy {:.4}  macro-F1 {:.4}  ECE {:.3}", self.chat.total(), self.chat.accuracy(), self.chat.macro_f1(), self.ece);
        println!("  multi-turn n {:>3}  kept {:.4}", self.multiturn_n, self.multiturn_kept);
        println!("  multi-turn, long answers n {:>3}  kept {:.4}", self.multiturn_long.1, self.multiturn_long.0);
        for m in &self.multiturn_misses {
            println!("    missed: {:?} ({} → {}, P(no_topic) {:.2})", m.last, m.expected, m.chosen, m.no_topic);
        }
    }

    pub fn json(&self) -> Value {
        json!({ "n": self.chat.total(), "accuracy": self.chat.accuracy(), "macro_f1": self.chat.macro_f1(), "matrix": self.chat.matrix, "ece": self.ece,
                "multiturn": { "n": self.multiturn_n, "kept": self.multiturn_kept },
                "multiturn_long": { "n": self.multiturn_long.1, "kept": self.multiturn_long.0 },
                "multiturn_test": self.multiturn_test.map(|(kept, n)| json!({ "n": n, "kept": kept })) })
    }
}

/// Whether [`sequence_model_on_dev`] also classifies the held-out multi-turn test set. Only
/// `eval` reports it; what settings are compared by (`finetune-*`, `dev-eval`, the figures a
/// trained model keeps in its `config.json`) never computes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeldOutTest {
    Include,
    Skip,
}

/// `logits_of(texts)` gives the model's logits in order; `labels` its labels (`no_topic` included).
pub fn sequence_model_on_dev(dir: &Path, labels: &[String], temperature: f32, held_out: HeldOutTest, mut logits_of: impl FnMut(&[String]) -> Result<Vec<Vec<f32>>>) -> Result<SequenceDev> {
    let dev = DevSets::load(dir)?;
    let categories: Vec<String> = labels.iter().filter(|l| *l != NO_TOPIC).cloned().collect();
    let index = |l: &str| categories.iter().position(|x| x == l).ok_or_else(|| anyhow!("unknown category `{l}`"));
    let probs = |logits: Vec<Vec<f32>>| -> Vec<Vec<f32>> { logits.iter().map(|l| crate::metrics::calibrated(l, temperature)).collect() };
    let categorize = classifier_svc::category_head::categorize_probabilities;

    let y = dev.chat.iter().map(|c| index(&c.category)).collect::<Result<Vec<_>>>()?;
    let p = probs(logits_of(&dev.chat.iter().map(|c| c.text.clone()).collect::<Vec<_>>())?);
    let (pred, confidence): (Vec<usize>, Vec<f32>) = p.iter().map(|p| top(&categorize(labels, p, None), &categories)).unzip();
    let chat = Confusion::new(categories.len(), &y, &pred);
    let correct: Vec<bool> = pred.iter().zip(&y).map(|(p, t)| p == t).collect();
    let ece = calibrate::ece(&confidence, &correct, 10);

    let no_topic = labels.iter().position(|l| l == NO_TOPIC);
    let mut misses_on = |conversations: &[crate::sets::Conversation]| -> Result<Vec<MultiturnMiss>> {
        let my = conversations.iter().map(|c| index(&c.category)).collect::<Result<Vec<_>>>()?;
        let requests: Vec<(String, String)> = conversations.iter().map(|c| c.as_request(CONTEXT_TURNS)).collect();
        let last = probs(logits_of(&requests.iter().map(|r| r.0.clone()).collect::<Vec<_>>())?);
        let context = probs(logits_of(&requests.iter().map(|r| r.1.clone()).collect::<Vec<_>>())?);
        Ok((0..my.len())
            .filter_map(|i| {
                let chosen = top(&categorize(labels, &last[i], Some(&context[i])), &categories).0;
                (chosen != my[i]).then(|| MultiturnMiss {
                    last: requests[i].0.clone(),
                    expected: categories[my[i]].clone(),
                    chosen: categories[chosen].clone(),
                    no_topic: no_topic.map_or(0.0, |k| last[i][k]),
                })
            })
            .collect())
    };
    let kept_share = |misses: usize, n: usize| (n - misses) as f64 / n.max(1) as f64;
    let multiturn_misses = misses_on(&dev.multiturn)?;
    let multiturn_long = (kept_share(misses_on(&dev.multiturn_long)?.len(), dev.multiturn_long.len()), dev.multiturn_long.len());
    let multiturn_test = if held_out == HeldOutTest::Skip || dev.multiturn_test.is_empty() {
        None
    } else {
        let n = dev.multiturn_test.len();
        Some((kept_share(misses_on(&dev.multiturn_test)?.len(), n), n))
    };
    let n = dev.multiturn.len();
    Ok(SequenceDev { chat, confidence, ece, multiturn_kept: kept_share(multiturn_misses.len(), n), multiturn_n: n, multiturn_misses, multiturn_long, multiturn_test })
}

/// `router-train dev-eval`: the saved sequence classifier in `model_dir` on the dev sets.
pub fn print_sequence_model(model_dir: &Path, dev_dir: &Path) -> Result<()> {
    let model = classifier_svc::model::Model::<burn::backend::Flex>::load(model_dir, &Default::default(), &Default::default())?;
    let temperature = classifier_svc::category_head::calibration_of(model_dir)?.temperature;
    let d = sequence_model_on_dev(dev_dir, &model.labels, temperature, HeldOutTest::Skip, |t| crate::eval::classify_all(&model, t, "dev"))?;
    println!("{} (temperature {temperature:.2}):", model_dir.display());
    d.print_summary();
    Ok(())
}
