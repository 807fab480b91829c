//! A fine-tuned run folder: the one contract between `finetune`, which writes it, and `eval`,
//! `experiment` (and attribution), which read it. Every file name and the loader of a
//! fine-tuned model live here.
//!
//! - `config.json`: [`RunConfig`], what the run was trained on and with which settings;
//!   `--resume` requires it unchanged.
//! - `best.safetensors`: the trainable tensors of the best epoch under `adfit.*` names
//!   (PyTorch layouts), with the MMSE scale in the file's header, so the weights are usable
//!   without the rest of the folder.
//! - `train.csv`: the training scans (the metadata oracle refits on them).
//! - `test_metrics.json`: [`TestMetrics`] of the best checkpoint on the fold's test subjects;
//!   `test_predictions.csv`: its prediction for every test scan.
//! - `metrics.csv`, `metrics.jsonl`, `curves.png`, `confusion.png`: for people and pandas.
//! - `speed.json`: [`TrainSpeed`], the trainable and frozen parameter counts and each epoch's
//!   training throughput (machine-dependent, so kept out of `metrics.csv`).
//! - `checkpoint-N/` and `checkpoint.json`: the resumable state (`train::checkpoint`).

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use burn::prelude::*;
use serde::{Deserialize, Serialize};

use crate::data::dataset::CohortDataset;
use crate::error::{Error, Result};
use crate::eval::metrics::Scored;
use crate::model::backbones::m3d::write_safetensors_with_metadata;
use crate::model::backbones::Backbone;
use crate::model::method::{AdClip, MethodConfig};
use crate::model::tokenizer::TextTokenizer;
use crate::model::weights::{read_safetensors, read_safetensors_metadata, WeightStore};
use crate::settings::RunSettings;
use crate::util::{read_json, write_json};

pub const CONFIG: &str = "config.json";
pub const BEST: &str = "best.safetensors";
pub const TRAIN_LIST: &str = "train.csv";
pub const TEST_METRICS: &str = "test_metrics.json";
pub const TEST_PREDICTIONS: &str = "test_predictions.csv";
pub const SPEED: &str = "speed.json";

/// Prefix of the trainable tensors' names in `best.safetensors` and checkpoints.
pub const PREFIX: &str = "adfit.";

/// Mean and standard deviation of MMSE on the training split: the head regresses
/// `(mmse − mean) / std`, and errors are reported back in MMSE points.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct MmseScale {
    pub mean: f64,
    pub std: f64,
}

impl MmseScale {
    pub fn from_dataset(ds: &CohortDataset) -> Self {
        let v: Vec<f64> = ds.rows().iter().filter_map(|r| r.mmse.map(f64::from)).collect();
        let n = v.len().max(1) as f64;
        let mean = v.iter().sum::<f64>() / n;
        let std = (v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n).sqrt();
        MmseScale { mean, std: if std > 0.0 { std } else { 1.0 } }
    }

    /// Standardised score → MMSE points.
    pub fn points(&self, z: f64) -> f64 {
        z * self.std + self.mean
    }

    /// One header entry (a single key, so the file's bytes do not depend on map order).
    fn metadata(&self) -> HashMap<String, String> {
        // serde_json writes f64 so that it reads back exactly (float_roundtrip).
        HashMap::from([("mmse_scale".into(), serde_json::to_string(self).unwrap_or_default())])
    }

    fn from_metadata(m: &HashMap<String, String>) -> Option<Self> {
        serde_json::from_str(m.get("mmse_scale")?).ok()
    }
}

/// `config.json` of a run folder.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunConfig {
    pub backbone: PathBuf,
    pub index: PathBuf,
    pub split: PathBuf,
    pub fold: usize,
    pub settings: RunSettings,
    pub train_scans: usize,
    pub method: MethodConfig,
    pub mmse_scale: MmseScale,
    /// The cache's grid (D, H, W) the run was trained at.
    pub img_size: [usize; 3],
}

impl RunConfig {
    pub fn read(run: &Path) -> Result<Self> {
        read_json(&run.join(CONFIG))
    }

    pub fn write(&self, run: &Path) -> Result<()> {
        write_json(&run.join(CONFIG), self)
    }

    /// Whether `run/config.json` holds these same settings, but for the number of epochs (what
    /// `--resume` requires: a run may be resumed to train for longer).
    pub fn matches(&self, run: &Path) -> bool {
        let Ok(mut old) = Self::read(run) else { return false };
        old.settings.epochs = self.settings.epochs;
        serde_json::to_value(&old).ok() == serde_json::to_value(self).ok()
    }
}

/// `test_metrics.json`: the best checkpoint on the fold's test subjects, scan level, and at the
/// level of each subject's baseline visit (absent in runs from before it was recorded).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TestMetrics {
    pub fold: usize,
    pub scans: usize,
    /// Written as top-level `classification` and `mmse`.
    #[serde(flatten)]
    pub scan: Scored,
    #[serde(default)]
    pub subject_baseline: Option<Scored>,
}

impl TestMetrics {
    pub fn read(run: &Path) -> Result<Self> {
        read_json(&run.join(TEST_METRICS))
    }

    pub fn write(&self, run: &Path) -> Result<()> {
        write_json(&run.join(TEST_METRICS), self)
    }
}

/// `speed.json`: what the run trains and how fast its epochs went.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainSpeed {
    pub trainable_params: usize,
    pub frozen_params: usize,
    /// Every trained epoch, a resumed run's earlier ones included.
    pub epochs: Vec<EpochSpeed>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochSpeed {
    pub epoch: u64,
    /// Wall-clock seconds of the epoch's training pass (validation excluded).
    pub seconds: f64,
    pub scans: usize,
    pub scans_per_second: f64,
}

impl TrainSpeed {
    /// The run's speed so far, or `None` for a run without it (made before it was recorded).
    pub fn read(run: &Path) -> Result<Option<Self>> {
        let path = run.join(SPEED);
        if !path.exists() {
            return Ok(None);
        }
        read_json(&path).map(Some)
    }

    pub fn write(&self, run: &Path) -> Result<()> {
        write_json(&run.join(SPEED), self)
    }

    /// The median epoch's scans per second (robust to a first epoch slowed by warm-up).
    pub fn median_scans_per_second(&self) -> Option<f64> {
        let mut v: Vec<f64> = self.epochs.iter().map(|e| e.scans_per_second).collect();
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        let n = v.len();
        Some(if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 })
    }
}

/// Whether `run` holds a finished run (its test metrics are written last).
pub fn is_finished(run: &Path) -> bool {
    run.join(TEST_METRICS).exists()
}

/// Write a model's trainable tensors (`best.safetensors` or a checkpoint's), with the MMSE scale.
pub fn write_trainable<B: Backend>(path: &Path, model: &AdClip<B>, scale: MmseScale) -> Result<()> {
    write_safetensors_with_metadata(path, &model.trainable_tensors(PREFIX), Some(scale.metadata()))
}

/// Load trainable tensors written by [`write_trainable`] into `model`, strictly; returns the
/// MMSE scale stored with them (`None` for a file without one).
pub fn read_trainable<B: Backend>(
    path: &Path,
    model: AdClip<B>,
    method: &MethodConfig,
    device: &B::Device,
) -> Result<(AdClip<B>, Option<MmseScale>)> {
    let store = WeightStore::<B>::new(path, read_safetensors(path)?, &[], device);
    let model = model.load_trainable(&store, PREFIX, method);
    store.finish()?;
    Ok((model, MmseScale::from_metadata(&read_safetensors_metadata(path)?)))
}

/// The training scans' ids (`train.csv`).
pub fn write_train_list(run: &Path, train: &CohortDataset) -> Result<()> {
    let rows =
        train.rows().iter().map(|r| vec![r.scan.clone(), r.subject.clone(), r.label.clone().unwrap_or_default()]);
    crate::util::write_csv(&run.join(TRAIN_LIST), &["scan", "subject", "label"], rows)
}

pub fn read_train_list(run: &Path) -> Result<HashSet<String>> {
    let path = run.join(TRAIN_LIST);
    let input = crate::data::csv_input::CsvInput::open(&path)?;
    let mut scans = HashSet::new();
    for record in input.reader().records() {
        let record = record.map_err(|e| Error::row(&path, input.error_line(&e), "-", e.to_string()))?;
        scans.insert(record.get(0).unwrap_or_default().to_string());
    }
    Ok(scans)
}

/// The class prompts ("A photo of NC." ...) of a run's settings, tokenised: the texts every
/// scan is scored against, and the start of LGA's text stream.
pub fn class_prompts(tok: &TextTokenizer, settings: &RunSettings) -> Result<crate::model::tokenizer::Encoded> {
    let template = settings.template()?;
    let texts: Vec<String> = crate::data::label::Label::ALL.iter().map(|&l| template.prompt(l)).collect();
    tok.encode(&texts)
}

/// A fine-tuned model ready for inference.
pub struct FineTuned<B: Backend> {
    pub model: AdClip<B>,
    pub tokenizer: TextTokenizer,
    pub config: RunConfig,
    pub scale: MmseScale,
}

/// The best checkpoint of `run` on the backbone in `backbone`, for volumes of `img_size`.
pub fn load<B: Backend>(run: &Path, backbone: &Path, img_size: [usize; 3], device: &B::Device) -> Result<FineTuned<B>> {
    let config = RunConfig::read(run)?;
    let b = Backbone::<B>::load(backbone, Some(img_size), config.settings.pos_embed, device)?;
    let frozen = crate::model::precision::cast_frozen(b.model, config.settings.precision)?;
    let guide = class_prompts(&b.tokenizer, &config.settings)?;
    let model = AdClip::new(frozen, &config.method, device).with_guide(guide);
    let (model, scale) = read_trainable(&run.join(BEST), model, &config.method, device)?;
    // LoRA updates fold into the frozen weights for inference (same outputs, fewer matmuls).
    let model = model.merge_lora();
    let scale = scale.unwrap_or(config.mmse_scale);
    Ok(FineTuned { model, tokenizer: b.tokenizer, config, scale })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mmse_scale_travels_in_the_header_exactly() {
        let s = MmseScale { mean: 27.123456789012345, std: 2.0 / 3.0 };
        assert_eq!(MmseScale::from_metadata(&s.metadata()), Some(s));
        assert_eq!(MmseScale::from_metadata(&HashMap::new()), None);
    }
}
