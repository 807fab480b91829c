//! One training epoch of the method, on any autodiff backend: each scan is paired with its own
//! report (contrastive over the batch) and the standardised MMSE is regressed.

use burn::data::dataloader::batcher::Batcher;
use burn::data::dataset::Dataset;
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
        let batch: CohortBatch<B> = CohortBatcher.batch(ds.load_many(chunk)?, device);
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
