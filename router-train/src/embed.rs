//! Frozen-encoder embeddings with an on-disk cache keyed by text.
//!
//! The cache (`data/router/embeddings-<encoder>-<max_len>.bin`) is a sequence of records
//! `[u64 text hash LE][dim × f32 LE]`; texts already in it are never embedded again, and new
//! ones are appended batch by batch (an interrupted run keeps what it finished).

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use classifier_svc::model::{LoadOptions, Model};
use classifier_svc::CpuBackend;

use crate::text::hash_str;

pub const DIM: usize = 384;

pub struct Embedder {
    pub model_dir: PathBuf,
    pub max_len: usize,
    pub batch_size: usize,
    cache_path: PathBuf,
    cache: HashMap<u64, Vec<f32>>,
    model: Option<Model<CpuBackend>>,
}

impl Embedder {
    pub fn new(model_dir: &Path, cache_dir: &Path, max_len: usize, batch_size: usize) -> Result<Self> {
        let name = model_dir.file_name().and_then(|n| n.to_str()).unwrap_or("encoder");
        std::fs::create_dir_all(cache_dir)?;
        let cache_path = cache_dir.join(format!("embeddings-{name}-{max_len}.bin"));
        let mut cache = HashMap::new();
        if cache_path.exists() {
            let bytes = std::fs::read(&cache_path)?;
            let rec = 8 + 4 * DIM;
            // A torn last record (interrupted write) is ignored.
            for r in bytes.chunks_exact(rec) {
                let h = u64::from_le_bytes(r[..8].try_into().unwrap());
                let v = r[8..].chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect();
                cache.insert(h, v);
            }
            if bytes.len() % rec != 0 {
                let whole = bytes.len() / rec * rec;
                std::fs::write(&cache_path, &bytes[..whole])?;
            }
        }
        Ok(Self { model_dir: model_dir.to_path_buf(), max_len, batch_size, cache_path, cache, model: None })
    }

    pub fn cached(&self) -> usize {
        self.cache.len()
    }

    fn model(&mut self) -> Result<&Model<CpuBackend>> {
        if self.model.is_none() {
            let opts = LoadOptions { max_len: Some(self.max_len), ..Default::default() };
            let m = Model::<CpuBackend>::load(&self.model_dir, &opts, &Default::default())
                .with_context(|| format!("loading the encoder from {}", self.model_dir.display()))?;
            self.model = Some(m);
        }
        Ok(self.model.as_ref().unwrap())
    }

    /// Embeddings of `texts` (in order), computing and caching the missing ones.
    pub fn embed(&mut self, texts: &[String], what: &str) -> Result<Vec<Vec<f32>>> {
        let mut missing: Vec<&String> = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for t in texts {
            let h = hash_str(t);
            if !self.cache.contains_key(&h) && seen.insert(h) {
                missing.push(t);
            }
        }
        if !missing.is_empty() {
            eprintln!("[embed] {what}: {} of {} texts to embed ({} cached)", missing.len(), texts.len(), texts.len() - missing.len());
            let batch_size = self.batch_size;
            let cache_path = self.cache_path.clone();
            let model = self.model()?;
            let enc = model.tokenize(&missing)?;
            let mut order: Vec<usize> = (0..missing.len()).collect();
            order.sort_by_key(|&i| enc[i].len());
            let mut file = std::fs::OpenOptions::new().create(true).append(true).open(&cache_path)?;
            let start = Instant::now();
            let mut done = 0usize;
            let total_tokens: usize = enc.iter().map(|e| e.len()).sum();
            let mut done_tokens = 0usize;
            let mut last_report = Instant::now();
            let mut new = Vec::with_capacity(missing.len());
            for chunk in order.chunks(batch_size) {
                let encs: Vec<Vec<u32>> = chunk.iter().map(|&i| enc[i].clone()).collect();
                let embs = model.embed_batch(&model.batch(&encs))?;
                let mut buf = Vec::with_capacity(chunk.len() * (8 + 4 * DIM));
                for (&i, e) in chunk.iter().zip(embs) {
                    if e.len() != DIM {
                        bail!("encoder gives {}-d embeddings, expected {DIM}", e.len());
                    }
                    let h = hash_str(missing[i]);
                    buf.extend_from_slice(&h.to_le_bytes());
                    for x in &e {
                        buf.extend_from_slice(&x.to_le_bytes());
                    }
                    new.push((h, e));
                }
                file.write_all(&buf)?;
                done += chunk.len();
                done_tokens += encs.iter().map(|e| e.len()).sum::<usize>();
                if last_report.elapsed().as_secs_f32() > 10.0 || done == missing.len() {
                    let el = start.elapsed().as_secs_f32();
                    // Longer texts come last: estimate by tokens, not texts.
                    let eta = el / done_tokens.max(1) as f32 * (total_tokens - done_tokens) as f32;
                    eprintln!("[embed] {what}: {done}/{} texts, {:.0} texts/s, elapsed {el:.0}s, eta {eta:.0}s", missing.len(), done as f32 / el);
                    last_report = Instant::now();
                }
            }
            file.flush()?;
            self.cache.extend(new);
        }
        Ok(texts.iter().map(|t| self.cache[&hash_str(t)].clone()).collect())
    }
}
