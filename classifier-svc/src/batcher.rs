//! Dynamic batching: concurrent embedding requests are queued and run as one forward pass.
//!
//! Worker threads each own a copy of the model (tokenization and the forward pass stay off the
//! async runtime). A worker takes the first waiting request, gathers more for up to `max_wait`
//! or until `max_batch_size` texts, runs them as one padded batch and answers each request.
//! With several workers, one gathers the next batch while another runs its pass, so the host
//! side of a batch (tokenizing, padding, copying results back) overlaps the model's work. The
//! queue is bounded: when it is full, [`Batcher::embed`] fails at once with
//! [`BatchError::QueueFull`].

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

/// Runs a model over texts, one output per text (an embedding vector by default; the PII
/// tagger's entity spans); implemented by the loaded model.
pub trait Embedder<T = Vec<f32>>: Send + 'static {
    fn embed(&mut self, texts: &[String]) -> anyhow::Result<Vec<T>>;
}

impl<T, F> Embedder<T> for F
where
    F: FnMut(&[String]) -> anyhow::Result<Vec<T>> + Send + 'static,
{
    fn embed(&mut self, texts: &[String]) -> anyhow::Result<Vec<T>> {
        self(texts)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BatchError {
    #[error("queue full ({0} requests waiting)")]
    QueueFull(usize),
    #[error("batcher stopped")]
    Stopped,
    #[error("inference failed: {0}")]
    Failed(String),
}

#[derive(Debug, Clone)]
pub struct BatchSettings {
    pub max_batch_size: usize,
    pub max_wait: Duration,
    pub queue_capacity: usize,
}

/// Observes the batcher (metrics).
pub trait BatchObserver: Send + Sync + 'static {
    fn batch(&self, _texts: usize, _requests: usize, _elapsed: Duration) {}
    fn queue_depth(&self, _depth: usize) {}
}

impl BatchObserver for () {}

struct Job<T> {
    texts: Vec<String>,
    reply: oneshot::Sender<Result<Vec<T>, BatchError>>,
}

/// Handle to the batching workers; cheap to clone.
pub struct Batcher<T = Vec<f32>> {
    tx: SyncSender<Job<T>>,
    depth: Arc<AtomicUsize>,
    observer: Arc<dyn BatchObserver>,
    _workers: Arc<WorkerGuard>,
}

struct WorkerGuard(Vec<JoinHandle<()>>);

impl Drop for WorkerGuard {
    fn drop(&mut self) {
        // The workers end once every sender is gone; they are not joined here to keep drops
        // cheap on the async runtime.
        self.0.clear();
    }
}

impl<T> Clone for Batcher<T> {
    fn clone(&self) -> Self {
        Self { tx: self.tx.clone(), depth: self.depth.clone(), observer: self.observer.clone(), _workers: self._workers.clone() }
    }
}

impl<T: Send + 'static> Batcher<T> {
    /// One worker owning `embedder`.
    pub fn start<E: Embedder<T>>(
        embedder: E,
        settings: BatchSettings,
        observer: Arc<dyn BatchObserver>,
    ) -> Self {
        Self::start_pool(vec![embedder], settings, observer)
    }

    /// One worker per embedder (each a copy of the model), sharing one bounded queue.
    pub fn start_pool<E: Embedder<T>>(
        embedders: Vec<E>,
        settings: BatchSettings,
        observer: Arc<dyn BatchObserver>,
    ) -> Self {
        assert!(!embedders.is_empty(), "a batcher needs at least one worker");
        let (tx, rx) = mpsc::sync_channel::<Job<T>>(settings.queue_capacity);
        let rx = Arc::new(Mutex::new(rx));
        let depth = Arc::new(AtomicUsize::new(0));
        let workers = embedders
            .into_iter()
            .enumerate()
            .map(|(i, embedder)| {
                let (rx, depth, observer, settings) = (rx.clone(), depth.clone(), observer.clone(), settings.clone());
                std::thread::Builder::new()
                    .name(format!("classifier-batcher-{i}"))
                    .spawn(move || worker(embedder, &rx, settings, depth, observer))
                    .expect("spawning a batcher thread")
            })
            .collect();
        Self {
            tx,
            depth,
            observer,
            _workers: Arc::new(WorkerGuard(workers)),
        }
    }

    /// Requests waiting in the queue.
    pub fn queue_depth(&self) -> usize {
        self.depth.load(Ordering::Relaxed)
    }

    /// Embeds `texts`, batched with whatever else is waiting.
    pub async fn embed(&self, texts: Vec<String>) -> Result<Vec<T>, BatchError> {
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        let (reply, rx) = oneshot::channel();
        let d = self.depth.fetch_add(1, Ordering::Relaxed) + 1;
        match self.tx.try_send(Job { texts, reply }) {
            Ok(()) => self.observer.queue_depth(d),
            Err(TrySendError::Full(_)) => {
                let d = self.depth.fetch_sub(1, Ordering::Relaxed) - 1;
                return Err(BatchError::QueueFull(d));
            }
            Err(TrySendError::Disconnected(_)) => {
                self.depth.fetch_sub(1, Ordering::Relaxed);
                return Err(BatchError::Stopped);
            }
        }
        rx.await.map_err(|_| BatchError::Stopped)?
    }
}

fn worker<T, E: Embedder<T>>(
    mut embedder: E,
    rx: &Mutex<mpsc::Receiver<Job<T>>>,
    s: BatchSettings,
    depth: Arc<AtomicUsize>,
    observer: Arc<dyn BatchObserver>,
) {
    let take = |job: Job<T>, jobs: &mut Vec<Job<T>>, n: &mut usize| {
        let d = depth.fetch_sub(1, Ordering::Relaxed) - 1;
        observer.queue_depth(d);
        *n += job.texts.len();
        jobs.push(job);
    };
    loop {
        // The worker holding the queue gathers one batch, then lets the next worker gather
        // while it runs the pass.
        let (jobs, n) = {
            let rx = rx.lock().unwrap_or_else(|e| e.into_inner());
            let Ok(first) = rx.recv() else { return };
            let mut jobs = Vec::new();
            let mut n = 0;
            take(first, &mut jobs, &mut n);
            let deadline = Instant::now() + s.max_wait;
            while n < s.max_batch_size {
                // Whatever is already queued joins without waiting; then wait out max_wait.
                let next = match rx.try_recv() {
                    Ok(job) => Ok(job),
                    Err(_) => {
                        let now = Instant::now();
                        if now >= deadline {
                            break;
                        }
                        rx.recv_timeout(deadline - now)
                    }
                };
                match next {
                    Ok(job) => take(job, &mut jobs, &mut n),
                    Err(RecvTimeoutError::Timeout) | Err(RecvTimeoutError::Disconnected) => break,
                }
            }
            (jobs, n)
        };
        run(&mut embedder, jobs, n, &s, observer.as_ref());
    }
}

fn run<T, E: Embedder<T>>(embedder: &mut E, jobs: Vec<Job<T>>, n: usize, s: &BatchSettings, observer: &dyn BatchObserver) {
    let started = Instant::now();
    let texts: Vec<String> = jobs.iter().flat_map(|j| j.texts.iter().cloned()).collect();
    // Sort by length so each chunk pads little; chunks of at most max_batch_size texts.
    let mut order: Vec<usize> = (0..texts.len()).collect();
    order.sort_by_key(|&i| texts[i].len());
    let mut out: Vec<Option<T>> = std::iter::repeat_with(|| None).take(texts.len()).collect();
    let mut error = None;
    for chunk in order.chunks(s.max_batch_size) {
        let batch: Vec<String> = chunk.iter().map(|&i| texts[i].clone()).collect();
        match embedder.embed(&batch) {
            Ok(vs) if vs.len() == batch.len() => {
                for (&i, v) in chunk.iter().zip(vs) {
                    out[i] = Some(v);
                }
            }
            Ok(vs) => error = Some(format!("{} vectors for {} texts", vs.len(), batch.len())),
            Err(e) => error = Some(format!("{e:#}")),
        }
    }
    observer.batch(n, jobs.len(), started.elapsed());
    let mut it = out.into_iter();
    for job in jobs {
        let vs: Vec<Option<T>> = it.by_ref().take(job.texts.len()).collect();
        let result = match (&error, vs.into_iter().collect::<Option<Vec<_>>>()) {
            (None, Some(vs)) => Ok(vs),
            (Some(e), _) => Err(BatchError::Failed(e.clone())),
            (None, None) => Err(BatchError::Failed("missing output".into())),
        };
        let _ = job.reply.send(result);
    }
}
