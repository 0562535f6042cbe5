//! The policy model: named signals, decisions over them, and what a decision does.
//!
//! Both config formats are converted into this model at load ([`crate::v03`] for vLLM Semantic
//! Router v0.3 files, [`crate::legacy`] for the `categories[].model_scores` format), so the
//! request path knows one shape only.

use regex::Regex;

/// The signal families a decision condition may name (`{type, name}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SignalKind {
    Keyword,
    Embedding,
    Domain,
    Language,
    Context,
    Structure,
    Jailbreak,
    Pii,
    /// Evaluated last: its `composer` conditions look at the other families' results.
    Complexity,
}

impl SignalKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SignalKind::Keyword => "keyword",
            SignalKind::Embedding => "embedding",
            SignalKind::Domain => "domain",
            SignalKind::Language => "language",
            SignalKind::Context => "context",
            SignalKind::Structure => "structure",
            SignalKind::Jailbreak => "jailbreak",
            SignalKind::Pii => "pii",
            SignalKind::Complexity => "complexity",
        }
    }
}

/// How a keyword rule compares its keywords with the prompt.
#[derive(Debug, Clone, PartialEq)]
pub enum KeywordMethod {
    /// The keyword as a whole word or phrase (word boundaries on both sides).
    Exact,
    /// Each keyword is a regular expression.
    Regex,
    /// Character n-gram (Jaccard) similarity between the keyword and a window of the prompt's
    /// words of the same length, at least `threshold` (0..1).
    Ngram { arity: usize, threshold: f32 },
    /// Normalised Levenshtein similarity (0..100) between the keyword and a same-length word
    /// window, at least `threshold`.
    Fuzzy { threshold: f32 },
    /// BM25 term saturation of the keyword's terms in the prompt (one-document BM25, so the
    /// score is the mean of `tf·(k1+1)/(tf+k1)` over its terms, divided by `k1+1`), at least
    /// `threshold` (0..1).
    Bm25 { threshold: f32 },
}

/// How the rule's keyword matches combine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeywordOperator {
    /// At least one keyword.
    Or,
    /// Every keyword.
    And,
    /// No keyword at all.
    Nor,
}

#[derive(Debug, Clone)]
pub struct KeywordSignal {
    pub name: String,
    pub operator: KeywordOperator,
    pub method: KeywordMethod,
    pub case_sensitive: bool,
    pub keywords: Vec<String>,
    /// Compiled for `Exact` (escaped, word-bounded) and `Regex`; empty otherwise.
    pub patterns: Vec<Regex>,
}

/// How the similarities to an embedding rule's candidate phrases become one match.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Aggregation {
    /// The best candidate's similarity reaches the threshold.
    Max,
    /// The mean similarity over all candidates reaches the threshold.
    Mean,
    /// Any candidate reaches the threshold (confidence: the best one).
    Any,
}

#[derive(Debug, Clone)]
pub struct EmbeddingSignal {
    pub name: String,
    pub threshold: f32,
    pub aggregation: Aggregation,
    pub candidates: Vec<String>,
}

/// Matches when the category classifier's winning category is this domain.
#[derive(Debug, Clone)]
pub struct DomainSignal {
    pub name: String,
    pub description: String,
    /// Classifier labels that count as this domain (empty: the domain's own name).
    pub mmlu_categories: Vec<String>,
    /// Example prompts for similarity matching (this router's extension of vSR's domains).
    pub examples: Vec<String>,
    /// Per-domain model preferences, best first (vSR `model_scores`, kept for the legacy path
    /// and for operators; decisions pick models through `modelRefs`).
    pub model_scores: Vec<ModelRef>,
}

#[derive(Debug, Clone)]
pub struct LanguageSignal {
    /// A language code: ISO 639-1 (`en`, `zh`) or ISO 639-3 (`eng`, `cmn`).
    pub name: String,
    /// Minimum detector confidence (0..1).
    pub threshold: f32,
}

/// Language-detector confidence used when a rule's threshold is 0 or absent (as in vSR).
pub const DEFAULT_LANGUAGE_THRESHOLD: f32 = 0.3;

#[derive(Debug, Clone)]
pub struct ContextSignal {
    pub name: String,
    pub min_tokens: u64,
    /// `None`: no upper bound.
    pub max_tokens: Option<u64>,
}

/// Bounds on a structure feature's value; every bound given must hold.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Predicate {
    pub gt: Option<f64>,
    pub gte: Option<f64>,
    pub lt: Option<f64>,
    pub lte: Option<f64>,
}

impl Predicate {
    pub fn holds(&self, v: f64) -> bool {
        self.gt.is_none_or(|b| v > b)
            && self.gte.is_none_or(|b| v >= b)
            && self.lt.is_none_or(|b| v < b)
            && self.lte.is_none_or(|b| v <= b)
    }
}

/// What a structure rule measures on the prompt.
#[derive(Debug, Clone)]
pub enum StructureFeature {
    /// Number of regex matches, compared with the predicate.
    RegexCount(Regex),
    /// At least one regex match (the predicate is not used).
    RegexExists(Regex),
    /// Number of occurrences of any of the keywords.
    KeywordCount { keywords: Vec<String>, case_sensitive: bool },
    /// UTF-8 bytes of the prompt.
    TextBytes,
}

#[derive(Debug, Clone)]
pub struct StructureSignal {
    pub name: String,
    pub feature: StructureFeature,
    pub predicate: Predicate,
}

/// Matches when the jailbreak guard's probability reaches `threshold` (`None`: the guard's
/// own threshold).
#[derive(Debug, Clone)]
pub struct JailbreakSignal {
    pub name: String,
    pub threshold: Option<f32>,
}

/// Matches when PII at or above `threshold` is detected that is not in `allowed`.
#[derive(Debug, Clone)]
pub struct PiiSignal {
    pub name: String,
    pub threshold: f32,
    pub allowed: Vec<String>,
}

/// A complexity rule's verdict on a prompt (conditions name it as `<rule>:<level>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Difficulty {
    Easy,
    Medium,
    Hard,
}

impl Difficulty {
    pub const ALL: [Difficulty; 3] = [Difficulty::Easy, Difficulty::Medium, Difficulty::Hard];

    pub fn as_str(self) -> &'static str {
        match self {
            Difficulty::Easy => "easy",
            Difficulty::Medium => "medium",
            Difficulty::Hard => "hard",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|d| d.as_str() == s)
    }
}

/// Hard-minus-easy similarity margin a complexity rule uses when it names none (as in vSR).
pub const DEFAULT_COMPLEXITY_THRESHOLD: f32 = 0.1;

/// How hard a prompt is, from its similarity to example hard and easy requests: the best
/// cosine with a hard candidate minus the best with an easy one is `hard` above `threshold`,
/// `easy` below `-threshold`, `medium` between.
#[derive(Debug, Clone)]
pub struct ComplexitySignal {
    pub name: String,
    pub threshold: f32,
    pub hard: Vec<String>,
    pub easy: Vec<String>,
    /// Conditions over the other signals that must hold for the rule to report a level (vSR's
    /// `composer`, e.g. the domain the candidates were written for); `None`: always.
    pub composer: Option<Rule>,
}

/// A complexity condition's name, `<rule>:<level>`, split (`None`: not of that form).
pub fn complexity_name(name: &str) -> Option<(&str, Difficulty)> {
    let (rule, level) = name.rsplit_once(':')?;
    Some((rule, Difficulty::parse(level)?))
}

/// A decision's condition tree.
#[derive(Debug, Clone, PartialEq)]
pub enum Rule {
    Signal { kind: SignalKind, name: String },
    /// A condition on a signal family this router does not compute: never matches (so `NOT`
    /// of it always does); listed at start.
    Unsupported { kind: String, name: String },
    /// Every condition matches (an empty list matches).
    And(Vec<Rule>),
    /// At least one condition matches.
    Or(Vec<Rule>),
    /// None of the conditions matches.
    Not(Vec<Rule>),
}

/// Which matching decision wins.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Strategy {
    /// Highest `priority`; ties: higher confidence, then the first listed.
    #[default]
    Priority,
    /// Highest confidence; ties: higher priority, then the first listed.
    Confidence,
}

/// A model a decision may send the request to.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ModelRef {
    pub model: String,
    /// Sent as the model name when set: the LoRA adapter the backend serves.
    pub lora_name: Option<String>,
    pub use_reasoning: bool,
    pub reasoning_effort: Option<String>,
    pub weight: Option<f32>,
}

impl ModelRef {
    /// The name written into the request: the LoRA adapter when there is one.
    pub fn wire_name(&self) -> &str {
        self.lora_name.as_deref().unwrap_or(&self.model)
    }
}

/// How a decision picks among its `modelRefs`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Algorithm {
    /// The first model reference.
    #[default]
    Static,
    /// A vSR selection algorithm this router does not implement; served as `Static`.
    Unsupported(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SystemPromptMode {
    /// Before the client's system messages.
    Insert,
    /// Instead of the client's system messages.
    Replace,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SystemPromptAction {
    pub text: String,
    pub mode: SystemPromptMode,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct HeaderMutation {
    /// Added (appended) to the upstream request.
    pub add: Vec<(String, String)>,
    /// Set, replacing any value the client sent.
    pub update: Vec<(String, String)>,
    /// Removed from the upstream request.
    pub delete: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct RequestParams {
    /// Top-level request fields removed before the request goes upstream.
    pub blocked_params: Vec<String>,
    /// `max_tokens` / `max_completion_tokens` are capped at this value.
    pub max_tokens_limit: Option<u64>,
    /// `n` is capped at this value.
    pub max_n: Option<u64>,
}

/// A decision's semantic-cache setting (the `semantic-cache` / `response_cache` plugin, or the
/// old format's per-category cache keys).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ResponseCacheAction {
    /// Whether requests of this decision look up and store answers. It replaces the global
    /// `semantic_cache.enabled` for the decision, in both directions.
    pub enabled: bool,
    /// Cosine similarity a stored prompt needs to answer (0..1); `None`: the global one.
    pub similarity_threshold: Option<f32>,
}

/// The typed actions of a decision's plugins.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Actions {
    pub system_prompt: Option<SystemPromptAction>,
    pub header_mutation: Option<HeaderMutation>,
    /// Envoy answers with this assistant message; the backend never sees the request.
    pub fast_response: Option<String>,
    pub request_params: Option<RequestParams>,
    /// `None`: the decision follows the global semantic-cache settings.
    pub response_cache: Option<ResponseCacheAction>,
}

#[derive(Debug, Clone)]
pub struct DecisionSpec {
    pub name: String,
    pub description: String,
    pub priority: i64,
    pub rule: Rule,
    pub model_refs: Vec<ModelRef>,
    pub algorithm: Algorithm,
    pub actions: Actions,
}

impl DecisionSpec {
    /// The model reference the decision's algorithm selects (`None`: the decision lists none,
    /// and the default model serves).
    pub fn selected_ref(&self) -> Option<&ModelRef> {
        // Static, and the fallback for algorithms not implemented: the first reference.
        self.model_refs.first()
    }
}

/// Reasoning switch of a model family (`providers.defaults.reasoning_families`).
#[derive(Debug, Clone, PartialEq)]
pub struct ReasoningFamily {
    pub kind: String,
    pub parameter: String,
}

/// The whole routing policy.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    pub keywords: Vec<KeywordSignal>,
    pub embeddings: Vec<EmbeddingSignal>,
    pub domains: Vec<DomainSignal>,
    pub languages: Vec<LanguageSignal>,
    pub contexts: Vec<ContextSignal>,
    pub structures: Vec<StructureSignal>,
    pub jailbreaks: Vec<JailbreakSignal>,
    pub pii: Vec<PiiSignal>,
    pub complexity: Vec<ComplexitySignal>,
    pub decisions: Vec<DecisionSpec>,
    pub strategy: Strategy,
    /// Serves requests no decision matches.
    pub default_model: String,
    pub default_reasoning_effort: Option<String>,
    pub reasoning_families: Vec<(String, ReasoningFamily)>,
    /// `providers.models[]`: model name → reasoning family.
    pub model_families: Vec<(String, String)>,
    /// Config key paths present in the file that are accepted but not implemented.
    pub not_implemented: Vec<String>,
}

impl Policy {
    /// Whether any decision or signal needs the named family computed.
    pub fn uses(&self, kind: SignalKind) -> bool {
        match kind {
            SignalKind::Keyword => !self.keywords.is_empty(),
            SignalKind::Embedding => !self.embeddings.is_empty(),
            SignalKind::Domain => !self.domains.is_empty(),
            SignalKind::Language => !self.languages.is_empty(),
            SignalKind::Context => !self.contexts.is_empty(),
            SignalKind::Structure => !self.structures.is_empty(),
            SignalKind::Jailbreak => !self.jailbreaks.is_empty(),
            SignalKind::Pii => !self.pii.is_empty(),
            SignalKind::Complexity => !self.complexity.is_empty(),
        }
    }

    /// Whether a signal of this family and name is defined.
    pub fn defines(&self, kind: SignalKind, name: &str) -> bool {
        match kind {
            SignalKind::Keyword => self.keywords.iter().any(|s| s.name == name),
            SignalKind::Embedding => self.embeddings.iter().any(|s| s.name == name),
            SignalKind::Domain => self.domains.iter().any(|s| s.name == name),
            SignalKind::Language => self.languages.iter().any(|s| s.name == name),
            SignalKind::Context => self.contexts.iter().any(|s| s.name == name),
            SignalKind::Structure => self.structures.iter().any(|s| s.name == name),
            SignalKind::Jailbreak => self.jailbreaks.iter().any(|s| s.name == name),
            SignalKind::Pii => self.pii.iter().any(|s| s.name == name),
            // Conditions name a level of a rule: `<rule>:hard|medium|easy`.
            SignalKind::Complexity => {
                complexity_name(name).is_some_and(|(rule, _)| self.complexity.iter().any(|s| s.name == rule))
            }
        }
    }

    /// The phrases to embed once at load, one list each: every embedding rule's candidates in
    /// rule order, then each complexity rule's hard and then easy candidates. Hand the vectors
    /// back in the same order as [`crate::eval::CandidateVectors`].
    pub fn embedding_candidates(&self) -> Vec<Vec<String>> {
        self.embeddings
            .iter()
            .map(|e| e.candidates.clone())
            .chain(self.complexity.iter().flat_map(|c| [c.hard.clone(), c.easy.clone()]))
            .collect()
    }

    /// Whether some decision turns the semantic cache on with its own action (it then needs
    /// the cache even while the global switch is off).
    pub fn enables_cache(&self) -> bool {
        self.decisions.iter().any(|d| d.actions.response_cache.is_some_and(|c| c.enabled))
    }

    pub fn decision(&self, name: &str) -> Option<&DecisionSpec> {
        self.decisions.iter().find(|d| d.name == name)
    }
}
