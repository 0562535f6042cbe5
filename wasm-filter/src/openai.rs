//! OpenAI request bodies: validation, prompt extraction, and OpenAI-style errors.
//!
//! Parsing is two-phase: the top level borrows each message as raw JSON, and only the turns that
//! feed the classifier are decoded into text, so a 2 MB conversation is not copied.

use serde::Deserialize;
use serde_json::value::RawValue;
use std::borrow::Cow;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    ChatCompletions,
    Completions,
    Responses,
}

impl Endpoint {
    pub fn from_path(path: &str) -> Option<Self> {
        match path.split('?').next().unwrap_or(path) {
            "/v1/chat/completions" => Some(Self::ChatCompletions),
            "/v1/completions" => Some(Self::Completions),
            "/v1/responses" => Some(Self::Responses),
            _ => None,
        }
    }
}

/// What the router needs from a request body.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PromptRequest {
    pub model: String,
    /// The text to classify: the last user turn.
    pub text: String,
    /// Earlier user/assistant turns, oldest first.
    pub context: Vec<(String, String)>,
    pub stream: bool,
    /// The request offers tools or functions to the model.
    pub has_tools: bool,
    pub temperature: Option<f64>,
    /// OpenAI `cache_salt`: a client-chosen cache partition.
    pub cache_salt: String,
}

/// An error answered to the client as `{"error": {...}}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: u32,
    pub message: String,
    pub kind: &'static str,
    pub code: Option<String>,
    pub param: Option<&'static str>,
}

impl ApiError {
    pub fn invalid_request(message: impl Into<String>, param: Option<&'static str>) -> Self {
        Self { status: 400, message: message.into(), kind: "invalid_request_error", code: None, param }
    }

    pub fn body_too_large(limit: usize) -> Self {
        Self {
            status: 413,
            message: format!("request body exceeds the router's limit of {limit} bytes"),
            kind: "invalid_request_error",
            code: Some("request_too_large".into()),
            param: None,
        }
    }

    pub fn router_unavailable(reason: &str) -> Self {
        Self {
            status: 503,
            message: format!("the semantic router could not classify this request ({reason})"),
            kind: "service_unavailable",
            code: Some("router_unavailable".into()),
            param: None,
        }
    }

    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({
            "error": {
                "message": self.message,
                "type": self.kind,
                "param": self.param,
                "code": self.code,
            }
        }))
        .expect("error bodies always serialize")
    }
}

const ROLES: [&str; 6] = ["system", "developer", "user", "assistant", "tool", "function"];

#[derive(Deserialize)]
struct ChatBody<'a> {
    #[serde(borrow)]
    model: Option<&'a RawValue>,
    #[serde(borrow)]
    messages: Option<Vec<&'a RawValue>>,
    stream: Option<bool>,
    #[serde(borrow)]
    tools: Option<Vec<&'a RawValue>>,
    #[serde(borrow)]
    functions: Option<Vec<&'a RawValue>>,
    temperature: Option<f64>,
    cache_salt: Option<String>,
}

#[derive(Deserialize)]
struct CompletionBody<'a> {
    #[serde(borrow)]
    model: Option<&'a RawValue>,
    #[serde(borrow)]
    prompt: Option<&'a RawValue>,
    stream: Option<bool>,
}

#[derive(Deserialize)]
struct ResponsesBody<'a> {
    #[serde(borrow)]
    model: Option<&'a RawValue>,
    #[serde(borrow)]
    input: Option<&'a RawValue>,
    stream: Option<bool>,
}

#[derive(Deserialize)]
struct Message<'a> {
    #[serde(borrow)]
    role: Cow<'a, str>,
    #[serde(borrow, default)]
    content: Option<&'a RawValue>,
}

enum Content<'a> {
    Text(Cow<'a, str>),
    Parts(Vec<Part<'a>>),
}

#[derive(Deserialize)]
struct Part<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(borrow, default)]
    text: Option<Cow<'a, str>>,
}

/// Parses `body` for `endpoint`, keeping up to `context_turns` earlier turns.
pub fn parse_request(endpoint: Endpoint, body: &[u8], context_turns: usize) -> Result<PromptRequest, ApiError> {
    let invalid_json = |e: serde_json::Error| {
        ApiError::invalid_request(format!("We could not parse the JSON body of your request: {e}"), None)
    };
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::invalid_request("the request body is empty", None));
    }
    // serde_json does not check UTF-8 inside values it skips, so check the whole body here.
    if let Err(e) = std::str::from_utf8(body) {
        return Err(ApiError::invalid_request(
            format!("the request body is not valid UTF-8 (at byte {})", e.valid_up_to()),
            None,
        ));
    }
    match endpoint {
        Endpoint::ChatCompletions => {
            let b: ChatBody = serde_json::from_slice(body).map_err(invalid_json)?;
            let model = model_name(b.model)?;
            let messages = b.messages.ok_or_else(|| {
                ApiError::invalid_request("you must provide a 'messages' parameter", Some("messages"))
            })?;
            let (text, context) = chat_prompt(&messages, context_turns, "messages")?;
            let has_tools = b.tools.is_some_and(|t| !t.is_empty()) || b.functions.is_some_and(|f| !f.is_empty());
            Ok(PromptRequest {
                model,
                text,
                context,
                stream: b.stream.unwrap_or(false),
                has_tools,
                temperature: b.temperature,
                cache_salt: b.cache_salt.unwrap_or_default(),
            })
        }
        Endpoint::Completions => {
            let b: CompletionBody = serde_json::from_slice(body).map_err(invalid_json)?;
            let model = model_name(b.model)?;
            let prompt = b.prompt.ok_or_else(|| {
                ApiError::invalid_request("you must provide a 'prompt' parameter", Some("prompt"))
            })?;
            let text = completion_prompt(prompt)?;
            Ok(PromptRequest { model, text, stream: b.stream.unwrap_or(false), ..Default::default() })
        }
        Endpoint::Responses => {
            let b: ResponsesBody = serde_json::from_slice(body).map_err(invalid_json)?;
            let model = model_name(b.model)?;
            let input = b.input.ok_or_else(|| {
                ApiError::invalid_request("you must provide an 'input' parameter", Some("input"))
            })?;
            let (text, context) = if let Ok(text) = serde_json::from_str::<String>(input.get()) {
                (text, Vec::new())
            } else {
                let items: Vec<&RawValue> = serde_json::from_str(input.get()).map_err(|_| {
                    ApiError::invalid_request("'input' must be a string or an array of messages", Some("input"))
                })?;
                chat_prompt(&items, context_turns, "input")?
            };
            Ok(PromptRequest { model, text, context, stream: b.stream.unwrap_or(false), ..Default::default() })
        }
    }
}

fn model_name(raw: Option<&RawValue>) -> Result<String, ApiError> {
    let raw = raw.ok_or_else(|| ApiError::invalid_request("you must provide a 'model' parameter", Some("model")))?;
    match serde_json::from_str::<String>(raw.get()) {
        Ok(model) if !model.trim().is_empty() => Ok(model),
        Ok(_) => Err(ApiError::invalid_request("'model' must not be empty", Some("model"))),
        Err(_) => Err(ApiError::invalid_request(
            format!("'model' must be a string, got {}", truncate(raw.get(), 40)),
            Some("model"),
        )),
    }
}

/// Validates every message, then extracts the last user turn and the context before it.
fn chat_prompt(
    messages: &[&RawValue],
    context_turns: usize,
    field: &'static str,
) -> Result<(String, Vec<(String, String)>), ApiError> {
    if messages.is_empty() {
        return Err(ApiError::invalid_request(format!("'{field}' must contain at least one message"), Some(field)));
    }
    let mut parsed = Vec::with_capacity(messages.len());
    for (i, raw) in messages.iter().enumerate() {
        let m: Message = serde_json::from_str(raw.get()).map_err(|e| {
            ApiError::invalid_request(format!("'{field}[{i}]' is not a valid message: {e}"), Some(field))
        })?;
        if !ROLES.contains(&m.role.as_ref()) {
            return Err(ApiError::invalid_request(
                format!("'{field}[{i}].role' must be one of {}, got {:?}", ROLES.join(", "), truncate(&m.role, 40)),
                Some(field),
            ));
        }
        parsed.push(m);
    }
    // Classify the last user turn; without one (e.g. system-only), the last turn with text.
    let target = parsed
        .iter()
        .rposition(|m| m.role == "user")
        .unwrap_or(parsed.len() - 1);
    let text = content_text(parsed[target].content, field, target)?;
    let mut context = Vec::new();
    for (i, m) in parsed[..target].iter().enumerate().rev() {
        if context.len() == context_turns {
            break;
        }
        if m.role == "user" || m.role == "assistant" {
            let t = content_text(m.content, field, i)?;
            if !t.is_empty() {
                context.push((m.role.to_string(), t));
            }
        }
    }
    context.reverse();
    // Content of the remaining turns is validated too, so a bad body is rejected whole.
    for (i, m) in parsed.iter().enumerate() {
        if let Some(raw) = m.content {
            if !content_is_valid(raw) {
                return Err(bad_content(field, i));
            }
        }
    }
    Ok((text, context))
}

/// A string (already valid JSON: the body was parsed), null, or an array of typed parts.
fn content_is_valid(raw: &RawValue) -> bool {
    match raw.get().as_bytes().first() {
        Some(b'"') => true,
        Some(b'n') => raw.get() == "null",
        Some(b'[') => serde_json::from_str::<Vec<Part>>(raw.get()).is_ok(),
        _ => false,
    }
}

/// Parses content without serde's untagged buffering, which copies every string it tries.
fn parse_content(raw: &RawValue) -> Option<Content<'_>> {
    match raw.get().as_bytes().first() {
        Some(b'"') => serde_json::from_str::<Cow<str>>(raw.get()).ok().map(Content::Text),
        Some(b'[') => serde_json::from_str::<Vec<Part>>(raw.get()).ok().map(Content::Parts),
        _ => None,
    }
}

fn bad_content(field: &str, i: usize) -> ApiError {
    ApiError::invalid_request(
        format!("'{field}[{i}].content' must be a string or an array of content parts with a 'type'"),
        None,
    )
}

fn content_text(raw: Option<&RawValue>, field: &str, i: usize) -> Result<String, ApiError> {
    let Some(raw) = raw else { return Ok(String::new()) };
    if raw.get() == "null" {
        return Ok(String::new());
    }
    match parse_content(raw).ok_or_else(|| bad_content(field, i))? {
        Content::Text(t) => Ok(t.into_owned()),
        Content::Parts(parts) => {
            let mut text = String::new();
            for p in parts {
                if matches!(p.kind.as_ref(), "text" | "input_text" | "output_text") {
                    if let Some(t) = p.text {
                        if !text.is_empty() {
                            text.push('\n');
                        }
                        text.push_str(&t);
                    }
                }
            }
            Ok(text)
        }
    }
}

fn completion_prompt(raw: &RawValue) -> Result<String, ApiError> {
    if let Ok(text) = serde_json::from_str::<String>(raw.get()) {
        return Ok(text);
    }
    if let Ok(texts) = serde_json::from_str::<Vec<String>>(raw.get()) {
        return Ok(texts.last().cloned().unwrap_or_default());
    }
    // Token-id prompts are valid but carry no text to classify.
    if serde_json::from_str::<Vec<serde_json::Value>>(raw.get()).is_ok() {
        return Ok(String::new());
    }
    Err(ApiError::invalid_request("'prompt' must be a string or an array", Some("prompt")))
}

fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        format!("{}…", s.chars().take(max).collect::<String>())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chat(body: &str) -> Result<PromptRequest, ApiError> {
        parse_request(Endpoint::ChatCompletions, body.as_bytes(), 2)
    }

    #[test]
    fn extracts_last_user_turn_and_context() {
        let r = chat(
            r#"{"model":"MoM","stream":true,"messages":[
              {"role":"system","content":"be brief"},
              {"role":"user","content":"what is an integral?"},
              {"role":"assistant","content":"an antiderivative"},
              {"role":"user","content":[{"type":"text","text":"and a derivative?"},{"type":"image_url","image_url":{"url":"x"}},{"type":"text","text":"thanks"}]}]}"#,
        )
        .unwrap();
        assert_eq!(r.model, "MoM");
        assert!(r.stream);
        assert_eq!(r.text, "and a derivative?\nthanks");
        assert_eq!(
            r.context,
            vec![
                ("user".to_string(), "what is an integral?".to_string()),
                ("assistant".to_string(), "an antiderivative".to_string())
            ]
        );
    }

    #[test]
    fn context_is_bounded() {
        let r = parse_request(
            Endpoint::ChatCompletions,
            br#"{"model":"m","messages":[{"role":"user","content":"a"},{"role":"user","content":"b"},{"role":"user","content":"c"}]}"#,
            1,
        )
        .unwrap();
        assert_eq!(r.context, vec![("user".to_string(), "b".to_string())]);
    }

    #[test]
    fn rejects_bad_bodies_with_clear_messages() {
        let cases = [
            ("", "empty"),
            ("{", "could not parse"),
            (r#"{"messages":[]}"#, "'model'"),
            (r#"{"model":5,"messages":[]}"#, "'model' must be a string"),
            (r#"{"model":"m"}"#, "'messages'"),
            (r#"{"model":"m","messages":[]}"#, "at least one message"),
            (r#"{"model":"m","messages":"hi"}"#, "could not parse"),
            (r#"{"model":"m","messages":[{"role":"wizard","content":"x"}]}"#, "role"),
            (r#"{"model":"m","messages":[{"content":"x"}]}"#, "messages[0]"),
            (r#"{"model":"m","messages":[{"role":"user","content":5}]}"#, "messages[0].content"),
            (r#"{"model":"m","messages":[{"role":"user","content":"x"},{"role":"assistant","content":{"a":1}}]}"#, "messages[1].content"),
            (r#"{"model":"a","model":"b","messages":[{"role":"user","content":"x"}]}"#, "duplicate field `model`"),
            (r#"{"model":"m","stream":"yes","messages":[{"role":"user","content":"x"}]}"#, "could not parse"),
        ];
        for (body, expected) in cases {
            let e = chat(body).unwrap_err();
            assert_eq!(e.status, 400, "{body}");
            assert!(e.message.contains(expected), "{body}: {}", e.message);
        }
    }

    #[test]
    fn invalid_utf8_is_rejected() {
        let mut body = br#"{"model":"m","messages":[{"role":"user","content":"x"#.to_vec();
        body.extend_from_slice(&[0xff, 0xfe]);
        body.extend_from_slice(br#""}]}"#);
        assert_eq!(parse_request(Endpoint::ChatCompletions, &body, 0).unwrap_err().status, 400);
    }

    #[test]
    fn cache_relevant_traits() {
        let r = chat(r#"{"model":"m","messages":[{"role":"user","content":"x"}],"temperature":0.7,"tools":[{"type":"function"}],"cache_salt":"s1"}"#).unwrap();
        assert_eq!((r.temperature, r.has_tools, r.cache_salt.as_str()), (Some(0.7), true, "s1"));
        let r = chat(r#"{"model":"m","messages":[{"role":"user","content":"x"}],"tools":[]}"#).unwrap();
        assert!(!r.has_tools && r.temperature.is_none());
        assert_eq!(chat(r#"{"model":"m","messages":[{"role":"user","content":"x"}],"temperature":"hot"}"#).unwrap_err().status, 400);
    }

    #[test]
    fn invalid_utf8_in_an_ignored_field_is_rejected() {
        // Found by fuzz_body_handling: serde skips unknown fields without checking UTF-8.
        let body = b"{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"z\":{\"mode\xff\":2}}";
        let e = parse_request(Endpoint::ChatCompletions, body, 0).unwrap_err();
        assert!(e.message.contains("UTF-8"), "{}", e.message);
    }

    #[test]
    fn completions_and_responses() {
        let r = parse_request(Endpoint::Completions, br#"{"model":"auto","prompt":"2+2="}"#, 0).unwrap();
        assert_eq!(r.text, "2+2=");
        let r = parse_request(Endpoint::Responses, br#"{"model":"auto","input":"hello"}"#, 0).unwrap();
        assert_eq!(r.text, "hello");
        let r = parse_request(
            Endpoint::Responses,
            br#"{"model":"auto","input":[{"role":"user","content":[{"type":"input_text","text":"hi there"}]}]}"#,
            0,
        )
        .unwrap();
        assert_eq!(r.text, "hi there");
    }

    #[test]
    fn error_body_is_openai_shaped() {
        let v: serde_json::Value = serde_json::from_slice(&ApiError::body_too_large(10).to_json()).unwrap();
        assert_eq!(v["error"]["type"], "invalid_request_error");
        assert_eq!(v["error"]["code"], "request_too_large");
        assert!(v["error"]["message"].as_str().unwrap().contains("10 bytes"));
    }
}
