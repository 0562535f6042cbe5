//! Routing policy: embedding similarity to categories, then the category's best model, with
//! the category's reasoning mode and system prompt, the jailbreak guard's verdict and the
//! selected model's PII policy applied (vLLM Semantic Router semantics).
//!
//! Category vectors are computed once (at start and on every config reload) from each
//! category's description and examples. By default a category is represented by its centroid
//! (the normalised mean of those embeddings): one dot product per category, and a single
//! off-topic example cannot capture prompts on its own. `matching: max_similarity` compares
//! with every example instead.
//!
//! [`Router::decide_with`] is a pure function of the prompt vector and the [`Signals`] the
//! guard and the PII detectors computed, so every decision field is testable without models.

use std::collections::BTreeMap;

use router_proto::v1::{
    system_prompt, Block, CategoryScore, Decision, GuardVerdict, Header, HeaderMutation, LocalReply, Reasoning,
    RequestParams, SystemPrompt,
};

use crate::config::{
    Config, Matching, ModelParams, ModelScore, ReasoningFamily, SystemPromptMode,
    DEFAULT_REASONING_EFFORT, FAMILY_CHAT_TEMPLATE_KWARGS,
};

/// The decision carries typed facts (reason, guard and PII verdicts); the filter renders every
/// decision header from them (`router_proto::vocabulary::decision_headers`). No category
/// reaching the threshold is [`Reason::LowConfidence`]: the default model, and the response says
/// so rather than naming a confident wrong category.
pub use router_proto::v1::{PiiVerdict, Reason};

/// Block fields: an OpenAI-style `invalid_request_error` with a specific code.
pub const BLOCK_STATUS: u32 = 400;
pub const BLOCK_TYPE: &str = "invalid_request_error";
pub const CODE_JAILBREAK: &str = "jailbreak_detected";
pub const CODE_PII: &str = "pii_policy_violation";

/// Guard threshold when neither the config nor the head names one.
pub const DEFAULT_GUARD_THRESHOLD: f32 = 0.5;

#[derive(Debug, Clone)]
pub struct RoutedCategory {
    pub name: String,
    /// Unit vectors this category is compared with (one centroid, or every example).
    pub vectors: Vec<Vec<f32>>,
    /// Highest-scoring model (first listed on ties) and whether it should reason.
    pub model: String,
    pub use_reasoning: bool,
    /// Model scores, best first (first listed on ties): the PII fallback order.
    pub ranked: Vec<ModelScore>,
    pub system_prompt: Option<(String, SystemPromptMode)>,
    /// Guard on for this category (`prompt_guard.enabled` and `jailbreak_enabled`).
    pub jailbreak_enabled: bool,
    pub jailbreak_threshold: Option<f32>,
    /// PII threshold for this category; `None`: detection off for it.
    pub pii_threshold: Option<f32>,
    /// Classifier labels that count as this category (`mmlu_categories`); empty: its name.
    pub labels: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct Router {
    pub categories: Vec<RoutedCategory>,
    pub threshold: f32,
    pub default_model: String,
    pub context_weight: f32,
    pub models: BTreeMap<String, ModelParams>,
    pub families: BTreeMap<String, ReasoningFamily>,
    pub default_effort: String,
    pub guard_enabled: bool,
    pub guard_threshold: Option<f32>,
    /// Global PII threshold; `None`: detection off (unless a category turns it on).
    pub pii_threshold: Option<f32>,
    /// Signals → decisions → actions (both config formats).
    pub policy: route_policy::Policy,
    /// Unit vectors of the policy's embedding-rule candidates, embedded at load.
    pub candidates: route_policy::CandidateVectors,
    /// A v0.3 policy: jailbreak and PII are signals, decisions act on them.
    pub v03: bool,
}

/// A routing decision, with what the sidecar still acts on after routing.
#[derive(Debug, Clone)]
pub struct Routed {
    pub decision: Decision,
    /// The cache action of the decision that matched (`None`: it has no cache plugin, or no
    /// decision matched), carried here so the cache layer need not find the decision again.
    pub cache: Option<route_policy::model::ResponseCacheAction>,
}

/// What the guard and the PII detectors found for one request.
#[derive(Debug, Clone, Default)]
pub struct Signals {
    /// The guard's most likely jailbreak label and its probability; `None`: no guard ran.
    pub jailbreak: Option<GuardScore>,
    /// PII detections (type, confidence) over the prompt and its context.
    pub pii: Vec<(&'static str, f32)>,
    /// The category head's (label, probability) pairs; when present they are the category
    /// scores instead of embedding similarity.
    pub category_probabilities: Option<Vec<(String, f32)>>,
    /// The text keyword, structure and language signals read: the last user message.
    pub text: String,
    /// Estimated tokens of the conversation (context signals).
    pub tokens: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct GuardScore {
    pub label: String,
    pub probability: f32,
    /// The head's own calibrated threshold, used when the config names none.
    pub head_threshold: Option<f32>,
}

pub fn normalize(v: &mut [f32]) {
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if n > 0.0 {
        v.iter_mut().for_each(|x| *x /= n);
    }
}

pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn header(name: &str, value: impl Into<String>) -> Header {
    Header { name: name.into(), value: value.into() }
}

impl Router {
    /// The texts to embed: each category's (see [`crate::config::Category::texts`]), then the
    /// candidate phrases of each embedding rule of the policy.
    pub fn category_texts(config: &Config) -> Vec<Vec<String>> {
        let mut t: Vec<Vec<String>> = config.categories.iter().map(|c| c.texts()).collect();
        t.extend(config.policy.embedding_candidates());
        t
    }

    /// Builds the router from the config and the embeddings of [`Router::category_texts`].
    pub fn new(config: &Config, mut embeddings: Vec<Vec<Vec<f32>>>) -> Self {
        let cm = &config.classifier.category_model;
        let global_pii = config.classifier.pii_model.threshold;
        let candidates = route_policy::CandidateVectors(embeddings.split_off(config.categories.len().min(embeddings.len())));
        let categories = config
            .categories
            .iter()
            .zip(embeddings)
            .map(|(c, embs)| {
                let vectors = match cm.matching {
                    Matching::MaxSimilarity => embs,
                    Matching::Centroid => {
                        let mut mean = vec![0f32; embs[0].len()];
                        for e in &embs {
                            mean.iter_mut().zip(e).for_each(|(m, x)| *m += x);
                        }
                        normalize(&mut mean);
                        vec![mean]
                    }
                };
                // Highest score wins; the first listed wins a tie (stable sort).
                let mut ranked = c.model_scores.clone();
                ranked.sort_by(|a, b| b.score.total_cmp(&a.score));
                // A v0.3 domain may list no model_scores: its decisions pick the models.
                let (model, use_reasoning) = ranked
                    .first()
                    .map_or((config.default_model.clone(), false), |b| (b.model.clone(), b.use_reasoning));
                let prompt_on = c.system_prompt_enabled.unwrap_or(true) && !c.system_prompt.trim().is_empty();
                // As in vLLM Semantic Router: a threshold of 0 turns detection off.
                let pii_threshold = match c.pii_enabled {
                    Some(false) => None,
                    Some(true) => Some(c.pii_threshold.unwrap_or(global_pii)),
                    None => Some(c.pii_threshold.unwrap_or(global_pii)).filter(|t| *t > 0.0),
                };
                RoutedCategory {
                    name: c.name.clone(),
                    vectors,
                    model,
                    use_reasoning,
                    system_prompt: prompt_on.then(|| (c.system_prompt.clone(), c.system_prompt_mode())),
                    jailbreak_enabled: config.prompt_guard.enabled && c.jailbreak_enabled.unwrap_or(true),
                    jailbreak_threshold: c.jailbreak_threshold,
                    pii_threshold,
                    labels: c.mmlu_categories.clone(),
                    ranked,
                }
            })
            .collect();
        Self {
            categories,
            threshold: cm.threshold,
            default_model: config.default_model.clone(),
            context_weight: cm.context_weight,
            models: config.model_config.clone(),
            families: config.reasoning_families.clone(),
            default_effort: config
                .default_reasoning_effort
                .clone()
                .unwrap_or_else(|| DEFAULT_REASONING_EFFORT.into()),
            guard_enabled: config.prompt_guard.enabled,
            guard_threshold: config.prompt_guard.threshold,
            pii_threshold: Some(global_pii).filter(|t| *t > 0.0),
            policy: config.policy.clone(),
            candidates,
            v03: config.v03,
        }
    }

    /// Whether PII detection runs for any route (the service skips the detectors otherwise).
    pub fn pii_active(&self) -> bool {
        if self.v03 {
            return self.policy.uses(route_policy::SignalKind::Pii);
        }
        self.pii_threshold.is_some() || self.categories.iter().any(|c| c.pii_threshold.is_some())
    }

    /// The prompt vector: the text embedding, mixed with the context embedding when there is
    /// one (`(1 - w) * text + w * context`, renormalised).
    pub fn prompt_vector(&self, text: &[f32], context: Option<&[f32]>) -> Vec<f32> {
        match context {
            Some(ctx) if self.context_weight > 0.0 => {
                let w = self.context_weight;
                let mut v: Vec<f32> = text.iter().zip(ctx).map(|(t, c)| (1.0 - w) * t + w * c).collect();
                normalize(&mut v);
                v
            }
            _ => text.to_vec(),
        }
    }

    /// Scores of every category, best first.
    pub fn scores(&self, prompt: &[f32]) -> Vec<(usize, f32)> {
        let mut s: Vec<(usize, f32)> = self
            .categories
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let best = c.vectors.iter().map(|v| dot(prompt, v)).fold(f32::MIN, f32::max);
                (i, best)
            })
            .collect();
        s.sort_by(|a, b| b.1.total_cmp(&a.1));
        s
    }

    /// Category scores from a head's label probabilities, best first. Labels are matched to
    /// category names case-insensitively (`computer science` = `computer_science`); categories
    /// the head does not know score 0.
    pub fn head_scores(&self, probs: &[(String, f32)]) -> Vec<(usize, f32)> {
        let key = |s: &str| s.to_lowercase().replace(['_', '-'], " ");
        let mut s: Vec<(usize, f32)> = self
            .categories
            .iter()
            .enumerate()
            .map(|(i, c)| {
                // A category with MMLU names gathers the probabilities of those labels.
                let p = if c.labels.is_empty() {
                    probs.iter().find(|(l, _)| key(l) == key(&c.name)).map_or(0.0, |(_, p)| *p)
                } else {
                    probs.iter().filter(|(l, _)| c.labels.iter().any(|m| key(m) == key(l))).map(|(_, p)| *p).sum()
                };
                (i, p)
            })
            .collect();
        s.sort_by(|a, b| b.1.total_cmp(&a.1));
        s
    }

    /// The routing decision for a prompt vector, without guard or PII signals.
    pub fn decide(&self, prompt: &[f32]) -> Decision {
        self.decide_with(prompt, &Signals::default())
    }

    /// The reasoning setting of `model` in the way its family expects; `None` when the model
    /// has no reasoning family (nothing to switch).
    pub fn reasoning_for(&self, model: &str, score: Option<&ModelScore>) -> Option<Reasoning> {
        self.reasoning_of(model, score.is_some_and(|s| s.use_reasoning), score.and_then(|s| s.reasoning_effort.as_deref()))
    }

    /// [`Router::reasoning_for`] from a switch and an optional effort.
    pub fn reasoning_of(&self, model: &str, enabled: bool, effort: Option<&str>) -> Option<Reasoning> {
        let family = self.models.get(model)?.reasoning_family.as_ref()?;
        let f = self.families.get(family)?;
        Some(if f.kind == FAMILY_CHAT_TEMPLATE_KWARGS {
            Reasoning { enabled, chat_template_kwarg: f.parameter.clone(), effort: String::new() }
        } else {
            let effort = if enabled {
                effort.map(str::to_string).unwrap_or_else(|| self.default_effort.clone())
            } else {
                String::new()
            };
            Reasoning { enabled, chat_template_kwarg: String::new(), effort }
        })
    }

    /// PII types in `detected` that `model` may not receive (vLLM Semantic Router semantics: a
    /// model absent from `model_config`, or with `allow_by_default`, receives everything).
    pub fn denied_pii<'a>(&self, model: &str, detected: &[&'a str]) -> Vec<&'a str> {
        match self.models.get(model) {
            Some(p) if !p.pii_policy.allow_by_default => detected
                .iter()
                .copied()
                .filter(|t| *t != "NO_PII" && !p.pii_policy.pii_types_allowed.iter().any(|a| a == t))
                .collect(),
            _ => Vec::new(),
        }
    }

    /// The full decision: category, the policy's decision over the signals, guard verdict,
    /// PII policy, reasoning and system prompt.
    pub fn decide_with(&self, prompt: &[f32], signals: &Signals) -> Decision {
        self.decide_timed(prompt, signals, &mut |_, _| {}).decision
    }

    /// [`Router::decide_with`] with the matched decision's cache action, reporting the time each
    /// signal family of the policy took.
    pub fn decide_timed(
        &self,
        prompt: &[f32],
        signals: &Signals,
        timed: &mut dyn FnMut(route_policy::SignalKind, std::time::Duration),
    ) -> Routed {
        let scores = match &signals.category_probabilities {
            Some(probs) => self.head_scores(probs),
            None => self.scores(prompt),
        };
        let top = scores.first().copied();
        let mut d = Decision {
            scores: scores
                .iter()
                .map(|&(i, s)| CategoryScore { category: self.categories[i].name.clone(), score: s })
                .collect(),
            ..Default::default()
        };
        let cat = match top {
            Some((i, s)) if s >= self.threshold => Some((&self.categories[i], s.clamp(0.0, 1.0))),
            _ => None,
        };
        if let Some((c, _)) = cat {
            d.category = c.name.clone();
        }

        // The policy: every signal once, then the winning decision.
        let guard_threshold = |g: &GuardScore| self.guard_threshold.or(g.head_threshold).unwrap_or(DEFAULT_GUARD_THRESHOLD);
        let input = route_policy::Input {
            text: &signals.text,
            tokens: signals.tokens,
            domain: cat.map(|(c, s)| (c.name.as_str(), s)),
            embedding: Some(prompt),
            jailbreak: signals.jailbreak.as_ref().map(|g| (g.probability, guard_threshold(g))),
            pii: &signals.pii,
        };
        let (matched, selection) = route_policy::eval::evaluate_timed(&self.policy, &self.candidates, &input, timed);
        d.matched_signals = matched.names();
        let chosen = selection.map(|s| (&self.policy.decisions[s.decision], s.confidence));
        let cache = chosen.and_then(|(spec, _)| spec.actions.response_cache);
        let mut model_ref: Option<&route_policy::ModelRef> = None;
        match chosen {
            Some((spec, confidence)) => {
                // Typed: the filter renders x-vsr-selected-decision from it.
                d.decision = spec.name.clone();
                model_ref = spec.selected_ref();
                d.selected_model = model_ref.map_or_else(|| self.default_model.clone(), |m| m.wire_name().to_string());
                d.confidence = if self.v03 { confidence } else { cat.map_or(confidence, |(_, s)| s) };
                d.set_reason(if self.v03 { Reason::Decision } else { Reason::Category });
            }
            None => {
                d.selected_model = self.default_model.clone();
                d.confidence = top.map(|(_, s)| s.clamp(0.0, 1.0)).unwrap_or(0.0);
                d.set_reason(if self.v03 && cat.is_some() { Reason::NoDecisionMatched } else { Reason::LowConfidence });
            }
        }
        if self.v03 {
            if let Some(g) = &signals.jailbreak {
                // Reported (debug headers, logs); flagged when a jailbreak signal matched.
                let flagged = self.policy.jailbreaks.iter().any(|j| matched.get(route_policy::SignalKind::Jailbreak, &j.name).is_some());
                d.jailbreak = Some(GuardVerdict { flagged, label: g.label.clone(), confidence: g.probability });
            }
        }
        // The decision's plugins.
        let actions = chosen.map(|(spec, _)| &spec.actions);
        if let Some(a) = actions {
            if let Some(h) = &a.header_mutation {
                let pairs = |v: &[(String, String)]| v.iter().map(|(n, v)| header(n, v.clone())).collect();
                d.header_mutation = Some(HeaderMutation {
                    add: pairs(&h.add),
                    set: pairs(&h.update),
                    remove: h.delete.clone(),
                });
            }
            if let Some(r) = &a.request_params {
                d.request_params = Some(RequestParams {
                    blocked_params: r.blocked_params.clone(),
                    max_tokens: r.max_tokens_limit,
                    max_n: r.max_n,
                });
            }
            if let Some(message) = &a.fast_response {
                d.local_reply = Some(LocalReply { message: message.clone() });
                d.set_reason(Reason::FastResponse);
                return Routed { decision: d, cache };
            }
        }
        // A v0.3 policy treats jailbreak and PII as signals only: decisions act on them.
        if self.v03 {
            self.finish(&mut d, model_ref.map(|m| (m.model.as_str(), m)), actions);
            return Routed { decision: d, cache };
        }
        let cat = cat.map(|(c, _)| c);

        // Jailbreak guard: global switch, then the category's override.
        if let Some(g) = &signals.jailbreak {
            let enabled = cat.map_or(self.guard_enabled, |c| c.jailbreak_enabled);
            if enabled {
                let threshold = cat
                    .and_then(|c| c.jailbreak_threshold)
                    .or(self.guard_threshold)
                    .or(g.head_threshold)
                    .unwrap_or(DEFAULT_GUARD_THRESHOLD);
                let flagged = g.probability >= threshold;
                d.jailbreak = Some(GuardVerdict { flagged, label: g.label.clone(), confidence: g.probability });
                if flagged {
                    d.set_reason(Reason::JailbreakBlocked);
                    d.block = Some(Block {
                        status: BLOCK_STATUS,
                        r#type: BLOCK_TYPE.into(),
                        code: CODE_JAILBREAK.into(),
                        // The guard is trained on jailbreak techniques and on direct requests for
                        // disallowed content alike (router-train/train-sets): the message names both.
                        message: format!(
                            "This request was blocked: it appears to contain a jailbreak attempt or a request for disallowed content (type: {}, confidence: {:.3}).",
                            g.label, g.probability
                        ),
                    });
                    return Routed { decision: d, cache };
                }
            }
        }

        // PII policy of the selected model; for a category route, the decision's other models
        // and then the default model are tried before blocking.
        let pii_threshold = match cat {
            Some(c) => c.pii_threshold,
            None => self.pii_threshold,
        };
        let refs: &[route_policy::ModelRef] = chosen.map_or(&[], |(spec, _)| spec.model_refs.as_slice());
        if let Some(t) = pii_threshold {
            let mut detected: Vec<&str> =
                signals.pii.iter().filter(|(_, conf)| *conf >= t).map(|(k, _)| *k).collect();
            detected.sort_unstable();
            detected.dedup();
            if !detected.is_empty() {
                let denied = self.denied_pii(&d.selected_model, &detected);
                if !denied.is_empty() {
                    let alternative = cat.and_then(|_| {
                        refs.iter()
                            .find(|m| self.denied_pii(m.wire_name(), &detected).is_empty())
                            .map(|m| (m.wire_name().to_string(), Some(m)))
                            .or_else(|| {
                                self.denied_pii(&self.default_model, &detected)
                                    .is_empty()
                                    .then(|| (self.default_model.clone(), None))
                            })
                    });
                    match alternative {
                        Some((m, r)) => {
                            d.selected_model = m;
                            model_ref = r;
                            d.set_reason(Reason::PiiPolicyAlternative);
                            d.pii = Some(PiiVerdict {
                                violation: false,
                                types: detected.iter().map(|t| t.to_string()).collect(),
                            });
                        }
                        None => {
                            d.set_reason(Reason::PiiPolicyViolation);
                            d.block = Some(Block {
                                status: BLOCK_STATUS,
                                r#type: BLOCK_TYPE.into(),
                                code: CODE_PII.into(),
                                message: format!(
                                    "This request contains personal information ({}) that the model '{}' may not receive under the configured privacy policy; remove it and try again.",
                                    denied.join(", "),
                                    d.selected_model
                                ),
                            });
                            d.pii = Some(PiiVerdict { violation: true, types: denied.iter().map(|t| t.to_string()).collect() });
                            return Routed { decision: d, cache };
                        }
                    }
                }
            }
        }

        // Reasoning and system prompt of the category route (the default route leaves the
        // request's reasoning and system messages to the model's defaults).
        if cat.is_some() && chosen.is_some() {
            let selected = d.selected_model.clone();
            // The default model taken as a PII alternative reasons as if it had no score.
            let r = model_ref.filter(|m| m.wire_name() == selected);
            self.finish(&mut d, Some((selected.as_str(), r.unwrap_or(&route_policy::ModelRef::default()))), actions);
        }
        Routed { decision: d, cache }
    }

    /// Reasoning and system prompt of the chosen model reference and decision.
    fn finish(&self, d: &mut Decision, model: Option<(&str, &route_policy::ModelRef)>, actions: Option<&route_policy::model::Actions>) {
        if let Some((name, r)) = model {
            d.reasoning = self.reasoning_of(name, r.use_reasoning, r.reasoning_effort.as_deref());
        }
        if let Some(sp) = actions.and_then(|a| a.system_prompt.as_ref()) {
            d.system_prompt = Some(SystemPrompt {
                text: sp.text.clone(),
                mode: match sp.mode {
                    route_policy::model::SystemPromptMode::Insert => system_prompt::Mode::Insert,
                    route_policy::model::SystemPromptMode::Replace => system_prompt::Mode::Replace,
                } as i32,
            });
        }
    }
}
