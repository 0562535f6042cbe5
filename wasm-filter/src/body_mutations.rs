//! Decision-driven edits of a chat-completions body: reasoning mode and system prompt.
//! Byte-level like [`crate::json_edit`], so everything the edit does not touch stays identical.

use crate::json_edit::{json_string, splice, top_level_value_span};
use router_proto::v1::{system_prompt::Mode, Reasoning, SystemPrompt};
use serde::Deserialize;
use serde_json::value::RawValue;

/// What a reasoning edit did, for the `x-vsr-selected-reasoning` header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReasoningOutcome {
    /// Set as the decision asked.
    Applied,
    /// The client had set it; left alone.
    KeptClientValue,
    /// Nothing to set for this model family.
    NotApplicable,
}

/// Applies `reasoning` to `body`, never overriding a value the client set.
pub fn apply_reasoning(body: &[u8], reasoning: &Reasoning) -> (Vec<u8>, ReasoningOutcome) {
    let mut body = body.to_vec();
    let mut outcome = ReasoningOutcome::NotApplicable;
    if !reasoning.chat_template_kwarg.is_empty() {
        let param = &reasoning.chat_template_kwarg;
        let value = if reasoning.enabled { "true" } else { "false" };
        let member = format!("{}:{value}", String::from_utf8(json_string(param)).unwrap_or_default());
        match top_level_value_span(&body, "chat_template_kwargs") {
            None => {
                body = insert_member(&body, 0, &format!("\"chat_template_kwargs\":{{{member}}}"));
                outcome = ReasoningOutcome::Applied;
            }
            Some(span) if body[span.start] == b'{' => {
                if top_level_value_span(&body[span.clone()], param).is_some() {
                    outcome = ReasoningOutcome::KeptClientValue;
                } else {
                    body = insert_member(&body, span.start, &member);
                    outcome = ReasoningOutcome::Applied;
                }
            }
            // A non-object chat_template_kwargs is the client's business.
            Some(_) => outcome = ReasoningOutcome::KeptClientValue,
        }
    }
    if reasoning.enabled && !reasoning.effort.is_empty() {
        if top_level_value_span(&body, "reasoning_effort").is_some() {
            outcome = ReasoningOutcome::KeptClientValue;
        } else {
            let member = format!("\"reasoning_effort\":{}", String::from_utf8(json_string(&reasoning.effort)).unwrap_or_default());
            body = insert_member(&body, 0, &member);
            outcome = ReasoningOutcome::Applied;
        }
    }
    (body, outcome)
}

/// Inserts `member` (`"key":value`) as the first member of the object starting at `object_start`.
fn insert_member(body: &[u8], object_start: usize, member: &str) -> Vec<u8> {
    let mut i = object_start + 1;
    while matches!(body.get(i), Some(b' ' | b'\t' | b'\n' | b'\r')) {
        i += 1;
    }
    let empty = body.get(i) == Some(&b'}');
    let text = if empty { member.to_string() } else { format!("{member},") };
    splice(body, object_start + 1..object_start + 1, text.as_bytes())
}

#[derive(Deserialize)]
struct Role<'a> {
    #[serde(borrow)]
    role: std::borrow::Cow<'a, str>,
}

/// Adds the decision's system prompt to `messages`. Returns `None` when the body has no
/// messages array (nothing to do).
pub fn apply_system_prompt(body: &[u8], prompt: &SystemPrompt) -> Option<Vec<u8>> {
    let span = top_level_value_span(body, "messages")?;
    let messages: Vec<&RawValue> = serde_json::from_slice(&body[span.clone()]).ok()?;
    let ours = serde_json::json!({"role": "system", "content": prompt.text}).to_string();
    let replace = prompt.mode == Mode::Replace as i32;
    let mut out = String::with_capacity(span.len() + ours.len() + 2);
    out.push('[');
    out.push_str(&ours);
    for m in messages {
        let is_system = serde_json::from_str::<Role>(m.get()).is_ok_and(|r| r.role == "system");
        if replace && is_system {
            continue;
        }
        out.push(',');
        out.push_str(m.get());
    }
    out.push(']');
    Some(splice(body, span, out.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reasoning(enabled: bool, kwarg: &str, effort: &str) -> Reasoning {
        Reasoning { enabled, chat_template_kwarg: kwarg.into(), effort: effort.into() }
    }

    fn apply(body: &str, r: &Reasoning) -> (String, ReasoningOutcome) {
        let (b, o) = apply_reasoning(body.as_bytes(), r);
        (String::from_utf8(b).unwrap(), o)
    }

    #[test]
    fn adds_chat_template_kwargs() {
        let (b, o) = apply(r#"{"model":"m","messages":[]}"#, &reasoning(true, "enable_thinking", ""));
        assert_eq!(b, r#"{"chat_template_kwargs":{"enable_thinking":true},"model":"m","messages":[]}"#);
        assert_eq!(o, ReasoningOutcome::Applied);
        let (b, _) = apply(r#"{"model":"m","chat_template_kwargs":{"x":1}}"#, &reasoning(false, "thinking", ""));
        assert_eq!(b, r#"{"model":"m","chat_template_kwargs":{"thinking":false,"x":1}}"#);
        let (b, _) = apply(r#"{ }"#, &reasoning(true, "thinking", ""));
        assert_eq!(b, r#"{"chat_template_kwargs":{"thinking":true} }"#);
    }

    #[test]
    fn never_clobbers_client_values() {
        let body = r#"{"model":"m","chat_template_kwargs":{"enable_thinking":false}}"#;
        let (b, o) = apply(body, &reasoning(true, "enable_thinking", ""));
        assert_eq!((b.as_str(), o), (body, ReasoningOutcome::KeptClientValue));
        let body = r#"{"model":"m","reasoning_effort":"low"}"#;
        let (b, o) = apply(body, &reasoning(true, "", "high"));
        assert_eq!((b.as_str(), o), (body, ReasoningOutcome::KeptClientValue));
    }

    #[test]
    fn effort_only_when_enabled() {
        let (b, o) = apply(r#"{"model":"m"}"#, &reasoning(true, "", "high"));
        assert_eq!(b, r#"{"reasoning_effort":"high","model":"m"}"#);
        assert_eq!(o, ReasoningOutcome::Applied);
        let (b, o) = apply(r#"{"model":"m"}"#, &reasoning(false, "", "high"));
        assert_eq!((b.as_str(), o), (r#"{"model":"m"}"#, ReasoningOutcome::NotApplicable));
    }

    #[test]
    fn system_prompt_insert_and_replace() {
        let body = r#"{"model":"m","messages":[{"role":"system","content":"client"},{"role":"user","content":"q"}],"n":1}"#;
        let insert = SystemPrompt { text: "You are a \"math\" expert.".into(), mode: Mode::Insert as i32 };
        let out = String::from_utf8(apply_system_prompt(body.as_bytes(), &insert).unwrap()).unwrap();
        assert_eq!(
            out,
            r#"{"model":"m","messages":[{"content":"You are a \"math\" expert.","role":"system"},{"role":"system","content":"client"},{"role":"user","content":"q"}],"n":1}"#
        );
        let replace = SystemPrompt { text: "S".into(), mode: Mode::Replace as i32 };
        let out = String::from_utf8(apply_system_prompt(body.as_bytes(), &replace).unwrap()).unwrap();
        assert_eq!(out, r#"{"model":"m","messages":[{"content":"S","role":"system"},{"role":"user","content":"q"}],"n":1}"#);
        assert!(apply_system_prompt(br#"{"model":"m","prompt":"x"}"#, &insert).is_none());
    }
}
