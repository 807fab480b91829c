//! Med3DVLM's CLIP (`dec_clip`, HF `MagicXin/DCFormer_SigLIP`; backbones.md §1-2): the DCFormer
//! vision encoder, a DistilBERT text tower (ClinicalBERT), projections, and SigLIP's `t_prime` and
//! `bias`. Its directory: `config.json` (`"model_type": "dec_clip"`), `model.safetensors` with
//! `vision_encoder.encoder.*`, `language_encoder.*` (DistilBERT's names), `mm_vision_proj.*`,
//! `mm_language_proj.*`, `t_prime`, `bias`, and the text tower's `vocab.txt` or `tokenizer.json`.
//!
//! It loads as adfit's CLIP backbone ([`load_clip`]): image embedding the mean of the last
//! stage's tokens → `mm_vision_proj` → L2; text embedding token 0 of DistilBERT's last hidden
//! state → `mm_language_proj` → L2; logits `images · textsᵀ · t_prime + bias`, with `t_prime`
//! used raw as Med3DVLM's single-process path does.

use std::path::Path;

use burn::module::Param;
use burn::nn::Linear;
use burn::prelude::*;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::model::bert::{Bert, BertConfig};
use crate::model::clip::ClipBackbone;
use crate::model::dcformer::{Dcformer, DcformerConfig};
use crate::model::tokenizer::TextTokenizer;
use crate::model::vit3d::{Vit3d, VitLayout};
use crate::model::weights::{read_safetensors, WeightStore};

/// `config.json`'s `model_type` of a Med3DVLM CLIP.
pub const MODEL_TYPE: &str = "dec_clip";

/// Checkpoint key prefix → internal prefix.
pub const KEY_TABLE: &[(&str, &str)] = &[
    ("vision_encoder.encoder.", "dc."),
    ("language_encoder.", "text."),
    ("mm_vision_proj.", "vision_proj."),
    ("mm_language_proj.", "text_proj."),
];

/// HF `DistilBertConfig`'s shape fields (ClinicalBERT's by default).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DistilBertConfig {
    #[serde(default = "clinical_vocab")]
    pub vocab_size: usize,
    #[serde(default = "d768")]
    pub dim: usize,
    #[serde(default = "six")]
    pub n_layers: usize,
    #[serde(default = "twelve")]
    pub n_heads: usize,
    #[serde(default = "d3072")]
    pub hidden_dim: usize,
    #[serde(default = "p512")]
    pub max_position_embeddings: usize,
}

fn clinical_vocab() -> usize {
    119_547
}
fn d768() -> usize {
    768
}
fn six() -> usize {
    6
}
fn twelve() -> usize {
    12
}
fn d3072() -> usize {
    3072
}
fn p512() -> usize {
    512
}

impl Default for DistilBertConfig {
    /// `medicalai/ClinicalBERT`: DistilBERT, 6 layers of 768, 12 heads, vocabulary 119,547.
    fn default() -> Self {
        serde_json::from_str("{}").expect("every field has a default")
    }
}

impl DistilBertConfig {
    /// The same network as a [`Bert`]: DistilBERT is BERT without token types (adfit gives it a
    /// single all-zero token-type row), post-norm, exact GELU, LayerNorm eps 1e-12.
    pub fn bert(&self) -> BertConfig {
        BertConfig {
            vocab_size: self.vocab_size,
            hidden_size: self.dim,
            num_hidden_layers: self.n_layers,
            num_attention_heads: self.n_heads,
            intermediate_size: self.hidden_dim,
            max_position_embeddings: self.max_position_embeddings,
            type_vocab_size: 1,
            ..BertConfig::bert_base_uncased()
        }
    }
}

/// `config.json` of a Med3DVLM CLIP (`DEC_CLIPConfig`'s fields), with adfit's optional shape
/// overrides for encoders other than the released one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Med3dvlmConfig {
    pub model_type: String,
    #[serde(default = "dcformer")]
    pub vision_encoder: String,
    /// (H, W, D) of the volumes it was trained on (Med3DVLM's order: 256, 256, 128).
    #[serde(default = "native_input")]
    pub input_size: [usize; 3],
    /// Joint-space size (the projections' output).
    #[serde(default = "joint")]
    pub hidden_size: usize,
    #[serde(default = "sigmoid")]
    pub loss_type: String,
    #[serde(default)]
    pub language_model_name_or_path: String,
    /// The encoder's shape when it is not `decomp_small`.
    #[serde(default)]
    pub dcformer: Option<DcformerConfig>,
    /// The text tower's shape when it is not ClinicalBERT.
    #[serde(default)]
    pub text_config: Option<DistilBertConfig>,
    #[serde(default = "p512")]
    pub max_text_len: usize,
}

fn dcformer() -> String {
    "dcformer".into()
}
fn native_input() -> [usize; 3] {
    [256, 256, 128]
}
fn joint() -> usize {
    768
}
fn sigmoid() -> String {
    "sigmoid".into()
}

impl Med3dvlmConfig {
    pub fn encoder(&self) -> DcformerConfig {
        self.dcformer.clone().unwrap_or_else(DcformerConfig::decomp_small)
    }

    pub fn text(&self) -> DistilBertConfig {
        self.text_config.clone().unwrap_or_default()
    }
}

/// Whether `dir`'s `config.json` describes a Med3DVLM CLIP.
pub fn is_med3dvlm(dir: &Path) -> bool {
    let Ok(text) = std::fs::read_to_string(dir.join("config.json")) else { return false };
    serde_json::from_str::<serde_json::Value>(&text)
        .map(|v| v.get("model_type").and_then(|t| t.as_str()) == Some(MODEL_TYPE))
        .unwrap_or(false)
}

pub fn read_config(dir: &Path) -> Result<Med3dvlmConfig> {
    let path = dir.join("config.json");
    let text = crate::limits::read_text(&path)?;
    let cfg: Med3dvlmConfig = serde_json::from_str(&text).map_err(|e| Error::Json { path: path.clone(), source: e })?;
    if cfg.vision_encoder != "dcformer" {
        return Err(Error::config(
            "vision_encoder",
            format!("{:?}: Med3DVLM released weights for \"dcformer\" only", cfg.vision_encoder),
        ));
    }
    if cfg.loss_type != "sigmoid" {
        return Err(Error::config(
            "loss_type",
            format!("{:?}: adfit reads Med3DVLM's SigLIP head (\"sigmoid\": t_prime and bias)", cfg.loss_type),
        ));
    }
    Ok(cfg)
}

/// Med3DVLM's CLIP as its checkpoint holds it; [`as_clip`] makes it adfit's CLIP backbone.
#[derive(Module, Debug)]
pub struct Med3dvlm<B: Backend> {
    pub vision: Dcformer<B>,
    pub text: Bert<B>,
    pub vision_proj: Linear<B>,
    pub text_proj: Linear<B>,
    /// SigLIP's temperature, multiplied raw. `[1]`
    pub t_prime: Param<Tensor<B, 1>>,
    /// SigLIP's logit bias. `[1]`
    pub bias: Param<Tensor<B, 1>>,
}

/// A Med3DVLM directory as adfit's CLIP backbone, for the method and the zero-shot baseline:
/// DCFormer in front of no ViT blocks ([`VitLayout::Dcformer`]), DistilBERT as the text tower,
/// `t_prime` as the logit scale, SigLIP's `bias` as the logit bias (a softmax over the class
/// prompts does not see it). Image embedding: the mean of the last stage's tokens →
/// `mm_vision_proj` → L2; text: token 0 → `mm_language_proj` → L2. The CLS token the
/// method prepends is adfit's, drawn from a fixed seed (std 0.02). `img_size` is the volumes'
/// grid (D, H, W); the released input is 128 × 256 × 256.
pub fn load_clip<B: Backend>(
    dir: &Path,
    img_size: Option<[usize; 3]>,
    device: &B::Device,
) -> Result<(super::m3d::BackboneConfig, ClipBackbone<B>, TextTokenizer)> {
    let config = read_config(dir)?;
    let weights = dir.join("model.safetensors");
    let mut store = WeightStore::<B>::new(&weights, read_safetensors(&weights)?, KEY_TABLE, device);
    let m = load_model(&config, &mut store)?;
    store.finish()?;
    let clip = as_clip(m, &config, img_size, device);
    let text = config.text();
    let bc = super::m3d::BackboneConfig {
        model_type: Some(MODEL_TYPE.into()),
        img_size: clip_grid(&config, img_size),
        patch_size: [1, 1, 1],
        hidden_size: config.encoder().width(),
        mlp_dim: 4 * config.encoder().width(),
        num_layers: 0,
        num_heads: 1,
        head_dim: None,
        checkpoint_patch_size: None,
        in_channels: 1,
        pos_embed: "dcformer".into(),
        vocab_size: text.vocab_size,
        language_model_name_or_path: config.language_model_name_or_path.clone(),
        max_text_len: config.max_text_len,
        text_config: Some(text.bert()),
        projection_dim: Some(config.hidden_size),
    };
    let tokenizer = TextTokenizer::from_file(&super::m3d::tokenizer_path(dir)?, config.max_text_len)?;
    Ok((bc, clip, tokenizer))
}

/// The volumes' grid (D, H, W): `img_size`, else the released input (`input_size` is H, W, D).
fn clip_grid(config: &Med3dvlmConfig, img_size: Option<[usize; 3]>) -> [usize; 3] {
    let [h, w, d] = config.input_size;
    img_size.unwrap_or([d, h, w])
}

/// Med3DVLM as adfit's CLIP backbone ([`load_clip`]).
pub fn as_clip<B: Backend>(
    m: Med3dvlm<B>,
    config: &Med3dvlmConfig,
    img_size: Option<[usize; 3]>,
    device: &B::Device,
) -> ClipBackbone<B> {
    let volume = clip_grid(config, img_size);
    let width = config.encoder().width();
    let tokens: usize = DcformerConfig::token_grid(volume).iter().product();
    let vit = Vit3d {
        patch_embed: None,
        cnn: Some(m.vision),
        patch_norms: None,
        pos_embed: Param::from_tensor(Tensor::zeros([1, tokens, width], device)),
        cls_token: Param::from_tensor(cls_token(width, device)),
        blocks: Vec::new(),
        norm: None,
        patch_size: [1, 1, 1],
        layout: VitLayout::Dcformer,
    };
    ClipBackbone {
        vit,
        bert: m.text,
        vision_proj: m.vision_proj,
        text_proj: m.text_proj,
        logit_scale: m.t_prime,
        logit_bias: Some(m.bias),
    }
}

impl Med3dvlmConfig {
    /// The released CLIP's configuration (`MagicXin/DCFormer_SigLIP`): DCFormer `decomp_small`,
    /// ClinicalBERT, a 768-wide joint space, 128 × 256 × 256 volumes.
    pub fn released() -> Self {
        serde_json::from_str(r#"{"model_type": "dec_clip", "language_model_name_or_path": "medicalai/ClinicalBERT"}"#)
            .expect("every other field has a default")
    }
}

/// Random-free weights of `config`'s shapes (zeros; BatchNorm variances 1): for counting
/// parameters at the released shape without its checkpoint.
pub fn shaped<B: Backend>(config: &Med3dvlmConfig, device: &B::Device) -> Result<Med3dvlm<B>> {
    let (enc, text) = (config.encoder(), config.text());
    let linear = |i, o| burn::nn::LinearConfig::new(i, o).init(device);
    Ok(Med3dvlm {
        vision: Dcformer::shaped(&enc, device),
        text: Bert::init(&text.bert(), device)?,
        vision_proj: linear(enc.width(), config.hidden_size),
        text_proj: linear(text.dim, config.hidden_size),
        t_prime: Param::from_tensor(Tensor::ones([1], device)),
        bias: Param::from_tensor(Tensor::zeros([1], device)),
    })
}

/// adfit's CLS token for a tower without one: normal, std 0.02, from a fixed seed, so every
/// load of a directory starts the method from the same token.
fn cls_token<B: Backend>(width: usize, device: &B::Device) -> Tensor<B, 3> {
    use rand::SeedableRng;
    use rand_distr::{Distribution, Normal};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0x0adf_17c1);
    let normal = Normal::new(0.0f32, 0.02).expect("a valid normal");
    let values: Vec<f32> = (0..width).map(|_| normal.sample(&mut rng)).collect();
    Tensor::from_data(burn::tensor::TensorData::new(values, [1, 1, width]), device)
}

/// The model from a store under [`KEY_TABLE`]'s internal names.
pub fn load_model<B: Backend>(config: &Med3dvlmConfig, store: &mut WeightStore<B>) -> Result<Med3dvlm<B>> {
    let enc = config.encoder();
    let text = config.text();
    let vision = Dcformer::load(&enc, store, "dc.");
    let bert = Bert::load_distilbert(&text.bert(), store, "text.")?;
    let scalar = |name: &str| -> Tensor<B, 1> {
        let v = store.raw(name).map(|r| r.data.clone());
        match v {
            Some(v) if v.len() == 1 => Tensor::from_data(burn::tensor::TensorData::new(v, [1]), store.device()),
            _ => store.tensor(name, [1]),
        }
    };
    Ok(Med3dvlm {
        vision,
        text: bert,
        vision_proj: store.linear("vision_proj", enc.width(), config.hidden_size, true),
        text_proj: store.linear("text_proj", text.dim, config.hidden_size, true),
        t_prime: Param::from_tensor(scalar("t_prime")),
        bias: Param::from_tensor(scalar("bias")),
    })
}
