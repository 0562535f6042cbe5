//! GPU serving: shape buckets, and (with the `cuda` feature) CUDA start-up.
//!
//! GPU backends compile kernels per tensor shape, so batches are padded to a few shapes: the
//! sequence length to one of `server.warmup_seq_lens` (see [`Model::seq_buckets`]) and the
//! number of texts to a power of two (at most `batching.max_batch_size`), with empty texts as
//! filler. Every (batch, sequence) bucket is run once before health reports SERVING, and
//! cubecl's compiled-kernel and autotune caches are persisted in an explicit directory so a
//! restarted process skips the compilation.

use anyhow::Result;
use burn::tensor::backend::Backend;

use crate::model::Model;

/// Batch sizes a GPU forward pass is padded to: powers of two up to `max`, and `max` itself.
pub fn batch_buckets(max: usize) -> Vec<usize> {
    let max = max.max(1);
    let mut out: Vec<usize> = (0..).map(|i| 1usize << i).take_while(|&b| b < max).collect();
    out.push(max);
    out
}

/// The smallest bucket that holds `n` texts (`n` itself when none does).
pub fn bucket_for(n: usize, buckets: &[usize]) -> usize {
    buckets.iter().copied().filter(|&b| b >= n).min().unwrap_or(n)
}

/// Runs `run` on `texts` padded with empty texts up to their batch bucket, as one forward
/// pass; returns the outputs of the real texts only. With no buckets, nothing is padded.
pub fn run_bucketed<S: AsRef<str>, T>(
    texts: &[S],
    buckets: &[usize],
    run: impl FnOnce(&[&str]) -> Result<Vec<T>>,
) -> Result<Vec<T>> {
    let n = texts.len();
    let mut padded: Vec<&str> = texts.iter().map(|t| t.as_ref()).collect();
    padded.resize(bucket_for(n, buckets).max(n), "");
    let mut out = run(&padded)?;
    out.truncate(n);
    Ok(out)
}

/// Embeds `texts` as one forward pass padded up to its batch bucket ([`run_bucketed`]).
pub fn embed_bucketed<B: Backend, S: AsRef<str>>(
    model: &Model<B>,
    texts: &[S],
    buckets: &[usize],
) -> Result<Vec<Vec<f32>>> {
    run_bucketed(texts, buckets, |padded| model.embed(padded))
}

/// Runs `run` once per (batch bucket, sequence bucket) shape, so no request pays for kernel
/// compilation. Returns the number of shapes run.
pub fn warm_up_with(batch_buckets: &[usize], seq_lens: &[usize], mut run: impl FnMut(&[&str]) -> Result<()>) -> Result<usize> {
    let mut shapes = 0;
    for &len in seq_lens {
        // "warm" is one token with the BERT tokenizers; [CLS] and [SEP] make up the rest.
        let text = vec!["warm"; len.saturating_sub(2).max(1)].join(" ");
        for &b in batch_buckets {
            run(&vec![text.as_str(); b])?;
            shapes += 1;
        }
    }
    Ok(shapes)
}

/// [`warm_up_with`] the embedding pass of `model`.
pub fn warm_up<B: Backend>(model: &Model<B>, batch_buckets: &[usize], seq_lens: &[usize]) -> Result<usize> {
    warm_up_with(batch_buckets, seq_lens, |texts| model.embed(texts).map(|_| ()))
}

#[cfg(feature = "cuda")]
pub use cuda::{configure_cubecl, probe, CUBECL_CONFIG_DEFAULT, CUBECL_CONFIG_ENV, KERNEL_CACHE_ENV};

#[cfg(feature = "cuda")]
mod cuda {
    use std::path::{Path, PathBuf};
    use std::sync::OnceLock;

    use anyhow::{bail, Result};
    use cubecl_runtime::config::RuntimeConfig;
    use cubecl_runtime::config::cache::CacheConfig;
    use cubecl_runtime::config::CubeClRuntimeConfig;

    /// Environment variable naming the cubecl configuration file.
    pub const CUBECL_CONFIG_ENV: &str = "SR_CUBECL_CONFIG";
    /// Default cubecl configuration file, relative to the working directory.
    pub const CUBECL_CONFIG_DEFAULT: &str = "classifier-svc/config/cubecl.toml";
    /// Environment variable naming the kernel cache directory (compiled kernels and autotune
    /// results); overrides the configuration file.
    pub const KERNEL_CACHE_ENV: &str = "SR_KERNEL_CACHE";

    fn absolute(p: &Path) -> PathBuf {
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            std::env::current_dir().map(|d| d.join(p)).unwrap_or_else(|_| p.to_path_buf())
        }
    }

    /// Loads cubecl's configuration from `$SR_CUBECL_CONFIG` (default
    /// `classifier-svc/config/cubecl.toml`) before the first kernel is compiled; the cache
    /// directory is `$SR_KERNEL_CACHE` when set. Relative cache paths are resolved against the
    /// working directory once, here. Idempotent.
    pub fn configure_cubecl() {
        static DONE: OnceLock<()> = OnceLock::new();
        DONE.get_or_init(|| {
            let path = std::env::var(CUBECL_CONFIG_ENV)
                .map(PathBuf::from)
                .unwrap_or_else(|_| PathBuf::from(CUBECL_CONFIG_DEFAULT));
            // cubecl's loader panics on a malformed file.
            let mut cfg = match quiet(|| CubeClRuntimeConfig::from_file_path(&path)) {
                Ok(Ok(c)) => c,
                Ok(Err(e)) => {
                    tracing::warn!(path = %path.display(), error = %e, "no cubecl configuration; using defaults");
                    CubeClRuntimeConfig::default()
                }
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "invalid cubecl configuration; using defaults");
                    CubeClRuntimeConfig::default()
                }
            };
            if let Some(dir) = std::env::var_os(KERNEL_CACHE_ENV).filter(|d| !d.is_empty()) {
                let dir = PathBuf::from(dir);
                cfg.compilation.cache = Some(CacheConfig::File(dir.clone()));
                cfg.autotune.cache = CacheConfig::File(dir);
            }
            if let Some(CacheConfig::File(p)) = &mut cfg.compilation.cache {
                *p = absolute(p);
            }
            if let CacheConfig::File(p) = &mut cfg.autotune.cache {
                *p = absolute(p);
            }
            let kernels = cfg.compilation.cache.as_ref().map(|c| c.root());
            tracing::info!(
                config = %path.display(),
                kernel_cache = ?kernels,
                autotune_cache = %cfg.autotune.cache.root().display(),
                "cubecl configuration"
            );
            CubeClRuntimeConfig::set(cfg);
        });
    }

    fn cuda_root() -> Option<PathBuf> {
        // The same search as cubecl-cuda's, which panics when it finds nothing.
        if let Some(p) = std::env::var_os("CUDA_PATH") {
            return Some(PathBuf::from(p));
        }
        ["/usr/local/cuda", "/opt/cuda", "/usr"]
            .iter()
            .map(PathBuf::from)
            .find(|p| p.join("include/cuda_runtime.h").exists() || p.join("include/cuda.h").exists())
    }

    /// Runs `f`, turning a panic (cudarc panics when a library cannot be loaded) into an error.
    fn quiet<T>(f: impl FnOnce() -> T + std::panic::UnwindSafe) -> std::result::Result<T, String> {
        let hook = std::panic::take_hook();
        std::panic::set_hook(Box::new(|_| {}));
        let r = std::panic::catch_unwind(f);
        std::panic::set_hook(hook);
        r.map_err(|p| {
            p.downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "panic".into())
        })
    }

    /// Checks, before burn touches the GPU (it panics in background threads when something is
    /// missing), that the CUDA driver, a GPU, NVRTC and the CUDA headers are there.
    pub fn probe() -> Result<()> {
        use cudarc::driver::result as drv;
        match quiet(|| drv::init().and_then(|_| drv::device::get_count())) {
            Ok(Ok(n)) if n > 0 => tracing::info!(gpus = n, "CUDA driver"),
            Ok(Ok(_)) => bail!("device cuda: the CUDA driver reports no GPU"),
            Ok(Err(e)) => bail!("device cuda: CUDA driver initialisation failed: {e:?}"),
            Err(e) => bail!("device cuda: the CUDA driver (libcuda) could not be loaded: {e}"),
        }
        let (mut major, mut minor) = (0, 0);
        let nvrtc = quiet(move || {
            // SAFETY: nvrtcVersion only writes the two integers.
            unsafe { cudarc::nvrtc::sys::nvrtcVersion(&mut major, &mut minor) };
            (major, minor)
        });
        match nvrtc {
            Ok((major, minor)) => tracing::info!(version = %format!("{major}.{minor}"), "NVRTC"),
            Err(e) => bail!(
                "device cuda: NVRTC (libnvrtc) could not be loaded; install the CUDA runtime compiler \
                 or add its directory to LD_LIBRARY_PATH: {e}"
            ),
        }
        match cuda_root() {
            Some(root) if root.join("include").is_dir() => {
                tracing::info!(root = %root.display(), "CUDA headers");
                Ok(())
            }
            _ => bail!(
                "device cuda: no CUDA include directory found (kernels are compiled at run time \
                 against it); set CUDA_PATH to the CUDA root (the folder holding include/)"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets() {
        assert_eq!(batch_buckets(32), vec![1, 2, 4, 8, 16, 32]);
        assert_eq!(batch_buckets(24), vec![1, 2, 4, 8, 16, 24]);
        assert_eq!(batch_buckets(1), vec![1]);
        let b = batch_buckets(32);
        assert_eq!(bucket_for(1, &b), 1);
        assert_eq!(bucket_for(5, &b), 8);
        assert_eq!(bucket_for(32, &b), 32);
        assert_eq!(bucket_for(40, &b), 40);
        assert_eq!(bucket_for(3, &[]), 3);
    }
}
