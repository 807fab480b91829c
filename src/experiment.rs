//! An experiment: one configuration over several folds and seeds (optionally the paper's
//! ablations and training-set sizes), with the zero-shot backbone and the metadata oracle scored
//! on the same test subjects, summarised as mean ± std tables (Markdown and CSV). Finished runs
//! and evaluations are reused, interrupted runs resumed.

use std::path::{Path, PathBuf};

use clap::ValueEnum;

use crate::backend::DeviceSpec;
use crate::data::label::Label;
use crate::data::split::Part;
use crate::error::{Error, Result};
use crate::eval::job::{evaluate, EvalJob, EvalMetrics, EvalModel};
use crate::eval::metrics::{ClassMetrics, RegressionMetrics};
use crate::model::cross_attention::CrossAttentionKind;
use crate::run_folder::{self, TestMetrics};
use crate::settings::RunSettings;
use crate::train::finetune::{FinetuneJob, RunPaths};

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
    pub fn name(self) -> String {
        self.to_possible_value().map(|v| v.get_name().to_string()).unwrap_or_default()
    }

    /// `s` with this variant's component switched off.
    pub fn apply(self, mut s: RunSettings) -> RunSettings {
        match self {
            Variant::Full => {}
            Variant::NoVisualPrompts => s.visual_prompts = 0,
            Variant::NoMmse => s.mmse_token = false,
            Variant::NoTextPrompts => s.text_prompts = 0,
            Variant::NoReport => s.report = false,
            Variant::NoCrossAttention => s.cross_attention = CrossAttentionKind::Off,
        }
        s
    }
}

/// What to run.
#[derive(Debug, Clone)]
pub struct Experiment {
    pub backbone: PathBuf,
    pub index: PathBuf,
    pub split: PathBuf,
    /// The (fold, seed) of each run.
    pub runs: Vec<(usize, u64)>,
    pub variants: Vec<Variant>,
    /// Also the full method on at most this many training scans each.
    pub train_sizes: Vec<usize>,
    /// Also score every model on this cohort (NC vs AD), never trained on.
    pub transfer: Option<PathBuf>,
    /// runs/<variant>/fold<k>-seed<s>/ (each with oracle/ and transfer/ beside the run),
    /// runs/train-size-<n>/…, zero-shot/, results.md, results.csv.
    pub out: PathBuf,
    /// The settings of every run, before its variant and seed.
    pub base: RunSettings,
    pub device: DeviceSpec,
    pub quiet: bool,
    /// The command line, for the tables' header.
    pub command: String,
}

/// One scored model on one run: scan-level metrics by name.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    pub model: String,
    pub metrics: Vec<(&'static str, f64)>,
}

pub const METRICS: [&str; 4] = ["balanced_accuracy", "accuracy", "auc", "mmse_mae"];

impl Outcome {
    fn new(model: &str, c: &ClassMetrics, mmse: Option<&RegressionMetrics>) -> Self {
        let values = [Some(c.balanced_accuracy), Some(c.accuracy), c.auc, mmse.map(|r| r.mae)];
        let metrics = METRICS.iter().zip(values).filter_map(|(k, x)| x.map(|x| (*k, x))).collect();
        Outcome { model: model.to_string(), metrics }
    }
}

/// Every outcome and the tables made of them.
#[derive(Debug, Clone)]
pub struct ExperimentResult {
    pub outcomes: Vec<Outcome>,
    pub markdown: String,
    pub csv: String,
}

/// Mean and sample standard deviation (n − 1), as papers report over runs.
pub fn mean_std(v: &[f64]) -> (f64, f64) {
    let n = v.len() as f64;
    let mean = v.iter().sum::<f64>() / n.max(1.0);
    let var = if v.len() > 1 { v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0) } else { 0.0 };
    (mean, var.sqrt())
}

impl Experiment {
    /// Run (or reuse) every run and evaluation, write results.md and results.csv under `out`.
    pub fn run(&self) -> Result<ExperimentResult> {
        let mut outcomes = Vec::new();
        for &variant in &self.variants {
            for &(fold, seed) in &self.runs {
                let dir = self.out.join("runs").join(variant.name()).join(format!("fold{fold}-seed{seed}"));
                let settings = RunSettings { seed, ..variant.apply(self.base.clone()) };
                let test = self.finetune_once(fold, &dir, settings)?;
                outcomes.push(Outcome::new(
                    &format!("ablation/{}", variant.name()),
                    &test.classification,
                    test.mmse.as_ref(),
                ));
                if variant == Variant::Full {
                    outcomes.push(Outcome::new("fine-tuned", &test.classification, test.mmse.as_ref()));
                    self.compare(fold, &dir, &mut outcomes)?;
                }
            }
        }
        for &n in &self.train_sizes {
            for &(fold, seed) in &self.runs {
                let dir = self.out.join("runs").join(format!("train-size-{n}")).join(format!("fold{fold}-seed{seed}"));
                let settings = RunSettings { seed, train_size: Some(n), ..self.base.clone() };
                let test = self.finetune_once(fold, &dir, settings)?;
                outcomes.push(Outcome::new(&format!("train-size/{n}"), &test.classification, test.mmse.as_ref()));
            }
        }
        let (markdown, csv) = self.tables(&outcomes);
        let prefix = self.out.join("results");
        crate::util::write_bytes_atomic(&prefix.with_extension("csv"), csv.as_bytes())?;
        crate::util::write_bytes_atomic(&prefix.with_extension("md"), markdown.as_bytes())?;
        Ok(ExperimentResult { outcomes, markdown, csv })
    }

    /// The zero-shot backbone and the oracle on the run's test subjects, and all three models
    /// on the transfer cohort.
    fn compare(&self, fold: usize, dir: &Path, outcomes: &mut Vec<Outcome>) -> Result<()> {
        let zero_shot = EvalModel::ZeroShot {
            backbone: self.backbone.clone(),
            pos_embed: self.base.pos_embed,
            precision: self.base.precision,
        };
        let fine_tuned = EvalModel::FineTuned { backbone: self.backbone.clone(), run: dir.to_path_buf() };
        let oracle = EvalModel::Oracle { run: dir.to_path_buf() };
        let on_test = |model: EvalModel| EvalJob {
            model,
            index: self.index.clone(),
            split: Some((self.split.clone(), fold)),
            part: Part::Test,
            classes: Label::ALL.to_vec(),
            batch_size: None,
        };
        let zs =
            self.evaluate_once(on_test(zero_shot.clone()), &self.out.join("zero-shot").join(format!("fold{fold}")))?;
        outcomes.push(Outcome::new("zero-shot", &zs.scan.classification, zs.scan.mmse.as_ref()));
        let or = self.evaluate_once(on_test(oracle.clone()), &dir.join("oracle"))?;
        outcomes.push(Outcome::new("oracle", &or.scan.classification, or.scan.mmse.as_ref()));
        if let Some(t) = &self.transfer {
            let two_class = |model: EvalModel| EvalJob {
                model,
                index: t.clone(),
                split: None,
                part: Part::Test,
                classes: vec![Label::NC, Label::AD],
                batch_size: None,
            };
            for (model, name, out) in [
                (zero_shot, "zero-shot/transfer", self.out.join("zero-shot").join("transfer")),
                (fine_tuned, "fine-tuned/transfer", dir.join("transfer")),
                (oracle, "oracle/transfer", dir.join("oracle-transfer")),
            ] {
                let m = self.evaluate_once(two_class(model), &out)?;
                outcomes.push(Outcome::new(name, &m.scan.classification, m.scan.mmse.as_ref()));
            }
        }
        Ok(())
    }

    /// Fine-tune `fold` into `dir` unless it holds a finished run (an interrupted one is resumed).
    fn finetune_once(&self, fold: usize, dir: &Path, settings: RunSettings) -> Result<TestMetrics> {
        if run_folder::is_finished(dir) {
            tracing::info!("reusing {}", dir.display());
            return TestMetrics::read(dir);
        }
        let job = FinetuneJob {
            paths: RunPaths {
                backbone: self.backbone.clone(),
                index: self.index.clone(),
                split: self.split.clone(),
                fold,
                out: dir.to_path_buf(),
            },
            settings,
            resume: crate::train::checkpoint::latest(dir)?.is_some(),
            quiet: self.quiet,
        };
        crate::backend::dispatch(self.device, job)
    }

    /// Evaluate `job` into `out` unless it holds a finished evaluation.
    fn evaluate_once(&self, job: EvalJob, out: &Path) -> Result<EvalMetrics> {
        if out.join(EvalMetrics::FILE).exists() {
            return EvalMetrics::read(out);
        }
        let report = evaluate(job, self.device)?;
        report.write(out)?;
        Ok(report.metrics)
    }

    fn tables(&self, outcomes: &[Outcome]) -> (String, String) {
        let header = "| n | balanced accuracy | accuracy | AUC | MMSE MAE |\n|---|---|---|---|---|---|\n";
        let mut csv = String::from("model,metric,mean,std,n_runs\n");
        let mut md = format!(
            "# adfit experiment\n\nCommand: `{}`\n\nBackbone `{}`, cohort `{}`, split `{}`; runs (fold, seed): {:?}.\n\n",
            self.command,
            self.backbone.display(),
            self.index.display(),
            self.split.display(),
            self.runs
        );
        if self.variants.contains(&Variant::Full) {
            md.push_str(&format!("## Models on the test subjects (scan level)\n\n| model {header}"));
            for m in ["zero-shot", "fine-tuned", "oracle"] {
                md.extend(summarise(m, m, outcomes, &mut csv));
            }
            if let Some(t) = &self.transfer {
                md.push_str(&format!(
                    "\n## Transfer to `{}` (NC vs AD, never trained on)\n\n| model {header}",
                    t.display()
                ));
                for m in ["zero-shot", "fine-tuned", "oracle"] {
                    md.extend(summarise(m, &format!("{m}/transfer"), outcomes, &mut csv));
                }
            }
        }
        if self.variants.len() > 1 || !self.variants.contains(&Variant::Full) {
            md.push_str(&format!("\n## Ablations (the paper's table 3)\n\n| variant {header}"));
            for v in &self.variants {
                md.extend(summarise(&v.name(), &format!("ablation/{}", v.name()), outcomes, &mut csv));
            }
        }
        if !self.train_sizes.is_empty() {
            md.push_str(&format!("\n## Training-set size (the paper's table 5)\n\n| training scans {header}"));
            for n in &self.train_sizes {
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

/// Pair folds with seeds (`paired`: the k-th fold with the k-th seed), or cross them.
pub fn runs(folds: &[usize], seeds: &[u64], paired: bool) -> Result<Vec<(usize, u64)>> {
    if paired {
        if folds.len() != seeds.len() {
            return Err(Error::config(
                "--paired",
                format!("needs as many folds ({}) as seeds ({})", folds.len(), seeds.len()),
            ));
        }
        return Ok(folds.iter().copied().zip(seeds.iter().copied()).collect());
    }
    Ok(folds.iter().flat_map(|&f| seeds.iter().map(move |&s| (f, s))).collect())
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

    #[test]
    fn folds_and_seeds_pair_or_cross() {
        assert_eq!(runs(&[0, 1], &[5, 6], true).unwrap(), vec![(0, 5), (1, 6)]);
        assert_eq!(runs(&[0, 1], &[5], false).unwrap(), vec![(0, 5), (1, 5)]);
        assert!(runs(&[0, 1], &[5], true).is_err());
    }
}
