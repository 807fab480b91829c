//! Prompt tuning on both towers.
//!
//! Vision (VPT-deep): the sequence entering block 1 is `[CLS, MMSE, P_1, E]`; before block
//! l ≥ 2 the outputs at the prompt positions are dropped and replaced by `P_l`. Text: learnable
//! vectors inserted right after the [CLS] embedding (after the embedding layer, so they carry no
//! position embedding), with the attention mask extended to cover them.

use crate::model::precision::to_dtype;
use burn::module::{Initializer, Param};
use burn::prelude::*;

use super::vit3d::Vit3d;

/// One set of `n` prompts per ViT layer. `[layers, n, hidden]`
#[derive(Module, Debug)]
pub struct VisualPrompts<B: Backend> {
    pub prompts: Param<Tensor<B, 3>>,
}

impl<B: Backend> VisualPrompts<B> {
    /// Uniform in ±sqrt(6 / (3·patch_dim + hidden)), VPT's Xavier-style init.
    pub fn init(layers: usize, n: usize, hidden: usize, patch_dim: usize, device: &B::Device) -> Self {
        let bound = (6.0 / (3 * patch_dim + hidden) as f64).sqrt();
        VisualPrompts { prompts: Initializer::Uniform { min: -bound, max: bound }.init([layers, n, hidden], device) }
    }

    pub fn len(&self) -> usize {
        self.prompts.dims()[1]
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// `P_l` broadcast over the batch. `[batch, n, hidden]`
    pub fn layer(&self, l: usize, batch: usize) -> Tensor<B, 3> {
        let [_, n, h] = self.prompts.dims();
        self.prompts.val().narrow(0, l, 1).expand([batch, n, h])
    }
}

/// The vision forward pass with optional [MMSE] token and deep prompts.
///
/// Returns the final-normed sequence `[batch, prefix + n_prompts + patches, hidden]` where
/// `prefix` is 1 (CLS) plus 1 when the MMSE token is used, and, if asked, every hidden state.
/// With `mixer` (a CNN tower), its trainable blocks run after the tower's own, with the prompts
/// of the layers after the tower's, and its norm replaces the tower's final norm.
/// With `guide` (LGA and its text stream), LGA's interactions run before their blocks and its
/// final injector after the last.
pub fn prompted_vision<B: Backend>(
    vit: &Vit3d<B>,
    x: Tensor<B, 5>,
    mmse_token: Option<&Param<Tensor<B, 3>>>,
    prompts: Option<&VisualPrompts<B>>,
    adaptation: &[super::adapt::BlockAdaptation<B>],
    mut guide: Option<(&super::lga::Lga<B>, Tensor<B, 3>)>,
    mixer: Option<&super::mixer::TokenMixer<B>>,
    keep_hidden: bool,
) -> (Tensor<B, 3>, Vec<Tensor<B, 3>>) {
    let e = vit.embed_patches(x);
    let [b, _, h] = e.dims();
    // Trainable tensors (f32) join the frozen tower's sequence in its precision.
    let dtype = e.dtype();
    let like = |t: Tensor<B, 3>| to_dtype(t, dtype);
    let mut parts = vec![like(vit.cls_token.val()).expand([b, 1, h])];
    if let Some(m) = mmse_token {
        parts.push(like(m.val()).expand([b, 1, h]));
    }
    let prefix = parts.len();
    let n_prompts = prompts.map_or(0, |p| p.len());
    if let Some(p) = prompts {
        parts.push(like(p.layer(0, b)));
    }
    parts.push(e);
    let mut x = Tensor::cat(parts, 1);
    let mut hidden = Vec::new();
    // The frozen blocks, then the trainable mixer's (a CNN tower has only the latter).
    let mixed = mixer.map_or(&[][..], |m| &m.blocks[..]);
    for (l, block) in vit.blocks.iter().chain(mixed).enumerate() {
        if let (Some(p), true) = (prompts, l > 0) {
            let [_, n, _] = x.dims();
            let head = x.clone().narrow(1, 0, prefix);
            let tail = x.narrow(1, prefix + n_prompts, n - prefix - n_prompts);
            x = Tensor::cat(vec![head, like(p.layer(l, b)), tail], 1);
        }
        if let Some((lga, t)) = guide.as_mut() {
            let (nx, nt) = lga.before_block(l, x, t.clone());
            (x, *t) = (nx, nt);
        }
        if keep_hidden {
            hidden.push(x.clone());
        }
        x = match adaptation.get(l) {
            Some(ad) => ad.forward(block, x),
            None => block.forward(x),
        };
    }
    if let Some((lga, t)) = guide {
        x = lga.after_blocks(x, t);
    }
    if keep_hidden {
        hidden.push(x.clone());
    }
    match mixer {
        Some(m) => (m.norm.forward(x), hidden),
        None => (vit.final_norm(x), hidden),
    }
}

/// Learnable text prompt vectors. `[n, hidden]`
#[derive(Module, Debug)]
pub struct TextPrompts<B: Backend> {
    pub prompts: Param<Tensor<B, 2>>,
}

impl<B: Backend> TextPrompts<B> {
    pub fn init(n: usize, hidden: usize, device: &B::Device) -> Self {
        TextPrompts { prompts: Initializer::Normal { mean: 0.0, std: 0.02 }.init([n, hidden], device) }
    }

    pub fn len(&self) -> usize {
        self.prompts.dims()[0]
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Insert the prompts after position 0 of an embedded sequence and extend its mask.
    ///
    /// # Shapes
    /// - embedded: `[batch, tokens, hidden]`, mask: `[batch, tokens]`
    /// - → `[batch, tokens + n, hidden]`, `[batch, tokens + n]`
    pub fn insert(&self, embedded: Tensor<B, 3>, mask: Tensor<B, 2>) -> (Tensor<B, 3>, Tensor<B, 2>) {
        let [b, t, h] = embedded.dims();
        let n = self.len();
        let p = to_dtype(self.prompts.val(), embedded.dtype()).reshape([1, n, h]).expand([b, n, h]);
        let x = Tensor::cat(vec![embedded.clone().narrow(1, 0, 1), p, embedded.narrow(1, 1, t - 1)], 1);
        let ones = Tensor::ones([b, n], &mask.device());
        let m = Tensor::cat(vec![mask.clone().narrow(1, 0, 1), ones, mask.narrow(1, 1, t - 1)], 1);
        (x, m)
    }
}
