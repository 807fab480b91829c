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

/// What [`prompted_vision`] returns besides the final-normed sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VisionOutput {
    /// The whole sequence.
    Sequence,
    /// The whole sequence and every hidden state (the input of each block, then the last
    /// block's output).
    Hidden,
    /// Only the prefix rows ([CLS], then [MMSE] when on): the last block computes those rows
    /// alone ([`super::attention::Block::forward_first`]) where nothing else reads its output
    /// (no LGA, no mixer, no adaptation on that block).
    Prefix,
}

/// The vision forward pass with optional [MMSE] token and deep prompts.
///
/// Returns the final-normed sequence `[batch, prefix + n_prompts + patches, hidden]` where
/// `prefix` is 1 (CLS) plus 1 when the MMSE token is used (with [`VisionOutput::Prefix`]: its
/// first `prefix` rows), and, if asked, every hidden state.
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
    output: VisionOutput,
) -> (Tensor<B, 3>, Vec<Tensor<B, 3>>) {
    let keep_hidden = output == VisionOutput::Hidden;
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
    let head = Tensor::cat(parts, 1);
    let mut hidden = Vec::new();
    // The frozen blocks, then the trainable mixer's (a CNN tower has only the latter).
    let mixed = mixer.map_or(&[][..], |m| &m.blocks[..]);
    let last = (vit.blocks.len() + mixed.len()).saturating_sub(1);
    let only_prefix = output == VisionOutput::Prefix && guide.is_none() && mixer.is_none();
    // The first frozen block sees the patch tokens as constants: only the rows before them
    // need gradients there.
    let (mut x, first) = match vit.blocks.first() {
        Some(block) if output != VisionOutput::Hidden && guide.is_none() && adaptation.is_empty() && last > 0 => {
            (block.forward_constant_tail(head, e), 1)
        }
        _ => (Tensor::cat(vec![head, e], 1), 0),
    };
    for (l, block) in vit.blocks.iter().chain(mixed).enumerate().skip(first) {
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
            None if only_prefix && l == last => block.forward_first(x, prefix),
            None => block.forward(x),
        };
    }
    if let Some((lga, t)) = guide {
        x = lga.after_blocks(x, t);
    }
    if keep_hidden {
        hidden.push(x.clone());
    }
    if output == VisionOutput::Prefix {
        x = x.narrow(1, 0, prefix);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::Cpu;
    use crate::model::clip::ClipBackbone;
    use crate::model::method::{AdClip, MethodConfig};
    use burn::backend::Autodiff;
    use burn::tensor::Distribution;

    type AD = Autodiff<Cpu>;

    fn max_rel<const D: usize>(a: Tensor<Cpu, D>, b: Tensor<Cpu, D>) -> f32 {
        let scale = a.clone().abs().max().into_scalar().max(1e-6);
        (a - b).abs().max().into_scalar() / scale
    }

    /// The shortcuts give what the plain pass gives, values and gradients of every trainable
    /// input of the tower (each layer's prompts, the [MMSE] token, the CLS token): the first
    /// block differentiating only the rows before the patch tokens (`Sequence` and `Prefix`),
    /// and the last computing only [CLS] and [MMSE] (`Prefix`). `Hidden` takes neither.
    #[test]
    fn the_shortcuts_match_the_plain_pass() {
        let device = Default::default();
        let cfg = MethodConfig { embed_dim: 64, mmse_hidden: 32, visual_prompts: 3, ..Default::default() };
        let m = AdClip::new(ClipBackbone::<AD>::tiny(&device), &cfg, &device);
        let x = Tensor::<AD, 5>::random([2, 1, 16, 32, 32], Distribution::Normal(0.0, 1.0), &device);
        // A fixed random read-out of [CLS] and [MMSE], as the heads make.
        let readout = Tensor::<AD, 3>::random([2, 2, 64], Distribution::Normal(0.0, 1.0), &device);
        let run = |output| {
            let (seq, _) = prompted_vision(
                &m.backbone.vit,
                x.clone(),
                m.mmse_token.as_ref(),
                m.visual_prompts.as_ref(),
                &m.adaptation,
                None,
                None,
                output,
            );
            let rows = seq.narrow(1, 0, 2);
            let g = (rows.clone() * readout.clone()).sum().backward();
            let prompts = m.visual_prompts.as_ref().unwrap().prompts.grad(&g).unwrap();
            let mmse = m.mmse_token.as_ref().unwrap().grad(&g).unwrap();
            let cls = m.backbone.vit.cls_token.grad(&g).unwrap();
            (rows.inner(), [prompts, mmse.reshape([1, 64]).unsqueeze(), cls.reshape([1, 64]).unsqueeze()])
        };
        let (want, want_grads) = run(VisionOutput::Hidden);
        for output in [VisionOutput::Sequence, VisionOutput::Prefix] {
            let (got, grads) = run(output);
            let values = max_rel(want.clone(), got);
            let grads: Vec<f32> = want_grads.iter().zip(grads).map(|(w, g)| max_rel(w.clone(), g)).collect();
            println!("{output:?}: values {values:e}, gradients (prompts, MMSE, CLS) {grads:?}");
            assert!(values < 1e-5, "{output:?}: {values}");
            assert!(grads.iter().all(|&g| g < 1e-4), "{output:?}: {grads:?}");
        }
    }
}
