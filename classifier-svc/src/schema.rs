//! The config file's key schema: every key path either format may hold.
//!
//! Paths are written with `[]` for list items and `*` for map keys chosen by the operator
//! (model and family names). [`KNOWN`] are the keys this router reads; [`IGNORED`] are vLLM
//! Semantic Router keys (and whole sections) it accepts but does not implement: they are
//! reported, not rejected, so an operator's `config.yaml` loads unchanged. Anything else is an
//! error naming the key's path, so a misspelt key never silently falls back to a default.

use anyhow::{bail, Result};
use serde_json::Value;

/// Keys this router reads.
pub const KNOWN: &[&str] = &[
    "server",
    "server.listen",
    "server.metrics_listen",
    "server.warmup_seq_lens",
    "server.config_reload_seconds",
    "bert_model",
    "bert_model.model_id",
    "bert_model.max_seq_len",
    "bert_model.device",
    "bert_model.use_cpu",
    "batching",
    "batching.max_batch_size",
    "batching.max_wait_micros",
    "batching.queue_capacity",
    "batching.workers",
    "classifier",
    "classifier.category_model",
    "classifier.category_model.model_id",
    "classifier.category_model.threshold",
    "classifier.category_model.matching",
    "classifier.category_model.context_weight",
    "classifier.pii_model",
    "classifier.pii_model.threshold",
    "classifier.pii_model.model_id",
    "prompt_guard",
    "prompt_guard.enabled",
    "prompt_guard.model_id",
    "prompt_guard.threshold",
    "default_model",
    "default_reasoning_effort",
    "reasoning_families",
    "reasoning_families.*",
    "reasoning_families.*.type",
    "reasoning_families.*.parameter",
    "model_config",
    "model_config.*",
    "model_config.*.reasoning_family",
    "model_config.*.pii_policy",
    "model_config.*.pii_policy.allow_by_default",
    "model_config.*.pii_policy.pii_types_allowed",
    "categories",
    "categories[]",
    "categories[].name",
    "categories[].description",
    "categories[].examples",
    "categories[].model_scores",
    "categories[].model_scores[]",
    "categories[].model_scores[].model",
    "categories[].model_scores[].score",
    "categories[].model_scores[].use_reasoning",
    "categories[].model_scores[].reasoning_effort",
    "categories[].model_scores[].lora_name",
    "categories[].mmlu_categories",
    "categories[].system_prompt",
    "categories[].system_prompt_enabled",
    "categories[].system_prompt_mode",
    "categories[].jailbreak_enabled",
    "categories[].jailbreak_threshold",
    "categories[].pii_enabled",
    "categories[].pii_threshold",
    "categories[].semantic_cache_enabled",
    "categories[].semantic_cache_similarity_threshold",
    "semantic_cache",
    "semantic_cache.enabled",
    "semantic_cache.similarity_threshold",
    "semantic_cache.ttl_seconds",
    "semantic_cache.max_entries",
    "semantic_cache.max_body_bytes",
    "semantic_cache.max_temperature",
    "observability",
    "observability.tracing",
    "observability.tracing.enabled",
    "observability.tracing.provider",
    "observability.tracing.exporter",
    "observability.tracing.exporter.type",
    "observability.tracing.exporter.endpoint",
    "observability.tracing.exporter.insecure",
    "observability.tracing.sampling",
    "observability.tracing.sampling.type",
    "observability.tracing.sampling.rate",
    "observability.tracing.resource",
    "observability.tracing.resource.service_name",
    "observability.tracing.resource.service_version",
    "observability.tracing.resource.deployment_environment",
];

/// vLLM Semantic Router keys accepted and ignored (with everything below them).
pub const IGNORED: &[&str] = &[
    "semantic_cache.backend_type",
    "semantic_cache.eviction_policy",
    "semantic_cache.use_hnsw",
    "semantic_cache.hnsw_m",
    "semantic_cache.hnsw_ef_construction",
    "semantic_cache.embedding_model",
    "semantic_cache.backend_config_path",
    "tools",
    "vllm_endpoints",
    "router",
    "api",
    "embedding_models",
    "observability.metrics",
    "keyword_rules",
    "embedding_rules",
    "auto_model_name",
    "include_config_models_in_list",
    "clear_route_cache",
    "bert_model.threshold",
    "classifier.category_model.use_modernbert",
    "classifier.category_model.use_cpu",
    "classifier.category_model.category_mapping_path",
    "classifier.mcp_category_model",
    "classifier.pii_model.use_modernbert",
    "classifier.pii_model.use_cpu",
    "classifier.pii_model.pii_mapping_path",
    "prompt_guard.use_modernbert",
    "prompt_guard.use_cpu",
    "prompt_guard.jailbreak_mapping_path",
    "model_config.*.preferred_endpoints",
    "model_config.*.pricing",
    "model_config.*.loras",
    "model_config.*.use_reasoning",
    "categories[].model_scores[].reasoning_description",
];

/// What the check found besides errors.
#[derive(Debug, Default)]
pub struct Report {
    /// Concrete paths of ignored vLLM Semantic Router keys, e.g. `vllm_endpoints`.
    pub ignored: Vec<String>,
}

/// Maps whose keys are names chosen by the operator.
const NAMED_MAPS: &[&str] = &["reasoning_families", "model_config"];

/// Checks every key of a parsed config file.
pub fn check(tree: &Value) -> Result<Report> {
    let mut report = Report::default();
    walk(tree, "", "", &mut report)?;
    Ok(report)
}

fn walk(v: &Value, pattern: &str, path: &str, report: &mut Report) -> Result<()> {
    match v {
        Value::Object(map) => {
            let named = NAMED_MAPS.contains(&pattern);
            for (k, child) in map {
                let p = if pattern.is_empty() {
                    k.clone()
                } else if named {
                    format!("{pattern}.*")
                } else {
                    format!("{pattern}.{k}")
                };
                let c = if path.is_empty() { k.clone() } else { format!("{path}.{k}") };
                if IGNORED.contains(&p.as_str()) {
                    report.ignored.push(c);
                    continue;
                }
                if !KNOWN.contains(&p.as_str()) {
                    bail!("{c}: unknown key");
                }
                walk(child, &p, &c, report)?;
            }
        }
        Value::Array(items) => {
            let p = format!("{pattern}[]");
            if KNOWN.contains(&p.as_str()) {
                for (i, child) in items.iter().enumerate() {
                    walk(child, &p, &format!("{path}[{i}]"), report)?;
                }
            }
        }
        _ => {}
    }
    Ok(())
}
