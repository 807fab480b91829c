//! `adfit probe`: what a backbone's frozen image features hold before any fine-tuning: per fold,
//! a linear probe of the diagnosis and the R² of ridge regressions of the hippocampal and
//! ventricular volumes, all fitted on the fold's training subjects and scored on its test ones.

use std::path::PathBuf;

use clap::Args;

use super::DeviceArg;
use crate::eval::probe_job::ProbeJob;
use crate::model::vit3d::PosEmbedPolicy;

#[derive(Debug, Args)]
pub struct ProbeArgs {
    /// Backbone directory.
    #[arg(long)]
    pub backbone: PathBuf,
    /// Cohort index written by `adfit preprocess`.
    #[arg(long)]
    pub cohort: PathBuf,
    /// Subject-level split written by `adfit split`.
    #[arg(long)]
    pub split: PathBuf,
    #[arg(long, value_delimiter = ',', default_value = "0,1,2,3,4")]
    pub folds: Vec<usize>,
    /// Write every fold's figures here as JSON.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// How the backbone's position embedding meets the cache's grid.
    #[arg(long, value_enum, default_value_t = PosEmbedPolicy::Reinterpret)]
    pub pos_embed: PosEmbedPolicy,
    #[command(flatten)]
    pub device: DeviceArg,
}

pub fn run(a: ProbeArgs) -> anyhow::Result<()> {
    let job =
        ProbeJob { backbone: a.backbone, index: a.cohort, split: a.split, folds: a.folds, pos_embed: a.pos_embed };
    let folds = crate::backend::dispatch(a.device.device, job)?;
    println!("| fold | train scans | test scans | probe balanced accuracy | R² hippocampus | R² ventricles |");
    println!("|---|---|---|---|---|---|");
    for f in &folds {
        println!(
            "| {} | {} | {} | {:.1} | {:.3} | {:.3} |",
            f.fold,
            f.train_scans,
            f.test_scans,
            100.0 * f.balanced_accuracy,
            f.r2.hippocampus,
            f.r2.ventricles
        );
    }
    let n = folds.len().max(1) as f64;
    let mean = |g: fn(&crate::eval::probe_job::FoldProbe) -> f64| folds.iter().map(g).sum::<f64>() / n;
    println!(
        "| mean | | | {:.1} | {:.3} | {:.3} |",
        100.0 * mean(|f| f.balanced_accuracy),
        mean(|f| f.r2.hippocampus),
        mean(|f| f.r2.ventricles)
    );
    if let Some(out) = a.out {
        crate::util::write_json(&out, &folds)?;
    }
    Ok(())
}
