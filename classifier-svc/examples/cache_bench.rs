//! Semantic-cache lookup time by cache size (one scope, 384-d unit vectors, exact search).
//! `cargo run --release -p classifier-svc --example cache_bench` (= `just bench-cache`).

use classifier_svc::cache::{CacheBackend, CacheLimits, Scope, SemanticCache};
use std::time::{Duration, Instant};

fn random_unit(seed: &mut u64, dim: usize) -> Vec<f32> {
    let v: Vec<f32> = (0..dim)
        .map(|_| {
            *seed ^= *seed << 13;
            *seed ^= *seed >> 7;
            *seed ^= *seed << 17;
            (*seed % 2000) as f32 / 1000.0 - 1.0
        })
        .collect();
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.into_iter().map(|x| x / n).collect()
}

fn main() {
    let dim = 384;
    let scope = Scope { tenant: "t".into(), model: "m".into(), salt: String::new() };
    println!("| entries | lookup p50 (µs) | lookup p99 (µs) | insert p50 (µs) |\n|---|---|---|---|");
    for n in [1_000usize, 10_000, 100_000] {
        let cache = SemanticCache::new(CacheLimits { ttl: Duration::from_secs(3600), max_entries: n, max_body_bytes: 1 << 20 });
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut inserts = Vec::with_capacity(n);
        for _ in 0..n {
            let v = random_unit(&mut seed, dim);
            let t = Instant::now();
            cache.insert(scope.clone(), v, vec![0u8; 512]);
            inserts.push(t.elapsed().as_secs_f64() * 1e6);
        }
        let mut lookups = Vec::new();
        for _ in 0..200 {
            let q = random_unit(&mut seed, dim);
            let t = Instant::now();
            std::hint::black_box(cache.lookup(&scope, &q, 0.95));
            lookups.push(t.elapsed().as_secs_f64() * 1e6);
        }
        lookups.sort_by(f64::total_cmp);
        inserts.sort_by(f64::total_cmp);
        println!(
            "| {n} | {:.0} | {:.0} | {:.1} |",
            lookups[lookups.len() / 2],
            lookups[lookups.len() * 99 / 100],
            inserts[inserts.len() / 2]
        );
    }
}
