//! The metadata oracle: what the clinical table alone predicts. A multinomial logistic
//! regression on the six volume columns plus age gives the diagnosis, a ridge regression on the
//! same features gives MMSE; both are fitted on the training part of a split and scored with
//! the same metrics as the image models. A missing value is replaced by the training mean (a
//! column with no value at all drops out).

use crate::data::label::Label;
use crate::data::preprocess::IndexRow;
use crate::error::{Error, Result};
use crate::eval::logreg::{self, LogReg};
use crate::eval::predict::Predictions;

/// The features, as the table names them.
pub const FEATURES: [&str; 7] = ["Hippocampus", "Ventricles", "WholeBrain", "Entorhinal", "Fusiform", "MidTemp", "AGE"];

fn raw(r: &IndexRow) -> Vec<Option<f64>> {
    vec![r.hippocampus, r.ventricles, r.whole_brain, r.entorhinal, r.fusiform, r.mid_temp, r.age.map(f64::from)]
}

fn label(r: &IndexRow) -> Option<Label> {
    r.label.as_deref().and_then(Label::parse)
}

/// A logistic regression for the diagnosis and a ridge regression for MMSE on one feature
/// vector per scan: the oracle's on the table's columns, the linear probe's on a backbone's
/// frozen image features (`eval::probe`).
#[derive(Debug, Clone)]
pub struct Tabular {
    /// Training means (for imputation and standardisation) and SDs.
    scaler: Standardiser,
    classifier: LogReg,
    /// Intercept and weights on standardised features; None when no training row has an MMSE.
    mmse: Option<(f64, Vec<f64>)>,
}

impl Tabular {
    /// Fit on the rows with a diagnosis (and, for MMSE, those with a score); `features[i]` is
    /// row `i`'s, a missing value replaced by the training mean. Features are standardised and
    /// both fits penalise the weights by `l2`.
    pub fn fit(rows: &[IndexRow], features: &[Vec<Option<f64>>], names: &[&str], l2: f64) -> Result<Tabular> {
        let picked: Vec<usize> = (0..rows.len()).filter(|&i| label(&rows[i]).is_some()).collect();
        if picked.is_empty() {
            return Err(Error::config("oracle", "no training scan has a diagnosis"));
        }
        let (scaler, empty) = Standardiser::fit(picked.iter().map(|&i| features[i].as_slice()), names.len());
        for f in empty {
            // A column the table lacks: constant, so the fits ignore it.
            tracing::warn!("no training scan has a value of {}; it is left out", names[f]);
        }
        let x: Vec<Vec<f64>> = picked.iter().map(|&i| scaler.apply(&features[i])).collect();
        let y: Vec<usize> = picked.iter().filter_map(|&i| label(&rows[i])).map(Label::index).collect();
        let classifier = logreg::fit(&x, &y, 3, l2)?;
        let scored: Vec<(Vec<f64>, f64)> =
            picked.iter().zip(&x).filter_map(|(&i, x)| rows[i].mmse.map(|m| (x.clone(), f64::from(m)))).collect();
        let mmse = (!scored.is_empty()).then(|| ridge(&scored, l2.max(1.0)));
        Ok(Tabular { scaler, classifier, mmse })
    }

    /// Predictions for `rows` (features `features[i]`) over `classes` (a subset such as NC, AD
    /// renormalises the three class probabilities over it).
    pub fn predict(&self, rows: &[IndexRow], features: &[Vec<Option<f64>>], classes: &[Label]) -> Predictions {
        let mut p = Predictions::default();
        for (r, f) in rows.iter().zip(features) {
            let z = self.scaler.apply(f);
            let all = self.classifier.proba_row(&z);
            let picked: Vec<f64> = classes.iter().map(|c| all[c.index()]).collect();
            let total: f64 = picked.iter().sum::<f64>().max(f64::MIN_POSITIVE);
            p.scans.push(r.scan.clone());
            p.subjects.push(r.subject.clone());
            p.labels.push(label(r));
            p.proba.push(picked.iter().map(|v| v / total).collect());
            p.mmse.push(
                self.mmse
                    .as_ref()
                    .map(|(b, w)| (b + w.iter().zip(&z).map(|(a, b)| a * b).sum::<f64>()).clamp(0.0, 30.0)),
            );
            p.mmse_truth.push(r.mmse.map(f64::from));
        }
        p
    }
}

/// Per-column training mean and SD (an SD of 0 is stored as 1), missing values left out.
#[derive(Debug, Clone)]
pub struct Standardiser {
    mean: Vec<f64>,
    sd: Vec<f64>,
}

impl Standardiser {
    /// Fit on `rows` of `d` features; also returns the columns with no value at all (mean 0,
    /// SD 1, so they standardise to 0).
    pub fn fit<'a>(rows: impl Iterator<Item = &'a [Option<f64>]> + Clone, d: usize) -> (Self, Vec<usize>) {
        let (mut mean, mut sd, mut empty) = (vec![0.0; d], vec![1.0; d], Vec::new());
        for f in 0..d {
            let v: Vec<f64> = rows.clone().filter_map(|r| r[f]).collect();
            if v.is_empty() {
                empty.push(f);
                continue;
            }
            mean[f] = v.iter().sum::<f64>() / v.len() as f64;
            let var = v.iter().map(|x| (x - mean[f]).powi(2)).sum::<f64>() / v.len() as f64;
            sd[f] = if var > 0.0 { var.sqrt() } else { 1.0 };
        }
        (Standardiser { mean, sd }, empty)
    }

    /// Standardised features, a missing one at the training mean (0).
    pub fn apply(&self, features: &[Option<f64>]) -> Vec<f64> {
        features.iter().zip(self.mean.iter().zip(&self.sd)).map(|(v, (m, s))| (v.unwrap_or(*m) - m) / s).collect()
    }
}

/// The metadata oracle: [`Tabular`] on the six volume columns and age.
#[derive(Debug, Clone)]
pub struct Oracle(Tabular);

impl Oracle {
    pub fn fit(train: &[IndexRow]) -> Result<Oracle> {
        let x: Vec<_> = train.iter().map(raw).collect();
        Ok(Oracle(Tabular::fit(train, &x, &FEATURES, 1e-2)?))
    }

    pub fn predict(&self, rows: &[IndexRow], classes: &[Label]) -> Predictions {
        let x: Vec<_> = rows.iter().map(raw).collect();
        self.0.predict(rows, &x, classes)
    }
}

/// Ridge regression with an unpenalised intercept: `(intercept, weights)` minimising
/// `Σ (y − b − w·x)² + l2·|w|²`, by the normal equations on centred data.
pub fn ridge(rows: &[(Vec<f64>, f64)], l2: f64) -> (f64, Vec<f64>) {
    let (n, d) = (rows.len() as f64, rows[0].0.len());
    let xm: Vec<f64> = (0..d).map(|j| rows.iter().map(|r| r.0[j]).sum::<f64>() / n).collect();
    let ym = rows.iter().map(|r| r.1).sum::<f64>() / n;
    // Augmented matrix [XᵀX + l2·I | Xᵀy] of the centred data.
    let mut a = vec![vec![0.0; d + 1]; d];
    for (x, y) in rows {
        for i in 0..d {
            for j in 0..d {
                a[i][j] += (x[i] - xm[i]) * (x[j] - xm[j]);
            }
            a[i][d] += (x[i] - xm[i]) * (y - ym);
        }
    }
    for (i, row) in a.iter_mut().enumerate() {
        row[i] += l2;
    }
    // Gauss-Jordan with partial pivoting; the ridge keeps the matrix positive definite.
    for c in 0..d {
        let p = (c..d).max_by(|&i, &j| a[i][c].abs().total_cmp(&a[j][c].abs())).unwrap_or(c);
        a.swap(c, p);
        let pivot = a[c][c];
        for v in a[c].iter_mut() {
            *v /= pivot;
        }
        for r in 0..d {
            if r != c {
                let f = a[r][c];
                let src = a[c].clone();
                for (v, s) in a[r].iter_mut().zip(&src) {
                    *v -= f * s;
                }
            }
        }
    }
    let w: Vec<f64> = a.iter().map(|row| row[d]).collect();
    let b = ym - w.iter().zip(&xm).map(|(w, m)| w * m).sum::<f64>();
    (b, w)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ridge_recovers_a_linear_law() {
        let rows: Vec<(Vec<f64>, f64)> = (0..50)
            .map(|i| {
                let x = vec![(i as f64 * 0.37).sin(), (i as f64 * 0.91).cos()];
                let y = 3.0 + 2.0 * x[0] - 1.5 * x[1];
                (x, y)
            })
            .collect();
        let (b, w) = ridge(&rows, 1e-9);
        assert!((b - 3.0).abs() < 1e-6 && (w[0] - 2.0).abs() < 1e-6 && (w[1] + 1.5).abs() < 1e-6, "{b} {w:?}");
    }

    fn row(i: usize, label: &str, hippo: f64, mmse: f32) -> IndexRow {
        let mut r = IndexRow::bare(&format!("s{i}"), &format!("p{i}"), "x.vol");
        r.label = Some(label.into());
        r.mmse = Some(mmse);
        r.age = Some(70.0 + (i % 7) as f32);
        (r.hippocampus, r.ventricles, r.whole_brain) = (Some(hippo), Some(40000.0 - hippo), Some(1e6));
        (r.entorhinal, r.fusiform, r.mid_temp) = (Some(hippo / 2.0), Some(15000.0), None);
        r
    }

    #[test]
    fn separable_volumes_are_classified_and_mmse_follows_them() {
        let labels = ["NC", "MCI", "AD"];
        let train: Vec<IndexRow> = (0..60)
            .map(|i| {
                let c = i % 3;
                row(i, labels[c], 7000.0 - 1000.0 * c as f64 + (i % 5) as f64 * 40.0, 29.0 - 4.0 * c as f32)
            })
            .collect();
        let o = Oracle::fit(&train).unwrap();
        let test = vec![row(100, "NC", 7100.0, 29.0), row(101, "AD", 5050.0, 21.0)];
        let p = o.predict(&test, &Label::ALL);
        assert!(p.proba[0][0] > 0.9 && p.proba[1][2] > 0.9, "{:?}", p.proba);
        assert!((p.mmse[0].unwrap() - 29.0).abs() < 1.0 && (p.mmse[1].unwrap() - 21.0).abs() < 1.0);
        let two = o.predict(&test, &[Label::NC, Label::AD]);
        assert!((two.proba[0].iter().sum::<f64>() - 1.0).abs() < 1e-12);
    }

    #[test]
    fn no_diagnosis_no_oracle() {
        let mut r = row(0, "NC", 1.0, 1.0);
        r.label = None;
        assert!(Oracle::fit(&[r]).unwrap_err().to_string().contains("diagnosis"));
    }
}
