//! `just soak`: the whole stack (real sidecar, Envoy with the filter, simulated backends) under
//! sustained load with large bodies and many tenants filling the semantic cache. Samples the
//! resident memory of Envoy and the sidecar and fails if it keeps growing once the cache is full.
//! Usage: soak [--seconds 600] [--concurrency 8]

use anyhow::{bail, Result};
use router_tests::client::HttpClient;
use router_tests::envoy::{EnvoyConfig, EnvoyProcess};
use router_tests::openai_sim;
use router_tests::sidecar::{rss_mib, SidecarProcess};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[tokio::main]
async fn main() -> Result<()> {
    let mut seconds = 600u64;
    let mut concurrency = 8usize;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--seconds" => seconds = args.next().unwrap_or_default().parse()?,
            "--concurrency" => concurrency = args.next().unwrap_or_default().parse()?,
            other => bail!("unknown argument {other:?}"),
        }
    }
    // A small cache so the soak reaches its bound and exercises eviction.
    let env = [("SR__SEMANTIC_CACHE__MAX_ENTRIES", "2000")];
    let sidecar = tokio::task::spawn_blocking(move || SidecarProcess::start("classifier-svc/config/router.yaml", &env)).await??;
    let (a, _) = openai_sim::spawn("127.0.0.1:0".parse()?, "primary").await?;
    let (b, _) = openai_sim::spawn("127.0.0.1:0".parse()?, "secondary").await?;
    let filter = r#"{"default_model":"qwen3-8b","timeout_ms":2000}"#;
    let config = EnvoyConfig::new(sidecar.grpc_port, a.port(), b.port(), filter);
    let envoy = Arc::new(tokio::task::spawn_blocking(move || EnvoyProcess::start(config)).await??);

    let running = Arc::new(AtomicBool::new(true));
    let (ok, bad, hits) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let mut workers = Vec::new();
    for w in 0..concurrency {
        let (envoy, running, ok, bad, hits) = (envoy.clone(), running.clone(), ok.clone(), bad.clone(), hits.clone());
        workers.push(tokio::spawn(async move {
            let client = HttpClient::new(Duration::from_secs(30));
            let mut i = w as u64;
            while running.load(Ordering::Relaxed) {
                i = i.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                let tenant = format!("tenant-{}", i % 500);
                // Up to ~256 KB of earlier turns, and a question from a large pool.
                let filler = "context ".repeat((i % 32_768) as usize);
                let question = format!("Question {}: how does topic {} in physics relate to chemistry?", i % 5000, i % 97);
                let body = serde_json::json!({"model": "MoM", "messages": [
                    {"role": "user", "content": filler}, {"role": "assistant", "content": "ok"},
                    {"role": "user", "content": question}]})
                .to_string();
                match client.post(&envoy.url("/v1/chat/completions"), body, &[("x-tenant-id", tenant.as_str())]).await {
                    Ok(r) if r.status == 200 => {
                        ok.fetch_add(1, Ordering::Relaxed);
                        if r.header("x-vsr-cache-hit").is_some() {
                            hits.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    _ => {
                        bad.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }));
    }

    println!("| t (s) | requests ok | not ok | cache hits | Envoy RSS (MiB) | sidecar RSS (MiB) |\n|---|---|---|---|---|---|");
    let started = Instant::now();
    let step = (seconds / 10).max(5);
    let mut samples = Vec::new();
    while started.elapsed().as_secs() < seconds {
        tokio::time::sleep(Duration::from_secs(step)).await;
        let (e, s) = (rss_mib(envoy.pid()), rss_mib(sidecar.pid()));
        samples.push((e, s));
        println!(
            "| {} | {} | {} | {} | {e:.0} | {s:.0} |",
            started.elapsed().as_secs(),
            ok.load(Ordering::Relaxed),
            bad.load(Ordering::Relaxed),
            hits.load(Ordering::Relaxed)
        );
    }
    running.store(false, Ordering::Relaxed);
    for w in workers {
        w.await?;
    }
    let third = samples.len() / 3;
    let peak = |xs: &[(f64, f64)], f: fn(&(f64, f64)) -> f64| xs.iter().map(f).fold(0.0, f64::max);
    let (early, late) = (&samples[third..2 * third.max(1)], &samples[2 * third..]);
    let growth_envoy = peak(late, |x| x.0) / peak(early, |x| x.0).max(1.0);
    let growth_sidecar = peak(late, |x| x.1) / peak(early, |x| x.1).max(1.0);
    println!("\nmemory growth, last third vs middle third: Envoy ×{growth_envoy:.2}, sidecar ×{growth_sidecar:.2}");
    if bad.load(Ordering::Relaxed) > 0 {
        bail!("{} requests were not answered 200", bad.load(Ordering::Relaxed));
    }
    if growth_envoy > 1.25 || growth_sidecar > 1.25 {
        bail!("memory kept growing");
    }
    Ok(())
}
