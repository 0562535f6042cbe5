//! Model work per request on the CPU: the embedding model and the fine-tuned classifiers as
//! separate passes (the anchor: how they ran before they shared a pass) against one shared pass
//! (their common lower layers once, then each one's top layers), for the category model alone
//! and with the fine-tuned guard too. Medians of interleaved runs, one text per request.
//!
//! `cargo run --release -p classifier-svc --example shared_pass [models]` (= `just bench-shared-pass`;
//! needs `models/all-MiniLM-L6-v2`, `models/category-model` and `models/jailbreak-model`).

use std::path::Path;
use std::time::Instant;

use classifier_svc::bench::PROMPT_64;
use classifier_svc::model::shared::SharedPass;
use classifier_svc::model::{LoadOptions, Model, Task};
use classifier_svc::CpuBackend;

type M = Model<CpuBackend>;

fn load(dir: &Path, task: Task) -> anyhow::Result<M> {
    Model::load(dir, &LoadOptions { max_len: Some(128), task: Some(task) }, &Default::default())
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() -> anyhow::Result<()> {
    let models = std::path::PathBuf::from(std::env::args().nth(1).unwrap_or_else(|| "models".into()));
    let (embedding, category, guard) =
        (models.join("all-MiniLM-L6-v2"), models.join("category-model"), models.join("jailbreak-model"));
    let separate = (load(&embedding, Task::Embedding)?, load(&category, Task::SequenceClassification)?, load(&guard, Task::SequenceClassification)?);
    let shared = |with_guard: bool| -> anyhow::Result<SharedPass<CpuBackend>> {
        let mut pass = SharedPass::new(load(&embedding, Task::Embedding)?);
        let mut dirs = vec![&category];
        if with_guard {
            dirs.push(&guard);
        }
        for dir in dirs {
            if pass.add(load(dir, Task::SequenceClassification)?).is_err() {
                anyhow::bail!("{} shares no layer with the embedding model", dir.display());
            }
        }
        Ok(pass)
    };
    let (one, two) = (shared(false)?, shared(true)?);
    println!("shared layers: {} (category), {} (category + guard)", one.trunk(), two.trunk());

    let prompts = ["Which treaty ended the Thirty Years' War in 1648?", PROMPT_64];
    for text in prompts {
        let texts = [text];
        let tokens = separate.0.tokenize(&texts)?[0].len();
        let mut runs: [Vec<f64>; 4] = Default::default();
        let time = |runs: &mut [Vec<f64>; 4], i: usize, f: &mut dyn FnMut() -> anyhow::Result<()>| -> anyhow::Result<()> {
            let t = Instant::now();
            f()?;
            runs[i].push(t.elapsed().as_secs_f64() * 1e3);
            Ok(())
        };
        for round in 0..260 {
            time(&mut runs, 0, &mut || {
                std::hint::black_box((separate.0.embed(&texts)?, separate.1.classify(&texts)?));
                Ok(())
            })?;
            time(&mut runs, 1, &mut || {
                std::hint::black_box(one.encode(&texts)?);
                Ok(())
            })?;
            time(&mut runs, 2, &mut || {
                std::hint::black_box((separate.0.embed(&texts)?, separate.1.classify(&texts)?, separate.2.classify(&texts)?));
                Ok(())
            })?;
            time(&mut runs, 3, &mut || {
                std::hint::black_box(two.encode(&texts)?);
                Ok(())
            })?;
            if round < 10 {
                runs.iter_mut().for_each(Vec::clear); // warm-up
            }
        }
        let m: Vec<f64> = runs.into_iter().map(median).collect();
        println!("\n{tokens} tokens, {} runs each, rayon threads {}", 250, rayon::current_num_threads());
        println!("| models | separate passes p50 (ms, anchor) | one shared pass p50 (ms) | ratio |\n|---|---:|---:|---:|");
        println!("| embedding + category model | {:.2} | {:.2} | {:.2} |", m[0], m[1], m[1] / m[0]);
        println!("| embedding + category model + guard model | {:.2} | {:.2} | {:.2} |", m[2], m[3], m[3] / m[2]);
    }
    Ok(())
}
