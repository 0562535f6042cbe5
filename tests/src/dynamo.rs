//! Runs NVIDIA Dynamo for real on loopback: one OpenAI frontend with the KV router and, per model,
//! a prefill and a decode worker of Dynamo's mocker engine (vLLM's scheduler and KV cache,
//! simulated on the CPU; random tokens). The `ai-dynamo` 1.6.1 wheels live in the project venv
//! (`just dynamo`), the model directories (a tokenizer, a chat template, an end-of-sequence id) in
//! `models/dynamo/<name>`.
//!
//! Discovery goes through files (`--discovery-backend file`, `DYN_FILE_KV` in a temporary
//! directory of this stack), requests through Dynamo's TCP request plane, KV events through ZMQ —
//! no etcd, no NATS. Every address is loopback: the `DYN_*_HOST` variables make the workers bind
//! and advertise 127.0.0.1, and because 1.6.1's direct ZMQ publishers always bind 0.0.0.0, events
//! go through a small XSUB/XPUB relay bound on 127.0.0.1 (Dynamo's broker mode,
//! `DYN_ZMQ_BROKER_URL`). [`DynamoStack::listening_addrs`] lets tests check that.
//!
//! Each process runs in its own process group; dropping the stack kills the groups, and a
//! watchdog thread in each Python process kills its group if this process dies without dropping
//! the stack, so nothing outlives it. Ports are free ports, so stacks can run side by side.

use crate::envoy::{free_port, http_get, repo_root};
use anyhow::{bail, Context, Result};
use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read};
use std::net::{Ipv4Addr, SocketAddr};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The models the local stack and the tests serve: the ones `classifier-svc/config/router.yaml`
/// routes to (`just dynamo` prepares a model directory for each).
pub const MODELS: [&str; 2] = ["qwen3-8b", "deepseek-r1-math"];

/// How long start-up may take (Python imports, tokenizer load, discovery).
const START_TIMEOUT: Duration = Duration::from_secs(120);

/// The event relay: Dynamo's broker mode expects an XSUB socket for publishers and an XPUB socket
/// for subscribers. pyzmq is one of Dynamo's own requirements, so it is in the venv.
const ZMQ_RELAY: &str = r#"
import sys, zmq
ctx = zmq.Context()
xsub = ctx.socket(zmq.XSUB); xsub.bind(sys.argv[1])
xpub = ctx.socket(zmq.XPUB); xpub.bind(sys.argv[2])
print("zmq relay ready", flush=True)
zmq.proxy(xsub, xpub)
"#;

/// Runs every Python process of the stack: a watchdog thread kills the process group when the
/// parent (this process) is gone, even if it died without dropping the stack (SIGKILL, a test
/// harness timeout); then `-m module args...` or `-c code args...` as Python itself would.
const WATCHDOG: &str = r#"
import os, runpy, signal, sys, threading, time
parent = os.getppid()
def watch():
    while os.getppid() == parent:
        time.sleep(0.5)
    os.killpg(0, signal.SIGKILL)
threading.Thread(target=watch, daemon=True).start()
mode, target, args = sys.argv[1], sys.argv[2], sys.argv[3:]
if mode == "-m":
    sys.argv = [target] + args
    runpy.run_module(target, run_name="__main__", alter_sys=True)
else:
    sys.argv = ["-c"] + args
    exec(compile(target, "<relay>", "exec"), {"__name__": "__main__"})
"#;

/// The disaggregated worker roles.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Prefill,
    Decode,
}

impl Role {
    /// The `--disaggregation-mode` value.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Prefill => "prefill",
            Role::Decode => "decode",
        }
    }

    /// Dynamo's default component names (`backend` for decode, `prefill` for prefill); each
    /// model gets a namespace of its own so KV events of one model never reach another's router.
    fn endpoint(self, model: &str) -> String {
        let namespace: String = model.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '-' }).collect();
        let component = if self == Role::Prefill { "prefill" } else { "backend" };
        format!("dyn://{namespace}.{component}.generate")
    }
}

/// What to start.
#[derive(Debug, Clone)]
pub struct DynamoOptions {
    pub models: Vec<String>,
    /// The frontend's HTTP port on 127.0.0.1 (a free port by default).
    pub http_port: u16,
    /// Also write every log line to this process's stderr (the local stack); tests keep them in
    /// memory and show the tail when something fails.
    pub echo_logs: bool,
    /// `--speedup-ratio` of the mockers (1.0: the simulated engine's real timing).
    pub speedup_ratio: f64,
}

impl Default for DynamoOptions {
    fn default() -> Self {
        Self { models: MODELS.iter().map(|m| m.to_string()).collect(), http_port: free_port(), echo_logs: false, speedup_ratio: 1.0 }
    }
}

/// What the local stack runs for the frontend (after `python`). The deployment's
/// DynamoGraphDeployment runs the same frontend flags (`--http-port`, `--router-mode kv`);
/// discovery and planes are local-only choices here.
pub fn frontend_args(http_port: u16) -> Vec<String> {
    let port = http_port.to_string();
    ["-m", "dynamo.frontend", "--http-host", "127.0.0.1", "--http-port", &port, "--router-mode", "kv"]
        .into_iter()
        .chain(LOCAL_PLANES)
        .map(String::from)
        .collect()
}

/// What the local stack runs for `model`'s `role` worker: the mocker engine with the same
/// `--disaggregation-mode` the deployment's vLLM workers use.
pub fn mocker_args(model: &str, role: Role, speedup_ratio: f64) -> Vec<String> {
    let dir = model_dir(model).display().to_string();
    let (endpoint, speedup) = (role.endpoint(model), speedup_ratio.to_string());
    ["-m", "dynamo.mocker", "--model-path", &dir, "--model-name", model, "--endpoint", &endpoint]
        .into_iter()
        .chain(["--disaggregation-mode", role.as_str(), "--speedup-ratio", &speedup])
        .chain(LOCAL_PLANES)
        .map(String::from)
        .collect()
}

/// Discovery through files, requests over TCP, events over ZMQ: no etcd or NATS on one machine.
const LOCAL_PLANES: [&str; 6] = ["--discovery-backend", "file", "--request-plane", "tcp", "--event-plane", "zmq"];

/// The venv's Python (`just dynamo` installs Dynamo there), or `$DYNAMO_PYTHON`.
pub fn python() -> PathBuf {
    std::env::var("DYNAMO_PYTHON").map(PathBuf::from).unwrap_or_else(|_| repo_root().join(".venv/bin/python"))
}

/// The mocker's model directory for `model` (prepared by `just dynamo`).
pub fn model_dir(model: &str) -> PathBuf {
    repo_root().join("models/dynamo").join(model)
}

/// The last lines of every process's log, labelled.
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<VecDeque<String>>>);

impl Logs {
    const KEEP: usize = 2000;

    fn push(&self, line: String) {
        let mut lines = self.0.lock().unwrap();
        if lines.len() == Self::KEEP {
            lines.pop_front();
        }
        lines.push_back(line);
    }

    fn snapshot(&self) -> Vec<String> {
        self.0.lock().unwrap().iter().cloned().collect()
    }
}

/// Removes ANSI colour codes, so relayed logs read as plain text.
fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' && chars.peek() == Some(&'[') {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// One child in its own process group; the group is killed on drop.
struct Managed {
    label: String,
    child: Child,
}

impl Managed {
    fn spawn(label: &str, mut command: Command, logs: &Logs, echo: bool) -> Result<Self> {
        command.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).process_group(0);
        let mut child = command.spawn().with_context(|| format!("starting dynamo {label}"))?;
        let out = child.stdout.take().context("stdout")?;
        let err = child.stderr.take().context("stderr")?;
        for stream in [Box::new(out) as Box<dyn Read + Send>, Box::new(err)] {
            let (logs, label) = (logs.clone(), label.to_string());
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    let line = format!("[dynamo {label}] {}", strip_ansi(&line));
                    if echo {
                        eprintln!("{line}");
                    }
                    logs.push(line);
                }
            });
        }
        Ok(Self { label: label.to_string(), child })
    }

    fn kill(&mut self) {
        // The whole group: Python may have started helpers of its own. (The shell's `kill`
        // builtin, so no procps is needed.)
        let _ = Command::new("sh")
            .args(["-c", &format!("kill -KILL -- -{}", self.child.id())])
            .stderr(Stdio::null())
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Managed {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A running Dynamo deployment; every process is killed on drop.
pub struct DynamoStack {
    pub http_port: u16,
    pub models: Vec<String>,
    options: DynamoOptions,
    env: Vec<(String, String)>,
    logs: Logs,
    relay: Option<Managed>,
    frontend: Option<Managed>,
    /// Frontends started so far: each one's log lines carry its own label.
    frontends_started: usize,
    workers: Vec<(String, Role, Managed)>,
    _dir: tempfile::TempDir,
}

impl DynamoStack {
    /// Starts the relay, the frontend and the workers, and waits until the frontend lists every
    /// model and has found each model's prefill worker. Blocking (call it from `spawn_blocking`).
    pub fn start(options: DynamoOptions) -> Result<Self> {
        let python = python();
        if !python.exists() {
            bail!("{} missing: run `just dynamo`", python.display());
        }
        for model in &options.models {
            if !model_dir(model).join("tokenizer_config.json").exists() {
                bail!("{} missing: run `just dynamo`", model_dir(model).display());
            }
        }
        let dir = tempfile::tempdir()?;
        let (xsub, xpub) = (free_port(), free_port());
        let loopback = "127.0.0.1".to_string();
        let env: Vec<(String, String)> = [
            ("DYN_FILE_KV", dir.path().join("kv").display().to_string()),
            ("DYN_DISCOVERY_BACKEND", "file".into()),
            ("DYN_REQUEST_PLANE", "tcp".into()),
            ("DYN_EVENT_PLANE", "zmq".into()),
            ("DYN_ZMQ_BROKER_URL", format!("xsub=tcp://127.0.0.1:{xsub} , xpub=tcp://127.0.0.1:{xpub}")),
            ("DYN_TCP_RPC_HOST", loopback.clone()),
            ("DYN_EVENT_PLANE_HOST", loopback.clone()),
            ("DYN_TCP_RESPONSE_STREAM_HOST", loopback.clone()),
            ("DYN_SYSTEM_HOST", loopback.clone()),
            ("DYN_HTTP_RPC_HOST", loopback),
            // Model cards are shared through the discovery directory, not served over HTTP.
            ("DYN_SELF_HOST_METADATA", "0".into()),
            // Local model directories only: nothing is fetched from a hub.
            ("HF_HUB_OFFLINE", "1".into()),
            ("TRANSFORMERS_OFFLINE", "1".into()),
            ("NO_COLOR", "1".into()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        let mut stack = Self {
            http_port: options.http_port,
            models: options.models.clone(),
            options,
            env,
            logs: Logs::default(),
            relay: None,
            frontend: None,
            frontends_started: 0,
            workers: Vec::new(),
            _dir: dir,
        };

        let mut relay = stack.command();
        relay.args(["-c", ZMQ_RELAY, &format!("tcp://127.0.0.1:{xsub}"), &format!("tcp://127.0.0.1:{xpub}")]);
        stack.relay = Some(Managed::spawn("zmq-relay", relay, &stack.logs, stack.options.echo_logs)?);
        stack.wait_for_log("zmq-relay", "zmq relay ready", Instant::now() + Duration::from_secs(30))?;

        stack.start_frontend()?;
        for model in stack.models.clone() {
            for role in [Role::Prefill, Role::Decode] {
                stack.start_worker(&model, role)?;
            }
        }
        stack.wait_ready(START_TIMEOUT)?;
        Ok(stack)
    }

    /// `python -c WATCHDOG`, to be followed by `-m module ...` or `-c code ...`.
    fn command(&self) -> Command {
        let mut command = Command::new(python());
        command.current_dir(repo_root()).envs(self.env.iter().map(|(k, v)| (k, v))).args(["-c", WATCHDOG]);
        command
    }

    fn start_frontend(&mut self) -> Result<()> {
        let mut frontend = self.command();
        frontend.args(frontend_args(self.http_port));
        self.frontends_started += 1;
        let label = self.frontend_label();
        self.frontend = Some(Managed::spawn(&label, frontend, &self.logs, self.options.echo_logs)?);
        Ok(())
    }

    /// `frontend`, then `frontend#2`, ... after restarts.
    fn frontend_label(&self) -> String {
        match self.frontends_started {
            0 | 1 => "frontend".to_string(),
            n => format!("frontend#{n}"),
        }
    }

    /// Starts (or restarts) `model`'s worker of `role`.
    pub fn start_worker(&mut self, model: &str, role: Role) -> Result<()> {
        self.workers.retain(|(m, r, _)| !(m == model && *r == role));
        let mut worker = self.command();
        worker.args(mocker_args(model, role, self.options.speedup_ratio));
        let label = format!("{model} {}", role.as_str());
        let managed = Managed::spawn(&label, worker, &self.logs, self.options.echo_logs)?;
        self.workers.push((model.to_string(), role, managed));
        Ok(())
    }

    /// Kills `model`'s worker of `role` (SIGKILL to its process group: a crash, not a shutdown).
    pub fn kill_worker(&mut self, model: &str, role: Role) {
        self.workers.retain(|(m, r, _)| !(m == model && *r == role));
    }

    /// Kills the frontend and starts a new one on the same port and discovery directory, then
    /// waits until it serves every model again.
    pub fn restart_frontend(&mut self) -> Result<()> {
        self.kill_frontend();
        self.start_frontend()?;
        self.wait_ready(START_TIMEOUT)
    }

    /// Kills the frontend (SIGKILL to its process group).
    pub fn kill_frontend(&mut self) {
        self.frontend = None;
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{}", self.http_port, path)
    }

    /// Model ids `/v1/models` lists now (empty while the frontend is down).
    pub fn listed_models(&self) -> Vec<String> {
        let Ok(body) = http_get(self.http_port, "/v1/models") else { return Vec::new() };
        let Ok(json) = serde_json::from_str::<serde_json::Value>(&body) else { return Vec::new() };
        json["data"]
            .as_array()
            .map(|models| models.iter().filter_map(|m| m["id"].as_str().map(String::from)).collect())
            .unwrap_or_default()
    }

    /// The frontend's Prometheus metrics (`dynamo_frontend_*`).
    pub fn metrics(&self) -> String {
        http_get(self.http_port, "/metrics").unwrap_or_default()
    }

    fn wait_ready(&mut self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            self.check_alive()?;
            let listed = self.listed_models();
            let prefix = format!("[dynamo {}]", self.frontend_label());
            let frontend_log: Vec<String> = self.logs.snapshot().into_iter().filter(|l| l.starts_with(&prefix)).collect();
            // The frontend logs this once it has a model's prefill worker: before, requests would
            // run aggregated on the decode worker.
            let prefill_found = |m: &String| {
                frontend_log.iter().any(|l| l.contains("Prefill worker detected") && l.contains(&format!("model_name=\"{m}\"")))
            };
            if self.models.iter().all(|m| listed.contains(m) && prefill_found(m)) {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("Dynamo not serving {:?} after {timeout:?} (listed: {listed:?}):\n{}", self.models, self.log_tail(60));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn wait_for_log(&mut self, label: &str, needle: &str, deadline: Instant) -> Result<()> {
        let prefix = format!("[dynamo {label}]");
        while !self.logs.snapshot().iter().any(|l| l.starts_with(&prefix) && l.contains(needle)) {
            self.check_alive()?;
            if Instant::now() > deadline {
                bail!("no {needle:?} from {label}:\n{}", self.log_tail(40));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }

    /// Fails if any process of the stack has exited (with the log tail).
    pub fn check_alive(&mut self) -> Result<()> {
        let processes = self.relay.iter_mut().chain(self.frontend.iter_mut()).chain(self.workers.iter_mut().map(|(_, _, w)| w));
        for p in processes {
            if let Some(status) = p.child.try_wait()? {
                let label = p.label.clone();
                bail!("dynamo {label} exited with {status}:\n{}", self.log_tail(60));
            }
        }
        Ok(())
    }

    /// The last `n` log lines of all processes.
    pub fn log_tail(&self, n: usize) -> String {
        let lines = self.logs.snapshot();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// Every log line kept (the last few hundred).
    pub fn logs(&self) -> Vec<String> {
        self.logs.snapshot()
    }

    /// Process ids of the running processes (the group leaders).
    pub fn pids(&self) -> Vec<u32> {
        self.relay.iter().chain(self.frontend.iter()).chain(self.workers.iter().map(|(_, _, w)| w)).map(|p| p.child.id()).collect()
    }

    /// Every TCP address any process of the stack listens on (from /proc), to check loopback.
    pub fn listening_addrs(&self) -> Vec<SocketAddr> {
        let pids = self.pids();
        listening_addrs_of(&group_members(&pids))
    }
}

/// All processes whose process group is one of `leaders`.
fn group_members(leaders: &[u32]) -> Vec<u32> {
    let mut members = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else { continue };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { continue };
        // Fields after the parenthesised command: state ppid pgrp ...
        let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else { continue };
        let pgrp = rest.split_whitespace().nth(2).and_then(|v| v.parse::<u32>().ok());
        if pgrp.is_some_and(|g| leaders.contains(&g)) {
            members.push(pid);
        }
    }
    members
}

/// Listening TCP sockets (IPv4 and IPv6) owned by `pids`.
fn listening_addrs_of(pids: &[u32]) -> Vec<SocketAddr> {
    let mut inodes = std::collections::HashSet::new();
    for pid in pids {
        for fd in std::fs::read_dir(format!("/proc/{pid}/fd")).into_iter().flatten().flatten() {
            if let Ok(target) = std::fs::read_link(fd.path()) {
                let target = target.to_string_lossy().into_owned();
                if let Some(inode) = target.strip_prefix("socket:[").and_then(|s| s.strip_suffix(']')) {
                    inodes.insert(inode.to_string());
                }
            }
        }
    }
    let mut addrs = Vec::new();
    for (file, v6) in [("/proc/net/tcp", false), ("/proc/net/tcp6", true)] {
        let text = std::fs::read_to_string(file).unwrap_or_default();
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            // local_address st ... inode: 0A is LISTEN.
            if f.len() > 9 && f[3] == "0A" && inodes.contains(f[9]) {
                if let Some(addr) = parse_proc_addr(f[1], v6) {
                    addrs.push(addr);
                }
            }
        }
    }
    addrs
}

/// `0100007F:1F90` (little-endian words, as /proc/net/tcp writes them) → 127.0.0.1:8080.
fn parse_proc_addr(field: &str, v6: bool) -> Option<SocketAddr> {
    let (ip, port) = field.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let words: Vec<u32> = (0..ip.len() / 8).map(|i| u32::from_str_radix(&ip[i * 8..i * 8 + 8], 16)).collect::<Result<_, _>>().ok()?;
    let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
    let ip: std::net::IpAddr = if v6 {
        let b: [u8; 16] = bytes.try_into().ok()?;
        let v6 = std::net::Ipv6Addr::from(b);
        v6.to_ipv4_mapped().map(std::net::IpAddr::V4).unwrap_or(std::net::IpAddr::V6(v6))
    } else {
        let b: [u8; 4] = bytes.try_into().ok()?;
        std::net::IpAddr::V4(Ipv4Addr::from(b))
    };
    Some(SocketAddr::new(ip, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_addresses_decode() {
        assert_eq!(parse_proc_addr("0100007F:1F90", false), Some("127.0.0.1:8080".parse().unwrap()));
        assert_eq!(parse_proc_addr("00000000:0050", false), Some("0.0.0.0:80".parse().unwrap()));
        assert_eq!(
            parse_proc_addr("00000000000000000000000001000000:0050", true),
            Some("[::1]:80".parse().unwrap())
        );
        assert_eq!(
            parse_proc_addr("0000000000000000FFFF00000100007F:0050", true),
            Some("127.0.0.1:80".parse().unwrap())
        );
    }

    #[test]
    fn endpoints_are_per_model_and_colours_are_stripped() {
        assert_eq!(Role::Decode.endpoint("qwen3-8b"), "dyn://qwen3-8b.backend.generate");
        assert_eq!(Role::Prefill.endpoint("llama3.1"), "dyn://llama3-1.prefill.generate");
        assert_eq!(strip_ansi("\u{1b}[2mts\u{1b}[0m \u{1b}[32m INFO\u{1b}[0m x"), "ts  INFO x");
    }

    #[test]
    fn this_process_listens_where_it_binds() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        assert!(listening_addrs_of(&[std::process::id()]).contains(&addr));
    }
}
