//! Keyword matching: exact (word-bounded), regex, character n-gram, fuzzy (Levenshtein) and
//! one-document BM25. Each method answers a score in 0..1 per keyword; the rule's operator
//! combines them.

use regex::{Regex, RegexBuilder};

use crate::model::{KeywordMethod, KeywordOperator, KeywordSignal};

/// BM25's term-frequency saturation constant (the usual value).
const BM25_K1: f32 = 1.2;

/// Compiles the patterns `Exact` and `Regex` need; `Err` names the bad keyword.
pub fn compile(method: &KeywordMethod, keywords: &[String], case_sensitive: bool) -> Result<Vec<Regex>, String> {
    let build = |src: &str| {
        RegexBuilder::new(src)
            .case_insensitive(!case_sensitive)
            .build()
            .map_err(|e| e.to_string())
    };
    match method {
        KeywordMethod::Exact => keywords
            .iter()
            .map(|k| {
                // \b only applies next to word characters: "c++" or "?" match as written.
                let start = if k.chars().next().is_some_and(is_word) { r"\b" } else { "" };
                let end = if k.chars().last().is_some_and(is_word) { r"\b" } else { "" };
                build(&format!("{start}{}{end}", regex::escape(k)))
            })
            .collect(),
        KeywordMethod::Regex => keywords.iter().map(|k| build(k)).collect(),
        _ => Ok(Vec::new()),
    }
}

fn is_word(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// Lower-cased (unless case-sensitive) words of `text`: runs of letters and digits.
fn words(text: &str, case_sensitive: bool) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(|w| if case_sensitive { w.to_string() } else { w.to_lowercase() })
        .collect()
}

/// Character n-grams of `s` (padded with a space on both sides, so short words have some).
fn ngrams(s: &str, n: usize) -> std::collections::HashSet<Vec<char>> {
    let chars: Vec<char> = format!(" {s} ").chars().collect();
    if chars.len() < n {
        return std::iter::once(chars).collect();
    }
    chars.windows(n).map(|w| w.to_vec()).collect()
}

fn jaccard(a: &std::collections::HashSet<Vec<char>>, b: &std::collections::HashSet<Vec<char>>) -> f32 {
    let inter = a.intersection(b).count();
    let union = a.len() + b.len() - inter;
    if union == 0 {
        0.0
    } else {
        inter as f32 / union as f32
    }
}

/// The best similarity of `keyword` to any window of `text`'s words as long as the keyword
/// (in words), under `sim`.
fn best_window(keyword: &[String], text: &[String], sim: impl Fn(&str, &str) -> f32) -> f32 {
    if keyword.is_empty() || text.len() < keyword.len() {
        // A prompt shorter than the phrase is compared as a whole.
        if keyword.is_empty() || text.is_empty() {
            return 0.0;
        }
        return sim(&keyword.join(" "), &text.join(" "));
    }
    let k = keyword.join(" ");
    text.windows(keyword.len())
        .map(|w| sim(&k, &w.join(" ")))
        .fold(0.0, f32::max)
}

/// Score of one keyword against the prompt, 0..1 (1: present as written). The prompt's words
/// are passed in once per rule.
fn score(signal: &KeywordSignal, i: usize, text: &str, text_words: &[String]) -> f32 {
    let kw = &signal.keywords[i];
    match &signal.method {
        KeywordMethod::Exact | KeywordMethod::Regex => {
            if signal.patterns[i].is_match(text) {
                1.0
            } else {
                0.0
            }
        }
        KeywordMethod::Ngram { arity, .. } => {
            let n = (*arity).max(1);
            best_window(&words(kw, signal.case_sensitive), text_words, |a, b| jaccard(&ngrams(a, n), &ngrams(b, n)))
        }
        KeywordMethod::Fuzzy { .. } => {
            best_window(&words(kw, signal.case_sensitive), text_words, |a, b| strsim::normalized_levenshtein(a, b) as f32)
        }
        KeywordMethod::Bm25 { .. } => {
            let terms = words(kw, signal.case_sensitive);
            if terms.is_empty() {
                return 0.0;
            }
            let total: f32 = terms
                .iter()
                .map(|t| {
                    let tf = text_words.iter().filter(|w| *w == t).count() as f32;
                    // One document: its length is the average length, so b drops out.
                    tf * (BM25_K1 + 1.0) / (tf + BM25_K1) / (BM25_K1 + 1.0)
                })
                .sum();
            total / terms.len() as f32
        }
    }
}

/// Threshold a keyword's score must reach, on the 0..1 scale of [`score`].
fn threshold(method: &KeywordMethod) -> f32 {
    match method {
        KeywordMethod::Exact | KeywordMethod::Regex => 1.0,
        KeywordMethod::Ngram { threshold, .. } | KeywordMethod::Bm25 { threshold } => *threshold,
        // Configured on vSR's 0..100 scale.
        KeywordMethod::Fuzzy { threshold } => *threshold / 100.0,
    }
}

/// Whether the rule matches `text`, and its confidence (the best matching keyword's score; 1
/// for a `NOR` rule that matches).
pub fn evaluate(signal: &KeywordSignal, text: &str) -> Option<f32> {
    let text_words = match signal.method {
        KeywordMethod::Exact | KeywordMethod::Regex => Vec::new(),
        _ => words(text, signal.case_sensitive),
    };
    let min = threshold(&signal.method);
    let scores: Vec<f32> = (0..signal.keywords.len()).map(|i| score(signal, i, text, &text_words)).collect();
    let hits: Vec<f32> = scores.iter().copied().filter(|s| *s >= min && *s > 0.0).collect();
    let best = hits.iter().copied().fold(0.0, f32::max);
    match signal.operator {
        KeywordOperator::Or => (!hits.is_empty()).then_some(best),
        KeywordOperator::And => (!scores.is_empty() && hits.len() == scores.len())
            .then(|| hits.iter().copied().fold(1.0, f32::min)),
        KeywordOperator::Nor => hits.is_empty().then_some(1.0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(method: KeywordMethod, op: KeywordOperator, case_sensitive: bool, kws: &[&str]) -> KeywordSignal {
        let keywords: Vec<String> = kws.iter().map(|s| s.to_string()).collect();
        KeywordSignal {
            name: "k".into(),
            operator: op,
            patterns: compile(&method, &keywords, case_sensitive).unwrap(),
            method,
            case_sensitive,
            keywords,
        }
    }

    #[test]
    fn exact_matches_whole_words_and_phrases_only() {
        let r = rule(KeywordMethod::Exact, KeywordOperator::Or, false, &["urgent", "credit card", "c++"]);
        assert_eq!(evaluate(&r, "This is URGENT, please"), Some(1.0));
        assert_eq!(evaluate(&r, "my Credit  card"), None, "phrases match as written (one space)");
        assert_eq!(evaluate(&r, "my credit card number"), Some(1.0));
        assert_eq!(evaluate(&r, "insurgents attack"), None, "inside another word is not a match");
        assert_eq!(evaluate(&r, "learning C++ today"), Some(1.0));
        let cs = rule(KeywordMethod::Exact, KeywordOperator::Or, true, &["API"]);
        assert_eq!(evaluate(&cs, "the api key"), None);
        assert_eq!(evaluate(&cs, "the API key"), Some(1.0));
    }

    #[test]
    fn operators_combine_keyword_matches() {
        let and = rule(KeywordMethod::Exact, KeywordOperator::And, false, &["refund", "order"]);
        assert_eq!(evaluate(&and, "refund my order"), Some(1.0));
        assert_eq!(evaluate(&and, "refund it"), None);
        let nor = rule(KeywordMethod::Exact, KeywordOperator::Nor, false, &["refund", "order"]);
        assert_eq!(evaluate(&nor, "hello there"), Some(1.0));
        assert_eq!(evaluate(&nor, "my order"), None);
    }

    #[test]
    fn regex_keywords_are_patterns() {
        let r = rule(KeywordMethod::Regex, KeywordOperator::Or, false, &[r"\bv\d+\.\d+\b"]);
        assert!(evaluate(&r, "upgrade to V2.3 now").is_some());
        assert!(evaluate(&r, "upgrade now").is_none());
        assert!(compile(&KeywordMethod::Regex, &["(".into()], false).is_err());
    }

    #[test]
    fn ngram_tolerates_misspellings_above_its_threshold() {
        let r = rule(KeywordMethod::Ngram { arity: 3, threshold: 0.4 }, KeywordOperator::Or, false, &["urgent", "emergency"]);
        let hit = evaluate(&r, "this is an emergancy, help").expect("one letter off still shares most trigrams");
        assert!(hit > 0.4 && hit < 1.0, "{hit}");
        assert_eq!(evaluate(&r, "URGENT request"), Some(1.0));
        assert_eq!(evaluate(&r, "a calm question about gardens"), None);
    }

    #[test]
    fn fuzzy_uses_a_0_to_100_threshold_over_word_windows() {
        let r = rule(KeywordMethod::Fuzzy { threshold: 82.0 }, KeywordOperator::Or, false, &["social security", "password"]);
        assert!(evaluate(&r, "what is my socail security number").is_some(), "a transposition is ~87% similar");
        assert!(evaluate(&r, "reset my passwrd").is_some());
        assert!(evaluate(&r, "reset my pass").is_none(), "too different");
        let strict = rule(KeywordMethod::Fuzzy { threshold: 100.0 }, KeywordOperator::Or, false, &["password"]);
        assert!(evaluate(&strict, "reset my passwrd").is_none());
    }

    #[test]
    fn bm25_scores_term_frequency_with_saturation() {
        let r = rule(KeywordMethod::Bm25 { threshold: 0.5 }, KeywordOperator::Or, false, &["code", "machine learning"]);
        // One occurrence: (1·2.2/2.2)/2.2 ≈ 0.45 < 0.5; two: (2·2.2/3.2)/2.2 = 0.625.
        assert_eq!(evaluate(&r, "some code here"), None);
        let s = evaluate(&r, "code, code everywhere").unwrap();
        assert!((s - 0.625).abs() < 1e-4, "{s}");
        let low = rule(KeywordMethod::Bm25 { threshold: 0.1 }, KeywordOperator::Or, false, &["machine learning"]);
        let half = evaluate(&low, "I study machine design").unwrap();
        assert!((half - 0.4545 / 2.0).abs() < 1e-3, "one of two terms present: {half}");
        assert!(evaluate(&low, "nothing related").is_none());
    }
}
