//! Reduced precision for the frozen towers: their weights are cast once after loading, and
//! activations cross into the trainable parts (prompts, tokens, heads, projections), which stay in
//! f32, through [`to_dtype`] at each seam. Gradients flow back through the casts, so the trainable
//! tensors and AdamW stay in full precision.

use burn::module::{Module, ModuleMapper, Param};
use burn::prelude::*;
use burn::tensor::{DType, FloatDType};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::model::clip::ClipBackbone;

/// The element type of the frozen ViT and BERT.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// 32-bit floats everywhere (parity with the PyTorch references).
    #[default]
    Fp32,
    /// bfloat16 frozen towers (f32's range, 8 bits of mantissa).
    Bf16,
    /// IEEE half frozen towers (5-bit exponent: overflow is possible in large activations).
    F16,
}

impl Precision {
    pub fn dtype(self) -> FloatDType {
        match self {
            Precision::Fp32 => FloatDType::F32,
            Precision::Bf16 => FloatDType::BF16,
            Precision::F16 => FloatDType::F16,
        }
    }
}

/// `t` in `dtype`; no cast (and no autodiff node) when it already is.
pub fn to_dtype<B: Backend, const D: usize>(t: Tensor<B, D>, dtype: DType) -> Tensor<B, D> {
    if t.dtype() == dtype {
        t
    } else {
        t.cast(dtype)
    }
}

struct Cast(FloatDType);

impl<B: Backend> ModuleMapper<B> for Cast {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        let dtype = self.0;
        // Detached first: the cast weights are new frozen leaves, not part of any graph.
        param.map(move |t| t.detach().cast(dtype))
    }
}

/// The backbone with its frozen towers in `precision`. The ViT's CLS token (which the method
/// may train) and the CLIP projections and scale stay in f32. A device that has no such element
/// type (wgpu has no bf16) is an error.
pub fn cast_frozen<B: Backend>(mut m: ClipBackbone<B>, precision: Precision) -> Result<ClipBackbone<B>> {
    if precision == Precision::Fp32 {
        return Ok(m);
    }
    if m.vit.cnn.is_some() {
        return Err(Error::config("precision", "a CNN vision tower (Med3DVLM's DCFormer) runs in fp32 only"));
    }
    let device = m.logit_scale.val().device();
    if !B::supports_dtype(&device, DType::from(precision.dtype())) {
        return Err(Error::config(
            "precision",
            format!("{precision:?} is not supported by this device ({}): use fp32", B::name(&device)),
        ));
    }
    let mut cast = Cast(precision.dtype());
    m.vit.patch_embed = Module::map(m.vit.patch_embed, &mut cast);
    m.vit.pos_embed = ModuleMapper::<B>::map_float(&mut cast, m.vit.pos_embed);
    m.vit.blocks = m.vit.blocks.into_iter().map(|b| b.map(&mut cast)).collect();
    m.vit.patch_norms = Module::map(m.vit.patch_norms, &mut cast);
    m.vit.norm = Module::map(m.vit.norm, &mut cast);
    m.bert = m.bert.map(&mut cast);
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::Cpu;
    use crate::data::phantom;
    use crate::model::backbones::Backbone;
    use crate::model::method::{AdClip, MethodConfig};
    use crate::model::tokenizer::tokenize;
    use crate::model::vit3d::PosEmbedPolicy;
    use burn::backend::Autodiff;
    use burn::tensor::TensorData;

    type AD = Autodiff<Cpu>;

    fn max_abs(a: Tensor<AD, 2>, b: Tensor<AD, 2>) -> f32 {
        (a - b).abs().max().into_scalar()
    }

    /// The shipped backbone with its towers in bf16 or f16 gives embeddings close to f32's on
    /// phantoms and their captions, and the trainable tensors stay f32 and get f32 gradients
    /// through the casts.
    #[test]
    fn reduced_precision_towers_stay_close_and_train_in_f32() {
        let device = Default::default();
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("backbones/phantom-64");
        let b = Backbone::<AD>::load(&dir, None, PosEmbedPolicy::Reinterpret, &device).unwrap();
        let grid = b.config.img_size;
        let batch = phantom::batch(grid, 99, 0, 4);
        let voxels: Vec<f32> = batch.iter().flat_map(|p| p.voxels.iter().copied()).collect();
        let x = Tensor::<AD, 5>::from_data(TensorData::new(voxels, [4, 1, grid[0], grid[1], grid[2]]), &device);
        let captions: Vec<String> = batch.iter().map(|p| p.caption.clone()).collect();
        let (ids, mask) = tokenize::<AD>(&b.tokenizer, &captions, &device).unwrap();
        let h = b.config.hidden_size;
        let cfg = MethodConfig { embed_dim: h, mmse_hidden: h / 2, ..Default::default() };
        let full = AdClip::new_seeded::<Cpu>(b.model.clone(), &cfg, 0, &device);
        let v32 = full.encode_image(x.clone()).v;
        let t32 = full.encode_text(ids.clone(), mask.clone());
        // The same trainable parts on the cast towers (read back from the f32 model rather than
        // drawn again: tests running in parallel share the backend's random generator).
        let drawn: std::collections::BTreeMap<_, _> =
            full.trainable_tensors("").into_iter().filter(|(k, _)| k != "cls_token").collect();
        let store =
            crate::model::weights::WeightStore::<AD>::new(std::path::Path::new("(f32 model)"), drawn, &[], &device);
        for (p, tol) in [(Precision::Bf16, 1e-2f32), (Precision::F16, 2e-3)] {
            let m =
                AdClip::new(cast_frozen(b.model.clone(), p).unwrap(), &cfg, &device).load_trainable(&store, "", &cfg);
            assert_eq!(m.backbone.vit.blocks[0].attn.qkv.weight.val().dtype(), DType::from(p.dtype()));
            let image = m.encode_image(x.clone());
            let t = m.encode_text(ids.clone(), mask.clone());
            let (dv, dt) = (max_abs(image.v.clone(), v32.clone()), max_abs(t.clone(), t32.clone()));
            println!("{p:?} towers on the CPU: max abs difference from f32, image {dv:.2e}, text {dt:.2e}");
            assert!(dv < tol && dt < tol, "{p:?}: image {dv}, text {dt}");
            let loss = m.loss(&image, t, Tensor::zeros([4], &device), Tensor::ones([4], &device), 0.5);
            let grads = loss.total.backward();
            let g = m.visual_prompts.as_ref().unwrap().prompts.grad(&grads).expect("prompt gradient");
            assert_eq!(g.dtype(), DType::F32);
            assert!(g.abs().sum().into_scalar() > 0.0, "{p:?}: zero prompt gradient");
        }
    }
}
