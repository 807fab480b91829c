//! `adfit eval`: classify scans by matching them against "A photo of {class}." with a bare
//! backbone (the zero-shot baseline) or a fine-tuned run, or with a linear probe of the
//! backbone's frozen features, or the metadata oracle, and report
//! every metric at scan level and at subject level (each subject's baseline visit).

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;

use super::DeviceArg;
use crate::data::label::Label;
use crate::data::split::Part;
use crate::eval::job::{evaluate, EvalJob, EvalModel};
use crate::model::precision::Precision;
use crate::model::vit3d::PosEmbedPolicy;

#[derive(Debug, Args)]
pub struct EvalArgs {
    /// Backbone directory. Alone, it is evaluated zero-shot with its own projections.
    #[arg(long, required_unless_present = "oracle")]
    pub backbone: Option<PathBuf>,
    /// A fine-tuned run folder (from `adfit finetune`): its best checkpoint is evaluated.
    #[arg(long)]
    pub run: Option<PathBuf>,
    /// Evaluate the metadata oracle instead of an image model: logistic regression (diagnosis)
    /// and ridge regression (MMSE) on the six volume columns plus age, fitted on the training
    /// scans of --run (its train.csv).
    #[arg(long, requires = "run", conflicts_with = "backbone")]
    pub oracle: bool,
    /// Evaluate a linear probe of --backbone's frozen image features instead: logistic
    /// regression (diagnosis; penalty by subject-grouped cross-validation) and ridge (MMSE) on
    /// its [CLS] state, fitted on the training scans of --run. What the features give without the
    /// method.
    #[arg(long, requires_all = ["run", "backbone"], conflicts_with = "oracle")]
    pub linear_probe: bool,
    /// Cohort index written by `adfit preprocess` (any cohort, e.g. the OASIS-like one). The
    /// backbone reads the cache at its grid; a fine-tuned run uses its own --pos-embed.
    #[arg(long)]
    pub index: PathBuf,
    /// Evaluate only one part of one fold of this split (default: every labelled scan).
    #[arg(long, requires = "fold")]
    pub split: Option<PathBuf>,
    #[arg(long)]
    pub fold: Option<usize>,
    #[arg(long, value_enum, default_value = "test")]
    pub part: PartArg,
    /// The classes to choose among, e.g. NC,AD for a two-class cohort.
    #[arg(long, value_delimiter = ',', default_value = "NC,MCI,AD")]
    pub classes: Vec<String>,
    /// Output folder: metrics.json, predictions.csv, confusion.png (scan level).
    #[arg(long)]
    pub out: PathBuf,
    /// Scans per forward pass (default: the run's own batch size, so `eval --run` reproduces the
    /// test scores `finetune` wrote bit for bit; 8 for a bare backbone).
    #[arg(long)]
    pub batch_size: Option<usize>,
    /// Zero-shot and linear probe: how the backbone's position embedding meets the cache's grid.
    #[arg(long, value_enum, default_value_t = PosEmbedPolicy::Reinterpret)]
    pub pos_embed: PosEmbedPolicy,
    /// Zero-shot and linear probe: element type of the frozen towers (a fine-tuned run uses its own).
    #[arg(long, value_enum, default_value_t = Precision::Fp32)]
    pub precision: Precision,
    #[command(flatten)]
    pub device: DeviceArg,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum PartArg {
    Train,
    Val,
    Test,
}

impl From<PartArg> for Part {
    fn from(p: PartArg) -> Part {
        match p {
            PartArg::Train => Part::Train,
            PartArg::Val => Part::Val,
            PartArg::Test => Part::Test,
        }
    }
}

pub fn run(a: EvalArgs) -> anyhow::Result<()> {
    let classes: Vec<Label> = a
        .classes
        .iter()
        .map(|c| Label::parse(c).with_context(|| format!("--classes: {c:?} is not NC, MCI or AD")))
        .collect::<anyhow::Result<_>>()?;
    let model = match (a.run, a.backbone) {
        (Some(run), _) if a.oracle => EvalModel::Oracle { run },
        (Some(run), Some(backbone)) if a.linear_probe => {
            EvalModel::LinearProbe { backbone, run, pos_embed: a.pos_embed, precision: a.precision }
        }
        (Some(run), Some(backbone)) => EvalModel::FineTuned { backbone, run },
        (None, Some(backbone)) => EvalModel::ZeroShot { backbone, pos_embed: a.pos_embed, precision: a.precision },
        (_, None) => anyhow::bail!("--backbone is required unless --oracle is given"),
    };
    let job = EvalJob {
        model,
        index: a.index,
        split: a.split.zip(a.fold),
        part: a.part.into(),
        classes,
        batch_size: a.batch_size,
    };
    let report = evaluate(job, a.device.device)?;
    report.write(&a.out)?;
    let (scan, subject) = (&report.metrics.scan.classification, &report.metrics.subject_baseline.classification);
    println!(
        "{} scans: balanced accuracy {:.3}, accuracy {:.3}, AUC {}; baseline visits of {} subjects: balanced accuracy {:.3} → {}",
        scan.n,
        scan.balanced_accuracy,
        scan.accuracy,
        scan.auc.map_or("-".into(), |v| format!("{v:.3}")),
        subject.n,
        subject.balanced_accuracy,
        a.out.display()
    );
    Ok(())
}
