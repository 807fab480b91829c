//! Predictions of an image model over a cohort, and their scores: every scan is matched against
//! the class prompts ("A photo of {class}.") and the softmax over the scaled similarities gives
//! its class probabilities.

use std::collections::HashMap;
use std::path::Path;

use burn::data::dataloader::batcher::Batcher;
use burn::data::dataset::Dataset;
use burn::module::AutodiffModule;
use burn::prelude::*;
use burn::tensor::activation::softmax;
use burn::tensor::backend::AutodiffBackend;

use crate::data::dataset::{CohortBatch, CohortBatcher, CohortDataset};
use crate::data::label::Label;
use crate::data::report::ReportTemplate;
use crate::error::Result;
use crate::eval::metrics::{classification, regression, ClassMetrics, RegressionMetrics, Scored};
use crate::model::method::AdClip;
use crate::model::tokenizer::{tokenize, TextTokenizer};
use crate::run_folder::MmseScale;

/// Scan-level predictions of one evaluation pass.
#[derive(Debug, Clone, Default)]
pub struct Predictions {
    pub scans: Vec<String>,
    pub subjects: Vec<String>,
    pub labels: Vec<Option<Label>>,
    /// Per scan, the probability of each class in `classes` order.
    pub proba: Vec<Vec<f64>>,
    /// Predicted MMSE in points, when the model has the MMSE head.
    pub mmse: Vec<Option<f64>>,
    pub mmse_truth: Vec<Option<f64>>,
}

impl Predictions {
    /// The predictions at `keep`, in that order.
    pub fn select(&self, keep: &[usize]) -> Predictions {
        Predictions {
            scans: keep.iter().map(|&i| self.scans[i].clone()).collect(),
            subjects: keep.iter().map(|&i| self.subjects[i].clone()).collect(),
            labels: keep.iter().map(|&i| self.labels[i]).collect(),
            proba: keep.iter().map(|&i| self.proba[i].clone()).collect(),
            mmse: keep.iter().map(|&i| self.mmse[i]).collect(),
            mmse_truth: keep.iter().map(|&i| self.mmse_truth[i]).collect(),
        }
    }

    /// `predictions.csv`: scan, subject, label, predicted class, one probability per class,
    /// MMSE and predicted MMSE.
    pub fn write_csv(&self, path: &Path, classes: &[Label]) -> Result<()> {
        crate::util::write_atomic(path, |w| {
            let mut csv = csv::Writer::from_writer(w);
            let mut header = vec!["scan".to_string(), "subject".into(), "label".into(), "predicted".into()];
            header.extend(classes.iter().map(|c| format!("p_{c}")));
            header.extend(["mmse".into(), "mmse_predicted".into()]);
            csv.write_record(&header).map_err(std::io::Error::other)?;
            for i in 0..self.scans.len() {
                let p = &self.proba[i];
                let best = p.iter().enumerate().fold(0, |b, (c, &v)| if v > p[b] { c } else { b });
                let mut rec = vec![
                    self.scans[i].clone(),
                    self.subjects[i].clone(),
                    self.labels[i].map(|l| l.as_str().to_string()).unwrap_or_default(),
                    classes[best].as_str().to_string(),
                ];
                rec.extend(p.iter().map(|v| format!("{v:.6}")));
                rec.push(self.mmse_truth[i].map(|v| v.to_string()).unwrap_or_default());
                rec.push(self.mmse[i].map(|v| format!("{v:.3}")).unwrap_or_default());
                csv.write_record(&rec).map_err(std::io::Error::other)?;
            }
            csv.flush()
        })
    }
}

/// Run `score_batch` over `ds` in batches and collect scan-level predictions. `score_batch`
/// maps `[batch, 1, D, H, W]` volumes to class probabilities `[batch, classes]` and, when the
/// model has one, the MMSE prediction in points.
pub fn predict_batches<B: Backend>(
    ds: &CohortDataset,
    n_classes: usize,
    batch_size: usize,
    device: &B::Device,
    mut score_batch: impl FnMut(Tensor<B, 5>) -> (Tensor<B, 2>, Option<Vec<f64>>),
) -> Result<Predictions> {
    let mut out = Predictions::default();
    let idx: Vec<usize> = (0..ds.len()).collect();
    for chunk in idx.chunks(batch_size.max(1)) {
        let items = ds.load_many(chunk)?;
        out.labels.extend(items.iter().map(|i| i.label));
        out.mmse_truth.extend(items.iter().map(|i| i.mmse.map(f64::from)));
        let batch: CohortBatch<B> = CohortBatcher.batch(items, device);
        let (p, mmse) = score_batch(batch.volumes);
        let p: Vec<f64> = p.into_data().convert::<f64>().to_vec().unwrap_or_default();
        out.proba.extend(p.chunks(n_classes).map(<[f64]>::to_vec));
        match mmse {
            Some(m) => out.mmse.extend(m.into_iter().map(Some)),
            None => out.mmse.extend(std::iter::repeat_n(None, chunk.len())),
        }
        out.scans.extend(batch.scans);
        out.subjects.extend(batch.subjects);
    }
    Ok(out)
}

/// Match every scan of `ds` against the class prompts (`template.prompt(class)`), each scan on
/// its own (`AdClip::logits_each`): predictions do not depend on the batch.
#[allow(clippy::too_many_arguments)]
pub fn predict<B: Backend>(
    model: &AdClip<B>,
    ds: &CohortDataset,
    tok: &TextTokenizer,
    template: &ReportTemplate,
    classes: &[Label],
    scale: MmseScale,
    batch_size: usize,
    device: &B::Device,
) -> Result<Predictions> {
    let prompts: Vec<String> = classes.iter().map(|&c| template.prompt(c)).collect();
    let (ids, mask) = tokenize::<B>(tok, &prompts, device)?;
    let w = model.encode_text(ids, mask);
    predict_batches(ds, classes.len(), batch_size, device, |volumes| {
        let image = model.encode_image(volumes);
        let mmse = image.mmse.map(|m| {
            m.into_data()
                .convert::<f64>()
                .to_vec::<f64>()
                .unwrap_or_default()
                .into_iter()
                .map(|z| scale.points(z))
                .collect()
        });
        (softmax(model.logits_each(image.v, w.clone()), 1), mmse)
    })
}

/// Scan-level classification metrics (scans without a label in `classes` are left out) and MMSE
/// errors in points (scans without MMSE or without a prediction are left out).
pub fn score(p: &Predictions, classes: &[Label]) -> (ClassMetrics, Option<RegressionMetrics>) {
    let (mut y, mut proba) = (Vec::new(), Vec::new());
    for (label, pr) in p.labels.iter().zip(&p.proba) {
        if let Some(c) = label.and_then(|l| classes.iter().position(|&k| k == l)) {
            y.push(c);
            proba.push(pr.clone());
        }
    }
    let pairs: Vec<(f64, f64)> = p.mmse_truth.iter().zip(&p.mmse).filter_map(|(t, q)| t.zip(*q)).collect();
    let reg = (!pairs.is_empty()).then(|| {
        let (t, q): (Vec<f64>, Vec<f64>) = pairs.into_iter().unzip();
        regression(&t, &q)
    });
    (classification(&y, &proba, classes.len()), reg)
}

/// Scan-level metrics and those of each subject's baseline visit.
pub fn score_levels(p: &Predictions, ds: &CohortDataset, classes: &[Label]) -> (Scored, Scored) {
    let (c, m) = score(p, classes);
    let (sc, sm) = score(&p.select(&baseline_visits(ds)), classes);
    (Scored { classification: c, mmse: m }, Scored { classification: sc, mmse: sm })
}

/// `predict` then `score`, on the inference copy of an autodiff model.
#[allow(clippy::too_many_arguments)]
pub fn evaluate<B: AutodiffBackend>(
    model: &AdClip<B>,
    ds: &CohortDataset,
    tok: &TextTokenizer,
    template: &ReportTemplate,
    classes: &[Label],
    scale: MmseScale,
    batch_size: usize,
    device: &B::Device,
) -> Result<(ClassMetrics, Option<RegressionMetrics>)> {
    let inner = model.valid();
    let p = predict(&inner, ds, tok, template, classes, scale, batch_size, device)?;
    Ok(score(&p, classes))
}

/// Index of each subject's earliest scan (by date, then scan id), in row order.
pub fn baseline_visits(ds: &CohortDataset) -> Vec<usize> {
    let key = |j: usize| {
        let r = &ds.rows()[j];
        (r.date.is_none(), r.date.clone(), r.scan.clone())
    };
    let mut first: HashMap<&str, usize> = HashMap::new();
    for (i, r) in ds.rows().iter().enumerate() {
        first
            .entry(r.subject.as_str())
            .and_modify(|j| {
                if key(i) < key(*j) {
                    *j = i
                }
            })
            .or_insert(i);
    }
    let mut v: Vec<usize> = first.into_values().collect();
    v.sort_unstable();
    v
}
