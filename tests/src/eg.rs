//! Envoy Gateway in standalone mode (File provider, Host infrastructure) as a child process, fed
//! with deploy/'s objects through the standalone overlay ([`overlay`]).
//!
//! What it needs on this machine, all prepared here and nothing downloaded at run time:
//! - the `envoy-gateway` binary (`just eg-build`: `go install` at the version deploy/ targets);
//! - its control-plane certificates (`envoy-gateway certgen --local --config-home`);
//! - the Envoy binary func-e would otherwise download: the venv's Envoy, linked where func-e
//!   looks for an installed version (`<dataHome>/envoy-versions/<version>/bin/envoy`), with
//!   that version pinned in the EnvoyProxy (`spec.provider.host.envoyVersion`);
//! - the Wasm module on a loopback HTTP server (Envoy Gateway fetches it, checks its sha256 and
//!   serves it to Envoy from its cache; see [`overlay`] for how Envoy reaches that cache).
//!
//! Envoy Gateway v1.9 binds some ports on all interfaces and at fixed numbers (xDS 18000, Wasm
//! cache 18002, file-provider health 8081, Envoy readiness 19003, and the Gateway listener on
//! 0.0.0.0): one instance at a time per machine ([`lock`]).

pub mod overlay;

use anyhow::{bail, Context, Result};
use serde_json::Value;
use sha2::Digest;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::envoy::{envoy_binary, free_port, http_get, repo_root};

/// The Envoy Gateway release deploy/ targets (the Helm chart and CRDs are v1.9).
pub const EG_VERSION: &str = "v1.9.1";
/// Ports Envoy Gateway v1.9 binds at fixed numbers in standalone mode.
pub const FIXED_PORTS: &[u16] = &[18000, 18002, 8081, 19003];

/// `$ENVOY_GATEWAY_BIN`, or what `just eg-build` installs (`.eg/<version>/bin/envoy-gateway`).
pub fn eg_binary() -> Result<PathBuf> {
    if let Ok(p) = std::env::var("ENVOY_GATEWAY_BIN") {
        return Ok(PathBuf::from(p));
    }
    let p = repo_root().join(".eg").join(EG_VERSION).join("bin/envoy-gateway");
    if !p.exists() {
        bail!("{} missing: run `just eg-build`", p.display());
    }
    Ok(p)
}

/// One standalone Envoy Gateway per machine at a time (fixed ports); hold this while one runs.
pub fn lock() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// The version string of an Envoy binary (`envoy --version`), e.g. `1.40.0`.
pub fn envoy_version(envoy: &Path) -> Result<String> {
    let out = Command::new(envoy).arg("--version").output().context("envoy --version")?;
    let text = String::from_utf8_lossy(&out.stdout);
    // "... version: <sha>/1.40.0/Clean/RELEASE/BoringSSL"
    text.split('/')
        .find(|part| part.split('.').count() == 3 && part.split('.').all(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit())))
        .map(str::to_string)
        .with_context(|| format!("no version in {text:?}"))
}

/// A one-file HTTP/1.1 server on 127.0.0.1 (the Wasm module for Envoy Gateway to fetch).
pub struct FileServer {
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
    pub path: String,
}

impl FileServer {
    pub fn start(path: &str, body: Vec<u8>) -> Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let (stop2, want) = (stop.clone(), format!("GET {path} "));
        std::thread::spawn(move || {
            while !stop2.load(Ordering::Relaxed) {
                let Ok((mut s, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(20));
                    continue;
                };
                let _ = s.set_nonblocking(false);
                let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let found = String::from_utf8_lossy(&head).starts_with(&want);
                let (status, payload): (&str, &[u8]) = if found { ("200 OK", &body) } else { ("404 Not Found", b"") };
                let _ = write!(s, "HTTP/1.1 {status}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n", payload.len());
                let _ = s.write_all(payload);
            }
        });
        Ok(Self { addr, stop, path: path.to_string() })
    }

    pub fn url(&self) -> String {
        format!("http://{}{}", self.addr, self.path)
    }
}

impl Drop for FileServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// What to run Envoy Gateway with.
#[derive(Debug, Clone)]
pub struct Setup {
    pub classifier_port: u16,
    /// The kustomization under deploy/ to run (`base` or an overlay).
    pub build: String,
    /// Helm values files under deploy/ (merged in order) with Envoy Gateway's configuration.
    pub values: Vec<String>,
    /// One per HTTPRoute rule of the build.
    pub backends: Vec<SocketAddr>,
    /// The extension server, for the values' extension manager.
    pub extension: Option<SocketAddr>,
    pub wasm: PathBuf,
    /// Where to keep the homes, resources and logs; a temporary directory when `None`.
    pub work_dir: Option<PathBuf>,
    /// Port of the Gateway listener; a free one when `None`.
    pub gateway_port: Option<u16>,
}

/// One condition of a status Envoy Gateway reported.
#[derive(Debug, Clone, PartialEq)]
pub struct Condition {
    pub kind: String,
    pub name: String,
    pub r#type: String,
    pub status: String,
    pub reason: String,
    pub message: String,
}

/// A running standalone Envoy Gateway (and the Envoy it started); stopped on drop.
pub struct EnvoyGateway {
    child: Child,
    _tmp: Option<tempfile::TempDir>,
    pub dir: PathBuf,
    pub log_path: PathBuf,
    pub gateway_port: u16,
    pub admin_port: u16,
    pub runtime_dir: PathBuf,
    pub wasm_server: FileServer,
    pub resources: Vec<Value>,
}

impl EnvoyGateway {
    /// Renders the overlay, prepares certificates and the Envoy binary, and starts
    /// `envoy-gateway server`. Returns once the process runs; see [`wait_envoy`](Self::wait_envoy).
    pub fn start(setup: Setup) -> Result<Self> {
        Self::start_with_filter_config(setup, serde_json::Map::new())
    }

    /// [`start`](Self::start) with keys of the EnvoyExtensionPolicy's filter config replaced
    /// (see [`overlay::Params::filter_config`]).
    pub fn start_with_filter_config(setup: Setup, filter_config: serde_json::Map<String, Value>) -> Result<Self> {
        for port in FIXED_PORTS {
            if std::net::TcpStream::connect(("127.0.0.1", *port)).is_ok() {
                bail!("port {port} is in use: is another Envoy Gateway running?");
            }
        }
        let eg = eg_binary()?;
        let (tmp, dir) = match &setup.work_dir {
            Some(d) => {
                std::fs::create_dir_all(d)?;
                (None, d.clone())
            }
            None => {
                let t = tempfile::Builder::new().prefix("eg-standalone").tempdir()?;
                let d = t.path().to_path_buf();
                (Some(t), d)
            }
        };
        let home = |n: &str| dir.join(n);
        let (config_home, data_home, state_home, runtime_dir, resources_dir) =
            (home("config"), home("data"), home("state"), home("runtime"), home("resources"));
        // Runtime files are per run (func-e's admin-address.txt among them): none from an
        // earlier run in a kept work directory may be mistaken for this run's.
        let _ = std::fs::remove_dir_all(&runtime_dir);
        for d in [&config_home, &data_home, &state_home, &runtime_dir, &resources_dir] {
            std::fs::create_dir_all(d)?;
        }

        // Control-plane certificates (xDS and Wasm-cache TLS, HMAC secret), once per home.
        if !config_home.join("certs/envoy-gateway/tls.crt").exists() {
            let out = Command::new(&eg)
                .args(["certgen", "--local", "--config-home"])
                .arg(&config_home)
                .output()
                .context("envoy-gateway certgen")?;
            if !out.status.success() {
                bail!("certgen failed: {}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
            }
        }

        // func-e runs an installed version without looking anything up.
        let envoy = envoy_binary()?;
        let version = envoy_version(&envoy)?;
        let bin_dir = data_home.join("envoy-versions").join(&version).join("bin");
        std::fs::create_dir_all(&bin_dir)?;
        let link = bin_dir.join("envoy");
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(std::fs::canonicalize(&envoy)?, &link)?;

        let module = std::fs::read(&setup.wasm)
            .with_context(|| format!("{} missing: run `just build-wasm`", setup.wasm.display()))?;
        let sha256 = hex(&sha2::Sha256::digest(&module));
        let wasm_server = FileServer::start("/semantic_router.wasm", module)?;

        let gateway_port = setup.gateway_port.unwrap_or_else(free_port);
        let params = overlay::Params {
            gateway_port,
            classifier_port: setup.classifier_port,
            backends: setup.backends.clone(),
            wasm_url: wasm_server.url(),
            wasm_sha256: sha256,
            envoy_certs: config_home.join("certs/envoy"),
            envoy_version: version,
            build: setup.build.clone(),
            filter_config,
        };
        let resources = overlay::resources(&params)?;
        std::fs::write(resources_dir.join("semantic-router.yaml"), overlay::to_yaml(&resources)?)?;
        let admin_port = free_port();
        let config = overlay::envoy_gateway_config(&overlay::GatewayParams {
            resources_dir: resources_dir.clone(),
            config_home,
            data_home,
            state_home,
            runtime_dir: runtime_dir.clone(),
            admin_port,
            values: setup.values.clone(),
            extension: setup.extension,
        })?;
        let config_path = dir.join("envoy-gateway.yaml");
        std::fs::write(&config_path, serde_yaml::to_string(&config)?)?;

        let log_path = dir.join("envoy-gateway.log");
        let log = std::fs::File::create(&log_path)?;
        let child = Command::new(&eg)
            .args(["server", "--config-path"])
            .arg(&config_path)
            .current_dir(&dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("spawning envoy-gateway")?;
        Ok(Self { child, _tmp: tmp, dir, log_path, gateway_port, admin_port, runtime_dir, wasm_server, resources })
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    pub fn log_tail(&self, lines: usize) -> String {
        let log = self.log();
        let all: Vec<&str> = log.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// The admin port of the Envoy that Envoy Gateway started (func-e has Envoy write it to
    /// `<runtimeDir>/<run id>/admin-address.txt`).
    pub fn envoy_admin_port(&self) -> Option<u16> {
        for entry in std::fs::read_dir(&self.runtime_dir).ok()?.flatten() {
            if let Ok(addr) = std::fs::read_to_string(entry.path().join("admin-address.txt")) {
                if let Some(port) = addr.trim().rsplit(':').next().and_then(|p| p.parse().ok()) {
                    return Some(port);
                }
            }
        }
        None
    }

    /// Waits until the Envoy that Envoy Gateway started is live and has the Gateway's listener.
    pub fn wait_envoy(&mut self, timeout: Duration) -> Result<u16> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait()? {
                bail!("envoy-gateway exited with {status}:\n{}", self.log_tail(60));
            }
            if let Some(port) = self.envoy_admin_port() {
                let listening = http_get(port, "/listeners?format=json").unwrap_or_default();
                if listening.contains(&format!("\"port_value\": {}", self.gateway_port))
                    || listening.contains(&format!("\"port_value\":{}", self.gateway_port))
                {
                    return Ok(port);
                }
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        bail!("no Envoy with the Gateway listener on port {} after {timeout:?}:\n{}", self.gateway_port, self.diagnostics())
    }

    /// The Envoy's admin `/config_dump` (what Envoy Gateway generated, as Envoy holds it).
    pub fn config_dump(&self) -> String {
        match self.envoy_admin_port() {
            Some(port) => http_get(port, "/config_dump").unwrap_or_else(|e| format!("config_dump: {e}")),
            None => "no Envoy admin address yet".into(),
        }
    }

    /// A counter of the filter (`semantic_router.…`) in the Envoy's admin stats; 0 if absent.
    pub fn counter(&self, name: &str) -> u64 {
        let Some(port) = self.envoy_admin_port() else { return 0 };
        http_get(port, "/stats")
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix(&format!("wasmcustom.{name}: ")).and_then(|v| v.trim().parse().ok()))
            .unwrap_or(0)
    }

    /// Envoy Gateway's log, its generated xDS as the Envoy holds it, and the rendered resources:
    /// for a failing test's output.
    pub fn diagnostics(&self) -> String {
        format!(
            "==== envoy-gateway log (tail) ====\n{}\n==== Envoy config_dump ====\n{}\n==== rendered resources ====\n{}",
            self.log_tail(80),
            self.config_dump(),
            overlay::to_yaml(&self.resources).unwrap_or_default()
        )
    }

    /// The latest status conditions Envoy Gateway logged for each object. In standalone mode
    /// the File provider has nowhere to write statuses and logs them instead ("Got new status
    /// for <Kind>" with the status as YAML).
    pub fn conditions(&self) -> Vec<Condition> {
        parse_status_log(&self.log())
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{}", self.gateway_port, path)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for EnvoyGateway {
    fn drop(&mut self) {
        // SIGTERM lets Envoy Gateway stop its Envoy (func-e also ties Envoy to its parent
        // with a parent-death signal, so a hard kill does not orphan it).
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        // The fixed ports are free again before the next instance starts.
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline
            && FIXED_PORTS.iter().any(|p| std::net::TcpStream::connect(("127.0.0.1", *p)).is_ok())
        {
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Parses Envoy Gateway's JSON log for status reports ("Got new status for <Kind>\n<YAML>", with
/// the object as `key`) into the latest condition per (kind, name, type). Conditions nested per
/// parent (routes) or ancestor (policies) count as the object's.
pub fn parse_status_log(log: &str) -> Vec<Condition> {
    let mut latest: Vec<Condition> = Vec::new();
    for line in log.lines() {
        let Ok(entry) = serde_json::from_str::<Value>(line) else { continue };
        let Some(msg) = entry["msg"].as_str() else { continue };
        let Some(rest) = msg.strip_prefix("Got new status for ") else { continue };
        let (kind, yaml) = rest.split_once('\n').unwrap_or((rest, ""));
        let Ok(status) = serde_yaml::from_str::<Value>(yaml) else { continue };
        let name = entry["key"].as_str().unwrap_or_default().to_string();
        let mut found = Vec::new();
        collect_conditions(&status, &mut found, false);
        for (in_listener, c) in found {
            let kind = if in_listener { format!("{}/listener", kind.trim()) } else { kind.trim().to_string() };
            let c = Condition {
                kind,
                name: name.clone(),
                r#type: c["type"].as_str().unwrap_or_default().into(),
                status: c["status"].as_str().unwrap_or_default().into(),
                reason: c["reason"].as_str().unwrap_or_default().into(),
                message: c["message"].as_str().unwrap_or_default().into(),
            };
            latest.retain(|o| !(o.kind == c.kind && o.name == c.name && o.r#type == c.r#type));
            latest.push(c);
        }
    }
    latest
}

/// Conditions of the object (for routes and policies: per parent / ancestor). A Gateway's
/// per-listener conditions are reported as kind `Gateway/listener`.
fn collect_conditions(v: &Value, out: &mut Vec<(bool, Value)>, in_listener: bool) {
    match v {
        Value::Object(map) => {
            for (k, x) in map {
                if k == "conditions" {
                    out.extend(x.as_array().into_iter().flatten().map(|c| (in_listener, c.clone())));
                } else {
                    collect_conditions(x, out, in_listener || k == "listeners");
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|x| collect_conditions(x, out, in_listener)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_log_lines_become_conditions() {
        let status = "conditions:\n- message: ok\n  reason: Accepted\n  status: \"True\"\n  type: Accepted\n- message: No addresses\n  reason: AddressNotAssigned\n  status: \"False\"\n  type: Programmed\nlisteners:\n- conditions:\n  - reason: Programmed\n    status: \"True\"\n    type: Programmed\n  name: http\n";
        let policy = "ancestors:\n- ancestorRef:\n    name: gw\n  conditions:\n  - reason: Accepted\n    status: \"True\"\n    type: Accepted\n";
        let log = [
            serde_json::json!({"level": "info", "msg": format!("Got new status for Gateway\n{status}"), "key": "ns/gw"}).to_string(),
            "not json".to_string(),
            serde_json::json!({"level": "info", "msg": "received a status update"}).to_string(),
            serde_json::json!({"level": "info", "msg": format!("Got new status for EnvoyExtensionPolicy\n{policy}"), "key": "ns/p"}).to_string(),
            serde_json::json!({"level": "info", "msg": format!("Got new status for EnvoyExtensionPolicy\n{}", policy.replace("\"True\"", "\"False\"")), "key": "ns/p"}).to_string(),
        ]
        .join("\n");
        let c = parse_status_log(&log);
        let get = |k: &str, t: &str| c.iter().find(|x| x.kind == k && x.r#type == t).unwrap();
        assert_eq!(get("Gateway", "Accepted").status, "True");
        assert_eq!((get("Gateway", "Programmed").status.as_str(), get("Gateway", "Programmed").reason.as_str()), ("False", "AddressNotAssigned"));
        assert_eq!(get("Gateway/listener", "Programmed").status, "True");
        assert_eq!(get("EnvoyExtensionPolicy", "Accepted").status, "False", "the latest report wins");
        assert_eq!(get("EnvoyExtensionPolicy", "Accepted").name, "ns/p");
        assert_eq!(c.len(), 4);
    }
}
