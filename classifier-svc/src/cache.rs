//! Semantic cache: answers keyed by the prompt's embedding, scoped by tenant, model and the
//! client's `cache_salt`, so users never see each other's answers.
//!
//! Search is a scan in two stages. Scanning full f32 vectors is memory-bound (100k × 384 × 4 B =
//! 154 MB per lookup, ~18 ms here), so each scope also keeps a 1-bit sign code per vector (48 B at
//! 384 dimensions): a lookup ranks every entry by Hamming distance of the codes (popcount, ~5 MB
//! read at 100k) and re-scores only the nearest [`RERANK`] candidates with the exact cosine. The
//! cache only ever answers near-duplicates (cosine ≥ ~0.9, i.e. ~15% of bits differ, against ~50%
//! for unrelated prompts), which the code distance separates cleanly. Compared with an HNSW graph
//! this needs no index maintenance on eviction or TTL expiry, deletes in O(1), and is
//! deterministic; [`CacheBackend`] is the seam for an approximate index at much larger sizes, or
//! for a shared store (Redis/Valkey) across sidecars.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Who may see an entry, and for which model it was answered.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Scope {
    pub tenant: String,
    pub model: String,
    pub salt: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Hit {
    pub body: Vec<u8>,
    pub similarity: f32,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    pub entries: usize,
    pub evictions: u64,
}

/// Where answers live. The in-memory [`SemanticCache`] is the default.
pub trait CacheBackend: Send + Sync {
    fn lookup(&self, scope: &Scope, embedding: &[f32], threshold: f32) -> Option<Hit>;
    fn insert(&self, scope: Scope, embedding: Vec<f32>, body: Vec<u8>);
    fn stats(&self) -> CacheStats;
}

#[derive(Debug, Clone)]
pub struct CacheLimits {
    pub ttl: Duration,
    pub max_entries: usize,
    pub max_body_bytes: usize,
}

/// How many code-nearest candidates get the exact cosine.
pub const RERANK: usize = 32;

struct Partition {
    dim: usize,
    /// `ids.len() * dim` floats, row i belongs to `ids[i]`.
    vectors: Vec<f32>,
    /// `ids.len() * words` sign codes, row-aligned with `vectors`.
    codes: Vec<u64>,
    ids: Vec<u64>,
}

impl Partition {
    fn words(&self) -> usize {
        self.dim.div_ceil(64)
    }
}

/// Sign bits of `v`, 64 per word.
fn sign_code(v: &[f32]) -> Vec<u64> {
    let mut code = vec![0u64; v.len().div_ceil(64)];
    for (i, x) in v.iter().enumerate() {
        if *x > 0.0 {
            code[i / 64] |= 1 << (i % 64);
        }
    }
    code
}

struct Entry {
    scope: Scope,
    body: Vec<u8>,
    inserted: Instant,
}

struct Inner {
    partitions: HashMap<Scope, Partition>,
    entries: HashMap<u64, Entry>,
    /// Insertion order, for TTL expiry and for eviction when full (oldest first).
    order: VecDeque<u64>,
    next_id: u64,
    evictions: u64,
}

pub struct SemanticCache {
    limits: CacheLimits,
    inner: Mutex<Inner>,
}

impl SemanticCache {
    pub fn new(limits: CacheLimits) -> Self {
        Self {
            limits,
            inner: Mutex::new(Inner {
                partitions: HashMap::new(),
                entries: HashMap::new(),
                order: VecDeque::new(),
                next_id: 0,
                evictions: 0,
            }),
        }
    }

    fn expire(&self, inner: &mut Inner, now: Instant) {
        while let Some(&id) = inner.order.front() {
            let expired = inner.entries.get(&id).is_none_or(|e| now.duration_since(e.inserted) >= self.limits.ttl);
            if !expired {
                break;
            }
            inner.order.pop_front();
            remove(inner, id);
        }
    }
}

fn remove(inner: &mut Inner, id: u64) -> bool {
    let Some(entry) = inner.entries.remove(&id) else { return false };
    if let Some(p) = inner.partitions.get_mut(&entry.scope) {
        if let Some(row) = p.ids.iter().position(|&x| x == id) {
            // swap_remove keeps the rows contiguous.
            let (last, words) = (p.ids.len() - 1, p.words());
            p.ids.swap_remove(row);
            if row != last {
                let (dst, src) = (row * p.dim, last * p.dim);
                p.vectors.copy_within(src..src + p.dim, dst);
                p.codes.copy_within(last * words..(last + 1) * words, row * words);
            }
            p.vectors.truncate(p.ids.len() * p.dim);
            p.codes.truncate(p.ids.len() * words);
        }
        if p.ids.is_empty() {
            inner.partitions.remove(&entry.scope);
        }
    }
    true
}

/// Dot product with independent accumulators so it vectorises.
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    for (x, y) in a.chunks_exact(8).zip(b.chunks_exact(8)) {
        for k in 0..8 {
            acc[k] += x[k] * y[k];
        }
    }
    let tail = a.len() / 8 * 8;
    acc.iter().sum::<f32>() + a[tail..].iter().zip(&b[tail..]).map(|(x, y)| x * y).sum::<f32>()
}

/// Rows of the `k` smallest Hamming distances between `query` and the codes.
fn nearest_codes(codes: &[u64], words: usize, query: &[u64], k: usize) -> Vec<usize> {
    let mut heap = std::collections::BinaryHeap::with_capacity(k + 1);
    for (row, code) in codes.chunks_exact(words).enumerate() {
        let d: u32 = code.iter().zip(query).map(|(a, b)| (a ^ b).count_ones()).sum();
        if heap.len() < k {
            heap.push((d, row));
        } else if let Some(&(worst, _)) = heap.peek() {
            if d < worst {
                heap.pop();
                heap.push((d, row));
            }
        }
    }
    heap.into_iter().map(|(_, row)| row).collect()
}

impl CacheBackend for SemanticCache {
    fn lookup(&self, scope: &Scope, embedding: &[f32], threshold: f32) -> Option<Hit> {
        let mut inner = self.inner.lock().unwrap();
        self.expire(&mut inner, Instant::now());
        let p = inner.partitions.get(scope)?;
        if p.dim != embedding.len() {
            return None;
        }
        let (mut best, mut best_row) = (f32::MIN, usize::MAX);
        for row in nearest_codes(&p.codes, p.words(), &sign_code(embedding), RERANK) {
            let s = dot(&p.vectors[row * p.dim..(row + 1) * p.dim], embedding);
            if s > best {
                best = s;
                best_row = row;
            }
        }
        if best_row == usize::MAX || best < threshold {
            return None;
        }
        let id = p.ids[best_row];
        inner.entries.get(&id).map(|e| Hit { body: e.body.clone(), similarity: best })
    }

    fn insert(&self, scope: Scope, embedding: Vec<f32>, body: Vec<u8>) {
        if body.len() > self.limits.max_body_bytes || self.limits.max_entries == 0 || embedding.is_empty() {
            return;
        }
        let mut inner = self.inner.lock().unwrap();
        self.expire(&mut inner, Instant::now());
        while inner.entries.len() >= self.limits.max_entries {
            let Some(oldest) = inner.order.pop_front() else { break };
            if remove(&mut inner, oldest) {
                inner.evictions += 1;
            }
        }
        let id = inner.next_id;
        inner.next_id += 1;
        let dim = embedding.len();
        let p = inner
            .partitions
            .entry(scope.clone())
            .or_insert_with(|| Partition { dim, vectors: Vec::new(), codes: Vec::new(), ids: Vec::new() });
        if p.dim != dim {
            return;
        }
        p.codes.extend_from_slice(&sign_code(&embedding));
        p.vectors.extend_from_slice(&embedding);
        p.ids.push(id);
        inner.entries.insert(id, Entry { scope, body, inserted: Instant::now() });
        inner.order.push_back(id);
    }

    fn stats(&self) -> CacheStats {
        let inner = self.inner.lock().unwrap();
        CacheStats { entries: inner.entries.len(), evictions: inner.evictions }
    }
}

/// Requests the sidecar marked `cache_store`, waiting for their answer from the filter.
pub struct PendingStores {
    ttl: Duration,
    capacity: usize,
    inner: Mutex<(HashMap<String, (Scope, Vec<f32>, Instant)>, VecDeque<String>)>,
}

impl PendingStores {
    pub fn new(ttl: Duration, capacity: usize) -> Self {
        Self { ttl, capacity, inner: Mutex::new((HashMap::new(), VecDeque::new())) }
    }

    pub fn remember(&self, request_id: String, scope: Scope, embedding: Vec<f32>) {
        if request_id.is_empty() {
            return;
        }
        let mut guard = self.inner.lock().unwrap();
        let (map, order) = &mut *guard;
        while map.len() >= self.capacity {
            match order.pop_front() {
                Some(old) => {
                    map.remove(&old);
                }
                None => break,
            }
        }
        order.push_back(request_id.clone());
        map.insert(request_id, (scope, embedding, Instant::now()));
    }

    /// The scope and embedding of a pending request, once.
    pub fn take(&self, request_id: &str) -> Option<(Scope, Vec<f32>)> {
        let mut guard = self.inner.lock().unwrap();
        let (map, _) = &mut *guard;
        let (scope, embedding, at) = map.remove(request_id)?;
        (at.elapsed() < self.ttl).then_some((scope, embedding))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit(v: &[f32]) -> Vec<f32> {
        let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        v.iter().map(|x| x / n).collect()
    }

    fn scope(tenant: &str) -> Scope {
        Scope { tenant: tenant.into(), model: "m".into(), salt: String::new() }
    }

    fn cache(max_entries: usize, ttl_ms: u64) -> SemanticCache {
        SemanticCache::new(CacheLimits { ttl: Duration::from_millis(ttl_ms), max_entries, max_body_bytes: 1 << 20 })
    }

    #[test]
    fn nearest_above_threshold_within_scope() {
        let c = cache(10, 60_000);
        c.insert(scope("a"), unit(&[1.0, 0.0, 0.0]), b"x".to_vec());
        c.insert(scope("a"), unit(&[0.0, 1.0, 0.0]), b"y".to_vec());
        let hit = c.lookup(&scope("a"), &unit(&[0.9, 0.1, 0.0]), 0.9).unwrap();
        assert_eq!(hit.body, b"x");
        assert!(hit.similarity > 0.99);
        assert!(c.lookup(&scope("a"), &unit(&[0.5, 0.5, 0.7]), 0.9).is_none(), "below threshold");
        assert!(c.lookup(&scope("b"), &unit(&[1.0, 0.0, 0.0]), 0.5).is_none(), "tenants never share");
        let other_model = Scope { model: "n".into(), ..scope("a") };
        assert!(c.lookup(&other_model, &unit(&[1.0, 0.0, 0.0]), 0.5).is_none());
    }

    #[test]
    fn ttl_and_capacity() {
        let c = cache(2, 50);
        c.insert(scope("a"), unit(&[1.0, 0.0]), b"1".to_vec());
        c.insert(scope("a"), unit(&[0.0, 1.0]), b"2".to_vec());
        c.insert(scope("a"), unit(&[1.0, 1.0]), b"3".to_vec());
        assert_eq!(c.stats(), CacheStats { entries: 2, evictions: 1 });
        assert!(c.lookup(&scope("a"), &unit(&[1.0, 0.0]), 0.99).is_none(), "oldest evicted");
        assert_eq!(c.lookup(&scope("a"), &unit(&[0.0, 1.0]), 0.99).unwrap().body, b"2");
        std::thread::sleep(Duration::from_millis(60));
        assert!(c.lookup(&scope("a"), &unit(&[0.0, 1.0]), 0.5).is_none(), "expired");
        assert_eq!(c.stats().entries, 0);
    }

    #[test]
    fn removal_keeps_rows_aligned() {
        let c = cache(3, 60_000);
        for (i, v) in [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]].iter().enumerate() {
            c.insert(scope("a"), v.to_vec(), vec![b'0' + i as u8]);
        }
        c.insert(scope("a"), vec![0.6, 0.8, 0.0], b"3".to_vec()); // evicts row 0 (swap_remove)
        assert_eq!(c.lookup(&scope("a"), &[0.0, 0.0, 1.0], 0.99).unwrap().body, b"2");
        assert_eq!(c.lookup(&scope("a"), &[0.0, 1.0, 0.0], 0.99).unwrap().body, b"1");
        assert_eq!(c.lookup(&scope("a"), &[0.6, 0.8, 0.0], 0.99).unwrap().body, b"3");
    }

    #[test]
    fn near_duplicates_are_found_among_many() {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut random = |dim: usize| {
            let v: Vec<f32> = (0..dim)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    (seed % 2000) as f32 / 1000.0 - 1.0
                })
                .collect();
            unit(&v)
        };
        let c = cache(20_000, 60_000);
        let target = random(384);
        for _ in 0..10_000 {
            c.insert(scope("a"), random(384), b"noise".to_vec());
        }
        c.insert(scope("a"), target.clone(), b"target".to_vec());
        for _ in 0..5_000 {
            c.insert(scope("a"), random(384), b"noise".to_vec());
        }
        // A paraphrase: the target plus noise, cosine ~0.9.
        let noise = random(384);
        let query = unit(&target.iter().zip(&noise).map(|(t, n)| t + 0.45 * n).collect::<Vec<_>>());
        let cos = dot(&query, &target);
        assert!((0.85..0.95).contains(&cos), "{cos}");
        let hit = c.lookup(&scope("a"), &query, 0.8).expect("found through the code prefilter");
        assert_eq!(hit.body, b"target");
        assert!((hit.similarity - cos).abs() < 1e-5);
    }

    #[test]
    fn pending_stores_are_taken_once_and_expire() {
        let p = PendingStores::new(Duration::from_millis(50), 2);
        p.remember("r1".into(), scope("a"), vec![1.0]);
        assert!(p.take("r1").is_some());
        assert!(p.take("r1").is_none());
        p.remember("r2".into(), scope("a"), vec![1.0]);
        p.remember("r3".into(), scope("a"), vec![1.0]);
        p.remember("r4".into(), scope("a"), vec![1.0]);
        assert!(p.take("r2").is_none(), "bounded");
        std::thread::sleep(Duration::from_millis(60));
        assert!(p.take("r4").is_none(), "expired");
    }
}

/// The semantic cache as the service uses it: bypass rules, lookup into the decision, and the
/// store half of the round trip.
pub mod layer {
    use super::*;
    use crate::config::{Config, SemanticCacheConfig};
    use crate::metrics::Metrics;
    use route_policy::model::ResponseCacheAction;
    use router_proto::v1::{CacheHit, ClassifyRequest, Decision};
    use std::sync::Arc;

    pub struct CacheLayer {
        cache: Arc<dyn CacheBackend>,
        pending: PendingStores,
        metrics: Arc<Metrics>,
    }

    /// Why a request does not use the cache (`None`: it does). `action` is the cache action of
    /// the decision that routed it: when there is one it decides, whatever the global
    /// `semantic_cache.enabled` (a decision may use the cache while it is off, or skip it while
    /// it is on); without one (no cache plugin, or no decision matched) the global switch does.
    pub fn bypass_reason(
        req: &ClassifyRequest,
        decision: &Decision,
        action: Option<ResponseCacheAction>,
        config: &Config,
    ) -> Option<&'static str> {
        let sc: &SemanticCacheConfig = &config.semantic_cache;
        let traits = req.traits.clone().unwrap_or_default();
        match action {
            Some(a) if !a.enabled => return Some("decision_disabled"),
            None if !sc.enabled => return Some("disabled"),
            _ => {}
        }
        if decision.block.is_some() || decision.selected_model.is_empty() {
            return Some("blocked");
        }
        if traits.skip_cache {
            return Some("client_skip");
        }
        if traits.has_tools {
            return Some("tools");
        }
        if let (Some(t), Some(max)) = (traits.temperature, sc.max_temperature) {
            if t > max {
                return Some("temperature");
            }
        }
        None
    }

    impl CacheLayer {
        pub fn new(config: &SemanticCacheConfig, metrics: Arc<Metrics>) -> Self {
            let limits = CacheLimits {
                ttl: Duration::from_secs(config.ttl_seconds),
                max_entries: config.max_entries,
                max_body_bytes: config.max_body_bytes,
            };
            Self {
                cache: Arc::new(SemanticCache::new(limits)),
                // An answer normally comes back within the request's lifetime; bound the wait.
                pending: PendingStores::new(Duration::from_secs(600), 10_000),
                metrics,
            }
        }

        /// Sets `cache_hit` (or `cache_store` on a miss) on the decision; `action` is the cache
        /// action of the decision that routed the request (see [`bypass_reason`]).
        pub fn apply(
            &self,
            req: &ClassifyRequest,
            prompt: &[f32],
            decision: &mut Decision,
            action: Option<ResponseCacheAction>,
            config: &Config,
        ) {
            if bypass_reason(req, decision, action, config).is_some() {
                return;
            }
            let traits = req.traits.clone().unwrap_or_default();
            let scope = Scope { tenant: req.tenant.clone(), model: decision.selected_model.clone(), salt: traits.cache_salt };
            let threshold =
                action.and_then(|a| a.similarity_threshold).unwrap_or(config.semantic_cache.similarity_threshold);
            let t = Instant::now();
            let hit = self.cache.lookup(&scope, prompt, threshold);
            self.metrics.cache_lookup_seconds.observe(t.elapsed().as_secs_f64());
            match hit {
                Some(hit) => {
                    self.metrics.cache_hits.inc();
                    decision.cache_hit = Some(CacheHit { body: hit.body, similarity: hit.similarity });
                }
                None => {
                    self.metrics.cache_misses.inc();
                    // The answer comes back under the request id; without one it cannot.
                    if !req.request_id.is_empty() {
                        decision.cache_store = true;
                        self.pending.remember(req.request_id.clone(), scope, prompt.to_vec());
                    }
                }
            }
        }

        /// Stores the answer to a request this layer marked `cache_store`.
        pub fn store(&self, request_id: &str, body: Vec<u8>) -> bool {
            let Some((scope, embedding)) = self.pending.take(request_id) else { return false };
            if serde_json::from_slice::<serde_json::Value>(&body).map_or(true, |v| v["object"] != "chat.completion") {
                return false;
            }
            self.cache.insert(scope, embedding, body);
            let stats = self.cache.stats();
            self.metrics.cache_stores.inc();
            self.metrics.cache_entries.set(stats.entries as i64);
            self.metrics.cache_evictions.set(stats.evictions as i64);
            true
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        fn config(global: bool) -> Config {
            Config::from_yaml(&format!(
                "bert_model: {{ model_id: m }}\ndefault_model: d\nsemantic_cache: {{ enabled: {global}, similarity_threshold: 0.95 }}\ncategories:\n  - {{ name: a, description: x, model_scores: [{{ model: m1, score: 1.0 }}] }}\n"
            ))
            .unwrap()
        }

        fn request(id: &str) -> ClassifyRequest {
            ClassifyRequest { request_id: id.into(), ..Default::default() }
        }

        fn routed() -> Decision {
            Decision { selected_model: "m1".into(), decision: "a".into(), ..Default::default() }
        }

        fn action(enabled: bool, similarity_threshold: Option<f32>) -> Option<ResponseCacheAction> {
            Some(ResponseCacheAction { enabled, similarity_threshold })
        }

        #[test]
        fn the_decision_action_overrides_the_global_switch_both_ways() {
            let (on, off) = (config(true), config(false));
            let reason = |a, c: &Config| bypass_reason(&request("r"), &routed(), a, c);
            assert_eq!(reason(None, &on), None, "no plugin: the global switch");
            assert_eq!(reason(None, &off), Some("disabled"));
            assert_eq!(reason(action(true, None), &off), None, "a decision turns the cache on for itself");
            assert_eq!(reason(action(false, None), &on), Some("decision_disabled"));
            // Enabled by the decision, the request-level bypasses still hold.
            let skip = ClassifyRequest {
                traits: Some(router_proto::v1::RequestTraits { skip_cache: true, ..Default::default() }),
                ..request("r")
            };
            assert_eq!(bypass_reason(&skip, &routed(), action(true, None), &off), Some("client_skip"));
        }

        #[test]
        fn the_decision_threshold_replaces_the_global_one() {
            let cfg = config(false);
            let layer = CacheLayer::new(&cfg.semantic_cache, Arc::new(Metrics::new()));
            let stored = [1.0f32, 0.0];
            let mut d = routed();
            layer.apply(&request("r1"), &stored, &mut d, action(true, None), &cfg);
            assert!(d.cache_store && d.cache_hit.is_none());
            assert!(layer.store("r1", br#"{"object":"chat.completion"}"#.to_vec()));
            // A paraphrase at cosine 0.9: under the global 0.95, over the decision's 0.85.
            let near = [0.9f32, (1.0f32 - 0.81).sqrt()];
            let mut d = routed();
            layer.apply(&request("r2"), &near, &mut d, action(true, None), &cfg);
            assert!(d.cache_hit.is_none() && d.cache_store, "global threshold 0.95");
            let mut d = routed();
            layer.apply(&request("r3"), &near, &mut d, action(true, Some(0.85)), &cfg);
            let hit = d.cache_hit.expect("decision threshold 0.85");
            assert!((hit.similarity - 0.9).abs() < 1e-5);
        }
    }
}
