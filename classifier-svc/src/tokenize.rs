//! Text → token ids with the model's `tokenizer.json`.
//!
//! The fixed padding some tokenizer files carry (e.g. MiniLM pads every input to 128) is turned
//! off: batches are padded to their longest member instead, which is what keeps short prompts
//! cheap. Truncation is always on, at the model's maximum length.

use std::path::Path;

use anyhow::{anyhow, Context, Result};
use tokenizers::{Tokenizer, TruncationParams};

pub struct TextTokenizer {
    inner: Tokenizer,
    max_len: usize,
}

impl TextTokenizer {
    /// Loads `tokenizer.json`; `max_len` caps the sequence length (special tokens included).
    /// When `None`, the file's own truncation length is used, bounded by `model_max`.
    pub fn load(path: &Path, max_len: Option<usize>, model_max: usize) -> Result<Self> {
        let mut inner = Tokenizer::from_file(path)
            .map_err(|e| anyhow!("cannot load tokenizer {}: {e}", path.display()))?;
        let file_max = inner.get_truncation().map(|t| t.max_length);
        let max_len = max_len.or(file_max).unwrap_or(model_max).min(model_max);
        if max_len < 2 {
            anyhow::bail!("max sequence length {max_len} is too small (needs room for special tokens)");
        }
        inner.with_padding(None);
        inner
            .with_truncation(Some(TruncationParams {
                max_length: max_len,
                ..Default::default()
            }))
            .map_err(|e| anyhow!("cannot set truncation to {max_len}: {e}"))?;
        Ok(Self { inner, max_len })
    }

    pub fn max_len(&self) -> usize {
        self.max_len
    }

    /// Token ids (with special tokens, truncated) of each text.
    pub fn encode<S: AsRef<str>>(&self, texts: &[S]) -> Result<Vec<Vec<u32>>> {
        texts
            .iter()
            .map(|t| {
                self.inner
                    .encode(t.as_ref(), true)
                    .map(|e| e.get_ids().to_vec())
                    .map_err(|e| anyhow!("tokenization failed: {e}"))
            })
            .collect::<Result<Vec<_>>>()
            .context("tokenizer")
    }

    /// Token ids, byte ranges in the text and special-token flags of each text (what a token
    /// classifier needs to turn labels back into text spans).
    pub fn encode_with_offsets<S: AsRef<str>>(&self, texts: &[S]) -> Result<Vec<TokenizedText>> {
        texts
            .iter()
            .map(|t| {
                let e = self.inner.encode(t.as_ref(), true).map_err(|e| anyhow!("tokenization failed: {e}"))?;
                Ok(TokenizedText {
                    ids: e.get_ids().to_vec(),
                    offsets: e.get_offsets().to_vec(),
                    special: e.get_special_tokens_mask().iter().map(|&m| m == 1).collect(),
                })
            })
            .collect::<Result<Vec<_>>>()
            .context("tokenizer")
    }
}

/// One text's tokens with their byte ranges (`(0, 0)` for special tokens).
#[derive(Debug, Clone)]
pub struct TokenizedText {
    pub ids: Vec<u32>,
    pub offsets: Vec<(usize, usize)>,
    pub special: Vec<bool>,
}
