//! The engine: every model loaded once at start (the embedding encoder behind its batcher, the
//! category model or head, the guard, the PII tagger), the routing policy in force as one
//! snapshot swapped whole on a reload, and the request path from a `ClassifyRequest` to its
//! `Decision` (model passes here, the policy's pure logic in [`crate::policy`]).

use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use burn::tensor::backend::Backend;
use crate::cache::layer::CacheLayer;
use router_proto::v1::{ClassifyRequest, Decision, Turn};
use tracing::{info, info_span, warn, Instrument};

use crate::batcher::{BatchError, BatchSettings, Batcher};
use crate::config::{Config, Device};
use crate::metrics::Metrics;
use crate::model::shared::{Encoded, SharedPass};
use crate::model::{LoadOptions, Model};
use crate::guard::JailbreakDetector;
use crate::policy::{Router, Signals};

/// Printed (at info level) once the models are loaded and warm and health reports SERVING.
pub const SERVING_LOG: &str = "classifier-svc SERVING";

/// Most texts one `Embed` call may carry.
pub const MAX_EMBED_TEXTS: usize = 256;

/// A fine-tuned sequence classifier on its own batching worker (text → class probabilities)
/// and its labels by class index.
pub struct SequenceClassifier {
    pub batcher: Batcher<Vec<f32>>,
    pub labels: Vec<String>,
    /// A guard's own threshold, chosen when it was trained (`calibration.threshold`).
    pub threshold: Option<f32>,
}

/// A fine-tuned sequence classifier that shares the embedding model's lower layers: its top
/// layers and head are a branch of the embedding pass ([`SharedPass`]), no pass of its own.
pub struct BranchClassifier {
    /// Its index among the pass's branches.
    pub branch: usize,
    pub labels: Vec<String>,
    /// Logits are divided by it before the softmax (`calibration.temperature`).
    pub temperature: f32,
    /// A guard's own threshold, chosen when it was trained (`calibration.threshold`).
    pub threshold: Option<f32>,
}

impl BranchClassifier {
    /// Calibrated class probabilities of one text's pass.
    pub fn probabilities(&self, encoded: &Encoded) -> Vec<f32> {
        crate::guard::calibrated(&encoded.logits[self.branch], self.temperature)
    }
}

/// A classifier the request path asks for class probabilities, of the kind its directory
/// holds, decided once at load: a head over the shared sentence embedding (no encoder work of
/// its own), a fine-tuned classifier that branches off the embedding pass (its own top layers
/// only), or a fine-tuned sequence classifier on its own batching worker (a whole pass).
pub enum Classifier<H: ?Sized> {
    Head(Arc<H>),
    Branch(BranchClassifier),
    Sequence(SequenceClassifier),
}

/// The two kinds a fine-tuned classifier's directory can load as (decided before the head
/// fallback, which is typed per role).
enum FineTuned {
    Branch(BranchClassifier),
    Sequence(SequenceClassifier),
}

impl<H: ?Sized> From<FineTuned> for Classifier<H> {
    fn from(f: FineTuned) -> Self {
        match f {
            FineTuned::Branch(b) => Classifier::Branch(b),
            FineTuned::Sequence(s) => Classifier::Sequence(s),
        }
    }
}

/// The routing policy and the config it was built from, swapped together on a reload so a
/// request never sees one without the other.
pub struct Snapshot {
    pub router: Router,
    pub config: Config,
}

/// Loaded model behind the batcher, the routing policy (swapped whole on a config reload)
/// and the jailbreak guard.
pub struct Engine {
    /// The embedding pass, with the branches of the classifiers that share its lower layers.
    pub batcher: Batcher<Encoded>,
    /// The policy in force; readers take the `Arc` and let go of the lock at once.
    policy: RwLock<Arc<Snapshot>>,
    /// The config the engine was built from: restart-only settings keep these values.
    pub started_with: Arc<Config>,
    pub dim: usize,
    /// The jailbreak guard; `None`: not configured.
    pub guard: Option<Classifier<dyn JailbreakDetector>>,
    /// The semantic cache. Built at start whatever the switches (empty, it costs nothing), so a
    /// reload that turns the cache on, globally or for one decision, applies without a restart;
    /// whether a request uses it is [`crate::cache::layer::bypass_reason`].
    pub cache: Arc<CacheLayer>,
    /// The category classifier; `None`: categories are matched by embedding similarity.
    pub category: Option<Classifier<crate::category_head::CategoryHead>>,
    /// The category classifier also classifies the earlier turns (it knows `no_topic`, so a
    /// topic-free follow-up keeps the conversation's category); decided at load.
    pub category_reads_context: bool,
    /// The PII token classifier, batched on its own worker; `None`: detectors only.
    pub pii_tagger: Option<Batcher<Vec<crate::pii::PiiMatch>>>,
    pub metrics: Arc<Metrics>,
}

impl Engine {
    /// Loads the embedding model on the configured device, embeds the category examples,
    /// warms the configured shape buckets and starts the batching worker. Blocking.
    pub fn build(config: &Config, metrics: Arc<Metrics>) -> Result<Self> {
        match config.bert_model.device {
            Device::Cpu => Self::build_on::<crate::CpuBackend>(config, Default::default(), metrics),
            #[cfg(feature = "cuda")]
            Device::Cuda => {
                crate::gpu::probe()?;
                crate::gpu::configure_cubecl();
                Self::build_on::<burn::backend::Cuda>(config, Default::default(), metrics)
            }
            #[cfg(not(feature = "cuda"))]
            Device::Cuda => anyhow::bail!(
                "bert_model.device: cuda requested but this binary was built without the `cuda` feature"
            ),
        }
    }

    fn build_on<B: Backend>(config: &Config, device: B::Device, metrics: Arc<Metrics>) -> Result<Self>
    where
        Model<B>: Send,
    {
        let t = Instant::now();
        let dir = &config.bert_model.model_id;
        // Fine-tuned classifiers (category model, guard): branches of the embedding pass when
        // they share its lower layers, else a pass of their own on their own worker.
        let fine_tuned = [
            ("classifier.category_model.model_id", fine_tuned_dir(config.classifier.category_model.model_id.as_deref())),
            ("prompt_guard.model_id", fine_tuned_dir(config.prompt_guard.model_id.as_deref())),
        ];
        // A guard disabled at start keeps a worker of its own instead: a branch runs on every
        // pass, a worker only while the guard is enabled (a reload can enable it).
        let shared: Vec<_> = fine_tuned.iter().enumerate().map(|(i, &(key, dir))| (key, dir.filter(|_| i == 0 || config.prompt_guard.enabled))).collect();
        let (pass, branches) = Self::load_pass::<B>(config, &shared, &device)?;
        info!(model = %dir.display(), device = ?config.bert_model.device, branches = pass.branches(), shared_layers = pass.trunk(), millis = t.elapsed().as_millis() as u64, "model loaded");

        // All category texts in a few batches (one forward per chunk, not per text).
        let texts = Router::category_texts(config);
        let flat: Vec<&str> = texts.iter().flatten().map(|s| s.as_str()).collect();
        let mut vectors = Vec::with_capacity(flat.len());
        for chunk in flat.chunks(config.batching.max_batch_size.max(1)) {
            vectors.extend(pass.model.embed(chunk)?);
        }
        let mut it = vectors.into_iter();
        let embeddings = texts
            .iter()
            .map(|t| it.by_ref().take(t.len()).collect())
            .collect();
        let router = Router::new(config, embeddings);
        let dim = pass.model.hidden_size;
        let guard_head = crate::guard::load(&config.prompt_guard, dim)?;

        // Warm every (batch, sequence) bucket on GPU backends (kernels are compiled per
        // shape); the CPU backend has nothing to warm and pads nothing.
        let batch_buckets = if config.bert_model.device != Device::Cpu {
            crate::gpu::batch_buckets(config.batching.max_batch_size)
        } else {
            Vec::new()
        };
        if !batch_buckets.is_empty() {
            let t = Instant::now();
            let shapes = crate::gpu::warm_up_with(&batch_buckets, &config.server.warmup_seq_lens, |texts| pass.encode(texts).map(|_| ()))?;
            info!(shapes, millis = t.elapsed().as_millis() as u64, "warm-up done");
        }

        let settings = BatchSettings {
            max_batch_size: config.batching.max_batch_size,
            max_wait: Duration::from_micros(config.batching.max_wait_micros),
            queue_capacity: config.batching.queue_capacity,
        };
        let pii_tagger = Self::load_pii_tagger::<B>(config, &device, &settings)?;
        // One kind each, decided here: a branch of the embedding pass, a fine-tuned sequence
        // classifier on its own worker, or a head over the sentence embedding.
        let [category_model, guard_model] = [0, 1].map(|i| -> Result<Option<FineTuned>> {
            let (key, dir) = fine_tuned[i];
            let Some(dir) = dir else { return Ok(None) };
            let crate::category_head::Calibration { temperature, threshold } = crate::category_head::calibration_of(dir).with_context(|| key.to_string())?;
            Ok(Some(match &branches[i] {
                Some((branch, labels)) => {
                    info!(model = %dir.display(), key, labels = ?labels, temperature, threshold, shared_layers = pass.trunk(), "fine-tuned classifier runs as a branch of the embedding pass");
                    FineTuned::Branch(BranchClassifier { branch: *branch, labels: labels.clone(), temperature, threshold })
                }
                None => FineTuned::Sequence(Self::load_sequence_classifier::<B>(key, dir, config, &device, &settings, &batch_buckets, temperature, threshold)?),
            }))
        });
        let (category_model, guard_model) = (category_model?, guard_model?);
        if let Some(FineTuned::Branch(BranchClassifier { labels, .. }) | FineTuned::Sequence(SequenceClassifier { labels, .. })) = &guard_model {
            crate::guard::positive_labels(labels, None).context("prompt_guard.model_id")?;
        }
        let guard = match guard_model {
            Some(f) => Some(f.into()),
            None => guard_head.map(|g| Classifier::Head(Arc::new(g) as Arc<dyn JailbreakDetector>)),
        };
        let category = match category_model {
            Some(f) => Some(f.into()),
            None => crate::category_head::load(config.classifier.category_model.model_id.as_deref(), dim)?.map(|h| Classifier::Head(Arc::new(h))),
        };
        let category_reads_context = match &category {
            Some(Classifier::Head(h)) => h.uses_context(),
            Some(Classifier::Branch(BranchClassifier { labels, .. }) | Classifier::Sequence(SequenceClassifier { labels, .. })) => {
                labels.iter().any(|l| l == crate::category_head::NO_TOPIC)
            }
            None => false,
        };
        metrics.guard_configured.set(guard.is_some() as i64);
        let mut passes = vec![pass];
        for _ in 1..config.batching.workers {
            let (mut copy, _) = Self::load_pass::<B>(config, &shared, &device)?;
            copy.model.seq_buckets = passes[0].model.seq_buckets.clone();
            passes.push(copy);
        }
        let workers = passes
            .into_iter()
            .map(|pass| {
                let buckets = batch_buckets.clone();
                move |texts: &[String]| crate::gpu::run_bucketed(texts, &buckets, |padded| pass.encode(padded))
            })
            .collect();
        let batcher = Batcher::start_pool(workers, settings, metrics.clone());
        Ok(Self {
            batcher,
            policy: RwLock::new(Arc::new(Snapshot { router, config: config.clone() })),
            started_with: Arc::new(config.clone()),
            dim,
            guard,
            cache: Arc::new(CacheLayer::new(&config.semantic_cache, metrics.clone())),
            category,
            category_reads_context,
            pii_tagger,
            metrics,
        })
    }

    /// The embedding model of `bert_model.model_id` with, as branches, the `fine_tuned`
    /// classifiers (config key, directory) that share its tokenizer and lower layers; per
    /// classifier, its branch index and labels, or `None` (it needs a pass of its own).
    fn load_pass<B: Backend>(
        config: &Config,
        fine_tuned: &[(&str, Option<&std::path::Path>)],
        device: &B::Device,
    ) -> Result<(SharedPass<B>, Vec<Option<(usize, Vec<String>)>>)> {
        let dir = &config.bert_model.model_id;
        let opts = LoadOptions { max_len: Some(config.bert_model.max_seq_len), task: Some(crate::model::Task::Embedding) };
        let mut model = Model::<B>::load(dir, &opts, device).with_context(|| format!("bert_model.model_id: loading {}", dir.display()))?;
        if config.bert_model.device != Device::Cpu {
            model.seq_buckets = config.server.warmup_seq_lens.clone();
        }
        let mut pass = SharedPass::new(model);
        let tokenizer = |d: &std::path::Path| std::fs::read(d.join("tokenizer.json")).ok();
        let mut branches = Vec::new();
        for &(key, classifier_dir) in fine_tuned {
            let Some(classifier_dir) = classifier_dir.filter(|d| tokenizer(d).is_some() && tokenizer(d) == tokenizer(dir)) else {
                branches.push(None);
                continue;
            };
            let opts = LoadOptions { max_len: opts.max_len, task: Some(crate::model::Task::SequenceClassification) };
            let classifier = Model::<B>::load(classifier_dir, &opts, device).with_context(|| format!("{key}: loading {}", classifier_dir.display()))?;
            let labels = classifier.labels.clone();
            branches.push(pass.add(classifier).ok().map(|(branch, _)| (branch, labels)));
        }
        Ok((pass, branches))
    }

    /// The routing policy and config now in force.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.policy.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The fine-tuned sequence classifier in `dir` (`key` names the config key) on its own
    /// batching worker, answering calibrated class probabilities.
    #[allow(clippy::too_many_arguments)]
    fn load_sequence_classifier<B: Backend>(
        key: &str,
        dir: &std::path::Path,
        config: &Config,
        device: &B::Device,
        settings: &BatchSettings,
        batch_buckets: &[usize],
        temperature: f32,
        threshold: Option<f32>,
    ) -> Result<SequenceClassifier>
    where
        Model<B>: Send,
    {
        let t = Instant::now();
        let opts = LoadOptions { max_len: Some(config.bert_model.max_seq_len), task: Some(crate::model::Task::SequenceClassification) };
        let mut model = Model::<B>::load(dir, &opts, device).with_context(|| format!("{key}: loading {}", dir.display()))?;
        if config.bert_model.device != Device::Cpu {
            model.seq_buckets = config.server.warmup_seq_lens.clone();
            // Every shape once, as for the embedding model: no request pays for compilation.
            crate::gpu::warm_up_with(batch_buckets, &config.server.warmup_seq_lens, |texts| model.classify(texts).map(|_| ()))?;
        }
        let labels = model.labels.clone();
        info!(model = %dir.display(), key, labels = ?labels, temperature, threshold, millis = t.elapsed().as_millis() as u64, "fine-tuned sequence classifier loaded (a pass of its own: it does not share the embedding model's layers)");
        let buckets = batch_buckets.to_vec();
        let classify = move |texts: &[String]| -> Result<Vec<Vec<f32>>> {
            let logits = crate::gpu::run_bucketed(texts, &buckets, |padded| model.classify(padded))?;
            Ok(logits.iter().map(|l| crate::guard::calibrated(l, temperature)).collect())
        };
        Ok(SequenceClassifier { batcher: Batcher::start(classify, settings.clone(), Arc::new(())), labels, threshold })
    }

    /// The PII token classifier of `classifier.pii_model.model_id` on its own batching worker
    /// (it runs while the embedding model does), or `None` when none is configured or found.
    fn load_pii_tagger<B: Backend>(
        config: &Config,
        device: &B::Device,
        settings: &BatchSettings,
    ) -> Result<Option<Batcher<Vec<crate::pii::PiiMatch>>>>
    where
        Model<B>: Send,
    {
        let Some(dir) = config.classifier.pii_model.model_id.as_deref() else { return Ok(None) };
        if !dir.exists() {
            warn!(model = %dir.display(), "classifier.pii_model.model_id: not found (`just pii-model` converts the default); structured-PII detectors only");
            return Ok(None);
        }
        let t = Instant::now();
        let mut tagger = crate::pii_model::PiiTagger::<B>::load(dir, device)
            .with_context(|| format!("classifier.pii_model.model_id: loading {}", dir.display()))?;
        if config.bert_model.device != Device::Cpu {
            // Windows are at most WINDOW_BYTES long: 256 tokens hold any of them.
            let mut seq = config.server.warmup_seq_lens.clone();
            seq.push(256);
            tagger = tagger.with_buckets(crate::gpu::batch_buckets(settings.max_batch_size), seq);
        }
        info!(model = %dir.display(), millis = t.elapsed().as_millis() as u64, "PII model loaded");
        Ok(Some(Batcher::start(move |texts: &[String]| tagger.tag(texts), settings.clone(), Arc::new(()))))
    }

    /// Swaps in the policy of `config` (category vectors are embedded through the batcher, so
    /// requests keep being served meanwhile). Settings that need a restart are not applied
    /// (the reloader reports them). On error the policy in force is unchanged.
    pub async fn reload(&self, config: Config) -> Result<()> {
        let texts = Router::category_texts(&config);
        let flat: Vec<String> = texts.iter().flatten().cloned().collect();
        let mut vectors = Vec::with_capacity(flat.len());
        for chunk in flat.chunks(64) {
            vectors.extend(self.embed(chunk.to_vec()).await.map_err(|e| anyhow::anyhow!("embedding the categories: {e}"))?);
        }
        let mut it = vectors.into_iter();
        let embeddings = texts.iter().map(|t| it.by_ref().take(t.len()).collect()).collect();
        let router = Router::new(&config, embeddings);
        if config.prompt_guard.enabled && self.guard.is_none() {
            warn!("config reload: prompt_guard.enabled but no guard model is loaded; jailbreak guard not configured");
        }
        *self.policy.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(Snapshot { router, config });
        Ok(())
    }

    /// Sentence embeddings of `texts` (the `Embed` RPC, category examples). The branches run
    /// too: the pass is one, whoever asks.
    pub async fn embed(&self, texts: Vec<String>) -> Result<Vec<Vec<f32>>, BatchError> {
        Ok(self.batcher.embed(texts).await?.into_iter().map(|e| e.embedding).collect())
    }

    /// The decision for one request.
    pub async fn classify(&self, req: &ClassifyRequest) -> Result<Decision, BatchError> {
        self.classify_observed(req).await.map(|(d, _)| d)
    }

    /// The decision and the PII types detected (for metrics), with per-stage timings.
    pub async fn classify_observed(&self, req: &ClassifyRequest) -> Result<(Decision, Vec<&'static str>), BatchError> {
        let t = Instant::now();
        // One snapshot for the whole request: a reload midway cannot mix two policies.
        let snapshot = self.snapshot();
        let (router, config) = (&snapshot.router, &snapshot.config);
        let stage = |name: &str, since: Instant| {
            self.metrics.stage_seconds.with_label_values(&[name]).observe(since.elapsed().as_secs_f64());
        };
        // The earlier turns as one text, built once for the embedding and the category model.
        let context = (!req.context.is_empty()).then(|| context_text(&req.context));
        let mut texts = vec![req.text.clone()];
        // Earlier turns are encoded when they mix into the prompt vector, or when the category
        // head or branch classifies them for topic-free follow-ups.
        let pass_reads_context = matches!(self.category, Some(Classifier::Head(_) | Classifier::Branch(_))) && self.category_reads_context;
        if let Some(c) = context.as_ref().filter(|_| router.context_weight > 0.0 || pass_reads_context) {
            texts.push(c.clone());
        }
        // The PII model reads the whole conversation (PII in an earlier turn reaches the model
        // too), in windows, on its own worker while the embedding runs.
        let pii_windows: Vec<String> = match &self.pii_tagger {
            Some(_) if router.pii_active() => std::iter::once(req.text.as_str())
                .chain(req.context.iter().map(|t| t.content.as_str()))
                .flat_map(crate::pii_model::windows)
                .map(|(_, w)| w.to_string())
                .collect(),
            _ => Vec::new(),
        };
        let s = Instant::now();
        let tagged = async {
            match &self.pii_tagger {
                Some(tagger) if !pii_windows.is_empty() => {
                    let s = Instant::now();
                    let r = tagger.embed(pii_windows).instrument(info_span!("pii_model")).await;
                    stage("pii_model", s);
                    Some(r)
                }
                _ => None,
            }
        };
        let categorized = async {
            let Some(Classifier::Sequence(SequenceClassifier { batcher: model, labels, .. })) = &self.category else { return None };
            let s = Instant::now();
            // A model that knows `no_topic` classifies the earlier turns too, in the same batch.
            let mut texts = vec![req.text.clone()];
            if let Some(c) = context.as_ref().filter(|_| self.category_reads_context) {
                texts.push(c.clone());
            }
            let r = model.embed(texts).instrument(info_span!("category_model")).await;
            stage("category_model", s);
            Some(r.map(|p| crate::category_head::categorize_probabilities(labels, &p[0], p.get(1).map(|c| c.as_slice()))))
        };
        let guarded = async {
            let Some(Classifier::Sequence(SequenceClassifier { batcher: model, labels, threshold })) = &self.guard else { return None };
            if !config.prompt_guard.enabled {
                return None;
            }
            let s = Instant::now();
            let r = model.embed(vec![req.text.clone()]).instrument(info_span!("guard_model")).await;
            stage("guard", s);
            Some(r.map_err(anyhow::Error::from).and_then(|mut p| crate::guard::score_of(labels, &p.remove(0), *threshold)))
        };
        let (encoded, tagged, categorized, guarded) =
            tokio::join!(self.batcher.embed(texts).instrument(info_span!("embed")), tagged, categorized, guarded);
        let encoded = encoded?;
        stage("embed", s);
        let embs: Vec<&[f32]> = encoded.iter().map(|e| e.embedding.as_slice()).collect();

        let mut signals = Signals::default();
        // What the policy's text signals read (keyword, structure, language, context size).
        signals.text = req.text.clone();
        // The filter sends the conversation's size before it cut the texts to its limit.
        signals.tokens = if req.conversation_bytes > 0 {
            req.conversation_bytes.div_ceil(4)
        } else {
            route_policy::eval::estimate_tokens(&req.text)
                + req.context.iter().map(|t| route_policy::eval::estimate_tokens(&t.content)).sum::<u64>()
        };
        match guarded {
            Some(Ok(score)) => signals.jailbreak = Some(score),
            // A broken guard must not take routing down with it; it is logged and counted.
            Some(Err(e)) => warn!(request_id = %req.request_id, error = %format!("{e:#}"), "jailbreak guard model failed"),
            None => {}
        }
        if let (Some(Classifier::Branch(g)), true) = (&self.guard, config.prompt_guard.enabled) {
            match crate::guard::score_of(&g.labels, &g.probabilities(&encoded[0]), g.threshold) {
                Ok(score) => signals.jailbreak = Some(score),
                Err(e) => warn!(request_id = %req.request_id, error = %format!("{e:#}"), "jailbreak guard failed"),
            }
        }
        if let Some(Classifier::Head(g)) = &self.guard {
            let s = Instant::now();
            let _span = info_span!("guard").entered();
            match g.score(embs[0]) {
                Ok(score) => signals.jailbreak = Some(score),
                // A broken guard must not take routing down with it; it is logged and counted.
                Err(e) => warn!(request_id = %req.request_id, error = %format!("{e:#}"), "jailbreak guard failed"),
            }
            stage("guard", s);
        }
        let mut pii_types = Vec::new();
        if router.pii_active() {
            let s = Instant::now();
            let _span = info_span!("pii").entered();
            // The whole conversation: PII in an earlier turn reaches the model too.
            for m in crate::pii::detect(&req.text)
                .into_iter()
                .chain(req.context.iter().flat_map(|t| crate::pii::detect(&t.content)))
            {
                signals.pii.push((m.kind, m.confidence));
                pii_types.push(m.kind);
            }
            match tagged {
                Some(Ok(spans)) => {
                    for m in spans.into_iter().flatten() {
                        signals.pii.push((m.kind, m.confidence));
                        pii_types.push(m.kind);
                    }
                }
                // The detectors still ran: a failing model degrades PII detection, not routing.
                Some(Err(e)) => warn!(request_id = %req.request_id, error = %e, "PII model failed; structured detectors only"),
                None => {}
            }
            pii_types.sort_unstable();
            pii_types.dedup();
            stage("pii", s);
        }

        let s = Instant::now();
        let prompt = router.prompt_vector(embs[0], embs.get(1).copied());
        match categorized {
            Some(Ok(p)) => signals.category_probabilities = Some(p),
            Some(Err(e)) => warn!(request_id = %req.request_id, error = %e, "category model failed; using similarity"),
            None => {}
        }
        if let Some(Classifier::Branch(b)) = &self.category {
            let context = encoded.get(1).filter(|_| self.category_reads_context).map(|c| b.probabilities(c));
            signals.category_probabilities =
                Some(crate::category_head::categorize_probabilities(&b.labels, &b.probabilities(&encoded[0]), context.as_deref()));
        }
        if let (Some(Classifier::Head(head)), None) = (&self.category, &signals.category_probabilities) {
            let (text, context) = if head.uses_context() { (embs[0], embs.get(1).copied()) } else { (&prompt[..], None) };
            match head.categorize(text, context) {
                Ok(p) => signals.category_probabilities = Some(p),
                Err(e) => warn!(request_id = %req.request_id, error = %format!("{e:#}"), "category head failed; using similarity"),
            }
        }
        // Per signal family: `signal_<family>` stages (the model passes are their own stages).
        let routed = router.decide_timed(&prompt, &signals, &mut |kind, took| {
            self.metrics.stage_seconds.with_label_values(&[&format!("signal_{}", kind.as_str())]).observe(took.as_secs_f64());
        });
        stage("policy", s);
        let mut d = routed.decision;
        self.cache.apply(req, &prompt, &mut d, routed.cache, config);
        d.processing_micros = t.elapsed().as_micros().min(u32::MAX as u128) as u32;
        Ok((d, pii_types))
    }
}

fn context_text(turns: &[Turn]) -> String {
    crate::category_head::context_text(turns.iter().map(|t| (t.role.as_str(), t.content.as_str())))
}

/// `model_id` when it names an existing fine-tuned sequence classifier (not a head).
fn fine_tuned_dir(model_id: Option<&std::path::Path>) -> Option<&std::path::Path> {
    model_id.filter(|p| !p.as_os_str().is_empty() && p.exists() && crate::category_head::is_sequence_classifier(p))
}
