//! `adfit experiment`: one configuration over several folds and seeds (optionally the paper's
//! ablations), with the zero-shot backbone and the metadata oracle scored on the same test
//! subjects, then mean ± std tables as Markdown and CSV. Finished runs and evaluations are
//! reused, interrupted runs resumed.

use std::path::PathBuf;

use clap::Args;

use super::finetune::Overrides;
use super::DeviceArg;
use crate::experiment::{runs, Experiment, Variant};

#[derive(Debug, Args)]
pub struct ExperimentArgs {
    #[arg(long)]
    pub backbone: PathBuf,
    #[arg(long, visible_alias = "cohort")]
    pub index: PathBuf,
    #[arg(long)]
    pub split: PathBuf,
    /// Folds to run.
    #[arg(long, value_delimiter = ',', default_value = "0")]
    pub folds: Vec<usize>,
    /// Seeds to run.
    #[arg(long, value_delimiter = ',', default_value = "0,1,2")]
    pub seeds: Vec<u64>,
    /// Run k pairs the k-th fold with the k-th seed (a new test split and a new initialisation
    /// per run) instead of every fold with every seed.
    #[arg(long)]
    pub paired: bool,
    /// Variants to compare (the paper's table 3); `full` is the fine-tuned model.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "full")]
    pub variants: Vec<Variant>,
    /// Also run the full method on at most this many training scans each (by whole subjects;
    /// the paper's table 5 used 500, 1000, 1500 and 2000).
    #[arg(long, value_delimiter = ',')]
    pub train_sizes: Vec<usize>,
    /// Also score every model on this cohort index, never trained on (e.g. the OASIS-like
    /// one), over NC and AD.
    #[arg(long)]
    pub transfer: Option<PathBuf>,
    /// Output folder: runs/<variant>/fold<k>-seed<s>/ (each with oracle/ and transfer/ beside
    /// the run), runs/train-size-<n>/…, zero-shot/, results.md, results.csv.
    #[arg(long)]
    pub out: PathBuf,
    /// Also write the tables as PREFIX.md and PREFIX.csv (e.g. results/synthetic).
    #[arg(long)]
    pub tables: Option<PathBuf>,
    /// Run config for every run (JSON, as for `finetune`); the flags below override it.
    #[arg(long)]
    pub config: Option<PathBuf>,
    #[command(flatten)]
    pub overrides: Overrides,
    #[command(flatten)]
    pub device: DeviceArg,
}

pub fn run(a: ExperimentArgs, quiet: bool) -> anyhow::Result<()> {
    let experiment = Experiment {
        base: a.overrides.resolve(a.config.as_deref())?,
        runs: runs(&a.folds, &a.seeds, a.paired)?,
        backbone: a.backbone,
        index: a.index,
        split: a.split,
        variants: a.variants,
        train_sizes: a.train_sizes,
        transfer: a.transfer,
        out: a.out,
        device: a.device.device,
        quiet,
        command: std::env::args().collect::<Vec<_>>().join(" "),
    };
    let result = experiment.run()?;
    if let Some(prefix) = &a.tables {
        if let Some(parent) = prefix.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|e| crate::Error::io(parent, e))?;
        }
        crate::util::write_bytes_atomic(&prefix.with_extension("csv"), result.csv.as_bytes())?;
        crate::util::write_bytes_atomic(&prefix.with_extension("md"), result.markdown.as_bytes())?;
    }
    print!("{}", result.markdown);
    Ok(())
}
