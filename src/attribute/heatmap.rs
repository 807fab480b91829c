//! Where in the volume one sentence of the report looks: Grad-ECLIP (Zhao et al., ICML 2024)
//! on the last ViT block, and a plain input-gradient saliency map to compare it with.
//!
//! Grad-ECLIP, for the matching score `s` of the image and one text: in the last block, with
//! `o` the attention output (heads concatenated, before the output projection), `g = ∂s/∂o` at
//! the [CLS] position weighs the channels, the value vectors `v_i` of each patch token carry
//! them, and the "loosened" attention `λ_i` — the cosine of the [CLS] query with the patch key,
//! min–max normalised over the patches — replaces the softmax:
//! `H_i = ReLU(Σ_c g_c · v_{i,c}) · λ_i`. The released code takes the cosine after passing q and
//! k through the output projection of its one-head form; adfit takes it on q and k as the
//! attention uses them, all heads concatenated. The patch map is resized trilinearly to the
//! volume (patch centres on voxel centres).

use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::DType;

use crate::data::resample::resize;
use crate::data::volume::{identity, Volume};
use crate::error::Result;
use crate::model::adapt::{adapted_attn_out, adapted_mlp, adapted_qkv};
use crate::model::attention::{attention, merge_heads};
use crate::model::heads::l2norm;
use crate::model::method::AdClip;
use crate::model::precision::to_dtype;
use crate::model::prompts::{prompted_vision, VisionOutput};

fn f32s<B: Backend, const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
    to_dtype(t, DType::F32).into_data().convert::<f32>().to_vec().unwrap_or_default()
}

/// Grad-ECLIP maps over the patch grid, one per text.
///
/// # Shapes
/// - volume: `[1, 1, D, H, W]`, w: `[texts, embed]` (L2-normalised text embeddings)
/// - → per text, one value per patch token in the ViT's token order ((D, H, W) in MONAI's ViT, (H, W, D) in
///   RadFM's: `Vit3d::tokens_to_dhw` puts it on the volume's grid)
pub fn grad_eclip<B: AutodiffBackend>(model: &AdClip<B>, volume: Tensor<B, 5>, w: Tensor<B, 2>) -> Vec<Vec<f32>> {
    let vit = &model.backbone.vit;
    let layers = vit.blocks.len();
    let ad = model.adaptation.get(layers - 1);
    let (_, hidden) = prompted_vision(
        vit,
        volume,
        model.mmse_token.as_ref(),
        model.visual_prompts.as_ref(),
        &model.adaptation,
        None,
        None,
        VisionOutput::Hidden,
    );
    let [_, n, d] = hidden[layers - 1].dims();
    let s = w.dims()[0];
    let x_in = hidden[layers - 1].clone().detach().repeat_dim(0, s);
    let block = &vit.blocks[layers - 1];
    let (heads, hd) = (block.attn.heads, block.attn.head_dim());
    // The block as `BlockAdaptation::forward` runs it (LoRA updates, adapters) when adapted.
    let qkv = adapted_qkv(block, ad, block.norm1.forward(x_in.clone()))
        .reshape([s, n, 3, heads, hd])
        .permute([2, 0, 3, 1, 4]);
    let part = |i: usize| qkv.clone().narrow(0, i, 1).reshape([s, heads, n, hd]).detach();
    let (q, k, v) = (part(0), part(1), part(2));
    let o =
        merge_heads(attention(q.clone(), k.clone(), v.clone(), (hd as f64).powf(-0.5), None)).detach().require_grad();
    let y = x_in + adapted_attn_out(block, ad, o.clone());
    let y = y.clone() + adapted_mlp(block, ad, block.norm2.forward(y));
    let last = to_dtype(vit.final_norm(y), model.f_v.weight.val().dtype());
    let cls = last.narrow(1, 0, 1).reshape([s, d]);
    let image = l2norm(model.f_v.forward(cls));
    let grads = model.logits_paired(image, w.detach()).sum().backward();
    let g = o.grad(&grads).expect("the attention output is tracked");
    // Patch tokens sit after [CLS], [MMSE] and the prompts.
    let prefix = 1 + usize::from(model.mmse_token.is_some()) + model.visual_prompts.as_ref().map_or(0, |p| p.len());
    let patches = n - prefix;
    // q, k, v and the attention output live in the attention width (heads × head_dim), which
    // RadFM's ViT keeps narrower than the stream.
    let a = block.attn.attention_dim();
    let g_cls = f32s(g.narrow(1, 0, 1).reshape([s, a]));
    let v = f32s(merge_heads(v.inner()).narrow(1, prefix, patches));
    let q_cls = f32s(merge_heads(q.inner()).narrow(1, 0, 1));
    let k = f32s(merge_heads(k.inner()).narrow(1, prefix, patches));
    (0..s)
        .map(|t| {
            let q = &q_cls[t * a..(t + 1) * a];
            let qn = q.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
            let cos: Vec<f32> = (0..patches)
                .map(|i| {
                    let kk = &k[(t * patches + i) * a..(t * patches + i + 1) * a];
                    let kn = kk.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
                    q.iter().zip(kk).map(|(a, b)| a * b).sum::<f32>() / (qn * kn)
                })
                .collect();
            let (lo, hi) = cos.iter().fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), &c| (a.min(c), b.max(c)));
            let gt = &g_cls[t * a..(t + 1) * a];
            (0..patches)
                .map(|i| {
                    let vi = &v[(t * patches + i) * a..(t * patches + i + 1) * a];
                    let lambda = if hi > lo { (cos[i] - lo) / (hi - lo) } else { 1.0 };
                    gt.iter().zip(vi).map(|(a, b)| a * b).sum::<f32>().max(0.0) * lambda
                })
                .collect()
        })
        .collect()
}

/// `|∂s/∂x|` per voxel, one map per text: the plain gradient saliency baseline. One text per
/// backward pass, so memory is that of one scan's training step.
///
/// # Shapes
/// - volume: `[1, 1, D, H, W]`, w: `[texts, embed]` → per text, D·H·W values in C order
pub fn gradient_saliency<B: AutodiffBackend>(
    model: &AdClip<B>,
    volume: Tensor<B, 5>,
    w: Tensor<B, 2>,
) -> Vec<Vec<f32>> {
    let [s, _] = w.dims();
    let w = w.detach();
    (0..s)
        .map(|i| {
            let x = volume.clone().detach().require_grad();
            let image = model.encode_image(x.clone()).v;
            let grads = model.logits_paired(image, w.clone().narrow(0, i, 1)).sum().backward();
            f32s(x.grad(&grads).expect("the input is tracked").abs())
        })
        .collect()
}

/// A map over the token grid resized to the volume's grid (trilinear; patch centres fall on the
/// centres of the voxels they cover), with the volume's affine.
pub fn to_voxels(tokens: &[f32], grid: [usize; 3], like: &Volume) -> Result<Volume> {
    let coarse = Volume { shape: grid, data: tokens.to_vec(), affine: identity() };
    let mut fine = resize(&coarse, like.shape)?;
    fine.affine = like.affine;
    Ok(fine)
}
