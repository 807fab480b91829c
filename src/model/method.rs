//! The method: a frozen CLIP backbone with deep visual prompts, an [MMSE] token and head, text
//! prompts, new projections, cross-attention and a learnable logit scale (method.md).

use crate::model::precision::to_dtype;
use burn::module::{Module, Param};
use burn::nn::{Linear, LinearConfig};
use burn::prelude::*;
use burn::tensor::TensorData;
use serde::{Deserialize, Serialize};

use super::adapt::{AdaptConfig, AdaptKind, BlockAdaptation};
use super::bert::{pool, Pooling};
use super::clip::ClipBackbone;
use super::cross_attention::{CrossAttention, CrossAttentionKind};
use super::heads::{l2norm, MmseHead};
use super::lga::{Lga, LgaShape};
use super::loss::{clip_loss, masked_mse};
use super::perceiver::SpatialPooling;
use super::prompts::{prompted_vision, TextPrompts, VisionOutput, VisualPrompts};
use super::tokenizer::Encoded;

/// The logit scale's convention.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum ScaleInit {
    /// The paper: "temperature initialised to 10", used as a multiplier.
    #[default]
    #[serde(alias = "Paper")]
    Paper,
    /// DEFT: a raw ln(1/0.07) ≈ 2.659 multiplier.
    #[serde(alias = "Deft")]
    Deft,
}

impl ScaleInit {
    pub fn value(self) -> f32 {
        match self {
            ScaleInit::Paper => 10.0,
            ScaleInit::Deft => (1.0f32 / 0.07).ln(),
        }
    }
}

/// Which parts of the method are on, and their sizes. Defaults are the paper's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MethodConfig {
    /// Prompts per ViT layer (VPT-deep); 0 turns visual prompts off.
    pub visual_prompts: usize,
    /// The [MMSE] token and its regression head.
    pub mmse_token: bool,
    /// Text prompts after [CLS]; 0 turns them off.
    pub text_prompts: usize,
    pub cross_attention: CrossAttentionKind,
    /// Heads of the multi-head cross-attention.
    pub cross_attention_heads: usize,
    /// Text pooling before `f_t` (M3D-CLIP pools [CLS]; DEFT averaged all positions).
    pub pooling: Pooling,
    /// Joint embedding size of `f_v` and `f_t`.
    pub embed_dim: usize,
    /// Hidden width of the MMSE head (the paper: 768 → 384 → 1).
    pub mmse_hidden: usize,
    pub scale_init: ScaleInit,
    /// Train the backbone's CLS token along with the prompts (DEFT does).
    pub train_cls: bool,
    /// LoRA or bottleneck adapters in the ViT's blocks (off by default: the paper's method).
    #[serde(default)]
    pub adaptation: AdaptConfig,
    /// Weight of the MMSE loss.
    pub lambda: f64,
    /// Trainable blocks the method adds after a vision tower with no blocks of its own
    /// (Med3DVLM's DCFormer; [`super::mixer`]). Unused on a ViT.
    #[serde(default = "one")]
    pub mixer_layers: usize,
}

fn one() -> usize {
    1
}

impl Default for MethodConfig {
    fn default() -> Self {
        MethodConfig {
            visual_prompts: 20,
            mmse_token: true,
            text_prompts: 30,
            cross_attention: CrossAttentionKind::MultiHead,
            cross_attention_heads: 8,
            pooling: Pooling::Cls,
            embed_dim: 768,
            mmse_hidden: 384,
            scale_init: ScaleInit::Paper,
            train_cls: true,
            adaptation: AdaptConfig::default(),
            lambda: 0.5,
            mixer_layers: 1,
        }
    }
}

/// Draws every lazily initialised parameter, in module order.
pub struct Materialise;

impl<B: Backend> burn::module::ModuleVisitor<B> for Materialise {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        let _ = param.val();
    }
}

#[derive(Module, Debug)]
pub struct AdClip<B: Backend> {
    /// Frozen, except its CLS token (`train_cls`) or its whole ViT (`full_vit`).
    pub backbone: ClipBackbone<B>,
    pub visual_prompts: Option<VisualPrompts<B>>,
    /// One per ViT block with LoRA or adapters on; empty otherwise.
    pub adaptation: Vec<BlockAdaptation<B>>,
    /// `[1, 1, hidden]`
    pub mmse_token: Option<Param<Tensor<B, 3>>>,
    pub mmse_head: Option<MmseHead<B>>,
    /// M3D-LaMed's spatial-pooling projector (`AdaptKind::PerceiverLora`): the image feature is
    /// its pooled, projected patch tokens instead of the CLS token.
    pub perceiver: Option<SpatialPooling<B>>,
    /// The language-guided adapter (`AdaptKind::Lga`).
    pub lga: Option<Lga<B>>,
    /// Trainable blocks after a vision tower with none of its own (Med3DVLM's DCFormer).
    pub mixer: Option<super::mixer::TokenMixer<B>>,
    /// The texts LGA's text stream starts from: the class prompts, tokenised ([`AdClip::with_guide`]).
    #[module(skip)]
    pub guide: Option<Encoded>,
    pub text_prompts: Option<TextPrompts<B>>,
    pub f_v: Linear<B>,
    pub f_t: Linear<B>,
    pub cross_attention: CrossAttention<B>,
    /// `[1]`
    pub scale: Param<Tensor<B, 1>>,
    #[module(skip)]
    pub pooling: Pooling,
    /// Whether the backbone's CLS token trains (tracked here: a non-autodiff backend does not
    /// record `require_grad`).
    #[module(skip)]
    pub train_cls: bool,
    /// Every ViT weight trains (`AdaptKind::Full`).
    #[module(skip)]
    pub full_vit: bool,
}

/// What the image side produces.
#[derive(Debug, Clone)]
pub struct ImageOutput<B: Backend> {
    /// `[batch, embed]`, L2-normalised.
    pub v: Tensor<B, 2>,
    /// `[batch]` standardised MMSE, when the MMSE token is on.
    pub mmse: Option<Tensor<B, 1>>,
}

impl<B: Backend> AdClip<B> {
    /// Wrap a backbone with fresh trainable parts; the backbone is frozen.
    pub fn new(backbone: ClipBackbone<B>, cfg: &MethodConfig, device: &B::Device) -> Self {
        let hv = backbone.vit.hidden_size();
        let ht = backbone.bert.hidden_size();
        let mixer =
            backbone.vit.blocks.is_empty().then(|| super::mixer::TokenMixer::init(cfg.mixer_layers, hv, device));
        // Prompts for every block the sequence passes: the tower's, then the mixer's.
        let layers = backbone.vit.blocks.len() + mixer.as_ref().map_or(0, |m| m.blocks.len());
        let patch_dim = backbone.vit.patch_dim();
        let mlp = backbone.vit.blocks.first().map_or(1, |b| b.mlp.linear1.weight.dims()[1]);
        let attn = backbone.vit.blocks.first().map_or(hv, |b| b.attn.attention_dim());
        let mut backbone = backbone.no_grad();
        let full_vit = cfg.adaptation.kind == AdaptKind::Full;
        if full_vit {
            backbone.vit = backbone.vit.trainable();
        } else if cfg.train_cls {
            backbone.vit.cls_token = backbone.vit.cls_token.set_require_grad(true);
        }
        let scale = Tensor::from_data(TensorData::new(vec![cfg.scale_init.value()], [1]), device);
        let perceiver = (cfg.adaptation.kind == AdaptKind::PerceiverLora).then(|| {
            let a = &cfg.adaptation;
            SpatialPooling::init(hv, a.perceiver_width, a.perceiver_depth, a.perceiver_pool, device)
        });
        let image_feature = perceiver.as_ref().map_or(hv, |p| p.width());
        let lga = (cfg.adaptation.kind == AdaptKind::Lga)
            .then(|| Lga::init(&LgaShape::of(&cfg.adaptation, hv, ht, layers), device));
        AdClip {
            visual_prompts: (cfg.visual_prompts > 0)
                .then(|| VisualPrompts::init(layers, cfg.visual_prompts, hv, patch_dim, device)),
            adaptation: match cfg.adaptation.kind {
                AdaptKind::None | AdaptKind::Full | AdaptKind::Lga => Vec::new(),
                _ => (0..layers).map(|_| BlockAdaptation::init(&cfg.adaptation, hv, attn, mlp, device)).collect(),
            },
            mmse_token: cfg
                .mmse_token
                .then(|| burn::module::Initializer::Normal { mean: 0.0, std: 0.02 }.init([1, 1, hv], device)),
            mmse_head: cfg.mmse_token.then(|| MmseHead::init(hv, cfg.mmse_hidden, device)),
            perceiver,
            lga,
            mixer,
            guide: None,
            text_prompts: (cfg.text_prompts > 0).then(|| TextPrompts::init(cfg.text_prompts, ht, device)),
            f_v: LinearConfig::new(image_feature, cfg.embed_dim).init(device),
            f_t: LinearConfig::new(ht, cfg.embed_dim).init(device),
            cross_attention: CrossAttention::init(
                cfg.cross_attention,
                cfg.embed_dim,
                cfg.cross_attention_heads,
                device,
            ),
            scale: Param::from_tensor(scale),
            pooling: cfg.pooling,
            train_cls: cfg.train_cls,
            full_vit,
            backbone,
        }
    }

    /// Fresh trainable parts for `backbone`, drawn on the backend `R` (the CPU) after seeding it
    /// with `seed`, then moved to `B`: the same seed gives the same starting point on every
    /// device, because each backend has its own random generator. The backbone's own CLS token
    /// is kept. On the CPU the values are exactly those `new` draws after the same seed.
    pub fn new_seeded<R: Backend>(
        backbone: ClipBackbone<B>,
        cfg: &MethodConfig,
        seed: u64,
        device: &B::Device,
    ) -> Self {
        let vit = &backbone.vit;
        let patch_dim = vit.patch_dim();
        let vit_stub = super::vit3d::Vit3dConfig {
            img_size: [1, 1, patch_dim],
            patch_size: [1, 1, patch_dim],
            in_channels: 1,
            hidden_size: vit.hidden_size(),
            mlp_dim: vit.blocks.first().map_or(1, |b| b.mlp.linear1.weight.dims()[1]),
            num_layers: vit.blocks.len(),
            num_heads: 1,
            layer_norm_eps: 1e-5,
            layout: super::vit3d::VitLayout::Monai,
            head_dim: Some(vit.blocks.first().map_or(1, |b| b.attn.attention_dim())),
            checkpoint_patch_size: None,
        };
        let text_stub = super::bert::BertConfig {
            vocab_size: 1,
            hidden_size: backbone.bert.hidden_size(),
            num_hidden_layers: 1,
            num_attention_heads: 1,
            intermediate_size: 1,
            max_position_embeddings: 1,
            ..super::bert::BertConfig::bert_base_uncased()
        };
        let cpu = R::Device::default();
        let stub = ClipBackbone::<R>::from_towers(
            super::vit3d::Vit3d::init(&vit_stub, &cpu).expect("a stub of a loaded ViT's shape is valid"),
            super::bert::Bert::init(&text_stub, &cpu).expect("a stub of a loaded BERT's shape is valid"),
            1,
            &cpu,
        );
        // Burn draws a parameter's initial value on first use. The stub's own draws happen
        // before the seed; the trainable parts then draw in module order, as a model built
        // around a loaded backbone did when its weight-decay groups were first counted.
        stub.visit(&mut Materialise);
        R::seed(&cpu, seed);
        let fresh = AdClip::new(stub, cfg, &cpu);
        fresh.visit(&mut Materialise);
        let drawn = fresh.trainable_tensors("");
        // The backbone's own weights (its CLS token, a fully trained ViT) come from the backbone.
        let drawn: std::collections::BTreeMap<_, _> =
            drawn.into_iter().filter(|(k, _)| k != "cls_token" && !k.starts_with("vit.")).collect();
        let store =
            super::weights::WeightStore::<B>::new(std::path::Path::new("(seeded initialisation)"), drawn, &[], device);
        AdClip::new(backbone, cfg, device).load_trainable(&store, "", cfg)
    }

    /// Start `f_v` and `f_t` from the backbone's own `mm_vision_proj` / `mm_language_proj`
    /// (trainable copies), so fine-tuning begins in the joint space that zero-shot uses. Needs
    /// the method's embedding size to equal the backbone's joint size.
    pub fn with_backbone_projections(mut self) -> crate::error::Result<Self> {
        let copy = |l: &Linear<B>| Linear {
            weight: Param::from_tensor(l.weight.val().detach()).set_require_grad(true),
            bias: l.bias.as_ref().map(|b| Param::from_tensor(b.val().detach()).set_require_grad(true)),
        };
        let fits = |ours: &Linear<B>, theirs: &Linear<B>| ours.weight.dims() == theirs.weight.dims();
        if !fits(&self.f_v, &self.backbone.vision_proj) || !fits(&self.f_t, &self.backbone.text_proj) {
            return Err(crate::error::Error::config(
                "projections",
                format!(
                    "the backbone's projections ({:?}, {:?}) do not have f_v's and f_t's shapes ({:?}, {:?})",
                    self.backbone.vision_proj.weight.dims(),
                    self.backbone.text_proj.weight.dims(),
                    self.f_v.weight.dims(),
                    self.f_t.weight.dims()
                ),
            ));
        }
        self.f_v = copy(&self.backbone.vision_proj);
        self.f_t = copy(&self.backbone.text_proj);
        Ok(self)
    }

    /// Replace the trainable parts by tensors named as `save_trainable` writes them (and as the
    /// reference fixtures name them): `{prefix}visual_prompts`, `mmse_token`, `f_mmse.{0,2}`,
    /// `text_prompts`, `f_v`, `f_t`, `xattn.{i2t,t2i}` (torch `MultiheadAttention` layout),
    /// `scale`, and the backbone's `cls_token` when it is trainable.
    pub fn load_trainable(mut self, store: &super::weights::WeightStore<B>, prefix: &str, cfg: &MethodConfig) -> Self {
        let p = |s: &str| format!("{prefix}{s}");
        let hv = self.backbone.vit.hidden_size();
        let ht = self.backbone.bert.hidden_size();
        let layers = self.backbone.vit.blocks.len() + self.mixer.as_ref().map_or(0, |m| m.blocks.len());
        if cfg.visual_prompts > 0 {
            self.visual_prompts =
                Some(VisualPrompts { prompts: store.param(&p("visual_prompts"), [layers, cfg.visual_prompts, hv]) });
        }
        for (l, ad) in self.adaptation.iter_mut().enumerate() {
            let a = |s: &str| p(&format!("adapt.{l}.{s}"));
            let lora = |u: &mut Option<super::adapt::Lora<B>>, name: &str| {
                if let Some(u) = u {
                    let [i, r] = u.a.dims();
                    let o = u.b.dims()[1];
                    u.a = store.param(&a(&format!("{name}.a")), [i, r]);
                    u.b = store.param(&a(&format!("{name}.b")), [r, o]);
                }
            };
            lora(&mut ad.qkv, "qkv");
            lora(&mut ad.out_proj, "out_proj");
            lora(&mut ad.mlp1, "mlp1");
            lora(&mut ad.mlp2, "mlp2");
            for (slot, name) in [(&mut ad.after_attn, "after_attn"), (&mut ad.after_mlp, "after_mlp")] {
                if let Some(bn) = slot {
                    let [d, h] = bn.down.weight.dims();
                    bn.down = store.linear(&a(&format!("{name}.down")), d, h, true);
                    bn.up = store.linear(&a(&format!("{name}.up")), h, d, true);
                }
            }
        }
        if cfg.mmse_token {
            self.mmse_token = Some(store.param(&p("mmse_token"), [1, 1, hv]));
            self.mmse_head = Some(MmseHead::load(store, &p("f_mmse"), hv, cfg.mmse_hidden));
        }
        if cfg.text_prompts > 0 {
            self.text_prompts = Some(TextPrompts { prompts: store.param(&p("text_prompts"), [cfg.text_prompts, ht]) });
        }
        self.perceiver = self.perceiver.take().map(|m| m.load(store, prefix));
        self.lga = self.lga.take().map(|m| m.load(store, prefix));
        self.mixer = self.mixer.take().map(|m| m.load(store, prefix));
        let image_feature = self.perceiver.as_ref().map_or(hv, |p| p.width());
        self.f_v = store.linear(&p("f_v"), image_feature, cfg.embed_dim, true);
        self.f_t = store.linear(&p("f_t"), ht, cfg.embed_dim, true);
        if cfg.cross_attention == CrossAttentionKind::MultiHead {
            let (d, h) = (cfg.embed_dim, cfg.cross_attention_heads);
            self.cross_attention.image_to_text = Some(super::cross_attention::Mha::load(store, &p("xattn.i2t"), d, h));
            self.cross_attention.text_to_image = Some(super::cross_attention::Mha::load(store, &p("xattn.t2i"), d, h));
        }
        self.scale = store.param(&p("scale"), [1]);
        if self.full_vit && store.contains(&p("vit.cls_token")) {
            self.backbone.vit = self.backbone.vit.reload(store, &p("vit.")).trainable();
        } else if cfg.train_cls && store.contains(&p("cls_token")) {
            self.backbone.vit.cls_token = store.param(&p("cls_token"), [1, 1, hv]);
        }
        self
    }

    /// Fold LoRA updates into the frozen ViT's weights, for inference: the same outputs, no
    /// extra matmuls. Adapters stay as they are.
    pub fn merge_lora(mut self) -> Self {
        super::adapt::merge_lora(&mut self.backbone.vit.blocks, &mut self.adaptation);
        if self.adaptation.iter().all(|a| !a.has_adapters()) {
            self.adaptation.clear();
        }
        self
    }

    /// Every trainable tensor under the names `load_trainable` reads, in PyTorch layouts (Linear
    /// `[out, in]`, `MultiheadAttention`'s packed `in_proj`), ready for safetensors: a fine-tuned
    /// run opens in PyTorch as a plain state dict.
    pub fn trainable_tensors(&self, prefix: &str) -> Vec<(String, super::weights::RawTensor)> {
        use super::weights::{put, put_linear};
        let mut out = Vec::new();
        let p = |s: &str| format!("{prefix}{s}");
        if let Some(v) = &self.visual_prompts {
            put(&mut out, p("visual_prompts"), v.prompts.val().into_data());
        }
        for (l, ad) in self.adaptation.iter().enumerate() {
            let a = |s: &str| p(&format!("adapt.{l}.{s}"));
            for (u, name) in [(&ad.qkv, "qkv"), (&ad.out_proj, "out_proj"), (&ad.mlp1, "mlp1"), (&ad.mlp2, "mlp2")] {
                if let Some(u) = u {
                    put(&mut out, a(&format!("{name}.a")), u.a.val().into_data());
                    put(&mut out, a(&format!("{name}.b")), u.b.val().into_data());
                }
            }
            for (bn, name) in [(&ad.after_attn, "after_attn"), (&ad.after_mlp, "after_mlp")] {
                if let Some(bn) = bn {
                    put_linear(&mut out, &a(&format!("{name}.down")), &bn.down);
                    put_linear(&mut out, &a(&format!("{name}.up")), &bn.up);
                }
            }
        }
        if let (Some(t), Some(h)) = (&self.mmse_token, &self.mmse_head) {
            put(&mut out, p("mmse_token"), t.val().into_data());
            put_linear(&mut out, &p("f_mmse.0"), &h.fc1);
            put_linear(&mut out, &p("f_mmse.2"), &h.fc2);
        }
        if let Some(perceiver) = &self.perceiver {
            perceiver.export(prefix, &mut out);
        }
        if let Some(lga) = &self.lga {
            lga.export(prefix, &mut out);
        }
        if let Some(mixer) = &self.mixer {
            mixer.export(prefix, &mut out);
        }
        if let Some(t) = &self.text_prompts {
            put(&mut out, p("text_prompts"), t.prompts.val().into_data());
        }
        put_linear(&mut out, &p("f_v"), &self.f_v);
        put_linear(&mut out, &p("f_t"), &self.f_t);
        for (name, mha) in
            [("xattn.i2t", &self.cross_attention.image_to_text), ("xattn.t2i", &self.cross_attention.text_to_image)]
        {
            if let Some(m) = mha {
                let w = Tensor::cat(
                    vec![m.q.weight.val().transpose(), m.k.weight.val().transpose(), m.v.weight.val().transpose()],
                    0,
                );
                put(&mut out, p(&format!("{name}.in_proj_weight")), w.into_data());
                let bias = |l: &Linear<B>| {
                    l.bias
                        .as_ref()
                        .map(|b| b.val())
                        .unwrap_or_else(|| Tensor::zeros([l.weight.dims()[1]], &l.weight.device()))
                };
                let b = Tensor::cat(vec![bias(&m.q), bias(&m.k), bias(&m.v)], 0);
                put(&mut out, p(&format!("{name}.in_proj_bias")), b.into_data());
                put_linear(&mut out, &p(&format!("{name}.out_proj")), &m.out);
            }
        }
        put(&mut out, p("scale"), self.scale.val().into_data());
        if self.full_vit {
            out.extend(
                super::backbones::m3d::export_vit(&self.backbone.vit, "")
                    .into_iter()
                    .map(|(n, t)| (p(&format!("vit.{n}")), t)),
            );
        } else if self.train_cls {
            put(&mut out, p("cls_token"), self.backbone.vit.cls_token.val().into_data());
        }
        out
    }

    /// # Shapes
    /// - x: `[batch, 1, D, H, W]`
    pub fn encode_image(&self, x: Tensor<B, 5>) -> ImageOutput<B> {
        let [_, _, d, h, w] = x.dims();
        // The perceiver pools the patch tokens on their grid, in the order they run.
        let grid = self.backbone.vit.token_grid([d, h, w]);
        let batch = x.dims()[0];
        let guide = self.lga.as_ref().map(|lga| (lga, lga.text_stream(self.guide_features(), batch)));
        let (last, _) = prompted_vision(
            &self.backbone.vit,
            x,
            self.mmse_token.as_ref(),
            self.visual_prompts.as_ref(),
            &self.adaptation,
            guide,
            self.mixer.as_ref(),
            // The perceiver reads the patch tokens; otherwise only [CLS] and [MMSE] are read.
            if self.perceiver.is_some() { VisionOutput::Sequence } else { VisionOutput::Prefix },
        );
        // Back to the trainable heads' precision (f32) from the frozen tower's.
        let last = to_dtype(last, self.f_v.weight.val().dtype());
        let [b, n, h] = last.dims();
        let feature = match &self.perceiver {
            // The patch tokens are the sequence's last ones, after CLS, [MMSE] and the prompts.
            Some(p) => {
                let patches: usize = grid.iter().product();
                p.forward(last.clone().narrow(1, n - patches, patches), grid)
            }
            None => last.clone().narrow(1, 0, 1).reshape([b, h]),
        };
        let mmse = self
            .mmse_head
            .as_ref()
            .filter(|_| self.mmse_token.is_some())
            .map(|head| head.forward(last.narrow(1, 1, 1).reshape([b, h])));
        ImageOutput { v: l2norm(self.f_v.forward(feature)), mmse }
    }

    /// The texts LGA's text stream starts from (the class prompts, tokenised).
    pub fn with_guide(mut self, guide: Encoded) -> Self {
        self.guide = Some(guide);
        self
    }

    /// The guide texts through the frozen text tower, pooled as the run pools, without text
    /// prompts and without gradient: `[texts, text hidden]`.
    fn guide_features(&self) -> Tensor<B, 2> {
        let g = self.guide.as_ref().expect("LGA needs its guide texts: AdClip::with_guide");
        let device = self.scale.device();
        let (n, len) = (g.batch(), g.len());
        let ids: Vec<i64> = g.ids.concat();
        let mask: Vec<f32> = g.mask.concat().into_iter().map(|m| m as f32).collect();
        let ids = Tensor::<B, 2, Int>::from_data(TensorData::new(ids, [n, len]), &device);
        let mask = Tensor::<B, 2>::from_data(TensorData::new(mask, [n, len]), &device);
        let (last, _) = self.backbone.bert.encode(self.backbone.bert.embed(ids), mask.clone(), false);
        pool(to_dtype(last, self.f_t.weight.val().dtype()), mask, self.pooling).detach()
    }

    /// Pooled text features before `f_t`.
    ///
    /// # Shapes
    /// - ids, mask: `[batch, tokens]` → `[batch, text hidden]`
    pub fn text_features(&self, ids: Tensor<B, 2, Int>, mask: Tensor<B, 2>) -> Tensor<B, 2> {
        self.text_features_from_embeddings(self.backbone.bert.embed(ids), mask)
    }

    /// As `text_features`, from the embedding layer's output (attribution varies it).
    pub fn text_features_from_embeddings(&self, embedded: Tensor<B, 3>, mask: Tensor<B, 2>) -> Tensor<B, 2> {
        let (x, mask) = match &self.text_prompts {
            Some(p) => p.insert(embedded, mask),
            None => (embedded, mask),
        };
        let (last, _) = self.backbone.bert.encode(x, mask.clone(), false);
        pool(to_dtype(last, self.f_t.weight.val().dtype()), mask, self.pooling)
    }

    /// # Shapes
    /// - ids, mask: `[batch, tokens]` → `[batch, embed]`, L2-normalised
    pub fn encode_text(&self, ids: Tensor<B, 2, Int>, mask: Tensor<B, 2>) -> Tensor<B, 2> {
        l2norm(self.f_t.forward(self.text_features(ids, mask)))
    }

    /// Logits of each image against the texts, with the cross-attention computed for that image
    /// alone: the texts attend to the one scan being classified, never to its batch mates, so a
    /// scan's prediction does not depend on the batch size or on which scans share its batch.
    /// This is how every scan is scored at validation and test.
    ///
    /// # Shapes
    /// - v: `[n_images, embed]`, w: `[n_texts, embed]` → `[n_images, n_texts]`
    pub fn logits_each(&self, v: Tensor<B, 2>, w: Tensor<B, 2>) -> Tensor<B, 2> {
        let [n, _] = v.dims();
        let rows: Vec<_> = (0..n).map(|i| self.logits(v.clone().narrow(0, i, 1), w.clone())).collect();
        Tensor::cat(rows, 0)
    }

    /// The score of row i of `v` against row i of `w` alone, for every i (attribution explains
    /// one image–text pair at a time, as inference scores them).
    ///
    /// # Shapes
    /// - v, w: `[n, embed]` → `[n]`
    pub fn logits_paired(&self, v: Tensor<B, 2>, w: Tensor<B, 2>) -> Tensor<B, 1> {
        let [n, _] = v.dims();
        let rows: Vec<_> =
            (0..n).map(|i| self.logits(v.clone().narrow(0, i, 1), w.clone().narrow(0, i, 1)).reshape([1])).collect();
        Tensor::cat(rows, 0)
    }

    /// Cross-attention over the batch, then `cos(v̂_i, ŵ_j) · scale` (training: the images and
    /// reports of a batch attend to each other).
    ///
    /// # Shapes
    /// - v: `[n_images, embed]`, w: `[n_texts, embed]` → `[n_images, n_texts]`
    pub fn logits(&self, v: Tensor<B, 2>, w: Tensor<B, 2>) -> Tensor<B, 2> {
        let (v_hat, w_hat) = self.cross_attention.forward(v, w);
        l2norm(v_hat).matmul(l2norm(w_hat).transpose()) * self.scale.val().reshape([1, 1])
    }

    /// The training loss: `CE(i→t) + CE(t→i) + λ · masked MSE`, and its two parts.
    pub fn loss(
        &self,
        image: &ImageOutput<B>,
        w: Tensor<B, 2>,
        mmse_target: Tensor<B, 1>,
        mmse_mask: Tensor<B, 1>,
        lambda: f64,
    ) -> Loss<B> {
        let contrastive = clip_loss(self.logits(image.v.clone(), w));
        let mmse = image.mmse.clone().map(|pred| masked_mse(pred, mmse_target, mmse_mask));
        let total = match &mmse {
            Some(m) => contrastive.clone() + m.clone() * lambda,
            None => contrastive.clone(),
        };
        Loss { total, contrastive, mmse }
    }
}

#[derive(Debug, Clone)]
pub struct Loss<B: Backend> {
    pub total: Tensor<B, 1>,
    pub contrastive: Tensor<B, 1>,
    pub mmse: Option<Tensor<B, 1>>,
}
