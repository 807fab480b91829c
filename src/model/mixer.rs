//! The token mixer: trainable pre-norm transformer blocks and a final LayerNorm that the method
//! runs after a vision tower with no blocks of its own, Med3DVLM's DCFormer.
//!
//! Deep visual prompts, the [MMSE] token and the CLS token all live in a ViT's token sequence,
//! and a CNN has none inside its layers: its only token sequence is the last stage's feature map
//! (2×2×2 = 8 tokens of 768 at 128³), which Med3DVLM mean-pools. So on DCFormer the method
//! prepends CLS, [MMSE] and the prompts to those tokens and lets them interact in new blocks
//! (MONAI's block: pre-norm attention and MLP ×4, exact GELU), with a fresh set of prompts per
//! block as VPT-deep does per ViT layer. The CNN stays frozen, as the ViT does; the blocks train.

use burn::nn::{LayerNorm, LayerNormConfig, LinearConfig};
use burn::prelude::*;

use super::attention::{Block, Mlp, SelfAttention};
use super::weights::{put_layer_norm, put_linear, RawTensor, WeightStore};

#[derive(Module, Debug)]
pub struct TokenMixer<B: Backend> {
    pub blocks: Vec<Block<B>>,
    pub norm: LayerNorm<B>,
}

/// Heads for a width: 64 wide where the width allows (12 at 768), else the most heads of at least
/// 8 dimensions that divide it.
pub fn heads_for(width: usize) -> usize {
    if width % 64 == 0 {
        return width / 64;
    }
    (1..=width / 8).rev().find(|h| width % h == 0).unwrap_or(1)
}

impl<B: Backend> TokenMixer<B> {
    /// `layers` fresh blocks of width `width` (Burn's default initialisation).
    pub fn init(layers: usize, width: usize, device: &B::Device) -> Self {
        let ln = || LayerNormConfig::new(width).with_epsilon(1e-5).init(device);
        let linear = |i, o, bias| LinearConfig::new(i, o).with_bias(bias).init(device);
        let blocks = (0..layers)
            .map(|_| Block {
                norm1: ln(),
                attn: SelfAttention {
                    qkv: linear(width, 3 * width, false),
                    out_proj: linear(width, width, true),
                    heads: heads_for(width),
                },
                norm2: ln(),
                mlp: Mlp { linear1: linear(width, 4 * width, true), linear2: linear(4 * width, width, true) },
            })
            .collect();
        TokenMixer { blocks, norm: ln() }
    }

    /// The mixer's tensors under `{prefix}mixer.{i}.{norm1, attn.qkv, attn.out_proj, norm2,
    /// mlp.linear1, mlp.linear2}` and `{prefix}mixer.norm` (PyTorch layouts).
    pub fn export(&self, prefix: &str, out: &mut Vec<(String, RawTensor)>) {
        for (i, b) in self.blocks.iter().enumerate() {
            let p = format!("{prefix}mixer.{i}");
            put_layer_norm(out, &format!("{p}.norm1"), &b.norm1);
            put_linear(out, &format!("{p}.attn.qkv"), &b.attn.qkv);
            put_linear(out, &format!("{p}.attn.out_proj"), &b.attn.out_proj);
            put_layer_norm(out, &format!("{p}.norm2"), &b.norm2);
            put_linear(out, &format!("{p}.mlp.linear1"), &b.mlp.linear1);
            put_linear(out, &format!("{p}.mlp.linear2"), &b.mlp.linear2);
        }
        put_layer_norm(out, &format!("{prefix}mixer.norm"), &self.norm);
    }

    /// Every tensor replaced by the one `store` holds under [`export`](Self::export)'s names.
    pub fn load(mut self, store: &WeightStore<B>, prefix: &str) -> Self {
        let width = self.norm.gamma.dims()[0];
        let ln = |name: String| store.layer_norm(&name, width, 1e-5);
        for (i, b) in self.blocks.iter_mut().enumerate() {
            let p = |s: &str| format!("{prefix}mixer.{i}.{s}");
            b.norm1 = ln(p("norm1"));
            b.attn.qkv = store.linear(&p("attn.qkv"), width, 3 * width, false);
            b.attn.out_proj = store.linear(&p("attn.out_proj"), width, width, true);
            b.norm2 = ln(p("norm2"));
            b.mlp.linear1 = store.linear(&p("mlp.linear1"), width, 4 * width, true);
            b.mlp.linear2 = store.linear(&p("mlp.linear2"), 4 * width, width, true);
        }
        self.norm = ln(format!("{prefix}mixer.norm"));
        self
    }
}
