//! Contrastive pre-training of adfit's default backbone on the brain corpus
//! (`data::synth::corpus`) against a frozen, real text tower (all-MiniLM-L6-v2 by default).
//!
//! Only the image side learns: the 3D ViT, both projections and the scale. The text tower never
//! changes, so every caption's [CLS] state is computed once, before the first step, and each step
//! costs one pass of the small ViT. The corpus is generated once and held in memory; every step
//! draws a batch from a shuffled pass over it, each head lightly augmented (a left-right flip, a
//! shift of up to two voxels, a rotation of up to two degrees), so the ViT does not learn the
//! corpus by heart. Held-out heads come from a seed space of their own.

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
}

impl<B: Backend> ImageSide<B> {
    /// A fresh image side for `cfg`, with projections into `cfg.joint_dim` from the ViT and from a
    /// text tower `text_hidden` wide; the scale starts at 10 (M3D-CLIP multiplies it raw).
    pub fn init(cfg: &PretrainConfig, text_hidden: usize, device: &B::Device) -> Result<Self> {
        B::seed(device, cfg.seed);
        let vit = Vit3d::init_with_std(&cfg.vit(), cfg.init_std(), device)?;
        Ok(ImageSide {
            vision_proj: LinearConfig::new(cfg.hidden, cfg.joint_dim).init(device),
            text_proj: LinearConfig::new(text_hidden, cfg.joint_dim).init(device),
            vit,
            logit_scale: Param::from_tensor(Tensor::from_data(TensorData::new(vec![10f32], [1]), device)),
        })
    }

    /// `encode_image · encode_textᵀ · scale`, as [`ClipBackbone::logits`] computes it, from the
    /// text tower's [CLS] states `text` `[m, text_hidden]`.
    pub fn logits(&self, images: Tensor<B, 5>, text: Tensor<B, 2>) -> Tensor<B, 2> {
        let img = l2norm(self.vision_proj.forward(self.vit.forward_pooled(images)));
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
/// (`[corpus.len(), hidden]`, computed once by [`text_states`]); `on_step` sees each step's log.
pub fn train<B: AutodiffBackend>(
    mut side: ImageSide<B>,
    corpus: &[Head],
    text: Tensor<B::InnerBackend, 2>,
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
        let logits = side.logits(stack(&volumes, cfg.grid, device), txt);
        let acc = accuracy(logits.clone().inner());
        let loss = clip_loss(logits);
        let value: f64 = loss.clone().into_scalar().elem();
        if !value.is_finite() {
            return Err(Error::config("pretrain", format!("loss is {value} at step {step}: stopping")));
        }
        let lr = cfg.lr_at(step);
        let grads = GradientsParams::from_grads(loss.backward(), &side);
        side = optim.step(lr, side, grads);
        on_step(&StepLog { step, lr, loss: value, accuracy: acc });
    }
    Ok(side)
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
