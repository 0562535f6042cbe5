//! `just run`: the whole local stack in the foreground — the classifier sidecar, Envoy with the
//! filter, and NVIDIA Dynamo behind it: Dynamo's OpenAI frontend with the KV router and, for each
//! model the routing policy picks, a prefill and a decode worker of Dynamo's mocker engine
//! (`tests/src/dynamo.rs`; `just dynamo` installs it). Ctrl-C stops everything.
//!
//! Environment:
//! - `LISTEN` (default `127.0.0.1:8080`): where Envoy serves the OpenAI API.
//! - `BACKEND_URL` (e.g. `http://10.0.0.5:8000`): send every model to this OpenAI-compatible
//!   backend (a Dynamo frontend, vLLM, ...) instead of starting Dynamo.
//! - `DYNAMO_PORT` (default `8000`): the local Dynamo frontend's port on 127.0.0.1.
//! - `SIMULATED_BACKENDS=1`: the two simulated backends of the tests instead of Dynamo (no Python).
//! - `ROUTER_CONFIG` (default `classifier-svc/config/router.yaml`): the sidecar's routing policy.
//! - `CLASSIFIER_BIN` (default `target/release/classifier-svc`), `CLASSIFIER_ARGS` (extra args,
//!   e.g. `--device cuda`).

use anyhow::{bail, Context, Result};
use router_tests::dynamo::{DynamoOptions, DynamoStack};
use router_tests::envoy::{repo_root, EnvoyConfig, EnvoyProcess};
use router_tests::openai_sim;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const CLASSIFIER_PORT: u16 = 50051;
const METRICS_PORT: u16 = 9190;
const ADMIN_PORT: u16 = 9901;

struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).ok().filter(|v| !v.is_empty()).unwrap_or_else(|| default.to_string())
}

/// `http://host:port[/path]` → (host, port).
fn parse_backend_url(url: &str) -> Result<(String, u16)> {
    let rest = url
        .strip_prefix("http://")
        .with_context(|| format!("BACKEND_URL must start with http:// (got {url:?})"))?;
    let authority = rest.split('/').next().unwrap_or(rest);
    match authority.rsplit_once(':') {
        Some((host, port)) => Ok((host.trim_matches(['[', ']']).to_string(), port.parse().context("BACKEND_URL port")?)),
        None => Ok((authority.to_string(), 80)),
    }
}

/// Top-level `default_model:` of the routing policy, so fail-open uses the same default.
fn default_model(config_path: &std::path::Path) -> Result<String> {
    let text = std::fs::read_to_string(config_path).with_context(|| format!("reading {}", config_path.display()))?;
    // Top level in the categories format; under `providers.defaults` in a v0.3 file (the
    // first such key either way: comments start with `#`).
    text.lines()
        .find_map(|l| l.trim_start().strip_prefix("default_model:"))
        .map(|v| v.trim().trim_matches(['"', '\'']).to_string())
        .filter(|v| !v.is_empty())
        .with_context(|| format!("{} has no default_model", config_path.display()))
}

/// Relays the sidecar's log lines to our stderr and waits for its SERVING line (models loaded
/// and warm), so the stack is ready to classify when the curl line is printed.
fn wait_until_serving(child: &mut Child, timeout: Duration) -> Result<()> {
    let stderr = child.stderr.take().context("classifier stderr")?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            eprintln!("{line}");
            if line.contains("classifier-svc SERVING") {
                let _ = tx.send(());
            }
        }
    });
    let deadline = Instant::now() + timeout;
    while rx.recv_timeout(Duration::from_millis(200)).is_err() {
        if let Some(status) = child.try_wait()? {
            bail!("classifier exited with {status} during start");
        }
        if Instant::now() > deadline {
            bail!("classifier not SERVING within {timeout:?}");
        }
    }
    Ok(())
}

#[tokio::main]
async fn main() -> Result<()> {
    let root = repo_root();
    std::env::set_current_dir(&root)?;
    let listen = env_or("LISTEN", "127.0.0.1:8080");
    let (listen_address, listen_port) = listen.rsplit_once(':').context("LISTEN must be host:port")?;
    let router_config = root.join(env_or("ROUTER_CONFIG", "classifier-svc/config/router.yaml"));
    let default_model = default_model(&router_config)?;

    // Backends: one OpenAI-compatible backend for every model, Dynamo, or the simulators.
    let _sims;
    let mut dynamo = None;
    let (primary, secondary) = match std::env::var("BACKEND_URL").ok().filter(|v| !v.is_empty()) {
        Some(url) => {
            let backend = parse_backend_url(&url)?;
            eprintln!("local-stack: every model goes to {url}");
            _sims = None;
            (backend.clone(), backend)
        }
        None if env_or("SIMULATED_BACKENDS", "0") == "1" => {
            let (a, sa) = openai_sim::spawn("127.0.0.1:8001".parse()?, "primary").await?;
            let (b, sb) = openai_sim::spawn("127.0.0.1:8002".parse()?, "secondary").await?;
            eprintln!("local-stack: simulated backends on http://{a} (default models) and http://{b} (deepseek-r1-math)");
            _sims = Some((sa, sb));
            (("127.0.0.1".to_string(), a.port()), ("127.0.0.1".to_string(), b.port()))
        }
        None => {
            _sims = None;
            let options = DynamoOptions {
                http_port: env_or("DYNAMO_PORT", "8000").parse().context("DYNAMO_PORT")?,
                echo_logs: true,
                ..DynamoOptions::default()
            };
            eprintln!("local-stack: starting Dynamo (frontend on 127.0.0.1:{}, KV router) for {:?}", options.http_port, options.models);
            let stack = tokio::task::spawn_blocking(move || DynamoStack::start(options)).await??;
            eprintln!("local-stack: Dynamo serves {:?} on {}", stack.listed_models(), stack.url("/v1"));
            let port = stack.http_port;
            dynamo = Some(stack);
            // Dynamo's frontend routes by the body's model: both clusters point at it.
            (("127.0.0.1".to_string(), port), ("127.0.0.1".to_string(), port))
        }
    };

    // The classifier sidecar (real models on burn).
    let classifier_bin = root.join(env_or("CLASSIFIER_BIN", "target/release/classifier-svc"));
    let mut command = Command::new(&classifier_bin);
    command
        .args(["serve", "--config"])
        .arg(&router_config)
        .args(["--listen", &format!("127.0.0.1:{CLASSIFIER_PORT}")])
        .args(["--metrics-listen", &format!("127.0.0.1:{METRICS_PORT}")])
        .args(env_or("CLASSIFIER_ARGS", "").split_whitespace())
        .stdin(Stdio::null())
        .stderr(Stdio::piped());
    let mut classifier = KillOnDrop(
        command.spawn().with_context(|| format!("starting {} (build it with `just build`)", classifier_bin.display()))?,
    );
    wait_until_serving(&mut classifier.0, Duration::from_secs(300))?;

    let filter_config = serde_json::json!({
        "default_model": default_model,
        "classifier_cluster": "semantic_router_classifier",
        "timeout_ms": 500,
    })
    .to_string();
    let mut config = EnvoyConfig::new(CLASSIFIER_PORT, primary.1, secondary.1, &filter_config);
    config.listen_address = listen_address.to_string();
    config.listen_port = listen_port.parse().context("LISTEN port")?;
    config.ports_replaceable = false;
    config.admin_port = ADMIN_PORT;
    config.primary.0 = primary.0;
    config.secondary.0 = secondary.0;
    let mut envoy = tokio::task::spawn_blocking(move || EnvoyProcess::start_with_output(config, true)).await??;

    if let Some(d) = &dynamo {
        eprintln!("\nlocal-stack: Dynamo frontend http://127.0.0.1:{0}/v1/models, its metrics http://127.0.0.1:{0}/metrics", d.http_port);
    }
    eprintln!(
        "\nlocal-stack: ready. Envoy on http://{listen}, admin http://127.0.0.1:{ADMIN_PORT}, classifier metrics http://127.0.0.1:{METRICS_PORT}/metrics\n\
         Try:\n  curl -si http://{listen}/v1/chat/completions -H 'content-type: application/json' \\\n    \
         -d '{{\"model\":\"MoM\",\"max_tokens\":32,\"messages\":[{{\"role\":\"user\",\"content\":\"What is the integral of x^2?\"}}]}}'\n\
         Ctrl-C stops the stack.\n"
    );
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    loop {
        tokio::select! {
            _ = &mut ctrl_c => {
                eprintln!("local-stack: stopping");
                break;
            }
            _ = terminate.recv() => {
                eprintln!("local-stack: terminated, stopping");
                break;
            }
            _ = tokio::time::sleep(Duration::from_millis(250)) => {
                if let Some(status) = envoy.try_wait()? {
                    eprintln!("local-stack: envoy exited with {status}");
                    break;
                }
                if let Some(status) = classifier.0.try_wait()? {
                    eprintln!("local-stack: classifier exited with {status}");
                    break;
                }
                if let Some(Err(e)) = dynamo.as_mut().map(|d| d.check_alive()) {
                    eprintln!("local-stack: {e:#}");
                    break;
                }
            }
        }
    }
    drop(envoy);
    drop(classifier);
    drop(dynamo);
    Ok(())
}
