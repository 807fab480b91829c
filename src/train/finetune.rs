//! Fine-tuning one fold as a library job, generic over the backend: train the method on the
//! fold's training subjects, keep the best checkpoint by validation balanced accuracy, score it
//! on the fold's test subjects, and leave a run folder (`crate::run_folder`) behind.

use std::path::{Path, PathBuf};

use burn::data::dataset::Dataset;
use burn::optim::AdamWConfig;
use burn::tensor::backend::AutodiffBackend;
use serde::{Deserialize, Serialize};

use crate::backend::Job;
use crate::data::augment::AugmentConfig;
use crate::data::dataset::CohortDataset;
use crate::data::label::Label;
use crate::data::report::ReportTemplate;
use crate::data::split::{read_fold, Part};
use crate::error::{Error, Result};
use crate::eval::predict::{evaluate, predict, score_levels};
use crate::model::backbones::Backbone;
use crate::model::method::AdClip;
use crate::run_folder::{self, EpochSpeed, MmseScale, RunConfig, TestMetrics, TrainSpeed};
use crate::settings::{Projections, RunSettings};
use crate::train::epoch::{train_epoch, ClassPrompts, EpochPlan};
use crate::train::plateau::{Mode, Plateau};
use burn::module::AutodiffModule;

/// Where a run reads its data and writes its folder.
#[derive(Debug, Clone)]
pub struct RunPaths {
    pub backbone: PathBuf,
    pub index: PathBuf,
    pub split: PathBuf,
    pub fold: usize,
    pub out: PathBuf,
}

/// One fold of fine-tuning: [`Job::run`] returns the test metrics of the best checkpoint.
#[derive(Debug, Clone)]
pub struct FinetuneJob {
    pub paths: RunPaths,
    pub settings: RunSettings,
    /// Continue the run in `paths.out` from its last complete epoch (same settings required).
    pub resume: bool,
    /// No progress bars.
    pub quiet: bool,
}

/// One row of metrics.csv / metrics.jsonl.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EpochRow {
    pub epoch: u64,
    pub lr: f64,
    pub train_loss: f64,
    pub train_contrastive: f64,
    pub train_mmse: f64,
    pub val_accuracy: f64,
    pub val_balanced_accuracy: f64,
    pub val_auc: Option<f64>,
    pub val_mmse_mae: Option<f64>,
    pub best: bool,
}

/// What the loop needs to continue after a restart.
#[derive(Serialize, Deserialize)]
struct LoopState {
    /// The last finished epoch.
    epoch: u64,
    plateau: Plateau,
    since_best: usize,
    rows: Vec<EpochRow>,
}

/// The training, validation and test scans of a fold, with a diagnosis.
struct FoldData {
    train: CohortDataset,
    val: CohortDataset,
    test: CohortDataset,
}

/// `template` writes the training text of the no-report variant.
fn fold_data(a: &RunPaths, s: &RunSettings, template: &ReportTemplate) -> Result<FoldData> {
    let parts = read_fold(&a.split, a.fold)?;
    let all = CohortDataset::open(&a.index)?;
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
        CohortDataset::from_rows(all.root().to_path_buf(), rows)
    };
    let (mut train, val, test) = (subset(Part::Train), subset(Part::Val), subset(Part::Test));
    if let Some(n) = s.train_size {
        train = subsample(train, n, s.seed);
    }
    if train.len() < 2 || val.is_empty() {
        return Err(Error::Split {
            path: a.split.clone(),
            reason: format!(
                "fold {}: {} training and {} validation scans with a diagnosis; need at least 2 and 1",
                a.fold,
                train.len(),
                val.len()
            ),
        });
    }
    if s.augment {
        train = train.with_augmentation(AugmentConfig::default(), s.seed);
    }
    Ok(FoldData { train, val, test })
}

impl Job for FinetuneJob {
    type Output = TestMetrics;

    fn run<B: AutodiffBackend>(self, device: B::Device) -> Result<TestMetrics> {
        let (a, s) = (&self.paths, &self.settings);
        let _context = crate::panic_context::input(format!("run {}", a.out.display()));
        let template = s.template()?;
        let FoldData { train, val, test } = fold_data(a, s, &template)?;
        let img_size = train.grid()?;
        let scale = MmseScale::from_dataset(&train);
        let previous = crate::train::checkpoint::latest(&a.out)?;
        if previous.is_some() && !self.resume {
            return Err(Error::config(
                "--out",
                format!("{} already holds a run: add --resume to continue it, or choose a new --out", a.out.display()),
            ));
        }
        let _lock = crate::lock::OutputLock::acquire(&a.out)?;

        let backbone = Backbone::<B>::load(&a.backbone, Some(img_size), s.pos_embed, &device)?;
        s.check_tower(backbone.model.vit.layout)?;
        let method = s.method(backbone.model.vit.hidden_size())?;
        // Drawn on the CPU, so that a seed starts every device from the same point.
        let frozen = crate::model::precision::cast_frozen(backbone.model, s.precision)?;
        let mut model = AdClip::new_seeded::<crate::backend::Cpu>(frozen, &method, s.seed, &device);
        if s.projections == Projections::Backbone {
            model = model.with_backbone_projections()?;
        }
        let tok = backbone.tokenizer;
        model = model.with_guide(run_folder::class_prompts(&tok, s)?);
        let config = RunConfig {
            backbone: a.backbone.clone(),
            index: a.index.clone(),
            split: a.split.clone(),
            fold: a.fold,
            settings: s.clone(),
            train_scans: train.len(),
            method: method.clone(),
            mmse_scale: scale,
            img_size,
        };
        std::fs::create_dir_all(&a.out).map_err(|e| Error::io(&a.out, e))?;
        if previous.is_some() && !config.matches(&a.out) {
            return Err(Error::config(
                "--resume",
                format!("other settings than {} (only --epochs may change)", a.out.join(run_folder::CONFIG).display()),
            ));
        }
        config.write(&a.out)?;
        run_folder::write_train_list(&a.out, &train)?;
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
        // PyTorch's AdamW; weight decay is applied decoupled in train_epoch, clipping there too
        // (by the global norm, which Burn's per-tensor clipping is not).
        let mut optim =
            AdamWConfig::new().with_weight_decay(0.0).with_epsilon(s.adam_eps as f32).init::<B, AdClip<B>>();
        let mut plateau = Plateau::new(s.lr, Mode::Max, 0.1, 5);
        let mut rows = Vec::new();
        let mut since_best = 0;
        let mut start = 0;
        if let Some(dir) = previous {
            let (m, o, state): (_, _, LoopState) =
                crate::train::checkpoint::load(&dir, model, optim, &method, &device)?;
            (model, optim) = (m, o);
            (plateau, since_best, rows, start) = (state.plateau, state.since_best, state.rows, state.epoch + 1);
            tracing::info!("resuming {} after epoch {}", a.out.display(), state.epoch);
        }
        let (trainable_params, frozen_params) = crate::model::params::totals(&model);
        let mut speed = TrainSpeed { trainable_params, frozen_params, epochs: Vec::new() };
        if let Some(old) = TrainSpeed::read(&a.out)? {
            speed.epochs = old.epochs.into_iter().filter(|e| e.epoch < start).collect();
        }
        let best_path = a.out.join(run_folder::BEST);
        let class_prompts = (s.class_prompt_weight > 0.0).then(|| ClassPrompts {
            texts: Label::ALL.iter().map(|&l| template.prompt(l)).collect(),
            weight: s.class_prompt_weight,
        });
        for epoch in start..s.epochs {
            if since_best >= s.early_stop {
                break;
            }
            let started = std::time::Instant::now();
            let bar = crate::util::progress_bar(0, &format!("epoch {}/{}", epoch + 1, s.epochs), self.quiet);
            let plan = EpochPlan {
                epoch,
                seed: s.seed,
                lr: plateau.lr,
                weight_decay: s.weight_decay,
                batch_size: s.batch_size,
                lambda: s.lambda,
                grad_clip: s.grad_clip,
            };
            let (next, loss) = train_epoch(
                model,
                &mut optim,
                &train,
                &tok,
                scale,
                &plan,
                class_prompts.as_ref(),
                &device,
                |done, total| {
                    bar.set_length(total as u64);
                    bar.set_position(done as u64);
                },
            )?;
            bar.finish_and_clear();
            model = next;
            let seconds = started.elapsed().as_secs_f64();
            let scans_per_second = train.len() as f64 / seconds;
            speed.epochs.push(EpochSpeed { epoch, seconds, scans: train.len(), scans_per_second });
            let (m, mmse) = evaluate(&model, &val, &tok, &template, &Label::ALL, scale, s.batch_size, &device)?;
            let lr = plateau.lr;
            let best = plateau.step(m.balanced_accuracy);
            if best {
                run_folder::write_trainable(&best_path, &model, scale)?;
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
            crate::train::checkpoint::save(&a.out, epoch, &model, &optim, scale, &state)?;
            speed.write(&a.out)?;
            tracing::info!(
                "epoch {epoch}: loss {:.4}, val balanced accuracy {:.3}{} ({scans_per_second:.1} training scans/s)",
                loss.loss,
                m.balanced_accuracy,
                if best { " (best)" } else { "" }
            );
            if since_best >= s.early_stop {
                tracing::info!("no better validation score for {since_best} epochs: stopping");
            }
        }

        // Score the best checkpoint on the test subjects.
        let (model, _) = run_folder::read_trainable(&best_path, model, &method, &device)?;
        let p = predict(&model.valid(), &test, &tok, &template, &Label::ALL, scale, s.batch_size, &device)?;
        p.write_csv(&a.out.join(run_folder::TEST_PREDICTIONS), &Label::ALL)?;
        let (scan, subject) = score_levels(&p, &test, &Label::ALL);
        let names: Vec<&str> = Label::ALL.iter().map(|l| l.as_str()).collect();
        let c = &scan.classification;
        let title = format!("fold {} test scans (balanced accuracy {:.3})", a.fold, c.balanced_accuracy);
        crate::plot::confusion(&a.out.join("confusion.png"), &title, &names, &c.confusion)?;
        let report = TestMetrics { fold: a.fold, scans: test.len(), scan, subject_baseline: Some(subject) };
        report.write(&a.out)?;
        Ok(report)
    }
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
fn write_rows(out: &Path, rows: &[EpochRow]) -> Result<()> {
    crate::util::write_atomic(&out.join("metrics.csv"), |w| {
        let mut csv = csv::Writer::from_writer(w);
        for r in rows {
            csv.serialize(r).map_err(std::io::Error::other)?;
        }
        csv.flush()
    })?;
    let mut jsonl = String::new();
    for r in rows {
        jsonl.push_str(
            &serde_json::to_string(r).map_err(|e| Error::Json { path: out.join("metrics.jsonl"), source: e })?,
        );
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
