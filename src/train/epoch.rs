//! One training epoch of the method, on any autodiff backend: each scan is paired with its own
//! report (contrastive over the batch) and the standardised MMSE is regressed.

use burn::data::dataloader::batcher::Batcher;
use burn::data::dataset::Dataset;
use burn::nn::loss::CrossEntropyLossConfig;
use burn::optim::{GradientsParams, Optimizer};
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::data::dataset::{CohortBatch, CohortBatcher, CohortDataset};
use crate::error::{Error, Result};
use crate::model::method::AdClip;
use crate::model::tokenizer::{tokenize, TextTokenizer};
use crate::run_folder::MmseScale;

/// What one epoch of training saw.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct EpochLoss {
    pub loss: f64,
    pub contrastive: f64,
    pub mmse: f64,
    pub batches: usize,
}

/// How one epoch trains.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EpochPlan {
    pub epoch: u64,
    /// Batches are drawn in an order seeded by (`seed`, `epoch`).
    pub seed: u64,
    pub lr: f64,
    /// Decoupled, on matrices only, applied here (the optimiser runs without weight decay).
    pub weight_decay: f64,
    pub batch_size: usize,
    /// Weight of the MMSE loss.
    pub lambda: f64,
    /// Clip the gradients' global norm to this before each step.
    pub grad_clip: Option<f64>,
}

/// adfit's optional class-prompt objective (not the paper's): each training image is also
/// classified against the inference prompts ("A photo of {class}."), with this weight on the
/// cross-entropy, so the texts used at inference are seen in training. `train_epoch` takes it
/// as `Some` only when it is on.
#[derive(Debug, Clone, PartialEq)]
pub struct ClassPrompts {
    /// One prompt per class, in class-index order (NC, MCI, AD).
    pub texts: Vec<String>,
    pub weight: f64,
}

/// Train for one epoch. A last batch of a single scan is dropped (the contrastive loss needs
/// two). A non-finite loss stops with an error naming the epoch and batch. `on_batch(done,
/// total)` is called before each batch (for progress bars).
#[allow(clippy::too_many_arguments)]
pub fn train_epoch<B: AutodiffBackend, O: Optimizer<AdClip<B>, B>>(
    mut model: AdClip<B>,
    optim: &mut O,
    ds: &CohortDataset,
    tok: &TextTokenizer,
    scale: MmseScale,
    plan: &EpochPlan,
    class_prompts: Option<&ClassPrompts>,
    device: &B::Device,
    mut on_batch: impl FnMut(usize, usize),
) -> Result<(AdClip<B>, EpochLoss)> {
    let EpochPlan { epoch, seed, lr, weight_decay, batch_size, lambda, grad_clip } = *plan;
    // The class prompts are the same every batch: tokenised once (they still pass through the
    // text tower per batch, for their gradients).
    let class_prompts = match class_prompts {
        Some(cp) => Some((tokenize::<B>(tok, &cp.texts, device)?, cp.weight)),
        None => None,
    };
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
        let batch: CohortBatch<B> = CohortBatcher.batch(ds.load_many(chunk)?, device);
        let (ids, mask) = tokenize::<B>(tok, &batch.reports, device)?;
        let image = model.encode_image(batch.volumes);
        let w = model.encode_text(ids, mask);
        let target = (batch.mmse - scale.mean) / scale.std * batch.mmse_mask.clone();
        let mut loss = model.loss(&image, w, target, batch.mmse_mask, lambda);
        if let Some(((ids, mask), weight)) = &class_prompts {
            let logits = model.logits_each(image.v.clone(), model.encode_text(ids.clone(), mask.clone()));
            let ce = CrossEntropyLossConfig::new().init(device).forward(logits, batch.labels.clone());
            loss.total = loss.total + ce * *weight;
        }
        let value = scalar(loss.total.clone());
        if !value.is_finite() {
            return Err(Error::config("training", format!("loss is {value} at epoch {epoch}, batch {b}: stopping")));
        }
        sums.loss += value;
        sums.contrastive += scalar(loss.contrastive.clone());
        sums.mmse += loss.mmse.clone().map_or(0.0, scalar);
        sums.batches += 1;
        let mut grads = GradientsParams::from_grads(loss.total.backward(), &model);
        if let Some(max_norm) = grad_clip {
            super::clip::clip_global_norm::<B, _>(&model, &mut grads, max_norm);
        }
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
