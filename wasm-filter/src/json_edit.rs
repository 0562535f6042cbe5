//! Byte-level edits of an already-validated JSON object, so the body keeps its key order,
//! whitespace and number formatting exactly; only the edited value changes.

use std::ops::Range;

/// Byte range of the value of top-level key `key` in `json` (a JSON object that
/// `serde_json` has already accepted). Returns the first occurrence.
pub fn top_level_value_span(json: &[u8], key: &str) -> Option<Range<usize>> {
    let mut i = skip_ws(json, 0);
    if json.get(i) != Some(&b'{') {
        return None;
    }
    i += 1;
    loop {
        i = skip_ws(json, i);
        match json.get(i)? {
            b'}' => return None,
            b',' => {
                i += 1;
                continue;
            }
            b'"' => {}
            _ => return None,
        }
        let key_end = skip_string(json, i)?;
        let matches = key_equals(&json[i..key_end], key);
        i = skip_ws(json, key_end);
        if json.get(i) != Some(&b':') {
            return None;
        }
        i = skip_ws(json, i + 1);
        let value_end = skip_value(json, i)?;
        if matches {
            return Some(i..value_end);
        }
        i = value_end;
    }
}

/// Replaces `span` of `json` with `replacement`.
pub fn splice(json: &[u8], span: Range<usize>, replacement: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(json.len() - span.len() + replacement.len());
    out.extend_from_slice(&json[..span.start]);
    out.extend_from_slice(replacement);
    out.extend_from_slice(&json[span.end..]);
    out
}

/// `value` encoded as a JSON string literal.
pub fn json_string(value: &str) -> Vec<u8> {
    serde_json::to_vec(value).expect("strings always serialize")
}

fn skip_ws(json: &[u8], mut i: usize) -> usize {
    while matches!(json.get(i), Some(b' ' | b'\t' | b'\n' | b'\r')) {
        i += 1;
    }
    i
}

/// `i` points at an opening quote; returns the index just past the closing quote.
fn skip_string(json: &[u8], i: usize) -> Option<usize> {
    let mut j = i + 1;
    loop {
        match json.get(j)? {
            b'\\' => j += 2,
            b'"' => return Some(j + 1),
            _ => j += 1,
        }
    }
}

fn skip_value(json: &[u8], i: usize) -> Option<usize> {
    match json.get(i)? {
        b'"' => skip_string(json, i),
        b'{' | b'[' => {
            let mut depth = 0usize;
            let mut j = i;
            loop {
                match json.get(j)? {
                    b'"' => {
                        j = skip_string(json, j)?;
                        continue;
                    }
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth -= 1;
                        if depth == 0 {
                            return Some(j + 1);
                        }
                    }
                    _ => {}
                }
                j += 1;
            }
        }
        _ => {
            // number, true, false, null
            let mut j = i;
            while let Some(b) = json.get(j) {
                if matches!(b, b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r') {
                    break;
                }
                j += 1;
            }
            Some(j)
        }
    }
}

/// Compares a quoted JSON key (with escapes) to `key`.
fn key_equals(quoted: &[u8], key: &str) -> bool {
    let inner = &quoted[1..quoted.len() - 1];
    if !inner.contains(&b'\\') {
        return inner == key.as_bytes();
    }
    serde_json::from_slice::<String>(quoted).is_ok_and(|k| k == key)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value<'a>(json: &'a str, key: &str) -> Option<&'a str> {
        top_level_value_span(json.as_bytes(), key).map(|r| &json[r])
    }

    #[test]
    fn finds_top_level_values_only() {
        let j = r#"{"messages":[{"model":"inner","content":"}\"]{"}],"model" : "MoM","n":1}"#;
        assert_eq!(value(j, "model"), Some(r#""MoM""#));
        assert_eq!(value(j, "n"), Some("1"));
        assert_eq!(value(j, "absent"), None);
        assert_eq!(value(r#"{"a":{"model":1}}"#, "model"), None);
    }

    #[test]
    fn escaped_keys_match() {
        assert_eq!(value(r#"{"mod\u0065l":"x"}"#, "model"), Some(r#""x""#));
    }

    #[test]
    fn splice_preserves_everything_else() {
        let j = "{ \"z\": 1.50,\n  \"model\": \"auto\", \"a\": [true, null] }";
        let span = top_level_value_span(j.as_bytes(), "model").unwrap();
        let out = splice(j.as_bytes(), span, &json_string("math\"7b"));
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "{ \"z\": 1.50,\n  \"model\": \"math\\\"7b\", \"a\": [true, null] }"
        );
    }

    #[test]
    fn scalar_values() {
        assert_eq!(value(r#"{"model":null,"x":-1e5}"#, "model"), Some("null"));
        assert_eq!(value(r#"{"model":null,"x":-1e5}"#, "x"), Some("-1e5"));
    }
}
