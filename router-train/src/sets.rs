//! The project's own chat-style sets (JSON lines, committed; provenance in each folder's
//! `PROVENANCE.md`):
//!
//! - `router-train/sets/`: the **development sets**, evaluation only: never trained on, never
//!   used to fit a temperature or choose a threshold. Chat prompts per category, multi-turn
//!   conversations whose last message carries no topic, benign look-alikes and jailbreaks for
//!   the guard.
//! - `router-train/train-sets/`: chat prompts and guard prompts for training, and a
//!   calibration split (`chat-calib.jsonl`) for the temperature and the guard's threshold, and
//!   topic-free follow-ups (`followups-train.jsonl`, label `no_topic`).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::de::DeserializeOwned;
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
pub struct ChatPrompt {
    pub text: String,
    pub category: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Message {
    pub role: String,
    pub content: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Conversation {
    pub messages: Vec<Message>,
    pub category: String,
}

/// A last message without a topic of its own (`no_topic` training data).
#[derive(Debug, Clone, Deserialize)]
pub struct FollowUp {
    pub text: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct GuardPrompt {
    pub text: String,
    pub family: String,
}

impl Conversation {
    /// What the filter sends for this conversation with `context_turns` earlier turns (the
    /// filter's default is 4): the last user message, and the text the sidecar embeds for the
    /// turns before it.
    pub fn as_request(&self, context_turns: usize) -> (String, String) {
        let last = self.messages.iter().rposition(|m| m.role == "user").unwrap_or(0);
        let earlier: Vec<(&str, &str)> = self.messages[..last].iter().map(|m| (m.role.as_str(), m.content.as_str())).collect();
        let from = earlier.len().saturating_sub(context_turns);
        let context = classifier_svc::category_head::context_text(earlier[from..].iter().copied());
        (self.messages[last].content.clone(), context)
    }
}

fn read<T: DeserializeOwned>(path: &Path) -> Result<Vec<T>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| serde_json::from_str(l).with_context(|| format!("{}:{}: not a valid record", path.display(), i + 1)))
        .collect()
}

/// The development sets (evaluation only).
pub struct DevSets {
    pub chat: Vec<ChatPrompt>,
    pub multiturn: Vec<Conversation>,
    /// A second multi-turn development set with long answers and up to five earlier questions
    /// (`multiturn-dev-long.jsonl`), also used to choose how earlier turns are used.
    pub multiturn_long: Vec<Conversation>,
    /// Held-out multi-turn conversations (`multiturn-test.jsonl`), for the one figure reported
    /// after every choice was made on `multiturn`; empty when the file is absent.
    pub multiturn_test: Vec<Conversation>,
    pub benign: Vec<GuardPrompt>,
    pub jailbreak: Vec<GuardPrompt>,
}

impl DevSets {
    pub fn load(dir: &Path) -> Result<Self> {
        Ok(Self {
            chat: read(&dir.join("chat-dev.jsonl"))?,
            multiturn: read(&dir.join("multiturn-dev.jsonl"))?,
            multiturn_long: read(&dir.join("multiturn-dev-long.jsonl"))?,
            multiturn_test: match dir.join("multiturn-test.jsonl") {
                path if path.exists() => read(&path)?,
                _ => Vec::new(),
            },
            benign: read(&dir.join("guard-benign-dev.jsonl"))?,
            jailbreak: read(&dir.join("guard-jailbreak-dev.jsonl"))?,
        })
    }

    /// Every text of every development set (for de-duplicating training data against them).
    pub fn texts(&self) -> Vec<String> {
        let mut out: Vec<String> = self.chat.iter().map(|c| c.text.clone()).collect();
        out.extend(self.multiturn.iter().chain(&self.multiturn_long).chain(&self.multiturn_test).flat_map(|c| c.messages.iter().map(|m| m.content.clone())));
        out.extend(self.benign.iter().chain(&self.jailbreak).map(|g| g.text.clone()));
        out
    }
}

/// The training and calibration sets.
pub struct TrainSets {
    pub chat: Vec<ChatPrompt>,
    pub calib: Vec<ChatPrompt>,
    pub benign: Vec<GuardPrompt>,
    pub jailbreak: Vec<GuardPrompt>,
    pub followups: Vec<FollowUp>,
}

impl TrainSets {
    pub fn load(dir: &Path) -> Result<Self> {
        Ok(Self {
            chat: read(&dir.join("chat-train.jsonl"))?,
            calib: read(&dir.join("chat-calib.jsonl"))?,
            benign: read(&dir.join("guard-benign-train.jsonl"))?,
            jailbreak: read(&dir.join("guard-jailbreak-train.jsonl"))?,
            followups: read(&dir.join("followups-train.jsonl"))?,
        })
    }
}

/// Where the sets live (relative to the repository root, the working directory of the tools).
pub struct SetDirs {
    pub dev: PathBuf,
    pub train: PathBuf,
}

impl Default for SetDirs {
    fn default() -> Self {
        Self { dev: PathBuf::from("router-train/sets"), train: PathBuf::from("router-train/train-sets") }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conv(turns: &[(&str, &str)]) -> Conversation {
        Conversation {
            messages: turns.iter().map(|(r, c)| Message { role: r.to_string(), content: c.to_string() }).collect(),
            category: "history".into(),
        }
    }

    #[test]
    fn a_conversation_becomes_what_the_filter_sends() {
        let c = conv(&[("user", "causes of WW1?"), ("assistant", "Alliances and nationalism."), ("user", "and then?"), ("assistant", "The war spread."), ("user", "why?")]);
        let (text, context) = c.as_request(2);
        assert_eq!(text, "why?");
        // The two turns before the last message: the user's first, then the answer.
        assert_eq!(context, "and then?\nThe war spread.");
        // Four turns reach the question that set the topic; user turns newest first.
        let (_, context) = c.as_request(4);
        assert_eq!(context, "and then?\ncauses of WW1?\nThe war spread.\nAlliances and nationalism.");
    }
}
