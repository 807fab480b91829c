//! Other ways to adapt the frozen ViT, in place of (or beside) the visual prompts: LoRA on the
//! attention's `qkv` and `out_proj` (optionally the MLP), and bottleneck adapters after the
//! attention and the MLP of each block (Houlsby et al.). The paper compares both with its prompts
//! (table 2: LoRA 78.5%, adapter 75.0%).
//!
//! - **LoRA** adds `scale · x A B` to a frozen linear map `x W`, with `A` `[in, rank]` drawn
//!   from a normal of std `1/rank` and `B` `[rank, out]` zero, so an untrained adaptation leaves
//!   every output unchanged; `scale = alpha / rank`. For inference the update merges into `W`
//!   ([`merge_lora`]), with the same outputs.
//! - **Adapter**: `h + up(gelu(down(h)))` on the block's attention output and MLP output, before
//!   each residual addition; `down` is `[dim, dim / reduction]`, `up` starts at zero.
//! - **Full**: no new module; every ViT weight trains.
//! - **Perceiver + LoRA**: LoRA as above, and M3D-LaMed's spatial-pooling projector
//!   ([`super::perceiver`]) reads the patch tokens in place of the CLS token.
//! - **LGA**: the language-guided adapter ([`super::lga`]) beside the frozen blocks.

use burn::module::{Initializer, Param};
use burn::nn::{Linear, LinearConfig};
use burn::prelude::*;
use serde::{Deserialize, Serialize};

use super::attention::{packed_self_attention, Block};
use super::cpu_norm::{gelu, layer_norm};

/// Which adaptation the blocks get, and its sizes.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdaptConfig {
    pub kind: AdaptKind,
    /// LoRA rank.
    pub lora_rank: usize,
    /// LoRA's alpha: the update is scaled by alpha / rank.
    pub lora_alpha: f64,
    /// LoRA on the MLP's two linear maps too (else only `qkv` and `out_proj`).
    pub lora_mlp: bool,
    /// Adapter bottleneck: `dim / reduction` hidden units.
    pub adapter_reduction: usize,
    /// Spatial-pooling perceiver: output width of its MLP (M3D-LaMed: the language model's).
    pub perceiver_width: usize,
    /// Spatial-pooling perceiver: linear layers of its MLP (M3D-LaMed: 2).
    pub perceiver_depth: usize,
    /// Spatial-pooling perceiver: average-pool kernel and stride along each grid axis (M3D: 2).
    pub perceiver_pool: usize,
    /// LGA: an interaction before every `lga_every`-th block, from the first (released: 4).
    pub lga_every: usize,
    /// LGA: attention heads of its interactions (released: 1).
    pub lga_heads: usize,
    /// LGA: the interactions' attention works at width / this (released: 8).
    pub lga_reduction: usize,
    /// LGA: FFN width = width × this (released: 0.25).
    pub lga_ffn_ratio: f64,
    /// LGA: an injector after the last block too (released: yes).
    pub lga_final_injector: bool,
}

impl Default for AdaptConfig {
    fn default() -> Self {
        AdaptConfig {
            kind: AdaptKind::None,
            lora_rank: 8,
            lora_alpha: 16.0,
            lora_mlp: false,
            adapter_reduction: 8,
            perceiver_width: 768,
            perceiver_depth: 2,
            perceiver_pool: 2,
            lga_every: 4,
            lga_heads: 1,
            lga_reduction: 8,
            lga_ffn_ratio: 0.25,
            lga_final_injector: true,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum AdaptKind {
    /// The ViT's blocks run as they are.
    #[default]
    None,
    Lora,
    Adapter,
    /// Every weight of the ViT trains (the paper's full fine-tuning baseline): on M3D-CLIP's ViT
    /// that is 88M more parameters, with their gradients and two AdamW moments (about 1 GB in
    /// f32 beyond the activations). Needs `precision: fp32`.
    Full,
    /// The paper's "3D spatial-pooling perceiver + LoRA": LoRA on the blocks, and M3D-LaMed's
    /// spatial-pooling projector over the patch tokens as the image feature.
    PerceiverLora,
    /// The paper's "LGA": a language-guided adapter beside the frozen blocks, its text stream
    /// started from the class prompts. Needs `precision: fp32`.
    Lga,
}

impl AdaptKind {
    /// Whether the blocks get LoRA updates.
    pub fn has_lora(self) -> bool {
        matches!(self, AdaptKind::Lora | AdaptKind::PerceiverLora)
    }
}

/// Sets `require_grad` on every float parameter of a module.
pub struct RequireGrad;

impl<B: Backend> burn::module::ModuleMapper<B> for RequireGrad {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        param.set_require_grad(true)
    }
}

/// A low-rank update `scale · x A B` of a frozen linear map.
#[derive(Module, Debug)]
pub struct Lora<B: Backend> {
    /// `[in, rank]`
    pub a: Param<Tensor<B, 2>>,
    /// `[rank, out]`, zero at the start.
    pub b: Param<Tensor<B, 2>>,
    #[module(skip)]
    pub scale: f64,
}

impl<B: Backend> Lora<B> {
    pub fn init(d_in: usize, d_out: usize, rank: usize, alpha: f64, device: &B::Device) -> Self {
        Lora {
            a: Initializer::Normal { mean: 0.0, std: 1.0 / rank as f64 }.init([d_in, rank], device),
            b: Initializer::Zeros.init([rank, d_out], device),
            scale: alpha / rank as f64,
        }
    }

    /// The update for `x` `[batch, tokens, in]` → `[batch, tokens, out]`.
    pub fn delta(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let [b, n, d] = x.dims();
        let r = self.a.dims()[1];
        let out = self.b.dims()[1];
        let dtype = x.dtype();
        let a = super::precision::to_dtype(self.a.val(), dtype);
        let bm = super::precision::to_dtype(self.b.val(), dtype);
        x.reshape([b * n, d]).matmul(a).reshape([b * n, r]).matmul(bm).reshape([b, n, out]) * self.scale
    }

    /// `linear` with this update folded into its weight (`W + scale · A B`, frozen like `W`).
    pub fn merged(&self, linear: &Linear<B>) -> Linear<B> {
        let w = linear.weight.val();
        let dtype = w.dtype();
        let delta = self.a.val().matmul(self.b.val()) * self.scale;
        Linear {
            weight: Param::from_tensor((w + super::precision::to_dtype(delta, dtype)).detach()).set_require_grad(false),
            bias: linear.bias.clone(),
        }
    }
}

/// A bottleneck adapter `h + up(gelu(down(h)))`, with `up` zero at the start.
#[derive(Module, Debug)]
pub struct Bottleneck<B: Backend> {
    pub down: Linear<B>,
    pub up: Linear<B>,
}

impl<B: Backend> Bottleneck<B> {
    pub fn init(dim: usize, reduction: usize, device: &B::Device) -> Self {
        let hidden = (dim / reduction.max(1)).max(1);
        Bottleneck {
            down: LinearConfig::new(dim, hidden)
                .with_initializer(Initializer::Normal { mean: 0.0, std: 0.02 })
                .init(device),
            up: LinearConfig::new(hidden, dim).with_initializer(Initializer::Zeros).init(device),
        }
    }

    pub fn forward(&self, h: Tensor<B, 3>) -> Tensor<B, 3> {
        let dtype = h.dtype();
        let x = super::precision::to_dtype(h.clone(), self.down.weight.val().dtype());
        h + super::precision::to_dtype(self.up.forward(gelu(self.down.forward(x))), dtype)
    }
}

/// What one ViT block gets.
#[derive(Module, Debug)]
pub struct BlockAdaptation<B: Backend> {
    pub qkv: Option<Lora<B>>,
    pub out_proj: Option<Lora<B>>,
    pub mlp1: Option<Lora<B>>,
    pub mlp2: Option<Lora<B>>,
    pub after_attn: Option<Bottleneck<B>>,
    pub after_mlp: Option<Bottleneck<B>>,
}

impl<B: Backend> BlockAdaptation<B> {
    /// The adaptation of `cfg` for a block of width `dim`, attention width `attn` (`heads ×
    /// head_dim`: `dim` in MONAI's ViT) and MLP width `mlp`.
    pub fn init(cfg: &AdaptConfig, dim: usize, attn: usize, mlp: usize, device: &B::Device) -> Self {
        let lora = |i, o| Lora::init(i, o, cfg.lora_rank, cfg.lora_alpha, device);
        let is_lora = cfg.kind.has_lora();
        let is_adapter = cfg.kind == AdaptKind::Adapter;
        BlockAdaptation {
            qkv: is_lora.then(|| lora(dim, 3 * attn)),
            out_proj: is_lora.then(|| lora(attn, dim)),
            mlp1: (is_lora && cfg.lora_mlp).then(|| lora(dim, mlp)),
            mlp2: (is_lora && cfg.lora_mlp).then(|| lora(mlp, dim)),
            after_attn: is_adapter.then(|| Bottleneck::init(dim, cfg.adapter_reduction, device)),
            after_mlp: is_adapter.then(|| Bottleneck::init(dim, cfg.adapter_reduction, device)),
        }
    }

    /// `block` with this adaptation: pre-norm attention and MLP as [`Block::forward`], each
    /// linear map plus its LoRA update, each branch through its adapter before the residual.
    pub fn forward(&self, block: &Block<B>, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let ad = Some(self);
        let h = layer_norm(&block.norm1, x.clone());
        let o = packed_self_attention(adapted_qkv(block, ad, h), block.attn.heads, block.attn.scale(), None);
        let x = x + adapted_attn_out(block, ad, o);
        let h = layer_norm(&block.norm2, x.clone());
        x + adapted_mlp(block, ad, h)
    }

    /// Whether anything here cannot merge into the frozen weights (an adapter).
    pub fn has_adapters(&self) -> bool {
        self.after_attn.is_some() || self.after_mlp.is_some()
    }
}

/// `l(h)`, plus the LoRA update when there is one.
fn with_lora<B: Backend>(l: &Linear<B>, lora: Option<&Lora<B>>, h: Tensor<B, 3>) -> Tensor<B, 3> {
    match lora {
        Some(u) => l.forward(h.clone()) + u.delta(h),
        None => l.forward(h),
    }
}

/// The block's `qkv` map of the normed input `h`, adapted by `ad` (the pieces of
/// [`BlockAdaptation::forward`], also used by Grad-ECLIP, which needs the attention between them).
pub fn adapted_qkv<B: Backend>(block: &Block<B>, ad: Option<&BlockAdaptation<B>>, h: Tensor<B, 3>) -> Tensor<B, 3> {
    with_lora(&block.attn.qkv, ad.and_then(|a| a.qkv.as_ref()), h)
}

/// The attention branch after the heads are merged (`o`): `out_proj`, then the adapter.
pub fn adapted_attn_out<B: Backend>(
    block: &Block<B>,
    ad: Option<&BlockAdaptation<B>>,
    o: Tensor<B, 3>,
) -> Tensor<B, 3> {
    let a = with_lora(&block.attn.out_proj, ad.and_then(|a| a.out_proj.as_ref()), o);
    match ad.and_then(|a| a.after_attn.as_ref()) {
        Some(bn) => bn.forward(a),
        None => a,
    }
}

/// The MLP branch of the normed input `h`: both maps with their LoRA updates, then the adapter.
pub fn adapted_mlp<B: Backend>(block: &Block<B>, ad: Option<&BlockAdaptation<B>>, h: Tensor<B, 3>) -> Tensor<B, 3> {
    let h = with_lora(&block.mlp.linear1, ad.and_then(|a| a.mlp1.as_ref()), h);
    let m = with_lora(&block.mlp.linear2, ad.and_then(|a| a.mlp2.as_ref()), gelu(h));
    match ad.and_then(|a| a.after_mlp.as_ref()) {
        Some(bn) => bn.forward(m),
        None => m,
    }
}

/// Fold every LoRA update of `adaptation` into the blocks' weights and drop it; adapters stay.
pub fn merge_lora<B: Backend>(blocks: &mut [Block<B>], adaptation: &mut [BlockAdaptation<B>]) {
    for (block, ad) in blocks.iter_mut().zip(adaptation.iter_mut()) {
        if let Some(u) = ad.qkv.take() {
            block.attn.qkv = u.merged(&block.attn.qkv);
        }
        if let Some(u) = ad.out_proj.take() {
            block.attn.out_proj = u.merged(&block.attn.out_proj);
        }
        if let Some(u) = ad.mlp1.take() {
            block.mlp.linear1 = u.merged(&block.mlp.linear1);
        }
        if let Some(u) = ad.mlp2.take() {
            block.mlp.linear2 = u.merged(&block.mlp.linear2);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::Cpu;
    use crate::model::clip::ClipBackbone;
    use crate::model::method::{AdClip, MethodConfig};
    use crate::model::weights::RawTensor;
    use burn::backend::Autodiff;
    use burn::optim::{AdamWConfig, GradientsParams, Optimizer};

    type AD = Autodiff<Cpu>;

    fn method(kind: AdaptKind) -> MethodConfig {
        MethodConfig {
            embed_dim: 64,
            mmse_hidden: 32,
            visual_prompts: 0,
            adaptation: AdaptConfig { kind, lora_mlp: true, ..Default::default() },
            ..Default::default()
        }
    }

    fn volume<B: Backend>(device: &B::Device) -> Tensor<B, 5> {
        let n = 2 * 16 * 32 * 32;
        let data: Vec<f32> = (0..n).map(|i| ((i * 37 % 101) as f32 / 101.0).sin()).collect();
        Tensor::from_data(burn::tensor::TensorData::new(data, [2, 1, 16, 32, 32]), device)
    }

    fn max_diff<B: Backend>(a: Tensor<B, 2>, b: Tensor<B, 2>) -> f32 {
        (a - b).abs().max().into_scalar().elem::<f32>()
    }

    fn frozen(m: &AdClip<AD>) -> Vec<(String, RawTensor)> {
        crate::model::backbones::m3d::export(&m.backbone, crate::model::backbones::m3d::TextWeights::Embedded)
    }

    #[test]
    fn fresh_lora_and_adapters_leave_the_outputs_unchanged() {
        let device = Default::default();
        let backbone = ClipBackbone::<Cpu>::tiny(&device);
        // Draw the lazily initialised weights once, so that every clone shares them.
        struct Draw;
        impl<B: Backend> burn::module::ModuleVisitor<B> for Draw {
            fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
                let _ = param.val();
            }
        }
        backbone.visit(&mut Draw);
        let bare = AdClip::new(backbone.clone(), &method(AdaptKind::None), &device);
        let x = volume::<Cpu>(&device);
        let want = bare.encode_image(x.clone()).v;
        for kind in [AdaptKind::Lora, AdaptKind::Adapter] {
            let mut m = AdClip::new(backbone.clone(), &method(kind), &device);
            assert_eq!(m.adaptation.len(), backbone.vit.blocks.len());
            // The same heads as the bare model, so only the adaptation can differ.
            m.f_v = bare.f_v.clone();
            m.mmse_token = bare.mmse_token.clone();
            // Within rounding: the bare model's first and last blocks take the shortcuts of
            // `prompted_vision`, the adapted model's the plain pass.
            let d = max_diff(m.encode_image(x.clone()).v, want.clone());
            assert!(d < 1e-6, "{kind:?}: {d}");
        }
    }

    #[test]
    fn merged_lora_gives_the_outputs_of_the_unmerged_model() {
        let device = Default::default();
        let mut m = AdClip::new(ClipBackbone::<Cpu>::tiny(&device), &method(AdaptKind::Lora), &device);
        // A trained-looking update: B no longer zero.
        for ad in m.adaptation.iter_mut() {
            for u in [&mut ad.qkv, &mut ad.out_proj, &mut ad.mlp1, &mut ad.mlp2].into_iter().flatten() {
                let shape = u.b.dims();
                u.b = Param::from_tensor(Tensor::random(shape, burn::tensor::Distribution::Normal(0.0, 0.3), &device));
            }
        }
        let x = volume::<Cpu>(&device);
        let unmerged = m.encode_image(x.clone()).v;
        let merged = m.merge_lora();
        assert!(merged.adaptation.is_empty(), "nothing is left to run beside the blocks");
        let d = max_diff(merged.encode_image(x).v, unmerged);
        println!("merged vs unmerged LoRA: max |Δ| = {d:e}");
        assert!(d < 1e-5, "{d}");
    }

    #[test]
    fn training_changes_only_what_each_variant_claims() {
        let device = Default::default();
        for kind in [AdaptKind::Lora, AdaptKind::Adapter, AdaptKind::Full, AdaptKind::PerceiverLora, AdaptKind::Lga] {
            let cfg = method(kind);
            let guide = crate::model::tokenizer::Encoded {
                ids: vec![vec![2, 7, 3, 0], vec![2, 8, 9, 3]],
                mask: vec![vec![1, 1, 1, 0], vec![1; 4]],
            };
            let mut m = AdClip::new(ClipBackbone::<AD>::tiny(&device), &cfg, &device).with_guide(guide);
            let before_frozen = frozen(&m);
            let before = m.trainable_tensors("");
            let mut optim = AdamWConfig::new().init::<AD, AdClip<AD>>();
            for _ in 0..2 {
                let image = m.encode_image(volume::<AD>(&device));
                let ids = Tensor::<AD, 2, Int>::from_data([[2i64, 7, 9, 3], [2, 8, 5, 3]], &device);
                let w = m.encode_text(ids, Tensor::ones([2, 4], &device));
                let target = Tensor::from_data([0.5f32, -0.5], &device);
                let loss = m.loss(&image, w, target, Tensor::ones([2], &device), 0.5).total;
                let grads = GradientsParams::from_grads(loss.backward(), &m);
                m = optim.step(1e-2, m, grads);
            }
            let after_frozen = frozen(&m);
            for ((n, a), (_, b)) in before_frozen.iter().zip(&after_frozen) {
                // The backbone's CLS token trains with the method by default (train_cls); with
                // full fine-tuning the whole vision encoder does.
                let trains = n.ends_with("cls_token") || (kind == AdaptKind::Full && n.starts_with("vision_encoder."));
                if !trains {
                    assert!(a.data == b.data, "{kind:?}: frozen {n} changed");
                } else if kind == AdaptKind::Full && n.ends_with("attn.qkv.weight") {
                    assert!(a.data != b.data, "{kind:?}: {n} did not train");
                }
            }
            let after = m.trainable_tensors("");
            let moved = |prefix: &str| {
                before.iter().zip(&after).any(|((n, a), (_, b))| n.starts_with(prefix) && a.data != b.data)
            };
            if kind == AdaptKind::Full {
                assert!(moved("vit.blocks.1."), "the ViT's weights are saved with the run");
                assert!(m.adaptation.is_empty());
            } else if kind == AdaptKind::Lga {
                assert!(m.adaptation.is_empty());
                for part in
                    ["lga.text_in.", "lga.0.extractor.attn.q.", "lga.0.injector.gamma", "lga.final_injector.ffn."]
                {
                    assert!(moved(part), "LGA: {part} did not train");
                }
            } else {
                assert!(moved("adapt.0."), "{kind:?}: the adaptation did not train");
                if kind == AdaptKind::PerceiverLora {
                    assert!(moved("perceiver.0.") && moved("perceiver.1."), "the perceiver did not train");
                    assert!(m.perceiver.is_some());
                }
                assert!(after.iter().any(|(n, _)| n.starts_with("adapt.1.")), "every block is adapted");
            }
        }
    }
}
