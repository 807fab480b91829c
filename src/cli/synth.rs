//! `adfit synth`: the embedded synthetic cohort.

use std::path::PathBuf;

use clap::{Args, ValueEnum};

use crate::data::synth::{generate, Preset, SynthConfig};

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum PresetArg {
    /// A few subjects with small volumes: seconds, for tests and CI.
    Tiny,
    /// The demo cohort: a few hundred ADNI-like scans and an OASIS-like transfer cohort.
    Default,
}

#[derive(Debug, Args)]
pub struct SynthArgs {
    /// Output folder (created). Holds adni/ (ADNIMERGE.csv, scans.csv, images/) and oasis/.
    #[arg(long)]
    pub out: PathBuf,
    /// Random seed: the same seed gives byte-identical files.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    #[arg(long, value_enum, default_value_t = PresetArg::Default)]
    pub preset: PresetArg,
    /// Also write each scan's tissue label map beside it, X_labels.nii.gz for X.nii.gz (uint8,
    /// the scan's grid and affine, nearest-neighbour, no blur or noise), and the legend
    /// labels.json (label value → structure, and the labels each volume column counts). Scan
    /// lists never list them; `adfit preprocess` carries them into the cache grid.
    #[arg(long)]
    pub labels: bool,
}

pub fn run(a: SynthArgs, _quiet: bool) -> anyhow::Result<()> {
    let preset = match a.preset {
        PresetArg::Tiny => Preset::Tiny,
        PresetArg::Default => Preset::Default,
    };
    if std::fs::read_dir(&a.out).is_ok_and(|mut d| d.next().is_some()) {
        anyhow::bail!(
            "{} is not empty: choose a new --out folder (synth never mixes its files with others)",
            a.out.display()
        );
    }
    let cfg = SynthConfig { write_labels: a.labels, ..SynthConfig::preset(preset, a.seed) };
    let t = std::time::Instant::now();
    let summary = generate(&a.out, &cfg)?;
    tracing::info!("synthetic cohort in {} ({:.1} s)", a.out.display(), t.elapsed().as_secs_f32());
    let [nc, mci, ad] = summary.adni_scans_by_label;
    println!(
        "ADNI-like: {} scans of {} subjects (NC {nc}, MCI {mci}, AD {ad}); OASIS-like: {} scans of {} subjects ({:.0} MB)",
        summary.adni_scans,
        summary.adni_subjects,
        summary.oasis_scans,
        summary.oasis_subjects,
        summary.bytes_written as f64 / 1e6
    );
    println!("  table  {}", a.out.join("adni/ADNIMERGE.csv").display());
    println!("  scans  {}", a.out.join("adni/scans.csv").display());
    println!("  table  {}", a.out.join("oasis/oasis_longitudinal.csv").display());
    println!("  scans  {}", a.out.join("oasis/scans.csv").display());
    if a.labels {
        println!("  labels {} (legend; maps beside each scan as *_labels.nii.gz)", a.out.join("labels.json").display());
    }
    Ok(())
}
