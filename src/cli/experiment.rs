//! `adfit experiment`: one configuration over several folds or seeds (and optionally the
//! paper's ablations), then mean ± std tables as Markdown and CSV. A run whose
//! `test_metrics.json` exists is reused, not recomputed.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::{Args, ValueEnum};

use super::finetune::{self, FinetuneArgs};
use crate::model::cross_attention::CrossAttentionKind;
use crate::model::vit3d::PosEmbedPolicy;

/// The variants of the paper's table 3, by what they switch off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Variant {
    /// Everything on.
    Full,
    NoVisualPrompts,
    NoMmse,
    NoTextPrompts,
    NoReport,
    NoCrossAttention,
}

impl Variant {
    fn name(self) -> &'static str {
        match self {
            Variant::Full => "full",
            Variant::NoVisualPrompts => "no-visual-prompts",
            Variant::NoMmse => "no-mmse",
            Variant::NoTextPrompts => "no-text-prompts",
            Variant::NoReport => "no-report",
            Variant::NoCrossAttention => "no-cross-attention",
        }
    }
}

#[derive(Debug, Args)]
pub struct ExperimentArgs {
    #[arg(long)]
    pub backbone: PathBuf,
    #[arg(long)]
    pub index: PathBuf,
    #[arg(long)]
    pub split: PathBuf,
    /// Folds to run (each with every seed).
    #[arg(long, value_delimiter = ',', default_value = "0")]
    pub folds: Vec<usize>,
    /// Seeds to run (each on every fold).
    #[arg(long, value_delimiter = ',', default_value = "0,1,2")]
    pub seeds: Vec<u64>,
    /// Variants to compare (the paper's ablations).
    #[arg(long, value_enum, value_delimiter = ',', default_value = "full")]
    pub variants: Vec<Variant>,
    /// Output folder: runs/<variant>/fold<k>-seed<s>/, results.md, results.csv.
    #[arg(long)]
    pub out: PathBuf,
    #[arg(long, default_value_t = 20)]
    pub epochs: u64,
    #[arg(long, default_value_t = 8)]
    pub batch_size: usize,
    #[arg(long, default_value_t = 1e-3)]
    pub lr: f64,
    #[arg(long)]
    pub augment: bool,
    #[arg(long)]
    pub train_size: Option<usize>,
}

/// One finished run's test metrics.
struct Outcome {
    variant: Variant,
    metrics: Vec<(&'static str, f64)>,
}

fn read_outcome(path: &Path, variant: Variant) -> anyhow::Result<Outcome> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let v: serde_json::Value = serde_json::from_str(&text)?;
    let c = &v["classification"];
    let mut metrics = vec![
        ("balanced_accuracy", c["balanced_accuracy"].as_f64()),
        ("accuracy", c["accuracy"].as_f64()),
        ("auc", c["auc"].as_f64()),
        ("mmse_mae", v["mmse"]["mae"].as_f64()),
    ];
    metrics.retain(|(_, x)| x.is_some());
    Ok(Outcome { variant, metrics: metrics.into_iter().map(|(k, x)| (k, x.unwrap_or(f64::NAN))).collect() })
}

/// Mean and sample standard deviation (n − 1), as papers report over runs.
pub fn mean_std(v: &[f64]) -> (f64, f64) {
    let n = v.len() as f64;
    let mean = v.iter().sum::<f64>() / n.max(1.0);
    let var = if v.len() > 1 { v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0) } else { 0.0 };
    (mean, var.sqrt())
}

pub fn run(a: ExperimentArgs, quiet: bool) -> anyhow::Result<()> {
    let mut outcomes = Vec::new();
    for &variant in &a.variants {
        for &fold in &a.folds {
            for &seed in &a.seeds {
                let dir = a.out.join("runs").join(variant.name()).join(format!("fold{fold}-seed{seed}"));
                let done = dir.join("test_metrics.json");
                if done.exists() {
                    tracing::info!("reusing {}", dir.display());
                } else {
                    let resume = crate::train::checkpoint::latest(&dir)?.is_some();
                    finetune::run(
                        FinetuneArgs {
                            backbone: a.backbone.clone(),
                            index: a.index.clone(),
                            split: a.split.clone(),
                            fold,
                            out: dir.clone(),
                            epochs: a.epochs,
                            batch_size: a.batch_size,
                            lr: a.lr,
                            weight_decay: 0.01,
                            lambda: 0.5,
                            seed,
                            no_visual_prompts: variant == Variant::NoVisualPrompts,
                            no_mmse: variant == Variant::NoMmse,
                            no_text_prompts: variant == Variant::NoTextPrompts,
                            no_report: variant == Variant::NoReport,
                            cross_attention: if variant == Variant::NoCrossAttention {
                                CrossAttentionKind::Off
                            } else {
                                CrossAttentionKind::MultiHead
                            },
                            pos_embed: PosEmbedPolicy::Reinterpret,
                            augment: a.augment,
                            train_size: a.train_size,
                            resume,
                            early_stop: 10,
                        },
                        quiet,
                    )?;
                }
                outcomes.push(read_outcome(&done, variant)?);
            }
        }
    }
    write_tables(&a.out, &a.variants, &outcomes)
}

fn write_tables(out: &Path, variants: &[Variant], outcomes: &[Outcome]) -> anyhow::Result<()> {
    let metrics = ["balanced_accuracy", "accuracy", "auc", "mmse_mae"];
    let mut csv = String::from("model,metric,mean,std,n_runs\n");
    let mut md =
        String::from("| variant | n | balanced accuracy | accuracy | AUC | MMSE MAE |\n|---|---|---|---|---|---|\n");
    for &v in variants {
        let runs: Vec<&Outcome> = outcomes.iter().filter(|o| o.variant == v).collect();
        let mut cells = Vec::new();
        for m in metrics {
            let values: Vec<f64> = runs
                .iter()
                .filter_map(|o| o.metrics.iter().find(|(k, _)| *k == m).map(|(_, x)| *x))
                .filter(|x| x.is_finite())
                .collect();
            if values.is_empty() {
                cells.push("-".to_string());
                continue;
            }
            let (mean, std) = mean_std(&values);
            csv.push_str(&format!("{},{m},{mean:.6},{std:.6},{}\n", v.name(), values.len()));
            cells.push(if m == "mmse_mae" {
                format!("{mean:.2} ± {std:.2}")
            } else {
                format!("{:.1} ± {:.1}", 100.0 * mean, 100.0 * std)
            });
        }
        md.push_str(&format!("| {} | {} | {} |\n", v.name(), runs.len(), cells.join(" | ")));
    }
    md.push_str("\nMean ± sample standard deviation over runs (folds × seeds); accuracies in %, MMSE MAE in points.\n");
    crate::util::write_bytes_atomic(&out.join("results.csv"), csv.as_bytes())?;
    crate::util::write_bytes_atomic(&out.join("results.md"), md.as_bytes())?;
    print!("{md}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sample_standard_deviation() {
        let (m, s) = mean_std(&[0.7, 0.8, 0.9]);
        assert!((m - 0.8).abs() < 1e-12 && (s - 0.1).abs() < 1e-12);
        assert_eq!(mean_std(&[0.5]), (0.5, 0.0));
    }
}
