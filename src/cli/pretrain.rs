//! `adfit pretrain`: build adfit's own small CLIP-style backbone by contrastive training of all
//! its weights on head phantoms (a domain with no brains and no diagnoses), written as an
//! M3D-CLIP-layout directory that `finetune`, `eval` and `embed` load like the real one.

use std::path::PathBuf;

use clap::Args;

use super::DeviceArg;
use crate::train::pretrain::PretrainConfig;
use crate::train::pretrain_job::PretrainJob;

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
    #[command(flatten)]
    pub device: DeviceArg,
}

pub fn run(a: PretrainArgs, quiet: bool) -> anyhow::Result<()> {
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
    let job = PretrainJob { out: a.out.clone(), cfg, quiet, command: std::env::args().collect::<Vec<_>>().join(" ") };
    let batch = job.cfg.batch_size;
    let s = crate::backend::dispatch(a.device.device, job)?;
    println!(
        "pre-trained in {:.0} s: held-out image→caption accuracy {:.3} in batches of {batch} (chance {:.3})",
        s.seconds, s.held_out_accuracy, s.chance
    );
    println!("backbone → {}", a.out.display());
    Ok(())
}
