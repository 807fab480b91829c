//! `adfit params`: how many parameters each part of the method trains, for a backbone directory
//! or a named backbone shape.

use std::path::PathBuf;

use clap::{Args, ValueEnum};

use crate::model::adapt::{AdaptConfig, AdaptKind};
use crate::model::backbones::Backbone;
use crate::model::bert::{Bert, BertConfig};
use crate::model::clip::ClipBackbone;
use crate::model::cross_attention::CrossAttentionKind;
use crate::model::method::AdClip;
use crate::model::params::{parameter_groups, totals};
use crate::model::vit3d::{PosEmbedPolicy, Vit3d, Vit3dConfig};
use crate::settings::RunSettings;

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Shape {
    /// M3D-CLIP: ViT-B 3D (768, 12 layers) + bert-base-uncased.
    M3d,
    /// RadFM's ViT (768, 12 layers of 8 × 64 heads, 4×32×32 patches of 3 channels) at 128³, with
    /// bert-base-uncased (RadFM has no text tower; adfit pairs it with the paper's 12-layer BERT).
    Radfm,
    /// Med3DVLM's released CLIP: DCFormer decomp_small at 128³ (8 tokens of 768) with
    /// ClinicalBERT (DistilBERT, 6 layers of 768); the method runs its prompts in one trainable
    /// block after the CNN.
    Med3dvlm,
    /// The small test shape.
    Tiny,
}

#[derive(Debug, Args)]
pub struct ParamsArgs {
    /// A backbone directory (M3D-CLIP, RadFM or Med3DVLM layout); its weights are loaded.
    #[arg(long, conflicts_with = "shape")]
    pub backbone: Option<PathBuf>,
    /// A named backbone shape, built with random weights (no download needed).
    #[arg(long, value_enum, default_value_t = Shape::M3d)]
    pub shape: Shape,
    /// Visual prompts per layer (0 = off).
    #[arg(long, default_value_t = 20)]
    pub visual_prompts: usize,
    /// Text prompts (0 = off).
    #[arg(long, default_value_t = 30)]
    pub text_prompts: usize,
    /// Leave out the [MMSE] token and head.
    #[arg(long)]
    pub no_mmse: bool,
    #[arg(long, value_enum, default_value_t = CrossAttentionKind::MultiHead)]
    pub cross_attention: CrossAttentionKind,
    /// LoRA or bottleneck adapters in the ViT's blocks, M3D's spatial-pooling perceiver + LoRA, or
    /// full fine-tuning (add --visual-prompts 0 for the paper's rows, which replace the prompts).
    #[arg(long, value_enum, default_value_t = AdaptKind::None)]
    pub adaptation: AdaptKind,
    #[arg(long, default_value_t = 8)]
    pub lora_rank: usize,
    /// LoRA on the MLP too.
    #[arg(long)]
    pub lora_mlp: bool,
    #[arg(long, default_value_t = 8)]
    pub adapter_reduction: usize,
    /// perceiver-lora: the projector's width (768; M3D-LaMed uses its language model's, 3072
    /// for Phi-3).
    #[arg(long, default_value_t = 768)]
    pub perceiver_width: usize,
    #[arg(long, default_value_t = 2)]
    pub perceiver_depth: usize,
    /// lga: an interaction before every N-th block (4 as released; 1 with --lga-reduction 1
    /// --lga-ffn-ratio 1 --no-lga-final-injector gives the paper's +85.2M).
    #[arg(long, default_value_t = 4)]
    pub lga_every: usize,
    #[arg(long, default_value_t = 8)]
    pub lga_reduction: usize,
    #[arg(long, default_value_t = 0.25)]
    pub lga_ffn_ratio: f64,
    #[arg(long)]
    pub no_lga_final_injector: bool,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// One line per adaptation (the method, LoRA, adapter, perceiver + LoRA, LGA, full
    /// fine-tuning; each with the run config's defaults) beside the paper's figures, instead of
    /// the groups of one configuration.
    #[arg(long)]
    pub compare: bool,
}

pub fn run(a: ParamsArgs) -> anyhow::Result<()> {
    let device = Default::default();
    let backbone: ClipBackbone<crate::backend::Cpu> = match &a.backbone {
        Some(dir) => Backbone::load(dir, None, PosEmbedPolicy::Reinterpret, &device)?.model,
        None if matches!(a.shape, Shape::Med3dvlm) => {
            use crate::model::backbones::med3dvlm::{as_clip, shaped, Med3dvlmConfig};
            let config = Med3dvlmConfig::released();
            as_clip(shaped(&config, &device)?, &config, Some([128, 128, 128]), &device)
        }
        None => {
            let (v, t) = match a.shape {
                Shape::M3d => (Vit3dConfig::m3d(), BertConfig::bert_base_uncased()),
                Shape::Radfm => {
                    (Vit3dConfig { img_size: [128, 128, 128], ..Vit3dConfig::radfm() }, BertConfig::bert_base_uncased())
                }
                Shape::Med3dvlm => unreachable!("built above"),
                Shape::Tiny => (
                    Vit3dConfig::tiny(),
                    BertConfig {
                        hidden_size: 64,
                        num_hidden_layers: 2,
                        num_attention_heads: 4,
                        intermediate_size: 128,
                        ..BertConfig::bert_base_uncased()
                    },
                ),
            };
            let hidden = v.hidden_size;
            ClipBackbone::from_towers(Vit3d::init(&v, &device)?, Bert::init(&t, &device)?, hidden, &device)
        }
    };
    // The same settings type every run is configured by.
    let settings = RunSettings {
        visual_prompts: a.visual_prompts,
        text_prompts: a.text_prompts,
        mmse_token: !a.no_mmse,
        cross_attention: a.cross_attention,
        adaptation: AdaptConfig {
            kind: a.adaptation,
            lora_rank: a.lora_rank,
            lora_mlp: a.lora_mlp,
            adapter_reduction: a.adapter_reduction,
            perceiver_width: a.perceiver_width,
            perceiver_depth: a.perceiver_depth,
            lga_every: a.lga_every,
            lga_reduction: a.lga_reduction,
            lga_ffn_ratio: a.lga_ffn_ratio,
            lga_final_injector: !a.no_lga_final_injector,
            ..AdaptConfig::default()
        },
        ..RunSettings::default()
    };
    if a.compare && backbone.vit.layout.is_cnn() {
        anyhow::bail!("--compare: the adaptations need a ViT's blocks; this backbone's vision tower is a CNN");
    }
    if a.compare {
        use crate::experiment::Variant;
        let variants = [
            Variant::Full,
            Variant::Lora,
            Variant::Adapter,
            Variant::PerceiverLora,
            Variant::Lga,
            Variant::FullFinetune,
        ];
        let rows = crate::variant::count_variants(&backbone, &RunSettings::default(), &variants, &device)?;
        if a.json {
            println!("{}", serde_json::to_string_pretty(&rows)?);
            return Ok(());
        }
        println!(
            "{:<16} {:>14} {:>12} {:>16} {:>16}",
            "variant", "trainable", "frozen", "paper trainable", "paper ADNI acc"
        );
        for r in &rows {
            println!(
                "{:<16} {:>14} {:>12} {:>16} {:>16}",
                r.variant,
                crate::model::params::count(r.trainable as f64),
                format!("{:.1}M", r.frozen as f64 / 1e6),
                r.paper_trainable.unwrap_or("-"),
                r.paper_adni_accuracy.map_or("-".into(), |x| format!("{x:.1}%")),
            );
        }
        println!(
            "(paper: its M3D rows of table 2, whatever the backbone here; LoRA and adapter from its table 4; \
             \"full\" is the method)"
        );
        return Ok(());
    }
    settings.check_tower(backbone.vit.layout)?;
    let cfg = settings.method(backbone.vit.hidden_size())?;
    let model = AdClip::new(backbone, &cfg, &device);
    let groups = parameter_groups(&model);
    let (trainable, frozen) = totals(&model);
    if a.json {
        let v = serde_json::json!({"groups": groups, "trainable": trainable, "frozen": frozen});
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    println!("{:<24} {:>12}", "trainable group", "parameters");
    for g in &groups {
        println!("{:<24} {:>12}", g.group, g.params);
    }
    println!("{:<24} {:>12}  ({})", "total trainable", trainable, crate::model::params::count(trainable as f64));
    println!("{:<24} {:>12}  ({:.1}M frozen)", "frozen backbone", frozen, frozen as f64 / 1e6);
    Ok(())
}
