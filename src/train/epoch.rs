//! One training epoch and one evaluation pass of the method, on any autodiff backend.
//!
//! Training pairs each scan with its own report (contrastive over the batch) and regresses the
//! standardised MMSE; evaluation matches every scan against the class prompts
//! ("A photo of {class}.") and scores the softmax over the scaled similarities.

use burn::data::dataloader::batcher::Batcher;
use burn::data::dataset::Dataset;
use burn::module::AutodiffModule;
use burn::optim::{GradientsParams, Optimizer};
use burn::prelude::*;
use burn::tensor::activation::softmax;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::TensorData;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

use crate::data::dataset::{CohortBatch, CohortBatcher, CohortDataset, CohortItem};
use crate::data::label::Label;
use crate::data::report::ReportTemplate;
use crate::error::{Error, Result};
use crate::eval::metrics::{classification, regression, ClassMetrics, RegressionMetrics};
use crate::model::method::AdClip;
use crate::model::tokenizer::TextTokenizer;

/// Mean and standard deviation of MMSE on the training split: the head regresses
/// `(mmse − mean) / std`, and errors are reported back in MMSE points.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct MmseScale {
    pub mean: f64,
    pub std: f64,
}

impl MmseScale {
    pub fn from_dataset(ds: &CohortDataset) -> Self {
        let v: Vec<f64> = ds.rows().iter().filter_map(|r| r.mmse.map(f64::from)).collect();
        let n = v.len().max(1) as f64;
        let mean = v.iter().sum::<f64>() / n;
        let std = (v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n).sqrt();
        MmseScale { mean, std: if std > 0.0 { std } else { 1.0 } }
    }
}

/// Token ids and mask tensors for a batch of texts.
pub fn tokenize<B: Backend>(
    tok: &TextTokenizer,
    texts: &[String],
    device: &B::Device,
) -> Result<(Tensor<B, 2, Int>, Tensor<B, 2>)> {
    let enc = tok.encode(texts)?;
    let (b, n) = (enc.batch(), enc.len());
    let ids = Tensor::from_data(TensorData::new(enc.ids.concat(), [b, n]), device);
    let mask: Vec<f32> = enc.mask.concat().into_iter().map(|m| m as f32).collect();
    Ok((ids, Tensor::from_data(TensorData::new(mask, [b, n]), device)))
}

fn load_items(ds: &CohortDataset, idx: &[usize]) -> Result<Vec<CohortItem>> {
    idx.par_iter().map(|&i| ds.load(i)).collect()
}

/// What one epoch of training saw.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct EpochLoss {
    pub loss: f64,
    pub contrastive: f64,
    pub mmse: f64,
    pub batches: usize,
}

/// Train for one epoch: batches of `batch_size` scans in an order drawn from (`seed`, `epoch`).
/// The optimiser should run without weight decay: `weight_decay` is applied here, decoupled and
/// to matrices only.
/// A last batch of a single scan is dropped (the contrastive loss needs two). A non-finite loss
/// stops with an error naming the epoch and batch. `on_batch(done, total)` is called before each
/// batch (for progress bars).
#[allow(clippy::too_many_arguments)]
pub fn train_epoch<B: AutodiffBackend, O: Optimizer<AdClip<B>, B>>(
    mut model: AdClip<B>,
    optim: &mut O,
    ds: &CohortDataset,
    tok: &TextTokenizer,
    scale: MmseScale,
    lr: f64,
    weight_decay: f64,
    batch_size: usize,
    lambda: f64,
    seed: u64,
    epoch: u64,
    device: &B::Device,
    mut on_batch: impl FnMut(usize, usize),
) -> Result<(AdClip<B>, EpochLoss)> {
    ds.set_epoch(epoch);
    let mut order: Vec<usize> = (0..ds.len()).collect();
    order.shuffle(&mut ChaCha8Rng::seed_from_u64(seed ^ epoch.wrapping_mul(0x9E37_79B9_7F4A_7C15)));
    let mut sums = EpochLoss { loss: 0.0, contrastive: 0.0, mmse: 0.0, batches: 0 };
    let total = order.len().div_ceil(batch_size.max(2));
    for (b, chunk) in order.chunks(batch_size.max(2)).enumerate() {
        on_batch(b, total);
        if chunk.len() < 2 {
            continue;
        }
        let batch: CohortBatch<B> = CohortBatcher.batch(load_items(ds, chunk)?, device);
        let (ids, mask) = tokenize::<B>(tok, &batch.reports, device)?;
        let image = model.encode_image(batch.volumes);
        let w = model.encode_text(ids, mask);
        let target = (batch.mmse - scale.mean) / scale.std * batch.mmse_mask.clone();
        let loss = model.loss(&image, w, target, batch.mmse_mask, lambda);
        let value = scalar(loss.total.clone());
        if !value.is_finite() {
            return Err(Error::config("training", format!("loss is {value} at epoch {epoch}, batch {b}: stopping")));
        }
        sums.loss += value;
        sums.contrastive += scalar(loss.contrastive.clone());
        sums.mmse += loss.mmse.clone().map_or(0.0, scalar);
        sums.batches += 1;
        let grads = GradientsParams::from_grads(loss.total.backward(), &model);
        model = optim.step(lr, model, grads);
        if weight_decay > 0.0 {
            model = super::decay::decay_matrices(model, lr, weight_decay).0;
        }
    }
    let n = sums.batches.max(1) as f64;
    Ok((
        model,
        EpochLoss {
            loss: sums.loss / n,
            contrastive: sums.contrastive / n,
            mmse: sums.mmse / n,
            batches: sums.batches,
        },
    ))
}

fn scalar<B: Backend>(t: Tensor<B, 1>) -> f64 {
    t.into_data().convert::<f64>().to_vec::<f64>().map(|v| v[0]).unwrap_or(f64::NAN)
}

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
        let items = load_items(ds, chunk)?;
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

#[allow(clippy::too_many_arguments)]
/// Match every scan of `ds` against the class prompts (`template.prompt(class)`), with the
/// model's cross-attention between the batch's images and the prompts.
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
                .map(|z| z * scale.std + scale.mean)
                .collect()
        });
        (softmax(model.logits(image.v, w.clone()), 1), mmse)
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
