//! Config, policy, batching, loading and tokenization tests (fast: tiny fixtures only).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use classifier_svc::batcher::{BatchError, BatchSettings, Batcher};
use classifier_svc::config::Config;
use classifier_svc::model::{LoadOptions, Model, Task};
use classifier_svc::policy::{Reason, Router};
use classifier_svc::CpuBackend;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures").join(name)
}

const BASE: &str = r#"
bert_model:
  model_id: models/all-MiniLM-L6-v2
default_model: qwen3-8b
categories:
  - name: math
    description: maths
    model_scores:
      - { model: small, score: 0.4 }
      - { model: big, score: 0.9, use_reasoning: true }
      - { model: other, score: 0.9 }
  - name: law
    examples: [contracts]
    model_scores:
      - { model: qwen3-8b, score: 1.0 }
"#;

fn err_of(yaml: &str) -> String {
    format!("{:#}", Config::from_yaml(yaml).unwrap_err())
}

#[test]
fn shipped_config_is_valid() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/router.yaml");
    let cfg = Config::load(&path).unwrap();
    assert_eq!(cfg.categories.len(), 14);
    assert_eq!(cfg.default_model, "qwen3-8b");
    for c in &cfg.categories {
        assert!((4..=8).contains(&c.examples.len()), "{}", c.name);
    }
}

#[test]
fn config_defaults_and_values() {
    let cfg = Config::from_yaml(BASE).unwrap();
    assert_eq!(cfg.server.listen, "127.0.0.1:50051");
    assert_eq!(cfg.server.metrics_listen, "127.0.0.1:9190");
    assert_eq!(cfg.batching.max_batch_size, 32);
    assert_eq!(cfg.bert_model.max_seq_len, 128);
    assert!((cfg.classifier.category_model.threshold - 0.3).abs() < 1e-6);
}

#[test]
fn config_errors_name_the_key() {
    let e = err_of(&BASE.replace("default_model: qwen3-8b", "default_model: ''"));
    assert!(e.contains("default_model"), "{e}");
    let e = err_of(&format!("{BASE}classifier:\n  category_model:\n    threshold: 3\n"));
    assert!(e.contains("classifier.category_model.threshold"), "{e}");
    let e = err_of(&format!("{BASE}server:\n  listen: nowhere\n"));
    assert!(e.contains("server.listen"), "{e}");
    let e = err_of(&format!("{BASE}batching:\n  max_batch_size: 0\n"));
    assert!(e.contains("batching.max_batch_size"), "{e}");
    let e = err_of(&format!("{BASE}batching:\n  max_batch_size: lots\n"));
    assert!(e.contains("max_batch_size"), "{e}");
    let e = err_of(&BASE.replace("name: law", "name: math"));
    assert!(e.contains("categories[1].name") && e.contains("duplicate"), "{e}");
    let e = err_of(&BASE.replace("      - { model: qwen3-8b, score: 1.0 }\n", "      []\n").replace("model_scores:\n      []", "model_scores: []"));
    assert!(e.contains("categories[1].model_scores"), "{e}");
    let e = err_of(&format!("{BASE}unknown_key: 1\n"));
    assert!(e.contains("unknown_key"), "{e}");
}

#[test]
fn env_overrides_apply() {
    let dir = std::env::temp_dir().join(format!("sr-cfg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("router.yaml");
    std::fs::write(&path, BASE).unwrap();
    std::env::set_var("SR__SERVER__LISTEN", "127.0.0.1:6000");
    std::env::set_var("SR__BATCHING__MAX_BATCH_SIZE", "4");
    let cfg = Config::load(&path).unwrap();
    std::env::remove_var("SR__SERVER__LISTEN");
    std::env::remove_var("SR__BATCHING__MAX_BATCH_SIZE");
    assert_eq!(cfg.server.listen, "127.0.0.1:6000");
    assert_eq!(cfg.batching.max_batch_size, 4);
    let e = format!("{:#}", Config::load(&dir.join("missing.yaml")).unwrap_err());
    assert!(e.contains("not found"), "{e}");
}

fn unit(v: &[f32]) -> Vec<f32> {
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.iter().map(|x| x / n).collect()
}

#[test]
fn policy_highest_score_wins_and_threshold_falls_back() {
    let cfg = Config::from_yaml(BASE).unwrap();
    // math: description only; law: one example.
    let router = Router::new(&cfg, vec![vec![unit(&[1.0, 0.0, 0.0])], vec![unit(&[0.0, 1.0, 0.0])]]);
    assert_eq!(router.categories[0].model, "big", "highest score wins, first listed on ties");
    assert!(router.categories[0].use_reasoning);

    let d = router.decide(&unit(&[0.9, 0.1, 0.0]));
    assert_eq!(d.category, "math");
    assert_eq!(d.selected_model, "big");
    assert_eq!(d.reason(), Reason::Category);
    assert_eq!(d.scores[0].category, "math");
    assert!(d.scores[0].score >= d.scores[1].score);
    // Reasoning travels in the decision's `reasoning` field (none here: `big` has no reasoning
    // family); the filter sets x-vsr-selected-reasoning from it.
    assert_eq!(d.reasoning, None);

    let d = router.decide(&unit(&[0.0, 0.0, 1.0]));
    assert_eq!(d.category, "");
    assert_eq!(d.selected_model, "qwen3-8b");
    assert_eq!(d.reason(), Reason::LowConfidence);

    // Context mixing moves an ambiguous prompt.
    let p = router.prompt_vector(&unit(&[1.0, 1.0, 0.0]), Some(&unit(&[0.0, 1.0, 0.0])));
    assert_eq!(router.decide(&p).category, "law");
}

fn tiny() -> Model<CpuBackend> {
    Model::load(&fixture("bert-seq"), &LoadOptions { max_len: None, task: Some(Task::Embedding) }, &Default::default()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batched_results_equal_single_results() {
    let texts: Vec<String> = [
        "What is the integral of x^2?",
        "a",
        "",
        "hello world 🙂",
        "the history of contract law during the war and the market price of energy",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let single: Vec<Vec<f32>> = {
        let m = tiny();
        texts.iter().map(|t| m.embed(&[t.as_str()]).unwrap().remove(0)).collect()
    };
    let m = tiny();
    let batcher = Batcher::start(
        move |t: &[String]| m.embed(t),
        BatchSettings { max_batch_size: 8, max_wait: Duration::from_millis(50), queue_capacity: 64 },
        Arc::new(()),
    );
    // Concurrent requests land in one batch (max_wait is generous).
    let handles: Vec<_> = texts
        .iter()
        .map(|t| {
            let b = batcher.clone();
            let t = t.clone();
            tokio::spawn(async move { b.embed(vec![t]).await.unwrap().remove(0) })
        })
        .collect();
    for (h, want) in handles.into_iter().zip(&single) {
        let got = h.await.unwrap();
        for (g, w) in got.iter().zip(want) {
            assert!((g - w).abs() <= 1e-5 * w.abs().max(1.0), "{g} vs {w}");
        }
    }
    // One request with many texts (more than max_batch_size) is split and reassembled in order.
    let many: Vec<String> = (0..20).map(|i| texts[i % texts.len()].clone()).collect();
    let out = batcher.embed(many).await.unwrap();
    for (i, v) in out.iter().enumerate() {
        let want = &single[i % texts.len()];
        assert!(v.iter().zip(want).all(|(g, w)| (g - w).abs() <= 1e-5 * w.abs().max(1.0)));
    }
}

/// With two workers, a pass blocked in one worker does not hold up the queue: the other worker
/// serves the next batch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pool_serves_while_one_worker_is_busy() {
    let (gate_tx, gate_rx) = std::sync::mpsc::channel::<()>();
    let gate = Arc::new(std::sync::Mutex::new(gate_rx));
    let workers: Vec<_> = (0..2)
        .map(|w| {
            let gate = gate.clone();
            move |t: &[String]| {
                if t[0] == "slow" {
                    let _ = gate.lock().unwrap().recv_timeout(Duration::from_secs(10));
                }
                Ok(t.iter().map(|_| vec![w as f32]).collect())
            }
        })
        .collect();
    let batcher = Batcher::start_pool(
        workers,
        BatchSettings { max_batch_size: 1, max_wait: Duration::ZERO, queue_capacity: 8 },
        Arc::new(()),
    );
    let slow = {
        let b = batcher.clone();
        tokio::spawn(async move { b.embed(vec!["slow".into()]).await })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    let fast = tokio::time::timeout(Duration::from_secs(2), batcher.embed(vec!["fast".into()])).await;
    let fast = fast.expect("served while the other worker is blocked").unwrap();
    gate_tx.send(()).unwrap();
    let slow = slow.await.unwrap().unwrap();
    assert_ne!(fast[0], slow[0], "the two requests ran on different workers");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_queue_is_refused() {
    let (gate_tx, gate_rx) = std::sync::mpsc::channel::<()>();
    let gate = std::sync::Mutex::new(gate_rx);
    let batcher = Batcher::start(
        move |t: &[String]| {
            let _ = gate.lock().unwrap().recv_timeout(Duration::from_secs(10));
            Ok(t.iter().map(|_| vec![1.0]).collect())
        },
        BatchSettings { max_batch_size: 1, max_wait: Duration::ZERO, queue_capacity: 1 },
        Arc::new(()),
    );
    let mut pending = Vec::new();
    let mut refused = 0;
    for _ in 0..6 {
        let b = batcher.clone();
        let h = tokio::spawn(async move { b.embed(vec!["x".into()]).await });
        tokio::time::sleep(Duration::from_millis(30)).await;
        if h.is_finished() {
            if let Err(BatchError::QueueFull(_)) = h.await.unwrap() {
                refused += 1;
            }
        } else {
            pending.push(h);
        }
    }
    assert!(refused >= 1, "a full queue must refuse requests");
    for _ in 0..10 {
        let _ = gate_tx.send(());
    }
    for h in pending {
        assert!(h.await.unwrap().is_ok());
    }
}

#[test]
fn tokenization_edge_cases() {
    let m = Model::<CpuBackend>::load(&fixture("bert-seq"), &LoadOptions { max_len: Some(16), task: None }, &Default::default()).unwrap();
    let long = "word ".repeat(500);
    let enc = m.tokenize(&["", "🙂🙂", "Naïve café", long.as_str()]).unwrap();
    assert_eq!(enc[0], vec![2, 3], "empty text is [CLS] [SEP]");
    assert_eq!(enc[1], vec![2, 1, 3], "emoji map to [UNK]");
    assert_eq!(enc[3].len(), 16, "long text truncated to max_len");
    assert_eq!(*enc[3].last().unwrap(), 3, "truncation keeps [SEP]");
    let logits = m.classify(&["", long.as_str()]).unwrap();
    assert!(logits.iter().flatten().all(|x| x.is_finite()));
}

#[test]
fn loading_errors_are_clear() {
    let dir = std::env::temp_dir().join(format!("sr-load-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let load = |d: &Path| {
        format!("{:#}", Model::<CpuBackend>::load(d, &LoadOptions::default(), &Default::default()).err().expect("must fail"))
    };
    let e = load(&dir);
    assert!(e.contains("config.json"), "{e}");

    // Missing weights file.
    std::fs::copy(fixture("bert-seq/config.json"), dir.join("config.json")).unwrap();
    std::fs::copy(fixture("bert-seq/tokenizer.json"), dir.join("tokenizer.json")).unwrap();
    let e = load(&dir);
    assert!(e.contains("model.safetensors"), "{e}");

    // Wrong shapes: config says a larger hidden size than the weights have.
    let cfg = std::fs::read_to_string(fixture("bert-seq/config.json")).unwrap();
    let mut v: serde_json::Value = serde_json::from_str(&cfg).unwrap();
    v["hidden_size"] = 64.into();
    std::fs::write(dir.join("config.json"), v.to_string()).unwrap();
    std::fs::copy(fixture("bert-seq/model.safetensors"), dir.join("model.safetensors")).unwrap();
    let e = load(&dir);
    assert!(e.contains("has shape") && e.contains("expected"), "{e}");

    // Unsupported architecture.
    v["model_type"] = "gpt2".into();
    std::fs::write(dir.join("config.json"), v.to_string()).unwrap();
    let e = load(&dir);
    assert!(e.contains("unsupported model_type"), "{e}");

    // Missing tensor: weights of another architecture.
    std::fs::copy(fixture("bert-seq/config.json"), dir.join("config.json")).unwrap();
    std::fs::copy(fixture("modernbert-seq-cls/model.safetensors"), dir.join("model.safetensors")).unwrap();
    let e = load(&dir);
    assert!(e.contains("not found"), "{e}");
    let _ = std::fs::remove_dir_all(&dir);
}
