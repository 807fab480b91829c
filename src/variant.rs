//! The variants an experiment runs: the paper's ablations (table 3), adfit's additions, and the
//! other adaptations the paper compares with (tables 2 and 4), each as a change to the run
//! settings; with their parameter counts beside the paper's figures.

use clap::ValueEnum;

use crate::error::Result;
use crate::model::adapt::AdaptKind;
use crate::model::clip::ClipBackbone;
use crate::model::cross_attention::CrossAttentionKind;
use crate::settings::RunSettings;

/// The variants of the paper's table 3, by what they switch off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Variant {
    /// Everything on.
    Full,
    NoVisualPrompts,
    NoMmse,
    NoTextPrompts,
    NoReport,
    NoCrossAttention,
    /// adfit's addition, not the paper's: the class-prompt objective (weight 1).
    ClassPrompts,
    /// adfit's addition: f_v and f_t start from the backbone's projections.
    BackboneProjections,
    /// The paper's table 2: LoRA (rank, alpha from the run config) in place of the visual prompts.
    Lora,
    /// The paper's table 2: bottleneck adapters in place of the visual prompts.
    Adapter,
    /// The paper's full fine-tuning: every ViT weight trains, no visual prompts.
    FullFinetune,
    /// The paper's table 2: M3D-LaMed's spatial-pooling perceiver over the patch tokens, with
    /// LoRA on the blocks, no visual prompts.
    PerceiverLora,
    /// The paper's table 2: LGA, the language-guided adapter, no visual prompts.
    Lga,
}

impl Variant {
    /// The name `--variants` takes, also the folder and table row of its runs.
    pub fn name(self) -> String {
        self.to_possible_value().map(|v| v.get_name().to_string()).unwrap_or_default()
    }

    /// `s` with this variant's component switched off.
    pub fn apply(self, mut s: RunSettings) -> RunSettings {
        match self {
            Variant::Full => {}
            Variant::NoVisualPrompts => s.visual_prompts = 0,
            Variant::NoMmse => s.mmse_token = false,
            Variant::NoTextPrompts => s.text_prompts = 0,
            Variant::NoReport => s.report = false,
            Variant::NoCrossAttention => s.cross_attention = CrossAttentionKind::Off,
            Variant::ClassPrompts => s.class_prompt_weight = 1.0,
            Variant::BackboneProjections => s.projections = crate::settings::Projections::Backbone,
            Variant::Lora | Variant::Adapter | Variant::FullFinetune | Variant::PerceiverLora | Variant::Lga => {
                s.visual_prompts = 0;
                s.adaptation.kind = self.adaptation().unwrap_or_default();
            }
        }
        s
    }

    /// The adaptation that replaces the visual prompts in the paper's other rows (tables 2, 4).
    pub fn adaptation(self) -> Option<AdaptKind> {
        match self {
            Variant::Lora => Some(AdaptKind::Lora),
            Variant::Adapter => Some(AdaptKind::Adapter),
            Variant::FullFinetune => Some(AdaptKind::Full),
            Variant::PerceiverLora => Some(AdaptKind::PerceiverLora),
            Variant::Lga => Some(AdaptKind::Lga),
            _ => None,
        }
    }
}

/// The paper's figures for a variant on the M3D backbone: trainable parameters (table 2) and
/// ADNI accuracy in % (table 2 for M3D's rows, table 4 for LoRA and adapter).
pub fn paper_figures(v: Variant) -> (Option<&'static str>, Option<f64>) {
    match v {
        Variant::Full => (Some("+12.2M"), Some(78.8)),
        Variant::Lora => (None, Some(78.5)),
        Variant::Adapter => (None, Some(75.0)),
        Variant::PerceiverLora => (Some("+35.7M"), Some(74.3)),
        Variant::Lga => (Some("+85.2M"), Some(76.7)),
        _ => (None, None),
    }
}

/// One variant's parameter count.
#[derive(Debug, Clone, serde::Serialize)]
pub struct VariantCount {
    pub variant: String,
    pub trainable: usize,
    pub frozen: usize,
    pub paper_trainable: Option<&'static str>,
    pub paper_adni_accuracy: Option<f64>,
}

/// Trainable and frozen parameters of each variant on `backbone`, `base` before the variant.
pub fn count_variants<B: burn::prelude::Backend>(
    backbone: &ClipBackbone<B>,
    base: &RunSettings,
    variants: &[Variant],
    device: &B::Device,
) -> Result<Vec<VariantCount>> {
    variants
        .iter()
        .map(|&v| {
            let cfg = v.apply(base.clone()).method(backbone.vit.hidden_size())?;
            let model = crate::model::method::AdClip::new(backbone.clone(), &cfg, device);
            let (trainable, frozen) = crate::model::params::totals(&model);
            let (paper_trainable, paper_adni_accuracy) = paper_figures(v);
            Ok(VariantCount { variant: v.name(), trainable, frozen, paper_trainable, paper_adni_accuracy })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_variant_switches_off_its_component() {
        let s = RunSettings::default();
        assert_eq!(Variant::Full.apply(s.clone()), s);
        assert_eq!(Variant::NoVisualPrompts.apply(s.clone()).visual_prompts, 0);
        assert!(!Variant::NoMmse.apply(s.clone()).mmse_token);
        assert_eq!(Variant::NoTextPrompts.apply(s.clone()).text_prompts, 0);
        assert!(!Variant::NoReport.apply(s.clone()).report);
        assert_eq!(Variant::NoCrossAttention.apply(s).cross_attention, CrossAttentionKind::Off);
    }
}
