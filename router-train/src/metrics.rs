//! Classification metrics.

#[derive(Debug, Clone)]
pub struct ClassMetrics {
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
    pub support: usize,
}

/// `matrix[truth][prediction]` counts.
#[derive(Debug, Clone)]
pub struct Confusion {
    pub matrix: Vec<Vec<usize>>,
}

fn ratio(a: usize, b: usize) -> f64 {
    if b == 0 {
        0.0
    } else {
        a as f64 / b as f64
    }
}

impl Confusion {
    pub fn new(n: usize, truth: &[usize], pred: &[usize]) -> Self {
        let mut matrix = vec![vec![0; n]; n];
        for (&t, &p) in truth.iter().zip(pred) {
            matrix[t][p] += 1;
        }
        Self { matrix }
    }

    pub fn total(&self) -> usize {
        self.matrix.iter().flatten().sum()
    }

    pub fn accuracy(&self) -> f64 {
        let correct: usize = (0..self.matrix.len()).map(|i| self.matrix[i][i]).sum();
        ratio(correct, self.total())
    }

    pub fn class(&self, c: usize) -> ClassMetrics {
        let tp = self.matrix[c][c];
        let predicted: usize = self.matrix.iter().map(|r| r[c]).sum();
        let support: usize = self.matrix[c].iter().sum();
        let precision = ratio(tp, predicted);
        let recall = ratio(tp, support);
        let f1 = if precision + recall > 0.0 { 2.0 * precision * recall / (precision + recall) } else { 0.0 };
        ClassMetrics { precision, recall, f1, support }
    }

    /// Mean F1 over the classes with support.
    pub fn macro_f1(&self) -> f64 {
        let f: Vec<f64> = (0..self.matrix.len())
            .map(|c| self.class(c))
            .filter(|m| m.support > 0)
            .map(|m| m.f1)
            .collect();
        if f.is_empty() {
            0.0
        } else {
            f.iter().sum::<f64>() / f.len() as f64
        }
    }

    /// Binary view with class 1 as positive: false-positive rate FP / (FP + TN).
    pub fn false_positive_rate(&self) -> f64 {
        ratio(self.matrix[0][1], self.matrix[0][0] + self.matrix[0][1])
    }
}

pub fn argmax(v: &[f32]) -> usize {
    v.iter()
        .enumerate()
        .fold((0, f32::MIN), |best, (i, &x)| if x > best.1 { (i, x) } else { best })
        .0
}

/// The sidecar's own softmax and temperature scaling, so offline numbers are the served ones.
pub use classifier_svc::guard::{calibrated, softmax};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binary_metrics() {
        // truth: 4 negatives, 4 positives; predictions: 1 FP, 1 FN.
        let truth = [0, 0, 0, 0, 1, 1, 1, 1];
        let pred = [0, 0, 0, 1, 1, 1, 1, 0];
        let c = Confusion::new(2, &truth, &pred);
        assert_eq!(c.accuracy(), 0.75);
        let p = c.class(1);
        assert_eq!((p.precision, p.recall, p.support), (0.75, 0.75, 4));
        assert_eq!(c.false_positive_rate(), 0.25);
    }

    #[test]
    fn softmax_and_argmax() {
        let p = softmax(&[1.0, 3.0, 2.0]);
        assert!((p.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        assert_eq!(argmax(&p), 1);
    }
}
