//! `adfit pretrain`: build adfit's own small CLIP-style backbone by contrastive training of all
//! its weights on head phantoms (a domain with no brains and no diagnoses), written as an
//! M3D-CLIP-layout directory that `finetune`, `eval` and `embed` load like the real one.

use std::path::PathBuf;

use anyhow::bail;
use burn::backend::{Autodiff, Flex};
use burn::module::AutodiffModule;
use clap::Args;

use crate::data::report::ReportTemplate;
use crate::model::backbones::m3d::save;
use crate::model::tokenizer::TextTokenizer;
use crate::model::vocab;
use crate::train::pretrain::{self, PretrainConfig};

type AD = Autodiff<Flex>;

#[derive(Debug, Args)]
pub struct PretrainArgs {
    /// Backbone folder to write: config.json, model.safetensors, vocab.txt, pretrain.json,
    /// pretrain_log.csv (the loss and in-batch accuracy of every step) and pretrain_curves.png.
    #[arg(long)]
    pub out: PathBuf,
    /// Input grid D,H,W: the preprocessing shape the backbone will mostly see.
    #[arg(long, value_parser = super::parse_shape, default_value = "64,64,64")]
    pub grid: [usize; 3],
    /// Patch size D,H,W (divides the grid).
    #[arg(long, value_parser = super::parse_shape, default_value = "16,16,16")]
    pub patch: [usize; 3],
    /// Width of both towers.
    #[arg(long, default_value_t = 64)]
    pub hidden: usize,
    /// Vision transformer blocks.
    #[arg(long, default_value_t = 4)]
    pub layers: usize,
    /// Text transformer blocks.
    #[arg(long, default_value_t = 2)]
    pub text_layers: usize,
    /// Optimiser steps, each on a fresh batch of phantoms. Training sits near the uniform loss for
    /// the first several hundred steps before it learns.
    #[arg(long, default_value_t = 3000)]
    pub steps: usize,
    /// Phantoms per step (each its own contrastive negative for the others).
    #[arg(long, default_value_t = 32)]
    pub batch_size: usize,
    /// Peak learning rate (after a linear warm-up over 5% of the steps; cosine decay after).
    #[arg(long, default_value_t = 5e-4)]
    pub lr: f64,
    /// The same seed gives the same weights, bit for bit, on the same machine.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

pub fn run(a: PretrainArgs, quiet: bool) -> anyhow::Result<()> {
    if a.out.join("model.safetensors").exists() {
        bail!("{} already holds a backbone: choose a new --out", a.out.display());
    }
    let cfg = PretrainConfig {
        grid: a.grid,
        patch: a.patch,
        hidden: a.hidden,
        layers: a.layers,
        heads: (a.hidden / 16).max(1),
        text_hidden: a.hidden,
        text_layers: a.text_layers,
        joint_dim: a.hidden,
        steps: a.steps,
        batch_size: a.batch_size.max(2),
        lr: a.lr,
        warmup: PretrainConfig::warmup_for(a.steps),
        seed: a.seed,
        ..Default::default()
    };
    cfg.vit().validate()?;
    let device = Default::default();
    let tokens = vocab::build(&pretrain::corpus(&ReportTemplate::default()));
    std::fs::create_dir_all(&a.out).map_err(|e| crate::Error::io(&a.out, e))?;
    let vocab_path = a.out.join("vocab.txt");
    crate::util::write_bytes_atomic(&vocab_path, vocab::to_text(&tokens).as_bytes())?;
    let tok = TextTokenizer::from_file(&vocab_path, cfg.max_text_len)?;
    let model = pretrain::init::<AD>(&cfg, tokens.len(), &device)?;
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
    let bar = super::progress_bar(cfg.steps as u64, "pretrain", quiet);
    let mut log = Vec::with_capacity(cfg.steps);
    let started = std::time::Instant::now();
    let model = pretrain::train(model, &cfg, &tok, &device, |s| {
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
    let held_out = pretrain::held_out_accuracy(&model.valid(), &cfg, &tok, 8, &device)?;
    let chance = 1.0 / cfg.batch_size as f64;
    println!(
        "pre-trained in {seconds:.0} s: held-out image→caption accuracy {held_out:.3} in batches of {} (chance {chance:.3})",
        cfg.batch_size
    );

    let mut csv = String::from("step,lr,loss,accuracy\n");
    for s in &log {
        csv.push_str(&format!("{},{},{},{}\n", s.step, s.lr, s.loss, s.accuracy));
    }
    crate::util::write_bytes_atomic(&a.out.join("pretrain_log.csv"), csv.as_bytes())?;
    let smooth = |f: fn(&pretrain::StepLog) -> f64| -> Vec<(f64, f64)> {
        let w = 50.min(log.len()).max(1);
        log.windows(w).map(|win| (win[w - 1].step as f64, win.iter().map(f).sum::<f64>() / w as f64)).collect()
    };
    crate::plot::curves(
        &a.out.join("pretrain_curves.png"),
        "step",
        &[
            ("contrastive loss (mean of 50 steps)", vec![("loss", smooth(|s| s.loss))]),
            (
                "in-batch image-to-caption accuracy",
                vec![("accuracy", smooth(|s| s.accuracy)), ("chance", vec![(0.0, chance), (log.len() as f64, chance)])],
            ),
        ],
    )?;
    let summary = serde_json::json!({
        "domain": "head phantoms (adfit::data::phantom)",
        "config": cfg,
        "held_out_accuracy": held_out,
        "chance": chance,
        "seconds": seconds,
        "command": std::env::args().collect::<Vec<_>>().join(" "),
    });
    crate::util::write_bytes_atomic(&a.out.join("pretrain.json"), serde_json::to_string_pretty(&summary)?.as_bytes())?;
    save(&a.out, &model, &cfg.backbone(tokens.len()), &vocab_path)?;
    println!("backbone → {}", a.out.display());
    Ok(())
}
