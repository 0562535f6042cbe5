//! One encoder pass for the embedding model and the classifiers fine-tuned over its frozen
//! lower layers.
//!
//! `router-train finetune-* --train-layers 2` trains a classifier's top layers over MiniLM's
//! frozen lower ones, so a category model and a guard trained that way hold the embedding
//! model's embeddings and lower layers bit for bit. Run separately, each pays for those layers
//! again on every request. Here they run once (the trunk); then the embedding model's own top
//! layers give the sentence embedding and each classifier's top layers and head (a branch)
//! give its logits: the same numbers as separate passes, for the trunk's work once.

use anyhow::{bail, Result};
use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::{backend::Backend, Tensor};

use super::bert::{Bert, BertClassificationHead, BertLayer};
use super::{to_vec, Encoder, Head, Model};

/// What one text gets from a shared pass.
#[derive(Debug, Clone, PartialEq)]
pub struct Encoded {
    /// Mean-pooled, L2-normalised sentence embedding (the embedding model's own).
    pub embedding: Vec<f32>,
    /// Each branch's logits, in the order the branches were added.
    pub logits: Vec<Vec<f32>>,
}

/// A classifier's top layers and head, run from the depth it shares with the embedding model.
struct Branch<B: Backend> {
    /// Index of the first of `layers` in the full stack (the depth shared with the embedding
    /// model; its layers below that are the embedding model's).
    from: usize,
    layers: Vec<BertLayer<B>>,
    head: BertClassificationHead<B>,
}

/// The embedding model and the branches that share its lower layers.
pub struct SharedPass<B: Backend> {
    pub model: Model<B>,
    /// Layers run once for the embedding and every branch.
    trunk: usize,
    branches: Vec<Branch<B>>,
}

/// Every float parameter of a module, flattened, in visiting order.
fn parameters<B: Backend, M: Module<B>>(module: &M) -> Vec<Vec<f32>> {
    struct Collect(Vec<Vec<f32>>);
    impl<B: Backend> ModuleVisitor<B> for Collect {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            self.0.push(to_vec(param.val()).unwrap_or_default());
        }
    }
    let mut c = Collect(Vec::new());
    module.visit(&mut c);
    c.0
}

/// How many layers from the bottom two BERT encoders have in common, bit for bit (0 when even
/// their embeddings differ, or their shapes do).
pub fn shared_depth<B: Backend>(a: &Bert<B>, b: &Bert<B>) -> usize {
    if parameters(&a.embeddings) != parameters(&b.embeddings) {
        return 0;
    }
    a.layers
        .iter()
        .zip(&b.layers)
        .take_while(|(x, y)| x.n_heads == y.n_heads && parameters(*x) == parameters(*y))
        .count()
}

impl<B: Backend> SharedPass<B> {
    /// The embedding model alone (no branch yet): a plain embedding pass.
    pub fn new(model: Model<B>) -> Self {
        let trunk = match &model.encoder {
            Encoder::Bert(b) => b.layers.len(),
            Encoder::ModernBert(_) => 0,
        };
        Self { model, trunk, branches: Vec::new() }
    }

    /// Layers the trunk runs once per pass.
    pub fn trunk(&self) -> usize {
        self.trunk
    }

    pub fn branches(&self) -> usize {
        self.branches.len()
    }

    /// Adds a fine-tuned BERT sequence classifier as a branch when it shares at least its
    /// embeddings and one layer with the embedding model (same tokenizer and sequence length
    /// are the caller's to check); returns its branch index and the layers shared, or the
    /// model back when it shares none.
    pub fn add(&mut self, classifier: Model<B>) -> std::result::Result<(usize, usize), Model<B>> {
        let depth = match (&self.model.encoder, &classifier.encoder, &classifier.head) {
            (Encoder::Bert(base), Encoder::Bert(other), Head::BertSequence(_))
                if base.layers.len() == other.layers.len() && self.model.hidden_size == classifier.hidden_size =>
            {
                // A classifier that shares every layer still runs its top one (at [CLS] only):
                // its head reads that layer's output there, which the embedding never computes.
                shared_depth(base, other).min(base.layers.len().saturating_sub(1))
            }
            _ => 0,
        };
        if depth == 0 {
            return Err(classifier);
        }
        let Model { encoder: Encoder::Bert(mut bert), head: Head::BertSequence(head), .. } = classifier else {
            unreachable!("checked above")
        };
        let layers = bert.layers.split_off(depth);
        self.trunk = self.trunk.min(depth);
        self.branches.push(Branch { from: depth, layers, head });
        Ok((self.branches.len() - 1, depth))
    }

    /// The embedding and every branch's logits for each text, in one pass.
    pub fn encode<S: AsRef<str>>(&self, texts: &[S]) -> Result<Vec<Encoded>> {
        let model = &self.model;
        let batch = model.batch(&model.tokenize(texts)?);
        let Encoder::Bert(bert) = &model.encoder else {
            if !self.branches.is_empty() {
                bail!("branches need a BERT embedding model");
            }
            let embeddings = model.embed_batch(&batch)?;
            return Ok(embeddings.into_iter().map(|embedding| Encoded { embedding, logits: Vec::new() }).collect());
        };
        let layers = bert.layers.len();
        let bias = batch.padding_bias(&model.device);
        let trunk = bert.forward_layers(bert.embed(batch.ids(&model.device)), 0..self.trunk, bias.clone());
        let mut logits: Vec<Vec<Vec<f32>>> = Vec::with_capacity(self.branches.len());
        for branch in &self.branches {
            // The embedding model's layers up to where this branch's own begin, then its own;
            // its last layer only at [CLS], the one position its head reads.
            let mut x = bert.forward_layers(trunk.clone(), self.trunk..branch.from, bias.clone());
            let (last, below) = branch.layers.split_last().expect("a branch has a layer");
            for layer in below {
                x = layer.forward(x, bias.clone());
            }
            let out = branch.head.forward(last.forward_first(x, bias.clone()));
            let k = out.dims()[1];
            logits.push(to_vec(out)?.chunks_exact(k).map(<[f32]>::to_vec).collect());
        }
        let top = bert.forward_layers(trunk, self.trunk..layers, bias);
        let embeddings = model.pooled_embeddings(top, &batch)?;
        Ok(embeddings
            .into_iter()
            .enumerate()
            .map(|(i, embedding)| Encoded { embedding, logits: logits.iter().map(|l| l[i].clone()).collect() })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{LoadOptions, Task};

    type B = crate::CpuBackend;
    const TEXTS: [&str; 3] = ["What is the integral of x^2?", "hello world", "the history of contract law during the war"];

    fn load(task: Task) -> Model<B> {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/bert-seq");
        Model::load(&dir, &LoadOptions { max_len: None, task: Some(task) }, &Default::default()).unwrap()
    }

    /// The fixture classifier (2 layers) with one layer's feed-forward output scaled: a
    /// fine-tune of that layer.
    fn tuned(layer: usize) -> Model<B> {
        let mut m = load(Task::SequenceClassification);
        let Encoder::Bert(bert) = &mut m.encoder else { unreachable!() };
        let l = &mut bert.layers[layer];
        l.output.weight = l.output.weight.clone().map(|w| w * 1.5);
        m
    }

    fn max_diff(a: &[f32], b: &[f32]) -> f32 {
        assert_eq!(a.len(), b.len());
        a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
    }

    #[test]
    fn branches_give_the_numbers_of_separate_passes() {
        let classifier = tuned(1);
        let alone = classifier.classify(&TEXTS).unwrap();
        let labels = classifier.labels.clone();
        let mut pass = SharedPass::new(load(Task::Embedding));
        let embeddings = pass.model.embed(&TEXTS).unwrap();
        assert_eq!(pass.add(classifier).ok(), Some((0, 1)), "embeddings and layer 0 are shared");
        // The untouched classifier shares both layers; it still runs its top one for [CLS].
        assert_eq!(pass.add(load(Task::SequenceClassification)).ok(), Some((1, 1)));
        assert_eq!(pass.trunk(), 1);
        let encoded = pass.encode(&TEXTS).unwrap();
        let untouched = load(Task::SequenceClassification).classify(&TEXTS).unwrap();
        for (i, e) in encoded.iter().enumerate() {
            assert!(max_diff(&e.embedding, &embeddings[i]) < 1e-5, "embedding of {:?}", TEXTS[i]);
            assert!(max_diff(&e.logits[0], &alone[i]) < 1e-4, "{:?}: {:?} vs {:?}", TEXTS[i], e.logits[0], alone[i]);
            assert!(max_diff(&e.logits[1], &untouched[i]) < 1e-4, "{:?}", TEXTS[i]);
        }
        assert_ne!(encoded[0].logits[0], encoded[0].logits[1], "the tuned layer changes the logits");
        assert_eq!(labels.len(), encoded[0].logits[0].len());
    }

    #[test]
    fn a_classifier_tuned_from_the_bottom_gets_no_branch() {
        let mut pass = SharedPass::new(load(Task::Embedding));
        assert!(pass.add(tuned(0)).is_err(), "layer 0 differs: nothing to share");
        assert_eq!((pass.branches(), pass.trunk()), (0, 2));
    }
}
