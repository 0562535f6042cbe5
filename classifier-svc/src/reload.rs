//! Hot reload of the routing policy: the config file is checked every
//! `server.config_reload_seconds` (modification time and size) and on SIGHUP; a changed file
//! is loaded, validated and swapped in whole. A file that does not load is logged with the
//! offending key path and the policy in force keeps serving.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};

use anyhow::Result;
use tracing::{error, info, warn};

use crate::config::Config;
use crate::engine::Engine;

/// What identifies a version of the file without reading it.
fn stamp(path: &Path) -> Option<(SystemTime, u64)> {
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len()))
}

/// Loads `path` and swaps its policy into `engine`; on error nothing changes. Counts the
/// result in `sr_classifier_config_reloads_total`.
pub async fn reload_once(path: &Path, engine: &Engine) -> Result<()> {
    let result = async {
        let cfg = Config::load(path)?;
        for key in &cfg.ignored_keys {
            warn!(key = %key, "config: vLLM Semantic Router key not supported here; ignored");
        }
        for w in &cfg.warnings {
            warn!("config: {w}");
        }
        let categories = cfg.categories.len();
        // Settings read once at start keep their values until a restart (compared with the
        // start, so each reload names them again while they wait); the rest applies.
        let restart = crate::config::restart_only_changes(&engine.started_with, &cfg);
        engine.reload(cfg).await?;
        for key in &restart {
            warn!(key = %key, "config reload: this setting changed but takes effect only after a restart");
        }
        Ok::<_, anyhow::Error>(categories)
    }
    .await;
    match &result {
        Ok(categories) => {
            engine.metrics.config_reloads.with_label_values(&["ok"]).inc();
            info!(path = %path.display(), categories, "config reloaded");
        }
        Err(e) => {
            engine.metrics.config_reloads.with_label_values(&["error"]).inc();
            error!(path = %path.display(), error = %format!("{e:#}"), "config reload failed; the previous policy stays in force");
        }
    }
    result.map(|_| ())
}

/// Watches `path` until the task is aborted: polls every `every` (zero: no polling) and
/// reloads on SIGHUP.
pub async fn watch(path: PathBuf, engine: Arc<OnceLock<Engine>>, every: Duration) {
    let Some(engine) = engine.get() else { return };
    let mut last = stamp(&path);
    #[cfg(unix)]
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
    info!(path = %path.display(), poll_seconds = every.as_secs(), "watching the config file (SIGHUP reloads too)");
    loop {
        let poll = async {
            if every.is_zero() {
                std::future::pending::<()>().await
            } else {
                tokio::time::sleep(every).await
            }
        };
        #[cfg(unix)]
        let signal = async {
            match hup.as_mut() {
                Some(s) => {
                    s.recv().await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        #[cfg(not(unix))]
        let signal = std::future::pending::<()>();
        let forced = tokio::select! {
            _ = poll => false,
            _ = signal => true,
        };
        let now = stamp(&path);
        if forced || (now.is_some() && now != last) {
            if forced {
                info!("SIGHUP: reloading the config");
            }
            last = now;
            let _ = reload_once(&path, engine).await;
        }
    }
}
