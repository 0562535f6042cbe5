//! `just bench-overhead`: latency the filter adds to Envoy, measured side by side in one run.
//!
//! Three Envoys from the same template in front of the same simulated backend: one without the
//! filter, one with it serving an explicit model, one with it calling the classifier test double
//! for `MoM`. Requests to
//! the three variants are interleaved (round-robin, rotating start) so drift hits all alike.
//! Usage: bench-overhead [--requests N] [--concurrency 1,16]

use anyhow::Result;
use router_tests::classifier_double::{Behaviour, ClassifierDouble};
use router_tests::client::HttpClient;
use router_tests::envoy::{EnvoyConfig, EnvoyProcess};
use router_tests::openai_sim;
use std::sync::Arc;
use std::time::{Duration, Instant};

const VARIANTS: [&str; 3] = ["envoy (no filter)", "filter, explicit model", "filter + classifier callout"];

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

#[tokio::main]
async fn main() -> Result<()> {
    let mut requests = 2000usize;
    let mut concurrencies = vec![1usize, 16];
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--requests" => requests = args.next().unwrap_or_default().parse()?,
            "--concurrency" => {
                concurrencies = args.next().unwrap_or_default().split(',').map(str::parse).collect::<Result<_, _>>()?
            }
            other => anyhow::bail!("unknown argument {other:?}"),
        }
    }

    let (backend, _) = openai_sim::spawn("127.0.0.1:0".parse()?, "primary").await?;
    let classifier = ClassifierDouble::start(Behaviour::Decide).await;
    let filter_config = r#"{"default_model":"qwen3-8b","timeout_ms":1000}"#;
    // One Envoy per variant, so each serves the same share of the load.
    let mut envoys = Vec::new();
    for variant in 0..3 {
        let mut config = EnvoyConfig::new(classifier.addr.port(), backend.port(), backend.port(), filter_config);
        config.secondary_models.clear();
        if variant == 0 {
            config.filter_config = None;
        }
        envoys.push(tokio::task::spawn_blocking(move || EnvoyProcess::start(config)).await??);
    }
    let body = |model: &str| {
        serde_json::json!({"model": model, "messages": [
            {"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": "What is the derivative of x^3 + 2x with respect to x?"}
        ], "temperature": 0.2})
        .to_string()
    };
    let targets = Arc::new([
        (envoys[0].url("/v1/chat/completions"), body("qwen3-8b")),
        (envoys[1].url("/v1/chat/completions"), body("qwen3-8b")),
        (envoys[2].url("/v1/chat/completions"), body("MoM")),
    ]);

    println!("| concurrency | variant | p50 (µs) | p99 (µs) | added p50 (µs) | added p99 (µs) | req/s |");
    println!("|---|---|---|---|---|---|---|");
    for &concurrency in &concurrencies {
        let per_worker = requests.div_ceil(concurrency);
        let warmup = 50usize;
        let started = Instant::now();
        let mut workers = Vec::new();
        for worker in 0..concurrency {
            let targets = targets.clone();
            workers.push(tokio::spawn(async move {
                let client = HttpClient::new(Duration::from_secs(10));
                let mut samples: [Vec<f64>; 3] = Default::default();
                for round in 0..(per_worker + warmup) {
                    for k in 0..3 {
                        let v = (round + worker + k) % 3;
                        let (url, body) = &targets[v];
                        let t = Instant::now();
                        let reply = client.post(url, body.clone(), &[]).await.expect("request");
                        assert_eq!(reply.status, 200, "{}", reply.text());
                        if round >= warmup {
                            samples[v].push(t.elapsed().as_secs_f64() * 1e6);
                        }
                    }
                }
                samples
            }));
        }
        let mut all: [Vec<f64>; 3] = Default::default();
        for w in workers {
            for (v, s) in w.await?.into_iter().enumerate() {
                all[v].extend(s);
            }
        }
        let elapsed = started.elapsed().as_secs_f64();
        for s in all.iter_mut() {
            s.sort_by(f64::total_cmp);
        }
        let (base50, base99) = (percentile(&all[0], 0.5), percentile(&all[0], 0.99));
        for (v, s) in all.iter().enumerate() {
            let (p50, p99) = (percentile(s, 0.5), percentile(s, 0.99));
            let added = if v == 0 { ("—".to_string(), "—".to_string()) } else { (format!("{:+.0}", p50 - base50), format!("{:+.0}", p99 - base99)) };
            println!(
                "| {concurrency} | {} | {p50:.0} | {p99:.0} | {} | {} | {:.0} |",
                VARIANTS[v], added.0, added.1, s.len() as f64 / elapsed
            );
        }
    }
    println!("\nclassifier calls: {}, fallbacks: {}", classifier.calls(), envoys[2].counter("semantic_router.fallback.timeout") + envoys[2].counter("semantic_router.fallback.unavailable"));
    Ok(())
}
