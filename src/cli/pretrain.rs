//! `adfit pretrain`: build adfit's own small CLIP-style backbone by contrastive pre-training,
//! written as an M3D-CLIP-layout directory that `finetune`, `eval` and `embed` load like the real
//! one. The default corpus is synthetic brains captioned with findings (never a diagnosis), read
//! by a frozen all-MiniLM-L6-v2; `--corpus phantoms` trains both towers of a tiny test backbone on
//! head phantoms.

use std::path::PathBuf;

use clap::Args;

use super::DeviceArg;
use crate::train::pretrain::{Corpus, PretrainConfig, DEFAULT_TEXT_MODEL};
use crate::train::pretrain_job::PretrainJob;

#[derive(Debug, Args)]
pub struct PretrainArgs {
    /// Backbone folder to write: config.json, model.safetensors, vocab.txt, pretrain.json,
    /// pretrain_log.csv (the loss and in-batch accuracy of every step) and pretrain_curves.png.
    #[arg(long)]
    pub out: PathBuf,
    /// What to pre-train on: `brains` (synthetic heads with radiology-style findings, read by a
    /// frozen real text tower; only the image side learns) or `phantoms` (head phantoms, both
    /// towers trained from scratch: the tiny test fixture).
    #[arg(long, value_enum, default_value_t = Corpus::Brains)]
    pub corpus: Corpus,
    /// Brain corpus: heads generated once and held in memory (about 1 MiB each at 64³).
    #[arg(long, default_value_t = 2000)]
    pub corpus_size: usize,
    /// Brain corpus: held-out heads (their own seed space) for the retrieval accuracy.
    #[arg(long, default_value_t = 256)]
    pub held_out: usize,
    /// Brain corpus: the frozen text tower, a Hugging Face BERT name or folder, resolved locally
    /// (ADFIT_TEXT_MODELS, ~/.cache/adfit-assets, the Hugging Face cache; see
    /// `bash scripts/fetch_minilm.sh`). Its name goes into the backbone's config.json; its weights
    /// do not.
    #[arg(long, default_value = DEFAULT_TEXT_MODEL)]
    pub text_model: String,
    /// Input grid D,H,W: the preprocessing shape the backbone will mostly see.
    #[arg(long, value_parser = super::parse_shape, default_value = "64,64,64")]
    pub grid: [usize; 3],
    /// Patch size D,H,W (divides the grid).
    #[arg(long, value_parser = super::parse_shape, default_value = "16,16,16")]
    pub patch: [usize; 3],
    /// Width of the ViT (and, for phantoms, of the text tower).
    #[arg(long, default_value_t = 128)]
    pub hidden: usize,
    /// Vision transformer blocks.
    #[arg(long, default_value_t = 4)]
    pub layers: usize,
    /// Text transformer blocks (phantoms only).
    #[arg(long, default_value_t = 2)]
    pub text_layers: usize,
    /// Optimiser steps, each on a batch of heads (brains: from a shuffled pass over the corpus;
    /// phantoms: fresh ones). Training may sit near the uniform loss for a few hundred steps
    /// before it learns.
    #[arg(long, default_value_t = 3000)]
    pub steps: usize,
    /// Phantoms per step (each its own contrastive negative for the others).
    #[arg(long, default_value_t = 32)]
    pub batch_size: usize,
    /// Peak learning rate (after a linear warm-up over 5% of the steps; cosine decay after).
    #[arg(long, default_value_t = 5e-4)]
    pub lr: f64,
    /// Brain corpus: weight of the findings term: a linear head reads the caption's measured sizes
    /// (each structure's log share of intracranial volume, and the log intracranial volume) off
    /// the pooled image feature, and its mean squared error joins the contrastive loss, so that
    /// the small structures count too. 0 trains on the contrastive loss alone. The head is not
    /// written with the backbone.
    #[arg(long, default_value_t = 1.0)]
    pub findings_weight: f64,
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
        corpus: a.corpus,
        corpus_size: a.corpus_size,
        held_out: a.held_out,
        text_model: a.text_model.clone(),
        findings_weight: if a.corpus == Corpus::Brains { a.findings_weight } else { 0.0 },
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
