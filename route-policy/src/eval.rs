//! Per-request evaluation: every signal once, then the decisions over the matched signals,
//! then the winner by the routing strategy. Pure: the model outputs (prompt embedding, winning
//! category, guard probability, PII detections) come in as [`Input`].

use std::collections::BTreeMap;

use crate::model::{
    Aggregation, ComplexitySignal, DecisionSpec, Difficulty, Policy, Rule, SignalKind, Strategy, StructureFeature,
    DEFAULT_LANGUAGE_THRESHOLD,
};

/// What the models and the request said, as far as the policy needs it.
#[derive(Debug, Clone, Default)]
pub struct Input<'a> {
    /// The text signals look at: the last user message.
    pub text: &'a str,
    /// Estimated tokens of the whole conversation (see [`estimate_tokens`]).
    pub tokens: u64,
    /// The category classifier's winning label and its confidence, when it reached the
    /// classifier's threshold.
    pub domain: Option<(&'a str, f32)>,
    /// The unit prompt embedding (for embedding and complexity rules).
    pub embedding: Option<&'a [f32]>,
    /// The guard's jailbreak probability and its own threshold; `None`: no guard ran.
    pub jailbreak: Option<(f32, f32)>,
    /// PII detections: (type, confidence).
    pub pii: &'a [(&'a str, f32)],
}

/// Rough token count of a text (4 bytes per token, as OpenAI's rule of thumb): the context
/// signal needs a size class, not an exact count, and every backend tokenizes differently.
pub fn estimate_tokens(text: &str) -> u64 {
    (text.len() as u64).div_ceil(4)
}

/// Unit vectors of the phrases [`Policy::embedding_candidates`] lists, in its order: one list
/// per embedding rule, then a hard and an easy list per complexity rule. Lists not handed in
/// (fewer than the policy has) leave their rules unmatched.
#[derive(Debug, Clone, Default)]
pub struct CandidateVectors(pub Vec<Vec<Vec<f32>>>);

impl CandidateVectors {
    fn list(&self, i: usize) -> &[Vec<f32>] {
        self.0.get(i).map_or(&[], Vec::as_slice)
    }

    /// The vectors of embedding rule `i`.
    pub fn embedding(&self, i: usize) -> &[Vec<f32>] {
        self.list(i)
    }

    /// The hard and easy vectors of complexity rule `i` of `policy`.
    pub fn complexity(&self, policy: &Policy, i: usize) -> (&[Vec<f32>], &[Vec<f32>]) {
        let at = policy.embeddings.len() + 2 * i;
        (self.list(at), self.list(at + 1))
    }
}

/// The signals that matched, with their confidences.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Matched(pub BTreeMap<(SignalKind, String), f32>);

impl Matched {
    pub fn get(&self, kind: SignalKind, name: &str) -> Option<f32> {
        self.0.get(&(kind, name.to_string())).copied()
    }

    /// `type:name` of every matched signal, for logs and responses.
    pub fn names(&self) -> Vec<String> {
        self.0.keys().map(|(k, n)| format!("{}:{n}", k.as_str())).collect()
    }
}

/// The winning decision.
#[derive(Debug, Clone, PartialEq)]
pub struct Selection {
    pub decision: usize,
    pub confidence: f32,
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// ISO 639-1 codes of the languages whatlang names by ISO 639-3 (rule names may use either).
fn iso639_1(code3: &str) -> Option<&'static str> {
    Some(match code3 {
        "eng" => "en",
        "spa" => "es",
        "fra" => "fr",
        "deu" => "de",
        "ita" => "it",
        "por" => "pt",
        "nld" => "nl",
        "rus" => "ru",
        "ukr" => "uk",
        "pol" => "pl",
        "ces" => "cs",
        "swe" => "sv",
        "dan" => "da",
        "nob" => "no",
        "fin" => "fi",
        "tur" => "tr",
        "ara" => "ar",
        "heb" => "he",
        "hin" => "hi",
        "ben" => "bn",
        "cmn" => "zh",
        "jpn" => "ja",
        "kor" => "ko",
        "vie" => "vi",
        "tha" => "th",
        "ind" => "id",
        "ell" => "el",
        "hun" => "hu",
        "ron" => "ro",
        "pes" => "fa",
        _ => return None,
    })
}

/// The detected language (ISO 639-3 and 639-1 when known) and the detector's confidence.
pub fn detect_language(text: &str) -> Option<(&'static str, Option<&'static str>, f32)> {
    let info = whatlang::detect(text)?;
    let code3 = info.lang().code();
    Some((code3, iso639_1(code3), info.confidence() as f32))
}

/// Evaluates every signal of the policy once.
pub fn signals(policy: &Policy, vectors: &CandidateVectors, input: &Input) -> Matched {
    signals_timed(policy, vectors, input, &mut |_, _| {})
}

/// [`signals`], reporting the time each signal family took (families the policy uses only).
pub fn signals_timed(
    policy: &Policy,
    vectors: &CandidateVectors,
    input: &Input,
    timed: &mut dyn FnMut(SignalKind, std::time::Duration),
) -> Matched {
    let mut m = BTreeMap::new();
    let mut t = std::time::Instant::now();
    let mut lap = |kind: SignalKind, t: &mut std::time::Instant| {
        if policy.uses(kind) {
            timed(kind, t.elapsed());
        }
        *t = std::time::Instant::now();
    };
    for k in &policy.keywords {
        if let Some(c) = crate::keyword::evaluate(k, input.text) {
            m.insert((SignalKind::Keyword, k.name.clone()), c);
        }
    }
    lap(SignalKind::Keyword, &mut t);
    if let Some(prompt) = input.embedding {
        for (i, e) in policy.embeddings.iter().enumerate() {
            let sims: Vec<f32> = vectors.embedding(i).iter().map(|c| dot(prompt, c)).collect();
            if sims.is_empty() {
                continue;
            }
            let max = sims.iter().copied().fold(f32::MIN, f32::max);
            let score = match e.aggregation {
                Aggregation::Max | Aggregation::Any => max,
                Aggregation::Mean => sims.iter().sum::<f32>() / sims.len() as f32,
            };
            if score >= e.threshold {
                m.insert((SignalKind::Embedding, e.name.clone()), score.clamp(0.0, 1.0));
            }
        }
    }
    lap(SignalKind::Embedding, &mut t);
    if let Some((label, conf)) = input.domain {
        let key = |s: &str| s.to_lowercase().replace(['_', '-'], " ");
        for d in &policy.domains {
            // The label is the domain itself (a classifier trained on these domains, or one that
            // already gathered the MMLU labels) or one of its MMLU categories.
            let hit = key(&d.name) == key(label) || d.mmlu_categories.iter().any(|c| key(c) == key(label));
            if hit {
                m.insert((SignalKind::Domain, d.name.clone()), conf);
            }
        }
    }
    lap(SignalKind::Domain, &mut t);
    if !policy.languages.is_empty() {
        if let Some((code3, code1, conf)) = detect_language(input.text) {
            for l in &policy.languages {
                let t = if l.threshold > 0.0 { l.threshold } else { DEFAULT_LANGUAGE_THRESHOLD };
                let same = l.name.eq_ignore_ascii_case(code3) || code1.is_some_and(|c| l.name.eq_ignore_ascii_case(c));
                if same && conf >= t {
                    m.insert((SignalKind::Language, l.name.clone()), conf);
                }
            }
        }
    }
    lap(SignalKind::Language, &mut t);
    for c in &policy.contexts {
        if input.tokens >= c.min_tokens && c.max_tokens.is_none_or(|max| input.tokens <= max) {
            m.insert((SignalKind::Context, c.name.clone()), 1.0);
        }
    }
    lap(SignalKind::Context, &mut t);
    for s in &policy.structures {
        let hit = match &s.feature {
            StructureFeature::RegexCount(re) => s.predicate.holds(re.find_iter(input.text).count() as f64),
            StructureFeature::RegexExists(re) => re.is_match(input.text),
            StructureFeature::KeywordCount { keywords, case_sensitive } => {
                let text = if *case_sensitive { input.text.to_string() } else { input.text.to_lowercase() };
                let n: usize = keywords
                    .iter()
                    .map(|k| if *case_sensitive { k.clone() } else { k.to_lowercase() })
                    .filter(|k| !k.is_empty())
                    .map(|k| text.matches(k.as_str()).count())
                    .sum();
                s.predicate.holds(n as f64)
            }
            StructureFeature::TextBytes => s.predicate.holds(input.text.len() as f64),
        };
        if hit {
            m.insert((SignalKind::Structure, s.name.clone()), 1.0);
        }
    }
    lap(SignalKind::Structure, &mut t);
    if let Some((p, own)) = input.jailbreak {
        for j in &policy.jailbreaks {
            if p >= j.threshold.unwrap_or(own) {
                m.insert((SignalKind::Jailbreak, j.name.clone()), p);
            }
        }
    }
    lap(SignalKind::Jailbreak, &mut t);
    for s in &policy.pii {
        let worst = input
            .pii
            .iter()
            .filter(|(kind, c)| *c >= s.threshold && !s.allowed.iter().any(|a| a == kind))
            .map(|(_, c)| *c)
            .fold(None, |a: Option<f32>, c| Some(a.map_or(c, |a| a.max(c))));
        if let Some(c) = worst {
            m.insert((SignalKind::Pii, s.name.clone()), c);
        }
    }
    lap(SignalKind::Pii, &mut t);
    // Last: a complexity rule's composer looks at the families above.
    let mut m = Matched(m);
    if let Some(prompt) = input.embedding {
        for (i, c) in policy.complexity.iter().enumerate() {
            let (hard, easy) = vectors.complexity(policy, i);
            if let Some((level, confidence)) = difficulty(c, prompt, hard, easy) {
                if c.composer.as_ref().is_none_or(|r| rule(r, &m).is_some()) {
                    m.0.insert((SignalKind::Complexity, format!("{}:{}", c.name, level.as_str())), confidence);
                }
            }
        }
    }
    lap(SignalKind::Complexity, &mut t);
    m
}

/// A complexity rule's level for a prompt and its confidence: the better of the two best
/// similarities (how much the prompt resembles the rule's examples at all). `None` without
/// vectors on either side.
pub fn difficulty(c: &ComplexitySignal, prompt: &[f32], hard: &[Vec<f32>], easy: &[Vec<f32>]) -> Option<(Difficulty, f32)> {
    let best = |vs: &[Vec<f32>]| vs.iter().map(|v| dot(prompt, v)).reduce(f32::max);
    let (h, e) = (best(hard)?, best(easy)?);
    let margin = h - e;
    let level = if margin > c.threshold {
        Difficulty::Hard
    } else if margin < -c.threshold {
        Difficulty::Easy
    } else {
        Difficulty::Medium
    };
    Some((level, h.max(e).clamp(0.0, 1.0)))
}

/// Whether `rule` holds over the matched signals, and its confidence: a signal's own, the mean
/// over an `AND`, the best matching condition of an `OR`, 1 for a `NOT` that holds.
pub fn rule(r: &Rule, m: &Matched) -> Option<f32> {
    match r {
        Rule::Signal { kind, name } => m.get(*kind, name),
        Rule::Unsupported { .. } => None,
        Rule::And(cs) => {
            let mut sum = 0.0;
            for c in cs {
                sum += rule(c, m)?;
            }
            Some(if cs.is_empty() { 1.0 } else { sum / cs.len() as f32 })
        }
        Rule::Or(cs) => cs.iter().filter_map(|c| rule(c, m)).reduce(f32::max),
        Rule::Not(cs) => cs.iter().all(|c| rule(c, m).is_none()).then_some(1.0),
    }
}

/// The winning decision under the policy's strategy; `None`: no decision matched (the
/// default model serves).
pub fn select(policy: &Policy, m: &Matched) -> Option<Selection> {
    let matched = policy
        .decisions
        .iter()
        .enumerate()
        .filter_map(|(i, d): (usize, &DecisionSpec)| rule(&d.rule, m).map(|c| (i, d.priority, c)));
    // The first listed wins a full tie: `max_by` keeps the last maximum, so compare reversed
    // indices last.
    let best = match policy.strategy {
        Strategy::Priority => matched.max_by(|a, b| {
            a.1.cmp(&b.1).then(a.2.total_cmp(&b.2)).then(b.0.cmp(&a.0))
        }),
        Strategy::Confidence => matched.max_by(|a, b| {
            a.2.total_cmp(&b.2).then(a.1.cmp(&b.1)).then(b.0.cmp(&a.0))
        }),
    };
    best.map(|(decision, _, confidence)| Selection { decision, confidence })
}

/// Signals, then the winner.
pub fn evaluate(policy: &Policy, vectors: &CandidateVectors, input: &Input) -> (Matched, Option<Selection>) {
    let m = signals(policy, vectors, input);
    let s = select(policy, &m);
    (m, s)
}

/// [`evaluate`], reporting each signal family's time (see [`signals_timed`]).
pub fn evaluate_timed(
    policy: &Policy,
    vectors: &CandidateVectors,
    input: &Input,
    timed: &mut dyn FnMut(SignalKind, std::time::Duration),
) -> (Matched, Option<Selection>) {
    let m = signals_timed(policy, vectors, input, timed);
    let s = select(policy, &m);
    (m, s)
}
