//! `adfit finetune`: train the method on one fold of a split, keep the best checkpoint by
//! validation balanced accuracy, and score it on the fold's test subjects.

use std::path::PathBuf;

use clap::Args;

use super::DeviceArg;
use crate::model::bert::Pooling;
use crate::model::cross_attention::CrossAttentionKind;
use crate::model::method::ScaleInit;
use crate::model::precision::Precision;
use crate::model::vit3d::PosEmbedPolicy;
use crate::settings::{Projections, RunSettings};
use crate::train::finetune::{FinetuneJob, RunPaths};

#[derive(Debug, Clone, Args)]
pub struct FinetuneArgs {
    /// Backbone directory in M3D-CLIP's layout (`backbones/brain-64` is adfit's own small one),
    /// RadFM's (`scripts/extract_radfm.py`) or Med3DVLM's released CLIP (DCFormer: the prompts
    /// and [MMSE] run in a trainable block after the CNN); config.json's `model_type` says which.
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
    /// Continue the run in --out from its last complete epoch (same settings required; any
    /// device): weights, AdamW moments, schedule, early-stop counter and metrics are restored, so
    /// a run killed at any point ends bit-identical to one that was not (on the same device).
    #[arg(long)]
    pub resume: bool,
    #[command(flatten)]
    pub device: DeviceArg,
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
    /// AdamW's epsilon (default 1e-8, PyTorch's).
    #[arg(long, help_heading = "Overrides of the run config")]
    pub adam_eps: Option<f64>,
    /// Clip the gradients' global L2 norm to this (PyTorch's clip_grad_norm_; default: none, as
    /// in the paper).
    #[arg(long, help_heading = "Overrides of the run config")]
    pub grad_clip: Option<f64>,
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
    /// Heads of the multi-head cross-attention.
    #[arg(long, help_heading = "Overrides of the run config")]
    pub cross_attention_heads: Option<usize>,
    /// Text pooling before f_t: cls (M3D-CLIP), mean, or mean-all (DEFT).
    #[arg(long, value_enum, help_heading = "Overrides of the run config")]
    pub pooling: Option<Pooling>,
    /// The logit scale's start: paper (10) or deft (raw ln(1/0.07)).
    #[arg(long, value_enum, help_heading = "Overrides of the run config")]
    pub scale_init: Option<ScaleInit>,
    /// Train the backbone's CLS token with the prompts (true or false).
    #[arg(long, help_heading = "Overrides of the run config")]
    pub train_cls: Option<bool>,
    /// Report template JSON (configs/report.json's fields): its class prompt scores every scan
    /// at validation and test (e.g. configs/report_deft.json: "A photo of {class}:").
    #[arg(long, help_heading = "Overrides of the run config")]
    pub report_template: Option<PathBuf>,
    /// Where f_v and f_t start: fresh (the paper) or backbone (its own projections).
    #[arg(long, value_enum, help_heading = "Overrides of the run config")]
    pub projections: Option<Projections>,
    /// adfit's class-prompt objective (not the paper's): weight of an extra cross-entropy of each
    /// training image against "A photo of {class}." (0 = off, the default).
    #[arg(long, help_heading = "Overrides of the run config")]
    pub class_prompt_weight: Option<f64>,
    /// How the backbone's position embedding meets the cache's grid.
    #[arg(long, value_enum, help_heading = "Overrides of the run config")]
    pub pos_embed: Option<PosEmbedPolicy>,
    /// Element type of the frozen ViT and BERT; prompts, heads and AdamW stay f32.
    #[arg(long, value_enum, help_heading = "Overrides of the run config")]
    pub precision: Option<Precision>,
    /// Adapt the frozen ViT's blocks with LoRA (on qkv and out_proj) or bottleneck adapters
    /// (after attention and MLP), beside the visual prompts; the paper's LoRA and adapter rows
    /// replace the prompts (add --no-visual-prompts, or use `experiment --variants lora,adapter`).
    /// `perceiver-lora` adds M3D-LaMed's spatial-pooling projector over the patch tokens to LoRA;
    /// `lga` runs a language-guided adapter beside the blocks; `full` trains every ViT weight.
    #[arg(long, value_enum, help_heading = "Adaptation")]
    pub adaptation: Option<crate::model::adapt::AdaptKind>,
    /// LoRA rank (default 8).
    #[arg(long, help_heading = "Adaptation")]
    pub lora_rank: Option<usize>,
    /// LoRA alpha: updates are scaled by alpha / rank (default 16).
    #[arg(long, help_heading = "Adaptation")]
    pub lora_alpha: Option<f64>,
    /// LoRA on the MLP's two linear maps too.
    #[arg(long, help_heading = "Adaptation")]
    pub lora_mlp: bool,
    /// Adapter bottleneck width = hidden / this (default 8).
    #[arg(long, help_heading = "Adaptation")]
    pub adapter_reduction: Option<usize>,
    /// perceiver-lora: width of the spatial-pooling projector's MLP (default 768).
    #[arg(long, help_heading = "Adaptation")]
    pub perceiver_width: Option<usize>,
    /// perceiver-lora: linear layers of that MLP (default 2, as M3D-LaMed).
    #[arg(long, help_heading = "Adaptation")]
    pub perceiver_depth: Option<usize>,
    /// perceiver-lora: average-pool kernel and stride per grid axis (default 2, as M3D-LaMed).
    #[arg(long, help_heading = "Adaptation")]
    pub perceiver_pool: Option<usize>,
    /// lga: an interaction before every N-th block, from the first (default 4, as released).
    #[arg(long, help_heading = "Adaptation")]
    pub lga_every: Option<usize>,
    /// lga: attention heads of the interactions (default 1).
    #[arg(long, help_heading = "Adaptation")]
    pub lga_heads: Option<usize>,
    /// lga: the interactions' attention works at width / this (default 8).
    #[arg(long, help_heading = "Adaptation")]
    pub lga_reduction: Option<usize>,
    /// lga: FFN width = width × this (default 0.25).
    #[arg(long, help_heading = "Adaptation")]
    pub lga_ffn_ratio: Option<f64>,
    /// lga: leave out the injector after the last block.
    #[arg(long, help_heading = "Adaptation")]
    pub no_lga_final_injector: bool,
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
        s.adam_eps = self.adam_eps.unwrap_or(s.adam_eps);
        s.grad_clip = self.grad_clip.or(s.grad_clip);
        s.cross_attention_heads = self.cross_attention_heads.unwrap_or(s.cross_attention_heads);
        s.pooling = self.pooling.unwrap_or(s.pooling);
        s.scale_init = self.scale_init.unwrap_or(s.scale_init);
        s.train_cls = self.train_cls.unwrap_or(s.train_cls);
        s.report_template = self.report_template.clone().or(s.report_template);
        s.projections = self.projections.unwrap_or(s.projections);
        s.class_prompt_weight = self.class_prompt_weight.unwrap_or(s.class_prompt_weight);
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
        s.precision = self.precision.unwrap_or(s.precision);
        let a = &mut s.adaptation;
        a.kind = self.adaptation.unwrap_or(a.kind);
        a.lora_rank = self.lora_rank.unwrap_or(a.lora_rank);
        a.lora_alpha = self.lora_alpha.unwrap_or(a.lora_alpha);
        a.lora_mlp |= self.lora_mlp;
        a.adapter_reduction = self.adapter_reduction.unwrap_or(a.adapter_reduction);
        a.perceiver_width = self.perceiver_width.unwrap_or(a.perceiver_width);
        a.perceiver_depth = self.perceiver_depth.unwrap_or(a.perceiver_depth);
        a.perceiver_pool = self.perceiver_pool.unwrap_or(a.perceiver_pool);
        a.lga_every = self.lga_every.unwrap_or(a.lga_every);
        a.lga_heads = self.lga_heads.unwrap_or(a.lga_heads);
        a.lga_reduction = self.lga_reduction.unwrap_or(a.lga_reduction);
        a.lga_ffn_ratio = self.lga_ffn_ratio.unwrap_or(a.lga_ffn_ratio);
        a.lga_final_injector &= !self.no_lga_final_injector;
        s
    }
}

pub fn run(a: FinetuneArgs, quiet: bool) -> anyhow::Result<()> {
    let settings = a.overrides.resolve(a.config.as_deref())?;
    let paths = RunPaths { backbone: a.backbone, index: a.index, split: a.split, fold: a.fold, out: a.out.clone() };
    let job = FinetuneJob { paths, settings, resume: a.resume, quiet };
    let t = crate::backend::dispatch(a.device.device, job)?;
    println!(
        "fold {}: test balanced accuracy {:.3}, accuracy {:.3}, AUC {}, MMSE MAE {} ({} scans) → {}",
        t.fold,
        t.scan.classification.balanced_accuracy,
        t.scan.classification.accuracy,
        t.scan.classification.auc.map_or("-".into(), |v| format!("{v:.3}")),
        t.scan.mmse.as_ref().map_or("-".into(), |r| format!("{:.2}", r.mae)),
        t.scans,
        a.out.display()
    );
    Ok(())
}
