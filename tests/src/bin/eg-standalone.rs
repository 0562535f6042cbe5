//! `just eg`: Envoy Gateway in standalone mode on this machine with deploy/'s header-routing
//! wiring (`overlays/header-routing`, `values-header-routing.yaml`, rendered by the standalone
//! overlay), the real classifier sidecar with deploy/'s classifier ConfigMap, `eg-extension` as
//! Envoy Gateway's extension manager (in process), and two simulated OpenAI backends: one behind
//! the HTTPRoute's model rule, one behind its catch-all rule. Ctrl-C stops everything.
//!
//! Environment: `LISTEN_PORT` (default 8080) for the Gateway listener; `CLASSIFIER_BIN` (default
//! `target/release/classifier-svc`). Homes, certificates, the rendered resources and Envoy
//! Gateway's log stay in `target/eg-standalone/`.

use anyhow::{Context, Result};
use router_tests::eg::{overlay, EnvoyGateway, Setup};
use router_tests::envoy::{free_port, repo_root, wasm_filter_path};
use router_tests::openai_sim;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    let root = repo_root();
    std::env::set_current_dir(&root)?;
    let work = root.join("target/eg-standalone");
    std::fs::create_dir_all(&work)?;
    let port: u16 = std::env::var("LISTEN_PORT").ok().and_then(|p| p.parse().ok()).unwrap_or(8080);

    // The sidecar with deploy/'s ConfigMap (the policy the Envoy pods' sidecar runs).
    let cm = overlay::load("base/classifier-config.yaml")?.remove(0);
    let router_yaml = work.join("router.yaml");
    std::fs::write(&router_yaml, cm["data"]["router.yaml"].as_str().context("ConfigMap data router.yaml")?)?;
    let classifier_port = free_port();
    let bin = std::env::var("CLASSIFIER_BIN").unwrap_or_else(|_| "target/release/classifier-svc".into());
    let classifier = KillOnDrop(
        Command::new(&bin)
            .args(["serve", "--config"])
            .arg(&router_yaml)
            .args(["--listen", &format!("127.0.0.1:{classifier_port}")])
            .args(["--metrics-listen", &format!("127.0.0.1:{}", free_port())])
            .stdin(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {bin} (just build)"))?,
    );

    let (routed, _a) = openai_sim::spawn("127.0.0.1:0".parse()?, "routed").await?;
    let (default, _b) = openai_sim::spawn("127.0.0.1:0".parse()?, "default").await?;

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let extension = listener.local_addr()?;
    tokio::spawn(eg_extension::serve_on(listener, eg_extension::Options::default(), std::future::pending()));

    let setup = Setup {
        classifier_port,
        backends: vec![routed, default],
        extension: Some(extension),
        build: "overlays/header-routing".into(),
        values: vec!["envoy-gateway/values.yaml".into(), "envoy-gateway/values-header-routing.yaml".into()],
        wasm: wasm_filter_path(),
        work_dir: Some(work.clone()),
        gateway_port: Some(port),
    };
    let eg = tokio::task::spawn_blocking(move || -> Result<EnvoyGateway> {
        let mut eg = EnvoyGateway::start(setup)?;
        let admin = eg.wait_envoy(Duration::from_secs(120))?;
        eprintln!("eg: Envoy Gateway pid {}, its Envoy's admin on http://127.0.0.1:{admin}", eg.pid());
        Ok(eg)
    })
    .await??;
    eprintln!(
        "\neg: ready. Gateway on http://127.0.0.1:{port} (routed model → sim on {routed}, default rule → sim on {default});\n\
         Envoy Gateway's log: {}\n\
         Try:\n  curl -si http://127.0.0.1:{port}/v1/chat/completions -H 'content-type: application/json' \\\n    \
         -d '{{\"model\":\"MoM\",\"messages\":[{{\"role\":\"user\",\"content\":\"What is the integral of x^2?\"}}]}}'\n\
         (the sidecar answers once its models are loaded; until then requests fall back to the default model)\n\
         Ctrl-C stops everything.\n",
        eg.log_path.display()
    );
    // SIGINT or SIGTERM: stop Envoy Gateway (and with it its Envoy) and the sidecar on the way out.
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r?,
        _ = terminate.recv() => {}
    }
    eprintln!("eg: stopping");
    drop(eg);
    drop(classifier);
    Ok(())
}
