//! Calibration after training, on the calibration split (chat-style prompts held out of
//! training, never the development sets): a temperature for the category head, so that its
//! probability means what it says, and the guard's threshold for a bounded false-positive rate.

use crate::metrics::calibrated;

/// Temperatures tried (log-spaced from 0.25 to 8).
fn grid() -> impl Iterator<Item = f32> {
    (0..=100).map(|i| 0.25 * 32f32.powf(i as f32 / 100.0))
}

/// Mean negative log-likelihood of the true labels at temperature `t`.
pub fn nll(logits: &[Vec<f32>], y: &[usize], t: f32) -> f64 {
    let total: f64 = logits
        .iter()
        .zip(y)
        .map(|(l, &c)| {
            let p = calibrated(l, t)[c];
            -f64::from(p.max(1e-12)).ln()
        })
        .sum();
    total / logits.len().max(1) as f64
}

/// The temperature that minimises the negative log-likelihood (temperature scaling).
pub fn fit_temperature(logits: &[Vec<f32>], y: &[usize]) -> f32 {
    grid().min_by(|&a, &b| nll(logits, y, a).total_cmp(&nll(logits, y, b))).unwrap_or(1.0)
}

/// Expected calibration error: the confidence of the top class against its accuracy, in
/// `bins` equal-width bins, weighted by the share of predictions in each.
pub fn ece(confidence: &[f32], correct: &[bool], bins: usize) -> f64 {
    let mut sum = vec![(0.0f64, 0.0f64, 0usize); bins];
    for (&c, &ok) in confidence.iter().zip(correct) {
        let b = ((c.clamp(0.0, 1.0) * bins as f32) as usize).min(bins - 1);
        sum[b].0 += f64::from(c);
        sum[b].1 += f64::from(u8::from(ok));
        sum[b].2 += 1;
    }
    let n = confidence.len().max(1) as f64;
    sum.iter().filter(|s| s.2 > 0).map(|&(c, a, _)| (c - a).abs() / n).sum()
}

/// The lowest threshold (on a 0.01 grid) at which at most `max_fpr` of the benign prompts'
/// P(jailbreak) reach it: the most recall that false-positive budget allows.
pub fn threshold_for_fpr(benign: &[f32], max_fpr: f64) -> f32 {
    (1..100)
        .map(|i| i as f32 / 100.0)
        .find(|&t| benign.iter().filter(|&&p| p >= t).count() as f64 <= max_fpr * benign.len() as f64)
        .unwrap_or(0.99)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overconfident_logits_get_a_temperature_above_one() {
        // Right 60% of the time with logit margin 10: far too sure, so T > 1 lowers the NLL.
        let logits: Vec<Vec<f32>> = (0..100).map(|_| vec![10.0, 0.0]).collect();
        let y: Vec<usize> = (0..100).map(|i| usize::from(i % 5 >= 3)).collect();
        let t = fit_temperature(&logits, &y);
        assert!(t > 5.0, "{t}");
        assert!(nll(&logits, &y, t) < nll(&logits, &y, 1.0));
    }

    #[test]
    fn ece_is_zero_when_confidence_matches_accuracy() {
        let conf = vec![0.75; 4];
        assert!(ece(&conf, &[true, true, true, false], 10) < 1e-9);
        assert!((ece(&conf, &[false; 4], 10) - 0.75).abs() < 1e-6);
    }

    #[test]
    fn threshold_bounds_the_false_positive_rate() {
        let benign: Vec<f32> = (0..100).map(|i| i as f32 / 100.0).collect();
        let t = threshold_for_fpr(&benign, 0.05);
        assert_eq!(benign.iter().filter(|&&p| p >= t).count(), 5);
    }
}
