//! Renders `envoy/envoy.yaml.tmpl` and runs a real Envoy as a child process.

use anyhow::{bail, Context, Result};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Repository root (this crate lives in `tests/`).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ has a parent").to_path_buf()
}

/// The Envoy binary from the project-local venv (`just envoy`), or `$ENVOY_BIN`.
pub fn envoy_binary() -> Result<PathBuf> {
    if let Ok(p) = std::env::var("ENVOY_BIN") {
        return Ok(PathBuf::from(p));
    }
    let venv = repo_root().join(".venv/lib");
    for entry in std::fs::read_dir(&venv).with_context(|| format!("{} missing: run `just envoy`", venv.display()))? {
        let candidate = entry?.path().join("site-packages/envoy/_bin/envoy");
        if candidate.exists() {
            return Ok(candidate);
        }
    }
    bail!("no Envoy binary under {}: run `just envoy`", venv.display())
}

/// The built filter (`just build-wasm`), or `$WASM_FILTER`.
pub fn wasm_filter_path() -> PathBuf {
    std::env::var("WASM_FILTER").map(PathBuf::from).unwrap_or_else(|_| {
        repo_root().join("target/wasm32-unknown-unknown/wasm/wasm_filter.wasm")
    })
}

/// A free loopback port (the listener is closed before returning, so there is a tiny race).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// The template's variables.
#[derive(Debug, Clone)]
pub struct EnvoyConfig {
    pub listen_address: String,
    pub listen_port: u16,
    pub admin_port: u16,
    pub classifier_port: u16,
    pub primary: (String, u16),
    pub secondary: (String, u16),
    /// Models routed to the secondary backend (exact names).
    pub secondary_models: Vec<String>,
    /// The filter's plugin configuration (JSON); `None` renders Envoy without the wasm filter.
    pub filter_config: Option<String>,
    /// Port of an ext_proc server: renders the ExtProc baseline instead (benchmarks only).
    pub extproc_port: Option<u16>,
    pub wasm_path: PathBuf,
    pub buffer_limit_bytes: usize,
    /// The Wasm plugin's `allow_on_headers_stop_iteration` (header route mode needs it).
    pub allow_on_headers_stop_iteration: bool,
    /// Render only `backend_primary`, with no header route: the filter's body route mode.
    pub single_backend: bool,
    /// The listen and admin ports came from [`free_port`] and may be replaced by others if one
    /// was taken before Envoy bound it; false for a port the user chose.
    pub ports_replaceable: bool,
}

impl EnvoyConfig {
    pub fn new(classifier_port: u16, primary: u16, secondary: u16, filter_config: &str) -> Self {
        Self {
            listen_address: "127.0.0.1".into(),
            listen_port: free_port(),
            admin_port: free_port(),
            classifier_port,
            primary: ("127.0.0.1".into(), primary),
            secondary: ("127.0.0.1".into(), secondary),
            secondary_models: vec!["deepseek-r1-math".into()],
            filter_config: Some(filter_config.into()),
            extproc_port: None,
            wasm_path: wasm_filter_path(),
            buffer_limit_bytes: 32 * 1024 * 1024,
            allow_on_headers_stop_iteration: true,
            single_backend: false,
            ports_replaceable: true,
        }
    }

    /// Body route mode: one backend receives every model (it routes on the body's `model`),
    /// and the filter runs without `allow_on_headers_stop_iteration`, as Envoy Gateway's Wasm API
    /// configures it. `filter_config` should set `"route_mode":"body"`.
    pub fn body_mode(classifier_port: u16, backend: u16, filter_config: &str) -> Self {
        Self {
            secondary_models: Vec::new(),
            allow_on_headers_stop_iteration: false,
            single_backend: true,
            ..Self::new(classifier_port, backend, backend, filter_config)
        }
    }

    pub fn render(&self) -> Result<String> {
        let template_path = repo_root().join("envoy/envoy.yaml.tmpl");
        let mut text = std::fs::read_to_string(&template_path)
            .with_context(|| format!("reading {}", template_path.display()))?;
        if self.filter_config.is_none() {
            text = drop_block(&text, "# BEGIN semantic-router ", "# END semantic-router")?;
        }
        if self.extproc_port.is_none() {
            text = drop_block(&text, "# BEGIN extproc-baseline ", "# END extproc-baseline\n")?;
            text = drop_block(&text, "# BEGIN extproc-baseline-cluster", "# END extproc-baseline-cluster")?;
        }
        if self.single_backend {
            text = drop_block(&text, "# BEGIN header-routes", "# END header-routes")?;
            text = drop_block(&text, "# BEGIN backend-secondary", "# END backend-secondary")?;
        }
        let regex = if self.secondary_models.is_empty() {
            "^$a".to_string() // matches nothing
        } else {
            let alts: Vec<String> = self.secondary_models.iter().map(|m| regex_escape(m)).collect();
            format!("^({})$", alts.join("|"))
        };
        let filter_config = self.filter_config.clone().unwrap_or_default().replace('\'', "''");
        let vars = [
            ("LISTEN_ADDRESS", self.listen_address.clone()),
            ("LISTEN_PORT", self.listen_port.to_string()),
            ("ADMIN_PORT", self.admin_port.to_string()),
            ("CLASSIFIER_PORT", self.classifier_port.to_string()),
            ("PRIMARY_HOST", self.primary.0.clone()),
            ("PRIMARY_PORT", self.primary.1.to_string()),
            ("SECONDARY_HOST", self.secondary.0.clone()),
            ("SECONDARY_PORT", self.secondary.1.to_string()),
            ("SECONDARY_MODELS_REGEX", regex),
            ("FILTER_CONFIG", filter_config),
            ("WASM_PATH", self.wasm_path.display().to_string()),
            ("BUFFER_LIMIT_BYTES", self.buffer_limit_bytes.to_string()),
            ("EXTPROC_PORT", self.extproc_port.unwrap_or(0).to_string()),
            ("ALLOW_ON_HEADERS_STOP_ITERATION", self.allow_on_headers_stop_iteration.to_string()),
        ];
        for (name, value) in vars {
            text = text.replace(&format!("${{{name}}}"), &value);
        }
        if let Some(start) = text.find("${") {
            bail!("unrendered variable in envoy template: {}", &text[start..(start + 30).min(text.len())]);
        }
        Ok(text)
    }
}

fn drop_block(text: &str, begin: &str, end: &str) -> Result<String> {
    let start = text.find(begin).with_context(|| format!("template lacks {begin:?}"))?;
    let start = text[..start].rfind('\n').map_or(0, |i| i + 1);
    let stop = start + text[start..].find(end).with_context(|| format!("template lacks {end:?}"))?;
    let stop = text[stop..].find('\n').map_or(text.len(), |i| stop + i + 1);
    Ok(format!("{}{}", &text[..start], &text[stop..]))
}

fn regex_escape(s: &str) -> String {
    s.chars()
        .flat_map(|c| if "\\.+*?()|[]{}^$".contains(c) { vec!['\\', c] } else { vec![c] })
        .collect()
}

/// A running Envoy; killed on drop.
pub struct EnvoyProcess {
    child: Child,
    pub config: EnvoyConfig,
    _dir: tempfile::TempDir,
    pub log_path: PathBuf,
}

impl EnvoyProcess {
    /// Starts Envoy and waits until its admin endpoint says LIVE.
    pub fn start(config: EnvoyConfig) -> Result<Self> {
        Self::start_with_output(config, false)
    }

    /// Like [`start`](Self::start); with `inherit_output` Envoy logs to this process's stderr.
    pub fn start_with_output(mut config: EnvoyConfig, inherit_output: bool) -> Result<Self> {
        // `free_port` closes its listener before Envoy binds the port, so another process (or
        // another test of this binary) can take it in between; Envoy then exits at start with
        // "Address already in use". Fresh ports and another start, at most twice.
        for attempt in 1..=3 {
            match Self::start_once(config.clone(), inherit_output) {
                Err(e) if attempt < 3 && config.ports_replaceable && format!("{e:#}").contains("Address already in use") => {
                    config.listen_port = free_port();
                    config.admin_port = free_port();
                }
                started => return started,
            }
        }
        unreachable!("the third attempt returns")
    }

    fn start_once(config: EnvoyConfig, inherit_output: bool) -> Result<Self> {
        let dir = tempfile::tempdir()?;
        let yaml = dir.path().join("envoy.yaml");
        std::fs::write(&yaml, config.render()?)?;
        let log_path = dir.path().join("envoy.log");
        let mut cmd = Command::new(envoy_binary()?);
        cmd.arg("-c")
            .arg(&yaml)
            .args(["--log-level", &std::env::var("ENVOY_LOG_LEVEL").unwrap_or_else(|_| "info".into())])
            .args(["--concurrency", "2", "--disable-hot-restart"])
            .args(["--base-id", &config.admin_port.to_string()])
            .stdin(Stdio::null());
        if inherit_output {
            cmd.stdout(Stdio::inherit()).stderr(Stdio::inherit());
        } else {
            let log = std::fs::File::create(&log_path)?;
            cmd.stdout(log.try_clone()?).stderr(log);
        }
        let child = cmd.spawn().context("spawning envoy")?;
        let mut envoy = Self { child, config, _dir: dir, log_path };
        envoy.wait_ready(Duration::from_secs(60))?;
        Ok(envoy)
    }

    fn wait_ready(&mut self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait()? {
                bail!("envoy exited with {status} during start:\n{}", self.log_tail());
            }
            if let Ok(body) = http_get(self.config.admin_port, "/ready") {
                if body.trim() == "LIVE" {
                    return Ok(());
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        bail!("envoy not ready after {timeout:?}:\n{}", self.log_tail())
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{}", self.config.listen_port, path)
    }

    /// Envoy's stats (admin `/stats`), e.g. the filter's `wasmcustom.*` counters.
    pub fn stats(&self) -> Result<String> {
        http_get(self.config.admin_port, "/stats?filter=wasmcustom")
    }

    /// Value of one of Envoy's own stats (e.g. `cluster.backend_primary.upstream_rq_retry`), 0 if
    /// absent.
    pub fn envoy_stat(&self, name: &str) -> u64 {
        http_get(self.config.admin_port, &format!("/stats?filter=^{}$", name.replace('.', "\\.")))
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name}: ")).and_then(|v| v.trim().parse().ok()))
            .unwrap_or(0)
    }

    /// Value of one counter from [`stats`](Self::stats), 0 if absent.
    pub fn counter(&self, name: &str) -> u64 {
        self.stats()
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix(&format!("wasmcustom.{name}: ")).and_then(|v| v.trim().parse().ok()))
            .unwrap_or(0)
    }

    pub fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(&self.log_path).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn try_wait(&mut self) -> Result<Option<std::process::ExitStatus>> {
        Ok(self.child.try_wait()?)
    }
}

impl Drop for EnvoyProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Minimal blocking HTTP/1.1 GET (connection closed after one response) on loopback, for admin endpoints.
pub fn http_get(port: u16, path: &str) -> Result<String> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    write!(stream, "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    if head.to_ascii_lowercase().contains("transfer-encoding: chunked") {
        Ok(dechunk(body))
    } else {
        Ok(body.to_string())
    }
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let size = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if size == 0 || rest.len() < size {
            break;
        }
        out.push_str(&rest[..size]);
        body = rest[size..].trim_start_matches("\r\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_each_variant_completely() {
        let wasm = EnvoyConfig::new(1, 2, 3, r#"{"default_model":"it's"}"#);
        let text = wasm.render().unwrap();
        assert!(text.contains("envoy.filters.http.wasm") && !text.contains("ext_proc"));
        assert!(text.contains(r#"value: '{"default_model":"it''s"}'"#), "single quotes escaped for YAML");
        assert!(text.contains("^(deepseek-r1-math)$"));

        let mut plain = wasm.clone();
        plain.filter_config = None;
        let text = plain.render().unwrap();
        assert!(!text.contains("envoy.filters.http.wasm") && !text.contains("extproc"));
        assert!(text.contains("envoy.filters.http.router"));

        let mut extproc = plain.clone();
        extproc.extproc_port = Some(4444);
        let text = extproc.render().unwrap();
        assert!(text.contains("envoy.filters.http.ext_proc") && text.contains("port_value: 4444"));
        assert!(!text.contains("envoy.filters.http.wasm"));
        assert!(wasm.render().unwrap().contains("allow_on_headers_stop_iteration: true"));

        let body = EnvoyConfig::body_mode(1, 2, r#"{"default_model":"m","route_mode":"body"}"#);
        let text = body.render().unwrap();
        assert!(text.contains("allow_on_headers_stop_iteration: false"));
        assert!(!text.contains("name: backend_secondary") && !text.contains("name: x-selected-model"), "one backend, no header route");
        assert!(text.contains("cluster: backend_primary") && text.contains("port_value: 2 }"));
    }
}
