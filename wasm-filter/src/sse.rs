//! OpenAI chat-completion streams: replaying a stored completion as SSE, and assembling a streamed
//! answer into one completion so it can be stored.

use serde_json::{json, Map, Value};

/// A `chat.completion` body replayed as `chat.completion.chunk` events ending in `[DONE]`.
pub fn completion_to_sse(completion: &[u8]) -> Option<Vec<u8>> {
    let body: Value = serde_json::from_slice(completion).ok()?;
    let (id, created, model) = (&body["id"], &body["created"], &body["model"]);
    let chunk = |choices: Value| json!({"id": id, "object": "chat.completion.chunk", "created": created, "model": model, "choices": choices});
    let mut out = String::new();
    let choices = body["choices"].as_array()?;
    for choice in choices {
        let message = &choice["message"];
        let delta = json!({"role": message["role"].as_str().unwrap_or("assistant"), "content": message["content"]});
        let event = chunk(json!([{"index": choice["index"], "delta": delta, "finish_reason": null}]));
        out.push_str(&format!("data: {event}\n\n"));
    }
    for choice in choices {
        let event = chunk(json!([{"index": choice["index"], "delta": {}, "finish_reason": choice["finish_reason"]}]));
        out.push_str(&format!("data: {event}\n\n"));
    }
    out.push_str("data: [DONE]\n\n");
    Some(out.into_bytes())
}

/// Assembles a complete SSE stream (`data:` events, `[DONE]` last) into a `chat.completion`.
/// Returns `None` for partial streams, tool calls, or anything it does not understand, so only
/// plain, finished answers are ever stored.
pub fn assemble_completion(stream: &[u8]) -> Option<Vec<u8>> {
    let text = std::str::from_utf8(stream).ok()?;
    let mut header: Option<(Value, Value, Value)> = None;
    let mut choices: Vec<(String, String, Value)> = Vec::new();
    let mut usage = Value::Null;
    let mut done = false;
    for line in text.lines() {
        let Some(data) = line.strip_prefix("data:").map(str::trim) else { continue };
        if done {
            return None;
        }
        if data == "[DONE]" {
            done = true;
            continue;
        }
        let chunk: Value = serde_json::from_str(data).ok()?;
        if header.is_none() {
            header = Some((chunk["id"].clone(), chunk["created"].clone(), chunk["model"].clone()));
        }
        if !chunk["usage"].is_null() {
            usage = chunk["usage"].clone();
        }
        for choice in chunk["choices"].as_array()? {
            let index = choice["index"].as_u64()? as usize;
            if index >= 16 {
                return None;
            }
            while choices.len() <= index {
                choices.push(("assistant".into(), String::new(), Value::Null));
            }
            let delta = &choice["delta"];
            if !delta["tool_calls"].is_null() || !delta["function_call"].is_null() {
                return None;
            }
            if let Some(role) = delta["role"].as_str() {
                choices[index].0 = role.to_string();
            }
            if let Some(content) = delta["content"].as_str() {
                choices[index].1.push_str(content);
            }
            if !choice["finish_reason"].is_null() {
                choices[index].2 = choice["finish_reason"].clone();
            }
        }
    }
    let (id, created, model) = header?;
    if !done || choices.is_empty() || choices.iter().any(|c| c.2.is_null()) {
        return None;
    }
    let mut body = Map::new();
    body.insert("id".into(), id);
    body.insert("object".into(), "chat.completion".into());
    body.insert("created".into(), created);
    body.insert("model".into(), model);
    body.insert(
        "choices".into(),
        Value::Array(
            choices
                .into_iter()
                .enumerate()
                .map(|(i, (role, content, finish))| {
                    json!({"index": i, "message": {"role": role, "content": content}, "finish_reason": finish})
                })
                .collect(),
        ),
    );
    if !usage.is_null() {
        body.insert("usage".into(), usage);
    }
    serde_json::to_vec(&Value::Object(body)).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const COMPLETION: &str = r#"{"id":"c1","object":"chat.completion","created":7,"model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"Hello there"},"finish_reason":"stop"}],"usage":{"total_tokens":3}}"#;

    #[test]
    fn replay_and_assemble_round_trip() {
        let sse = completion_to_sse(COMPLETION.as_bytes()).unwrap();
        let text = String::from_utf8(sse.clone()).unwrap();
        assert!(text.ends_with("data: [DONE]\n\n"));
        assert_eq!(text.matches("data: ").count(), 3);
        let back: Value = serde_json::from_slice(&assemble_completion(&sse).unwrap()).unwrap();
        assert_eq!(back["choices"][0]["message"]["content"], "Hello there");
        assert_eq!(back["choices"][0]["finish_reason"], "stop");
        assert_eq!(back["model"], "m");
    }

    #[test]
    fn assembles_word_by_word_streams() {
        let stream = "data: {\"id\":\"x\",\"created\":1,\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"Hel\"},\"finish_reason\":null}]}\n\n\
                      data: {\"id\":\"x\",\"created\":1,\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"lo\"},\"finish_reason\":null}]}\r\n\r\n\
                      data: {\"id\":\"x\",\"created\":1,\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}],\"usage\":{\"total_tokens\":2}}\n\n\
                      data: [DONE]\n\n";
        let v: Value = serde_json::from_slice(&assemble_completion(stream.as_bytes()).unwrap()).unwrap();
        assert_eq!(v["choices"][0]["message"]["content"], "Hello");
        assert_eq!(v["usage"]["total_tokens"], 2);
    }

    #[test]
    fn partial_or_tool_streams_are_not_stored() {
        let start = "data: {\"id\":\"x\",\"created\":1,\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hel\"},\"finish_reason\":null}]}\n\n";
        assert!(assemble_completion(start.as_bytes()).is_none(), "no [DONE]");
        let unfinished = format!("{start}data: [DONE]\n\n");
        assert!(assemble_completion(unfinished.as_bytes()).is_none(), "no finish_reason");
        let tools = "data: {\"id\":\"x\",\"created\":1,\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{}]},\"finish_reason\":\"tool_calls\"}]}\n\ndata: [DONE]\n\n";
        assert!(assemble_completion(tools.as_bytes()).is_none());
        assert!(assemble_completion(b"garbage").is_none());
    }
}
