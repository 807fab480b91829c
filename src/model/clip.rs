//! A CLIP-style backbone as M3D-CLIP publishes it: the 3D ViT and the BERT text tower with their
//! joint-space projections and logit scale. This is the frozen part of every adfit model and, on
//! its own, the zero-shot baseline (`encode_image` / `encode_text` as M3D-CLIP computes them).

use crate::model::precision::to_dtype;
use burn::module::Param;
use burn::nn::{Linear, LinearConfig};
use burn::prelude::*;
use burn::tensor::TensorData;

use super::bert::{pool, Bert, Pooling};
use super::heads::l2norm;
use super::vit3d::Vit3d;

#[derive(Module, Debug)]
pub struct ClipBackbone<B: Backend> {
    pub vit: Vit3d<B>,
    pub bert: Bert<B>,
    /// `mm_vision_proj`: Linear(vision hidden → joint dim).
    pub vision_proj: Linear<B>,
    /// `mm_language_proj`: Linear(text hidden → joint dim).
    pub text_proj: Linear<B>,
    /// Multiplied raw (no exp, no clamp), as M3D-CLIP does. `[1]`
    pub logit_scale: Param<Tensor<B, 1>>,
    /// Added to every logit, where the backbone has one (Med3DVLM's SigLIP `bias`). A softmax over
    /// class prompts does not see it. `[1]`
    pub logit_bias: Option<Param<Tensor<B, 1>>>,
}

impl<B: Backend> ClipBackbone<B> {
    /// Fresh projections and scale around given towers (for pre-training a small backbone).
    pub fn from_towers(vit: Vit3d<B>, bert: Bert<B>, joint_dim: usize, device: &B::Device) -> Self {
        let (hv, ht) = (vit.hidden_size(), bert.hidden_size());
        let scale = Tensor::from_data(TensorData::new(vec![(1.0f32 / 0.07).ln()], [1]), device);
        ClipBackbone {
            vision_proj: LinearConfig::new(hv, joint_dim).init(device),
            text_proj: LinearConfig::new(ht, joint_dim).init(device),
            vit,
            bert,
            logit_scale: Param::from_tensor(scale),
            logit_bias: None,
        }
    }

    /// A tiny random backbone for tests: `Vit3dConfig::tiny()` (16×32×32 volumes), a one-layer
    /// BERT of width 32 over 50 token ids and 32 positions, a joint space of 64.
    pub fn tiny(device: &B::Device) -> Self {
        use super::bert::BertConfig;
        use super::vit3d::Vit3dConfig;
        let text = BertConfig { vocab_size: 50, max_position_embeddings: 32, ..BertConfig::tiny() };
        Self::from_towers(
            Vit3d::init(&Vit3dConfig::tiny(), device).expect("the tiny ViT is valid"),
            Bert::init(&text, device).expect("the tiny BERT is valid"),
            64,
            device,
        )
    }

    /// Image embeddings: [CLS] of the final norm (RadFM: the mean patch token) →
    /// `mm_vision_proj` → L2.
    ///
    /// # Shapes
    /// - x: `[batch, 1, D, H, W]` → `[batch, joint]`
    pub fn encode_image(&self, x: Tensor<B, 5>) -> Tensor<B, 2> {
        let pooled = to_dtype(self.vit.forward_pooled(x), self.vision_proj.weight.val().dtype());
        l2norm(self.vision_proj.forward(pooled))
    }

    /// Text embeddings: [CLS] of BERT's last hidden state → `mm_language_proj` → L2.
    ///
    /// # Shapes
    /// - ids, mask: `[batch, tokens]` → `[batch, joint]`
    pub fn encode_text(&self, ids: Tensor<B, 2, Int>, mask: Tensor<B, 2>) -> Tensor<B, 2> {
        let (last, _) = self.bert.forward(ids, mask.clone(), false);
        let pooled = pool(to_dtype(last, self.text_proj.weight.val().dtype()), mask, Pooling::Cls);
        l2norm(self.text_proj.forward(pooled))
    }

    /// `images · textsᵀ · logit_scale` (`+ logit_bias` where there is one).
    pub fn logits(&self, images: Tensor<B, 2>, texts: Tensor<B, 2>) -> Tensor<B, 2> {
        let logits = images.matmul(texts.transpose()) * self.logit_scale.val().reshape([1, 1]);
        match &self.logit_bias {
            Some(b) => logits + b.val().reshape([1, 1]),
            None => logits,
        }
    }
}
