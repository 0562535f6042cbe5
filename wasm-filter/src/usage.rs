//! Token usage from responses, read as they stream past (nothing is held back): the `usage`
//! object of a JSON completion, or of the stream's final chunk (`stream_options.include_usage`).

use serde_json::Value;

/// Longest JSON tail kept: `usage` sits at the end of a completion.
const JSON_TAIL: usize = 16 * 1024;
/// Longest partial SSE line kept between chunks.
const MAX_LINE: usize = 64 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
}

fn usage_of(v: &Value) -> Option<Usage> {
    let u = v.get("usage").filter(|u| u.is_object())?;
    Some(Usage {
        prompt_tokens: u["prompt_tokens"].as_u64().unwrap_or(0),
        completion_tokens: u["completion_tokens"].as_u64().unwrap_or(0),
    })
}

pub struct UsageScanner {
    sse: bool,
    pending: Vec<u8>,
    found: Option<Usage>,
}

impl UsageScanner {
    pub fn new(sse: bool) -> Self {
        Self { sse, pending: Vec::new(), found: None }
    }

    pub fn push(&mut self, chunk: &[u8]) {
        self.pending.extend_from_slice(chunk);
        if self.sse {
            while let Some(end) = self.pending.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.pending.drain(..=end).collect();
                self.scan_line(&line);
            }
            if self.pending.len() > MAX_LINE {
                self.pending.clear();
            }
        } else if self.pending.len() > 2 * JSON_TAIL {
            self.pending.drain(..self.pending.len() - JSON_TAIL);
        }
    }

    fn scan_line(&mut self, line: &[u8]) {
        let Ok(line) = std::str::from_utf8(line) else { return };
        let Some(data) = line.trim().strip_prefix("data:") else { return };
        if data.contains("\"usage\"") {
            if let Some(u) = serde_json::from_str::<Value>(data.trim()).ok().as_ref().and_then(usage_of) {
                self.found = Some(u);
            }
        }
    }

    pub fn finish(mut self) -> Option<Usage> {
        if self.sse {
            let rest = std::mem::take(&mut self.pending);
            self.scan_line(&rest);
            return self.found;
        }
        if let Some(u) = serde_json::from_slice::<Value>(&self.pending).ok().as_ref().and_then(usage_of) {
            return Some(u);
        }
        // Only the tail is left: parse the value after the last "usage" key.
        let at = self.pending.windows(7).rposition(|w| w == b"\"usage\"")?;
        let rest = &self.pending[at + 7..];
        let colon = rest.iter().position(|&b| b == b':')?;
        let value = serde_json::Deserializer::from_slice(&rest[colon + 1..]).into_iter::<Value>().next()?.ok()?;
        usage_of(&serde_json::json!({ "usage": value }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan(sse: bool, chunks: &[&[u8]]) -> Option<Usage> {
        let mut s = UsageScanner::new(sse);
        for c in chunks {
            s.push(c);
        }
        s.finish()
    }

    #[test]
    fn json_usage_whole_and_from_the_tail() {
        let body = br#"{"id":"x","choices":[],"usage":{"prompt_tokens":12,"completion_tokens":30,"total_tokens":42}}"#;
        let (a, b) = body.split_at(20);
        assert_eq!(scan(false, &[a, b]), Some(Usage { prompt_tokens: 12, completion_tokens: 30 }));
        let big = format!(r#"{{"choices":[{{"message":{{"content":"{}"}}}}],"usage":{{"prompt_tokens":1,"completion_tokens":2}}}}"#, "a".repeat(100_000));
        let chunks: Vec<&[u8]> = big.as_bytes().chunks(1000).collect();
        assert_eq!(scan(false, &chunks), Some(Usage { prompt_tokens: 1, completion_tokens: 2 }));
        assert_eq!(scan(false, &[b"{\"error\":{}}"]), None);
    }

    #[test]
    fn sse_usage_from_the_final_chunk_split_across_reads() {
        let stream = b"data: {\"choices\":[{\"delta\":{\"content\":\"hi\"}}]}\n\ndata: {\"choices\":[],\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":7}}\n\ndata: [DONE]\n\n";
        let chunks: Vec<&[u8]> = stream.chunks(9).collect();
        assert_eq!(scan(true, &chunks), Some(Usage { prompt_tokens: 5, completion_tokens: 7 }));
        assert_eq!(scan(true, &[b"data: {\"choices\":[]}\n\ndata: [DONE]\n\n"]), None);
    }
}
