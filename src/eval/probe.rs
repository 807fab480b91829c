//! What a backbone's frozen image features hold on their own: its [CLS] state after the final
//! norm (before any projection), read out linearly.
//!
//! - The **linear probe** of the diagnosis: [`Tabular`] (logistic regression, plus ridge for
//!   MMSE) on the standardised features, its penalty chosen by a subject-grouped 5-fold
//!   cross-validation inside the training scans. It is the experiment's `linear-probe` row: what
//!   a researcher gets from the features without the method.
//! - **Volume R²**: ridge regressions of the hippocampal and ventricular volume columns on the
//!   same features, fitted on the training scans and scored on the test scans. They say whether
//!   pre-training put atrophy into the features at all.

use std::collections::{BTreeMap, HashMap};

use burn::data::dataloader::batcher::Batcher;
use burn::prelude::*;
use serde::Serialize;

use crate::data::dataset::{CohortBatch, CohortBatcher, CohortDataset};
use crate::data::label::Label;
use crate::data::preprocess::IndexRow;
use crate::error::{Error, Result};
use crate::eval::oracle::{ridge, Standardiser, Tabular};
use crate::eval::predict::{score, Predictions};
use crate::model::clip::ClipBackbone;

/// The penalties the probe's cross-validation chooses among.
pub const PENALTIES: [f64; 6] = [1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0];

/// The frozen [CLS] features of every scan of `ds`, in its order, `batch` scans per pass.
pub fn frozen_features<B: Backend>(
    model: &ClipBackbone<B>,
    ds: &CohortDataset,
    batch: usize,
    device: &B::Device,
) -> Result<Vec<Vec<Option<f64>>>> {
    let mut out = Vec::with_capacity(ds.rows().len());
    let idx: Vec<usize> = (0..ds.rows().len()).collect();
    for chunk in idx.chunks(batch.max(1)) {
        let b: CohortBatch<B> = CohortBatcher.batch(ds.load_many(chunk)?, device);
        let pooled = model.vit.forward_pooled(b.volumes);
        let h = pooled.dims()[1];
        let cls: Vec<f64> = pooled.into_data().convert::<f64>().to_vec().unwrap_or_default();
        out.extend(cls.chunks(h).map(|r| r.iter().map(|&v| Some(v)).collect::<Vec<_>>()));
    }
    Ok(out)
}

fn label(r: &IndexRow) -> Option<usize> {
    r.label.as_deref().and_then(Label::parse).map(Label::index)
}

/// The probe's penalty: the one of [`PENALTIES`] with the best mean balanced accuracy over a
/// subject-grouped 5-fold split of the training scans (ties to the larger penalty).
pub fn choose_penalty(rows: &[IndexRow], x: &[Vec<Option<f64>>]) -> Result<f64> {
    let subjects: BTreeMap<&str, usize> = rows.iter().map(|r| r.subject.as_str()).zip(0..).collect();
    let order: HashMap<&str, usize> = subjects.keys().enumerate().map(|(i, s)| (*s, i)).collect();
    let fold_of = |r: &IndexRow| order[r.subject.as_str()] % 5;
    let mut best = (f64::NEG_INFINITY, PENALTIES[0]);
    for &l2 in &PENALTIES {
        let mut scores = Vec::new();
        for k in 0..5 {
            let (fit, held): (Vec<usize>, Vec<usize>) = (0..rows.len()).partition(|&i| fold_of(&rows[i]) != k);
            let held: Vec<usize> = held.into_iter().filter(|&i| label(&rows[i]).is_some()).collect();
            if held.is_empty() {
                continue;
            }
            let pick = |ids: &[usize]| -> (Vec<IndexRow>, Vec<Vec<Option<f64>>>) {
                (ids.iter().map(|&i| rows[i].clone()).collect(), ids.iter().map(|&i| x[i].clone()).collect())
            };
            let (fr, fx) = pick(&fit);
            let Ok(model) = Tabular::fit(&fr, &fx, &names(x), l2) else { continue };
            let (hr, hx) = pick(&held);
            scores.push(score(&model.predict(&hr, &hx, &Label::ALL), &Label::ALL).0.balanced_accuracy);
        }
        let mean = scores.iter().sum::<f64>() / scores.len().max(1) as f64;
        if mean >= best.0 {
            best = (mean, l2);
        }
    }
    Ok(best.1)
}

fn names(x: &[Vec<Option<f64>>]) -> Vec<&'static str> {
    vec!["frozen image feature"; x.first().map_or(0, Vec::len)]
}

/// The linear probe fitted on `train` (features `train_x`), predicting `test` over `classes`;
/// returns the predictions and the penalty cross-validation chose.
pub fn linear_probe(
    train: &[IndexRow],
    train_x: &[Vec<Option<f64>>],
    test: &[IndexRow],
    test_x: &[Vec<Option<f64>>],
    classes: &[Label],
) -> Result<(Predictions, f64)> {
    let l2 = choose_penalty(train, train_x)?;
    let model = Tabular::fit(train, train_x, &names(train_x), l2)?;
    Ok((model.predict(test, test_x, classes), l2))
}

/// Test-set R² of ridge regressions (penalty 1 on standardised features) of the hippocampal
/// and ventricular volumes on the features.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct VolumeR2 {
    pub hippocampus: f64,
    pub ventricles: f64,
}

pub fn volume_r2(
    train: &[IndexRow],
    train_x: &[Vec<Option<f64>>],
    test: &[IndexRow],
    test_x: &[Vec<Option<f64>>],
) -> Result<VolumeR2> {
    let d = train_x.first().map_or(0, Vec::len);
    let (scaler, _) = Standardiser::fit(train_x.iter().map(Vec::as_slice), d);
    let r2 = |get: fn(&IndexRow) -> Option<f64>, what: &str| -> Result<f64> {
        let pairs = |rows: &[IndexRow], x: &[Vec<Option<f64>>]| -> Vec<(Vec<f64>, f64)> {
            rows.iter().zip(x).filter_map(|(r, x)| get(r).map(|y| (scaler.apply(x), y))).collect()
        };
        let (fit, held) = (pairs(train, train_x), pairs(test, test_x));
        if fit.len() < 2 || held.len() < 2 {
            return Err(Error::config("probe", format!("too few scans with a {what} volume")));
        }
        let (b, w) = ridge(&fit, 1.0);
        let truth: Vec<f64> = held.iter().map(|h| h.1).collect();
        let pred: Vec<f64> = held.iter().map(|(x, _)| b + w.iter().zip(x).map(|(a, b)| a * b).sum::<f64>()).collect();
        Ok(crate::eval::metrics::r_squared(&truth, &pred))
    };
    Ok(VolumeR2 { hippocampus: r2(|r| r.hippocampus, "Hippocampus")?, ventricles: r2(|r| r.ventricles, "Ventricles")? })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(n: usize) -> (Vec<IndexRow>, Vec<Vec<Option<f64>>>) {
        let labels = ["NC", "MCI", "AD"];
        let mut rows = Vec::new();
        let mut x = Vec::new();
        for i in 0..n {
            let c = i % 3;
            let mut r = IndexRow::bare(&format!("s{i}"), &format!("p{}", i / 2), "x");
            r.label = Some(labels[c].into());
            let noise = ((i * 7919) % 101) as f64 / 101.0 - 0.5;
            r.hippocampus = Some(7000.0 - 800.0 * c as f64 + 300.0 * noise);
            r.ventricles = Some(20000.0 + 9000.0 * c as f64 - 2000.0 * noise);
            r.mmse = Some(29.0 - 3.0 * c as f32);
            // Two informative features and one of pure noise.
            x.push(vec![Some(r.hippocampus.unwrap() / 1000.0), Some(r.ventricles.unwrap() / 1e4), Some(noise)]);
            rows.push(r);
        }
        (rows, x)
    }

    #[test]
    fn informative_features_are_probed_and_regressed() {
        let (r, x) = rows(90);
        let (train, test) = (&r[..60], &r[60..]);
        let (p, l2) = linear_probe(train, &x[..60], test, &x[60..], &Label::ALL).unwrap();
        assert!(PENALTIES.contains(&l2));
        assert!(score(&p, &Label::ALL).0.balanced_accuracy > 0.9);
        let v = volume_r2(train, &x[..60], test, &x[60..]).unwrap();
        assert!(v.hippocampus > 0.95 && v.ventricles > 0.95, "{v:?}");
    }

    #[test]
    fn noise_features_explain_nothing() {
        let (r, x) = rows(90);
        let noise: Vec<Vec<Option<f64>>> =
            (0..90).map(|i| vec![Some(((i * 31 + 7) % 17) as f64), Some(((i * 13 + 5) % 11) as f64)]).collect();
        let _ = x;
        let v = volume_r2(&r[..60], &noise[..60], &r[60..], &noise[60..]).unwrap();
        assert!(v.hippocampus < 0.2, "{v:?}");
    }
}
