//! An experiment: one configuration over several folds and seeds (optionally the paper's
//! ablations and training-set sizes), with the zero-shot backbone and the metadata oracle scored
//! on the same test subjects, summarised as mean ± std tables (Markdown and CSV). Finished runs
//! and evaluations are reused, interrupted runs resumed.

use std::path::{Path, PathBuf};

use crate::backend::DeviceSpec;
use crate::data::label::Label;
use crate::data::split::Part;
use crate::error::{Error, Result};
use crate::eval::job::{evaluate, EvalJob, EvalMetrics, EvalModel};
use crate::eval::metrics::Scored;
use crate::run_folder::{self, TestMetrics, TrainSpeed};
use crate::settings::RunSettings;
use crate::train::finetune::{FinetuneJob, RunPaths};
pub use crate::variant::Variant;

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

/// One scored model on one run: metrics by name, at scan level and at the level of each
/// subject's baseline visit.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    pub model: String,
    /// The (fold, seed) it belongs to: paired comparisons match outcomes by it.
    pub run: (usize, u64),
    pub scan: Vec<(&'static str, f64)>,
    pub subject: Vec<(&'static str, f64)>,
}

/// The models scored beside every full run, in table order.
const MODELS: [&str; 4] = ["zero-shot", "linear-probe", "fine-tuned", "oracle"];

pub const METRICS: [&str; 4] = ["balanced_accuracy", "accuracy", "auc", "mmse_mae"];

fn by_name(s: &Scored) -> Vec<(&'static str, f64)> {
    let c = &s.classification;
    let values = [Some(c.balanced_accuracy), Some(c.accuracy), c.auc, s.mmse.as_ref().map(|r| r.mae)];
    METRICS.iter().zip(values).filter_map(|(k, x)| x.map(|x| (*k, x))).collect()
}

impl Outcome {
    fn new(model: &str, run: (usize, u64), scan: &Scored, subject: Option<&Scored>) -> Self {
        Outcome {
            model: model.to_string(),
            run,
            scan: by_name(scan),
            subject: subject.map(by_name).unwrap_or_default(),
        }
    }

    fn of_run(model: &str, run: (usize, u64), t: &TestMetrics) -> Self {
        Outcome::new(model, run, &t.scan, t.subject_baseline.as_ref())
    }

    fn of_eval(model: &str, run: (usize, u64), m: &EvalMetrics) -> Self {
        Outcome::new(model, run, &m.scan, Some(&m.subject_baseline))
    }

    fn get(&self, level: Level, metric: &str) -> Option<f64> {
        let v = match level {
            Level::Scan => &self.scan,
            Level::Subject => &self.subject,
        };
        v.iter().find(|(k, _)| *k == metric).map(|(_, x)| *x).filter(|x| x.is_finite())
    }
}

/// The level a metric is computed at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Scan,
    /// Each subject's baseline visit.
    Subject,
}

/// Mean paired difference `a − b` over the runs both were scored on, with its 95% t-interval.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PairedDifference {
    pub mean: f64,
    /// Sample standard deviation of the differences.
    pub std: f64,
    pub low: f64,
    pub high: f64,
    pub n: usize,
}

impl PairedDifference {
    /// Whether the interval excludes zero.
    pub fn clear(&self) -> bool {
        self.n > 1 && (self.low > 0.0 || self.high < 0.0)
    }
}

/// The 97.5% quantile of Student's t with `df` ≥ 1 degrees of freedom (the normal's beyond 30).
fn t975(df: usize) -> f64 {
    const T: [f64; 30] = [
        12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131,
        2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042,
    ];
    T.get(df.saturating_sub(1)).copied().unwrap_or(1.96)
}

/// `a − b` on `metric` at `level`, paired by run.
pub fn paired(outcomes: &[Outcome], a: &str, b: &str, level: Level, metric: &str) -> Option<PairedDifference> {
    let diffs: Vec<f64> = outcomes
        .iter()
        .filter(|o| o.model == a)
        .filter_map(|oa| {
            let ob = outcomes.iter().find(|o| o.model == b && o.run == oa.run)?;
            Some(oa.get(level, metric)? - ob.get(level, metric)?)
        })
        .collect();
    if diffs.is_empty() {
        return None;
    }
    let (mean, sd) = mean_std(&diffs);
    let half = if diffs.len() > 1 { t975(diffs.len() - 1) * sd / (diffs.len() as f64).sqrt() } else { f64::INFINITY };
    Some(PairedDifference { mean, std: sd, low: mean - half, high: mean + half, n: diffs.len() })
}

/// Every outcome and the tables made of them.
#[derive(Debug, Clone)]
pub struct ExperimentResult {
    pub outcomes: Vec<Outcome>,
    /// Each variant's runs' parameter counts and training speed (runs that recorded it).
    pub speeds: Vec<(Variant, TrainSpeed)>,
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
        let _lock = crate::lock::OutputLock::acquire(&self.out)?;
        let mut outcomes = Vec::new();
        let mut speeds = Vec::new();
        for &variant in &self.variants {
            for &(fold, seed) in &self.runs {
                let dir = self.out.join("runs").join(variant.name()).join(format!("fold{fold}-seed{seed}"));
                let settings = RunSettings { seed, ..variant.apply(self.base.clone()) };
                let test = self.finetune_once(fold, &dir, settings)?;
                if let Some(speed) = TrainSpeed::read(&dir)? {
                    speeds.push((variant, speed));
                }
                outcomes.push(Outcome::of_run(&format!("ablation/{}", variant.name()), (fold, seed), &test));
                if variant == Variant::Full {
                    outcomes.push(Outcome::of_run("fine-tuned", (fold, seed), &test));
                    self.compare((fold, seed), &dir, &mut outcomes)?;
                }
            }
        }
        for &n in &self.train_sizes {
            for &(fold, seed) in &self.runs {
                let dir = self.out.join("runs").join(format!("train-size-{n}")).join(format!("fold{fold}-seed{seed}"));
                let settings = RunSettings { seed, train_size: Some(n), ..self.base.clone() };
                let test = self.finetune_once(fold, &dir, settings)?;
                outcomes.push(Outcome::of_run(&format!("train-size/{n}"), (fold, seed), &test));
            }
        }
        let (markdown, csv) = self.tables(&outcomes, &speeds);
        let prefix = self.out.join("results");
        crate::util::write_bytes_atomic(&prefix.with_extension("csv"), csv.as_bytes())?;
        crate::util::write_bytes_atomic(&prefix.with_extension("md"), markdown.as_bytes())?;
        Ok(ExperimentResult { outcomes, speeds, markdown, csv })
    }

    /// The zero-shot backbone and the oracle on the run's test subjects, and all three models
    /// on the transfer cohort.
    fn compare(&self, run: (usize, u64), dir: &Path, outcomes: &mut Vec<Outcome>) -> Result<()> {
        let fold = run.0;
        let zero_shot = EvalModel::ZeroShot {
            backbone: self.backbone.clone(),
            pos_embed: self.base.pos_embed,
            precision: self.base.precision,
        };
        let fine_tuned = EvalModel::FineTuned { backbone: self.backbone.clone(), run: dir.to_path_buf() };
        let oracle = EvalModel::Oracle { run: dir.to_path_buf() };
        let probe = EvalModel::LinearProbe {
            backbone: self.backbone.clone(),
            run: dir.to_path_buf(),
            pos_embed: self.base.pos_embed,
            precision: self.base.precision,
        };
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
        outcomes.push(Outcome::of_eval("zero-shot", run, &zs));
        let or = self.evaluate_once(on_test(oracle.clone()), &dir.join("oracle"))?;
        outcomes.push(Outcome::of_eval("oracle", run, &or));
        let lp = self.evaluate_once(on_test(probe.clone()), &dir.join("linear-probe"))?;
        outcomes.push(Outcome::of_eval("linear-probe", run, &lp));
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
                (probe, "linear-probe/transfer", dir.join("linear-probe-transfer")),
            ] {
                let m = self.evaluate_once(two_class(model), &out)?;
                outcomes.push(Outcome::of_eval(name, run, &m));
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

    fn tables(&self, outcomes: &[Outcome], speeds: &[(Variant, TrainSpeed)]) -> (String, String) {
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
        let full = self.variants.contains(&Variant::Full);
        let mut speed_csv = String::new();
        for level in [Level::Scan, Level::Subject] {
            let (title, prefix) = match level {
                Level::Scan => ("scan level", ""),
                Level::Subject => ("each subject's baseline visit", "subject/"),
            };
            let mut row = |label: &str, model: &str, md: &mut String| {
                md.extend(summarise(label, model, &format!("{prefix}{model}"), level, outcomes, &mut csv));
            };
            if full {
                md.push_str(&format!("## Models on the test subjects ({title})\n\n| model {header}"));
                for m in MODELS {
                    row(m, m, &mut md);
                }
                md.push('\n');
                if let (Some(t), Level::Scan) = (&self.transfer, level) {
                    md.push_str(&format!(
                        "## Transfer to `{}` (NC vs AD, never trained on)\n\n| model {header}",
                        t.display()
                    ));
                    for m in MODELS {
                        row(m, &format!("{m}/transfer"), &mut md);
                    }
                    md.push('\n');
                }
            }
            if self.variants.len() > 1 || !full {
                md.push_str(&format!(
                    "## Variants (ablations: the paper's table 3; other adaptations: tables 2 and 4; {title})\n\n\
                     | variant | n | balanced accuracy | accuracy | AUC | MMSE MAE | trainable | training scans/s |\n\
                     |---|---|---|---|---|---|---|---|\n"
                ));
                for v in &self.variants {
                    let name = format!("ablation/{}", v.name());
                    let cells =
                        speed_cells(*v, speeds, (level == Level::Scan).then_some((name.as_str(), &mut speed_csv)));
                    let mut line = String::new();
                    row(&v.name(), &name, &mut line);
                    if let Some(body) = line.strip_suffix(" |\n") {
                        md.push_str(&format!("{body} | {cells} |\n"));
                    }
                }
                md.push('\n');
            }
            if !self.train_sizes.is_empty() {
                md.push_str(&format!(
                    "## Training-set size (the paper's table 5; {title})\n\n| training scans {header}"
                ));
                for n in &self.train_sizes {
                    row(&format!("≤ {n}"), &format!("train-size/{n}"), &mut md);
                }
                md.push('\n');
            }
        }
        csv.push_str(&speed_csv);
        let mut pairs: Vec<(String, String, String)> = Vec::new();
        if full {
            pairs.push(("fine-tuned − zero-shot".into(), "fine-tuned".into(), "zero-shot".into()));
            pairs.push(("fine-tuned − linear-probe".into(), "fine-tuned".into(), "linear-probe".into()));
            pairs.push(("fine-tuned − oracle".into(), "fine-tuned".into(), "oracle".into()));
            for v in self.variants.iter().filter(|v| **v != Variant::Full) {
                pairs.push((format!("{} − full", v.name()), format!("ablation/{}", v.name()), "ablation/full".into()));
                pairs.push((
                    format!("{} − linear-probe", v.name()),
                    format!("ablation/{}", v.name()),
                    "linear-probe".into(),
                ));
            }
        }
        let diffs: Vec<_> = pairs
            .iter()
            .filter_map(|(label, a, b)| Some((label, paired(outcomes, a, b, Level::Scan, "balanced_accuracy")?)))
            .collect();
        if !diffs.is_empty() {
            md.push_str(
                "## Paired differences (balanced accuracy, scan level, in points)\n\n\
                 Mean difference over the runs both models were scored on, with its 95% t-interval; \
                 \"clear\" when the interval excludes zero.\n\n\
                 | comparison | n | mean | 95% interval | clear of the noise |\n|---|---|---|---|---|\n",
            );
            for (label, d) in diffs {
                // One run has no interval.
                let interval =
                    if d.n > 1 { format!("[{:+.1}, {:+.1}]", 100.0 * d.low, 100.0 * d.high) } else { "-".to_string() };
                md.push_str(&format!(
                    "| {label} | {} | {:+.1} | {interval} | {} |\n",
                    d.n,
                    100.0 * d.mean,
                    if d.clear() { "yes" } else { "no" }
                ));
                csv.push_str(&format!("diff/{label},balanced_accuracy,{:.6},{:.6},{}\n", d.mean, d.std, d.n));
            }
            md.push('\n');
        }
        md.push_str(
            "Mean ± sample standard deviation over runs; accuracies and AUC in %, MMSE MAE in points. \
             zero-shot: the bare backbone against \"A photo of {class}.\"; linear-probe: logistic and ridge \
             regression on the backbone's frozen [CLS] features (penalty by cross-validation), and oracle: \
             logistic and ridge regression on the table's six volumes plus age, both fitted on each run's \
             training scans. \
             class-prompts and backbone-projections are adfit's additions, not the paper's. \
             trainable: parameters the variant trains (the frozen backbone excluded); training scans/s: \
             each run's median epoch (training pass only, this machine, runs one after another), \
             mean ± std over runs.\n",
        );
        (md, csv)
    }
}

/// The trainable-parameter and speed cells of `variant`'s row, and (given `csv`) their CSV lines
/// `ablation/<variant>,trainable_params|scans_per_second,mean,std,n_runs`.
fn speed_cells(variant: Variant, speeds: &[(Variant, TrainSpeed)], csv: Option<(&str, &mut String)>) -> String {
    let runs: Vec<&TrainSpeed> = speeds.iter().filter(|(v, _)| *v == variant).map(|(_, s)| s).collect();
    let params: Vec<f64> = runs.iter().map(|s| s.trainable_params as f64).collect();
    let rates: Vec<f64> = runs.iter().filter_map(|s| s.median_scans_per_second()).collect();
    if let Some((name, csv)) = csv {
        for (metric, v) in [("trainable_params", &params), ("scans_per_second", &rates)] {
            if !v.is_empty() {
                let (mean, std) = mean_std(v);
                csv.push_str(&format!("{name},{metric},{mean:.6},{std:.6},{}\n", v.len()));
            }
        }
    }
    let p = if params.is_empty() { "-".to_string() } else { crate::model::params::count(mean_std(&params).0) };
    let r = if rates.is_empty() {
        "-".to_string()
    } else {
        let (mean, std) = mean_std(&rates);
        format!("{mean:.1} ± {std:.1}")
    };
    format!("{p} | {r}")
}

/// One Markdown row and the CSV lines (under `csv_name`) of `model` over its runs at `level`.
fn summarise(
    label: &str,
    model: &str,
    csv_name: &str,
    level: Level,
    outcomes: &[Outcome],
    csv: &mut String,
) -> Option<String> {
    let runs: Vec<&Outcome> = outcomes.iter().filter(|o| o.model == model).collect();
    if runs.is_empty() {
        return None;
    }
    let mut cells = Vec::new();
    for m in METRICS {
        let values: Vec<f64> = runs.iter().filter_map(|o| o.get(level, m)).collect();
        if values.is_empty() {
            cells.push("-".to_string());
            continue;
        }
        let (mean, std) = mean_std(&values);
        csv.push_str(&format!("{csv_name},{m},{mean:.6},{std:.6},{}\n", values.len()));
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
    fn paired_differences_match_by_run_and_say_when_clear() {
        let o = |model: &str, run: (usize, u64), ba: f64| Outcome {
            model: model.into(),
            run,
            scan: vec![("balanced_accuracy", ba)],
            subject: vec![],
        };
        let outcomes = vec![
            o("a", (0, 0), 0.60),
            o("a", (1, 1), 0.70),
            o("a", (2, 2), 0.65),
            o("b", (2, 2), 0.45),
            o("b", (0, 0), 0.40),
            o("b", (1, 1), 0.50),
        ];
        let d = paired(&outcomes, "a", "b", Level::Scan, "balanced_accuracy").unwrap();
        assert_eq!(d.n, 3);
        assert!((d.mean - 0.2).abs() < 1e-12 && d.clear(), "{d:?}");
        // Differences 0.2, 0.2, 0.2: zero spread, interval collapses on the mean.
        assert!((d.low - 0.2).abs() < 1e-12 && (d.high - 0.2).abs() < 1e-12);
        let noisy = vec![o("a", (0, 0), 0.6), o("a", (1, 1), 0.4), o("b", (0, 0), 0.5), o("b", (1, 1), 0.5)];
        let d = paired(&noisy, "a", "b", Level::Scan, "balanced_accuracy").unwrap();
        assert!(!d.clear(), "{d:?}");
        assert!(paired(&outcomes, "a", "c", Level::Scan, "balanced_accuracy").is_none());
    }

    #[test]
    fn folds_and_seeds_pair_or_cross() {
        assert_eq!(runs(&[0, 1], &[5, 6], true).unwrap(), vec![(0, 5), (1, 6)]);
        assert_eq!(runs(&[0, 1], &[5], false).unwrap(), vec![(0, 5), (1, 5)]);
        assert!(runs(&[0, 1], &[5], true).is_err());
    }
}
