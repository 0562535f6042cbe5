//! Reading vLLM Semantic Router v0.3 config files (`version: v0.3`).
//!
//! The file's shape is the set of structs below. Every struct denies unknown fields, so a key
//! neither implemented nor known is an error naming its path. A key vSR defines that this
//! router does not implement has the type [`NotImplemented`]: it is accepted (anything may be
//! under it) and reported by [`not_implemented`], which finds those fields by serialising the
//! parsed file — the list comes from the types, not from a second hand-kept list.

use std::collections::BTreeMap;

use anyhow::{anyhow, bail, Result};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

use crate::model::{self, Actions, Algorithm, KeywordMethod, KeywordOperator, Policy, Rule, SignalKind, Strategy};

/// The `version` value this module reads.
pub const VERSION: &str = "v0.3";

/// Marker a [`NotImplemented`] field serialises to, so [`not_implemented`] can find it.
const MARK: &str = "\u{0}not-implemented";

/// A vSR key accepted but not implemented here: any value.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NotImplemented;

impl<'de> Deserialize<'de> for NotImplemented {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        serde::de::IgnoredAny::deserialize(d)?;
        Ok(NotImplemented)
    }
}

impl Serialize for NotImplemented {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(MARK)
    }
}

type Ni = Option<NotImplemented>;

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct File {
    pub version: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listeners: Ni,
    #[serde(default)]
    pub providers: Providers,
    #[serde(default)]
    pub routing: Routing,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entrypoints: Ni,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recipes: Ni,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub global: Ni,
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Providers {
    #[serde(default)]
    pub defaults: ProviderDefaults,
    #[serde(default)]
    pub models: Vec<ProviderModel>,
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderDefaults {
    /// The model for requests no decision matches.
    #[serde(alias = "model")]
    pub default_model: Option<String>,
    pub default_reasoning_effort: Option<String>,
    #[serde(default)]
    pub reasoning_families: BTreeMap<String, ReasoningFamily>,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ReasoningFamily {
    #[serde(rename = "type")]
    pub kind: String,
    pub parameter: String,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderModel {
    pub name: String,
    pub reasoning_family: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider_model_id: Ni,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_format: Ni,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reliability: Ni,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pricing: Ni,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_model_ids: Ni,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend_refs: Ni,
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Routing {
    /// `priority` (default) or `confidence`.
    pub strategy: Option<String>,
    #[serde(default, rename = "modelCards", skip_serializing_if = "Option::is_none")]
    pub model_cards: Ni,
    #[serde(default)]
    pub signals: Signals,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub projections: Ni,
    #[serde(default)]
    pub decisions: Vec<Decision>,
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Signals {
    #[serde(default)]
    pub keywords: Vec<Keyword>,
    #[serde(default)]
    pub embeddings: Vec<Embedding>,
    #[serde(default)]
    pub domains: Vec<Domain>,
    #[serde(default)]
    pub language: Vec<Language>,
    #[serde(default)]
    pub context: Vec<Context>,
    #[serde(default)]
    pub structure: Vec<Structure>,
    #[serde(default)]
    pub jailbreak: Vec<Jailbreak>,
    #[serde(default)]
    pub pii: Vec<Pii>,
    #[serde(default)]
    pub complexity: Vec<Complexity>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fact_check: Ni,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_feedbacks: Ni,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reasks: Ni,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preferences: Ni,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub modality: Ni,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role_bindings: Ni,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kb: Ni,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conversation: Ni,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub events: Ni,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Ni,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub classifiers: Ni,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Keyword {
    pub name: String,
    /// `OR` (default), `AND` or `NOR`.
    pub operator: Option<String>,
    /// absent/`exact`, `regex`, `ngram`, `fuzzy` or `bm25`.
    pub method: Option<String>,
    pub keywords: Vec<String>,
    #[serde(default)]
    pub case_sensitive: bool,
    pub bm25_threshold: Option<f32>,
    pub ngram_threshold: Option<f32>,
    pub ngram_arity: Option<usize>,
    /// vSR's switch for `method: fuzzy`; the method decides here.
    pub fuzzy_match: Option<bool>,
    pub fuzzy_threshold: Option<f32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Ni,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Embedding {
    pub name: String,
    pub threshold: f32,
    /// `max` (default), `mean` or `any`.
    pub aggregation_method: Option<String>,
    pub candidates: Vec<String>,
    /// Only `text` is implemented.
    pub query_modality: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Ni,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Domain {
    pub name: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub mmlu_categories: Vec<String>,
    #[serde(default)]
    pub model_scores: Vec<ModelScore>,
    /// This router's extension (not a vSR key): example prompts of the domain, matched by
    /// embedding similarity when no category model is configured.
    #[serde(default)]
    pub examples: Vec<String>,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ModelScore {
    pub model: String,
    pub score: f32,
    #[serde(default)]
    pub use_reasoning: bool,
    pub reasoning_effort: Option<String>,
    pub lora_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reasoning_description: Ni,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Language {
    pub name: String,
    pub threshold: Option<f32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Ni,
}

/// A token count: a number, or a string with a `K` (×1000) or `M` (×1000000) suffix.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(untagged)]
pub enum Tokens {
    Number(u64),
    Text(String),
}

impl Tokens {
    pub fn value(&self) -> Result<u64> {
        match self {
            Tokens::Number(n) => Ok(*n),
            Tokens::Text(s) => parse_tokens(s),
        }
    }
}

/// `32K` → 32000, `1M` → 1000000, `512` → 512 (vSR's K is a thousand).
pub fn parse_tokens(s: &str) -> Result<u64> {
    let t = s.trim();
    let (num, mult) = match t.chars().last() {
        Some('k' | 'K') => (&t[..t.len() - 1], 1_000.0),
        Some('m' | 'M') => (&t[..t.len() - 1], 1_000_000.0),
        _ => (t, 1.0),
    };
    let v: f64 = num.trim().parse().map_err(|_| anyhow!("`{s}` is not a token count (e.g. 8192, 32K, 1M)"))?;
    if !v.is_finite() || v < 0.0 {
        bail!("`{s}` is not a token count (e.g. 8192, 32K, 1M)");
    }
    Ok((v * mult).round() as u64)
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Context {
    pub name: String,
    pub min_tokens: Option<Tokens>,
    pub max_tokens: Option<Tokens>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Ni,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Structure {
    pub name: String,
    pub feature: Feature,
    #[serde(default)]
    pub predicate: Predicate,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Ni,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Feature {
    /// `count` or `exists` (`density`, `sequence` are accepted and never match).
    #[serde(rename = "type")]
    pub kind: String,
    pub source: Source,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Source {
    /// `regex`, `keyword_set`, `text_bytes` (`sequence` is accepted and never matches).
    #[serde(rename = "type")]
    pub kind: String,
    pub pattern: Option<String>,
    #[serde(default)]
    pub keywords: Vec<String>,
    #[serde(default)]
    pub case_sensitive: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sequences: Ni,
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Predicate {
    pub gt: Option<f64>,
    pub gte: Option<f64>,
    pub lt: Option<f64>,
    pub lte: Option<f64>,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Jailbreak {
    pub name: String,
    pub threshold: Option<f32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Ni,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub include_history: Ni,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jailbreak_patterns: Ni,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub benign_patterns: Ni,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Ni,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Pii {
    pub name: String,
    pub threshold: Option<f32>,
    #[serde(default)]
    pub pii_types_allowed: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub include_history: Ni,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Ni,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Complexity {
    pub name: String,
    /// The hard-minus-easy similarity margin (default 0.1).
    pub threshold: Option<f32>,
    #[serde(default)]
    pub hard: ComplexityCandidates,
    #[serde(default)]
    pub easy: ComplexityCandidates,
    /// Conditions over other signals that must hold for the rule to report a level.
    pub composer: Option<Condition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Ni,
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ComplexityCandidates {
    #[serde(default)]
    pub candidates: Vec<String>,
    /// Image examples (multimodal prompts): accepted, not implemented.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_candidates: Ni,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Decision {
    pub name: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub priority: i64,
    pub rules: Option<Condition>,
    #[serde(default, rename = "modelRefs")]
    pub model_refs: Vec<ModelRefRaw>,
    pub algorithm: Option<AlgorithmRaw>,
    #[serde(default)]
    pub plugins: Vec<Plugin>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tier: Ni,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_contract: Ni,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Ni,
    #[serde(default, rename = "candidateIterations", skip_serializing_if = "Option::is_none")]
    pub candidate_iterations: Ni,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub emits: Ni,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub adaptations: Ni,
}

/// A rule node: a leaf `{type, name}` or an `operator` over `conditions`.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Condition {
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub name: Option<String>,
    pub operator: Option<String>,
    #[serde(default)]
    pub conditions: Vec<Condition>,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ModelRefRaw {
    pub model: String,
    pub lora_name: Option<String>,
    #[serde(default)]
    pub use_reasoning: bool,
    pub reasoning_effort: Option<String>,
    pub weight: Option<f32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reasoning_description: Ni,
}

#[derive(Debug, Deserialize, Serialize)]
pub struct AlgorithmRaw {
    #[serde(rename = "type")]
    pub kind: String,
    /// The algorithm's own settings (`confidence:`, `automix:`, `on_error`, ...): only `static`
    /// is implemented and it has none.
    #[serde(flatten, skip_serializing_if = "BTreeMap::is_empty")]
    pub settings: BTreeMap<String, NotImplemented>,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Plugin {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub configuration: Value,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SystemPromptConf {
    #[serde(default = "yes")]
    enabled: bool,
    /// `replace` (default) or `insert`.
    mode: Option<String>,
    system_prompt: String,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NameValue {
    name: String,
    value: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct HeaderMutationConf {
    #[serde(default)]
    add: Vec<NameValue>,
    #[serde(default)]
    update: Vec<NameValue>,
    #[serde(default)]
    delete: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FastResponseConf {
    message: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RequestParamsConf {
    #[serde(default)]
    blocked_params: Vec<String>,
    max_tokens_limit: Option<u64>,
    max_n: Option<u64>,
    /// vSR removes fields it does not know when true; accepted, not implemented.
    #[serde(default)]
    strip_unknown: Option<bool>,
}

/// The `semantic-cache` plugin (`response_cache` is the same plugin under vSR's other name).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ResponseCacheConf {
    /// A plain boolean in vSR, so a plugin that leaves it out turns the cache off for the
    /// decision; read the same way here.
    #[serde(default)]
    enabled: bool,
    similarity_threshold: Option<f32>,
    /// A per-decision entry lifetime; entries here live `semantic_cache.ttl_seconds`. Accepted,
    /// not implemented.
    ttl_seconds: Option<NotImplemented>,
}

/// The plugin types that set [`Actions::response_cache`].
pub const CACHE_PLUGINS: &[&str] = &["semantic-cache", "response_cache"];

/// vSR plugin types this router accepts on a decision but does not run.
pub const PLUGINS_NOT_IMPLEMENTED: &[&str] = &[
    "context_compression",
    "tools",
    "tool_selection",
    "rag",
    "memory",
    "hallucination",
    "image_gen",
    "response_jailbreak",
    "router_replay",
    "content_safety",
    "jailbreak",
    "pii",
];

/// vSR signal families decision conditions may name that this router does not compute.
pub const SIGNALS_NOT_IMPLEMENTED: &[&str] = &[
    "fact_check",
    "user_feedback",
    "reask",
    "preference",
    "modality",
    "authz",
    "kb",
    "conversation",
    "event",
    "metadata",
    "classifier",
    "projection",
];

fn signal_kind(s: &str) -> Option<SignalKind> {
    Some(match s {
        "keyword" => SignalKind::Keyword,
        "embedding" => SignalKind::Embedding,
        "domain" => SignalKind::Domain,
        "language" => SignalKind::Language,
        "context" => SignalKind::Context,
        "structure" => SignalKind::Structure,
        "jailbreak" => SignalKind::Jailbreak,
        "pii" => SignalKind::Pii,
        "complexity" => SignalKind::Complexity,
        _ => return None,
    })
}

/// Paths of the [`NotImplemented`] keys present in `file`.
pub fn not_implemented(file: &File) -> Vec<String> {
    fn walk(v: &Value, path: &str, out: &mut Vec<String>) {
        match v {
            Value::String(s) if s == MARK => out.push(path.to_string()),
            Value::Object(m) => {
                for (k, c) in m {
                    let p = if path.is_empty() { k.clone() } else { format!("{path}.{k}") };
                    walk(c, &p, out);
                }
            }
            Value::Array(a) => {
                for (i, c) in a.iter().enumerate() {
                    walk(c, &format!("{path}[{i}]"), out);
                }
            }
            _ => {}
        }
    }
    let mut out = Vec::new();
    if let Ok(v) = serde_json::to_value(file) {
        walk(&v, "", &mut out);
    }
    out
}

/// Whether a parsed config tree is a v0.3 file.
pub fn is_v03(tree: &Value) -> bool {
    tree.get("version").is_some()
}

/// Reads a v0.3 config tree into a [`Policy`]. Errors name the key path.
pub fn parse(tree: &Value) -> Result<Policy> {
    let file: File = serde_path_to_error::deserialize(tree).map_err(|e| {
        let path = e.path().to_string();
        anyhow!("{path}: {}", e.into_inner())
    })?;
    if file.version != VERSION {
        bail!("version: `{}` is not supported (this router reads {VERSION})", file.version);
    }
    let mut not_impl = not_implemented(&file);
    let mut p = Policy::default();

    let d = &file.providers.defaults;
    p.default_model = match &d.default_model {
        Some(m) if !m.trim().is_empty() => m.clone(),
        _ => bail!("providers.defaults.default_model: required (the model for requests no decision matches)"),
    };
    p.default_reasoning_effort = d.default_reasoning_effort.clone();
    for (name, f) in &d.reasoning_families {
        p.reasoning_families.push((name.clone(), model::ReasoningFamily { kind: f.kind.clone(), parameter: f.parameter.clone() }));
    }
    for (i, m) in file.providers.models.iter().enumerate() {
        if let Some(f) = &m.reasoning_family {
            if !d.reasoning_families.contains_key(f) {
                bail!("providers.models[{i}].reasoning_family: `{f}` is not a key of providers.defaults.reasoning_families");
            }
            p.model_families.push((m.name.clone(), f.clone()));
        }
    }

    let r = &file.routing;
    p.strategy = match r.strategy.as_deref() {
        None | Some("priority") => Strategy::Priority,
        Some("confidence") => Strategy::Confidence,
        Some(o) => bail!("routing.strategy: must be priority or confidence, got `{o}`"),
    };
    let s = &r.signals;
    for (i, k) in s.keywords.iter().enumerate() {
        let path = format!("routing.signals.keywords[{i}]");
        let operator = match k.operator.as_deref().map(str::to_ascii_uppercase).as_deref() {
            None | Some("OR") => KeywordOperator::Or,
            Some("AND") => KeywordOperator::And,
            Some("NOR") => KeywordOperator::Nor,
            Some(o) => bail!("{path}.operator: must be OR, AND or NOR, got `{o}`"),
        };
        let method = match k.method.as_deref() {
            None | Some("exact") | Some("keyword") => KeywordMethod::Exact,
            Some("regex") => KeywordMethod::Regex,
            Some("ngram") => KeywordMethod::Ngram {
                arity: k.ngram_arity.unwrap_or(3).max(1),
                threshold: unit(&format!("{path}.ngram_threshold"), k.ngram_threshold.unwrap_or(0.4))?,
            },
            Some("fuzzy") => {
                let t = k.fuzzy_threshold.unwrap_or(80.0);
                if !(0.0..=100.0).contains(&t) {
                    bail!("{path}.fuzzy_threshold: must be in [0, 100], got {t}");
                }
                KeywordMethod::Fuzzy { threshold: t }
            }
            Some("bm25") => KeywordMethod::Bm25 {
                threshold: unit(&format!("{path}.bm25_threshold"), k.bm25_threshold.unwrap_or(0.1))?,
            },
            Some(o) => bail!("{path}.method: must be exact, regex, ngram, fuzzy or bm25, got `{o}`"),
        };
        if k.keywords.is_empty() {
            bail!("{path}.keywords: must not be empty");
        }
        let patterns = crate::keyword::compile(&method, &k.keywords, k.case_sensitive)
            .map_err(|e| anyhow!("{path}.keywords: {e}"))?;
        p.keywords.push(model::KeywordSignal {
            name: k.name.clone(),
            operator,
            method,
            case_sensitive: k.case_sensitive,
            keywords: k.keywords.clone(),
            patterns,
        });
    }
    for (i, e) in s.embeddings.iter().enumerate() {
        let path = format!("routing.signals.embeddings[{i}]");
        let aggregation = match e.aggregation_method.as_deref() {
            None | Some("max") => model::Aggregation::Max,
            Some("mean") => model::Aggregation::Mean,
            Some("any") => model::Aggregation::Any,
            Some(o) => bail!("{path}.aggregation_method: must be max, mean or any, got `{o}`"),
        };
        if let Some(m) = e.query_modality.as_deref().filter(|m| *m != "text") {
            bail!("{path}.query_modality: only text is supported, got `{m}`");
        }
        if e.candidates.is_empty() {
            bail!("{path}.candidates: must not be empty");
        }
        if !(-1.0..=1.0).contains(&e.threshold) {
            bail!("{path}.threshold: must be a cosine similarity in [-1, 1], got {}", e.threshold);
        }
        p.embeddings.push(model::EmbeddingSignal {
            name: e.name.clone(),
            threshold: e.threshold,
            aggregation,
            candidates: e.candidates.clone(),
        });
    }
    for (i, d) in s.domains.iter().enumerate() {
        let path = format!("routing.signals.domains[{i}]");
        let mut scores: Vec<&ModelScore> = d.model_scores.iter().collect();
        // Best first; the first listed wins a tie (stable sort).
        scores.sort_by(|a, b| b.score.total_cmp(&a.score));
        for (j, ms) in d.model_scores.iter().enumerate() {
            effort(&format!("{path}.model_scores[{j}].reasoning_effort"), ms.reasoning_effort.as_deref())?;
        }
        p.domains.push(model::DomainSignal {
            name: d.name.clone(),
            description: d.description.clone(),
            mmlu_categories: d.mmlu_categories.clone(),
            examples: d.examples.clone(),
            model_scores: scores
                .into_iter()
                .map(|m| model::ModelRef {
                    model: m.model.clone(),
                    lora_name: m.lora_name.clone(),
                    use_reasoning: m.use_reasoning,
                    reasoning_effort: m.reasoning_effort.clone(),
                    weight: Some(m.score),
                })
                .collect(),
        });
    }
    for (i, l) in s.language.iter().enumerate() {
        p.languages.push(model::LanguageSignal {
            name: l.name.clone(),
            threshold: unit(&format!("routing.signals.language[{i}].threshold"), l.threshold.unwrap_or(0.0))?,
        });
    }
    for (i, c) in s.context.iter().enumerate() {
        let path = format!("routing.signals.context[{i}]");
        let min = c.min_tokens.as_ref().map(|t| t.value()).transpose().map_err(|e| anyhow!("{path}.min_tokens: {e}"))?;
        let max = c.max_tokens.as_ref().map(|t| t.value()).transpose().map_err(|e| anyhow!("{path}.max_tokens: {e}"))?;
        if min.is_none() && max.is_none() {
            bail!("{path}: min_tokens or max_tokens is required");
        }
        if let (Some(a), Some(b)) = (min, max) {
            if a > b {
                bail!("{path}: min_tokens ({a}) is above max_tokens ({b})");
            }
        }
        p.contexts.push(model::ContextSignal { name: c.name.clone(), min_tokens: min.unwrap_or(0), max_tokens: max });
    }
    for (i, st) in s.structure.iter().enumerate() {
        let path = format!("routing.signals.structure[{i}]");
        let src = &st.feature.source;
        let regex = || -> Result<regex::Regex> {
            let pat = src.pattern.as_deref().ok_or_else(|| anyhow!("{path}.feature.source.pattern: required for type regex"))?;
            regex::RegexBuilder::new(pat)
                .case_insensitive(!src.case_sensitive)
                .build()
                .map_err(|e| anyhow!("{path}.feature.source.pattern: {e}"))
        };
        let feature = match (st.feature.kind.as_str(), src.kind.as_str()) {
            ("count", "regex") => model::StructureFeature::RegexCount(regex()?),
            ("exists", "regex") => model::StructureFeature::RegexExists(regex()?),
            ("count", "keyword_set") => model::StructureFeature::KeywordCount {
                keywords: src.keywords.clone(),
                case_sensitive: src.case_sensitive,
            },
            ("count", "text_bytes") => model::StructureFeature::TextBytes,
            ("density" | "sequence", _) | (_, "sequence") => {
                // Accepted, never matches: listed with the keys not implemented.
                not_impl.push(format!("{path}.feature (type {}, source {})", st.feature.kind, src.kind));
                continue;
            }
            (f, so) => bail!("{path}.feature: type `{f}` with source `{so}` is not a structure feature (count|exists over regex, keyword_set, text_bytes)"),
        };
        let pr = &st.predicate;
        p.structures.push(model::StructureSignal {
            name: st.name.clone(),
            feature,
            predicate: model::Predicate { gt: pr.gt, gte: pr.gte, lt: pr.lt, lte: pr.lte },
        });
    }
    for (i, j) in s.jailbreak.iter().enumerate() {
        let t = j.threshold.map(|t| unit(&format!("routing.signals.jailbreak[{i}].threshold"), t)).transpose()?;
        p.jailbreaks.push(model::JailbreakSignal { name: j.name.clone(), threshold: t });
    }
    for (i, x) in s.pii.iter().enumerate() {
        p.pii.push(model::PiiSignal {
            name: x.name.clone(),
            threshold: unit(&format!("routing.signals.pii[{i}].threshold"), x.threshold.unwrap_or(0.5))?,
            allowed: x.pii_types_allowed.clone(),
        });
    }
    for (i, c) in s.complexity.iter().enumerate() {
        let path = format!("routing.signals.complexity[{i}]");
        let threshold = c.threshold.unwrap_or(model::DEFAULT_COMPLEXITY_THRESHOLD);
        if !(0.0..=2.0).contains(&threshold) {
            bail!("{path}.threshold: must be a similarity margin in [0, 2], got {threshold}");
        }
        for (side, list) in [("hard", &c.hard), ("easy", &c.easy)] {
            if list.candidates.iter().all(|t| t.trim().is_empty()) {
                bail!("{path}.{side}.candidates: must not be empty");
            }
        }
        if c.name.contains(':') {
            bail!("{path}.name: `{}` must not contain `:` (conditions name `<rule>:<level>`)", c.name);
        }
        p.complexity.push(model::ComplexitySignal {
            name: c.name.clone(),
            threshold,
            hard: c.hard.candidates.clone(),
            easy: c.easy.candidates.clone(),
            composer: None,
        });
    }
    check_unique_names(&p)?;
    // Composers name other signals, so they are read once every signal is known.
    for (i, c) in s.complexity.iter().enumerate() {
        if let Some(cond) = &c.composer {
            let path = format!("routing.signals.complexity[{i}].composer");
            let rule = condition(cond, &path, &p, &mut not_impl)?;
            if names_kind(&rule, SignalKind::Complexity) {
                bail!("{path}: a composer names other signal families, not complexity");
            }
            p.complexity[i].composer = Some(rule);
        }
    }

    for (i, d) in r.decisions.iter().enumerate() {
        let path = format!("routing.decisions[{i}]");
        if d.name.trim().is_empty() {
            bail!("{path}.name: must not be empty");
        }
        if p.decisions.iter().any(|x| x.name == d.name) {
            bail!("{path}.name: duplicate decision `{}`", d.name);
        }
        let rule = match &d.rules {
            Some(c) => condition(c, &format!("{path}.rules"), &p, &mut not_impl)?,
            None => bail!("{path}.rules: required"),
        };
        let algorithm = match d.algorithm.as_ref().map(|a| a.kind.as_str()) {
            None | Some("static") => Algorithm::Static,
            Some(o) => {
                not_impl.push(format!("{path}.algorithm.type ({o}; served as static)"));
                Algorithm::Unsupported(o.to_string())
            }
        };
        let mut model_refs = Vec::new();
        for (j, m) in d.model_refs.iter().enumerate() {
            if m.model.trim().is_empty() {
                bail!("{path}.modelRefs[{j}].model: must not be empty");
            }
            effort(&format!("{path}.modelRefs[{j}].reasoning_effort"), m.reasoning_effort.as_deref())?;
            model_refs.push(model::ModelRef {
                model: m.model.clone(),
                lora_name: m.lora_name.clone().filter(|l| !l.is_empty()),
                use_reasoning: m.use_reasoning,
                reasoning_effort: m.reasoning_effort.clone(),
                weight: m.weight,
            });
        }
        let actions = plugins(&d.plugins, &path, &mut not_impl)?;
        p.decisions.push(model::DecisionSpec {
            name: d.name.clone(),
            description: d.description.clone(),
            priority: d.priority,
            rule,
            model_refs,
            algorithm,
            actions,
        });
    }
    p.not_implemented = not_impl;
    Ok(p)
}

fn unit(path: &str, v: f32) -> Result<f32> {
    if !(0.0..=1.0).contains(&v) {
        bail!("{path}: must be in [0, 1], got {v}");
    }
    Ok(v)
}

/// Reasoning efforts vSR accepts.
pub const REASONING_EFFORTS: &[&str] = &["minimal", "low", "medium", "high"];

fn effort(path: &str, v: Option<&str>) -> Result<()> {
    match v {
        Some(e) if !REASONING_EFFORTS.contains(&e) => {
            bail!("{path}: must be one of {}, got `{e}`", REASONING_EFFORTS.join(", "))
        }
        _ => Ok(()),
    }
}

fn check_unique_names(p: &Policy) -> Result<()> {
    let mut seen = std::collections::BTreeSet::new();
    let all = p
        .keywords
        .iter()
        .map(|s| ("keywords", &s.name))
        .chain(p.embeddings.iter().map(|s| ("embeddings", &s.name)))
        .chain(p.domains.iter().map(|s| ("domains", &s.name)))
        .chain(p.languages.iter().map(|s| ("language", &s.name)))
        .chain(p.contexts.iter().map(|s| ("context", &s.name)))
        .chain(p.structures.iter().map(|s| ("structure", &s.name)))
        .chain(p.jailbreaks.iter().map(|s| ("jailbreak", &s.name)))
        .chain(p.pii.iter().map(|s| ("pii", &s.name)))
        .chain(p.complexity.iter().map(|s| ("complexity", &s.name)));
    for (family, name) in all {
        if name.trim().is_empty() {
            bail!("routing.signals.{family}: a rule has an empty name");
        }
        if !seen.insert((family, name.clone())) {
            bail!("routing.signals.{family}: duplicate name `{name}`");
        }
    }
    Ok(())
}

/// Whether `rule` has a condition on the `kind` family.
fn names_kind(rule: &Rule, kind: SignalKind) -> bool {
    match rule {
        Rule::Signal { kind: k, .. } => *k == kind,
        Rule::Unsupported { .. } => false,
        Rule::And(cs) | Rule::Or(cs) | Rule::Not(cs) => cs.iter().any(|c| names_kind(c, kind)),
    }
}

fn condition(c: &Condition, path: &str, p: &Policy, not_impl: &mut Vec<String>) -> Result<Rule> {
    match (&c.operator, &c.kind) {
        (Some(op), None) => {
            if c.name.is_some() {
                bail!("{path}.name: an operator node has conditions, not a name");
            }
            let children = c
                .conditions
                .iter()
                .enumerate()
                .map(|(i, x)| condition(x, &format!("{path}.conditions[{i}]"), p, not_impl))
                .collect::<Result<Vec<_>>>()?;
            match op.to_ascii_uppercase().as_str() {
                "AND" => Ok(Rule::And(children)),
                "OR" => {
                    if children.is_empty() {
                        bail!("{path}.conditions: OR needs at least one condition");
                    }
                    Ok(Rule::Or(children))
                }
                "NOT" => {
                    if children.is_empty() {
                        bail!("{path}.conditions: NOT needs at least one condition");
                    }
                    Ok(Rule::Not(children))
                }
                o => bail!("{path}.operator: must be AND, OR or NOT, got `{o}`"),
            }
        }
        (None, Some(kind)) => {
            let name = c.name.clone().ok_or_else(|| anyhow!("{path}.name: required with type"))?;
            if !c.conditions.is_empty() {
                bail!("{path}.conditions: a {{type, name}} condition has no conditions");
            }
            match signal_kind(kind) {
                Some(SignalKind::Complexity) if model::complexity_name(&name).is_none() => {
                    bail!("{path}.name: `{name}` is not `<rule>:hard`, `<rule>:medium` or `<rule>:easy`")
                }
                Some(k) => {
                    if !p.defines(k, &name) {
                        bail!("{path}: no {kind} signal named `{name}` in routing.signals");
                    }
                    Ok(Rule::Signal { kind: k, name })
                }
                None if SIGNALS_NOT_IMPLEMENTED.contains(&kind.as_str()) => {
                    not_impl.push(format!("{path} ({kind} signal `{name}`; never matches)"));
                    Ok(Rule::Unsupported { kind: kind.clone(), name })
                }
                None => bail!("{path}.type: unknown signal type `{kind}`"),
            }
        }
        (Some(_), Some(_)) => bail!("{path}: a condition has either operator or type, not both"),
        (None, None) => bail!("{path}: a condition needs operator + conditions, or type + name"),
    }
}

fn conf<T: serde::de::DeserializeOwned>(v: &Value, path: &str) -> Result<T> {
    serde_path_to_error::deserialize(v).map_err(|e| {
        let inner = e.path().to_string();
        let at = if inner == "." { path.to_string() } else { format!("{path}.{inner}") };
        anyhow!("{at}: {}", e.into_inner())
    })
}

fn plugins(list: &[Plugin], path: &str, not_impl: &mut Vec<String>) -> Result<Actions> {
    let mut a = Actions::default();
    for (i, pl) in list.iter().enumerate() {
        let at = format!("{path}.plugins[{i}].configuration");
        match pl.kind.as_str() {
            "system_prompt" => {
                let c: SystemPromptConf = conf(&pl.configuration, &at)?;
                let mode = match c.mode.as_deref() {
                    None | Some("replace") => model::SystemPromptMode::Replace,
                    Some("insert") => model::SystemPromptMode::Insert,
                    Some(o) => bail!("{at}.mode: must be replace or insert, got `{o}`"),
                };
                if c.enabled {
                    if c.system_prompt.trim().is_empty() {
                        bail!("{at}.system_prompt: must not be empty");
                    }
                    a.system_prompt = Some(model::SystemPromptAction { text: c.system_prompt, mode });
                }
            }
            "header_mutation" => {
                let c: HeaderMutationConf = conf(&pl.configuration, &at)?;
                let pairs = |v: Vec<NameValue>| v.into_iter().map(|h| (h.name.to_ascii_lowercase(), h.value)).collect();
                a.header_mutation = Some(model::HeaderMutation {
                    add: pairs(c.add),
                    update: pairs(c.update),
                    delete: c.delete.into_iter().map(|h| h.to_ascii_lowercase()).collect(),
                });
            }
            "fast_response" => {
                let c: FastResponseConf = conf(&pl.configuration, &at)?;
                a.fast_response = Some(c.message);
            }
            "request_params" => {
                let c: RequestParamsConf = conf(&pl.configuration, &at)?;
                if c.strip_unknown == Some(true) {
                    not_impl.push(format!("{at}.strip_unknown"));
                }
                a.request_params = Some(model::RequestParams {
                    blocked_params: c.blocked_params,
                    max_tokens_limit: c.max_tokens_limit,
                    max_n: c.max_n,
                });
            }
            k if CACHE_PLUGINS.contains(&k) => {
                if let Some(j) = list[..i].iter().position(|o| CACHE_PLUGINS.contains(&o.kind.as_str())) {
                    bail!("{path}.plugins[{i}].type: a second cache plugin (plugins[{j}] is `{}`)", list[j].kind);
                }
                let c: ResponseCacheConf = conf(&pl.configuration, &at)?;
                let similarity_threshold =
                    c.similarity_threshold.map(|t| unit(&format!("{at}.similarity_threshold"), t)).transpose()?;
                if c.ttl_seconds.is_some() {
                    not_impl.push(format!("{at}.ttl_seconds"));
                }
                a.response_cache = Some(model::ResponseCacheAction { enabled: c.enabled, similarity_threshold });
            }
            k if PLUGINS_NOT_IMPLEMENTED.contains(&k) => not_impl.push(format!("{path}.plugins[{i}] (type {k})")),
            k => bail!("{path}.plugins[{i}].type: unknown plugin type `{k}`"),
        }
    }
    Ok(a)
}
