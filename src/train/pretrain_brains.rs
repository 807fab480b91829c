//! Contrastive pre-training of adfit's default backbone on the brain corpus
//! (`data::synth::corpus`) against a frozen, real text tower (all-MiniLM-L6-v2 by default).
//!
//! Only the image side learns: the 3D ViT, both projections and the scale. The text tower never
//! changes, so every caption's [CLS] state is computed once, before the first step, and each step
//! costs one pass of the small ViT. The corpus is generated once and held in memory; every step
//! draws a batch from a shuffled pass over it, each head lightly augmented (a left-right flip, a
//! shift of up to two voxels, a rotation of up to two degrees), so the ViT does not learn the
//! corpus by heart. Held-out heads come from a seed space of their own.
//!
//! With a findings weight above zero, a linear head also reads the caption's measured sizes off
//! the pooled image feature ([`Findings`]), and its squared error joins the loss. Contrastive
//! training against whole captions spends its effort on what tells captions apart within a
//! batch, mostly the large structures and the head size; the findings term asks for every
//! structure the caption measures, the small hippocampus included. The head is not part of the
//! written backbone.

use burn::module::Param;
use burn::nn::{Linear, LinearConfig};
use burn::optim::{AdamWConfig, GradientsParams, Optimizer};
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::TensorData;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

use super::pretrain::{stack, PretrainConfig, StepLog};
use crate::data::augment::{augment, AugmentConfig};
use crate::data::synth::corpus::Head;
use crate::error::{Error, Result};
use crate::eval::metrics::r_squared;
use crate::model::bert::{pool, Bert, Pooling};
use crate::model::clip::ClipBackbone;
use crate::model::heads::l2norm;
use crate::model::loss::clip_loss;
use crate::model::tokenizer::{tokenize, TextTokenizer};
use crate::model::vit3d::Vit3d;

/// The trainable side: everything of a [`ClipBackbone`] but the text tower.
#[derive(Module, Debug)]
pub struct ImageSide<B: Backend> {
    pub vit: Vit3d<B>,
    pub vision_proj: Linear<B>,
    pub text_proj: Linear<B>,
    pub logit_scale: Param<Tensor<B, 1>>,
    /// The findings head (pooled ViT feature → the [`Findings`] targets), when it is trained.
    pub findings: Option<Linear<B>>,
}

impl<B: Backend> ImageSide<B> {
    /// A fresh image side for `cfg`, with projections into `cfg.joint_dim` from the ViT and from a
    /// text tower `text_hidden` wide; the scale starts at 10 (M3D-CLIP multiplies it raw).
    pub fn init(cfg: &PretrainConfig, text_hidden: usize, device: &B::Device) -> Result<Self> {
        B::seed(device, cfg.seed);
        let vit = Vit3d::init_with_std(&cfg.vit(), cfg.init_std(), device)?;
        Ok(ImageSide {
            findings: (cfg.findings_weight > 0.0).then(|| LinearConfig::new(cfg.hidden, FINDINGS.len()).init(device)),
            vision_proj: LinearConfig::new(cfg.hidden, cfg.joint_dim).init(device),
            text_proj: LinearConfig::new(text_hidden, cfg.joint_dim).init(device),
            vit,
            logit_scale: Param::from_tensor(Tensor::from_data(TensorData::new(vec![10f32], [1]), device)),
        })
    }

    /// `encode_image · encode_textᵀ · scale`, as [`ClipBackbone::logits`] computes it, from the
    /// text tower's [CLS] states `text` `[m, text_hidden]`.
    pub fn logits(&self, images: Tensor<B, 5>, text: Tensor<B, 2>) -> Tensor<B, 2> {
        self.logits_pooled(self.vit.forward_pooled(images), text)
    }

    /// [`Self::logits`] from the ViT's pooled output `pooled` `[n, hidden]`.
    fn logits_pooled(&self, pooled: Tensor<B, 2>, text: Tensor<B, 2>) -> Tensor<B, 2> {
        let img = l2norm(self.vision_proj.forward(pooled));
        let txt = l2norm(self.text_proj.forward(text));
        img.matmul(txt.transpose()) * self.logit_scale.val().reshape([1, 1])
    }

    /// The whole backbone, around the frozen text tower it was trained against.
    pub fn with_text(self, bert: Bert<B>) -> ClipBackbone<B> {
        ClipBackbone {
            vit: self.vit,
            bert,
            vision_proj: self.vision_proj,
            text_proj: self.text_proj,
            logit_scale: self.logit_scale,
            logit_bias: None,
        }
    }
}

/// What the findings head predicts, in order: each structure's share of intracranial volume
/// (log), then the intracranial volume itself (log). These are the sizes every caption states.
pub const FINDINGS: [&str; 7] =
    ["ventricles", "hippocampus", "whole_brain", "entorhinal", "fusiform", "middle_temporal", "intracranial"];

/// The findings targets' standardisation, fitted on the training corpus.
#[derive(Debug, Clone, PartialEq)]
pub struct Findings {
    mean: [f64; 7],
    std: [f64; 7],
}

impl Findings {
    /// The log sizes of one head, in [`FINDINGS`] order (`Head::volumes` ends with the ICV).
    fn raw(h: &Head) -> [f64; 7] {
        let icv = h.volumes[6].max(1.0);
        std::array::from_fn(|k| if k < 6 { (h.volumes[k].max(1e-3) / icv).ln() } else { icv.ln() })
    }

    /// Mean and standard deviation of every target over `heads`.
    pub fn fit(heads: &[Head]) -> Self {
        let n = heads.len().max(1) as f64;
        let raw: Vec<[f64; 7]> = heads.iter().map(Self::raw).collect();
        let mean: [f64; 7] = std::array::from_fn(|k| raw.iter().map(|r| r[k]).sum::<f64>() / n);
        let std = std::array::from_fn(|k| {
            let var = raw.iter().map(|r| (r[k] - mean[k]).powi(2)).sum::<f64>() / n;
            var.sqrt().max(1e-9)
        });
        Findings { mean, std }
    }

    /// The standardised targets of `heads`, `[heads.len(), 7]` row-major.
    pub fn targets<'a>(&self, heads: impl IntoIterator<Item = &'a Head>) -> Vec<f32> {
        heads
            .into_iter()
            .flat_map(|h| {
                let r = Self::raw(h);
                (0..7).map(move |k| ((r[k] - self.mean[k]) / self.std[k]) as f32)
            })
            .collect()
    }
}

/// [CLS] states `[n, hidden]` of `texts` through the frozen `bert`, 32 at a time.
pub fn text_states<B: Backend>(
    bert: &Bert<B>,
    tok: &TextTokenizer,
    texts: &[String],
    device: &B::Device,
) -> Result<Tensor<B, 2>> {
    let mut parts = Vec::new();
    for chunk in texts.chunks(32) {
        let (ids, mask) = tokenize::<B>(tok, chunk, device)?;
        let (last, _) = bert.forward(ids, mask.clone(), false);
        parts.push(pool(last, mask, Pooling::Cls));
    }
    if parts.is_empty() {
        return Err(Error::config("pretrain", "no captions to encode"));
    }
    Ok(Tensor::cat(parts, 0))
}

fn accuracy<B: Backend>(logits: Tensor<B, 2>) -> f64 {
    let picked: Vec<i64> = logits.argmax(1).into_data().convert::<i64>().to_vec().unwrap_or_default();
    picked.iter().enumerate().filter(|&(i, &j)| i as i64 == j).count() as f64 / picked.len().max(1) as f64
}

/// Train `side` for `cfg.steps` steps on `corpus`, whose captions' [CLS] states are `text`
/// (`[corpus.len(), hidden]`, computed once by [`text_states`]) and whose findings targets
/// `findings` standardises (used when `side` has a findings head); `on_step` sees each step's log.
pub fn train<B: AutodiffBackend>(
    mut side: ImageSide<B>,
    corpus: &[Head],
    text: Tensor<B::InnerBackend, 2>,
    findings: &Findings,
    cfg: &PretrainConfig,
    device: &B::Device,
    mut on_step: impl FnMut(&StepLog),
) -> Result<ImageSide<B>> {
    let batch = cfg.batch_size.min(corpus.len());
    if batch < 2 {
        return Err(Error::config("pretrain", "the corpus needs at least two heads"));
    }
    let mut optim = AdamWConfig::new().with_weight_decay(cfg.weight_decay as f32).init::<B, ImageSide<B>>();
    let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed ^ 0x5052_4554_5241_494E);
    let aug = AugmentConfig::default();
    let mut order: Vec<usize> = Vec::new();
    for step in 0..cfg.steps {
        if order.len() < batch {
            order = (0..corpus.len()).collect();
            order.shuffle(&mut rng);
        }
        let picked: Vec<usize> = order.split_off(order.len() - batch);
        let seeds: Vec<u64> = picked.iter().map(|_| rand::Rng::random(&mut rng)).collect();
        let volumes: Vec<Vec<f32>> = picked
            .par_iter()
            .zip(&seeds)
            .map(|(&i, &s)| {
                let mut v = corpus[i].voxels.clone();
                augment(&mut v, cfg.grid, &aug, &mut ChaCha8Rng::seed_from_u64(s));
                v
            })
            .collect();
        let idx = Tensor::<B::InnerBackend, 1, Int>::from_data(
            TensorData::new(picked.iter().map(|&i| i as i64).collect::<Vec<_>>(), [batch]),
            device,
        );
        let txt = Tensor::<B, 2>::from_inner(text.clone().select(0, idx));
        let pooled = side.vit.forward_pooled(stack(&volumes, cfg.grid, device));
        let logits = side.logits_pooled(pooled.clone(), txt);
        let acc = accuracy(logits.clone().inner());
        let mut loss = clip_loss(logits);
        let value: f64 = loss.clone().into_scalar().elem();
        let mut findings_mse = None;
        if let Some(head) = &side.findings {
            let target = findings.targets(picked.iter().map(|&i| &corpus[i]));
            let target = Tensor::<B, 2>::from_data(TensorData::new(target, [batch, FINDINGS.len()]), device);
            let mse = (head.forward(pooled) - target).powi_scalar(2).mean();
            findings_mse = Some(mse.clone().into_scalar().elem::<f64>());
            loss = loss + mse * cfg.findings_weight;
        }
        if !value.is_finite() || findings_mse.is_some_and(|v| !v.is_finite()) {
            return Err(Error::config("pretrain", format!("loss is {value} at step {step}: stopping")));
        }
        let lr = cfg.lr_at(step);
        let grads = GradientsParams::from_grads(loss.backward(), &side);
        side = optim.step(lr, side, grads);
        on_step(&StepLog { step, lr, loss: value, accuracy: acc, findings: findings_mse });
    }
    Ok(side)
}

/// R² of each of the findings head's predictions on `heads` (in [`FINDINGS`] order), scored
/// against `findings`' targets; `None` without a head.
pub fn findings_r2<B: Backend>(
    side: &ImageSide<B>,
    findings: &Findings,
    heads: &[Head],
    grid: [usize; 3],
    device: &B::Device,
) -> Option<[f64; 7]> {
    let head = side.findings.as_ref()?;
    let mut pred = Vec::with_capacity(heads.len() * 7);
    for chunk in heads.chunks(32) {
        let images = stack(&chunk.iter().map(|h| h.voxels.as_slice()).collect::<Vec<_>>(), grid, device);
        let out = head.forward(side.vit.forward_pooled(images));
        pred.extend(out.into_data().convert::<f32>().to_vec::<f32>().unwrap_or_default());
    }
    let target = findings.targets(heads);
    let column =
        |v: &[f32], k: usize| -> Vec<f64> { v.iter().skip(k).step_by(FINDINGS.len()).map(|&x| x as f64).collect() };
    Some(std::array::from_fn(|k| r_squared(&column(&target, k), &column(&pred, k))))
}

/// Image→caption accuracy of a whole backbone on `heads`, in batches of `batch` (the last, short
/// one dropped), each head matched against its batch's captions.
pub fn retrieval_accuracy<B: Backend>(
    model: &ClipBackbone<B>,
    tok: &TextTokenizer,
    heads: &[Head],
    grid: [usize; 3],
    batch: usize,
    device: &B::Device,
) -> Result<f64> {
    let mut sum = 0.0;
    let mut n = 0;
    for chunk in heads.chunks_exact(batch.max(2)) {
        let captions: Vec<String> = chunk.iter().map(|h| h.caption.clone()).collect();
        let (ids, mask) = tokenize::<B>(tok, &captions, device)?;
        let images = stack(&chunk.iter().map(|h| h.voxels.as_slice()).collect::<Vec<_>>(), grid, device);
        sum += accuracy(model.logits(model.encode_image(images), model.encode_text(ids, mask)));
        n += 1;
    }
    Ok(sum / n.max(1) as f64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::synth::corpus;

    #[test]
    fn findings_targets_are_standardised_log_sizes() {
        let heads = corpus::heads([16, 16, 16], 3, false, 0, 12).unwrap();
        let f = Findings::fit(&heads);
        let t = f.targets(&heads);
        assert_eq!(t.len(), 12 * FINDINGS.len());
        for (k, name) in FINDINGS.iter().enumerate() {
            let col: Vec<f64> = t.iter().skip(k).step_by(FINDINGS.len()).map(|&v| v as f64).collect();
            let mean = col.iter().sum::<f64>() / 12.0;
            let var = col.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / 12.0;
            assert!(mean.abs() < 1e-5 && (var - 1.0).abs() < 1e-4, "{name}: mean {mean}, variance {var}");
        }
        // A head with a smaller hippocampal share gets a lower hippocampus target.
        let share = |h: &Head| h.volumes[1] / h.volumes[6];
        let (lo, hi) = (0..12).fold((0, 0), |(lo, hi), i| {
            (
                if share(&heads[i]) < share(&heads[lo]) { i } else { lo },
                if share(&heads[i]) > share(&heads[hi]) { i } else { hi },
            )
        });
        assert!(t[lo * 7 + 1] < t[hi * 7 + 1]);
    }
}
