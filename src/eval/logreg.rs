//! A small multinomial logistic regression: the reference classifier on tabular features. It
//! calibrates the synthetic cohort (how separable are the classes from the volume columns?) and
//! serves as the "metadata oracle" (how much of the label do the non-image columns give away?).
//!
//! Features are standardised with the training rows' mean and SD, then a softmax model is fitted
//! by damped Newton steps on the mean cross-entropy plus `l2/2 · ‖W‖²` (biases are not
//! penalised, bar a 1e-8 ridge that removes softmax's shift invariance). Newton with a
//! backtracking line search converges in a few dozen steps on problems of this size and is fully
//! deterministic: no random initialisation, no sample order.

use crate::error::{Error, Result};

/// A fitted model. Weights act on standardised features.
#[derive(Debug, Clone, PartialEq)]
pub struct LogReg {
    pub n_classes: usize,
    /// Training means and SDs of each feature (an SD of 0 is stored as 1).
    pub mean: Vec<f64>,
    pub scale: Vec<f64>,
    /// `weights[c][f]`: class `c`, standardised feature `f`.
    pub weights: Vec<Vec<f64>>,
    pub bias: Vec<f64>,
    /// Newton iterations used.
    pub iterations: usize,
}

const MAX_ITER: usize = 100;
const BIAS_RIDGE: f64 = 1e-8;

fn bad(reason: impl Into<String>) -> Error {
    Error::config("logistic regression input", reason)
}

/// Fit on rows `x` (all of one length) with labels `y` in `0..n_classes`.
pub fn fit(x: &[Vec<f64>], y: &[usize], n_classes: usize, l2: f64) -> Result<LogReg> {
    if x.is_empty() {
        return Err(bad("no training rows"));
    }
    if x.len() != y.len() {
        return Err(bad(format!("{} rows but {} labels", x.len(), y.len())));
    }
    if n_classes < 2 {
        return Err(bad(format!("n_classes is {n_classes}, need at least 2")));
    }
    if !(l2.is_finite() && l2 >= 0.0) {
        return Err(bad(format!("l2 penalty {l2} must be finite and non-negative")));
    }
    let d = x[0].len();
    for (r, row) in x.iter().enumerate() {
        if row.len() != d {
            return Err(bad(format!("row {r} has {} features, row 0 has {d}", row.len())));
        }
        if let Some(f) = row.iter().position(|v| !v.is_finite()) {
            return Err(bad(format!("row {r}, feature {f} is not finite")));
        }
    }
    if let Some(r) = y.iter().position(|&c| c >= n_classes) {
        return Err(bad(format!("row {r} has label {} but n_classes is {n_classes}", y[r])));
    }

    let n = x.len() as f64;
    let mean: Vec<f64> = (0..d).map(|f| x.iter().map(|r| r[f]).sum::<f64>() / n).collect();
    let scale: Vec<f64> = (0..d)
        .map(|f| {
            let var = x.iter().map(|r| (r[f] - mean[f]).powi(2)).sum::<f64>() / n;
            if var.sqrt() > 1e-12 {
                var.sqrt()
            } else {
                1.0
            }
        })
        .collect();
    // Standardised rows with a trailing 1 for the bias.
    let z: Vec<Vec<f64>> = x
        .iter()
        .map(|r| {
            let mut v: Vec<f64> = (0..d).map(|f| (r[f] - mean[f]) / scale[f]).collect();
            v.push(1.0);
            v
        })
        .collect();

    let (k, m) = (n_classes, d + 1);
    let p = k * m;
    let ridge: Vec<f64> = (0..p).map(|i| if i % m == d { BIAS_RIDGE } else { l2 }).collect();
    let mut theta = vec![0.0; p];
    let mut loss = objective(&z, y, &theta, k, &ridge);
    let mut iterations = 0;
    for _ in 0..MAX_ITER {
        iterations += 1;
        let (grad, hess) = derivatives(&z, y, &theta, k, &ridge);
        if grad.iter().all(|g| g.abs() < 1e-10) {
            break;
        }
        let Some(step) = solve(hess, &grad) else {
            break;
        };
        // Backtracking: Newton steps can overshoot while far from the optimum.
        let mut t = 1.0;
        let mut improved = false;
        while t > 1e-6 {
            let cand: Vec<f64> = theta.iter().zip(&step).map(|(a, s)| a - t * s).collect();
            let l = objective(&z, y, &cand, k, &ridge);
            if l <= loss {
                let done = loss - l < 1e-14;
                theta = cand;
                loss = l;
                improved = !done;
                break;
            }
            t *= 0.5;
        }
        if !improved {
            break;
        }
    }
    let weights = (0..k).map(|c| theta[c * m..c * m + d].to_vec()).collect();
    let bias = (0..k).map(|c| theta[c * m + d]).collect();
    Ok(LogReg { n_classes: k, mean, scale, weights, bias, iterations })
}

/// Softmax of `theta`'s scores for one augmented row, in place into `out`.
fn softmax_row(z: &[f64], theta: &[f64], k: usize, out: &mut [f64]) {
    let m = z.len();
    for (c, o) in out.iter_mut().enumerate().take(k) {
        *o = theta[c * m..(c + 1) * m].iter().zip(z).map(|(a, b)| a * b).sum();
    }
    let max = out.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let mut sum = 0.0;
    for o in out.iter_mut() {
        *o = (*o - max).exp();
        sum += *o;
    }
    for o in out.iter_mut() {
        *o /= sum;
    }
}

fn objective(z: &[Vec<f64>], y: &[usize], theta: &[f64], k: usize, ridge: &[f64]) -> f64 {
    let mut p = vec![0.0; k];
    let mut nll = 0.0;
    for (row, &c) in z.iter().zip(y) {
        softmax_row(row, theta, k, &mut p);
        nll -= p[c].max(1e-300).ln();
    }
    nll / z.len() as f64 + 0.5 * theta.iter().zip(ridge).map(|(t, r)| r * t * t).sum::<f64>()
}

/// Gradient and Hessian of the objective (row-major `p × p`).
fn derivatives(z: &[Vec<f64>], y: &[usize], theta: &[f64], k: usize, ridge: &[f64]) -> (Vec<f64>, Vec<f64>) {
    let m = z[0].len();
    let np = k * m;
    let n = z.len() as f64;
    let mut g = vec![0.0; np];
    let mut h = vec![0.0; np * np];
    let mut p = vec![0.0; k];
    for (row, &c) in z.iter().zip(y) {
        softmax_row(row, theta, k, &mut p);
        for a in 0..k {
            let r = p[a] - if a == c { 1.0 } else { 0.0 };
            for f in 0..m {
                g[a * m + f] += r * row[f] / n;
            }
            for b in 0..k {
                let w = p[a] * (if a == b { 1.0 } else { 0.0 } - p[b]) / n;
                if w == 0.0 {
                    continue;
                }
                for f in 0..m {
                    let base = (a * m + f) * np + b * m;
                    let wf = w * row[f];
                    for (e, he) in h[base..base + m].iter_mut().enumerate() {
                        *he += wf * row[e];
                    }
                }
            }
        }
    }
    for i in 0..np {
        g[i] += ridge[i] * theta[i];
        h[i * np + i] += ridge[i];
    }
    (g, h)
}

/// Solve `a · x = b` by Gaussian elimination with partial pivoting; `None` if singular.
fn solve(mut a: Vec<f64>, b: &[f64]) -> Option<Vec<f64>> {
    let n = b.len();
    let mut x = b.to_vec();
    for col in 0..n {
        let piv = (col..n).max_by(|&i, &j| a[i * n + col].abs().total_cmp(&a[j * n + col].abs()))?;
        if a[piv * n + col].abs() < 1e-300 {
            return None;
        }
        if piv != col {
            for c in 0..n {
                a.swap(piv * n + c, col * n + c);
            }
            x.swap(piv, col);
        }
        for r in col + 1..n {
            let f = a[r * n + col] / a[col * n + col];
            if f == 0.0 {
                continue;
            }
            for c in col..n {
                a[r * n + c] -= f * a[col * n + c];
            }
            x[r] -= f * x[col];
        }
    }
    for col in (0..n).rev() {
        let s: f64 = (col + 1..n).map(|c| a[col * n + c] * x[c]).sum();
        x[col] = (x[col] - s) / a[col * n + col];
    }
    x.iter().all(|v| v.is_finite()).then_some(x)
}

impl LogReg {
    /// Class probabilities of one row (raw, unstandardised features).
    ///
    /// # Panics
    /// If the row's length differs from the training rows'.
    pub fn proba_row(&self, row: &[f64]) -> Vec<f64> {
        assert_eq!(row.len(), self.mean.len(), "feature count differs from training");
        let z: Vec<f64> = row.iter().enumerate().map(|(f, v)| (v - self.mean[f]) / self.scale[f]).collect();
        let scores: Vec<f64> = (0..self.n_classes)
            .map(|c| self.bias[c] + self.weights[c].iter().zip(&z).map(|(w, v)| w * v).sum::<f64>())
            .collect();
        let max = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let e: Vec<f64> = scores.iter().map(|s| (s - max).exp()).collect();
        let sum: f64 = e.iter().sum();
        e.into_iter().map(|v| v / sum).collect()
    }

    /// Class probabilities of every row.
    pub fn predict_proba(&self, x: &[Vec<f64>]) -> Vec<Vec<f64>> {
        x.iter().map(|r| self.proba_row(r)).collect()
    }

    /// Most probable class of every row (the lowest index on a tie).
    pub fn predict(&self, x: &[Vec<f64>]) -> Vec<usize> {
        x.iter()
            .map(|r| {
                let p = self.proba_row(r);
                (0..p.len()).fold(0, |best, c| if p[c] > p[best] { c } else { best })
            })
            .collect()
    }
}

/// Mean recall over the classes present in `y_true` (classes absent from it are skipped, so a
/// test fold without one class is not scored as if that class were missed). NaN if empty.
pub fn balanced_accuracy(y_true: &[usize], y_pred: &[usize], n_classes: usize) -> f64 {
    let mut hit = vec![0usize; n_classes];
    let mut total = vec![0usize; n_classes];
    for (&t, &p) in y_true.iter().zip(y_pred) {
        if t < n_classes {
            total[t] += 1;
            hit[t] += usize::from(t == p);
        }
    }
    let recalls: Vec<f64> = (0..n_classes).filter(|&c| total[c] > 0).map(|c| hit[c] as f64 / total[c] as f64).collect();
    if recalls.is_empty() {
        f64::NAN
    } else {
        recalls.iter().sum::<f64>() / recalls.len() as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Three Gaussian-ish blobs laid out on a deterministic grid of offsets.
    fn blobs(spread: f64) -> (Vec<Vec<f64>>, Vec<usize>) {
        let centres = [[0.0, 0.0], [4.0, 0.0], [0.0, 4.0]];
        let (mut x, mut y) = (Vec::new(), Vec::new());
        for (c, ctr) in centres.iter().enumerate() {
            for i in 0..30 {
                let a = i as f64 * 2.399; // golden-angle spiral
                let r = spread * ((i as f64 + 0.5) / 30.0).sqrt();
                x.push(vec![ctr[0] + r * a.cos(), 1000.0 * (ctr[1] + r * a.sin())]);
                y.push(c);
            }
        }
        (x, y)
    }

    #[test]
    fn separable_blobs_are_learned() {
        let (x, y) = blobs(1.5);
        let model = fit(&x, &y, 3, 1e-3).unwrap();
        let pred = model.predict(&x);
        assert_eq!(balanced_accuracy(&y, &pred, 3), 1.0);
        assert!(model.iterations < MAX_ITER);
    }

    #[test]
    fn probabilities_sum_to_one_and_overlap_is_uncertain() {
        let (x, y) = blobs(6.0);
        let model = fit(&x, &y, 3, 1e-2).unwrap();
        for p in model.predict_proba(&x) {
            assert!((p.iter().sum::<f64>() - 1.0).abs() < 1e-12);
            assert!(p.iter().all(|&v| (0.0..=1.0).contains(&v)));
        }
        let acc = balanced_accuracy(&y, &model.predict(&x), 3);
        assert!(acc > 0.5 && acc < 1.0, "{acc}");
    }

    #[test]
    fn fitting_is_deterministic_and_scale_free() {
        let (x, y) = blobs(4.0);
        let a = fit(&x, &y, 3, 1e-2).unwrap();
        assert_eq!(a, fit(&x, &y, 3, 1e-2).unwrap());
        let scaled: Vec<Vec<f64>> = x.iter().map(|r| vec![r[0] * 1e-3, r[1] * 7.0]).collect();
        let b = fit(&scaled, &y, 3, 1e-2).unwrap();
        assert_eq!(a.predict(&x), b.predict(&scaled));
    }

    #[test]
    fn bad_input_is_rejected() {
        assert!(fit(&[], &[], 3, 0.1).is_err());
        assert!(fit(&[vec![1.0], vec![1.0, 2.0]], &[0, 1], 2, 0.1).is_err());
        assert!(fit(&[vec![1.0], vec![2.0]], &[0, 2], 2, 0.1).is_err());
        assert!(fit(&[vec![f64::NAN], vec![2.0]], &[0, 1], 2, 0.1).is_err());
        assert!(fit(&[vec![1.0], vec![2.0]], &[0, 1], 2, -1.0).is_err());
    }

    #[test]
    fn balanced_accuracy_weights_classes_equally() {
        // Class 0: 3/4 right; class 1: 1/2 right; class 2 absent.
        let t = [0, 0, 0, 0, 1, 1];
        let p = [0, 0, 0, 1, 1, 0];
        assert!((balanced_accuracy(&t, &p, 3) - 0.625).abs() < 1e-12);
        assert!(balanced_accuracy(&[], &[], 3).is_nan());
    }
}
