//! `adfit finetune`: train the method on one fold of a split, keep the best checkpoint by
//! validation balanced accuracy, and score it on the fold's test subjects.

use std::collections::HashMap;
use std::path::PathBuf;

use anyhow::{bail, Context};
use burn::backend::{Autodiff, Flex};
use burn::data::dataset::Dataset;
use burn::grad_clipping::GradientClippingConfig;
use burn::optim::AdamWConfig;
use clap::Args;
use serde::Serialize;

use crate::data::augment::AugmentConfig;
use crate::data::cache::cached_shape;
use crate::data::dataset::CohortDataset;
use crate::data::label::Label;
use crate::data::report::ReportTemplate;
use crate::data::split::{read_split, Part};
use crate::model::backbones::m3d::write_safetensors;
use crate::model::backbones::Backbone;
use crate::model::cross_attention::CrossAttentionKind;
use crate::model::method::{AdClip, MethodConfig};
use crate::model::vit3d::PosEmbedPolicy;
use crate::model::weights::WeightStore;
use crate::train::epoch::{evaluate, train_epoch, MmseScale};
use crate::train::plateau::{Mode, Plateau};
use crate::train::settings::RunSettings;

type AD = Autodiff<Flex>;

#[derive(Debug, Clone, Args)]
pub struct FinetuneArgs {
    /// Backbone directory in M3D-CLIP's layout (`backbones/phantom-64` is adfit's own small one).
    #[arg(long)]
    pub backbone: PathBuf,
    /// Cohort index written by `adfit preprocess`.
    #[arg(long, visible_alias = "cohort")]
    pub index: PathBuf,
    /// Split file written by `adfit split` (checked for leakage on reading).
    #[arg(long)]
    pub split: PathBuf,
    #[arg(long, default_value_t = 0)]
    pub fold: usize,
    /// Run folder: config.json, train.csv (the training scans), metrics.csv and .jsonl,
    /// curves.png, best.safetensors, checkpoint-N/, test_metrics.json, confusion.png.
    #[arg(long)]
    pub out: PathBuf,
    /// Run config (JSON, any subset of the fields of configs/finetune.json); the flags below
    /// override it, and the resolved settings are saved in the run folder's config.json.
    #[arg(long)]
    pub config: Option<PathBuf>,
    #[command(flatten)]
    pub overrides: Overrides,
    /// Continue the run in --out from its last complete epoch (same settings required): weights,
    /// AdamW moments, schedule, early-stop counter and metrics are restored, so a run killed at
    /// any point ends bit-identical to one that was not (on CPU).
    #[arg(long)]
    pub resume: bool,
}

/// Command-line overrides of a run config, field by field.
#[derive(Debug, Clone, Default, Args)]
pub struct Overrides {
    #[arg(long, help_heading = "Overrides of the run config")]
    pub epochs: Option<u64>,
    #[arg(long, help_heading = "Overrides of the run config")]
    pub batch_size: Option<usize>,
    #[arg(long, help_heading = "Overrides of the run config")]
    pub lr: Option<f64>,
    /// Decoupled weight decay, on the trainable matrices only (not prompts, tokens, biases).
    #[arg(long, help_heading = "Overrides of the run config")]
    pub weight_decay: Option<f64>,
    /// Weight of the MMSE loss.
    #[arg(long, help_heading = "Overrides of the run config")]
    pub lambda: Option<f64>,
    #[arg(long, help_heading = "Overrides of the run config")]
    pub seed: Option<u64>,
    /// Stop after this many epochs without a better validation score.
    #[arg(long, help_heading = "Overrides of the run config")]
    pub early_stop: Option<usize>,
    /// Seeded flips, shifts and rotations of training volumes.
    #[arg(long, help_heading = "Overrides of the run config")]
    pub augment: bool,
    /// Keep at most N training scans, by whole subjects, stratified (the paper's 500/1000/1500/2000).
    #[arg(long, help_heading = "Overrides of the run config")]
    pub train_size: Option<usize>,
    /// Ablation: no deep visual prompts.
    #[arg(long, help_heading = "Ablations")]
    pub no_visual_prompts: bool,
    /// Ablation: no [MMSE] token and head.
    #[arg(long, help_heading = "Ablations")]
    pub no_mmse: bool,
    /// Ablation: no text prompts.
    #[arg(long, help_heading = "Ablations")]
    pub no_text_prompts: bool,
    /// Ablation: train with "A photo of {class}." instead of the report.
    #[arg(long, help_heading = "Ablations")]
    pub no_report: bool,
    /// Cross-attention between image and text (`off` is the ablation).
    #[arg(long, value_enum, help_heading = "Ablations")]
    pub cross_attention: Option<CrossAttentionKind>,
    /// How the backbone's position embedding meets the cache's grid.
    #[arg(long, value_enum, help_heading = "Overrides of the run config")]
    pub pos_embed: Option<PosEmbedPolicy>,
}

impl Overrides {
    /// The run's settings: the config file (or the defaults), these flags on top, validated.
    pub fn resolve(&self, config: Option<&std::path::Path>) -> anyhow::Result<RunSettings> {
        let base = match config {
            Some(path) => RunSettings::from_file(path)?,
            None => RunSettings::default(),
        };
        let settings = self.apply(base);
        settings.validate()?;
        Ok(settings)
    }

    /// `s` with every given flag applied.
    pub fn apply(&self, mut s: RunSettings) -> RunSettings {
        s.epochs = self.epochs.unwrap_or(s.epochs);
        s.batch_size = self.batch_size.unwrap_or(s.batch_size);
        s.lr = self.lr.unwrap_or(s.lr);
        s.weight_decay = self.weight_decay.unwrap_or(s.weight_decay);
        s.lambda = self.lambda.unwrap_or(s.lambda);
        s.seed = self.seed.unwrap_or(s.seed);
        s.early_stop = self.early_stop.unwrap_or(s.early_stop);
        s.augment |= self.augment;
        s.train_size = self.train_size.or(s.train_size);
        if self.no_visual_prompts {
            s.visual_prompts = 0;
        }
        s.mmse_token &= !self.no_mmse;
        if self.no_text_prompts {
            s.text_prompts = 0;
        }
        s.report &= !self.no_report;
        s.cross_attention = self.cross_attention.unwrap_or(s.cross_attention);
        s.pos_embed = self.pos_embed.unwrap_or(s.pos_embed);
        s
    }
}

/// Where a run reads its data and writes its folder.
#[derive(Debug, Clone)]
pub struct RunPaths {
    pub backbone: PathBuf,
    pub index: PathBuf,
    pub split: PathBuf,
    pub fold: usize,
    pub out: PathBuf,
}

#[derive(Serialize, serde::Deserialize, Clone)]
struct EpochRow {
    epoch: u64,
    lr: f64,
    train_loss: f64,
    train_contrastive: f64,
    train_mmse: f64,
    val_accuracy: f64,
    val_balanced_accuracy: f64,
    val_auc: Option<f64>,
    val_mmse_mae: Option<f64>,
    best: bool,
}

/// What the loop needs to continue after a restart.
#[derive(Serialize, serde::Deserialize)]
struct LoopState {
    /// The last finished epoch.
    epoch: u64,
    plateau: Plateau,
    since_best: usize,
    rows: Vec<EpochRow>,
}

#[derive(Serialize)]
struct RunConfig<'a> {
    backbone: &'a PathBuf,
    index: &'a PathBuf,
    split: &'a PathBuf,
    fold: usize,
    settings: &'a RunSettings,
    train_scans: usize,
    method: &'a MethodConfig,
    mmse_scale: MmseScale,
    img_size: [usize; 3],
}

pub fn run(a: FinetuneArgs, quiet: bool) -> anyhow::Result<()> {
    let settings = a.overrides.resolve(a.config.as_deref())?;
    let paths = RunPaths { backbone: a.backbone, index: a.index, split: a.split, fold: a.fold, out: a.out };
    run_fold(&paths, &settings, a.resume, quiet)
}

/// Train on `paths.fold` with `s`, keep the best checkpoint, score the test subjects.
pub fn run_fold(a: &RunPaths, s: &RunSettings, resume: bool, quiet: bool) -> anyhow::Result<()> {
    let device = Default::default();
    let split = read_split(&a.split)?;
    if a.fold >= split.folds() {
        bail!("--fold {} but {} has {} folds", a.fold, a.split.display(), split.folds());
    }
    let parts: HashMap<String, Part> = split.fold(a.fold).into_iter().map(|(s, p)| (s.to_string(), p)).collect();
    let all = CohortDataset::open(&a.index)?;
    let root = a.index.parent().unwrap_or(std::path::Path::new(".")).to_path_buf();
    let first = all.rows().first().with_context(|| format!("{} has no scans", a.index.display()))?;
    let img_size = cached_shape(&root.join(&first.cache))?;
    let template = ReportTemplate::default();
    let subset = |part: Part| {
        let mut rows: Vec<_> = all
            .rows()
            .iter()
            .filter(|r| parts.get(&r.subject) == Some(&part) && r.label.as_deref().and_then(Label::parse).is_some())
            .cloned()
            .collect();
        if !s.report {
            for r in rows.iter_mut() {
                if let Some(l) = r.label.as_deref().and_then(Label::parse) {
                    r.report = template.prompt(l);
                }
            }
        }
        CohortDataset::from_rows(root.clone(), rows)
    };
    let (mut train, val, test) = (subset(Part::Train), subset(Part::Val), subset(Part::Test));
    if let Some(n) = s.train_size {
        train = subsample(train, n, s.seed);
    }
    if train.len() < 2 || val.is_empty() {
        bail!(
            "fold {}: {} training and {} validation scans with a diagnosis; need at least 2 and 1",
            a.fold,
            train.len(),
            val.len()
        );
    }
    if s.augment {
        train = train.with_augmentation(AugmentConfig::default(), s.seed);
    }
    let scale = MmseScale::from_dataset(&train);

    let backbone = Backbone::<AD>::load(&a.backbone, Some(img_size), s.pos_embed, &device)?;
    let embed_dim = backbone.model.vit.hidden_size();
    let method = MethodConfig {
        visual_prompts: s.visual_prompts,
        mmse_token: s.mmse_token,
        text_prompts: s.text_prompts,
        cross_attention: s.cross_attention,
        embed_dim,
        mmse_hidden: embed_dim / 2,
        lambda: s.lambda,
        ..Default::default()
    };
    {
        use burn::tensor::backend::Backend;
        <AD as Backend>::seed(&device, s.seed);
    }
    let mut model = AdClip::new(backbone.model, &method, &device);
    let tok = backbone.tokenizer;
    std::fs::create_dir_all(&a.out).map_err(|e| crate::Error::io(&a.out, e))?;
    let config = RunConfig {
        backbone: &a.backbone,
        index: &a.index,
        split: &a.split,
        fold: a.fold,
        settings: s,
        train_scans: train.len(),
        method: &method,
        mmse_scale: scale,
        img_size,
    };
    let config_json = serde_json::to_string_pretty(&config)?;
    let previous = crate::train::checkpoint::latest(&a.out)?;
    match (&previous, resume) {
        (Some(_), false) => {
            bail!("{} already holds a run: add --resume to continue it, or choose a new --out", a.out.display())
        }
        (Some(_), true) => {
            let old = std::fs::read_to_string(a.out.join("config.json")).unwrap_or_default();
            let same = serde_json::from_str::<serde_json::Value>(&old).ok()
                == serde_json::from_str::<serde_json::Value>(&config_json).ok();
            if !same {
                bail!("--resume with other settings than {}", a.out.join("config.json").display());
            }
        }
        _ => crate::util::write_bytes_atomic(&a.out.join("config.json"), config_json.as_bytes())?,
    }
    crate::util::write_atomic(&a.out.join("train.csv"), |w| {
        let mut csv = csv::Writer::from_writer(w);
        csv.write_record(["scan", "subject", "label"]).map_err(std::io::Error::other)?;
        for r in train.rows() {
            csv.write_record([&r.scan, &r.subject, r.label.as_deref().unwrap_or("")]).map_err(std::io::Error::other)?;
        }
        csv.flush()
    })?;
    tracing::info!(
        "fold {}: {} train, {} val, {} test scans; grid {:?}",
        a.fold,
        train.len(),
        val.len(),
        test.len(),
        img_size
    );

    let groups = crate::train::decay::groups(&model);
    tracing::info!(
        "AdamW groups: weight decay {} on {} matrices ({} values); none on {} other tensors ({} values)",
        s.weight_decay,
        groups.decayed.0,
        groups.decayed.1,
        groups.kept.0,
        groups.kept.1
    );
    let mut optim = AdamWConfig::new()
        .with_weight_decay(0.0)
        .with_grad_clipping(Some(GradientClippingConfig::Norm(1.0)))
        .init::<AD, AdClip<AD>>();
    let mut plateau = Plateau::new(s.lr, Mode::Max, 0.1, 5);
    let mut rows = Vec::new();
    let mut since_best = 0;
    let mut start = 0;
    if let Some(dir) = previous {
        let (m, o, state): (_, _, LoopState) = crate::train::checkpoint::load(&dir, model, optim, &method, &device)?;
        (model, optim) = (m, o);
        (plateau, since_best, rows, start) = (state.plateau, state.since_best, state.rows, state.epoch + 1);
        tracing::info!("resuming {} after epoch {}", a.out.display(), state.epoch);
    }
    for epoch in start..s.epochs {
        if since_best >= s.early_stop {
            break;
        }
        let started = std::time::Instant::now();
        let bar = super::progress_bar(0, &format!("epoch {}/{}", epoch + 1, s.epochs), quiet);
        let (next, loss) = train_epoch(
            model,
            &mut optim,
            &train,
            &tok,
            scale,
            plateau.lr,
            s.weight_decay,
            s.batch_size,
            s.lambda,
            s.seed,
            epoch,
            &device,
            |done, total| {
                bar.set_length(total as u64);
                bar.set_position(done as u64);
            },
        )?;
        bar.finish_and_clear();
        model = next;
        let speed = train.len() as f64 / started.elapsed().as_secs_f64();
        let (m, mmse) = evaluate(&model, &val, &tok, &template, &Label::ALL, scale, s.batch_size, &device)?;
        let lr = plateau.lr;
        let best = plateau.step(m.balanced_accuracy);
        if best {
            write_safetensors(&a.out.join("best.safetensors"), &model.trainable_tensors("adfit."))?;
            since_best = 0;
        } else {
            since_best += 1;
        }
        rows.push(EpochRow {
            epoch,
            lr,
            train_loss: loss.loss,
            train_contrastive: loss.contrastive,
            train_mmse: loss.mmse,
            val_accuracy: m.accuracy,
            val_balanced_accuracy: m.balanced_accuracy,
            val_auc: m.auc,
            val_mmse_mae: mmse.map(|r| r.mae),
            best,
        });
        write_rows(&a.out, &rows)?;
        let state = LoopState { epoch, plateau: plateau.clone(), since_best, rows: rows.clone() };
        crate::train::checkpoint::save(&a.out, epoch, &model, &optim, &state)?;
        tracing::info!(
            "epoch {epoch}: loss {:.4}, val balanced accuracy {:.3}{} ({speed:.1} training scans/s)",
            loss.loss,
            m.balanced_accuracy,
            if best { " (best)" } else { "" }
        );
        if since_best >= s.early_stop {
            tracing::info!("no better validation score for {since_best} epochs: stopping");
        }
    }

    // Score the best checkpoint on the test subjects.
    let best_path = a.out.join("best.safetensors");
    let store = WeightStore::<AD>::new(&best_path, crate::model::weights::read_safetensors(&best_path)?, &[], &device);
    let model = model.load_trainable(&store, "adfit.", &method);
    store.finish()?;
    let (m, mmse) = evaluate(&model, &test, &tok, &template, &Label::ALL, scale, s.batch_size, &device)?;
    let names: Vec<&str> = Label::ALL.iter().map(|l| l.as_str()).collect();
    let title = format!("fold {} test scans (balanced accuracy {:.3})", a.fold, m.balanced_accuracy);
    crate::plot::confusion(&a.out.join("confusion.png"), &title, &names, &m.confusion)?;
    let report = serde_json::json!({"fold": a.fold, "scans": test.len(), "classification": m, "mmse": mmse});
    crate::util::write_bytes_atomic(
        &a.out.join("test_metrics.json"),
        serde_json::to_string_pretty(&report)?.as_bytes(),
    )?;
    println!(
        "fold {}: test balanced accuracy {:.3}, accuracy {:.3}, AUC {}, MMSE MAE {} ({} scans) → {}",
        a.fold,
        m.balanced_accuracy,
        m.accuracy,
        m.auc.map_or("-".into(), |v| format!("{v:.3}")),
        mmse.map_or("-".into(), |r| format!("{:.2}", r.mae)),
        test.len(),
        a.out.display()
    );
    Ok(())
}

/// At most `n` scans by whole subjects, stratified by each subject's first label.
fn subsample(ds: CohortDataset, n: usize, seed: u64) -> CohortDataset {
    use crate::data::split::{strata, subsample_subjects};
    let rows = ds.rows().to_vec();
    let st = strata(rows.iter().map(|r| (r.subject.as_str(), r.label.as_deref().and_then(Label::parse))));
    let with_counts: Vec<_> = st
        .into_iter()
        .map(|s| {
            let c = rows.iter().filter(|r| r.subject == s.subject).count();
            (s, c)
        })
        .collect();
    let keep: std::collections::HashSet<String> = subsample_subjects(&with_counts, n, seed).into_iter().collect();
    ds.filter(|r| keep.contains(&r.subject))
}

/// metrics.csv (pandas), metrics.jsonl and curves.png, rewritten whole each epoch.
fn write_rows(out: &std::path::Path, rows: &[EpochRow]) -> anyhow::Result<()> {
    crate::util::write_atomic(&out.join("metrics.csv"), |w| {
        let mut csv = csv::Writer::from_writer(w);
        for r in rows {
            csv.serialize(r).map_err(std::io::Error::other)?;
        }
        csv.flush()
    })?;
    let mut jsonl = String::new();
    for r in rows {
        jsonl.push_str(&serde_json::to_string(r)?);
        jsonl.push('\n');
    }
    crate::util::write_bytes_atomic(&out.join("metrics.jsonl"), jsonl.as_bytes())?;
    let line = |f: fn(&EpochRow) -> Option<f64>| -> Vec<(f64, f64)> {
        rows.iter().filter_map(|r| f(r).map(|v| (r.epoch as f64, v))).collect()
    };
    crate::plot::curves(
        &out.join("curves.png"),
        "epoch",
        &[
            (
                "training loss",
                vec![
                    ("total", line(|r| Some(r.train_loss))),
                    ("contrastive", line(|r| Some(r.train_contrastive))),
                    ("MMSE (standardised)", line(|r| Some(r.train_mmse))),
                ],
            ),
            (
                "validation",
                vec![
                    ("balanced accuracy", line(|r| Some(r.val_balanced_accuracy))),
                    ("accuracy", line(|r| Some(r.val_accuracy))),
                    ("AUC", line(|r| r.val_auc)),
                ],
            ),
        ],
    )?;
    Ok(())
}
