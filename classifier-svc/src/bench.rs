//! Latency / throughput measurement of the embedding path (the `bench` subcommand) and an
//! open-loop gRPC load generator (the `loadgen` subcommand). The model measurements are
//! generic over the backend: the same code runs on the CPU and on CUDA.

use std::time::{Duration, Instant};

use anyhow::Result;
use burn::tensor::backend::Backend;
use serde::Serialize;

use crate::model::{Batch, Model};

/// Real prompts of mixed lengths (a few tokens to well over 128), one per line.
pub const PROMPTS: &str = include_str!("../benches/prompts.txt");

/// The prompts of [`PROMPTS`].
pub fn prompts() -> Vec<&'static str> {
    PROMPTS.lines().map(str::trim).filter(|l| !l.is_empty()).collect()
}

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

#[derive(Debug, Serialize)]
pub struct ShapeReport {
    pub batch_size: usize,
    pub seq_len: usize,
    /// The first forward pass at this shape (kernel compilation on GPU backends).
    pub first_ms: f64,
    pub batches: usize,
    pub p50_ms: f64,
    pub mean_ms: f64,
    pub texts_per_sec: f64,
    /// First values of the first embedding (to compare backends and precisions).
    pub head: Vec<f32>,
}

/// A batch of `batch_size` texts of exactly `seq_len` tokens each, no padding: text `i` is
/// every prompt of [`PROMPTS`] from the `i`-th on, joined by spaces, cut to `seq_len - 1`
/// tokens plus the final `[SEP]` (what a tokenizer truncating at `seq_len` gives;
/// `scripts/torch_bench.py` builds the same inputs).
pub fn fixed_batch<B: Backend>(model: &Model<B>, batch_size: usize, seq_len: usize) -> Result<Batch> {
    let p = prompts();
    let texts: Vec<String> = (0..batch_size)
        .map(|i| (0..p.len()).map(|k| p[(i + k) % p.len()]).collect::<Vec<_>>().join(" "))
        .collect();
    let mut enc = model.tokenize(&texts)?;
    for e in &mut enc {
        if e.len() < seq_len {
            anyhow::bail!("seq_len {seq_len} exceeds the model's maximum length {}", e.len());
        }
        let last = *e.last().expect("non-empty encoding");
        e.truncate(seq_len - 1);
        e.push(last);
    }
    Ok(Batch::new(&enc, model.pad_id))
}

/// Steady-state time of one forward pass (ids upload, encoder, mean pooling, read-back) at a
/// fixed shape, for about `budget` after the first pass and three warm-up passes.
pub fn fixed_shape<B: Backend>(
    model: &Model<B>,
    batch_size: usize,
    seq_len: usize,
    budget: Duration,
) -> Result<ShapeReport> {
    let batch = fixed_batch(model, batch_size, seq_len)?;
    let t = Instant::now();
    let first = model.embed_batch(&batch)?;
    let first_ms = t.elapsed().as_secs_f64() * 1e3;
    for _ in 0..3 {
        model.embed_batch(&batch)?;
    }
    let mut times = Vec::new();
    let start = Instant::now();
    while times.len() < 5 || start.elapsed() < budget {
        let t = Instant::now();
        model.embed_batch(&batch)?;
        times.push(t.elapsed().as_secs_f64() * 1e3);
    }
    let total: f64 = times.iter().sum();
    let mean = total / times.len() as f64;
    let batches = times.len();
    times.sort_by(|a, b| a.partial_cmp(b).unwrap());
    Ok(ShapeReport {
        batch_size,
        seq_len,
        first_ms,
        batches,
        p50_ms: percentile(&times, 0.5),
        mean_ms: mean,
        texts_per_sec: batch_size as f64 * 1e3 / mean,
        head: first[0].iter().take(4).copied().collect(),
    })
}

/// Open-loop load generation against the gRPC `Classify` method.
pub mod load {
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use anyhow::{Context, Result};
    use router_proto::v1::classifier_client::ClassifierClient;
    use router_proto::v1::ClassifyRequest;
    use serde::Serialize;
    use tokio::sync::Mutex;
    use tonic::transport::Channel;

    #[derive(Debug, Serialize)]
    pub struct LoadReport {
        /// "closed" (fixed concurrency, as fast as possible) or "open" (fixed arrival rate).
        pub mode: &'static str,
        pub target_rps: Option<f64>,
        pub concurrency: Option<usize>,
        pub seconds: f64,
        pub sent: usize,
        pub ok: usize,
        pub errors: usize,
        /// Successful responses per second.
        pub throughput_rps: f64,
        pub p50_ms: f64,
        pub p90_ms: f64,
        pub p99_ms: f64,
        pub max_ms: f64,
    }

    /// Clients over `connections` HTTP/2 connections, used round robin.
    pub fn connect(addr: &str, connections: usize) -> Result<Vec<ClassifierClient<Channel>>> {
        let mut out = Vec::new();
        for _ in 0..connections.max(1) {
            // Lazy: the server may still be starting; `wait_ready` retries until it answers.
            let ch = Channel::from_shared(addr.to_string())
                .with_context(|| format!("server address {addr}"))?
                .connect_lazy();
            out.push(ClassifierClient::new(ch));
        }
        Ok(out)
    }

    /// Waits until `Classify` answers (the service is NOT_SERVING while it warms up).
    pub async fn wait_ready(client: &mut ClassifierClient<Channel>, timeout: Duration) -> Result<()> {
        let start = Instant::now();
        loop {
            let req = ClassifyRequest { text: "ready?".into(), ..Default::default() };
            match client.classify(req).await {
                Ok(_) => return Ok(()),
                Err(e) if start.elapsed() < timeout => {
                    tracing::debug!(error = %e, "not ready");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => return Err(e).context("the classifier did not become ready"),
            }
        }
    }

    fn request(prompts: &[&str], i: usize) -> ClassifyRequest {
        ClassifyRequest {
            text: prompts[i % prompts.len()].to_string(),
            request_id: format!("load-{i}"),
            ..Default::default()
        }
    }

    fn report(
        mode: &'static str,
        target_rps: Option<f64>,
        concurrency: Option<usize>,
        seconds: f64,
        sent: usize,
        mut lat: Vec<f64>,
    ) -> LoadReport {
        let ok = lat.len();
        lat.sort_by(|a, b| a.partial_cmp(b).unwrap());
        let pct = |p: f64| if lat.is_empty() { f64::NAN } else { super::percentile(&lat, p) };
        LoadReport {
            mode,
            target_rps,
            concurrency,
            seconds,
            sent,
            ok,
            errors: sent - ok,
            throughput_rps: ok as f64 / seconds,
            p50_ms: pct(0.5),
            p90_ms: pct(0.9),
            p99_ms: pct(0.99),
            max_ms: lat.last().copied().unwrap_or(f64::NAN),
        }
    }

    /// `concurrency` workers, each sending its next request when the last one is answered,
    /// for `duration`: the service's maximum throughput.
    pub async fn closed_loop(
        clients: &[ClassifierClient<Channel>],
        prompts: &[&'static str],
        concurrency: usize,
        duration: Duration,
    ) -> Result<LoadReport> {
        let lat = Arc::new(Mutex::new(Vec::new()));
        let sent = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let start = Instant::now();
        let mut tasks = Vec::new();
        for w in 0..concurrency {
            let mut client = clients[w % clients.len()].clone();
            let (lat, sent, prompts) = (lat.clone(), sent.clone(), prompts.to_vec());
            tasks.push(tokio::spawn(async move {
                let mut i = w;
                let mut mine = Vec::new();
                while start.elapsed() < duration {
                    sent.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let t = Instant::now();
                    if client.classify(request(&prompts, i)).await.is_ok() {
                        mine.push(t.elapsed().as_secs_f64() * 1e3);
                    }
                    i += concurrency;
                }
                lat.lock().await.extend(mine);
            }));
        }
        for t in tasks {
            t.await?;
        }
        let secs = start.elapsed().as_secs_f64();
        let lat = std::mem::take(&mut *lat.lock().await);
        let sent = sent.load(std::sync::atomic::Ordering::Relaxed);
        Ok(report("closed", None, Some(concurrency), secs, sent, lat))
    }

    /// Requests at a fixed arrival rate for `duration`, whatever the responses do. Latency is
    /// measured from each request's scheduled send time, so a stalled service is not hidden.
    pub async fn open_loop(
        clients: &[ClassifierClient<Channel>],
        prompts: &[&'static str],
        rps: f64,
        duration: Duration,
    ) -> Result<LoadReport> {
        let n = (rps * duration.as_secs_f64()).round().max(1.0) as usize;
        let period = Duration::from_secs_f64(1.0 / rps);
        let start = tokio::time::Instant::now();
        let mut tasks = Vec::with_capacity(n);
        for i in 0..n {
            let at = start + period.mul_f64(i as f64);
            tokio::time::sleep_until(at).await;
            let mut client = clients[i % clients.len()].clone();
            let req = request(prompts, i);
            tasks.push(tokio::spawn(async move {
                client
                    .classify(req)
                    .await
                    .ok()
                    .map(|_| at.elapsed().as_secs_f64() * 1e3)
            }));
        }
        let mut lat = Vec::with_capacity(n);
        for t in tasks {
            if let Some(ms) = t.await? {
                lat.push(ms);
            }
        }
        let secs = start.elapsed().as_secs_f64();
        Ok(report("open", Some(rps), None, secs, n, lat))
    }
}
