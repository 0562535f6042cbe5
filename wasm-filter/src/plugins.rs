//! What a decision's plugins ask of the filter, as pure functions: the fast_response answer
//! (an OpenAI chat.completion, or its SSE stream), the request_params limits on the body, and
//! which header_mutation changes may touch the upstream request.

use router_proto::v1::{HeaderMutation, RequestParams};
use serde_json::{json, Value};

/// The fast_response answer: a `chat.completion` from `model` with `message` as the assistant's
/// content (no tokens were generated, so usage is zero), streamed as `chat.completion.chunk`
/// events when the client asked for a stream. Returns (content type, body).
pub fn fast_response(request_id: &str, created_secs: u64, model: &str, message: &str, stream: bool) -> (&'static str, Vec<u8>) {
    let completion = json!({
        "id": format!("chatcmpl-vsr-{request_id}"),
        "object": "chat.completion",
        "created": created_secs,
        "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": message}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
    })
    .to_string()
    .into_bytes();
    if stream {
        if let Some(sse) = crate::sse::completion_to_sse(&completion) {
            return ("text/event-stream", sse);
        }
    }
    ("application/json", completion)
}

/// `body` with the decision's request_params applied: blocked top-level fields removed, and
/// `max_tokens` / `max_completion_tokens` / `n` capped. `None` when nothing changes (the body
/// then stays byte-identical).
pub fn apply_request_params(body: &[u8], params: &RequestParams) -> Option<Vec<u8>> {
    let mut v: Value = serde_json::from_slice(body).ok()?;
    let obj = v.as_object_mut()?;
    let mut changed = false;
    for p in &params.blocked_params {
        // The routing fields are the router's, never a client parameter to drop.
        if p != "model" && p != "messages" && obj.remove(p).is_some() {
            changed = true;
        }
    }
    let mut cap = |key: &str, limit: Option<u64>| {
        if let (Some(limit), Some(current)) = (limit, obj.get(key).and_then(Value::as_u64)) {
            if current > limit {
                obj.insert(key.to_string(), limit.into());
                changed = true;
            }
        }
    };
    cap("max_tokens", params.max_tokens);
    cap("max_completion_tokens", params.max_tokens);
    cap("n", params.max_n);
    changed.then(|| v.to_string().into_bytes())
}

/// One change on the upstream request's headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderEdit {
    /// Set, replacing any value.
    Set(String, String),
    Remove(String),
}

/// The header_mutation changes the filter applies, in order (delete, then update, then add).
/// `existing` reads the request's current value of a header. Headers that carry the route
/// (pseudo-headers, `host`, `content-length`, the selected-model header and the router's own
/// prefix) are never touched: a decision's plugin must not override routing.
pub fn header_edits(
    m: &HeaderMutation,
    existing: impl Fn(&str) -> Option<String>,
    selected_model_header: &str,
    prefix: &str,
) -> Vec<HeaderEdit> {
    let allowed = |name: &str| {
        !name.is_empty()
            && !name.starts_with(':')
            && name != "host"
            && name != "content-length"
            && name != selected_model_header
            && !name.starts_with(prefix)
    };
    let mut out = Vec::new();
    for name in m.remove.iter().map(|n| n.to_ascii_lowercase()).filter(|n| allowed(n)) {
        out.push(HeaderEdit::Remove(name));
    }
    for h in &m.set {
        let name = h.name.to_ascii_lowercase();
        if allowed(&name) {
            out.push(HeaderEdit::Set(name, h.value.clone()));
        }
    }
    for h in &m.add {
        let name = h.name.to_ascii_lowercase();
        if !allowed(&name) {
            continue;
        }
        // Add appends to a value already there (an earlier edit included), comma-joined as
        // HTTP allows for repeated headers.
        let before = out
            .iter()
            .rev()
            .find_map(|e| match e {
                HeaderEdit::Set(n, v) if *n == name => Some(Some(v.clone())),
                HeaderEdit::Remove(n) if *n == name => Some(None),
                _ => None,
            })
            .unwrap_or_else(|| existing(&name));
        let value = match before {
            Some(v) if !v.is_empty() => format!("{v}, {}", h.value),
            _ => h.value.clone(),
        };
        out.push(HeaderEdit::Set(name, value));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use router_proto::v1::Header;

    fn h(n: &str, v: &str) -> Header {
        Header { name: n.into(), value: v.into() }
    }

    #[test]
    fn fast_response_is_an_openai_completion_or_stream() {
        let (ct, body) = fast_response("r1", 7, "m", "Busy, try later.", false);
        assert_eq!(ct, "application/json");
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["object"], "chat.completion");
        assert_eq!(v["choices"][0]["message"]["content"], "Busy, try later.");
        assert_eq!((v["model"].as_str(), v["created"].as_u64()), (Some("m"), Some(7)));
        let (ct, sse) = fast_response("r1", 7, "m", "Busy, try later.", true);
        assert_eq!(ct, "text/event-stream");
        let text = String::from_utf8(sse).unwrap();
        assert!(text.contains("\"content\":\"Busy, try later.\"") && text.ends_with("data: [DONE]\n\n"), "{text}");
    }

    #[test]
    fn request_params_remove_and_cap() {
        let p = RequestParams { blocked_params: vec!["logprobs".into(), "model".into()], max_tokens: Some(100), max_n: Some(2) };
        let out = apply_request_params(br#"{"model":"m","logprobs":true,"max_tokens":500,"max_completion_tokens":50,"n":4}"#, &p).unwrap();
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v, json!({"model": "m", "max_tokens": 100, "max_completion_tokens": 50, "n": 2}));
        assert!(apply_request_params(br#"{"model":"m","max_tokens":10}"#, &p).is_none(), "within limits: unchanged");
        assert!(apply_request_params(b"not json", &p).is_none());
    }

    #[test]
    fn header_edits_delete_update_add_and_protect_routing() {
        let m = HeaderMutation {
            add: vec![h("X-Tier", "gold"), h("x-new", "1"), h("x-selected-model", "evil")],
            set: vec![h("x-route", "a"), h("x-vsr-selected-model", "evil"), h(":authority", "evil")],
            remove: vec!["X-Debug".into(), "host".into()],
        };
        let existing = |n: &str| (n == "x-tier").then(|| "silver".to_string());
        let edits = header_edits(&m, existing, "x-selected-model", "x-vsr-");
        assert_eq!(
            edits,
            vec![
                HeaderEdit::Remove("x-debug".into()),
                HeaderEdit::Set("x-route".into(), "a".into()),
                HeaderEdit::Set("x-tier".into(), "silver, gold".into()),
                HeaderEdit::Set("x-new".into(), "1".into()),
            ]
        );
    }
}
