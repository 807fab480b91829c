//! A fine-tuning run's settings: read from a JSON run config (`configs/finetune.json`), then
//! overridden field by field from the command line. The resolved settings are what a run
//! folder's `config.json` records and what `--resume` compares.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::model::cross_attention::CrossAttentionKind;
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
    pub cross_attention: CrossAttentionKind,
    pub pos_embed: PosEmbedPolicy,
    /// Element type of the frozen ViT and BERT (the trainable parts stay f32).
    pub precision: Precision,
}

impl Default for RunSettings {
    fn default() -> Self {
        RunSettings {
            epochs: 20,
            batch_size: 8,
            lr: 1e-3,
            weight_decay: 0.01,
            lambda: 0.5,
            seed: 0,
            early_stop: 10,
            augment: false,
            train_size: None,
            visual_prompts: 20,
            mmse_token: true,
            text_prompts: 30,
            report: true,
            cross_attention: CrossAttentionKind::MultiHead,
            pos_embed: PosEmbedPolicy::Reinterpret,
            precision: Precision::Fp32,
        }
    }
}

impl RunSettings {
    /// Settings from a JSON run config; unknown fields and bad values are refused by name.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
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
        Ok(())
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
    fn the_shipped_config_is_the_default() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/finetune.json");
        assert_eq!(RunSettings::from_file(&path).unwrap(), RunSettings::default());
    }
}
