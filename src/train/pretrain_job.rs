//! `adfit pretrain` as a library job: build the vocabulary, pre-train adfit's own small backbone
//! on head phantoms on the chosen backend, and write it as an M3D-CLIP-layout directory with its
//! log, curves and summary.

use std::path::PathBuf;

use burn::module::AutodiffModule;
use burn::tensor::backend::AutodiffBackend;

use crate::backend::Job;
use crate::data::report::ReportTemplate;
use crate::error::{Error, Result};
use crate::model::backbones::m3d::save;
use crate::model::tokenizer::TextTokenizer;
use crate::model::vocab;
use crate::train::pretrain::{self, PretrainConfig, StepLog};

/// Pre-train into `out` (which must not hold a backbone yet).
#[derive(Debug, Clone)]
pub struct PretrainJob {
    pub out: PathBuf,
    pub cfg: PretrainConfig,
    pub quiet: bool,
    /// The command line, recorded in pretrain.json.
    pub command: String,
}

/// What pre-training reached.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PretrainSummary {
    /// Image→caption accuracy on held-out phantom batches.
    pub held_out_accuracy: f64,
    pub chance: f64,
    pub seconds: f64,
}

impl Job for PretrainJob {
    type Output = PretrainSummary;

    fn run<B: AutodiffBackend>(self, device: B::Device) -> Result<PretrainSummary> {
        let (out, cfg) = (&self.out, &self.cfg);
        if out.join("model.safetensors").exists() {
            return Err(Error::config(
                "--out",
                format!("{} already holds a backbone: choose a new --out", out.display()),
            ));
        }
        cfg.vit().validate()?;
        let tokens = vocab::build(&pretrain::corpus(&ReportTemplate::default()));
        std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
        let vocab_path = out.join("vocab.txt");
        crate::util::write_bytes_atomic(&vocab_path, vocab::to_text(&tokens).as_bytes())?;
        let tok = TextTokenizer::from_file(&vocab_path, cfg.max_text_len)?;
        let model = pretrain::init::<B>(cfg, tokens.len(), &device)?;
        tracing::info!(
            "pre-training on head phantoms: grid {:?}, patch {:?}, width {}, {} + {} blocks, {} steps of {}",
            cfg.grid,
            cfg.patch,
            cfg.hidden,
            cfg.layers,
            cfg.text_layers,
            cfg.steps,
            cfg.batch_size
        );
        let bar = crate::util::progress_bar(cfg.steps as u64, "pretrain", self.quiet);
        let mut log: Vec<StepLog> = Vec::with_capacity(cfg.steps);
        let started = std::time::Instant::now();
        let model = pretrain::train(model, cfg, &tok, &device, |s| {
            log.push(s.clone());
            let recent = &log[log.len().saturating_sub(50)..];
            let n = recent.len() as f64;
            let (loss, acc) = recent.iter().fold((0.0, 0.0), |(l, c), s| (l + s.loss / n, c + s.accuracy / n));
            bar.set_message(format!("loss {loss:.3}, batch accuracy {acc:.2}"));
            bar.inc(1);
            if (s.step + 1) % 100 == 0 {
                tracing::info!("step {}: loss {loss:.4}, in-batch accuracy {acc:.3} (last {} steps)", s.step + 1, n);
            }
        })?;
        bar.finish_and_clear();
        let seconds = started.elapsed().as_secs_f64();
        let held_out = pretrain::held_out_accuracy(&model.valid(), cfg, &tok, 8, &device)?;
        let chance = 1.0 / cfg.batch_size as f64;

        let mut csv = String::from("step,lr,loss,accuracy\n");
        for s in &log {
            csv.push_str(&format!("{},{},{},{}\n", s.step, s.lr, s.loss, s.accuracy));
        }
        crate::util::write_bytes_atomic(&out.join("pretrain_log.csv"), csv.as_bytes())?;
        let smooth = |f: fn(&StepLog) -> f64| -> Vec<(f64, f64)> {
            let w = 50.min(log.len()).max(1);
            log.windows(w).map(|win| (win[w - 1].step as f64, win.iter().map(f).sum::<f64>() / w as f64)).collect()
        };
        crate::plot::curves(
            &out.join("pretrain_curves.png"),
            "step",
            &[
                ("contrastive loss (mean of 50 steps)", vec![("loss", smooth(|s| s.loss))]),
                (
                    "in-batch image-to-caption accuracy",
                    vec![
                        ("accuracy", smooth(|s| s.accuracy)),
                        ("chance", vec![(0.0, chance), (log.len() as f64, chance)]),
                    ],
                ),
            ],
        )?;
        let summary = serde_json::json!({
            "domain": "head phantoms (adfit::data::phantom)",
            "config": cfg,
            "held_out_accuracy": held_out,
            "chance": chance,
            "seconds": seconds,
            "command": self.command,
        });
        crate::util::write_json(&out.join("pretrain.json"), &summary)?;
        save(out, &model, &cfg.backbone(tokens.len()), &vocab_path)?;
        Ok(PretrainSummary { held_out_accuracy: held_out, chance, seconds })
    }
}
