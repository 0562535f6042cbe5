//! The trained category classifier. When configured (`classifier.category_model.model_id`), its
//! probabilities replace embedding similarity as the category scores, and
//! `classifier.category_model.threshold` is a probability, as in vLLM Semantic Router's category
//! model. Two kinds of directory:
//! - a head (`EmbeddingHead`, `router-train train-category`) on the prompt embedding the router
//!   computes anyway: one small matrix product per request;
//! - a fine-tuned sequence classifier (HF `*ForSequenceClassification`, `router-train
//!   finetune-category`): more accurate, at the price of its own encoder layers per request.
//!   Trained over the embedding model's frozen lower layers, it runs as a branch of the
//!   embedding pass (its top layers only, [`crate::model::shared`]); otherwise on its own
//!   batching worker while the embedding runs ([`is_sequence_classifier`]).

use std::path::Path;
use std::sync::Mutex;

use anyhow::{bail, Context, Result};
use tracing::{info, warn};

use crate::guard::calibrated;
use crate::model::head::EmbeddingHead;
use crate::CpuBackend;

/// The head's extra label for a message that carries no topic of its own ("why?", "give me an
/// example"): not a category, but how much the conversation's earlier turns decide
/// ([`mix_with_context`]).
pub const NO_TOPIC: &str = "no_topic";

pub struct CategoryHead {
    head: Mutex<EmbeddingHead<CpuBackend>>,
    labels: Vec<String>,
    input_dim: usize,
    /// Logits are divided by this before the softmax (temperature scaling, fitted by
    /// `router-train` on a held-out chat-style split), so a probability means what it says.
    temperature: f32,
    /// Whether the head knows [`NO_TOPIC`] (then the earlier turns are classified too).
    has_no_topic: bool,
}

impl CategoryHead {
    pub fn load(dir: &Path, dim: usize) -> Result<Self> {
        let (head, meta) = EmbeddingHead::<CpuBackend>::load(dir, &Default::default())?;
        if meta.input_dim != dim {
            bail!("head input_dim {} does not match the embedding model's size {dim} (encoder `{}`)", meta.input_dim, meta.encoder);
        }
        let labels = meta.labels()?;
        let temperature = meta.temperature.unwrap_or(1.0);
        if !(temperature.is_finite() && temperature > 0.0) {
            bail!("head temperature {temperature} is not a positive number");
        }
        let has_no_topic = labels.iter().any(|l| l == NO_TOPIC);
        Ok(Self { head: Mutex::new(head), labels, input_dim: dim, temperature, has_no_topic })
    }

    /// The temperature the probabilities are calibrated with.
    pub fn temperature(&self) -> f32 {
        self.temperature
    }

    /// The same head without calibration (temperature 1), to measure what calibration changes.
    pub fn uncalibrated(&self) -> Self {
        let head = self.head.lock().unwrap_or_else(|e| e.into_inner()).clone();
        Self { head: Mutex::new(head), labels: self.labels.clone(), input_dim: self.input_dim, temperature: 1.0, has_no_topic: self.has_no_topic }
    }

    /// Whether the head classifies the earlier turns too (it knows [`NO_TOPIC`]).
    pub fn uses_context(&self) -> bool {
        self.has_no_topic
    }

    pub fn labels(&self) -> &[String] {
        &self.labels
    }

    /// (label, calibrated probability) for every label of the head, [`NO_TOPIC`] included.
    pub fn probabilities(&self, embedding: &[f32]) -> Result<Vec<(String, f32)>> {
        if embedding.len() != self.input_dim {
            bail!("embedding of size {}, the head takes {}", embedding.len(), self.input_dim);
        }
        let logits = {
            let head = self.head.lock().unwrap_or_else(|e| e.into_inner());
            head.logits_of(&[embedding.to_vec()], &Default::default())?
        };
        Ok(self.labels.iter().cloned().zip(calibrated(&logits[0], self.temperature)).collect())
    }

    /// Category probabilities of a message given the embedding of its earlier turns (see
    /// [`mix_with_context`]).
    pub fn categorize(&self, text: &[f32], context: Option<&[f32]>) -> Result<Vec<(String, f32)>> {
        let p = self.probabilities(text)?;
        let ctx = match context {
            Some(c) if self.has_no_topic => Some(self.probabilities(c)?),
            _ => None,
        };
        Ok(mix_with_context(&p, ctx.as_deref()))
    }
}

/// The category distribution of a message in its conversation: `P(c | text) + P(no_topic |
/// text) · P(c | earlier turns)`. A message with a topic of its own keeps it; a follow-up
/// without one ("could you go into more detail?") takes the conversation's category. The
/// [`NO_TOPIC`] mass of the last source is dropped, not renormalised away: a conversation with
/// no topic anywhere ends with a low confidence, and the router sends it to the default model.
pub fn mix_with_context(text: &[(String, f32)], context: Option<&[(String, f32)]>) -> Vec<(String, f32)> {
    let no_topic = text.iter().find(|(l, _)| l == NO_TOPIC).map_or(0.0, |(_, p)| *p);
    text.iter()
        .filter(|(l, _)| l != NO_TOPIC)
        .map(|(l, p)| {
            let from_context = context.and_then(|c| c.iter().find(|(k, _)| k == l)).map_or(0.0, |(_, q)| *q);
            (l.clone(), p + no_topic * from_context)
        })
        .collect()
}

/// Earlier turns (oldest first, as the filter sends them, each `(role, content)`) as one text:
/// the user's turns newest first, then the assistant's, newest first. The user's questions
/// carry the conversation's topic and are short; an assistant answer can fill the encoder's
/// 128 tokens alone, so with the answers first truncation would drop the very turn that named
/// the topic. Empty turns are skipped.
pub fn context_text<'a>(turns: impl DoubleEndedIterator<Item = (&'a str, &'a str)> + Clone) -> String {
    let of = |user: bool| turns.clone().rev().filter(move |(role, c)| (*role == "user") == user && !c.trim().is_empty()).map(|(_, c)| c);
    of(true).chain(of(false)).collect::<Vec<_>>().join("\n")
}

/// What `router-train` fitted on held-out chat-style prompts for a fine-tuned sequence
/// classifier, from `calibration` in its `config.json`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Calibration {
    /// The logits are divided by it before the softmax (1 when absent).
    pub temperature: f32,
    /// A guard's own threshold on P(jailbreak), when one was chosen.
    pub threshold: Option<f32>,
}

pub fn calibration_of(dir: &Path) -> Result<Calibration> {
    let text = std::fs::read_to_string(dir.join("config.json")).with_context(|| format!("cannot read {}/config.json", dir.display()))?;
    let config: serde_json::Value = serde_json::from_str(&text).with_context(|| format!("{}/config.json", dir.display()))?;
    let c = &config["calibration"];
    let temperature = match c["temperature"].as_f64() {
        None => 1.0,
        Some(t) if t.is_finite() && t > 0.0 => t as f32,
        Some(t) => bail!("{}/config.json: calibration.temperature {t} is not a positive number", dir.display()),
    };
    let threshold = match c["threshold"].as_f64() {
        None => None,
        Some(t) if (0.0..=1.0).contains(&t) => Some(t as f32),
        Some(t) => bail!("{}/config.json: calibration.threshold {t} is not a probability", dir.display()),
    };
    Ok(Calibration { temperature, threshold })
}

/// The category distribution of a fine-tuned sequence classifier's calibrated probabilities
/// for the last message and, when sent, for the earlier turns ([`mix_with_context`]): the same
/// rule as the head's.
pub fn categorize_probabilities(labels: &[String], text: &[f32], context: Option<&[f32]>) -> Vec<(String, f32)> {
    let named = |p: &[f32]| labels.iter().cloned().zip(p.iter().copied()).collect::<Vec<_>>();
    mix_with_context(&named(text), context.map(named).as_deref())
}

/// Whether `dir` holds a full sequence-classification checkpoint (its `config.json` names an
/// `*ForSequenceClassification` architecture) rather than a head.
pub fn is_sequence_classifier(dir: &Path) -> bool {
    std::fs::read_to_string(dir.join("config.json"))
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .and_then(|v| v["architectures"].as_array().cloned())
        .is_some_and(|a| a.iter().any(|x| x.as_str().is_some_and(|s| s.ends_with("ForSequenceClassification"))))
}

/// The configured category model directory, or `None` (with a warning) when it does not exist.
pub fn configured_dir(model_id: Option<&Path>) -> Option<&Path> {
    let dir = model_id.filter(|p| !p.as_os_str().is_empty())?;
    if !dir.exists() {
        warn!(model = %dir.display(), "classifier.category_model.model_id: not found; routing by embedding similarity");
        return None;
    }
    Some(dir)
}

/// The head of `model_id`: `None` when no head is configured, its directory does not exist
/// (embedding similarity routes then) or it is a sequence classifier (loaded by the service);
/// an error when the directory is not a usable head.
pub fn load(model_id: Option<&Path>, dim: usize) -> Result<Option<CategoryHead>> {
    let Some(dir) = configured_dir(model_id) else { return Ok(None) };
    if is_sequence_classifier(dir) {
        return Ok(None);
    }
    let head = CategoryHead::load(dir, dim).with_context(|| format!("classifier.category_model.model_id: {}", dir.display()))?;
    info!(model = %dir.display(), labels = head.labels.len(), "category head loaded");
    Ok(Some(head))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dist(v: &[(&str, f32)]) -> Vec<(String, f32)> {
        v.iter().map(|(l, p)| (l.to_string(), *p)).collect()
    }

    #[test]
    fn a_topic_free_follow_up_takes_the_conversations_category() {
        let follow_up = dist(&[("history", 0.05), ("math", 0.05), (NO_TOPIC, 0.9)]);
        let earlier = dist(&[("history", 0.8), ("math", 0.1), (NO_TOPIC, 0.1)]);
        let p = mix_with_context(&follow_up, Some(&earlier));
        assert_eq!(p.len(), 2, "no_topic is not a category: {p:?}");
        assert!((p[0].1 - (0.05 + 0.9 * 0.8)).abs() < 1e-6 && p[0].1 > p[1].1, "{p:?}");
        // Alone, it has no confident category (the router sends it to the default model).
        assert!(mix_with_context(&follow_up, None).iter().all(|(_, p)| *p < 0.1));
        // A message with its own topic keeps it, whatever came before.
        let topical = dist(&[("history", 0.02), ("math", 0.96), (NO_TOPIC, 0.02)]);
        let p = mix_with_context(&topical, Some(&earlier));
        assert!(p[1].1 > 0.96 && p[0].1 < 0.05, "{p:?}");
    }

    #[test]
    fn a_fine_tuned_checkpoint_carries_its_calibration() {
        let dir = std::env::temp_dir().join(format!("category-head-calibration-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let write = |c: &str| std::fs::write(dir.join("config.json"), format!(r#"{{"architectures": ["BertForSequenceClassification"]{c}}}"#)).unwrap();
        write("");
        assert_eq!(calibration_of(&dir).unwrap(), Calibration { temperature: 1.0, threshold: None });
        write(r#", "calibration": {"temperature": 0.8, "threshold": 0.9}"#);
        assert_eq!(calibration_of(&dir).unwrap(), Calibration { temperature: 0.8, threshold: Some(0.9) });
        write(r#", "calibration": {"temperature": -1}"#);
        assert!(format!("{:#}", calibration_of(&dir).unwrap_err()).contains("calibration.temperature"));
        write(r#", "calibration": {"threshold": 1.5}"#);
        assert!(format!("{:#}", calibration_of(&dir).unwrap_err()).contains("calibration.threshold"));
        std::fs::remove_dir_all(&dir).ok();
        // A sequence classifier's probabilities follow the head's context rule.
        let labels: Vec<String> = ["history", "math", NO_TOPIC].iter().map(|s| s.to_string()).collect();
        let p = categorize_probabilities(&labels, &[0.05, 0.05, 0.9], Some(&[0.8, 0.1, 0.1]));
        assert_eq!(p, mix_with_context(&dist(&[("history", 0.05), ("math", 0.05), (NO_TOPIC, 0.9)]), Some(&dist(&[("history", 0.8), ("math", 0.1), (NO_TOPIC, 0.1)]))));
    }

    #[test]
    fn context_text_puts_user_turns_first_newest_first_without_empty_turns() {
        let turns = [("user", "first question"), ("assistant", "first answer"), ("user", " "), ("user", "second question"), ("assistant", "second answer")];
        assert_eq!(context_text(turns.into_iter()), "second question\nfirst question\nsecond answer\nfirst answer");
    }
}
