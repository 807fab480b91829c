//! Cross-attention between the image and text embeddings that are compared (paper eq. 8-9):
//! each image embedding attends over the texts of the batch (or the class prompts at inference)
//! and each text over the images, with a residual connection.

use burn::module::Initializer;
use burn::nn::{Linear, LinearConfig};
use burn::prelude::*;
use burn::tensor::activation::softmax;
use serde::{Deserialize, Serialize};

use super::attention::{attention, merge_heads, split_heads};
use super::weights::WeightStore;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum CrossAttentionKind {
    /// Learnable multi-head attention, one module per direction (adfit's default).
    #[default]
    MultiHead,
    /// Parameter-free single-head form exactly as the paper writes it.
    Simple,
    /// No cross-attention: v̂ = v, ŵ = w.
    Off,
}

/// `torch.nn.MultiheadAttention` over a single sequence (the batch of embeddings).
#[derive(Module, Debug)]
pub struct Mha<B: Backend> {
    pub q: Linear<B>,
    pub k: Linear<B>,
    pub v: Linear<B>,
    pub out: Linear<B>,
    pub heads: usize,
}

impl<B: Backend> Mha<B> {
    pub fn init(dim: usize, heads: usize, device: &B::Device) -> Self {
        // torch initialises in_proj with Xavier-uniform and zero biases.
        let xavier = Initializer::XavierUniform { gain: 1.0 };
        let lin = |init: Initializer| LinearConfig::new(dim, dim).with_initializer(init).init(device);
        let zero_bias = |mut l: Linear<B>| {
            // `zeros_like` is a new, untracked tensor: mark it trainable again.
            l.bias = l.bias.map(|b| b.map(|t| t.zeros_like().require_grad()));
            l
        };
        Mha {
            q: zero_bias(lin(xavier.clone())),
            k: zero_bias(lin(xavier.clone())),
            v: zero_bias(lin(xavier)),
            // Zero output projection: each direction starts as the identity (v̂ = v, ŵ = w) and
            // learns how much to mix. With torch's random init the attended term, nearly the same
            // for every image while the texts are alike, swamps v and training collapses to equal
            // logits.
            out: zero_bias(lin(Initializer::Zeros)),
            heads,
        }
    }

    /// From torch's packed `in_proj_weight` `[3·dim, dim]` / `in_proj_bias` and `out_proj`.
    pub fn load(store: &WeightStore<B>, prefix: &str, dim: usize, heads: usize) -> Self {
        let w = format!("{prefix}.in_proj_weight");
        let b = store.tensor::<1>(&format!("{prefix}.in_proj_bias"), [3 * dim]);
        let part = |i: usize| Linear {
            weight: burn::module::Param::from_tensor(store.transposed(&w, [3 * dim, dim], i * dim..(i + 1) * dim)),
            bias: Some(burn::module::Param::from_tensor(b.clone().narrow(0, i * dim, dim))),
        };
        Mha {
            q: part(0),
            k: part(1),
            v: part(2),
            out: store.linear(&format!("{prefix}.out_proj"), dim, dim, true),
            heads,
        }
    }

    /// # Shapes
    /// - query: `[n_q, dim]`, key/value: `[n_k, dim]` → `[n_q, dim]`
    pub fn forward(&self, query: Tensor<B, 2>, kv: Tensor<B, 2>) -> Tensor<B, 2> {
        let [n_q, d] = query.dims();
        let [n_k, _] = kv.dims();
        let q = split_heads(self.q.forward(query).reshape([1, n_q, d]), self.heads);
        let k = split_heads(self.k.forward(kv.clone()).reshape([1, n_k, d]), self.heads);
        let v = split_heads(self.v.forward(kv).reshape([1, n_k, d]), self.heads);
        let hd = d / self.heads;
        let o = merge_heads(attention(q, k, v, 1.0 / (hd as f64).sqrt(), None)).reshape([n_q, d]);
        self.out.forward(o)
    }
}

#[derive(Module, Debug)]
pub struct CrossAttention<B: Backend> {
    pub image_to_text: Option<Mha<B>>,
    pub text_to_image: Option<Mha<B>>,
    #[module(skip)]
    pub kind: CrossAttentionKind,
}

impl<B: Backend> CrossAttention<B> {
    pub fn init(kind: CrossAttentionKind, dim: usize, heads: usize, device: &B::Device) -> Self {
        let mha = || (kind == CrossAttentionKind::MultiHead).then(|| Mha::init(dim, heads, device));
        CrossAttention { image_to_text: mha(), text_to_image: mha(), kind }
    }

    /// Refine `v` (images) with `w` (texts) and `w` with `v`.
    ///
    /// # Shapes
    /// - v: `[n_images, dim]`, w: `[n_texts, dim]` → (`[n_images, dim]`, `[n_texts, dim]`)
    pub fn forward(&self, v: Tensor<B, 2>, w: Tensor<B, 2>) -> (Tensor<B, 2>, Tensor<B, 2>) {
        match (self.kind, &self.image_to_text, &self.text_to_image) {
            (CrossAttentionKind::MultiHead, Some(i2t), Some(t2i)) => {
                let v_hat = v.clone() + i2t.forward(v.clone(), w.clone());
                let w_hat = w.clone() + t2i.forward(w, v);
                (v_hat, w_hat)
            }
            (CrossAttentionKind::Simple, _, _) => {
                let [_, d] = v.dims();
                let s = 1.0 / (d as f64).sqrt();
                let v_hat = softmax(v.clone().matmul(w.clone().transpose()) * s, 1).matmul(w.clone()) + v.clone();
                let w_hat = softmax(w.clone().matmul(v.clone().transpose()) * s, 1).matmul(v) + w;
                (v_hat, w_hat)
            }
            _ => (v, w),
        }
    }
}
