//! The 3D ViT of M3D-CLIP's vision encoder, with MONAI 1.3 semantics (backbones.md §1):
//! a linear "perceptron" patch embedding on patches rearranged as
//! `b c (h p1) (w p2) (d p3) -> b (h w d) (p1 p2 p3 c)`, a learned position embedding added to the
//! patch tokens before CLS is prepended (so CLS has none), pre-norm blocks, a final LayerNorm.
//!
//! The same type holds RadFM's ViT (backbones.md §1, [`VitLayout::Radfm`]): depth-last patches
//! of a 3-channel volume through LayerNorm → Linear → LayerNorm, a factorised position embedding
//! (expanded to one row per token when loaded), attention narrower than the stream (8 × 64 in a
//! 768-wide ViT), no CLS token and no final norm. The CLS token such a ViT carries here is
//! adfit's addition, used only by the method (VPT's learnable one).

use burn::module::{Initializer, Param};
use burn::nn::{LayerNorm, LayerNormConfig, Linear, LinearConfig};
use burn::prelude::*;

use super::attention::{Block, Mlp, SelfAttention};
use super::pos_embed::load_pos_embed;
pub use super::pos_embed::PosEmbedPolicy;
pub use super::vit3d_config::{Vit3dConfig, VitLayout};
use super::weights::WeightStore;
use crate::error::Result;

#[derive(Module, Debug)]
pub struct Vit3d<B: Backend> {
    /// `Linear(patch_dim → hidden)` (none in front of a CNN).
    pub patch_embed: Option<Linear<B>>,
    /// The CNN whose last feature map is the token sequence ([`VitLayout::Dcformer`]).
    pub cnn: Option<super::dcformer::Dcformer<B>>,
    /// RadFM's LayerNorms around the patch embedding (none in MONAI's ViT).
    pub patch_norms: Option<PatchNorms<B>>,
    /// `[1, num_patches, hidden]`
    pub pos_embed: Param<Tensor<B, 3>>,
    /// `[1, 1, hidden]`
    pub cls_token: Param<Tensor<B, 3>>,
    pub blocks: Vec<Block<B>>,
    /// The final LayerNorm (none in RadFM's ViT).
    pub norm: Option<LayerNorm<B>>,
    #[module(skip)]
    pub patch_size: [usize; 3],
    #[module(skip)]
    pub layout: VitLayout,
}

/// `LayerNorm(patch_dim)` before and `LayerNorm(hidden)` after the patch embedding (RadFM's
/// `to_patch_embedding.{1,3}`).
#[derive(Module, Debug)]
pub struct PatchNorms<B: Backend> {
    pub before: LayerNorm<B>,
    pub after: LayerNorm<B>,
}

/// Every layer's hidden states: entry 0 is the sequence entering block 1, entry l the output of
/// block l (before the final norm), as MONAI and HF report them.
pub type HiddenStates<B> = Vec<Tensor<B, 3>>;

impl<B: Backend> Vit3d<B> {
    /// Random weights (normal, std 0.02, for matrices and tokens, as ViTs are initialised).
    pub fn init(cfg: &Vit3dConfig, device: &B::Device) -> Result<Self> {
        Self::init_with_std(cfg, 0.02, device)
    }

    /// Random weights with normal matrices and tokens of standard deviation `std`.
    pub fn init_with_std(cfg: &Vit3dConfig, std: f64, device: &B::Device) -> Result<Self> {
        cfg.validate()?;
        let n = cfg.num_patches()?;
        let h = cfg.hidden_size;
        let tn = Initializer::Normal { mean: 0.0, std };
        let linear = |i, o, bias| LinearConfig::new(i, o).with_bias(bias).with_initializer(tn.clone()).init(device);
        let ln_of = |d| LayerNormConfig::new(d).with_epsilon(cfg.layer_norm_eps).init(device);
        let ln = || ln_of(h);
        let a = cfg.attention_dim();
        let radfm = cfg.layout == VitLayout::Radfm;
        let blocks = (0..cfg.num_layers)
            .map(|_| Block {
                norm1: ln(),
                attn: SelfAttention {
                    qkv: linear(h, 3 * a, false),
                    out_proj: linear(a, h, true),
                    heads: cfg.num_heads,
                },
                norm2: ln(),
                mlp: Mlp { linear1: linear(h, cfg.mlp_dim, true), linear2: linear(cfg.mlp_dim, h, true) },
            })
            .collect();
        Ok(Vit3d {
            patch_embed: Some(linear(cfg.patch_dim(), h, true)),
            cnn: None,
            patch_norms: radfm.then(|| PatchNorms { before: ln_of(cfg.patch_dim()), after: ln() }),
            pos_embed: tn.init([1, n, h], device),
            cls_token: tn.init([1, 1, h], device),
            blocks,
            norm: (!radfm).then(ln),
            patch_size: cfg.patch_size,
            layout: cfg.layout,
        })
    }

    /// Load from a store whose keys are MONAI's ViT names under `prefix` (e.g. `vit.`).
    /// `native` is the grid the checkpoint's position embedding was trained on.
    pub fn load(
        cfg: &Vit3dConfig,
        store: &WeightStore<B>,
        prefix: &str,
        native: [usize; 3],
        policy: PosEmbedPolicy,
    ) -> Result<Self> {
        cfg.validate()?;
        if cfg.layout == VitLayout::Radfm {
            return super::backbones::radfm::load_vit(cfg, store, prefix, native);
        }
        let (h, m) = (cfg.hidden_size, cfg.mlp_dim);
        let eps = cfg.layer_norm_eps;
        let p = |s: &str| format!("{prefix}{s}");
        let blocks = (0..cfg.num_layers)
            .map(|i| {
                let b = |s: &str| format!("{prefix}blocks.{i}.{s}");
                Block {
                    norm1: store.layer_norm(&b("norm1"), h, eps),
                    attn: SelfAttention {
                        qkv: store.linear(&b("attn.qkv"), h, 3 * h, false),
                        out_proj: store.linear(&b("attn.out_proj"), h, h, true),
                        heads: cfg.num_heads,
                    },
                    norm2: store.layer_norm(&b("norm2"), h, eps),
                    mlp: Mlp {
                        linear1: store.linear(&b("mlp.linear1"), h, m, true),
                        linear2: store.linear(&b("mlp.linear2"), m, h, true),
                    },
                }
            })
            .collect();
        let pos_embed = load_pos_embed(cfg, store, &p("patch_embedding.position_embeddings"), native, policy)?;
        Ok(Vit3d {
            patch_embed: Some(store.linear(&p("patch_embedding.patch_embeddings.1"), cfg.patch_dim(), h, true)),
            cnn: None,
            patch_norms: None,
            pos_embed: Param::from_tensor(pos_embed),
            cls_token: store.param(&p("cls_token"), [1, 1, h]),
            blocks,
            norm: Some(store.layer_norm(&p("norm"), h, eps)),
            patch_size: cfg.patch_size,
            layout: VitLayout::Monai,
        })
    }

    pub fn hidden_size(&self) -> usize {
        self.cls_token.dims()[2]
    }

    /// Every weight replaced by the tensor `store` holds under the name
    /// [`export_vit`](super::backbones::m3d::export_vit) writes after `prefix`, at the shapes it
    /// has now (a fully fine-tuned ViT read back from a run).
    pub fn reload(mut self, store: &WeightStore<B>, prefix: &str) -> Self {
        let p = |s: &str| format!("{prefix}{s}");
        let linear = |l: &Linear<B>, name: String| {
            let [i, o] = l.weight.dims();
            store.linear(&name, i, o, l.bias.is_some())
        };
        let ln = |l: &LayerNorm<B>, name: String| store.fill_layer_norm(l.clone(), &name);
        self.patch_embed = self.patch_embed.map(|l| linear(&l, p("patch_embedding.patch_embeddings.1")));
        if let Some(pn) = self.patch_norms.as_mut() {
            pn.before = ln(&pn.before, p("patch_embedding.patch_embeddings.0"));
            pn.after = ln(&pn.after, p("patch_embedding.patch_embeddings.2"));
        }
        self.pos_embed = store.param(&p("patch_embedding.position_embeddings"), self.pos_embed.dims());
        self.cls_token = store.param(&p("cls_token"), self.cls_token.dims());
        for (i, b) in self.blocks.iter_mut().enumerate() {
            let n = |s: &str| p(&format!("blocks.{i}.{s}"));
            b.norm1 = ln(&b.norm1, n("norm1"));
            b.attn.qkv = linear(&b.attn.qkv, n("attn.qkv"));
            b.attn.out_proj = linear(&b.attn.out_proj, n("attn.out_proj"));
            b.norm2 = ln(&b.norm2, n("norm2"));
            b.mlp.linear1 = linear(&b.mlp.linear1, n("mlp.linear1"));
            b.mlp.linear2 = linear(&b.mlp.linear2, n("mlp.linear2"));
        }
        self.norm = self.norm.map(|n| ln(&n, p("norm")));
        self.cnn = self.cnn.map(|c| super::dcformer::Dcformer::load(&c.config(), store, &p("cnn.")));
        self
    }

    /// MONAI's perceptron rearrangement `b c (h p1) (w p2) (d p3) -> b (h w d) (p1 p2 p3 c)`
    /// (its `h w d` are our D, H, W). RadFM reads the volume depth last with 3 channels:
    /// `b c (h p1) (w p2) (f pf) -> b (h w f) (p1 p2 pf c)` on `[batch, c, H, W, D]`, so the
    /// volume is permuted and its one channel repeated first.
    ///
    /// # Shapes
    /// - x: `[batch, channels, D, H, W]` → `[batch, num_patches, patch_dim]`
    pub fn patchify(&self, x: Tensor<B, 5>) -> Tensor<B, 3> {
        let [pd, ph, pw] = self.patch_size;
        let (x, [p1, p2, p3]) = match self.layout {
            VitLayout::Monai | VitLayout::Dcformer => (x, self.patch_size),
            VitLayout::Radfm => {
                let channels = self.patch_dim() / (pd * ph * pw);
                let c = x.dims()[1];
                let x = x.permute([0, 1, 3, 4, 2]);
                let x = if c == 1 && channels > 1 { x.repeat_dim(1, channels) } else { x };
                (x, [ph, pw, pd])
            }
        };
        let [b, c, d, h, w] = x.dims();
        let (g1, g2, g3) = (d / p1, h / p2, w / p3);
        let patches = x.reshape([b, c, g1, p1, g2, p2, g3, p3]).permute([0, 2, 4, 6, 3, 5, 7, 1]);
        crate::model::cpu_layout::contiguous(patches).reshape([b, g1 * g2 * g3, p1 * p2 * p3 * c])
    }

    /// Patch tokens with their position embedding.
    ///
    /// # Shapes
    /// - x: `[batch, channels, D, H, W]` → `[batch, num_patches, hidden]`
    pub fn embed_patches(&self, x: Tensor<B, 5>) -> Tensor<B, 3> {
        // The input meets the patch embedding in the tower's precision (model::precision).
        let x = crate::model::precision::to_dtype(x, self.pos_embed.val().dtype());
        let e = match (&self.cnn, &self.patch_embed, &self.patch_norms) {
            (Some(cnn), _, _) => cnn.last_tokens(x),
            (None, Some(pe), None) => pe.forward(self.patchify(x)),
            (None, Some(pe), Some(pn)) => pn.after.forward(pe.forward(pn.before.forward(self.patchify(x)))),
            (None, None, _) => unreachable!("a ViT has a patch embedding or a CNN in front"),
        };
        e + self.pos_embed.val()
    }

    /// The width of a patch (`patch_embed`'s input; the token width in front of a CNN).
    pub fn patch_dim(&self) -> usize {
        self.patch_embed.as_ref().map_or(self.hidden_size(), |l| l.weight.dims()[0])
    }

    /// The patch-token grid of a volume of `volume` (D, H, W), in the order the tokens run:
    /// (D, H, W) in MONAI's ViT, (H, W, D) in RadFM's.
    pub fn token_grid(&self, volume: [usize; 3]) -> [usize; 3] {
        let g = self.dhw_grid(volume);
        match self.layout {
            VitLayout::Monai | VitLayout::Dcformer => g,
            VitLayout::Radfm => [g[1], g[2], g[0]],
        }
    }

    /// The token grid of a volume of `volume` in (D, H, W) order: the patch grid, or a CNN's last
    /// feature map.
    fn dhw_grid(&self, volume: [usize; 3]) -> [usize; 3] {
        match &self.cnn {
            Some(_) => super::dcformer::DcformerConfig::token_grid(volume),
            None => [0, 1, 2].map(|a| volume[a] / self.patch_size[a].max(1)),
        }
    }

    /// One value per patch token, in token order, rearranged onto the (D, H, W) patch grid of a
    /// volume of `volume` (a map that lies on the volume, as Grad-ECLIP's).
    pub fn tokens_to_dhw(&self, values: &[f32], volume: [usize; 3]) -> (Vec<f32>, [usize; 3]) {
        let g = self.dhw_grid(volume);
        match self.layout {
            VitLayout::Monai | VitLayout::Dcformer => (values.to_vec(), g),
            VitLayout::Radfm => {
                let [gd, gh, gw] = g;
                let mut out = vec![0f32; values.len()];
                for (t, v) in values.iter().enumerate() {
                    let (hw, d) = (t / gd, t % gd);
                    let (h, w) = (hw / gw, hw % gw);
                    out[(d * gh + h) * gw + w] = *v;
                }
                (out, g)
            }
        }
    }

    /// Every weight trainable (full fine-tuning); a CNN in front keeps its BatchNorm statistics.
    pub fn trainable(self) -> Self {
        let mut v = self.map(&mut super::adapt::RequireGrad);
        if let Some(cnn) = v.cnn.take() {
            // A CNN's tokens have no position embedding: the zero rows stay zero.
            v.cnn = Some(cnn.trainable());
            v.pos_embed = v.pos_embed.clone().set_require_grad(false);
        }
        v
    }

    /// Parameters full fine-tuning trains: all but a CNN's BatchNorm statistics and zero
    /// position rows.
    pub fn trainable_params(&self) -> usize {
        let frozen = self.cnn.as_ref().map_or(0, |c| c.statistics() + self.pos_embed.num_params());
        self.num_params() - frozen
    }

    /// The final LayerNorm, where the ViT has one.
    pub fn final_norm(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        match &self.norm {
            Some(n) => n.forward(x),
            None => x,
        }
    }

    /// The image's pooled token of [`forward`](Self::forward)'s output `[batch, hidden]`: CLS
    /// where the ViT has one, else the mean of the patch tokens (RadFM's output is patch tokens
    /// only; its generative model reads them all).
    pub fn pooled(&self, last: Tensor<B, 3>) -> Tensor<B, 2> {
        let [b, _, h] = last.dims();
        if self.layout.has_cls() {
            last.narrow(1, 0, 1).reshape([b, h])
        } else {
            last.mean_dim(1).reshape([b, h])
        }
    }

    /// Run the blocks on a prepared sequence; returns the normed output and, if asked, every
    /// layer's hidden states.
    pub fn encode(&self, x: Tensor<B, 3>, keep_hidden: bool) -> (Tensor<B, 3>, HiddenStates<B>) {
        let mut hidden = Vec::new();
        let mut x = x;
        for block in &self.blocks {
            if keep_hidden {
                hidden.push(x.clone());
            }
            x = block.forward(x);
        }
        if keep_hidden {
            hidden.push(x.clone());
        }
        (self.final_norm(x), hidden)
    }

    /// The bare backbone: `[CLS, patches + pos]` through the blocks and the final norm (RadFM:
    /// the patch tokens alone through the blocks).
    ///
    /// # Shapes
    /// - x: `[batch, channels, D, H, W]` → `[batch, 1 + num_patches, hidden]` (RadFM: `num_patches`)
    pub fn forward(&self, x: Tensor<B, 5>, keep_hidden: bool) -> (Tensor<B, 3>, HiddenStates<B>) {
        let e = self.embed_patches(x);
        if !self.layout.has_cls() {
            return self.encode(e, keep_hidden);
        }
        self.encode(self.with_cls(e), keep_hidden)
    }

    /// `[CLS, e]`, the CLS token in `e`'s precision.
    fn with_cls(&self, e: Tensor<B, 3>) -> Tensor<B, 3> {
        let [b, _, h] = e.dims();
        let cls = crate::model::precision::to_dtype(self.cls_token.val(), e.dtype()).expand([b, 1, h]);
        Tensor::cat(vec![cls, e], 1)
    }

    /// [`pooled`](Self::pooled)`(forward(x).0)` with less work: where the pooled token is [CLS],
    /// the last block computes that row alone ([`Block::forward_first`]).
    ///
    /// # Shapes
    /// - x: `[batch, channels, D, H, W]` → `[batch, hidden]`
    pub fn forward_pooled(&self, x: Tensor<B, 5>) -> Tensor<B, 2> {
        let Some((last, rest)) = self.blocks.split_last().filter(|_| self.layout.has_cls()) else {
            return self.pooled(self.forward(x, false).0);
        };
        let mut x = self.with_cls(self.embed_patches(x));
        for block in rest {
            x = block.forward(x);
        }
        let [b, _, h] = x.dims();
        self.final_norm(last.forward_first(x, 1)).reshape([b, h])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type B = crate::backend::Cpu;

    /// `forward_pooled` (the last block at [CLS] alone) gives `pooled(forward(..))` on a CLS
    /// layout, and falls back to it on RadFM's, which pools every patch token.
    #[test]
    fn forward_pooled_is_the_pooled_forward() {
        let device = Default::default();
        for layout in [VitLayout::Monai, VitLayout::Radfm] {
            let cfg = Vit3dConfig {
                layout,
                in_channels: if layout == VitLayout::Radfm { 3 } else { 1 },
                hidden_size: 48,
                ..Vit3dConfig::tiny()
            };
            let vit = Vit3d::<B>::init(&cfg, &device).unwrap();
            let x =
                Tensor::<B, 5>::random([2, cfg.in_channels, 16, 32, 32], burn::tensor::Distribution::Default, &device);
            let want = vit.pooled(vit.forward(x.clone(), false).0);
            let d: f32 = (vit.forward_pooled(x) - want).abs().max().into_scalar();
            assert!(d < 1e-5, "{layout:?}: {d}");
        }
    }

    /// Each layout's patches run in its own order, and `token_grid` / `tokens_to_dhw` undo it:
    /// a volume whose voxels carry their patch's (D, H, W) index comes back in raster order.
    #[test]
    fn token_order_maps_back_onto_the_volume_grid() {
        let volume = [8, 12, 16];
        for layout in [VitLayout::Monai, VitLayout::Radfm] {
            let cfg = Vit3dConfig {
                img_size: volume,
                patch_size: [2, 4, 4],
                in_channels: if layout == VitLayout::Radfm { 3 } else { 1 },
                hidden_size: 12,
                layout,
                ..Vit3dConfig::tiny()
            };
            let vit = Vit3d::<B>::init(&cfg, &Default::default()).unwrap();
            let g = [4, 3, 4];
            let data: Vec<f32> = (0..volume.iter().product::<usize>())
                .map(|i| {
                    let (d, h, w) = (i / (12 * 16), i / 16 % 12, i % 16);
                    ((d / 2 * g[1] + h / 4) * g[2] + w / 4) as f32
                })
                .collect();
            let x = Tensor::<B, 5>::from_data(TensorData::new(data, [1, 1, 8, 12, 16]), &Default::default());
            let patches = vit.patchify(x);
            let [_, n, f] = patches.dims();
            assert_eq!(f, cfg.patch_dim(), "{layout:?}");
            let first: Vec<f32> = patches.narrow(2, 0, 1).reshape([n]).into_data().to_vec().unwrap();
            let want_grid = if layout == VitLayout::Radfm { [3, 4, 4] } else { g };
            assert_eq!(vit.token_grid(volume), want_grid, "{layout:?}");
            let (back, grid) = vit.tokens_to_dhw(&first, volume);
            assert_eq!(grid, g);
            assert_eq!(back, (0..n).map(|i| i as f32).collect::<Vec<_>>(), "{layout:?}");
            if layout == VitLayout::Radfm {
                assert_ne!(first, back, "RadFM's tokens run depth fastest");
            }
        }
    }
}
