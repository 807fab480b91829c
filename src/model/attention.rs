//! Scaled dot-product attention and the pre-norm transformer block of MONAI 1.3's ViT (the
//! block M3D-CLIP's vision encoder uses).

use burn::nn::{LayerNorm, Linear};
use burn::prelude::*;
use burn::tensor::activation::softmax;
use burn::tensor::ops::AttentionModuleOptions;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::model::cpu_norm::{gelu, layer_norm};

use crate::model::chunked_attention::fits_one_block;

/// `softmax(q kᵀ · scale + bias) v` over heads.
///
/// # Shapes
/// - q: `[batch, heads, n_q, head_dim]`, k and v: `[batch, heads, n_k, head_dim]`
/// - bias (optional, additive): broadcastable to `[batch, heads, n_q, n_k]`
/// - output: `[batch, heads, n_q, head_dim]`
///
/// - Training (an autodiff backend this binary was built with): adfit's block-wise op
///   ([`crate::model::chunked_attention`]), whose backward pass recomputes the scores instead
///   of keeping `n_q × n_k` tensors. A bias that needs a gradient takes the decomposed form, and
///   so do scores that fit in one block ([`fits_one_block`]) on the GPU backends (see
///   [`crate::backend::chunked_attention`]).
/// - Inference on the CPU: the block-wise op's forward kernel
///   ([`crate::model::cpu_attention::forward`]; 3.7× faster than Flex's fused attention at
///   M3D-CLIP's 2,070 tokens), with or without a bias.
/// - Inference without a bias elsewhere: Burn's fused attention (CubeCL's on the GPU), which
///   never materialises the score matrix.
/// - Otherwise: the decomposed form, [`decomposed`].
pub fn attention<B: Backend>(
    q: Tensor<B, 4>,
    k: Tensor<B, 4>,
    v: Tensor<B, 4>,
    scale: f64,
    bias: Option<Tensor<B, 4>>,
) -> Tensor<B, 4> {
    let constant_bias = bias.as_ref().is_none_or(|b| !b.is_require_grad());
    let [b, h, n_q, _] = q.dims();
    let one_block = fits_one_block(b, h, n_q, k.dims()[2]);
    let (q, k, v, bias) = if constant_bias && !decomposed_training() {
        match crate::backend::chunked_attention(q, k, v, scale, bias, one_block) {
            Ok(out) => return out,
            Err(inputs) => inputs,
        }
    } else {
        (q, k, v, bias)
    };
    if let Some((out, _)) = crate::model::cpu_attention::forward(&q, &k, &v, scale, bias.as_ref()) {
        return out;
    }
    match bias {
        None => burn::tensor::module::attention(
            q,
            k,
            v,
            None,
            None,
            AttentionModuleOptions { scale: Some(scale), softcap: None, is_causal: false },
        ),
        Some(b) => decomposed(q, k, v, scale, Some(b)),
    }
}

/// Attention from matmul, softmax and matmul: what Burn's autodiff differentiates when no
/// fused op applies, keeping the `n_q × n_k` scores (and softmax) for the backward pass.
pub fn decomposed<B: Backend>(
    q: Tensor<B, 4>,
    k: Tensor<B, 4>,
    v: Tensor<B, 4>,
    scale: f64,
    bias: Option<Tensor<B, 4>>,
) -> Tensor<B, 4> {
    let s = q.matmul(k.swap_dims(2, 3)) * scale;
    softmax(
        match bias {
            Some(b) => s + b,
            None => s,
        },
        3,
    )
    .matmul(v)
}

/// How training (autodiff) attention is computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum TrainingAttention {
    /// adfit's block-wise op wherever the scores exceed one block: no `n × n` tensor is kept
    /// for the backward pass.
    #[default]
    BlockWise,
    /// Burn's decomposed form, as before the block-wise op: for benchmarks that measure the
    /// difference.
    Decomposed,
}

static DECOMPOSED_TRAINING: AtomicBool = AtomicBool::new(false);

/// Choose how training attention is computed, process-wide (`bench-step --attention`).
pub fn set_training_attention(kind: TrainingAttention) {
    DECOMPOSED_TRAINING.store(kind == TrainingAttention::Decomposed, Ordering::Relaxed);
}

/// Whether training attention takes Burn's decomposed form ([`set_training_attention`]).
pub(crate) fn decomposed_training() -> bool {
    DECOMPOSED_TRAINING.load(Ordering::Relaxed)
}

/// Self-attention from one packed projection: [`attention`] over the heads of `qkv`, merged.
/// On the CPU, one op from `qkv` to the merged output
/// ([`crate::model::cpu_self_attention`]; a `bias` that needs a gradient takes the generic
/// path); elsewhere split, [`attention`], merge.
///
/// # Shapes
/// - qkv: `[batch, tokens, 3 · heads · head_dim]`, `[q | k | v]` with heads outermost in each
/// - bias (optional, additive): broadcastable to `[batch, heads, tokens, tokens]`
/// - output: `[batch, tokens, heads · head_dim]`
pub fn packed_self_attention<B: Backend>(
    qkv: Tensor<B, 3>,
    heads: usize,
    scale: f64,
    bias: Option<Tensor<B, 4>>,
) -> Tensor<B, 3> {
    if let Some(out) = crate::model::cpu_self_attention::self_attention(&qkv, heads, scale, bias.as_ref()) {
        return out;
    }
    let [b, n, w] = qkv.dims();
    let hd = w / (3 * heads);
    // [batch, tokens, 3, heads, head_dim] → [3, batch, heads, tokens, head_dim]
    let qkv = qkv.reshape([b, n, 3, heads, hd]).permute([2, 0, 3, 1, 4]);
    let part = |i: usize| qkv.clone().narrow(0, i, 1).reshape([b, heads, n, hd]);
    merge_heads(attention(part(0), part(1), part(2), scale, bias))
}

/// `[batch, tokens, heads·head_dim]` → `[batch, heads, tokens, head_dim]`.
pub fn split_heads<B: Backend>(x: Tensor<B, 3>, heads: usize) -> Tensor<B, 4> {
    let [b, n, d] = x.dims();
    x.reshape([b, n, heads, d / heads]).swap_dims(1, 2)
}

/// `[batch, heads, tokens, head_dim]` → `[batch, tokens, heads·head_dim]`.
pub fn merge_heads<B: Backend>(x: Tensor<B, 4>) -> Tensor<B, 3> {
    let [b, h, n, d] = x.dims();
    x.swap_dims(1, 2).reshape([b, n, h * d])
}

/// MONAI `SABlock`: one `qkv` Linear (no bias in M3D-CLIP) whose output is `[q | k | v]`, each
/// `[heads × head_dim]` with heads outermost, then `out_proj`.
#[derive(Module, Debug)]
pub struct SelfAttention<B: Backend> {
    pub qkv: Linear<B>,
    pub out_proj: Linear<B>,
    pub heads: usize,
}

impl<B: Backend> SelfAttention<B> {
    /// The width of one head: `qkv` maps to `3 × heads × head_dim`.
    pub fn head_dim(&self) -> usize {
        self.qkv.weight.dims()[1] / (3 * self.heads.max(1))
    }

    /// `1 / √head_dim`, the scores' scale.
    pub fn scale(&self) -> f64 {
        (self.head_dim() as f64).powf(-0.5)
    }

    /// `heads × head_dim`, the width `out_proj` reads (the stream's width in MONAI's ViT).
    pub fn attention_dim(&self) -> usize {
        self.heads * self.head_dim()
    }

    /// # Shapes
    /// - x: `[batch, tokens, dim]` → `[batch, tokens, dim]`
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        self.out_proj.forward(packed_self_attention(self.qkv.forward(x), self.heads, self.scale(), None))
    }

    /// [`forward`](Self::forward) at the first `rows` tokens only: their queries against every
    /// token's keys and values. The other rows' queries, scores and output projection are never
    /// computed.
    ///
    /// # Shapes
    /// - x: `[batch, tokens, dim]` → `[batch, rows, dim]`
    pub fn forward_first(&self, x: Tensor<B, 3>, rows: usize) -> Tensor<B, 3> {
        let (ad, heads) = (self.attention_dim(), self.heads);
        // Columns `from..from + width` of the packed projection.
        let project = |x: Tensor<B, 3>, from: usize, width: usize| {
            let w = self.qkv.weight.val().narrow(1, from, width);
            let b = self.qkv.bias.as_ref().map(|b| b.val().narrow(0, from, width));
            burn::tensor::module::linear(x, w, b)
        };
        let q = split_heads(project(x.clone().narrow(1, 0, rows), 0, ad), heads);
        let kv = project(x, ad, 2 * ad);
        let k = split_heads(kv.clone().narrow(2, 0, ad), heads);
        let v = split_heads(kv.narrow(2, ad, ad), heads);
        self.out_proj.forward(merge_heads(attention(q, k, v, self.scale(), None)))
    }
}

/// MONAI `MLPBlock`: Linear → exact (erf) GELU → Linear.
#[derive(Module, Debug)]
pub struct Mlp<B: Backend> {
    pub linear1: Linear<B>,
    pub linear2: Linear<B>,
}

impl<B: Backend> Mlp<B> {
    pub fn forward<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        self.linear2.forward(gelu(self.linear1.forward(x)))
    }
}

/// MONAI `TransformerBlock`, pre-norm: `x + attn(norm1 x)`, then `x + mlp(norm2 x)`.
#[derive(Module, Debug)]
pub struct Block<B: Backend> {
    pub norm1: LayerNorm<B>,
    pub attn: SelfAttention<B>,
    pub norm2: LayerNorm<B>,
    pub mlp: Mlp<B>,
}

impl<B: Backend> Block<B> {
    /// # Shapes
    /// - x: `[batch, tokens, dim]` → `[batch, tokens, dim]`
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        self.feed_forward(x.clone() + self.attn.forward(layer_norm(&self.norm1, x)))
    }

    /// The block's second half: `x + mlp(norm2 x)`.
    fn feed_forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        x.clone() + self.mlp.forward(layer_norm(&self.norm2, x))
    }

    /// `forward(cat[head, tail])` where `tail` needs no gradient (a frozen tower's patch tokens
    /// entering its first block, behind [CLS], [MMSE] and the prompts): on the CPU under
    /// autodiff, attention's backward pass computes the head rows' gradients alone
    /// ([`crate::model::cpu_self_attention::self_attention_constant_tail`]) and the tail's
    /// projections are never differentiated. Elsewhere, or when `tail` is in the graph, the
    /// same as `forward`.
    ///
    /// # Shapes
    /// - head: `[batch, r, dim]`, tail: `[batch, n − r, dim]` → `[batch, n, dim]`
    pub fn forward_constant_tail(&self, head: Tensor<B, 3>, tail: Tensor<B, 3>) -> Tensor<B, 3> {
        let (at, scale) = (&self.attn, self.attn.scale());
        let qkv = |t: Tensor<B, 3>| at.qkv.forward(layer_norm(&self.norm1, t));
        let (qh, qt) = (qkv(head.clone()), qkv(tail.clone()));
        let a = match crate::model::cpu_self_attention::self_attention_constant_tail(&qh, &qt, at.heads, scale) {
            Some(a) => a,
            None => packed_self_attention(Tensor::cat(vec![qh, qt], 1), at.heads, scale, None),
        };
        self.feed_forward(Tensor::cat(vec![head, tail], 1) + at.out_proj.forward(a))
    }

    /// `forward(x).narrow(1, 0, rows)`, computing only those rows: every token is normed and
    /// projected to keys and values, but queries, the output projection and the MLP run on the
    /// first `rows` alone. The last block of a ViT read at its [CLS] (and [MMSE]) token needs no
    /// more, which saves most of that block's work, forward and backward.
    ///
    /// # Shapes
    /// - x: `[batch, tokens, dim]` → `[batch, rows, dim]`
    pub fn forward_first(&self, x: Tensor<B, 3>, rows: usize) -> Tensor<B, 3> {
        let a = self.attn.forward_first(layer_norm(&self.norm1, x.clone()), rows);
        self.feed_forward(x.narrow(1, 0, rows) + a)
    }
}
