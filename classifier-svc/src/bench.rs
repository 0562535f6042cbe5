//! Latency / throughput measurement of the embedding path (the `bench` subcommand).

use std::time::{Duration, Instant};

use anyhow::Result;
use burn::tensor::backend::Backend;
use serde::Serialize;

use crate::model::{Batch, Model};

/// A prompt of roughly 64 tokens with the MiniLM tokenizer.
pub const PROMPT_64: &str = "I am preparing for an exam in calculus and I keep getting stuck on \
integration by parts. Could you explain step by step how to compute the integral of x squared \
times e to the x, and also tell me how to check the answer by differentiating it again?";

#[derive(Debug, Serialize)]
pub struct LatencyReport {
    pub tokens: usize,
    pub runs: usize,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub mean_ms: f64,
}

#[derive(Debug, Serialize)]
pub struct ThroughputReport {
    pub batch_size: usize,
    pub batches: usize,
    pub texts_per_sec: f64,
    pub ms_per_batch: f64,
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

/// Single-request latency (tokenization + forward + pooling) for `text`.
pub fn latency<B: Backend>(model: &Model<B>, text: &str, runs: usize) -> Result<LatencyReport> {
    let tokens = model.tokenize(&[text])?[0].len();
    for _ in 0..5 {
        model.embed(&[text])?;
    }
    let mut times = Vec::with_capacity(runs);
    for _ in 0..runs {
        let t = Instant::now();
        model.embed(&[text])?;
        times.push(t.elapsed().as_secs_f64() * 1e3);
    }
    let mean = times.iter().sum::<f64>() / times.len() as f64;
    times.sort_by(|a, b| a.partial_cmp(b).unwrap());
    Ok(LatencyReport {
        tokens,
        runs,
        p50_ms: percentile(&times, 0.5),
        p90_ms: percentile(&times, 0.9),
        p99_ms: percentile(&times, 0.99),
        mean_ms: mean,
    })
}

/// Texts per second when `batch_size` prompts run as one forward, for about `budget`.
pub fn throughput<B: Backend>(
    model: &Model<B>,
    text: &str,
    batch_size: usize,
    budget: Duration,
) -> Result<ThroughputReport> {
    let texts: Vec<String> = (0..batch_size).map(|i| format!("{text} ({i})")).collect();
    let enc = model.tokenize(&texts)?;
    let batch = Batch::new(&enc, model.pad_id);
    model.embed_batch(&batch)?;
    let start = Instant::now();
    let mut batches = 0;
    while batches < 3 || start.elapsed() < budget {
        let enc = model.tokenize(&texts)?;
        model.embed_batch(&Batch::new(&enc, model.pad_id))?;
        batches += 1;
    }
    let secs = start.elapsed().as_secs_f64();
    Ok(ThroughputReport {
        batch_size,
        batches,
        texts_per_sec: (batches * batch_size) as f64 / secs,
        ms_per_batch: secs * 1e3 / batches as f64,
    })
}
