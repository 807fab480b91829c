//! `adfit eval`: classify scans by matching them against "A photo of {class}." with a bare
//! backbone (the zero-shot baseline) or a fine-tuned run, and report every metric at scan level
//! and at subject level (each subject's baseline visit).

use std::collections::HashMap;
use std::path::PathBuf;

use anyhow::{bail, Context};
use burn::backend::Flex;
use burn::data::dataset::Dataset;
use burn::tensor::activation::softmax;
use clap::Args;
use serde::Deserialize;

use crate::data::cache::cached_shape;
use crate::data::dataset::CohortDataset;
use crate::data::label::Label;
use crate::data::report::ReportTemplate;
use crate::data::split::{read_split, Part};
use crate::model::backbones::Backbone;
use crate::model::method::{AdClip, MethodConfig};
use crate::model::vit3d::PosEmbedPolicy;
use crate::model::weights::{read_safetensors, WeightStore};
use crate::train::epoch::{predict, predict_batches, score, tokenize, MmseScale, Predictions};
use crate::train::settings::RunSettings;

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
    /// Cohort index written by `adfit preprocess` (any cohort, e.g. the OASIS-like one).
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
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum PartArg {
    Train,
    Val,
    Test,
}

/// The parts of a run's config.json that evaluation needs.
#[derive(Deserialize)]
struct RunConfig {
    index: PathBuf,
    method: MethodConfig,
    mmse_scale: MmseScale,
    settings: RunSettings,
}

pub fn run(a: EvalArgs) -> anyhow::Result<()> {
    let device = Default::default();
    let classes: Vec<Label> = a
        .classes
        .iter()
        .map(|c| Label::parse(c).with_context(|| format!("--classes: {c:?} is not NC, MCI or AD")))
        .collect::<anyhow::Result<_>>()?;
    if classes.len() < 2 {
        bail!("--classes needs at least two classes");
    }
    let all = CohortDataset::open(&a.index)?;
    let root = a.index.parent().unwrap_or(std::path::Path::new(".")).to_path_buf();
    let parts: Option<HashMap<String, Part>> = match (&a.split, a.fold) {
        (Some(s), Some(f)) => Some(read_split(s)?.fold(f).into_iter().map(|(k, v)| (k.to_string(), v)).collect()),
        _ => None,
    };
    let want = match a.part {
        PartArg::Train => Part::Train,
        PartArg::Val => Part::Val,
        PartArg::Test => Part::Test,
    };
    let rows: Vec<_> = all
        .rows()
        .iter()
        .filter(|r| parts.as_ref().is_none_or(|p| p.get(&r.subject) == Some(&want)))
        .filter(|r| r.label.as_deref().and_then(Label::parse).is_some_and(|l| classes.contains(&l)))
        .cloned()
        .collect();
    let ds = CohortDataset::from_rows(root.clone(), rows);
    if ds.is_empty() {
        bail!("no labelled scans of classes {:?} to evaluate in {}", a.classes, a.index.display());
    }
    let img_size = cached_shape(&root.join(&ds.rows()[0].cache))?;
    let template = ReportTemplate::default();

    let (model, predictions) = match (&a.run, &a.backbone) {
        (Some(run), _) if a.oracle => ("oracle", oracle(run, &ds, &classes)?),
        (_, None) => bail!("--backbone is required unless --oracle is given"),
        (None, Some(backbone)) => {
            let b = Backbone::<Flex>::load(backbone, Some(img_size), PosEmbedPolicy::Reinterpret, &device)?;
            ("zero-shot", zero_shot(&b, &ds, &template, &classes, a.batch_size.unwrap_or(8), &device)?)
        }
        (Some(run), Some(backbone)) => {
            let cfg = read_run_config(run)?;
            let b = Backbone::<Flex>::load(backbone, Some(img_size), cfg.settings.pos_embed, &device)?;
            let best = run.join("best.safetensors");
            let store = WeightStore::<Flex>::new(&best, read_safetensors(&best)?, &[], &device);
            let model = AdClip::new(b.model, &cfg.method, &device).load_trainable(&store, "adfit.", &cfg.method);
            store.finish()?;
            let batch = a.batch_size.unwrap_or(cfg.settings.batch_size);
            ("fine-tuned", predict(&model, &ds, &b.tokenizer, &template, &classes, cfg.mmse_scale, batch, &device)?)
        }
    };

    let (scan_metrics, mmse) = score(&predictions, &classes);
    let baseline = baseline_visits(&ds);
    let subject_preds = select(&predictions, &baseline);
    let (subject_metrics, subject_mmse) = score(&subject_preds, &classes);
    let report = serde_json::json!({
        "classes": classes,
        "model": model,
        "scan": {"classification": scan_metrics, "mmse": mmse},
        "subject_baseline": {"classification": subject_metrics, "mmse": subject_mmse},
    });
    std::fs::create_dir_all(&a.out).map_err(|e| crate::Error::io(&a.out, e))?;
    crate::util::write_bytes_atomic(&a.out.join("metrics.json"), serde_json::to_string_pretty(&report)?.as_bytes())?;
    write_predictions(&a.out.join("predictions.csv"), &predictions, &classes)?;
    let names: Vec<&str> = classes.iter().map(|l| l.as_str()).collect();
    let title = format!("{model}: {} scans (balanced accuracy {:.3})", scan_metrics.n, scan_metrics.balanced_accuracy);
    crate::plot::confusion(&a.out.join("confusion.png"), &title, &names, &scan_metrics.confusion)?;
    println!(
        "{} scans: balanced accuracy {:.3}, accuracy {:.3}, AUC {}; baseline visits of {} subjects: balanced accuracy {:.3} → {}",
        scan_metrics.n,
        scan_metrics.balanced_accuracy,
        scan_metrics.accuracy,
        scan_metrics.auc.map_or("-".into(), |v| format!("{v:.3}")),
        subject_metrics.n,
        subject_metrics.balanced_accuracy,
        a.out.display()
    );
    Ok(())
}

fn read_run_config(run: &std::path::Path) -> anyhow::Result<RunConfig> {
    let path = run.join("config.json");
    let text = std::fs::read_to_string(&path).map_err(|e| crate::Error::io(&path, e))?;
    Ok(serde_json::from_str(&text).map_err(|e| crate::Error::Json { path: path.clone(), source: e })?)
}

/// The metadata oracle fitted on the training scans of `run` (its train.csv, looked up in the
/// index the run was trained from).
fn oracle(run: &std::path::Path, ds: &CohortDataset, classes: &[Label]) -> anyhow::Result<Predictions> {
    let cfg = read_run_config(run)?;
    let listing = run.join("train.csv");
    let mut reader = csv::Reader::from_path(&listing).map_err(|e| anyhow::anyhow!("{}: {e}", listing.display()))?;
    let mut wanted = std::collections::HashSet::new();
    for record in reader.records() {
        let record = record.map_err(|e| anyhow::anyhow!("{}: {e}", listing.display()))?;
        wanted.insert(record.get(0).unwrap_or_default().to_string());
    }
    let index = CohortDataset::open(&cfg.index)?;
    let train: Vec<_> = index.rows().iter().filter(|r| wanted.contains(&r.scan)).cloned().collect();
    if train.len() != wanted.len() {
        bail!(
            "{} lists {} training scans but only {} are in {}",
            listing.display(),
            wanted.len(),
            train.len(),
            cfg.index.display()
        );
    }
    Ok(crate::eval::oracle::Oracle::fit(&train)?.predict(ds.rows(), classes))
}

/// The bare backbone as M3D-CLIP matches images and texts: projections, L2, logit_scale.
fn zero_shot(
    b: &Backbone<Flex>,
    ds: &CohortDataset,
    template: &ReportTemplate,
    classes: &[Label],
    batch_size: usize,
    device: &burn::tensor::Device<Flex>,
) -> anyhow::Result<Predictions> {
    let prompts: Vec<String> = classes.iter().map(|&c| template.prompt(c)).collect();
    let (ids, mask) = tokenize::<Flex>(&b.tokenizer, &prompts, device)?;
    let w = b.model.encode_text(ids, mask);
    Ok(predict_batches(ds, classes.len(), batch_size, device, |volumes| {
        (softmax(b.model.logits(b.model.encode_image(volumes), w.clone()), 1), None)
    })?)
}

/// Index of each subject's earliest scan (by date, then scan id).
fn baseline_visits(ds: &CohortDataset) -> Vec<usize> {
    let mut first: HashMap<&str, usize> = HashMap::new();
    for (i, r) in ds.rows().iter().enumerate() {
        let key = |j: usize| {
            let r = &ds.rows()[j];
            (r.date.is_none(), r.date.clone(), r.scan.clone())
        };
        first
            .entry(r.subject.as_str())
            .and_modify(|j| {
                if key(i) < key(*j) {
                    *j = i
                }
            })
            .or_insert(i);
    }
    let mut v: Vec<usize> = first.into_values().collect();
    v.sort_unstable();
    v
}

fn select(p: &Predictions, keep: &[usize]) -> Predictions {
    Predictions {
        scans: keep.iter().map(|&i| p.scans[i].clone()).collect(),
        subjects: keep.iter().map(|&i| p.subjects[i].clone()).collect(),
        labels: keep.iter().map(|&i| p.labels[i]).collect(),
        proba: keep.iter().map(|&i| p.proba[i].clone()).collect(),
        mmse: keep.iter().map(|&i| p.mmse[i]).collect(),
        mmse_truth: keep.iter().map(|&i| p.mmse_truth[i]).collect(),
    }
}

fn write_predictions(path: &std::path::Path, p: &Predictions, classes: &[Label]) -> anyhow::Result<()> {
    crate::util::write_atomic(path, |w| {
        let mut csv = csv::Writer::from_writer(w);
        let mut header = vec!["scan".to_string(), "subject".into(), "label".into(), "predicted".into()];
        header.extend(classes.iter().map(|c| format!("p_{c}")));
        header.extend(["mmse".into(), "mmse_predicted".into()]);
        csv.write_record(&header)?;
        for i in 0..p.scans.len() {
            let best = p.proba[i].iter().enumerate().fold(0, |b, (c, &v)| if v > p.proba[i][b] { c } else { b });
            let mut rec = vec![
                p.scans[i].clone(),
                p.subjects[i].clone(),
                p.labels[i].map(|l| l.as_str().to_string()).unwrap_or_default(),
                classes[best].as_str().to_string(),
            ];
            rec.extend(p.proba[i].iter().map(|v| format!("{v:.6}")));
            rec.push(p.mmse_truth[i].map(|v| v.to_string()).unwrap_or_default());
            rec.push(p.mmse[i].map(|v| format!("{v:.3}")).unwrap_or_default());
            csv.write_record(&rec)?;
        }
        csv.flush()
    })?;
    Ok(())
}
