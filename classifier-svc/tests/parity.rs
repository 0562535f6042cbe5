//! Parity with the PyTorch/transformers reference outputs in `fixtures/` (see
//! `fixtures/generate.py`).

use std::path::{Path, PathBuf};

use classifier_svc::model::{LoadOptions, Model, Task};
use classifier_svc::CpuBackend;
use serde_json::Value;

const REL_TOL: f32 = 1e-4;
/// Denominator floor for values near zero, where a relative error is meaningless: below it the
/// error is measured against the floor (i.e. an absolute error of `REL_TOL * DENOM_FLOOR`).
const DENOM_FLOOR: f32 = 1e-2;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures")
}

fn load(dir: &Path) -> Model<CpuBackend> {
    Model::load(dir, &LoadOptions::default(), &Default::default())
        .unwrap_or_else(|e| panic!("loading {}: {e:#}", dir.display()))
}

fn reference(dir: &Path) -> Value {
    let text = std::fs::read_to_string(dir.join("reference.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn floats(v: &Value) -> Vec<f32> {
    fn walk(v: &Value, out: &mut Vec<f32>) {
        match v {
            Value::Array(a) => a.iter().for_each(|x| walk(x, out)),
            Value::Number(n) => out.push(n.as_f64().unwrap() as f32),
            _ => panic!("unexpected value {v}"),
        }
    }
    let mut out = Vec::new();
    walk(v, &mut out);
    out
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect()
}

/// Max relative error with a floor: |got - want| / max(|want|, DENOM_FLOOR).
fn assert_close(what: &str, got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let mut worst = 0f32;
    for (g, w) in got.iter().zip(want) {
        let err = (g - w).abs() / w.abs().max(DENOM_FLOOR);
        worst = worst.max(err);
    }
    assert!(worst <= REL_TOL, "{what}: max relative error {worst:e} > {REL_TOL:e}");
}

fn check_classifier(name: &str) {
    let dir = fixtures().join(name);
    let model = load(&dir);
    let r = reference(&dir);
    let cases = r["cases"].as_array().unwrap();
    let texts: Vec<&str> = cases.iter().map(|c| c["text"].as_str().unwrap()).collect();
    // Tokenization matches the reference tokenizer.
    let enc = model.tokenize(&texts).unwrap();
    for (c, e) in cases.iter().zip(&enc) {
        assert_eq!(e, &ids(&c["input_ids"]), "{name}: token ids of {:?}", c["text"]);
    }
    let kind = r["kind"].as_str().unwrap();
    // Whole batch at once (padded), then each text alone.
    match kind {
        "sequence" => {
            assert_eq!(model.task, Task::SequenceClassification);
            let batched = model.classify(&texts).unwrap();
            for (i, c) in cases.iter().enumerate() {
                let want = floats(&c["logits"]);
                assert_close(&format!("{name} batched #{i}"), &batched[i], &want);
                let single = model.classify(&[texts[i]]).unwrap();
                assert_close(&format!("{name} single #{i}"), &single[0], &want);
            }
        }
        "token" => {
            assert_eq!(model.task, Task::TokenClassification);
            let batched = model.classify_tokens(&texts).unwrap();
            for (i, c) in cases.iter().enumerate() {
                let want = floats(&c["logits"]);
                let got: Vec<f32> = batched[i].iter().flatten().copied().collect();
                assert_close(&format!("{name} batched #{i}"), &got, &want);
                let single = model.classify_tokens(&[texts[i]]).unwrap();
                let got: Vec<f32> = single[0].iter().flatten().copied().collect();
                assert_close(&format!("{name} single #{i}"), &got, &want);
            }
        }
        other => panic!("unknown kind {other}"),
    }
}

#[test]
fn bert_sequence_classification_matches_transformers() {
    check_classifier("bert-seq");
}

#[test]
fn bert_token_classification_matches_transformers() {
    check_classifier("bert-tok");
}

#[test]
fn modernbert_sequence_classification_mean_pooling_matches_transformers() {
    check_classifier("modernbert-seq-mean");
}

#[test]
fn modernbert_sequence_classification_cls_pooling_matches_transformers() {
    check_classifier("modernbert-seq-cls");
}

#[test]
fn modernbert_token_classification_matches_transformers() {
    check_classifier("modernbert-tok");
}

pub fn minilm_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/all-MiniLM-L6-v2");
    assert!(
        dir.join("model.safetensors").exists(),
        "{} is missing: run `just models` first",
        dir.display()
    );
    dir
}

#[test]
fn minilm_embeddings_match_sentence_transformers_pipeline() {
    let model = load(&minilm_dir());
    assert_eq!(model.task, Task::Embedding);
    let r = reference(&fixtures().join("minilm"));
    let cases = r["cases"].as_array().unwrap();
    let texts: Vec<&str> = cases.iter().map(|c| c["text"].as_str().unwrap()).collect();
    let enc = model.tokenize(&texts).unwrap();
    for (c, e) in cases.iter().zip(&enc) {
        assert_eq!(e, &ids(&c["input_ids"]), "token ids of {:?}", c["text"]);
    }
    let batched = model.embed(&texts).unwrap();
    for (i, c) in cases.iter().enumerate() {
        let want = floats(&c["embedding"]);
        assert_eq!(batched[i].len(), 384);
        assert_close(&format!("minilm batched #{i}"), &batched[i], &want);
        let single = model.embed(&[texts[i]]).unwrap();
        assert_close(&format!("minilm single #{i}"), &single[0], &want);
    }
}

pub fn pii_model_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/pii-rampart");
    assert!(dir.join("model.safetensors").exists(), "{} is missing: run `just pii-model` first", dir.display());
    dir
}

/// The converted Rampart checkpoint against ONNX Runtime on the package's original 4-bit model
/// (`scripts/check_pii_model.py` wrote the fixture). The dequantized weights are exact, so only
/// f32 rounding and the fixture's 5 decimals separate them.
#[test]
fn converted_pii_model_matches_the_original_onnx() {
    let model = load(&pii_model_dir());
    assert_eq!(model.task, Task::TokenClassification);
    let r = reference(&fixtures().join("pii-rampart"));
    for c in r["cases"].as_array().unwrap() {
        let text = c["text"].as_str().unwrap();
        assert_eq!(model.tokenize(&[text]).unwrap()[0], ids(&c["input_ids"]), "token ids of {text:?}");
        let got = model.classify_tokens(&[text]).unwrap().remove(0);
        let want: Vec<Vec<f32>> = c["logits"].as_array().unwrap().iter().map(floats).collect();
        assert_eq!(got.len(), want.len());
        let labels: Vec<&str> = c["labels"].as_array().unwrap().iter().map(|l| l.as_str().unwrap()).collect();
        for (t, (g, w)) in got.iter().zip(&want).enumerate() {
            let diff = g.iter().zip(w).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
            assert!(diff < 1e-3, "{text:?} token {t}: max |Δ logit| {diff}");
            let argmax = g.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).unwrap().0;
            assert_eq!(model.labels[argmax], labels[t], "{text:?} token {t}");
        }
    }
}
