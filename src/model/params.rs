//! Trainable-parameter accounting by group (the paper quotes "+12.2M" for its method).

use burn::module::Module;
use burn::prelude::*;
use serde::Serialize;

use super::method::AdClip;

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ParamGroup {
    pub group: &'static str,
    pub params: usize,
}

/// Trainable parameters of each part of the method, then the frozen backbone.
pub fn parameter_groups<B: Backend>(m: &AdClip<B>) -> Vec<ParamGroup> {
    let mut groups = vec![
        ParamGroup { group: "visual prompts", params: m.visual_prompts.as_ref().map_or(0, |p| p.num_params()) },
        ParamGroup { group: "LoRA / adapters", params: m.adaptation.iter().map(|a| a.num_params()).sum() },
        ParamGroup {
            group: "mmse token + head",
            params: m.mmse_token.as_ref().map_or(0, |t| t.num_params())
                + m.mmse_head.as_ref().map_or(0, |h| h.num_params()),
        },
        ParamGroup { group: "spatial-pooling perceiver", params: m.perceiver.as_ref().map_or(0, |p| p.num_params()) },
        ParamGroup { group: "language-guided adapter", params: m.lga.as_ref().map_or(0, |l| l.num_params()) },
        ParamGroup { group: "token mixer (CNN tower)", params: m.mixer.as_ref().map_or(0, |x| x.num_params()) },
        ParamGroup { group: "text prompts", params: m.text_prompts.as_ref().map_or(0, |p| p.num_params()) },
        ParamGroup { group: "image projection f_v", params: m.f_v.num_params() },
        ParamGroup { group: "text projection f_t", params: m.f_t.num_params() },
        ParamGroup { group: "cross-attention", params: m.cross_attention.num_params() },
        ParamGroup { group: "logit scale", params: m.scale.num_params() },
    ];
    if m.full_vit {
        groups.push(ParamGroup { group: "vision encoder (all)", params: m.backbone.vit.trainable_params() });
    } else if m.train_cls {
        groups.push(ParamGroup { group: "backbone CLS token", params: m.backbone.vit.cls_token.num_params() });
    }
    groups
}

/// Trainable total and frozen backbone size.
pub fn totals<B: Backend>(m: &AdClip<B>) -> (usize, usize) {
    let trainable: usize = parameter_groups(m).iter().map(|g| g.params).sum();
    let trained_in_backbone = match (m.full_vit, m.train_cls) {
        (true, _) => m.backbone.vit.trainable_params(),
        (false, true) => m.backbone.vit.cls_token.num_params(),
        _ => 0,
    };
    (trainable, m.backbone.num_params() - trained_in_backbone)
}

/// A parameter count as people write it: `+6.41M`, or `+81.0K` below a million.
pub fn count(n: f64) -> String {
    if n >= 1e6 {
        format!("+{:.2}M", n / 1e6)
    } else if n >= 1e3 {
        format!("+{:.1}K", n / 1e3)
    } else {
        format!("+{n:.0}")
    }
}
