//! The `categories[].model_scores` format as the same policy: each category is a domain
//! signal, and a decision of the same name routes it to its models, best score first. Only one
//! domain matches a request (the classifier's winning category), so priorities do not matter.

use crate::model::{
    Actions, Algorithm, DecisionSpec, DomainSignal, ModelRef, Policy, ResponseCacheAction, Rule, SignalKind,
    SystemPromptAction,
};

/// One category of the old format, as the policy needs it.
#[derive(Debug, Clone)]
pub struct Category {
    pub name: String,
    pub description: String,
    pub mmlu_categories: Vec<String>,
    /// Model preferences in file order (`score` in `weight`).
    pub model_scores: Vec<ModelRef>,
    pub system_prompt: Option<SystemPromptAction>,
    /// See [`response_cache`].
    pub response_cache: Option<ResponseCacheAction>,
}

/// A category's `semantic_cache_enabled` and `semantic_cache_similarity_threshold` as its
/// decision's cache action (`None` when it sets neither: the global settings apply). In this
/// format the global `semantic_cache.enabled` gates every category, as in vLLM Semantic Router,
/// where a category's switch only narrows it; so the action is on only when both are.
pub fn response_cache(enabled: Option<bool>, similarity_threshold: Option<f32>, global_enabled: bool) -> Option<ResponseCacheAction> {
    if enabled.is_none() && similarity_threshold.is_none() {
        return None;
    }
    Some(ResponseCacheAction { enabled: global_enabled && enabled.unwrap_or(true), similarity_threshold })
}

/// The policy of an old-format file.
pub fn policy(categories: &[Category], default_model: &str) -> Policy {
    let mut p = Policy { default_model: default_model.to_string(), ..Default::default() };
    for c in categories {
        let mut ranked = c.model_scores.clone();
        // Highest score first; the first listed wins a tie (stable sort).
        ranked.sort_by(|a, b| b.weight.unwrap_or(0.0).total_cmp(&a.weight.unwrap_or(0.0)));
        p.domains.push(DomainSignal {
            name: c.name.clone(),
            description: c.description.clone(),
            mmlu_categories: c.mmlu_categories.clone(),
            examples: Vec::new(),
            model_scores: ranked.clone(),
        });
        p.decisions.push(DecisionSpec {
            name: c.name.clone(),
            description: c.description.clone(),
            priority: 0,
            rule: Rule::Signal { kind: SignalKind::Domain, name: c.name.clone() },
            model_refs: ranked,
            algorithm: Algorithm::Static,
            actions: Actions {
                system_prompt: c.system_prompt.clone(),
                response_cache: c.response_cache,
                ..Default::default()
            },
        });
    }
    p
}
