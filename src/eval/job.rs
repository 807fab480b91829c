//! `adfit eval` as a library job: choose the scans, score them with the zero-shot backbone, a
//! fine-tuned run or the metadata oracle, and report scan- and subject-level metrics.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use burn::data::dataset::Dataset;
use burn::tensor::activation::softmax;
use burn::tensor::backend::AutodiffBackend;
use serde::{Deserialize, Serialize};

use crate::backend::{DeviceSpec, Job};
use crate::data::dataset::CohortDataset;
use crate::data::label::Label;
use crate::data::report::ReportTemplate;
use crate::data::split::{read_fold, Part};
use crate::error::{Error, Result};
use crate::eval::metrics::Scored;
use crate::eval::predict::{predict, predict_batches, score_levels, Predictions};
use crate::eval::probe;
use crate::model::backbones::Backbone;
use crate::model::precision::{cast_frozen, Precision};
use crate::model::tokenizer::tokenize;
use crate::model::vit3d::PosEmbedPolicy;
use crate::run_folder::{self, RunConfig};

/// What is evaluated.
#[derive(Debug, Clone)]
pub enum EvalModel {
    /// The bare backbone as its CLIP head matches images and texts (projections, L2,
    /// logit_scale), with `pos_embed` deciding how its position embedding meets the cache grid.
    ZeroShot { backbone: PathBuf, pos_embed: PosEmbedPolicy, precision: Precision },
    /// The best checkpoint of a `finetune` run folder on its backbone.
    FineTuned { backbone: PathBuf, run: PathBuf },
    /// Logistic and ridge regression on the table's volumes and age, fitted on the run's
    /// training scans.
    Oracle { run: PathBuf },
    /// Logistic and ridge regression on the backbone's frozen image features, fitted on the
    /// run's training scans (`eval::probe`).
    LinearProbe { backbone: PathBuf, run: PathBuf, pos_embed: PosEmbedPolicy, precision: Precision },
}

impl EvalModel {
    pub fn name(&self) -> &'static str {
        match self {
            EvalModel::ZeroShot { .. } => "zero-shot",
            EvalModel::FineTuned { .. } => "fine-tuned",
            EvalModel::Oracle { .. } => "oracle",
            EvalModel::LinearProbe { .. } => "linear-probe",
        }
    }
}

/// One evaluation: a model on the labelled scans of an index (optionally one part of one fold).
#[derive(Debug, Clone)]
pub struct EvalJob {
    pub model: EvalModel,
    pub index: PathBuf,
    /// Only the scans of `part` in this fold of this split; all labelled scans when `None`.
    pub split: Option<(PathBuf, usize)>,
    pub part: Part,
    /// The classes to choose among (at least two).
    pub classes: Vec<Label>,
    /// Scans per forward pass; `None`: the run's own batch size (so `eval` reproduces the test
    /// scores `finetune` wrote bit for bit), 8 for a bare backbone.
    pub batch_size: Option<usize>,
}

/// `metrics.json` of an evaluation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalMetrics {
    pub classes: Vec<Label>,
    pub model: String,
    pub scan: Scored,
    pub subject_baseline: Scored,
}

impl EvalMetrics {
    pub const FILE: &'static str = "metrics.json";

    pub fn read(out: &Path) -> Result<Self> {
        crate::util::read_json(&out.join(Self::FILE))
    }
}

/// An evaluation's results: its metrics and every scan's prediction.
#[derive(Debug, Clone)]
pub struct EvalReport {
    pub metrics: EvalMetrics,
    pub predictions: Predictions,
}

impl EvalReport {
    /// `metrics.json`, `predictions.csv` and `confusion.png` in `out` (created).
    pub fn write(&self, out: &Path) -> Result<()> {
        std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
        let m = &self.metrics;
        self.predictions.write_csv(&out.join("predictions.csv"), &m.classes)?;
        let names: Vec<&str> = m.classes.iter().map(|l| l.as_str()).collect();
        let c = &m.scan.classification;
        let title = format!("{}: {} scans (balanced accuracy {:.3})", m.model, c.n, c.balanced_accuracy);
        crate::plot::confusion(&out.join("confusion.png"), &title, &names, &c.confusion)?;
        // The metrics last: their presence marks a finished evaluation.
        crate::util::write_json(&out.join(EvalMetrics::FILE), m)
    }
}

/// Run `job` on `device` (the oracle needs none).
pub fn evaluate(job: EvalJob, device: DeviceSpec) -> Result<EvalReport> {
    if job.classes.len() < 2 {
        return Err(Error::config("classes", "needs at least two classes"));
    }
    let ds = select_scans(&job)?;
    let predictions = match &job.model {
        EvalModel::Oracle { run } => oracle(run, &ds, &job.classes)?,
        _ => crate::backend::dispatch(device, ImageModel { job: &job, ds: &ds })?,
    };
    let (scan, subject_baseline) = score_levels(&predictions, &ds, &job.classes);
    let metrics = EvalMetrics { classes: job.classes.clone(), model: job.model.name().into(), scan, subject_baseline };
    Ok(EvalReport { metrics, predictions })
}

/// The labelled scans of `job.classes` in the chosen part of the index.
fn select_scans(job: &EvalJob) -> Result<CohortDataset> {
    let parts: Option<HashMap<String, Part>> = match &job.split {
        Some((path, fold)) => Some(read_fold(path, *fold)?),
        None => None,
    };
    let ds = CohortDataset::open(&job.index)?
        .filter(|r| parts.as_ref().is_none_or(|p| p.get(&r.subject) == Some(&job.part)))
        .filter(|r| r.label.as_deref().and_then(Label::parse).is_some_and(|l| job.classes.contains(&l)));
    if ds.is_empty() {
        let names: Vec<&str> = job.classes.iter().map(|c| c.as_str()).collect();
        return Err(Error::table(&job.index, format!("no labelled scans of classes {names:?} to evaluate")));
    }
    Ok(ds)
}

/// The zero-shot backbone or a fine-tuned run, on the chosen backend.
struct ImageModel<'a> {
    job: &'a EvalJob,
    ds: &'a CohortDataset,
}

impl Job for ImageModel<'_> {
    type Output = Predictions;

    fn run<AD: AutodiffBackend>(self, device: AD::Device) -> Result<Predictions> {
        type B<AD> = <AD as AutodiffBackend>::InnerBackend;
        let (job, ds) = (self.job, self.ds);
        let img_size = ds.grid()?;
        match &job.model {
            EvalModel::ZeroShot { backbone, pos_embed, precision } => {
                let mut b = Backbone::<B<AD>>::load(backbone, Some(img_size), *pos_embed, &device)?;
                b.model = cast_frozen(b.model, *precision)?;
                // A bare backbone is matched against the paper's prompts.
                let template = ReportTemplate::default();
                let prompts: Vec<String> = job.classes.iter().map(|&c| template.prompt(c)).collect();
                let (ids, mask) = tokenize::<B<AD>>(&b.tokenizer, &prompts, &device)?;
                let w = b.model.encode_text(ids, mask);
                predict_batches(ds, job.classes.len(), job.batch_size.unwrap_or(8), &device, |volumes| {
                    (softmax(b.model.logits(b.model.encode_image(volumes), w.clone()), 1), None)
                })
            }
            EvalModel::FineTuned { backbone, run } => {
                let f = run_folder::load::<B<AD>>(run, backbone, img_size, &device)?;
                let batch = job.batch_size.unwrap_or(f.config.settings.batch_size);
                let template = f.config.settings.template()?;
                predict(&f.model, ds, &f.tokenizer, &template, &job.classes, f.scale, batch, &device)
            }
            EvalModel::LinearProbe { backbone, run, pos_embed, precision } => {
                let mut b = Backbone::<B<AD>>::load(backbone, Some(img_size), *pos_embed, &device)?;
                b.model = cast_frozen(b.model, *precision)?;
                let train = training_scans(run)?;
                let batch = job.batch_size.unwrap_or(8);
                let train_x = probe::frozen_features(&b.model, &train, batch, &device)?;
                let test_x = probe::frozen_features(&b.model, ds, batch, &device)?;
                let (p, l2) = probe::linear_probe(train.rows(), &train_x, ds.rows(), &test_x, &job.classes)?;
                tracing::info!("linear probe: penalty {l2} chosen by cross-validation on the training scans");
                Ok(p)
            }
            EvalModel::Oracle { .. } => unreachable!("the oracle runs without a backend"),
        }
    }
}

/// The training scans of `run` (its train.csv, looked up in the index it was trained from).
fn training_scans(run: &Path) -> Result<CohortDataset> {
    let cfg = RunConfig::read(run)?;
    let wanted = run_folder::read_train_list(run)?;
    let index = CohortDataset::open(&cfg.index)?;
    let n = index.rows().iter().filter(|r| wanted.contains(&r.scan)).count();
    if n != wanted.len() {
        return Err(Error::table(
            run.join(run_folder::TRAIN_LIST),
            format!("lists {} training scans but only {n} are in {}", wanted.len(), cfg.index.display()),
        ));
    }
    Ok(index.filter(|r| wanted.contains(&r.scan)))
}

/// The metadata oracle fitted on the training scans of `run` (its train.csv, looked up in the
/// index the run was trained from).
fn oracle(run: &Path, ds: &CohortDataset, classes: &[Label]) -> Result<Predictions> {
    let train = training_scans(run)?;
    Ok(crate::eval::oracle::Oracle::fit(train.rows())?.predict(ds.rows(), classes))
}
