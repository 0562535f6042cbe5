//! Routing policy: embedding similarity to categories, then the category's best model.
//!
//! Category vectors are computed once at start from each category's description and examples.
//! By default a category is represented by its centroid (the normalised mean of those
//! embeddings): one dot product per category, and a single off-topic example cannot capture
//! prompts on its own. `matching: max_similarity` compares with every example instead.

use router_proto::v1::{CategoryScore, Decision, Header};

use crate::config::{Config, Matching};

/// Headers the filter adds upstream (names as in vLLM Semantic Router).
pub const HEADER_CATEGORY: &str = "x-vsr-selected-category";
pub const HEADER_REASONING: &str = "x-vsr-selected-reasoning";
pub const HEADER_MODEL: &str = "x-vsr-selected-model";

pub const REASON_CATEGORY: &str = "category";
pub const REASON_BELOW_THRESHOLD: &str = "below_threshold";

#[derive(Debug, Clone)]
pub struct RoutedCategory {
    pub name: String,
    /// Unit vectors this category is compared with (one centroid, or every example).
    pub vectors: Vec<Vec<f32>>,
    /// Highest-scoring model (first listed on ties) and whether it should reason.
    pub model: String,
    pub use_reasoning: bool,
}

#[derive(Debug, Clone)]
pub struct Router {
    pub categories: Vec<RoutedCategory>,
    pub threshold: f32,
    pub default_model: String,
    pub context_weight: f32,
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

impl Router {
    /// The texts to embed for each category (description first, when present).
    pub fn category_texts(config: &Config) -> Vec<Vec<String>> {
        config
            .categories
            .iter()
            .map(|c| {
                let mut t = Vec::new();
                if !c.description.trim().is_empty() {
                    t.push(c.description.clone());
                }
                t.extend(c.examples.iter().cloned());
                t
            })
            .collect()
    }

    /// Builds the router from the config and the embeddings of [`Router::category_texts`].
    pub fn new(config: &Config, embeddings: Vec<Vec<Vec<f32>>>) -> Self {
        let cm = &config.classifier.category_model;
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
                // Highest score wins; the first listed wins a tie.
                let best = c
                    .model_scores
                    .iter()
                    .fold(None::<&crate::config::ModelScore>, |best, ms| match best {
                        Some(b) if b.score >= ms.score => Some(b),
                        _ => Some(ms),
                    })
                    .expect("validated: model_scores is not empty");
                RoutedCategory {
                    name: c.name.clone(),
                    vectors,
                    model: best.model.clone(),
                    use_reasoning: best.use_reasoning,
                }
            })
            .collect();
        Self {
            categories,
            threshold: cm.threshold,
            default_model: config.default_model.clone(),
            context_weight: cm.context_weight,
        }
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

    /// The routing decision for a prompt vector.
    pub fn decide(&self, prompt: &[f32]) -> Decision {
        let scores = self.scores(prompt);
        let top = scores.first().copied();
        let mut d = Decision {
            scores: scores
                .iter()
                .map(|&(i, s)| CategoryScore {
                    category: self.categories[i].name.clone(),
                    score: s,
                })
                .collect(),
            ..Default::default()
        };
        match top {
            Some((i, s)) if s >= self.threshold => {
                let c = &self.categories[i];
                d.selected_model = c.model.clone();
                d.category = c.name.clone();
                d.confidence = s.clamp(0.0, 1.0);
                d.reason = REASON_CATEGORY.into();
                d.headers = vec![
                    Header { name: HEADER_CATEGORY.into(), value: c.name.clone() },
                    Header {
                        name: HEADER_REASONING.into(),
                        value: if c.use_reasoning { "on" } else { "off" }.into(),
                    },
                ];
            }
            other => {
                d.selected_model = self.default_model.clone();
                d.confidence = other.map(|(_, s)| s.clamp(0.0, 1.0)).unwrap_or(0.0);
                d.reason = REASON_BELOW_THRESHOLD.into();
            }
        }
        d.headers.push(Header { name: HEADER_MODEL.into(), value: d.selected_model.clone() });
        d
    }
}
