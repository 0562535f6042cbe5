//! The `categories[].model_scores` format as the same policy: each category is a domain
//! signal, and a decision of the same name routes it to its models, best score first. Only one
//! domain matches a request (the classifier's winning category), so priorities do not matter.

use crate::model::{Actions, Algorithm, DecisionSpec, DomainSignal, ModelRef, Policy, Rule, SignalKind, SystemPromptAction};

/// One category of the old format, as the policy needs it.
#[derive(Debug, Clone)]
pub struct Category {
    pub name: String,
    pub description: String,
    pub mmlu_categories: Vec<String>,
    /// Model preferences in file order (`score` in `weight`).
    pub model_scores: Vec<ModelRef>,
    pub system_prompt: Option<SystemPromptAction>,
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
            actions: Actions { system_prompt: c.system_prompt.clone(), ..Default::default() },
        });
    }
    p
}
