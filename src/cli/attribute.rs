//! `adfit attribute`: which report words drive a fine-tuned run's image–report match
//! (Integrated Gradients) and where in the volume each biomarker sentence looks (Grad-ECLIP).

use std::path::PathBuf;

use clap::Args;

use super::eval::PartArg;
use super::DeviceArg;
use crate::attribute::ig::{Baseline, IgSettings};
use crate::attribute::{attribute, AttributeJob, ScanChoice};

/// Outputs in --out: tokens.csv (scan, label, position, token, word, attribution),
/// top_words.csv (top-k words per scan and per class), completeness.csv (IG's Σ attribution
/// against s(x) − s(baseline), per scan), summary.md and attribution.json; with --labels,
/// pointing.csv and the pointing-game table in summary.md; unless --no-maps,
/// maps/<scan>/<sentence>.nii.gz (Grad-ECLIP heat map on the cache volume's grid and affine:
/// open it over the cache volume in FSLeyes or ITK-SNAP) and .png (three slices through its peak).
#[derive(Debug, Args)]
#[command(after_long_help = "Example, on the demo cohort (labels from `adfit synth --labels`):\n\n  \
    adfit attribute --backbone backbones/brain-64 --run runs/fold0 --index demo/adni/index.csv \\\n      \
    --split demo/split.csv --fold 0 --part test --labels --out runs/fold0/attribution")]
pub struct AttributeArgs {
    /// Backbone directory the run was fine-tuned on.
    #[arg(long)]
    pub backbone: PathBuf,
    /// A fine-tuned run folder (from `adfit finetune`): its best checkpoint is explained.
    #[arg(long)]
    pub run: PathBuf,
    /// Cohort index written by `adfit preprocess`; each scan's report is the text explained.
    #[arg(long, alias = "cohort")]
    pub index: PathBuf,
    /// Explain these scan ids (comma-separated).
    #[arg(long, value_delimiter = ',', conflicts_with = "split", required_unless_present = "split")]
    pub scans: Vec<String>,
    /// Explain the scans of one part of one fold of this split.
    #[arg(long, requires = "fold")]
    pub split: Option<PathBuf>,
    #[arg(long)]
    pub fold: Option<usize>,
    #[arg(long, value_enum, default_value = "test")]
    pub part: PartArg,
    /// At most this many of the chosen scans (in index order).
    #[arg(long)]
    pub limit: Option<usize>,
    /// Output folder.
    #[arg(long)]
    pub out: PathBuf,
    /// Integrated Gradients: points on the path from the baseline to the report (Gauss–Legendre
    /// quadrature, as Captum's default).
    #[arg(long, default_value_t = 50)]
    pub steps: usize,
    /// Path points per forward/backward pass: memory grows with it.
    #[arg(long, default_value_t = 10)]
    pub chunk: usize,
    /// The reference IG integrates from: zero embeddings, or the report with every word replaced
    /// by [PAD] or [MASK] ([CLS] and [SEP] kept).
    #[arg(long, value_enum, default_value_t = Baseline::Zero)]
    pub baseline: Baseline,
    /// Warn when a scan's IG completeness error is above this fraction.
    #[arg(long, default_value_t = 0.01)]
    pub tolerance: f64,
    /// Words per scan and per class in top_words.csv and summary.md.
    #[arg(long, default_value_t = 5)]
    pub top_k: usize,
    /// Score each sentence's heat map against the structure it names, with the label maps that
    /// `adfit synth --labels` wrote and `adfit preprocess` carried into the cache
    /// (energy-based pointing game and peak hit, beside a plain gradient map and a random map).
    #[arg(long)]
    pub labels: bool,
    /// Heat maps only for these biomarkers' sentences, e.g. hippocampus,ventricles (default: every
    /// sentence of the report).
    #[arg(long, value_enum, value_delimiter = ',')]
    pub sentences: Vec<crate::data::table::Biomarker>,
    /// Do not write the per-scan NIfTI and PNG heat maps (tables only).
    #[arg(long)]
    pub no_maps: bool,
    /// Seed of the random maps of the pointing game.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    #[command(flatten)]
    pub device: DeviceArg,
}

pub fn run(a: AttributeArgs, quiet: bool) -> anyhow::Result<()> {
    let scans = match (a.split, a.fold) {
        (Some(split), Some(fold)) => ScanChoice::Split { split, fold, part: a.part.into() },
        _ => ScanChoice::Ids(a.scans),
    };
    if a.steps == 0 {
        anyhow::bail!("--steps must be at least 1");
    }
    let job = AttributeJob {
        backbone: a.backbone,
        run: a.run,
        index: a.index,
        scans,
        limit: a.limit,
        out: a.out.clone(),
        ig: IgSettings { steps: a.steps, chunk: a.chunk.max(1), baseline: a.baseline },
        top_k: a.top_k,
        labels: a.labels,
        maps: !a.no_maps,
        sentences: a.sentences,
        seed: a.seed,
        completeness_tolerance: a.tolerance,
        quiet,
    };
    let report = attribute(job, a.device.device)?;
    let worst = report.scans.iter().map(|s| s.ig.completeness_error()).fold(0.0, f64::max);
    println!(
        "{} scans explained (IG completeness error at most {:.3}%) → {}",
        report.scans.len(),
        100.0 * worst,
        a.out.join("summary.md").display()
    );
    Ok(())
}
