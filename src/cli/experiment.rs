//! `adfit experiment`: one configuration over several folds and seeds (optionally the paper's
//! ablations), with the zero-shot backbone and the metadata oracle scored on the same test
//! subjects, then mean ± std tables as Markdown and CSV. Finished runs and evaluations are
//! reused, interrupted runs resumed.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::{Args, ValueEnum};

use super::eval::{self, EvalArgs, PartArg};
use super::finetune::{self, Overrides, RunPaths};
use crate::model::cross_attention::CrossAttentionKind;
use crate::train::settings::RunSettings;

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
    /// The name `--variants` takes, also the folder and table row of its runs.
    fn name(self) -> String {
        self.to_possible_value().map(|v| v.get_name().to_string()).unwrap_or_default()
    }

    /// `s` with this variant's component switched off, as `finetune`'s ablation flag does it.
    fn apply(self, s: RunSettings) -> RunSettings {
        let mut off = Overrides::default();
        match self {
            Variant::Full => {}
            Variant::NoVisualPrompts => off.no_visual_prompts = true,
            Variant::NoMmse => off.no_mmse = true,
            Variant::NoTextPrompts => off.no_text_prompts = true,
            Variant::NoReport => off.no_report = true,
            Variant::NoCrossAttention => off.cross_attention = Some(CrossAttentionKind::Off),
        }
        off.apply(s)
    }
}

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
}

/// One scored model on one run.
struct Outcome {
    model: String,
    metrics: Vec<(&'static str, f64)>,
}

const METRICS: [&str; 4] = ["balanced_accuracy", "accuracy", "auc", "mmse_mae"];

/// Scan-level metrics from `finetune`'s test_metrics.json or `eval`'s metrics.json.
fn read_outcome(path: &Path, model: &str) -> anyhow::Result<Outcome> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let v: serde_json::Value = serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    let v = if v.get("scan").is_some() { &v["scan"] } else { &v };
    let c = &v["classification"];
    let values =
        [c["balanced_accuracy"].as_f64(), c["accuracy"].as_f64(), c["auc"].as_f64(), v["mmse"]["mae"].as_f64()];
    let metrics = METRICS.iter().zip(values).filter_map(|(k, x)| x.map(|x| (*k, x))).collect();
    Ok(Outcome { model: model.to_string(), metrics })
}

/// Mean and sample standard deviation (n − 1), as papers report over runs.
pub fn mean_std(v: &[f64]) -> (f64, f64) {
    let n = v.len() as f64;
    let mean = v.iter().sum::<f64>() / n.max(1.0);
    let var = if v.len() > 1 { v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0) } else { 0.0 };
    (mean, var.sqrt())
}

/// `eval` into `out` unless its metrics.json exists; returns that file.
fn evaluate(args: EvalArgs) -> anyhow::Result<PathBuf> {
    let done = args.out.join("metrics.json");
    if !done.exists() {
        eval::run(args)?;
    }
    Ok(done)
}

/// `finetune` one fold into `dir` unless its test_metrics.json exists (an interrupted run is
/// resumed); returns that file.
fn finetune_once(
    a: &ExperimentArgs,
    fold: usize,
    dir: &Path,
    settings: &RunSettings,
    quiet: bool,
) -> anyhow::Result<PathBuf> {
    let done = dir.join("test_metrics.json");
    if done.exists() {
        tracing::info!("reusing {}", dir.display());
        return Ok(done);
    }
    let resume = crate::train::checkpoint::latest(dir)?.is_some();
    let paths = RunPaths {
        backbone: a.backbone.clone(),
        index: a.index.clone(),
        split: a.split.clone(),
        fold,
        out: dir.to_path_buf(),
    };
    finetune::run_fold(&paths, settings, resume, quiet)?;
    Ok(done)
}

fn eval_args(index: &Path, out: PathBuf) -> EvalArgs {
    EvalArgs {
        backbone: None,
        run: None,
        oracle: false,
        index: index.to_path_buf(),
        split: None,
        fold: None,
        part: PartArg::Test,
        classes: vec!["NC".into(), "MCI".into(), "AD".into()],
        out,
        batch_size: None,
    }
}

pub fn run(a: ExperimentArgs, quiet: bool) -> anyhow::Result<()> {
    let base = a.overrides.resolve(a.config.as_deref())?;
    let pairs: Vec<(usize, u64)> = if a.paired {
        if a.folds.len() != a.seeds.len() {
            anyhow::bail!("--paired needs as many --folds ({}) as --seeds ({})", a.folds.len(), a.seeds.len());
        }
        a.folds.iter().copied().zip(a.seeds.iter().copied()).collect()
    } else {
        a.folds.iter().flat_map(|&f| a.seeds.iter().map(move |&s| (f, s))).collect()
    };
    let two_class = |e: EvalArgs| EvalArgs { classes: vec!["NC".into(), "AD".into()], ..e };
    let mut outcomes = Vec::new();
    for &variant in &a.variants {
        for &(fold, seed) in &pairs {
            let dir = a.out.join("runs").join(variant.name()).join(format!("fold{fold}-seed{seed}"));
            let settings = RunSettings { seed, ..variant.apply(base.clone()) };
            let done = finetune_once(&a, fold, &dir, &settings, quiet)?;
            outcomes.push(read_outcome(&done, &format!("ablation/{}", variant.name()))?);
            if variant != Variant::Full {
                continue;
            }
            outcomes.push(read_outcome(&done, "fine-tuned")?);
            // The zero-shot backbone and the oracle on the same test subjects.
            let on_test = |e: EvalArgs| EvalArgs { split: Some(a.split.clone()), fold: Some(fold), ..e };
            let zs = on_test(eval_args(&a.index, a.out.join("zero-shot").join(format!("fold{fold}"))));
            outcomes
                .push(read_outcome(&evaluate(EvalArgs { backbone: Some(a.backbone.clone()), ..zs })?, "zero-shot")?);
            let oracle = on_test(eval_args(&a.index, dir.join("oracle")));
            let oracle = EvalArgs { run: Some(dir.clone()), oracle: true, ..oracle };
            outcomes.push(read_outcome(&evaluate(oracle)?, "oracle")?);
            if let Some(t) = &a.transfer {
                let zs = two_class(eval_args(t, a.out.join("zero-shot").join("transfer")));
                let zs = EvalArgs { backbone: Some(a.backbone.clone()), ..zs };
                outcomes.push(read_outcome(&evaluate(zs)?, "zero-shot/transfer")?);
                let ft = two_class(eval_args(t, dir.join("transfer")));
                let ft = EvalArgs { backbone: Some(a.backbone.clone()), run: Some(dir.clone()), ..ft };
                outcomes.push(read_outcome(&evaluate(ft)?, "fine-tuned/transfer")?);
                let or = two_class(eval_args(t, dir.join("oracle-transfer")));
                let or = EvalArgs { run: Some(dir.clone()), oracle: true, ..or };
                outcomes.push(read_outcome(&evaluate(or)?, "oracle/transfer")?);
            }
        }
    }
    for &n in &a.train_sizes {
        for &(fold, seed) in &pairs {
            let dir = a.out.join("runs").join(format!("train-size-{n}")).join(format!("fold{fold}-seed{seed}"));
            let settings = RunSettings { seed, train_size: Some(n), ..base.clone() };
            let done = finetune_once(&a, fold, &dir, &settings, quiet)?;
            outcomes.push(read_outcome(&done, &format!("train-size/{n}"))?);
        }
    }
    let (md, csv) = tables(&a, &pairs, &outcomes);
    for prefix in std::iter::once(a.out.join("results")).chain(a.tables.clone()) {
        if let Some(parent) = prefix.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|e| crate::Error::io(parent, e))?;
        }
        crate::util::write_bytes_atomic(&prefix.with_extension("csv"), csv.as_bytes())?;
        crate::util::write_bytes_atomic(&prefix.with_extension("md"), md.as_bytes())?;
    }
    print!("{md}");
    Ok(())
}

/// One Markdown row and the CSV lines of `model` over its runs.
fn summarise(label: &str, model: &str, outcomes: &[Outcome], csv: &mut String) -> Option<String> {
    let runs: Vec<&Outcome> = outcomes.iter().filter(|o| o.model == model).collect();
    if runs.is_empty() {
        return None;
    }
    let mut cells = Vec::new();
    for m in METRICS {
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
        csv.push_str(&format!("{model},{m},{mean:.6},{std:.6},{}\n", values.len()));
        cells.push(if m == "mmse_mae" {
            format!("{mean:.2} ± {std:.2}")
        } else {
            format!("{:.1} ± {:.1}", 100.0 * mean, 100.0 * std)
        });
    }
    Some(format!("| {label} | {} | {} |\n", runs.len(), cells.join(" | ")))
}

fn tables(a: &ExperimentArgs, pairs: &[(usize, u64)], outcomes: &[Outcome]) -> (String, String) {
    let header = "| n | balanced accuracy | accuracy | AUC | MMSE MAE |\n|---|---|---|---|---|---|\n";
    let mut csv = String::from("model,metric,mean,std,n_runs\n");
    let mut md = format!(
        "# adfit experiment\n\nCommand: `{}`\n\nBackbone `{}`, cohort `{}`, split `{}`; runs (fold, seed): {:?}.\n\n",
        std::env::args().collect::<Vec<_>>().join(" "),
        a.backbone.display(),
        a.index.display(),
        a.split.display(),
        pairs
    );
    if a.variants.contains(&Variant::Full) {
        md.push_str(&format!("## Models on the test subjects (scan level)\n\n| model {header}"));
        for m in ["zero-shot", "fine-tuned", "oracle"] {
            md.extend(summarise(m, m, outcomes, &mut csv));
        }
        if let Some(t) = &a.transfer {
            md.push_str(&format!(
                "\n## Transfer to `{}` (NC vs AD, never trained on)\n\n| model {header}",
                t.display()
            ));
            for m in ["zero-shot", "fine-tuned", "oracle"] {
                md.extend(summarise(m, &format!("{m}/transfer"), outcomes, &mut csv));
            }
        }
    }
    if a.variants.len() > 1 || !a.variants.contains(&Variant::Full) {
        md.push_str(&format!("\n## Ablations (the paper's table 3)\n\n| variant {header}"));
        for v in &a.variants {
            md.extend(summarise(&v.name(), &format!("ablation/{}", v.name()), outcomes, &mut csv));
        }
    }
    if !a.train_sizes.is_empty() {
        md.push_str(&format!("\n## Training-set size (the paper's table 5)\n\n| training scans {header}"));
        for n in &a.train_sizes {
            md.extend(summarise(&format!("≤ {n}"), &format!("train-size/{n}"), outcomes, &mut csv));
        }
    }
    md.push_str(
        "\nMean ± sample standard deviation over runs; accuracies and AUC in %, MMSE MAE in points. \
         zero-shot: the bare backbone against \"A photo of {class}.\"; oracle: logistic and ridge \
         regression on the table's six volumes plus age, fitted on each run's training scans.\n",
    );
    (md, csv)
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

    #[test]
    fn each_variant_switches_off_its_component() {
        let s = RunSettings::default();
        assert_eq!(Variant::Full.apply(s.clone()), s);
        assert_eq!(Variant::NoVisualPrompts.apply(s.clone()).visual_prompts, 0);
        assert!(!Variant::NoMmse.apply(s.clone()).mmse_token);
        assert_eq!(Variant::NoTextPrompts.apply(s.clone()).text_prompts, 0);
        assert!(!Variant::NoReport.apply(s.clone()).report);
        assert_eq!(Variant::NoCrossAttention.apply(s).cross_attention, CrossAttentionKind::Off);
    }
}
