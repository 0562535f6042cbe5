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
    /// Measure latency (p50/p99) and throughput at batch sizes 1, 8, 32 on the embedding model.
    Bench {
        #[command(flatten)]
        common: Common,
        /// Runs for the latency measurement.
        #[arg(long, default_value_t = 200)]
        runs: usize,
        /// Seconds per batch size for the throughput measurement.
        #[arg(long, default_value_t = 3.0)]
        seconds: f64,
        /// Prompt to measure (default: a ~64-token prompt).
        #[arg(long)]
        text: Option<String>,
    },
}

#[tokio::main]
async fn main() -> Result<()> {
    let cli = Cli::parse();
    classifier_svc::logging::init(cli.log_format);
    match cli.command {
        Command::Serve { common, listen, metrics_listen } => {
            let mut cfg = common.load()?;
            if let Some(l) = listen {
                cfg.server.listen = l;
            }
            if let Some(m) = metrics_listen {
                cfg.server.metrics_listen = m;
            }
            cfg.validate()?;
            classifier_svc::serve(cfg, classifier_svc::shutdown_signal()).await
        }
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
                "reason": d.reason,
                "jailbreak": d.jailbreak.as_ref().map(|j| serde_json::json!({"flagged": j.flagged, "label": j.label, "confidence": j.confidence})),
                "block": d.block.as_ref().map(|b| serde_json::json!({"status": b.status, "type": b.r#type, "code": b.code, "message": b.message})),
                "reasoning": d.reasoning.as_ref().map(|r| serde_json::json!({"enabled": r.enabled, "chat_template_kwarg": r.chat_template_kwarg, "effort": r.effort})),
                "system_prompt": d.system_prompt.as_ref().map(|p| serde_json::json!({"text": p.text, "mode": if p.mode == 1 { "replace" } else { "insert" }})),
                "scores": d.scores.iter().map(|s| serde_json::json!({"category": s.category, "score": s.score})).collect::<Vec<_>>(),
                "headers": d.headers.iter().map(|h| serde_json::json!({"name": h.name, "value": h.value})).collect::<Vec<_>>(),
                "processing_micros": d.processing_micros,
            });
            println!("{}", serde_json::to_string_pretty(&json)?);
            Ok(())
        }
        Command::Bench { common, runs, seconds, text } => {
            let cfg = common.load()?;
            if cfg.bert_model.device != Device::Cpu {
                anyhow::bail!("bench measures the CPU backend; use --device cpu");
            }
            let opts = LoadOptions {
                max_len: Some(cfg.bert_model.max_seq_len),
                task: Some(Task::Embedding),
            };
            let model = Model::<CpuBackend>::load(&cfg.bert_model.model_id, &opts, &Default::default())?;
            let text = text.unwrap_or_else(|| bench::PROMPT_64.to_string());
            let lat = bench::latency(&model, &text, runs)?;
            println!("{}", serde_json::to_string(&serde_json::json!({"latency": lat}))?);
            for b in [1, 8, 32] {
                let t = bench::throughput(&model, &text, b, Duration::from_secs_f64(seconds))?;
                println!("{}", serde_json::to_string(&serde_json::json!({"throughput": t}))?);
            }
            Ok(())
        }
    }
}
