//! `classifier-svc`: the semantic-router classifier sidecar.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use clap::{Parser, Subcommand};
use classifier_svc::config::{Config, Device};
use classifier_svc::metrics::Metrics;
use classifier_svc::model::{LoadOptions, Model, Task};
use classifier_svc::{bench, CpuBackend, Engine};
use router_proto::v1::{ClassifyRequest, Turn};

const DEFAULT_CONFIG: &str = "classifier-svc/config/router.yaml";

#[derive(Parser)]
#[command(name = "classifier-svc", version, about = "Semantic-router classifier sidecar (gRPC)")]
struct Cli {
    /// Log format on stderr: `text` or `json` (one object per line, with the request's span
    /// fields such as request_id).
    #[arg(long, global = true, env = "SR_LOG_FORMAT", value_enum, default_value = "text")]
    log_format: classifier_svc::logging::LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Args, Clone)]
struct Common {
    /// Router configuration (YAML); `SR__<SECTION>__<KEY>` variables override its keys.
    #[arg(long, env = "SR_CONFIG", default_value = DEFAULT_CONFIG)]
    config: PathBuf,
    /// Inference device (overrides bert_model.device).
    #[arg(long, env = "SR_DEVICE")]
    device: Option<Device>,
}

impl Common {
    fn load(&self) -> Result<Config> {
        let mut cfg = Config::load(&self.config)?;
        if let Some(d) = self.device {
            cfg.bert_model.device = d;
        }
        Ok(cfg)
    }
}

#[derive(Subcommand)]
enum Command {
    /// Run the gRPC server (health NOT_SERVING until the model is warm).
    Serve {
        #[command(flatten)]
        common: Common,
        /// gRPC listen address (overrides server.listen).
        #[arg(long, env = "SR_LISTEN")]
        listen: Option<String>,
        /// Prometheus metrics listen address (overrides server.metrics_listen; "" disables).
        #[arg(long, env = "SR_METRICS_LISTEN")]
        metrics_listen: Option<String>,
    },
    /// Classify one prompt and print the decision as JSON.
    Classify {
        #[command(flatten)]
        common: Common,
        /// Earlier turns (oldest first), each as a user turn.
        #[arg(long = "context")]
        context: Vec<String>,
        /// The prompt.
        text: String,
    },
    /// Measure the embedding model: single-text latency (p50/p99), then throughput per batch
    /// size (at a fixed sequence length with --seq, the GPU comparison setting).
    Bench {
        #[command(flatten)]
        common: Common,
        /// Runs for the latency measurement (0 skips it).
        #[arg(long, default_value_t = 200)]
        runs: usize,
        /// Seconds per batch size for the throughput measurement.
        #[arg(long, default_value_t = 3.0)]
        seconds: f64,
        /// Prompt to measure (default: a ~64-token prompt).
        #[arg(long)]
        text: Option<String>,
        /// Batch sizes for the throughput measurement.
        #[arg(long, value_delimiter = ',', default_value = "1,8,32")]
        batches: Vec<usize>,
        /// Fixed sequence length: every text is cut to exactly this many tokens (real prompts,
        /// no padding), and the first pass at each shape is reported apart.
        #[arg(long)]
        seq: Option<usize>,
        /// Float precision of the model (f16/bf16 need --device cuda).
        #[arg(long, default_value = "f32")]
        dtype: Precision,
    },
    /// Open-loop load against a running server: finds the maximum throughput with a closed
    /// loop, then sends Classify at fixed rates (fractions of that maximum, or --rates) with
    /// real prompts of mixed lengths; one JSON line per run.
    Loadgen {
        /// Server address.
        #[arg(long, default_value = "http://127.0.0.1:50051")]
        addr: String,
        /// Seconds per run.
        #[arg(long, default_value_t = 10.0)]
        seconds: f64,
        /// Concurrent requests of the closed-loop (maximum throughput) run.
        #[arg(long, default_value_t = 256)]
        concurrency: usize,
        /// Open-loop rates as fractions of the measured maximum.
        #[arg(long, value_delimiter = ',', default_value = "0.5")]
        fractions: Vec<f64>,
        /// Open-loop rates in requests/s (skips the closed-loop run).
        #[arg(long, value_delimiter = ',')]
        rates: Vec<f64>,
        /// HTTP/2 connections the requests are spread over.
        #[arg(long, default_value_t = 8)]
        connections: usize,
        /// Seconds to wait for the server to answer.
        #[arg(long, default_value_t = 300.0)]
        wait: f64,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum Precision {
    F32,
    F16,
    Bf16,
}

#[tokio::main]
async fn main() -> Result<()> {
    let cli = Cli::parse();
    if let Command::Serve { common, listen, metrics_listen } = cli.command {
        // The config first: it says whether spans are exported (config loading logs nothing).
        classifier_svc::config::CommandLine { listen, metrics_listen, device: common.device }.install();
        let mut cfg = Config::load(&common.config)?;
        cfg.validate()?;
        let provider = classifier_svc::telemetry::provider(&cfg.observability.tracing)?;
        let tracer = provider.as_ref().map(|p| {
            use opentelemetry::trace::TracerProvider as _;
            p.tracer("classifier-svc")
        });
        classifier_svc::logging::init(cli.log_format, tracer);
        let served = classifier_svc::serve(cfg, classifier_svc::shutdown_signal()).await;
        if let Some(p) = provider {
            // Flush the spans still batched.
            let _ = tokio::task::spawn_blocking(move || p.shutdown()).await;
        }
        return served;
    }
    classifier_svc::logging::init(cli.log_format, None);
    match cli.command {
        Command::Serve { .. } => unreachable!("handled above"),
        Command::Classify { common, context, text } => {
            let cfg = common.load()?;
            let engine = tokio::task::spawn_blocking(move || {
                Engine::build(&cfg, Arc::new(Metrics::new()))
            })
            .await??;
            let req = ClassifyRequest {
                text,
                context: context
                    .into_iter()
                    .map(|c| Turn { role: "user".into(), content: c })
                    .collect(),
                ..Default::default()
            };
            let d = engine.classify(&req).await?;
            let json = serde_json::json!({
                "selected_model": d.selected_model,
                "category": d.category,
                "confidence": d.confidence,
                "reason": d.reason().wire(),
                "jailbreak": d.jailbreak.as_ref().map(|j| serde_json::json!({"flagged": j.flagged, "label": j.label, "confidence": j.confidence})),
                "block": d.block.as_ref().map(|b| serde_json::json!({"status": b.status, "type": b.r#type, "code": b.code, "message": b.message})),
                "reasoning": d.reasoning.as_ref().map(|r| serde_json::json!({"enabled": r.enabled, "chat_template_kwarg": r.chat_template_kwarg, "effort": r.effort})),
                "system_prompt": d.system_prompt.as_ref().map(|p| serde_json::json!({"text": p.text, "mode": if p.mode == 1 { "replace" } else { "insert" }})),
                "scores": d.scores.iter().map(|s| serde_json::json!({"category": s.category, "score": s.score})).collect::<Vec<_>>(),
                "pii": d.pii.as_ref().map(|p| serde_json::json!({"violation": p.violation, "types": p.types})),
                "decision": d.decision,
                "processing_micros": d.processing_micros,
            });
            println!("{}", serde_json::to_string_pretty(&json)?);
            Ok(())
        }
        Command::Bench { common, runs, seconds, text, batches, seq, dtype } => {
            let cfg = common.load()?;
            let args = BenchArgs { runs, seconds, text, batches, seq, dtype };
            match cfg.bert_model.device {
                Device::Cpu if dtype != Precision::F32 => {
                    anyhow::bail!("--dtype {dtype:?} needs --device cuda (the CPU backend runs f32)")
                }
                Device::Cpu => run_bench::<CpuBackend>(&cfg, &args, Default::default()),
                #[cfg(feature = "cuda")]
                Device::Cuda => {
                    classifier_svc::gpu::probe()?;
                    classifier_svc::gpu::configure_cubecl();
                    type B = burn::backend::Cuda;
                    let device = burn::backend::cuda::CudaDevice::default();
                    let float = match dtype {
                        Precision::F32 => burn::tensor::DType::F32,
                        Precision::F16 => burn::tensor::DType::F16,
                        Precision::Bf16 => burn::tensor::DType::BF16,
                    };
                    burn::tensor::set_default_dtypes::<B>(&device, float, burn::tensor::DType::I32)
                        .map_err(|e| anyhow::anyhow!("setting the float type: {e:?}"))?;
                    run_bench::<B>(&cfg, &args, device)
                }
                #[cfg(not(feature = "cuda"))]
                Device::Cuda => anyhow::bail!("this binary was built without the `cuda` feature"),
            }
        }
        Command::Loadgen { addr, seconds, concurrency, fractions, rates, connections, wait } => {
            use classifier_svc::bench::load;
            let prompts = bench::prompts();
            let mut clients = load::connect(&addr, connections)?;
            load::wait_ready(&mut clients[0], Duration::from_secs_f64(wait)).await?;
            let dur = Duration::from_secs_f64(seconds);
            // A short warm-up so connection set-up is not measured.
            load::closed_loop(&clients, &prompts, concurrency.min(32), Duration::from_secs(1)).await?;
            let rates = if rates.is_empty() {
                let max = load::closed_loop(&clients, &prompts, concurrency, dur).await?;
                println!("{}", serde_json::to_string(&max)?);
                fractions.iter().map(|f| f * max.throughput_rps).collect()
            } else {
                rates
            };
            for rps in rates {
                let r = load::open_loop(&clients, &prompts, rps, dur).await?;
                println!("{}", serde_json::to_string(&r)?);
            }
            Ok(())
        }
    }
}

struct BenchArgs {
    runs: usize,
    seconds: f64,
    text: Option<String>,
    batches: Vec<usize>,
    seq: Option<usize>,
    dtype: Precision,
}

fn run_bench<B: burn::tensor::backend::Backend>(cfg: &Config, a: &BenchArgs, device: B::Device) -> Result<()> {
    let opts = LoadOptions {
        max_len: Some(cfg.bert_model.max_seq_len),
        task: Some(Task::Embedding),
    };
    let t = std::time::Instant::now();
    let model = Model::<B>::load(&cfg.bert_model.model_id, &opts, &device)?;
    let tag = serde_json::json!({"device": format!("{:?}", cfg.bert_model.device).to_lowercase(), "dtype": format!("{:?}", a.dtype).to_lowercase()});
    println!("{}", serde_json::json!({"load_ms": t.elapsed().as_secs_f64() * 1e3, "run": tag}));
    let budget = Duration::from_secs_f64(a.seconds);
    match a.seq {
        Some(seq) => {
            for &b in &a.batches {
                let r = bench::fixed_shape(&model, b, seq, budget)?;
                println!("{}", serde_json::json!({"shape": r, "run": tag}));
            }
        }
        None => {
            let text = a.text.clone().unwrap_or_else(|| bench::PROMPT_64.to_string());
            for &b in &a.batches {
                let t = bench::throughput(&model, &text, b, budget)?;
                println!("{}", serde_json::json!({"throughput": t, "run": tag}));
            }
        }
    }
    if a.runs > 0 {
        let text = a.text.clone().unwrap_or_else(|| bench::PROMPT_64.to_string());
        let lat = bench::latency(&model, &text, a.runs)?;
        println!("{}", serde_json::json!({"latency": lat, "run": tag}));
    }
    Ok(())
}
