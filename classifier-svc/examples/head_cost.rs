//! CPU cost of what runs after the encoder per request: the category head with and without the
//! earlier turns (the `no_topic` mix classifies the context embedding too), and the check that
//! drops PII-model spans over numbers the deterministic detectors verify, per 480-byte window.
//! Medians of interleaved runs. `cargo run --release -p classifier-svc --example head_cost
//! [models/category-head]`.

use classifier_svc::category_head::CategoryHead;
use std::time::Instant;

fn unit(seed: u64, dim: usize) -> Vec<f32> {
    let mut s = seed | 1;
    let v: Vec<f32> = (0..dim)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s % 2000) as f32 / 1000.0 - 1.0
        })
        .collect();
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.into_iter().map(|x| x / n).collect()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() -> anyhow::Result<()> {
    let dir = std::env::args().nth(1).unwrap_or_else(|| "models/category-head".into());
    let head = CategoryHead::load(std::path::Path::new(&dir), 384)?;
    let (text, context) = (unit(1, 384), unit(2, 384));
    let (mut alone, mut with_context) = (Vec::new(), Vec::new());
    for _ in 0..200 {
        head.categorize(&text, Some(&context))?; // warm-up
    }
    for _ in 0..2000 {
        let t = Instant::now();
        std::hint::black_box(head.categorize(&text, None)?);
        alone.push(t.elapsed().as_secs_f64() * 1e6);
        let t = Instant::now();
        std::hint::black_box(head.categorize(&text, Some(&context))?);
        with_context.push(t.elapsed().as_secs_f64() * 1e6);
    }
    let (a, c) = (median(alone), median(with_context));
    println!("| category head ({dir}) | p50 (µs) | ratio |\n|---|---|---|");
    println!("| last message alone (anchor) | {a:.1} | 1.00 |");
    println!("| with the earlier turns (no_topic mix) | {c:.1} | {:.2} |", c / a);

    // One PII window (the tagger reads 480-byte windows) with a card number and a phone.
    use classifier_svc::pii::PiiMatch;
    use classifier_svc::pii_model::without_checked_numbers;
    let mut window = "Please charge my card 4111 1111 1111 1111 and call me on 020 7946 0958 tomorrow. ".repeat(6);
    window.truncate(480);
    let spans = vec![PiiMatch { kind: "PHONE_NUMBER", start: 22, end: 41, confidence: 0.9 }];
    let (mut kept, mut checked) = (Vec::new(), Vec::new());
    for _ in 0..2000 {
        let t = Instant::now();
        std::hint::black_box(spans.clone());
        kept.push(t.elapsed().as_secs_f64() * 1e6);
        let t = Instant::now();
        std::hint::black_box(without_checked_numbers(&window, spans.clone()));
        checked.push(t.elapsed().as_secs_f64() * 1e6);
    }
    println!("\n| PII model spans, one 480-byte window | p50 (µs) |\n|---|---|");
    println!("| spans as tagged (anchor) | {:.2} |", median(kept));
    println!("| spans over detector-checked numbers dropped | {:.2} |", median(checked));
    Ok(())
}
