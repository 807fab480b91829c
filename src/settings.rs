//! A fine-tuning run's settings: read from a JSON run config (`configs/finetune.json`), then
//! overridden field by field from the command line. The resolved settings are what a run
//! folder's `config.json` records and what `--resume` compares.

use crate::model::adapt::AdaptConfig;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::data::report::ReportTemplate;
use crate::error::{Error, Result};
use crate::model::bert::Pooling;
use crate::model::cross_attention::CrossAttentionKind;
use crate::model::method::{MethodConfig, ScaleInit};
use crate::model::precision::Precision;
use crate::model::vit3d::PosEmbedPolicy;

/// Every knob of `adfit finetune` except where the data and the run folder are.
/// A config file may give any subset; the rest keep these defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RunSettings {
    pub epochs: u64,
    pub batch_size: usize,
    /// Initial learning rate (ReduceLROnPlateau ×0.1 after 5 epochs without a better
    /// validation balanced accuracy).
    pub lr: f64,
    /// Decoupled weight decay, on the trainable matrices only.
    pub weight_decay: f64,
    /// AdamW's epsilon (PyTorch's default; Burn's own default is 1e-5).
    pub adam_eps: f64,
    /// Clip the global L2 norm of the gradients (over every trainable tensor, as PyTorch's
    /// `clip_grad_norm_`) to this. None by default: the paper mentions no clipping.
    pub grad_clip: Option<f64>,
    /// Weight of the MMSE loss.
    pub lambda: f64,
    pub seed: u64,
    /// Stop after this many epochs without a better validation score.
    pub early_stop: usize,
    /// Seeded flips, shifts and rotations of training volumes.
    pub augment: bool,
    /// Keep at most this many training scans, by whole subjects.
    pub train_size: Option<usize>,
    /// Deep visual prompts per layer (0: the ablation without them).
    pub visual_prompts: usize,
    /// The [MMSE] token and its regression head.
    pub mmse_token: bool,
    /// Text prompts after [CLS] (0: the ablation without them).
    pub text_prompts: usize,
    /// Train on the report; false trains on "A photo of {class}." alone.
    pub report: bool,
    /// adfit's class-prompt objective (not the paper's; 0 = off): the weight of an extra
    /// cross-entropy of each training image against the class prompts used at inference.
    pub class_prompt_weight: f64,
    pub cross_attention: CrossAttentionKind,
    /// Heads of the multi-head cross-attention (must divide the joint embedding size).
    pub cross_attention_heads: usize,
    /// Text pooling before `f_t`: M3D-CLIP's [CLS], or DEFT's mean over all positions.
    pub pooling: Pooling,
    /// The logit scale's start: the paper's 10, or DEFT's raw ln(1/0.07).
    pub scale_init: ScaleInit,
    /// Train the backbone's CLS token with the prompts (DEFT does).
    pub train_cls: bool,
    /// Report template (JSON with configs/report.json's fields). Its class prompt is what every
    /// scan is matched against at validation and test, and the training text of the no-report
    /// variant; the training reports themselves come from the index (`adfit preprocess`).
    /// None: the paper's template.
    pub report_template: Option<PathBuf>,
    /// Where `f_v` and `f_t` start: fresh random layers (the paper), or the backbone's own
    /// projections (the joint space zero-shot uses).
    pub projections: Projections,
    pub pos_embed: PosEmbedPolicy,
    /// Element type of the frozen ViT and BERT (the trainable parts stay f32).
    pub precision: Precision,
    /// How the ViT adapts beyond the prompts (`kind`: none, lora, adapter, full,
    /// perceiver-lora, lga), with `lora_rank`, `lora_alpha`, `lora_mlp`, `adapter_reduction`,
    /// `perceiver_width`, `perceiver_depth`, `perceiver_pool`, `lga_every`, `lga_heads`,
    /// `lga_reduction`, `lga_ffn_ratio`, `lga_final_injector`.
    pub adaptation: AdaptConfig,
}

impl Default for RunSettings {
    fn default() -> Self {
        RunSettings {
            epochs: 20,
            batch_size: 8,
            lr: 1e-3,
            weight_decay: 0.01,
            adam_eps: 1e-8,
            grad_clip: None,
            lambda: 0.5,
            seed: 0,
            early_stop: 10,
            augment: false,
            train_size: None,
            visual_prompts: 20,
            mmse_token: true,
            text_prompts: 30,
            report: true,
            class_prompt_weight: 0.0,
            cross_attention: CrossAttentionKind::MultiHead,
            cross_attention_heads: 8,
            pooling: Pooling::Cls,
            scale_init: ScaleInit::Paper,
            train_cls: true,
            report_template: None,
            projections: Projections::Fresh,
            pos_embed: PosEmbedPolicy::Reinterpret,
            precision: Precision::Fp32,
            adaptation: AdaptConfig::default(),
        }
    }
}

impl RunSettings {
    /// Settings from a JSON run config; unknown fields and bad values are refused by name.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = crate::limits::read_text(path)?;
        let s: RunSettings = serde_json::from_str(&text).map_err(|e| Error::Json { path: path.into(), source: e })?;
        s.validate().map_err(|e| match e {
            Error::Config { field, reason } => Error::Config { field: format!("{}: {field}", path.display()), reason },
            other => other,
        })?;
        Ok(s)
    }

    pub fn validate(&self) -> Result<()> {
        let positive = |v: f64| v.is_finite() && v > 0.0;
        if self.epochs == 0 {
            return Err(Error::config("epochs", "must be at least 1"));
        }
        if self.batch_size < 2 {
            return Err(Error::config("batch_size", "must be at least 2 (the contrastive loss pairs scans)"));
        }
        if !positive(self.lr) {
            return Err(Error::config("lr", format!("{} is not a positive number", self.lr)));
        }
        if !(self.weight_decay.is_finite() && self.weight_decay >= 0.0) {
            return Err(Error::config("weight_decay", format!("{} is not ≥ 0", self.weight_decay)));
        }
        if !(self.lambda.is_finite() && self.lambda >= 0.0) {
            return Err(Error::config("lambda", format!("{} is not ≥ 0", self.lambda)));
        }
        if !(self.class_prompt_weight.is_finite() && self.class_prompt_weight >= 0.0) {
            return Err(Error::config("class_prompt_weight", format!("{} is not ≥ 0", self.class_prompt_weight)));
        }
        if !positive(self.adam_eps) {
            return Err(Error::config("adam_eps", format!("{} is not a positive number", self.adam_eps)));
        }
        if let Some(c) = self.grad_clip.filter(|&c| !positive(c)) {
            return Err(Error::config("grad_clip", format!("{c} is not a positive number")));
        }
        if self.cross_attention_heads == 0 {
            return Err(Error::config("cross_attention_heads", "must be at least 1"));
        }
        let a = &self.adaptation;
        if a.kind == crate::model::adapt::AdaptKind::Full && self.precision != Precision::Fp32 {
            return Err(Error::config(
                "adaptation",
                "full fine-tuning trains the ViT's weights: it needs precision fp32",
            ));
        }
        if a.kind == crate::model::adapt::AdaptKind::Lga && self.precision != Precision::Fp32 {
            return Err(Error::config("adaptation", "LGA runs in the ViT's sequence: it needs precision fp32"));
        }
        if a.lga_every == 0 || a.lga_heads == 0 || a.lga_reduction == 0 || !positive(a.lga_ffn_ratio) {
            return Err(Error::config(
                "adaptation",
                "lga_every, lga_heads and lga_reduction must be at least 1, lga_ffn_ratio positive",
            ));
        }
        if a.lora_rank == 0 || a.adapter_reduction == 0 {
            return Err(Error::config("adaptation", "lora_rank and adapter_reduction must be at least 1"));
        }
        if a.perceiver_width == 0 || a.perceiver_depth == 0 || a.perceiver_pool == 0 {
            return Err(Error::config(
                "adaptation",
                "perceiver_width, perceiver_depth and perceiver_pool must be at least 1",
            ));
        }
        if !positive(a.lora_alpha) {
            return Err(Error::config("adaptation.lora_alpha", format!("{} is not a positive number", a.lora_alpha)));
        }
        Ok(())
    }
}

/// Where the trainable projections `f_v`, `f_t` start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Projections {
    /// New random layers, as the paper describes.
    #[default]
    Fresh,
    /// Trainable copies of the backbone's `mm_vision_proj` / `mm_language_proj`.
    Backbone,
}

impl RunSettings {
    /// The method's configuration for a backbone whose joint embedding is `embed_dim` wide.
    pub fn method(&self, embed_dim: usize) -> Result<MethodConfig> {
        if self.cross_attention == CrossAttentionKind::MultiHead && embed_dim % self.cross_attention_heads != 0 {
            return Err(Error::config(
                "cross_attention_heads",
                format!("{} heads do not divide the embedding size {embed_dim}", self.cross_attention_heads),
            ));
        }
        Ok(MethodConfig {
            visual_prompts: self.visual_prompts,
            mmse_token: self.mmse_token,
            text_prompts: self.text_prompts,
            cross_attention: self.cross_attention,
            cross_attention_heads: self.cross_attention_heads,
            pooling: self.pooling,
            embed_dim,
            mmse_hidden: embed_dim / 2,
            scale_init: self.scale_init,
            train_cls: self.train_cls,
            adaptation: self.adaptation,
            lambda: self.lambda,
            mixer_layers: 1,
        })
    }

    /// Refuse what a vision tower cannot take: a CNN (Med3DVLM's DCFormer) has no blocks for LoRA,
    /// adapters or LGA and no patch grid for the perceiver; the method (prompts, [MMSE], the token
    /// mixer) and full fine-tuning (BatchNorm statistics kept) run.
    pub fn check_tower(&self, layout: crate::model::vit3d::VitLayout) -> Result<()> {
        use crate::model::adapt::AdaptKind;
        if layout.is_cnn() && !matches!(self.adaptation.kind, AdaptKind::None | AdaptKind::Full) {
            return Err(Error::config(
                "adaptation",
                format!(
                    "{:?} needs a ViT's blocks; this backbone's vision tower is a CNN (Med3DVLM's DCFormer), \
                     where adfit runs the method (prompts and [MMSE] in trainable blocks after it) and full \
                     fine-tuning only",
                    self.adaptation.kind
                ),
            ));
        }
        Ok(())
    }

    /// The report template whose class prompts the run is scored against.
    pub fn template(&self) -> Result<ReportTemplate> {
        match &self.report_template {
            Some(path) => ReportTemplate::from_json(path),
            None => Ok(ReportTemplate::default()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<RunSettings> {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("run.json");
        std::fs::write(&p, text).unwrap();
        RunSettings::from_file(&p)
    }

    #[test]
    fn a_partial_file_keeps_the_defaults() {
        let s = parse(r#"{"epochs": 3, "cross_attention": "off", "mmse_token": false}"#).unwrap();
        assert_eq!(s.epochs, 3);
        assert_eq!(s.cross_attention, CrossAttentionKind::Off);
        assert!(!s.mmse_token);
        assert_eq!(s.lr, RunSettings::default().lr);
    }

    #[test]
    fn unknown_fields_and_bad_values_are_named() {
        let e = parse(r#"{"epoch": 3}"#).unwrap_err().to_string();
        assert!(e.contains("epoch") && e.contains("run.json"), "{e}");
        let e = parse(r#"{"batch_size": 1}"#).unwrap_err().to_string();
        assert!(e.contains("batch_size") && e.contains("run.json"), "{e}");
        let e = parse(r#"{"lr": -1}"#).unwrap_err().to_string();
        assert!(e.contains("lr"), "{e}");
    }

    #[test]
    fn adaptations_that_train_in_the_vits_sequence_need_fp32() {
        for (kind, why) in [("full", "full fine-tuning"), ("lga", "LGA")] {
            let e = parse(&format!(r#"{{"adaptation": {{"kind": "{kind}"}}, "precision": "bf16"}}"#))
                .unwrap_err()
                .to_string();
            assert!(e.contains(why) && e.contains("fp32") && e.contains("run.json"), "{kind}: {e}");
            parse(&format!(r#"{{"adaptation": {{"kind": "{kind}"}}, "precision": "fp32"}}"#)).unwrap();
        }
        for kind in ["lora", "adapter", "perceiver-lora"] {
            parse(&format!(r#"{{"adaptation": {{"kind": "{kind}"}}, "precision": "bf16"}}"#)).unwrap();
        }
    }

    #[test]
    fn deft_options_and_optimiser_settings_are_reachable() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let s = parse(&format!(
            r#"{{"pooling": "mean-all", "scale_init": "deft", "train_cls": false, "cross_attention_heads": 4,
                "grad_clip": 1.0, "adam_eps": 1e-6, "report_template": {:?}}}"#,
            root.join("configs/report_deft.json")
        ))
        .unwrap();
        let m = s.method(64).unwrap();
        assert_eq!(
            (m.pooling, m.scale_init, m.train_cls, m.cross_attention_heads),
            (Pooling::MeanAll, ScaleInit::Deft, false, 4)
        );
        assert_eq!((s.grad_clip, s.adam_eps), (Some(1.0), 1e-6));
        // The run is scored against the template's own class prompt.
        assert_eq!(s.template().unwrap().prompt(crate::data::label::Label::AD), "A photo of AD:");
        assert!(RunSettings { cross_attention_heads: 5, ..s.clone() }.method(64).is_err());
        for bad in [r#"{"grad_clip": 0}"#, r#"{"adam_eps": -1}"#, r#"{"class_prompt_weight": -0.5}"#] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_shipped_config_is_the_default() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/finetune.json");
        assert_eq!(RunSettings::from_file(&path).unwrap(), RunSettings::default());
    }
}
