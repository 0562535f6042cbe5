//! CUDA start-up: cubecl's kernel and autotune caches persisted at an explicit path.

use std::path::PathBuf;

use cubecl_common::config::RuntimeConfig;
use cubecl_runtime::config::CubeClRuntimeConfig;

/// Environment variable naming the cubecl configuration file.
pub const CUBECL_CONFIG_ENV: &str = "SR_CUBECL_CONFIG";
/// Default cubecl configuration file, relative to the working directory.
pub const CUBECL_CONFIG_DEFAULT: &str = "classifier-svc/config/cubecl.toml";

/// Loads cubecl's configuration from `$SR_CUBECL_CONFIG` (default
/// `classifier-svc/config/cubecl.toml`) before the first kernel is compiled.
pub fn configure_cubecl() {
    let path = std::env::var(CUBECL_CONFIG_ENV)
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(CUBECL_CONFIG_DEFAULT));
    match CubeClRuntimeConfig::from_file_path(&path) {
        Ok(cfg) => {
            tracing::info!(path = %path.display(), "cubecl configuration");
            CubeClRuntimeConfig::set(cfg);
        }
        Err(e) => tracing::warn!(path = %path.display(), error = %e, "no cubecl configuration; kernel caches are not persisted"),
    }
}
