//! The sidecar's configuration: one YAML file plus environment overrides
//! `SR__<SECTION>__<KEY>` (e.g. `SR__SERVER__LISTEN`).
//!
//! The file is either our native format or a vLLM Semantic Router `config.yaml` (the
//! `categories[].model_scores` generation): both share the key names where they exist, so one
//! set of structs reads both. The structs are the schema ([`crate::schema`]): they deny unknown
//! fields, so a key neither format knows is an error naming its path, and so is an environment
//! variable that names no field; a vLLM Semantic Router key this router does not implement
//! (endpoints, tools, ...) is on one explicit list, accepted and reported in
//! [`Config::ignored_keys`]. Invalid values are rejected with the key path.
//!
//! A vLLM Semantic Router v0.3 file (`version: v0.3`: providers, routing signals and decisions)
//! is read by [`route_policy::v03`]; this router's own sections (`server`, `bert_model`,
//! `batching`, `classifier`, `prompt_guard`, `semantic_cache`, `observability`) may sit next
//! to its sections. Both formats end up as one [`route_policy::Policy`] in [`Config::policy`].
//!
//! Which keys a hot reload applies and which need a restart is [`RESTART_ONLY`].

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Result};
use serde::{Deserialize, Serialize};

use crate::pii::PII_TYPES;

pub use crate::schema::ENV_PREFIX;

/// Reasoning effort levels accepted in `default_reasoning_effort` and
/// `categories[].model_scores[].reasoning_effort`.
pub const REASONING_EFFORTS: &[&str] = &["minimal", "low", "medium", "high"];

/// Effort used when neither the model score nor `default_reasoning_effort` names one (as in
/// vLLM Semantic Router).
pub const DEFAULT_REASONING_EFFORT: &str = "medium";

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub server: ServerConfig,
    /// The sentence-embedding model used for category similarity, the guard and `Embed`.
    pub bert_model: BertModelConfig,
    #[serde(default)]
    pub batching: BatchingConfig,
    #[serde(default)]
    pub classifier: ClassifierConfig,
    /// Jailbreak guard (vLLM Semantic Router `prompt_guard`).
    #[serde(default)]
    pub prompt_guard: PromptGuardConfig,
    /// Semantic cache (vLLM Semantic Router `semantic_cache`, in-memory backend).
    #[serde(default)]
    pub semantic_cache: SemanticCacheConfig,
    /// Model used when no category passes the threshold.
    pub default_model: String,
    /// Effort for `reasoning_effort` families when the model score names none.
    #[serde(default)]
    pub default_reasoning_effort: Option<String>,
    /// How each reasoning family switches reasoning on (name → type and parameter).
    #[serde(default)]
    pub reasoning_families: BTreeMap<String, ReasoningFamily>,
    /// Per-model settings: reasoning family and PII policy.
    #[serde(default)]
    pub model_config: BTreeMap<String, ModelParams>,
    pub categories: Vec<Category>,
    /// OpenTelemetry tracing (vLLM Semantic Router `observability.tracing`).
    #[serde(default)]
    pub observability: ObservabilityConfig,
    /// vLLM Semantic Router keys present in the file that this router does not implement
    /// (filled by the loader; reported at start and on reload).
    #[serde(skip)]
    pub ignored_keys: Vec<String>,
    /// Non-fatal remarks about the file (e.g. a guard without a model).
    #[serde(skip)]
    pub warnings: Vec<String>,
    /// The file this config was read from (watched for changes when serving).
    #[serde(skip)]
    pub source: Option<PathBuf>,
    /// The routing policy (signals → decisions → actions) of either format.
    #[serde(skip)]
    pub policy: route_policy::Policy,
    /// True for a v0.3 file: decisions route, jailbreak and PII are signals (no implicit
    /// blocking; a decision's fast_response plugin answers instead).
    #[serde(skip)]
    pub v03: bool,
}

/// This router's own sections, read in a v0.3 file next to vLLM Semantic Router's.
pub const NATIVE_SECTIONS: &[&str] =
    &["server", "bert_model", "batching", "classifier", "prompt_guard", "semantic_cache", "observability"];

/// The embedding model a v0.3 file uses when it names none (`bert_model.model_id`).
pub const DEFAULT_EMBEDDING_MODEL: &str = "models/all-MiniLM-L6-v2";

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// gRPC listen address.
    pub listen: String,
    /// Prometheus `/metrics` listen address; empty disables it.
    pub metrics_listen: String,
    /// Shape buckets (sequence lengths) run once at start so the first requests are fast.
    pub warmup_seq_lens: Vec<usize>,
    /// Seconds between checks of the config file for changes (hot reload); 0 disables the
    /// polling (SIGHUP still reloads).
    pub config_reload_seconds: u64,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:50051".into(),
            metrics_listen: "127.0.0.1:9190".into(),
            warmup_seq_lens: vec![16, 32, 64, 128],
            config_reload_seconds: 5,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BertModelConfig {
    /// HF-format directory (config.json, model.safetensors, tokenizer.json), relative to the
    /// working directory.
    pub model_id: PathBuf,
    /// Maximum tokens per text, special tokens included (longer texts are truncated).
    #[serde(default = "d_max_seq_len")]
    pub max_seq_len: usize,
    /// `cpu` or `cuda` (the latter needs a build with the `cuda` feature).
    #[serde(default)]
    pub device: Device,
    /// vLLM Semantic Router spelling of the device: `false` means `device: cuda` unless
    /// `device` is given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub use_cpu: Option<bool>,
}

fn d_max_seq_len() -> usize {
    128
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum Device {
    #[default]
    Cpu,
    Cuda,
}

impl std::str::FromStr for Device {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "cpu" => Ok(Device::Cpu),
            "cuda" => Ok(Device::Cuda),
            other => bail!("unknown device `{other}` (expected cpu or cuda)"),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default)]
#[serde(deny_unknown_fields)]
pub struct BatchingConfig {
    /// Most texts in one forward pass.
    pub max_batch_size: usize,
    /// How long the first request of a batch waits for company, in microseconds.
    pub max_wait_micros: u64,
    /// Requests waiting beyond this many are refused with RESOURCE_EXHAUSTED.
    pub queue_capacity: usize,
    /// Model workers, each with its own copy of the embedding model: while one runs a pass,
    /// the next gathers and tokenizes its batch.
    pub workers: usize,
}

impl Default for BatchingConfig {
    fn default() -> Self {
        Self {
            max_batch_size: 32,
            max_wait_micros: 1000,
            queue_capacity: 256,
            workers: 1,
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default)]
#[serde(deny_unknown_fields)]
pub struct ClassifierConfig {
    pub category_model: CategoryModelConfig,
    pub pii_model: PiiModelConfig,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default)]
#[serde(deny_unknown_fields)]
pub struct CategoryModelConfig {
    /// A trained category head (`router-train train-category`); when it exists, its probabilities
    /// are the category scores. Without it, categories are matched by embedding similarity.
    pub model_id: Option<PathBuf>,
    /// Minimum score for a category to win: the head's probability when a head is configured,
    /// else the cosine similarity.
    pub threshold: f32,
    /// How a category's examples are compared with the prompt.
    pub matching: Matching,
    /// Weight of the earlier turns in the prompt vector (0 ignores the context).
    pub context_weight: f32,
}

impl Default for CategoryModelConfig {
    fn default() -> Self {
        Self {
            model_id: None,
            threshold: 0.3,
            matching: Matching::Centroid,
            context_weight: 0.3,
        }
    }
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum Matching {
    /// Cosine with the normalised mean of the description and example embeddings.
    #[default]
    Centroid,
    /// Best cosine over the description and the individual examples.
    MaxSimilarity,
}

/// PII detection (`classifier.pii_model`). As in vLLM Semantic Router, a threshold of 0 (the
/// default) disables detection; detections below the threshold are dropped.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default)]
#[serde(deny_unknown_fields)]
pub struct PiiModelConfig {
    pub threshold: f32,
    /// A token-classification checkpoint (`just pii-model` converts the default) run next to
    /// the deterministic detectors. Unset, or a directory that does not exist: detectors only.
    pub model_id: Option<PathBuf>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default)]
#[serde(deny_unknown_fields)]
pub struct ObservabilityConfig {
    pub tracing: TracingConfig,
}

/// Spans of each request (classify, embed, guard, PII, policy) exported over OTLP/gRPC, joined
/// to the caller's trace through the W3C `traceparent` the filter forwards. Same keys as vLLM
/// Semantic Router.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default)]
#[serde(deny_unknown_fields)]
pub struct TracingConfig {
    pub enabled: bool,
    /// `opentelemetry` (the only provider).
    pub provider: String,
    pub exporter: TracingExporter,
    pub sampling: TracingSampling,
    pub resource: TracingResource,
}

impl Default for TracingConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            provider: "opentelemetry".into(),
            exporter: TracingExporter::default(),
            sampling: TracingSampling::default(),
            resource: TracingResource::default(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default)]
#[serde(deny_unknown_fields)]
pub struct TracingExporter {
    /// `otlp` (gRPC).
    #[serde(rename = "type")]
    pub kind: String,
    /// Collector address, `host:port` or `http://host:port`.
    pub endpoint: String,
    /// Plain-text gRPC to the collector (a local agent or sidecar collector).
    pub insecure: bool,
}

impl Default for TracingExporter {
    fn default() -> Self {
        Self { kind: "otlp".into(), endpoint: "localhost:4317".into(), insecure: true }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default)]
#[serde(deny_unknown_fields)]
pub struct TracingSampling {
    /// `always_on`, `always_off` or `probabilistic` (`rate` of new traces); a sampled caller's
    /// decision is always followed.
    #[serde(rename = "type")]
    pub kind: String,
    pub rate: f64,
}

impl Default for TracingSampling {
    fn default() -> Self {
        Self { kind: "always_on".into(), rate: 1.0 }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default)]
#[serde(deny_unknown_fields)]
pub struct TracingResource {
    pub service_name: String,
    pub service_version: String,
    pub deployment_environment: String,
}

impl Default for TracingResource {
    fn default() -> Self {
        Self {
            service_name: "semantic-router-classifier".into(),
            service_version: env!("CARGO_PKG_VERSION").into(),
            deployment_environment: String::new(),
        }
    }
}

/// The jailbreak guard: a classification head on the prompt embedding.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default)]
#[serde(deny_unknown_fields)]
pub struct PromptGuardConfig {
    pub enabled: bool,
    /// Head directory (`EmbeddingHead`: config.json + model.safetensors). Empty, or a path that
    /// does not exist: the guard is "not configured" and requests are not checked.
    pub model_id: Option<PathBuf>,
    /// Probability of the jailbreak label at or above which a request is blocked; default: the
    /// head's own calibrated threshold, else 0.5.
    pub threshold: Option<f32>,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ReasoningFamily {
    /// `chat_template_kwargs` or `reasoning_effort`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The chat-template argument (e.g. `enable_thinking`), or `reasoning_effort`.
    pub parameter: String,
}

pub const FAMILY_CHAT_TEMPLATE_KWARGS: &str = "chat_template_kwargs";
pub const FAMILY_REASONING_EFFORT: &str = "reasoning_effort";

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default)]
#[serde(deny_unknown_fields)]
pub struct ModelParams {
    /// A key of `reasoning_families`; none: the model has no reasoning switch.
    pub reasoning_family: Option<String>,
    /// As in vLLM Semantic Router, a model listed here without a `pii_policy` denies every PII
    /// type (`allow_by_default` defaults to false); a model not listed allows everything.
    pub pii_policy: PiiPolicy,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default)]
#[serde(deny_unknown_fields)]
pub struct PiiPolicy {
    pub allow_by_default: bool,
    /// PII types the model may receive when `allow_by_default` is false.
    pub pii_types_allowed: Vec<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Category {
    pub name: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub examples: Vec<String>,
    /// Classifier labels that count as this category (vLLM Semantic Router's MMLU names);
    /// empty: the category's own name.
    #[serde(default)]
    pub mmlu_categories: Vec<String>,
    #[serde(default)]
    pub model_scores: Vec<ModelScore>,
    /// Injected into chat requests routed by this category.
    #[serde(default)]
    pub system_prompt: String,
    /// Default: true when `system_prompt` is not empty.
    #[serde(default)]
    pub system_prompt_enabled: Option<bool>,
    /// `replace` (default, as in vLLM Semantic Router) or `insert`.
    #[serde(default)]
    pub system_prompt_mode: Option<String>,
    /// Overrides `prompt_guard.enabled` for this category (both must be true).
    #[serde(default)]
    pub jailbreak_enabled: Option<bool>,
    #[serde(default)]
    pub jailbreak_threshold: Option<f32>,
    /// Overrides whether PII detection runs for this category.
    #[serde(default)]
    pub pii_enabled: Option<bool>,
    #[serde(default)]
    pub pii_threshold: Option<f32>,
    /// Per-category semantic-cache switch and similarity threshold.
    #[serde(default)]
    pub semantic_cache_enabled: Option<bool>,
    #[serde(default)]
    pub semantic_cache_similarity_threshold: Option<f32>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default)]
#[serde(deny_unknown_fields)]
pub struct SemanticCacheConfig {
    pub enabled: bool,
    /// Cosine similarity a stored prompt needs to answer a new one.
    pub similarity_threshold: f32,
    pub ttl_seconds: u64,
    pub max_entries: usize,
    /// Answers larger than this are not stored.
    pub max_body_bytes: usize,
    /// Requests sampling hotter than this bypass the cache (`None`: no limit).
    pub max_temperature: Option<f32>,
}

impl Default for SemanticCacheConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            similarity_threshold: 0.92,
            ttl_seconds: 3600,
            max_entries: 100_000,
            max_body_bytes: 1024 * 1024,
            max_temperature: None,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ModelScore {
    pub model: String,
    pub score: f32,
    #[serde(default)]
    pub use_reasoning: bool,
    /// Effort for `reasoning_effort` families (default: `default_reasoning_effort`).
    #[serde(default)]
    pub reasoning_effort: Option<String>,
    /// Sent as the model name when set (a LoRA adapter of `model`).
    #[serde(default)]
    pub lora_name: Option<String>,
}

impl ModelScore {
    /// The policy's view of this model score (`score` as the weight).
    pub fn to_ref(&self) -> route_policy::ModelRef {
        route_policy::ModelRef {
            model: self.model.clone(),
            lora_name: self.lora_name.clone().filter(|l| !l.is_empty()),
            use_reasoning: self.use_reasoning,
            reasoning_effort: self.reasoning_effort.clone(),
            weight: Some(self.score),
        }
    }
}

/// How a category's system prompt is applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SystemPromptMode {
    Replace,
    Insert,
}

impl Category {
    pub fn system_prompt_mode(&self) -> SystemPromptMode {
        match self.system_prompt_mode.as_deref() {
            Some("insert") => SystemPromptMode::Insert,
            _ => SystemPromptMode::Replace,
        }
    }

    /// The texts that represent the category for embedding similarity: description and
    /// examples; a vLLM Semantic Router category with neither is represented by its name and
    /// system prompt.
    pub fn texts(&self) -> Vec<String> {
        let mut t = Vec::new();
        if !self.description.trim().is_empty() {
            t.push(self.description.clone());
        }
        t.extend(self.examples.iter().cloned());
        if t.is_empty() {
            t.push(self.name.clone());
            if !self.system_prompt.trim().is_empty() {
                t.push(self.system_prompt.clone());
            }
        }
        t
    }
}

fn check_unit(path: &str, v: Option<f32>) -> Result<()> {
    if let Some(v) = v {
        if !(0.0..=1.0).contains(&v) {
            bail!("{path}: must be a probability in [0, 1], got {v}");
        }
    }
    Ok(())
}

fn check_effort(path: &str, v: Option<&str>) -> Result<()> {
    if let Some(v) = v {
        if !REASONING_EFFORTS.contains(&v) {
            bail!("{path}: must be one of {}, got `{v}`", REASONING_EFFORTS.join(", "));
        }
    }
    Ok(())
}

impl Config {
    /// Reads the YAML file, applies `SR__...` environment overrides and validates.
    pub fn load(path: &Path) -> Result<Self> {
        if !path.exists() {
            bail!("config file {} not found", path.display());
        }
        let tree = config::Config::builder()
            .add_source(config::File::from(path).format(config::FileFormat::Yaml))
            .build()
            .and_then(|raw| raw.try_deserialize::<serde_json::Value>())
            .map_err(|e| anyhow!("{}: {e}", path.display()))?;
        let env = crate::schema::env_overrides(std::env::vars())?;
        let mut cfg = Self::from_tree(tree, &env).map_err(|e| anyhow!("{}: {e:#}", path.display()))?;
        cfg.source = Some(path.to_path_buf());
        if let Some(c) = COMMAND_LINE.get() {
            c.apply(&mut cfg);
        }
        Ok(cfg)
    }

    /// Parses YAML text (no environment overrides) and validates.
    pub fn from_yaml(text: &str) -> Result<Self> {
        let tree = config::Config::builder()
            .add_source(config::File::from_str(text, config::FileFormat::Yaml))
            .build()?
            .try_deserialize::<serde_json::Value>()?;
        Self::from_tree(tree, &[])
    }

    /// A parsed file of either format, with the environment's overrides.
    fn from_tree(tree: serde_json::Value, env: &[crate::schema::EnvOverride]) -> Result<Self> {
        if route_policy::v03::is_v03(&tree) {
            return Self::from_v03(tree, env);
        }
        let mut tree = tree;
        let ignored = crate::schema::strip_ignored(&mut tree);
        let mut cfg = Self::from_native(tree, env, ignored)?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// The native sections (the whole file in the old format), ignored keys already removed.
    fn from_native(mut tree: serde_json::Value, env: &[crate::schema::EnvOverride], ignored: Vec<String>) -> Result<Self> {
        crate::schema::apply_env(&mut tree, env)?;
        let mut cfg: Config = crate::schema::deserialize(&mut tree, env)?;
        cfg.ignored_keys = ignored;
        let device_given = tree.pointer("/bert_model/device").is_some();
        if cfg.bert_model.use_cpu == Some(false) && !device_given {
            cfg.bert_model.device = Device::Cuda;
        }
        Ok(cfg)
    }

    /// A v0.3 file: vSR's sections become the policy; this router's own sections and the
    /// policy's defaults, domains and model families fill the rest of the config.
    fn from_v03(tree: serde_json::Value, env: &[crate::schema::EnvOverride]) -> Result<Self> {
        let serde_json::Value::Object(all) = tree else { bail!("the config file is not a mapping") };
        // The environment overrides this router's sections; vSR's come from the file alone.
        if let Some(o) = env.iter().find(|o| !NATIVE_SECTIONS.contains(&o.path[0].as_str())) {
            bail!("{}: a v0.3 file takes environment overrides of this router's sections only ({})", o.var, NATIVE_SECTIONS.join(", "));
        }
        let (native, vsr): (serde_json::Map<_, _>, serde_json::Map<_, _>) =
            all.into_iter().partition(|(k, _)| NATIVE_SECTIONS.contains(&k.as_str()));
        let policy = route_policy::v03::parse(&serde_json::Value::Object(vsr))?;
        let mut native = serde_json::Value::Object(native);
        let mut ignored = crate::schema::strip_ignored(&mut native);
        ignored.extend(policy.not_implemented.iter().cloned());
        let guard_given = native.pointer("/prompt_guard/enabled").is_some() || env.iter().any(|o| o.key() == "prompt_guard.enabled");
        let n = native.as_object_mut().expect("an object");
        n.entry("bert_model").or_insert_with(|| serde_json::json!({ "model_id": DEFAULT_EMBEDDING_MODEL }));
        n.insert("default_model".into(), policy.default_model.clone().into());
        n.insert("default_reasoning_effort".into(), serde_json::to_value(&policy.default_reasoning_effort)?);
        let families: serde_json::Map<_, _> = policy
            .reasoning_families
            .iter()
            .map(|(name, f)| (name.clone(), serde_json::json!({ "type": f.kind, "parameter": f.parameter })))
            .collect();
        n.insert("reasoning_families".into(), families.into());
        // A v0.3 model without a PII policy of its own allows everything: PII is a signal here.
        let models: serde_json::Map<_, _> = policy
            .model_families
            .iter()
            .map(|(m, f)| (m.clone(), serde_json::json!({ "reasoning_family": f, "pii_policy": { "allow_by_default": true } })))
            .collect();
        n.insert("model_config".into(), models.into());
        let categories: Vec<serde_json::Value> = policy
            .domains
            .iter()
            .map(|d| {
                serde_json::json!({
                    "name": d.name,
                    "description": d.description,
                    "mmlu_categories": d.mmlu_categories,
                    "examples": d.examples,
                    "model_scores": d.model_scores.iter().map(|m| serde_json::json!({
                        "model": m.model,
                        "score": m.weight.unwrap_or(1.0),
                        "use_reasoning": m.use_reasoning,
                        "reasoning_effort": m.reasoning_effort,
                        "lora_name": m.lora_name,
                    })).collect::<Vec<_>>(),
                })
            })
            .collect();
        n.insert("categories".into(), categories.into());
        let mut cfg = Self::from_native(native, env, ignored)?;
        // Jailbreak signals need the guard to run.
        if !policy.jailbreaks.is_empty() && !guard_given {
            cfg.prompt_guard.enabled = true;
        }
        cfg.policy = policy;
        cfg.v03 = true;
        cfg.validate()?;
        Ok(cfg)
    }

    /// The policy of an old-format file: one domain signal and one decision per category.
    fn legacy_policy(&self) -> route_policy::Policy {
        let cats: Vec<route_policy::legacy::Category> = self
            .categories
            .iter()
            .map(|c| {
                let prompt_on = c.system_prompt_enabled.unwrap_or(true) && !c.system_prompt.trim().is_empty();
                route_policy::legacy::Category {
                    name: c.name.clone(),
                    description: c.description.clone(),
                    mmlu_categories: c.mmlu_categories.clone(),
                    model_scores: c.model_scores.iter().map(ModelScore::to_ref).collect(),
                    system_prompt: prompt_on.then(|| route_policy::model::SystemPromptAction {
                        text: c.system_prompt.clone(),
                        mode: match c.system_prompt_mode() {
                            SystemPromptMode::Insert => route_policy::model::SystemPromptMode::Insert,
                            SystemPromptMode::Replace => route_policy::model::SystemPromptMode::Replace,
                        },
                    }),
                    response_cache: route_policy::legacy::response_cache(
                        c.semantic_cache_enabled,
                        c.semantic_cache_similarity_threshold,
                        self.semantic_cache.enabled,
                    ),
                }
            })
            .collect();
        route_policy::legacy::policy(&cats, &self.default_model)
    }

    pub fn validate(&mut self) -> Result<()> {
        crate::telemetry::validate(&self.observability.tracing)?;
        if !(1..=64).contains(&self.batching.workers) {
            bail!("batching.workers: must be between 1 and 64, got {}", self.batching.workers);
        }
        let sc = &self.semantic_cache;
        if !(0.0..=1.0).contains(&sc.similarity_threshold) {
            bail!("semantic_cache.similarity_threshold: must be in [0, 1], got {}", sc.similarity_threshold);
        }
        for (i, c) in self.categories.iter().enumerate() {
            if let Some(t) = c.semantic_cache_similarity_threshold {
                if !(0.0..=1.0).contains(&t) {
                    bail!("categories[{i}].semantic_cache_similarity_threshold: must be in [0, 1], got {t}");
                }
            }
        }
        self.listen_addr()?;
        self.metrics_addr()?;
        if self.bert_model.model_id.as_os_str().is_empty() {
            bail!("bert_model.model_id: must not be empty");
        }
        if self.bert_model.max_seq_len < 2 {
            bail!("bert_model.max_seq_len: must be at least 2, got {}", self.bert_model.max_seq_len);
        }
        let b = &self.batching;
        if b.max_batch_size == 0 {
            bail!("batching.max_batch_size: must be at least 1");
        }
        if b.queue_capacity == 0 {
            bail!("batching.queue_capacity: must be at least 1");
        }
        let c = &self.classifier.category_model;
        if !(-1.0..=1.0).contains(&c.threshold) {
            bail!("classifier.category_model.threshold: must be a cosine similarity in [-1, 1], got {}", c.threshold);
        }
        if !(0.0..1.0).contains(&c.context_weight) {
            bail!("classifier.category_model.context_weight: must be in [0, 1), got {}", c.context_weight);
        }
        check_unit("classifier.pii_model.threshold", Some(self.classifier.pii_model.threshold))?;
        check_unit("prompt_guard.threshold", self.prompt_guard.threshold)?;
        if self.default_model.trim().is_empty() {
            bail!("default_model: must not be empty");
        }
        check_effort("default_reasoning_effort", self.default_reasoning_effort.as_deref())?;
        for (name, f) in &self.reasoning_families {
            match f.kind.as_str() {
                FAMILY_CHAT_TEMPLATE_KWARGS | FAMILY_REASONING_EFFORT => {}
                other => bail!(
                    "reasoning_families.{name}.type: must be {FAMILY_CHAT_TEMPLATE_KWARGS} or {FAMILY_REASONING_EFFORT}, got `{other}`"
                ),
            }
            if f.parameter.trim().is_empty() {
                bail!("reasoning_families.{name}.parameter: must not be empty");
            }
        }
        for (model, p) in &self.model_config {
            if let Some(fam) = &p.reasoning_family {
                if !self.reasoning_families.contains_key(fam) {
                    bail!("model_config.{model}.reasoning_family: `{fam}` is not a key of reasoning_families");
                }
            }
            for (k, t) in p.pii_policy.pii_types_allowed.iter().enumerate() {
                if !PII_TYPES.contains(&t.as_str()) {
                    bail!(
                        "model_config.{model}.pii_policy.pii_types_allowed[{k}]: unknown PII type `{t}` (known: {})",
                        PII_TYPES.join(", ")
                    );
                }
            }
        }
        if self.categories.is_empty() && !self.v03 {
            bail!("categories: at least one category is needed");
        }
        let mut names = HashSet::new();
        for (i, cat) in self.categories.iter().enumerate() {
            if cat.name.trim().is_empty() {
                bail!("categories[{i}].name: must not be empty");
            }
            if !names.insert(cat.name.as_str()) {
                bail!("categories[{i}].name: duplicate category `{}`", cat.name);
            }
            if cat.description.trim().is_empty() && cat.examples.is_empty() {
                self.warnings.push(format!(
                    "categories[{i}] ({}): no description or examples; matched by its name and system_prompt",
                    cat.name
                ));
            }
            if cat.model_scores.is_empty() && !self.v03 {
                bail!("categories[{i}].model_scores ({}): must not be empty", cat.name);
            }
            for (j, ms) in cat.model_scores.iter().enumerate() {
                if ms.model.trim().is_empty() {
                    bail!("categories[{i}].model_scores[{j}].model: must not be empty");
                }
                if !ms.score.is_finite() {
                    bail!("categories[{i}].model_scores[{j}].score: must be a finite number");
                }
                check_effort(
                    &format!("categories[{i}].model_scores[{j}].reasoning_effort"),
                    ms.reasoning_effort.as_deref(),
                )?;
            }
            if let Some(m) = &cat.system_prompt_mode {
                if m != "replace" && m != "insert" {
                    bail!("categories[{i}].system_prompt_mode: must be replace or insert, got `{m}`");
                }
            }
            if cat.system_prompt_enabled == Some(true) && cat.system_prompt.trim().is_empty() {
                bail!("categories[{i}].system_prompt: system_prompt_enabled is true but the prompt is empty");
            }
            check_unit(&format!("categories[{i}].jailbreak_threshold"), cat.jailbreak_threshold)?;
            check_unit(&format!("categories[{i}].pii_threshold"), cat.pii_threshold)?;
        }
        if self.prompt_guard.enabled && self.prompt_guard.model_id.as_ref().is_none_or(|p| p.as_os_str().is_empty()) {
            self.warnings.push("prompt_guard: enabled without model_id; the guard is not configured".into());
        }
        if !self.v03 {
            self.policy = self.legacy_policy();
        }
        let sc = &self.semantic_cache;
        if self.cache_in_use() && (sc.max_entries == 0 || sc.ttl_seconds == 0) {
            bail!("semantic_cache: max_entries and ttl_seconds must be positive while the cache is on (globally or for a decision)");
        }
        Ok(())
    }

    /// Whether any request may use the semantic cache: the global switch is on, or a decision
    /// turns it on for itself (see [`crate::cache::layer::bypass_reason`]).
    pub fn cache_in_use(&self) -> bool {
        self.semantic_cache.enabled || self.policy.enables_cache()
    }

    pub fn listen_addr(&self) -> Result<SocketAddr> {
        self.server
            .listen
            .parse()
            .map_err(|e| anyhow!("server.listen: `{}` is not a socket address: {e}", self.server.listen))
    }

    /// `None` when the metrics endpoint is disabled.
    pub fn metrics_addr(&self) -> Result<Option<SocketAddr>> {
        if self.server.metrics_listen.is_empty() {
            return Ok(None);
        }
        self.server.metrics_listen.parse().map(Some).map_err(|e| {
            anyhow!(
                "server.metrics_listen: `{}` is not a socket address: {e}",
                self.server.metrics_listen
            )
        })
    }

    /// The [`RESTART_ONLY`] entries under which `new` differs from `self` (see
    /// [`restart_only_changes`] for the exact keys).
    pub fn restart_only_changes(&self, new: &Config) -> Vec<&'static str> {
        let changed = restart_only_changes(self, new);
        RESTART_ONLY
            .iter()
            .copied()
            .filter(|p| changed.iter().any(|c| c == p || c.starts_with(&format!("{p}."))))
            .collect()
    }
}

/// What `serve`'s command line set (`--listen`, `--metrics-listen`, `--device`). Like the `SR__`
/// variables, it applies to every load of the file, hot reloads included, so that a reload
/// neither drops it nor reports those restart-only keys as changed.
#[derive(Debug, Clone, Default)]
pub struct CommandLine {
    pub listen: Option<String>,
    pub metrics_listen: Option<String>,
    pub device: Option<Device>,
}

static COMMAND_LINE: std::sync::OnceLock<CommandLine> = std::sync::OnceLock::new();

impl CommandLine {
    /// Makes these the overrides of every later [`Config::load`] in this process (once).
    pub fn install(self) {
        let _ = COMMAND_LINE.set(self);
    }

    pub fn apply(&self, cfg: &mut Config) {
        if let Some(l) = &self.listen {
            cfg.server.listen = l.clone();
        }
        if let Some(m) = &self.metrics_listen {
            cfg.server.metrics_listen = m.clone();
        }
        if let Some(d) = self.device {
            cfg.bert_model.device = d;
        }
    }
}

/// Keys read once when the sidecar starts (the engine's models, workers and cache, the
/// listeners, the reload watcher, tracing); a section stands for every key below it. A hot
/// reload swaps in everything else: the policy (categories, signals, decisions, plugins),
/// thresholds, reasoning families, PII policies, the guard's switch and threshold, and the
/// semantic cache's switch, similarity and temperature limit.
pub const RESTART_ONLY: &[&str] = &[
    "server",
    "bert_model",
    "batching",
    "classifier.category_model.model_id",
    "classifier.pii_model.model_id",
    "prompt_guard.model_id",
    "semantic_cache.ttl_seconds",
    "semantic_cache.max_entries",
    "semantic_cache.max_body_bytes",
    "observability",
];

/// The key paths of restart-only settings ([`RESTART_ONLY`]) whose values differ between
/// `old` and `new`, e.g. `batching.workers`; a reload that changes one logs that it needs a
/// restart.
pub fn restart_only_changes(old: &Config, new: &Config) -> Vec<String> {
    // Compared as the files would write them, so every field below a section counts.
    let (a, b) = match (serde_json::to_value(old), serde_json::to_value(new)) {
        (Ok(a), Ok(b)) => (a, b),
        _ => return Vec::new(),
    };
    let mut changed = Vec::new();
    for path in RESTART_ONLY {
        let pointer = format!("/{}", path.replace('.', "/"));
        let null = serde_json::Value::Null;
        diff(a.pointer(&pointer).unwrap_or(&null), b.pointer(&pointer).unwrap_or(&null), path, &mut changed);
    }
    changed
}

/// Leaf paths under `at` where `a` and `b` differ (a whole list counts as one value).
fn diff(a: &serde_json::Value, b: &serde_json::Value, at: &str, out: &mut Vec<String>) {
    use serde_json::Value::{Null, Object};
    match (a, b) {
        (Object(x), Object(y)) => {
            let keys: std::collections::BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            for k in keys {
                diff(x.get(k).unwrap_or(&Null), y.get(k).unwrap_or(&Null), &format!("{at}.{k}"), out);
            }
        }
        _ if a != b => out.push(at.to_string()),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = "bert_model: { model_id: m }\ndefault_model: d\ncategories:\n  - { name: a, description: x, model_scores: [{ model: m1, score: 1.0 }] }\n";

    fn with(extra: &str) -> Config {
        Config::from_yaml(&format!("{BASE}{extra}")).unwrap()
    }

    /// Every config the repository ships loads: the examples and the deployed ConfigMap's file.
    #[test]
    fn every_shipped_config_loads() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let mut n = 0;
        for entry in std::fs::read_dir(root.join("classifier-svc/config")).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "yaml") {
                Config::from_yaml(&std::fs::read_to_string(&path).unwrap()).unwrap_or_else(|e| panic!("{}: {e:#}", path.display()));
                n += 1;
            }
        }
        assert!(n >= 3, "{n} example configs");
        let cm: serde_json::Value = config::Config::builder()
            .add_source(config::File::from(root.join("deploy/base/classifier-config.yaml")).format(config::FileFormat::Yaml))
            .build()
            .unwrap()
            .try_deserialize()
            .unwrap();
        let text = cm.pointer("/data/router.yaml").and_then(|v| v.as_str()).expect("data.router.yaml");
        Config::from_yaml(text).unwrap_or_else(|e| panic!("deploy/base/classifier-config.yaml: {e:#}"));
    }

    #[test]
    fn every_restart_only_path_names_a_field() {
        let v = serde_json::to_value(with("")).unwrap();
        for p in RESTART_ONLY {
            assert!(v.pointer(&format!("/{}", p.replace('.', "/"))).is_some(), "{p} is no field of Config");
        }
    }

    #[test]
    fn restart_only_changes_name_the_keys_and_skip_the_policy() {
        let old = with("");
        let new = with("batching: { workers: 2 }\nserver: { listen: 127.0.0.1:6000 }\nclassifier: { category_model: { model_id: head, threshold: 0.5 } }\nsemantic_cache: { max_entries: 10, similarity_threshold: 0.8 }\n");
        assert_eq!(
            restart_only_changes(&old, &new),
            ["server.listen", "batching.workers", "classifier.category_model.model_id", "semantic_cache.max_entries"]
        );
        assert_eq!(old.restart_only_changes(&new), ["server", "batching", "classifier.category_model.model_id", "semantic_cache.max_entries"]);
        // The policy and its thresholds reload: nothing to report.
        let policy = Config::from_yaml(&format!(
            "{}classifier: {{ category_model: {{ threshold: 0.6 }} }}\nprompt_guard: {{ enabled: true, threshold: 0.9 }}\n",
            BASE.replace("model: m1", "model: m2").replace("default_model: d", "default_model: e")
        ))
        .unwrap();
        assert!(restart_only_changes(&old, &policy).is_empty(), "{:?}", restart_only_changes(&old, &policy));
    }

    #[test]
    fn a_decision_that_turns_the_cache_on_needs_the_cache_limits() {
        let v03 = |enabled: bool| {
            Config::from_yaml(&format!(
                "version: v0.3\nsemantic_cache: {{ enabled: false, max_entries: 0 }}\nproviders: {{ defaults: {{ default_model: d }} }}\nrouting:\n  decisions:\n    - {{ name: a, rules: {{ operator: AND }}, plugins: [{{ type: semantic-cache, configuration: {{ enabled: {enabled} }} }}] }}\n"
            ))
        };
        assert!(v03(false).is_ok(), "the cache is off everywhere: its limits do not matter");
        let e = format!("{:#}", v03(true).unwrap_err());
        assert!(e.starts_with("semantic_cache: max_entries"), "{e}");
    }

    #[test]
    fn command_line_settings_are_not_reported_as_changed_on_reload() {
        let command_line = CommandLine { listen: Some("127.0.0.1:7001".into()), metrics_listen: Some(String::new()), device: None };
        let mut started = with("");
        command_line.apply(&mut started);
        let mut reloaded = with("");
        assert_eq!(restart_only_changes(&started, &reloaded), ["server.listen", "server.metrics_listen"]);
        command_line.apply(&mut reloaded);
        assert!(restart_only_changes(&started, &reloaded).is_empty());
    }

    #[test]
    fn environment_keys_are_checked_against_the_structs() {
        let tree = |t: &str| -> serde_json::Value {
            config::Config::builder()
                .add_source(config::File::from_str(t, config::FileFormat::Yaml))
                .build()
                .unwrap()
                .try_deserialize()
                .unwrap()
        };
        let env = |pairs: &[(&str, &str)]| {
            crate::schema::env_overrides(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string()))).unwrap()
        };
        let cfg = Config::from_tree(tree(BASE), &env(&[("SR__SERVER__WARMUP_SEQ_LENS", "8,16"), ("SR__BATCHING__WORKERS", "3")])).unwrap();
        assert_eq!((cfg.server.warmup_seq_lens.as_slice(), cfg.batching.workers), ([8, 16].as_slice(), 3));
        let e = format!("{:#}", Config::from_tree(tree(BASE), &env(&[("SR__BATCHING__WROKERS", "3")])).unwrap_err());
        assert!(e.starts_with("SR__BATCHING__WROKERS (batching.wrokers): unknown key"), "{e}");
        // An ignored vSR key is not a field either.
        let e = format!("{:#}", Config::from_tree(tree(BASE), &env(&[("SR__TOOLS__ENABLED", "true")])).unwrap_err());
        assert!(e.starts_with("SR__TOOLS__ENABLED (tools): unknown key"), "{e}");
        // Validation still names the key the variable set.
        let e = format!("{:#}", Config::from_tree(tree(BASE), &env(&[("SR__BATCHING__WORKERS", "0")])).unwrap_err());
        assert!(e.contains("batching.workers"), "{e}");
        let v03 = "version: v0.3\nproviders: { defaults: { default_model: d } }\n";
        let cfg = Config::from_tree(tree(v03), &env(&[("SR__BERT_MODEL__DEVICE", "cpu")])).unwrap();
        assert_eq!(cfg.bert_model.model_id, Path::new(DEFAULT_EMBEDDING_MODEL));
        let e = format!("{:#}", Config::from_tree(tree(v03), &env(&[("SR__DEFAULT_MODEL", "x")])).unwrap_err());
        assert!(e.starts_with("SR__DEFAULT_MODEL: a v0.3 file"), "{e}");
    }
}
