//! BERT with Hugging Face `BertModel` semantics: embeddings (word + position + token type →
//! LayerNorm), post-norm encoder layers with exact GELU and an additive attention mask. M3D-CLIP's
//! text encoder is a bert-base-uncased-shaped BertModel; all-MiniLM-L6-v2 is a small one.
//!
//! Prompts can be inserted between the embedding layer and the encoder (after [CLS]), so the
//! embedding and the encoder are separate calls.

use burn::module::{Initializer, Param};
use burn::nn::{Embedding, EmbeddingConfig, LayerNorm, LayerNormConfig, Linear, LinearConfig};
use burn::prelude::*;
use serde::{Deserialize, Serialize};

use super::attention::packed_self_attention;
use super::cpu_norm::{gelu, layer_norm};
use super::weights::WeightStore;
use crate::error::{Error, Result};

/// The fields of HF's `BertConfig` that the computation depends on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BertConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    #[serde(default = "default_act")]
    pub hidden_act: String,
    pub max_position_embeddings: usize,
    #[serde(default = "default_types")]
    pub type_vocab_size: usize,
    #[serde(default = "default_eps")]
    pub layer_norm_eps: f64,
    /// Standard deviation of the normal initialisation (HF's `initializer_range`).
    #[serde(default = "default_init")]
    pub initializer_range: f64,
}

fn default_act() -> String {
    "gelu".into()
}
fn default_types() -> usize {
    2
}
fn default_eps() -> f64 {
    1e-12
}
fn default_init() -> f64 {
    0.02
}

impl BertConfig {
    /// bert-base-uncased, the shape of M3D-CLIP's text tower.
    pub fn bert_base_uncased() -> Self {
        BertConfig {
            vocab_size: 30522,
            hidden_size: 768,
            num_hidden_layers: 12,
            num_attention_heads: 12,
            intermediate_size: 3072,
            hidden_act: "gelu".into(),
            max_position_embeddings: 512,
            type_vocab_size: 2,
            layer_norm_eps: 1e-12,
            initializer_range: 0.02,
        }
    }

    /// A tiny text tower for tests and examples: width 32, one layer of 4 heads, 256 positions
    /// (bert-base's vocabulary).
    pub fn tiny() -> Self {
        BertConfig {
            hidden_size: 32,
            num_hidden_layers: 1,
            num_attention_heads: 4,
            intermediate_size: 64,
            max_position_embeddings: 256,
            ..Self::bert_base_uncased()
        }
    }

    /// About how many parameters this configuration describes (f64, so nothing overflows).
    pub fn params_estimate(&self) -> f64 {
        let f = |v: usize| v as f64;
        let (h, i) = (f(self.hidden_size), f(self.intermediate_size));
        let embeddings = (f(self.vocab_size) + f(self.max_position_embeddings) + f(self.type_vocab_size)) * h;
        embeddings + f(self.num_hidden_layers) * (4.0 * h * h + 2.0 * h * i + 9.0 * h + i)
    }

    pub fn validate(&self) -> Result<()> {
        if self.hidden_act != "gelu" {
            return Err(Error::config(
                "hidden_act",
                format!("{:?}: only exact \"gelu\" is implemented (BERT and MiniLM use it)", self.hidden_act),
            ));
        }
        if self.hidden_size % self.num_attention_heads != 0 {
            return Err(Error::config("num_attention_heads", "must divide hidden_size"));
        }
        Ok(())
    }
}

#[derive(Module, Debug)]
pub struct BertEmbeddings<B: Backend> {
    pub word: Embedding<B>,
    pub position: Embedding<B>,
    pub token_type: Embedding<B>,
    pub norm: LayerNorm<B>,
}

#[derive(Module, Debug)]
pub struct BertLayer<B: Backend> {
    pub query: Linear<B>,
    pub key: Linear<B>,
    pub value: Linear<B>,
    pub attn_out: Linear<B>,
    pub attn_norm: LayerNorm<B>,
    pub intermediate: Linear<B>,
    pub output: Linear<B>,
    pub out_norm: LayerNorm<B>,
    pub heads: usize,
}

impl<B: Backend> BertLayer<B> {
    /// The query, key and value projections as one matmul, `[q | k | v]` (heads outermost in
    /// each, as [`packed_self_attention`] reads them).
    fn qkv(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let lin = [&self.query, &self.key, &self.value];
        let weight = Tensor::cat(lin.iter().map(|l| l.weight.val()).collect(), 1);
        let bias = lin.iter().map(|l| l.bias.as_ref().map(|b| b.val())).collect::<Option<Vec<_>>>();
        burn::tensor::module::linear(x, weight, bias.map(|b| Tensor::cat(b, 0)))
    }

    /// # Shapes
    /// - x: `[batch, tokens, hidden]`, mask_bias: `[batch, 1, 1, tokens]` → `[batch, tokens, hidden]`
    pub fn forward(&self, x: Tensor<B, 3>, mask_bias: Tensor<B, 4>) -> Tensor<B, 3> {
        let [_, _, d] = x.dims();
        let hd = d / self.heads;
        let ctx = packed_self_attention(self.qkv(x.clone()), self.heads, 1.0 / (hd as f64).sqrt(), Some(mask_bias));
        let x = layer_norm(&self.attn_norm, x + self.attn_out.forward(ctx));
        let y = self.output.forward(gelu(self.intermediate.forward(x.clone())));
        layer_norm(&self.out_norm, x + y)
    }
}

#[derive(Module, Debug)]
pub struct Bert<B: Backend> {
    pub embeddings: BertEmbeddings<B>,
    pub layers: Vec<BertLayer<B>>,
}

/// The additive mask HF builds: 0 where `mask` is 1, a large negative where it is 0.
///
/// # Shapes
/// - mask: `[batch, tokens]` (1 = attend) → `[batch, 1, 1, tokens]`
pub fn mask_bias<B: Backend>(mask: Tensor<B, 2>) -> Tensor<B, 4> {
    let [b, n] = mask.dims();
    ((mask.neg() + 1.0) * -1e9).reshape([b, 1, 1, n])
}

impl<B: Backend> Bert<B> {
    pub fn init(cfg: &BertConfig, device: &B::Device) -> Result<Self> {
        cfg.validate()?;
        let h = cfg.hidden_size;
        let init = Initializer::Normal { mean: 0.0, std: cfg.initializer_range };
        let emb = |n| EmbeddingConfig::new(n, h).with_initializer(init.clone()).init(device);
        let ln = || LayerNormConfig::new(h).with_epsilon(cfg.layer_norm_eps).init(device);
        let lin = |i, o| LinearConfig::new(i, o).with_initializer(init.clone()).init(device);
        Ok(Bert {
            embeddings: BertEmbeddings {
                word: emb(cfg.vocab_size),
                position: emb(cfg.max_position_embeddings),
                token_type: emb(cfg.type_vocab_size),
                norm: ln(),
            },
            layers: (0..cfg.num_hidden_layers)
                .map(|_| BertLayer {
                    query: lin(h, h),
                    key: lin(h, h),
                    value: lin(h, h),
                    attn_out: lin(h, h),
                    attn_norm: ln(),
                    intermediate: lin(h, cfg.intermediate_size),
                    output: lin(cfg.intermediate_size, h),
                    out_norm: ln(),
                    heads: cfg.num_attention_heads,
                })
                .collect(),
        })
    }

    /// Load HF `BertModel` weights whose names sit under `prefix` (e.g. `text.`). The pooler is
    /// accepted and ignored (M3D-CLIP pools [CLS] of the last hidden state, not the pooler).
    pub fn load(cfg: &BertConfig, store: &mut WeightStore<B>, prefix: &str) -> Result<Self> {
        cfg.validate()?;
        store.ignore_prefix(&format!("{prefix}pooler."));
        store.ignore_prefix(&format!("{prefix}embeddings.position_ids"));
        let (h, m, eps) = (cfg.hidden_size, cfg.intermediate_size, cfg.layer_norm_eps);
        let e = |s: &str| format!("{prefix}embeddings.{s}");
        let embeddings = BertEmbeddings {
            word: store.embedding(&e("word_embeddings.weight"), cfg.vocab_size, h),
            position: store.embedding(&e("position_embeddings.weight"), cfg.max_position_embeddings, h),
            token_type: store.embedding(&e("token_type_embeddings.weight"), cfg.type_vocab_size, h),
            norm: store.layer_norm(&e("LayerNorm"), h, eps),
        };
        let layers = (0..cfg.num_hidden_layers)
            .map(|i| {
                let l = |s: &str| format!("{prefix}encoder.layer.{i}.{s}");
                BertLayer {
                    query: store.linear(&l("attention.self.query"), h, h, true),
                    key: store.linear(&l("attention.self.key"), h, h, true),
                    value: store.linear(&l("attention.self.value"), h, h, true),
                    attn_out: store.linear(&l("attention.output.dense"), h, h, true),
                    attn_norm: store.layer_norm(&l("attention.output.LayerNorm"), h, eps),
                    intermediate: store.linear(&l("intermediate.dense"), h, m, true),
                    output: store.linear(&l("output.dense"), m, h, true),
                    out_norm: store.layer_norm(&l("output.LayerNorm"), h, eps),
                    heads: cfg.num_attention_heads,
                }
            })
            .collect();
        Ok(Bert { embeddings, layers })
    }

    /// Load HF `DistilBertModel` weights under `prefix` (`embeddings.{word,position}_embeddings`,
    /// `transformer.layer.i.attention.{q,k,v,out}_lin`, `sa_layer_norm`, `ffn.lin{1,2}`,
    /// `output_layer_norm`). DistilBERT is BERT's post-norm layer without token types: the one
    /// token-type row is zero, so `embed` adds nothing for it.
    pub fn load_distilbert(cfg: &BertConfig, store: &mut WeightStore<B>, prefix: &str) -> Result<Self> {
        cfg.validate()?;
        store.ignore_prefix(&format!("{prefix}embeddings.position_ids"));
        let (h, m, eps) = (cfg.hidden_size, cfg.intermediate_size, cfg.layer_norm_eps);
        let e = |s: &str| format!("{prefix}embeddings.{s}");
        let device = store.device().clone();
        let embeddings = BertEmbeddings {
            word: store.embedding(&e("word_embeddings.weight"), cfg.vocab_size, h),
            position: store.embedding(&e("position_embeddings.weight"), cfg.max_position_embeddings, h),
            token_type: Embedding { weight: Param::from_tensor(Tensor::zeros([1, h], &device)) },
            norm: store.layer_norm(&e("LayerNorm"), h, eps),
        };
        let layers = (0..cfg.num_hidden_layers)
            .map(|i| {
                let l = |s: &str| format!("{prefix}transformer.layer.{i}.{s}");
                BertLayer {
                    query: store.linear(&l("attention.q_lin"), h, h, true),
                    key: store.linear(&l("attention.k_lin"), h, h, true),
                    value: store.linear(&l("attention.v_lin"), h, h, true),
                    attn_out: store.linear(&l("attention.out_lin"), h, h, true),
                    attn_norm: store.layer_norm(&l("sa_layer_norm"), h, eps),
                    intermediate: store.linear(&l("ffn.lin1"), h, m, true),
                    output: store.linear(&l("ffn.lin2"), m, h, true),
                    out_norm: store.layer_norm(&l("output_layer_norm"), h, eps),
                    heads: cfg.num_attention_heads,
                }
            })
            .collect();
        Ok(Bert { embeddings, layers })
    }

    pub fn hidden_size(&self) -> usize {
        self.embeddings.norm.gamma.dims()[0]
    }

    /// The embedding layer's output for token ids (positions 0..L, token type 0).
    ///
    /// # Shapes
    /// - ids: `[batch, tokens]` → `[batch, tokens, hidden]`
    pub fn embed(&self, ids: Tensor<B, 2, Int>) -> Tensor<B, 3> {
        let [b, n] = ids.dims();
        let device = ids.device();
        let positions = Tensor::<B, 1, Int>::arange(0..n as i64, &device).reshape([1, n]).expand([b, n]);
        let types = Tensor::<B, 2, Int>::zeros([b, n], &device);
        let e = &self.embeddings;
        let x = e.word.forward(ids) + e.position.forward(positions) + e.token_type.forward(types);
        layer_norm(&e.norm, x)
    }

    /// The encoder layers on an embedded sequence; returns the last hidden state and, if asked,
    /// every hidden state (entry 0 is the input).
    ///
    /// # Shapes
    /// - x: `[batch, tokens, hidden]`, mask: `[batch, tokens]` (1 = attend)
    pub fn encode(&self, x: Tensor<B, 3>, mask: Tensor<B, 2>, keep_hidden: bool) -> (Tensor<B, 3>, Vec<Tensor<B, 3>>) {
        let bias = crate::model::precision::to_dtype(mask_bias(mask), x.dtype());
        let mut hidden = Vec::new();
        let mut x = x;
        for layer in &self.layers {
            if keep_hidden {
                hidden.push(x.clone());
            }
            x = layer.forward(x, bias.clone());
        }
        if keep_hidden {
            hidden.push(x.clone());
        }
        (x, hidden)
    }

    /// `embed` then `encode`.
    pub fn forward(
        &self,
        ids: Tensor<B, 2, Int>,
        mask: Tensor<B, 2>,
        keep_hidden: bool,
    ) -> (Tensor<B, 3>, Vec<Tensor<B, 3>>) {
        self.encode(self.embed(ids), mask, keep_hidden)
    }
}

/// How a sequence of hidden states becomes one text vector.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Pooling {
    /// The [CLS] hidden state (M3D-CLIP).
    #[default]
    #[serde(alias = "Cls")]
    Cls,
    /// Mean over attended positions (sentence-transformers).
    #[serde(alias = "Mean")]
    Mean,
    /// Mean over every position, padding included (DEFT).
    #[serde(alias = "MeanAll")]
    MeanAll,
}

/// # Shapes
/// - hidden: `[batch, tokens, dim]`, mask: `[batch, tokens]` → `[batch, dim]`
pub fn pool<B: Backend>(hidden: Tensor<B, 3>, mask: Tensor<B, 2>, pooling: Pooling) -> Tensor<B, 2> {
    let [b, n, d] = hidden.dims();
    match pooling {
        Pooling::Cls => hidden.narrow(1, 0, 1).reshape([b, d]),
        Pooling::MeanAll => hidden.mean_dim(1).reshape([b, d]),
        Pooling::Mean => {
            let m = mask.reshape([b, n, 1]);
            let sum = (hidden * m.clone()).sum_dim(1).reshape([b, d]);
            sum / m.sum_dim(1).reshape([b, 1]).clamp_min(1e-9)
        }
    }
}
