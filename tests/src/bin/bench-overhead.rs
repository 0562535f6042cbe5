//! `just bench-overhead` / `just bench-extproc`: what routing adds to Envoy, measured side by side.
//!
//! One Envoy per variant, all rendered from `envoy/envoy.yaml.tmpl`, in front of the same
//! simulated backend: plain Envoy; the wasm filter with an explicit model (no callout); the wasm
//! filter routing `MoM` through its gRPC callout; and, with `--extproc`, the ExtProc design
//! (`ext_proc` + a Rust ext_proc server doing the same rewrite with the same Classify call). The
//! classifier is the instant-answer test double, so the architecture is measured, not a model.
//! Requests are interleaved round-robin (rotating start) so drift hits all variants alike. CPU per
//! request is the variant's Envoy (+ ext_proc server) CPU time over the requests it served.
//!
//! With `--dynamo` the backend is NVIDIA Dynamo for real (its frontend with the KV router and a
//! prefill + decode mocker worker per model, `tests/src/dynamo.rs`) and the classifier the real
//! sidecar: Dynamo alone, then Envoy with the filter and an explicit model, then `MoM` classified
//! by the sidecar onto the same model — what the router adds in front of Dynamo. The prompt goes
//! to qwen3-8b through a category with no system prompt and no reasoning switch (checked before
//! measuring), so Dynamo does the same work for all three; every request skips the semantic cache.
//!
//! With `--compare-wasm PATH` a second build of the filter (another profile, another change) runs
//! as two more variants (explicit model, callout) in the same interleaved run, so an A/B of two
//! builds is not blurred by the machine's load drifting between runs.
//!
//! Usage: bench-overhead [--requests N] [--concurrency 1,16] [--extproc] [--saturation-secs S] [--dynamo]
//!        [--compare-wasm PATH]

use anyhow::{Context, Result};
use router_tests::classifier_double::{Behaviour, ClassifierDouble};
use router_tests::client::HttpClient;
use router_tests::dynamo::{DynamoOptions, DynamoStack};
use router_tests::sidecar::SidecarProcess;
use router_tests::envoy::{free_port, EnvoyConfig, EnvoyProcess};
use router_tests::openai_sim;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

struct Variant {
    name: &'static str,
    url: String,
    body: String,
    /// Processes whose CPU time is this variant's cost.
    pids: Vec<u32>,
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// utime + stime of a process, in seconds.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat.rsplit_once(')').map(|(_, r)| r.split_whitespace().collect()).unwrap_or_default();
    let ticks: f64 = fields.get(11).and_then(|v| v.parse().ok()).unwrap_or(0.0)
        + fields.get(12).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    ticks / 100.0
}

fn cpu_of(pids: &[u32]) -> f64 {
    pids.iter().map(|p| cpu_seconds(*p)).sum()
}

struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn chat_body(model: &str) -> String {
    serde_json::json!({"model": model, "messages": [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": "What is the derivative of x^3 + 2x with respect to x?"}
    ], "temperature": 0.2})
    .to_string()
}

async fn start_envoy(config: EnvoyConfig) -> Result<EnvoyProcess> {
    tokio::task::spawn_blocking(move || EnvoyProcess::start(config)).await?
}

/// Closed-loop interleaved run; returns latencies (µs) per variant and the wall time.
async fn interleaved(
    variants: &Arc<Vec<(String, String)>>,
    concurrency: usize,
    per_variant: usize,
    headers: &'static [(&'static str, &'static str)],
) -> (Vec<Vec<f64>>, f64) {
    let n = variants.len();
    let per_worker = per_variant.div_ceil(concurrency);
    let warmup = 20usize;
    let started = Instant::now();
    let mut workers = Vec::new();
    for worker in 0..concurrency {
        let variants = variants.clone();
        workers.push(tokio::spawn(async move {
            let client = HttpClient::new(Duration::from_secs(10));
            let mut samples = vec![Vec::new(); n];
            for round in 0..(per_worker + warmup) {
                for k in 0..n {
                    let v = (round + worker + k) % n;
                    let (url, body) = &variants[v];
                    let t = Instant::now();
                    let reply = client.post(url, body.clone(), headers).await.expect("request");
                    assert_eq!(reply.status, 200, "{}", reply.text());
                    if round >= warmup {
                        samples[v].push(t.elapsed().as_secs_f64() * 1e6);
                    }
                }
            }
            samples
        }));
    }
    let mut all = vec![Vec::new(); n];
    for w in workers {
        for (v, s) in w.await.expect("worker").into_iter().enumerate() {
            all[v].extend(s);
        }
    }
    for s in all.iter_mut() {
        s.sort_by(f64::total_cmp);
    }
    (all, started.elapsed().as_secs_f64())
}

/// One variant alone at `concurrency` for `secs`: requests per second.
async fn saturation(url: &str, body: &str, concurrency: usize, secs: f64) -> f64 {
    let done = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let mut workers = Vec::new();
    for _ in 0..concurrency {
        let (url, body, done) = (url.to_string(), body.to_string(), done.clone());
        workers.push(tokio::spawn(async move {
            let client = HttpClient::new(Duration::from_secs(10));
            while Instant::now() < deadline {
                let reply = client.post(&url, body.clone(), &[]).await.expect("request");
                assert_eq!(reply.status, 200);
                done.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    for w in workers {
        w.await.expect("worker");
    }
    done.load(Ordering::Relaxed) as f64 / secs
}

#[tokio::main]
async fn main() -> Result<()> {
    let mut requests = 2000usize;
    let mut concurrencies = vec![1usize, 16];
    let mut with_extproc = false;
    let mut saturation_secs = 0.0f64;
    let mut with_dynamo = false;
    let mut compare_wasm: Option<std::path::PathBuf> = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--requests" => requests = args.next().unwrap_or_default().parse()?,
            "--concurrency" => {
                concurrencies = args.next().unwrap_or_default().split(',').map(str::parse).collect::<Result<_, _>>()?
            }
            "--extproc" => with_extproc = true,
            "--saturation-secs" => saturation_secs = args.next().unwrap_or_default().parse()?,
            "--dynamo" => with_dynamo = true,
            "--compare-wasm" => compare_wasm = Some(args.next().unwrap_or_default().into()),
            other => anyhow::bail!("unknown argument {other:?}"),
        }
    }

    if with_dynamo {
        return dynamo_overhead(requests, &concurrencies).await;
    }
    let (backend, _) = openai_sim::spawn("127.0.0.1:0".parse()?, "primary").await?;
    let classifier = ClassifierDouble::start(Behaviour::Decide).await;
    let filter_config = r#"{"default_model":"qwen3-8b","timeout_ms":1000}"#;
    let config = |filter: Option<&str>, extproc: Option<u16>, wasm: Option<&std::path::Path>| {
        let mut c = EnvoyConfig::new(classifier.addr.port(), backend.port(), backend.port(), filter_config);
        c.secondary_models.clear();
        c.filter_config = filter.map(str::to_string);
        c.extproc_port = extproc;
        if let Some(path) = wasm {
            c.wasm_path = path.to_path_buf();
        }
        c
    };

    let mut envoys = Vec::new();
    let mut variants = Vec::new();
    let mut layout = vec![
        ("envoy (no filter)", None, "qwen3-8b", None),
        ("wasm filter, explicit model", Some(filter_config), "qwen3-8b", None),
        ("wasm filter + classifier callout", Some(filter_config), "MoM", None),
    ];
    if let Some(path) = &compare_wasm {
        layout.push(("compared wasm, explicit model", Some(filter_config), "qwen3-8b", Some(path.as_path())));
        layout.push(("compared wasm + classifier callout", Some(filter_config), "MoM", Some(path.as_path())));
    }
    for (name, filter, model, wasm) in layout {
        let envoy = start_envoy(config(filter, None, wasm)).await?;
        variants.push(Variant { name, url: envoy.url("/v1/chat/completions"), body: chat_body(model), pids: vec![envoy.pid()] });
        envoys.push(envoy);
    }
    let mut _extproc_server = None;
    if with_extproc {
        let port = free_port();
        let exe = std::env::current_exe()?.with_file_name("extproc-baseline");
        let child = Command::new(&exe)
            .args(["--listen", &format!("127.0.0.1:{port}"), "--classifier", &classifier.addr.to_string()])
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {}", exe.display()))?;
        let server_pid = child.id();
        _extproc_server = Some(KillOnDrop(child));
        tokio::time::sleep(Duration::from_millis(300)).await;
        let envoy = start_envoy(config(None, Some(port), None)).await?;
        variants.push(Variant {
            name: "ext_proc + classifier callout",
            url: envoy.url("/v1/chat/completions"),
            body: chat_body("MoM"),
            pids: vec![envoy.pid(), server_pid],
        });
        envoys.push(envoy);
    }

    let targets: Arc<Vec<(String, String)>> = Arc::new(variants.iter().map(|v| (v.url.clone(), v.body.clone())).collect());
    println!("| concurrency | variant | p50 (µs) | p99 (µs) | added p50 (µs) | added p99 (µs) | CPU/request (µs) |");
    println!("|---|---|---|---|---|---|---|");
    for &concurrency in &concurrencies {
        let cpu_before: Vec<f64> = variants.iter().map(|v| cpu_of(&v.pids)).collect();
        let (samples, _) = interleaved(&targets, concurrency, requests, &[]).await;
        for (i, v) in variants.iter().enumerate() {
            let s = &samples[i];
            let (p50, p99) = (percentile(s, 0.5), percentile(s, 0.99));
            let (base50, base99) = (percentile(&samples[0], 0.5), percentile(&samples[0], 0.99));
            let added = if i == 0 { ("—".into(), "—".into()) } else { (format!("{:+.0}", p50 - base50), format!("{:+.0}", p99 - base99)) };
            // Warm-up requests also burned CPU; count them too.
            let served = s.len() + 20 * concurrency;
            let cpu = (cpu_of(&v.pids) - cpu_before[i]) * 1e6 / served as f64;
            println!("| {concurrency} | {} | {p50:.0} | {p99:.0} | {} | {} | {cpu:.0} |", v.name, added.0, added.1);
        }
    }
    if saturation_secs > 0.0 {
        let concurrency = *concurrencies.iter().max().unwrap_or(&16);
        println!("\n| variant | throughput alone at concurrency {concurrency} (req/s) |\n|---|---|");
        for v in &variants {
            let rps = saturation(&v.url, &v.body, concurrency, saturation_secs).await;
            println!("| {} | {rps:.0} |", v.name);
        }
    }
    println!("\nclassifier calls: {}", classifier.calls());
    Ok(())
}

/// `--dynamo`: Dynamo alone, Envoy + filter with an explicit model, and `MoM` through the real
/// sidecar, all answered by the same Dynamo deployment, interleaved.
async fn dynamo_overhead(requests: usize, concurrencies: &[usize]) -> Result<()> {
    let dynamo = tokio::task::spawn_blocking(|| DynamoStack::start(DynamoOptions::default()));
    let sidecar = tokio::task::spawn_blocking(|| SidecarProcess::start("classifier-svc/config/router.yaml", &[]));
    let (dynamo, sidecar) = (dynamo.await??, sidecar.await??);
    let filter_config = r#"{"default_model":"qwen3-8b","timeout_ms":2000}"#;
    let envoy = start_envoy(EnvoyConfig::new(sidecar.grpc_port, dynamo.http_port, dynamo.http_port, filter_config)).await?;
    // 16 generated tokens: the mocker simulates vLLM's prefill and decode timing on the CPU.
    let body = |model: &str| {
        serde_json::json!({"model": model, "max_tokens": 16, "messages": [
            {"role": "user", "content": "Which treaty ended the Thirty Years' War in 1648?"}
        ]})
        .to_string()
    };
    let check = HttpClient::default().post(&envoy.url("/v1/chat/completions"), body("MoM"), &SKIP_CACHE).await?;
    let routed = check.header("x-vsr-selected-model").unwrap_or_default().to_string();
    anyhow::ensure!(routed == "qwen3-8b", "the prompt must route to qwen3-8b (got {routed:?}): {}", check.text());
    let variants = [
        ("Dynamo alone (qwen3-8b)", dynamo.url("/v1/chat/completions"), body("qwen3-8b")),
        ("Envoy + filter, explicit qwen3-8b", envoy.url("/v1/chat/completions"), body("qwen3-8b")),
        ("Envoy + filter, MoM → qwen3-8b (real sidecar)", envoy.url("/v1/chat/completions"), body("MoM")),
    ];
    let targets: Arc<Vec<(String, String)>> = Arc::new(variants.iter().map(|(_, u, b)| (u.clone(), b.clone())).collect());
    println!("| concurrency | variant | p50 (ms) | p99 (ms) | added p50 (ms) | added p99 (ms) |");
    println!("|---|---|---|---|---|---|");
    for &concurrency in concurrencies {
        let (samples, _) = interleaved(&targets, concurrency, requests, &SKIP_CACHE).await;
        let (base50, base99) = (percentile(&samples[0], 0.5), percentile(&samples[0], 0.99));
        for (i, (name, _, _)) in variants.iter().enumerate() {
            let (p50, p99) = (percentile(&samples[i], 0.5), percentile(&samples[i], 0.99));
            let added = if i == 0 {
                ("—".to_string(), "—".to_string())
            } else {
                (format!("{:+.2}", (p50 - base50) / 1e3), format!("{:+.2}", (p99 - base99) / 1e3))
            };
            println!("| {concurrency} | {name} | {:.2} | {:.2} | {} | {} |", p50 / 1e3, p99 / 1e3, added.0, added.1);
        }
    }
    println!("\nrouted by the sidecar: {}", envoy.counter("semantic_router.requests.routed"));
    Ok(())
}

/// Every request reaches the backend: the semantic cache would answer repeats from Envoy.
const SKIP_CACHE: [(&str, &str); 1] = [("x-vsr-skip-cache", "true")];
