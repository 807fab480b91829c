//! Scaled dot-product attention and the pre-norm transformer block of MONAI 1.3's ViT (the
//! block M3D-CLIP's vision encoder uses).

use burn::nn::{LayerNorm, Linear};
use burn::prelude::*;
use burn::tensor::activation::{gelu, softmax};
use burn::tensor::ops::AttentionModuleOptions;

/// `softmax(q kᵀ · scale + bias) v` over heads.
///
/// # Shapes
/// - q: `[batch, heads, n_q, head_dim]`, k and v: `[batch, heads, n_k, head_dim]`
/// - bias (optional, additive): broadcastable to `[batch, heads, n_q, n_k]`
/// - output: `[batch, heads, n_q, head_dim]`
///
/// Without a bias this is Burn's fused attention op: backends with a kernel (Flex's tiled
/// flash attention on CPU, CubeCL's on GPU) never materialise the `n_q × n_k` score matrix in
/// inference; under autodiff Burn falls back to the decomposed form.
pub fn attention<B: Backend>(
    q: Tensor<B, 4>,
    k: Tensor<B, 4>,
    v: Tensor<B, 4>,
    scale: f64,
    bias: Option<Tensor<B, 4>>,
) -> Tensor<B, 4> {
    match bias {
        None => burn::tensor::module::attention(
            q,
            k,
            v,
            None,
            None,
            AttentionModuleOptions { scale: Some(scale), softcap: None, is_causal: false },
        ),
        Some(b) => softmax(q.matmul(k.swap_dims(2, 3)) * scale + b, 3).matmul(v),
    }
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
    /// # Shapes
    /// - x: `[batch, tokens, dim]` → `[batch, tokens, dim]`
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let [b, n, d] = x.dims();
        let hd = d / self.heads;
        // [batch, tokens, 3, heads, head_dim] → [3, batch, heads, tokens, head_dim]
        let qkv = self.qkv.forward(x).reshape([b, n, 3, self.heads, hd]).permute([2, 0, 3, 1, 4]);
        let part = |i: usize| qkv.clone().narrow(0, i, 1).reshape([b, self.heads, n, hd]);
        let out = attention(part(0), part(1), part(2), (hd as f64).powf(-0.5), None);
        self.out_proj.forward(merge_heads(out))
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
        let x = x.clone() + self.attn.forward(self.norm1.forward(x));
        x.clone() + self.mlp.forward(self.norm2.forward(x))
    }
}
