//! Training-step throughput of the method on any backend, in scans per second: encode a batch
//! of random volumes with deep visual prompts and the [MMSE] token through the frozen ViT, texts
//! with text prompts through the frozen BERT, cross-attention, the loss, backward, and an AdamW
//! step. Random weights at a named backbone shape. `benches/step.rs` (CPU, with peak RSS) and
//! `adfit bench-step --device cuda` (scripts/gpu_check.sh) run it; `scripts/bench_step.py` is
//! the same step in PyTorch.

use std::time::Instant;

use burn::optim::{AdamWConfig, GradientsParams, Optimizer};
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{Distribution, TensorData};
use serde::Serialize;

use crate::backend::Job;
use crate::error::Result;
use crate::model::adapt::{AdaptConfig, AdaptKind};
use crate::model::attention::{set_training_attention, TrainingAttention};
use crate::model::bert::{Bert, BertConfig};
use crate::model::clip::ClipBackbone;
use crate::model::method::{AdClip, MethodConfig};
use crate::model::precision::{cast_frozen, Precision};
use crate::model::vit3d::{Vit3d, Vit3dConfig};
use crate::train::pretrain::PretrainConfig;

/// The backbone shapes the benchmark knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum BenchShape {
    /// adfit's own backbone as `adfit pretrain` builds it (64³, 16³ patches, width 64).
    Phantom,
    /// M3D-CLIP at 128³ (4×16×16 patches = 2,048 tokens, ViT-B) with bert-base.
    M3d,
}

impl BenchShape {
    pub fn towers(self) -> (Vit3dConfig, BertConfig) {
        match self {
            BenchShape::M3d => (
                Vit3dConfig { img_size: [128, 128, 128], ..Vit3dConfig::m3d() },
                BertConfig { max_position_embeddings: 512, ..BertConfig::bert_base_uncased() },
            ),
            BenchShape::Phantom => (PretrainConfig::default().vit(), PretrainConfig::default().text(200)),
        }
    }

    /// The batch the benchmark tables use by default.
    pub fn default_batch(self) -> usize {
        match self {
            BenchShape::M3d => 2,
            BenchShape::Phantom => 8,
        }
    }
}

/// `repeat` timed steps after one warm-up step.
#[derive(Debug, Clone)]
pub struct StepBench {
    pub shape: BenchShape,
    pub batch: usize,
    /// Text length in tokens.
    pub tokens: usize,
    pub repeat: usize,
    /// Element type of the frozen towers.
    pub precision: Precision,
    /// How the ViT adapts: `None` is the method (visual prompts); any other kind replaces the
    /// prompts, as the paper's LoRA, adapter, perceiver and full fine-tuning rows do.
    pub adaptation: AdaptKind,
    /// How attention is differentiated (set process-wide for the run).
    pub attention: TrainingAttention,
}

/// The median step.
#[derive(Debug, Clone, Serialize)]
pub struct StepTiming {
    pub shape: BenchShape,
    pub batch: usize,
    pub tokens: usize,
    pub adaptation: AdaptKind,
    pub attention: TrainingAttention,
    pub trainable_params: usize,
    pub seconds: f64,
    pub scans_per_s: f64,
}

impl Job for StepBench {
    type Output = StepTiming;

    fn run<B: AutodiffBackend>(self, device: B::Device) -> Result<StepTiming> {
        if matches!(self.adaptation, AdaptKind::Full | AdaptKind::Lga) && self.precision != Precision::Fp32 {
            return Err(crate::error::Error::config("--adaptation", "full fine-tuning and LGA need --precision fp32"));
        }
        set_training_attention(self.attention);
        let (vit, text) = self.shape.towers();
        let (batch, tokens) = (self.batch, self.tokens);
        let h = vit.hidden_size;
        let backbone =
            ClipBackbone::<B>::from_towers(Vit3d::init(&vit, &device)?, Bert::init(&text, &device)?, h, &device);
        let backbone = cast_frozen(backbone, self.precision)?;
        let mut cfg = MethodConfig { embed_dim: h, mmse_hidden: h / 2, ..Default::default() };
        if self.adaptation != AdaptKind::None {
            cfg.visual_prompts = 0;
            cfg.adaptation = AdaptConfig { kind: self.adaptation, ..AdaptConfig::default() };
        }
        // LGA's guide: three short texts of random ids, as the class prompts are.
        let guide = crate::model::tokenizer::Encoded {
            ids: (0..3).map(|c| vec![2, 5 + c, 7 + c, 9, 3]).collect(),
            mask: vec![vec![1; 5]; 3],
        };
        let mut model = AdClip::new(backbone, &cfg, &device).with_guide(guide);
        let trainable_params = crate::model::params::totals(&model).0;
        let mut optim = AdamWConfig::new().init::<B, AdClip<B>>();
        let [d, hh, w] = vit.img_size;
        let x = Tensor::<B, 5>::random([batch, 1, d, hh, w], Distribution::Uniform(0.0, 1.0), &device);
        let ids: Vec<i64> = (0..batch * tokens).map(|i| 5 + (i as i64 * 7919) % (text.vocab_size as i64 - 5)).collect();
        let ids = Tensor::<B, 2, Int>::from_data(TensorData::new(ids, [batch, tokens]), &device);
        let mask = Tensor::<B, 2>::ones([batch, tokens], &device);
        let target = Tensor::<B, 1>::random([batch], Distribution::Normal(0.0, 1.0), &device);
        let mmse_mask = Tensor::<B, 1>::ones([batch], &device);
        let mut times = Vec::new();
        for i in 0..=self.repeat {
            let t = Instant::now();
            let image = model.encode_image(x.clone());
            let w = model.encode_text(ids.clone(), mask.clone());
            let loss = model.loss(&image, w, target.clone(), mmse_mask.clone(), 0.5);
            let grads = GradientsParams::from_grads(loss.total.backward(), &model);
            model = optim.step(1e-3, model, grads);
            // Reading a value back waits for the device.
            let _ = model.scale.val().into_data();
            if i > 0 {
                times.push(t.elapsed().as_secs_f64());
            }
        }
        times.sort_by(f64::total_cmp);
        let seconds = times[times.len() / 2];
        Ok(StepTiming {
            shape: self.shape,
            batch,
            tokens,
            adaptation: self.adaptation,
            attention: self.attention,
            trainable_params,
            seconds,
            scans_per_s: batch as f64 / seconds,
        })
    }
}
