//! Runs the real sidecar (`target/release/classifier-svc`) as a child process.

use crate::envoy::{free_port, repo_root};
use anyhow::{bail, Context, Result};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running sidecar; killed on drop.
pub struct SidecarProcess {
    child: Child,
    pub grpc_port: u16,
}

impl SidecarProcess {
    /// Starts `classifier-svc serve` with `config` (relative to the repo root) and extra
    /// environment, and waits for its SERVING log line.
    pub fn start(config: &str, env: &[(&str, &str)]) -> Result<Self> {
        let root = repo_root();
        let bin = root.join("target/release/classifier-svc");
        if !bin.exists() {
            bail!("{} missing: run `cargo build --release -p classifier-svc` (just test does)", bin.display());
        }
        let grpc_port = free_port();
        let mut child = Command::new(&bin)
            .current_dir(&root)
            .args(["serve", "--config", config])
            .args(["--listen", &format!("127.0.0.1:{grpc_port}")])
            .args(["--metrics-listen", &format!("127.0.0.1:{}", free_port())])
            .envs(env.iter().copied())
            .env("RUST_LOG", "info")
            .stderr(Stdio::piped())
            .spawn()
            .context("start classifier-svc")?;
        let stderr = child.stderr.take().context("sidecar stderr")?;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if line.contains("classifier-svc SERVING") {
                    let _ = tx.send(());
                }
            }
        });
        let deadline = Instant::now() + Duration::from_secs(120);
        while rx.recv_timeout(Duration::from_millis(200)).is_err() {
            if let Some(status) = child.try_wait()? {
                bail!("classifier-svc exited during start: {status}");
            }
            if Instant::now() > deadline {
                bail!("classifier-svc not SERVING within 120 s");
            }
        }
        Ok(Self { child, grpc_port })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for SidecarProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Resident memory of a process in MiB (0 if it is gone).
pub fn rss_mib(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        .map_or(0.0, |kib| kib / 1024.0)
}
