//! Classification and regression metrics reviewers expect (data.md): accuracy, balanced accuracy,
//! per-class sensitivity and specificity, macro one-vs-rest AUC (plain AUC for two classes), the
//! confusion matrix; MMSE MAE, RMSE and Pearson r.

use serde::{Deserialize, Deserializer, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassMetrics {
    pub n: usize,
    pub accuracy: f64,
    pub balanced_accuracy: f64,
    /// Recall of each class, in class order.
    #[serde(deserialize_with = "nan_for_null")]
    pub sensitivity: Vec<f64>,
    /// True-negative rate of each class (one vs rest).
    #[serde(deserialize_with = "nan_for_null")]
    pub specificity: Vec<f64>,
    /// Macro one-vs-rest AUC over the classes present; the positive class's AUC for two classes.
    pub auc: Option<f64>,
    /// `confusion[true][predicted]`
    pub confusion: Vec<Vec<usize>>,
}

/// Metrics of one level (scans, or subjects' baseline visits).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Scored {
    pub classification: ClassMetrics,
    pub mmse: Option<RegressionMetrics>,
}

/// JSON writes NaN (a class without examples) as `null`; read it back as NaN.
fn nan_for_null<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<f64>, D::Error> {
    let v: Vec<Option<f64>> = Vec::deserialize(d)?;
    Ok(v.into_iter().map(|x| x.unwrap_or(f64::NAN)).collect())
}

/// Metrics of predicted class probabilities `proba[i][c]` against labels `y[i]` in `0..n_classes`.
/// The prediction is the arg-max. Classes with no example get NaN sensitivity and are left out
/// of the balanced accuracy and the AUC.
pub fn classification(y: &[usize], proba: &[Vec<f64>], n_classes: usize) -> ClassMetrics {
    let pred: Vec<usize> = proba
        .iter()
        .map(|p| p.iter().enumerate().fold(0, |best, (c, &v)| if v > p[best] { c } else { best }))
        .collect();
    let mut confusion = vec![vec![0usize; n_classes]; n_classes];
    for (&t, &p) in y.iter().zip(&pred) {
        confusion[t][p] += 1;
    }
    let n = y.len();
    let correct: usize = (0..n_classes).map(|c| confusion[c][c]).sum();
    let support: Vec<usize> = confusion.iter().map(|r| r.iter().sum()).collect();
    let predicted: Vec<usize> = (0..n_classes).map(|c| confusion.iter().map(|r| r[c]).sum()).collect();
    let sensitivity: Vec<f64> = (0..n_classes)
        .map(|c| if support[c] == 0 { f64::NAN } else { confusion[c][c] as f64 / support[c] as f64 })
        .collect();
    let specificity: Vec<f64> = (0..n_classes)
        .map(|c| {
            let negatives = n - support[c];
            let false_pos = predicted[c] - confusion[c][c];
            if negatives == 0 {
                f64::NAN
            } else {
                (negatives - false_pos) as f64 / negatives as f64
            }
        })
        .collect();
    let present: Vec<f64> = sensitivity.iter().copied().filter(|s| !s.is_nan()).collect();
    let balanced_accuracy = present.iter().sum::<f64>() / present.len().max(1) as f64;
    let classes: Vec<usize> = (0..n_classes).filter(|&c| support[c] > 0 && support[c] < n).collect();
    let auc = if n_classes == 2 && classes.len() == 2 {
        Some(binary_auc(
            &y.iter().map(|&t| t == 1).collect::<Vec<_>>(),
            &proba.iter().map(|p| p[1]).collect::<Vec<_>>(),
        ))
    } else if classes.len() >= 2 {
        let aucs: Vec<f64> = classes
            .iter()
            .map(|&c| {
                binary_auc(
                    &y.iter().map(|&t| t == c).collect::<Vec<_>>(),
                    &proba.iter().map(|p| p[c]).collect::<Vec<_>>(),
                )
            })
            .collect();
        Some(aucs.iter().sum::<f64>() / aucs.len() as f64)
    } else {
        None
    };
    ClassMetrics {
        n,
        accuracy: correct as f64 / n.max(1) as f64,
        balanced_accuracy,
        sensitivity,
        specificity,
        auc,
        confusion,
    }
}

/// Area under the ROC curve by the rank statistic (Mann-Whitney U), ties counted half.
pub fn binary_auc(positive: &[bool], score: &[f64]) -> f64 {
    let mut idx: Vec<usize> = (0..score.len()).collect();
    idx.sort_by(|&a, &b| score[a].total_cmp(&score[b]));
    // Average ranks over ties.
    let mut ranks = vec![0.0; score.len()];
    let mut i = 0;
    while i < idx.len() {
        let mut j = i;
        while j + 1 < idx.len() && score[idx[j + 1]] == score[idx[i]] {
            j += 1;
        }
        let r = (i + j) as f64 / 2.0 + 1.0;
        for &k in &idx[i..=j] {
            ranks[k] = r;
        }
        i = j + 1;
    }
    let n_pos = positive.iter().filter(|&&p| p).count() as f64;
    let n_neg = positive.len() as f64 - n_pos;
    let rank_sum: f64 = ranks.iter().zip(positive).filter(|(_, &p)| p).map(|(r, _)| r).sum();
    (rank_sum - n_pos * (n_pos + 1.0) / 2.0) / (n_pos * n_neg)
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RegressionMetrics {
    pub n: usize,
    pub mae: f64,
    pub rmse: f64,
    /// `None` when either side is constant.
    pub pearson_r: Option<f64>,
}

pub fn regression(truth: &[f64], pred: &[f64]) -> RegressionMetrics {
    let n = truth.len();
    let nf = n.max(1) as f64;
    let mae = truth.iter().zip(pred).map(|(t, p)| (t - p).abs()).sum::<f64>() / nf;
    let rmse = (truth.iter().zip(pred).map(|(t, p)| (t - p).powi(2)).sum::<f64>() / nf).sqrt();
    let (mt, mp) = (truth.iter().sum::<f64>() / nf, pred.iter().sum::<f64>() / nf);
    let cov: f64 = truth.iter().zip(pred).map(|(t, p)| (t - mt) * (p - mp)).sum();
    let vt: f64 = truth.iter().map(|t| (t - mt).powi(2)).sum();
    let vp: f64 = pred.iter().map(|p| (p - mp).powi(2)).sum();
    let pearson_r = (vt > 0.0 && vp > 0.0).then(|| cov / (vt * vp).sqrt());
    RegressionMetrics { n, mae, rmse, pearson_r }
}

/// The coefficient of determination of `pred` against `truth`: `1 − SS_res / SS_tot`, with
/// `SS_tot` around `truth`'s own mean.
pub fn r_squared(truth: &[f64], pred: &[f64]) -> f64 {
    let mean = truth.iter().sum::<f64>() / truth.len().max(1) as f64;
    let ss_tot: f64 = truth.iter().map(|t| (t - mean).powi(2)).sum();
    let ss_res: f64 = truth.iter().zip(pred).map(|(t, p)| (t - p).powi(2)).sum();
    1.0 - ss_res / ss_tot.max(f64::MIN_POSITIVE)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn onehot(c: usize, conf: f64) -> Vec<f64> {
        let mut p = vec![(1.0 - conf) / 2.0; 3];
        p[c] = conf;
        p
    }

    #[test]
    fn three_class_metrics_by_hand() {
        // truth: NC NC MCI MCI AD AD; predictions: NC MCI MCI MCI AD NC
        let y = [0, 0, 1, 1, 2, 2];
        let proba: Vec<Vec<f64>> = [0, 1, 1, 1, 2, 0].iter().map(|&c| onehot(c, 0.8)).collect();
        let m = classification(&y, &proba, 3);
        assert_eq!(m.confusion, vec![vec![1, 1, 0], vec![0, 2, 0], vec![1, 0, 1]]);
        assert!((m.accuracy - 4.0 / 6.0).abs() < 1e-12);
        assert!((m.balanced_accuracy - (0.5 + 1.0 + 0.5) / 3.0).abs() < 1e-12);
        assert_eq!(m.sensitivity, vec![0.5, 1.0, 0.5]);
        // NC: negatives 4, false positives 1 → 3/4
        assert_eq!(m.specificity, vec![0.75, 0.75, 1.0]);
        assert!(m.auc.unwrap() > 0.5 && m.auc.unwrap() <= 1.0);
    }

    #[test]
    fn auc_matches_known_values() {
        assert_eq!(binary_auc(&[false, false, true, true], &[0.1, 0.4, 0.35, 0.8]), 0.75);
        assert_eq!(binary_auc(&[false, true], &[0.5, 0.5]), 0.5);
        assert_eq!(binary_auc(&[true, true, false], &[0.9, 0.8, 0.1]), 1.0);
        // Two classes: AUC of the positive class.
        let m = classification(&[0, 0, 1, 1], &[vec![0.9, 0.1], vec![0.6, 0.4], vec![0.65, 0.35], vec![0.2, 0.8]], 2);
        assert_eq!(m.auc, Some(0.75));
    }

    #[test]
    fn regression_metrics() {
        let r = regression(&[1.0, 2.0, 3.0], &[2.0, 2.0, 4.0]);
        assert!((r.mae - 2.0 / 3.0).abs() < 1e-12);
        assert!((r.rmse - (2.0f64 / 3.0).sqrt()).abs() < 1e-12);
        assert!((r.pearson_r.unwrap() - 0.866_025_403_784_438_6).abs() < 1e-12);
        assert_eq!(regression(&[1.0, 1.0], &[0.0, 2.0]).pearson_r, None);
    }
}
