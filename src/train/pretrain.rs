//! Contrastive pre-training of adfit's own small CLIP-style backbone on head phantoms
//! (`data::phantom`): every weight of both towers, the projections and the scale train, with
//! AdamW under a warm-up then cosine schedule. The result is written in M3D-CLIP's layout, so
//! everything that loads M3D-CLIP loads it.

use burn::module::Param;
use burn::optim::{AdamWConfig, GradientsParams, Optimizer};
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::TensorData;
use serde::{Deserialize, Serialize};

use crate::data::phantom::{self, Phantom};
use crate::data::report::ReportTemplate;
use crate::error::{Error, Result};
use crate::model::backbones::m3d::BackboneConfig;
use crate::model::bert::{Bert, BertConfig};
use crate::model::clip::ClipBackbone;
use crate::model::loss::clip_loss;
use crate::model::tokenizer::tokenize;
use crate::model::tokenizer::TextTokenizer;
use crate::model::vit3d::{Vit3d, Vit3dConfig};

/// The small backbone's shape and its pre-training schedule.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PretrainConfig {
    pub grid: [usize; 3],
    pub patch: [usize; 3],
    pub hidden: usize,
    pub layers: usize,
    pub heads: usize,
    pub text_hidden: usize,
    pub text_layers: usize,
    pub joint_dim: usize,
    pub max_text_len: usize,
    pub steps: usize,
    pub batch_size: usize,
    pub lr: f64,
    pub weight_decay: f64,
    pub warmup: usize,
    pub seed: u64,
    /// What the backbone is pre-trained on.
    #[serde(default)]
    pub corpus: Corpus,
    /// Brain corpus: heads generated and held in memory (each step draws from them).
    #[serde(default)]
    pub corpus_size: usize,
    /// Brain corpus: held-out heads (their own seed space) for the retrieval accuracy.
    #[serde(default)]
    pub held_out: usize,
    /// Brain corpus: the frozen Hugging Face text tower (`language_model_name_or_path`).
    #[serde(default)]
    pub text_model: String,
    /// Brain corpus: weight of the findings term, the mean squared error of a linear head that
    /// reads the caption's measured sizes (log share of intracranial volume per structure, and
    /// log intracranial volume, standardised over the corpus) off the pooled image feature. 0
    /// trains on the contrastive loss alone. The head is dropped afterwards: only the ViT keeps
    /// what it learned.
    #[serde(default)]
    pub findings_weight: f64,
}

/// The pre-training domain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Corpus {
    /// Synthetic heads with radiology-style findings (`data::synth::corpus`), against a frozen
    /// real text tower: adfit's default backbone.
    #[default]
    Brains,
    /// Head phantoms (`data::phantom`), both towers trained from scratch: the small test fixture.
    Phantoms,
}

/// The text tower the brain corpus is read by.
pub const DEFAULT_TEXT_MODEL: &str = "sentence-transformers/all-MiniLM-L6-v2";

impl Default for PretrainConfig {
    fn default() -> Self {
        PretrainConfig {
            grid: [64, 64, 64],
            patch: [16, 16, 16],
            hidden: 64,
            layers: 4,
            heads: 4,
            text_hidden: 64,
            text_layers: 2,
            joint_dim: 64,
            max_text_len: 128,
            steps: 3000,
            batch_size: 32,
            lr: 5e-4,
            weight_decay: 0.01,
            warmup: Self::warmup_for(3000),
            seed: 0,
            corpus: Corpus::Brains,
            corpus_size: 2000,
            held_out: 256,
            text_model: DEFAULT_TEXT_MODEL.into(),
            findings_weight: 0.0,
        }
    }
}

impl PretrainConfig {
    pub fn vit(&self) -> Vit3dConfig {
        Vit3dConfig {
            img_size: self.grid,
            patch_size: self.patch,
            in_channels: 1,
            hidden_size: self.hidden,
            mlp_dim: 4 * self.hidden,
            num_layers: self.layers,
            num_heads: self.heads,
            layer_norm_eps: 1e-5,
            layout: Default::default(),
            head_dim: None,
            checkpoint_patch_size: None,
        }
    }

    pub fn text(&self, vocab_size: usize) -> BertConfig {
        BertConfig {
            vocab_size,
            hidden_size: self.text_hidden,
            num_hidden_layers: self.text_layers,
            num_attention_heads: self.heads,
            intermediate_size: 4 * self.text_hidden,
            max_position_embeddings: self.max_text_len,
            initializer_range: self.init_std(),
            ..BertConfig::bert_base_uncased()
        }
    }

    /// The backbone's `config.json` (M3D-CLIP fields, with the text tower's own shape).
    pub fn backbone(&self, vocab_size: usize) -> BackboneConfig {
        BackboneConfig::from_towers(
            &self.vit(),
            self.text(vocab_size),
            "adfit-phantom-bert",
            self.max_text_len,
            self.joint_dim,
        )
    }

    /// Standard deviation of the initial weights: 1.2/√width (0.15 at width 64). bert-base's
    /// 0.02 leaves a narrow model's [CLS] outputs nearly equal for every input, and contrastive
    /// training then collapses to the uniform loss instead of learning.
    pub fn init_std(&self) -> f64 {
        1.2 / (self.hidden as f64).sqrt()
    }

    /// Warm-up steps for a run of `steps`: 5% of them.
    pub fn warmup_for(steps: usize) -> usize {
        (steps / 20).max(1)
    }

    /// Learning rate at `step`: linear warm-up, then cosine decay to zero.
    pub fn lr_at(&self, step: usize) -> f64 {
        if step < self.warmup {
            return self.lr * (step + 1) as f64 / self.warmup as f64;
        }
        let t = (step - self.warmup) as f64 / (self.steps - self.warmup).max(1) as f64;
        self.lr * 0.5 * (1.0 + (std::f64::consts::PI * t.min(1.0)).cos())
    }
}

/// The words the backbone's vocabulary holds: the phantom captions, and the fine-tuning texts
/// (report template and class prompts), whose embeddings pre-training leaves at their
/// initial values.
pub fn corpus(template: &ReportTemplate) -> String {
    let mut text = phantom::corpus();
    text.push(' ');
    text.push_str(&template.preamble);
    for a in &template.attributes {
        text.push_str(&format!(" {} {}", a.name, a.unit));
    }
    text.push_str(&format!(" {} {}", template.class_prompt, template.missing));
    text + " NC MCI AD"
}

/// One logged point of pre-training.
#[derive(Debug, Clone, Serialize)]
pub struct StepLog {
    pub step: usize,
    pub lr: f64,
    pub loss: f64,
    /// Image→caption retrieval accuracy within the batch.
    pub accuracy: f64,
    /// Brain corpus with a findings term: its mean squared error (standardised units).
    pub findings: Option<f64>,
}

/// A fresh backbone with the shape of `cfg`; the scale starts at 10 (M3D-CLIP multiplies it raw).
pub fn init<B: Backend>(cfg: &PretrainConfig, vocab_size: usize, device: &B::Device) -> Result<ClipBackbone<B>> {
    B::seed(device, cfg.seed);
    let vit = Vit3d::init_with_std(&cfg.vit(), cfg.init_std(), device)?;
    let bert = Bert::init(&cfg.text(vocab_size), device)?;
    let mut model = ClipBackbone::from_towers(vit, bert, cfg.joint_dim, device);
    model.logit_scale = Param::from_tensor(Tensor::from_data(TensorData::new(vec![10f32], [1]), device));
    Ok(model)
}

/// Volumes on `grid` as one `[n, 1, D, H, W]` batch.
pub(crate) fn stack<B: Backend>(volumes: &[impl AsRef<[f32]>], grid: [usize; 3], device: &B::Device) -> Tensor<B, 5> {
    let data: Vec<f32> = volumes.iter().flat_map(|v| v.as_ref().iter().copied()).collect();
    Tensor::from_data(TensorData::new(data, [volumes.len(), 1, grid[0], grid[1], grid[2]]), device)
}

/// Loss and in-batch image→caption accuracy of one batch.
fn forward<B: Backend>(
    model: &ClipBackbone<B>,
    batch: &[Phantom],
    cfg: &PretrainConfig,
    tok: &TextTokenizer,
    device: &B::Device,
) -> Result<(Tensor<B, 1>, f64)> {
    let captions: Vec<String> = batch.iter().map(|p| p.caption.clone()).collect();
    let (ids, mask) = tokenize::<B>(tok, &captions, device)?;
    let volumes: Vec<&[f32]> = batch.iter().map(|p| p.voxels.as_slice()).collect();
    let logits = model.logits(model.encode_image(stack(&volumes, cfg.grid, device)), model.encode_text(ids, mask));
    let picked: Vec<i64> = logits.clone().argmax(1).into_data().convert::<i64>().to_vec().unwrap_or_default();
    // A caption shared by two phantoms in the batch counts as found for either.
    let hits = picked.iter().enumerate().filter(|&(i, &j)| batch[i].caption == batch[j as usize].caption).count();
    Ok((clip_loss(logits), hits as f64 / batch.len() as f64))
}

/// Train `model` for `cfg.steps` steps on the phantom stream of `cfg.seed`; `on_step` sees each
/// step's log (for progress bars and files). A non-finite loss stops with an error.
pub fn train<B: AutodiffBackend>(
    mut model: ClipBackbone<B>,
    cfg: &PretrainConfig,
    tok: &TextTokenizer,
    device: &B::Device,
    mut on_step: impl FnMut(&StepLog),
) -> Result<ClipBackbone<B>> {
    let mut optim = AdamWConfig::new().with_weight_decay(cfg.weight_decay as f32).init::<B, ClipBackbone<B>>();
    for step in 0..cfg.steps {
        let batch = phantom::batch(cfg.grid, cfg.seed, (step * cfg.batch_size) as u64, cfg.batch_size);
        if step == 0 {
            tracing::debug!("first caption: {}", batch[0].caption);
        }
        let (loss, accuracy) = forward(&model, &batch, cfg, tok, device)?;
        let value: f64 = loss.clone().into_scalar().elem();
        if !value.is_finite() {
            return Err(Error::config("pretrain", format!("loss is {value} at step {step}: stopping")));
        }
        let lr = cfg.lr_at(step);
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        model = optim.step(lr, model, grads);
        on_step(&StepLog { step, lr, loss: value, accuracy, findings: None });
    }
    Ok(model)
}

/// Image→caption accuracy on `batches` held-out batches (a phantom stream no step saw), with
/// the model in inference form (`model.valid()` of a trained one, or a loaded backbone).
pub fn held_out_accuracy<B: Backend>(
    model: &ClipBackbone<B>,
    cfg: &PretrainConfig,
    tok: &TextTokenizer,
    batches: usize,
    device: &B::Device,
) -> Result<f64> {
    let mut sum = 0.0;
    for b in 0..batches {
        let batch = phantom::batch(cfg.grid, cfg.seed ^ 0xA5A5_0000_0000, (b * cfg.batch_size) as u64, cfg.batch_size);
        sum += forward(model, &batch, cfg, tok, device)?.1;
    }
    Ok(sum / batches.max(1) as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warm_up_then_cosine_to_zero() {
        let cfg = PretrainConfig { steps: 100, warmup: 10, lr: 1.0, ..Default::default() };
        assert!((cfg.lr_at(0) - 0.1).abs() < 1e-12);
        assert!((cfg.lr_at(9) - 1.0).abs() < 1e-12);
        assert!((cfg.lr_at(10) - 1.0).abs() < 1e-12);
        assert!((cfg.lr_at(55) - 0.5).abs() < 1e-12);
        assert!(cfg.lr_at(99) < 0.001);
    }

    #[test]
    fn the_corpus_holds_report_and_caption_words() {
        let c = corpus(&ReportTemplate::default()).to_lowercase();
        for w in ["hippocampal", "ventricular", "blob", "rim", "photo", "mci"] {
            assert!(c.contains(w), "{w}");
        }
    }
}
