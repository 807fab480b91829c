//! M3D-CLIP's published layout (HF `GoodBaiBai88/M3D-CLIP`): `config.json`, `model.safetensors`
//! with `vision_encoder.*`, `language_encoder.*`, `mm_vision_proj.*`, `mm_language_proj.*`,
//! `logit_scale`, and the BERT vocabulary (`vocab.txt` or `tokenizer.json`).
//! Backbones that adfit pre-trains itself are written in the same layout.

use std::path::{Path, PathBuf};

use burn::prelude::*;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::model::bert::{Bert, BertConfig};
use crate::model::clip::ClipBackbone;
use crate::model::text_model;
use crate::model::tokenizer::TextTokenizer;
use crate::model::vit3d::{PosEmbedPolicy, Vit3d, Vit3dConfig, VitLayout};
use crate::model::weights::{put, put_layer_norm, put_linear, read_safetensors, RawTensor, WeightStore};

/// Checkpoint key prefix → internal prefix. The one place that knows M3D-CLIP's key names.
pub const KEY_TABLE: &[(&str, &str)] = &[
    ("vision_encoder.", "vit."),
    ("language_encoder.", "text."),
    ("mm_vision_proj.", "vision_proj."),
    ("mm_language_proj.", "text_proj."),
];

/// `config.json` of an M3D-CLIP-layout backbone (its field names).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BackboneConfig {
    /// The vision encoder's family: `"radfm"` for RadFM's ViT ([`super::radfm`]); absent (or
    /// any other value, as M3D-CLIP's own) for MONAI's ViT.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_type: Option<String>,
    pub img_size: [usize; 3],
    pub patch_size: [usize; 3],
    pub hidden_size: usize,
    pub mlp_dim: usize,
    pub num_layers: usize,
    pub num_heads: usize,
    /// Width of one attention head when it is not `hidden_size / num_heads` (RadFM: 64).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub head_dim: Option<usize>,
    /// The patch the checkpoint's patch embedding was trained on, when `patch_size` differs
    /// (RadFM read at 4×16×16: the 4×32×32 embedding resampled when loaded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint_patch_size: Option<[usize; 3]>,
    #[serde(default = "one")]
    pub in_channels: usize,
    #[serde(default = "perceptron")]
    pub pos_embed: String,
    #[serde(default = "vocab")]
    pub vocab_size: usize,
    #[serde(default = "bert_base")]
    pub language_model_name_or_path: String,
    /// Texts are truncated to this many tokens, [CLS] and [SEP] included.
    #[serde(default = "max_text_len")]
    pub max_text_len: usize,
    /// The text tower's shape when it is not bert-base-uncased (HF BertConfig fields).
    #[serde(default)]
    pub text_config: Option<BertConfig>,
    /// Joint-space size; M3D-CLIP's is the vision hidden size.
    #[serde(default)]
    pub projection_dim: Option<usize>,
}

fn one() -> usize {
    1
}
fn perceptron() -> String {
    "perceptron".into()
}
fn vocab() -> usize {
    30522
}
fn bert_base() -> String {
    "bert-base-uncased".into()
}
fn max_text_len() -> usize {
    128
}

impl BackboneConfig {
    /// The `config.json` of a backbone built from these towers (M3D-CLIP's fields, with the
    /// text tower's own shape in `text_config`); `vit()` and `text()` read them back.
    pub fn from_towers(
        vit: &Vit3dConfig,
        text: BertConfig,
        language_model: &str,
        max_text_len: usize,
        projection_dim: usize,
    ) -> Self {
        BackboneConfig {
            model_type: (vit.layout == VitLayout::Radfm).then(|| super::radfm::MODEL_TYPE.to_string()),
            img_size: vit.img_size,
            patch_size: vit.patch_size,
            hidden_size: vit.hidden_size,
            mlp_dim: vit.mlp_dim,
            num_layers: vit.num_layers,
            num_heads: vit.num_heads,
            head_dim: vit.head_dim,
            checkpoint_patch_size: vit.checkpoint_patch_size,
            in_channels: vit.in_channels,
            pos_embed: "perceptron".into(),
            vocab_size: text.vocab_size,
            language_model_name_or_path: language_model.into(),
            max_text_len,
            text_config: Some(text),
            projection_dim: Some(projection_dim),
        }
    }

    pub fn vit(&self) -> Vit3dConfig {
        Vit3dConfig {
            img_size: self.img_size,
            patch_size: self.patch_size,
            in_channels: self.in_channels,
            hidden_size: self.hidden_size,
            mlp_dim: self.mlp_dim,
            num_layers: self.num_layers,
            num_heads: self.num_heads,
            layer_norm_eps: 1e-5,
            layout: self.layout(),
            head_dim: self.head_dim,
            checkpoint_patch_size: self.checkpoint_patch_size,
        }
    }

    /// The vision encoder's layout, from `model_type`.
    pub fn layout(&self) -> VitLayout {
        match self.model_type.as_deref() {
            Some(super::radfm::MODEL_TYPE) => VitLayout::Radfm,
            Some(super::med3dvlm::MODEL_TYPE) => VitLayout::Dcformer,
            _ => VitLayout::Monai,
        }
    }

    pub fn text(&self) -> Result<BertConfig> {
        if let Some(t) = &self.text_config {
            return Ok(t.clone());
        }
        let name = self.language_model_name_or_path.to_ascii_lowercase();
        if name.ends_with("bert-base-uncased") {
            let mut cfg = BertConfig::bert_base_uncased();
            cfg.vocab_size = self.vocab_size;
            return Ok(cfg);
        }
        Err(Error::config(
            "language_model_name_or_path",
            format!(
                "{:?} is not bert-base-uncased and config.json has no `text_config` describing it",
                self.language_model_name_or_path
            ),
        ))
    }

    pub fn joint_dim(&self) -> usize {
        self.projection_dim.unwrap_or(self.hidden_size)
    }
}

/// A loaded backbone directory: the model, its configuration and its tokenizer.
pub struct Backbone<B: Backend> {
    pub dir: PathBuf,
    pub config: BackboneConfig,
    pub model: ClipBackbone<B>,
    pub tokenizer: TextTokenizer,
}

/// The vocabulary file of a backbone directory: `tokenizer.json` first, then `vocab.txt`.
pub fn tokenizer_path(dir: &Path) -> Result<PathBuf> {
    ["tokenizer.json", "vocab.txt"].iter().map(|f| dir.join(f)).find(|p| p.exists()).ok_or_else(|| Error::Weights {
        path: dir.into(),
        reason: "no tokenizer.json or vocab.txt in the backbone directory".into(),
    })
}

pub fn read_config(dir: &Path) -> Result<BackboneConfig> {
    let path = dir.join("config.json");
    let text = crate::limits::read_text(&path)?;
    let cfg: BackboneConfig = serde_json::from_str(&text).map_err(|e| Error::Json { path: path.clone(), source: e })?;
    if cfg.layout() == VitLayout::Monai && cfg.pos_embed != "perceptron" {
        return Err(Error::config(
            "pos_embed",
            format!("{:?}: only M3D's \"perceptron\" patch embedding is supported", cfg.pos_embed),
        ));
    }
    cfg.vit().validate()?;
    Ok(cfg)
}

impl<B: Backend> Backbone<B> {
    /// Load `dir` strictly. `img_size` overrides the input grid (e.g. 128³ for ADNI), with
    /// `policy` deciding how the position embedding meets it.
    pub fn load(dir: &Path, img_size: Option<[usize; 3]>, policy: PosEmbedPolicy, device: &B::Device) -> Result<Self> {
        if super::med3dvlm::is_med3dvlm(dir) {
            let (config, model, tokenizer) = super::med3dvlm::load_clip(dir, img_size, device)?;
            return Ok(Backbone { dir: dir.into(), config, model, tokenizer });
        }
        let config = read_config(dir)?;
        let native = config.vit().grid()?;
        let mut vit_cfg = config.vit();
        if let Some(s) = img_size {
            vit_cfg.img_size = s;
        }
        let weights = dir.join("model.safetensors");
        let tensors = read_safetensors(&weights)?;
        let embedded_text = tensors.keys().any(|k| k.starts_with("language_encoder."));
        let mut store = WeightStore::<B>::new(&weights, tensors, KEY_TABLE, device);
        let text_claim = if embedded_text { config.text()?.params_estimate() } else { 0.0 };
        store.check_claim(&dir.join("config.json"), vit_cfg.params_estimate() + text_claim)?;
        let vit = Vit3d::load(&vit_cfg, &store, "vit.", native, policy)?;
        // The text tower: inside model.safetensors, or the Hugging Face model the config names.
        let (text_cfg, bert, vocab) = if embedded_text {
            let text_cfg = config.text()?;
            let bert = Bert::load(&text_cfg, &mut store, "text.")?;
            (text_cfg, bert, tokenizer_path(dir)?)
        } else {
            let text_dir = text_model::resolve(&config.language_model_name_or_path, dir)?;
            let text_cfg = text_model::config(&text_dir)?;
            tracing::debug!("text tower {} from {}", config.language_model_name_or_path, text_dir.display());
            let bert = text_model::load(&text_dir, &text_cfg, device)?;
            (text_cfg, bert, tokenizer_path(dir).or_else(|_| tokenizer_path(&text_dir))?)
        };
        let joint = config.joint_dim();
        let model = ClipBackbone {
            vision_proj: store.linear("vision_proj", vit_cfg.hidden_size, joint, true),
            text_proj: store.linear("text_proj", text_cfg.hidden_size, joint, true),
            logit_scale: burn::module::Param::from_tensor(scalar_param(&store, "logit_scale")),
            logit_bias: None,
            vit,
            bert,
        };
        store.finish()?;
        let tokenizer = TextTokenizer::from_file(&vocab, config.max_text_len)?;
        Ok(Backbone { dir: dir.into(), config, model, tokenizer })
    }
}

/// `logit_scale` is a 0-d tensor in M3D-CLIP's file; accept `[]` or `[1]`.
fn scalar_param<B: Backend>(store: &WeightStore<B>, name: &str) -> Tensor<B, 1> {
    match store.raw(name).map(|r| r.shape.clone()) {
        Some(shape) if shape.is_empty() => {
            let v = store.raw(name).map(|r| r.data[0]).unwrap_or(0.0);
            Tensor::from_data(burn::tensor::TensorData::new(vec![v], [1]), store.device())
        }
        _ => store.tensor(name, [1]),
    }
}

/// What of a backbone goes into its `model.safetensors`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TextWeights {
    /// Both towers (M3D-CLIP's layout).
    Embedded,
    /// No `language_encoder.*`: the text tower is the Hugging Face model that
    /// `language_model_name_or_path` names, resolved when loading (`model::text_model`).
    External,
}

/// Every tensor of a 3D ViT under MONAI's names after `prefix` (`vision_encoder.` in M3D-CLIP's
/// file), PyTorch layouts; [`Vit3d::reload`] reads them back. A RadFM ViT is written under the
/// same names (its patch LayerNorms as `patch_embeddings.{0,2}`, its position embedding one row
/// per token): the form a fully fine-tuned run keeps, not RadFM's checkpoint layout.
pub fn export_vit<B: Backend>(v: &Vit3d<B>, prefix: &str) -> Vec<(String, RawTensor)> {
    let mut out = Vec::new();
    let pe = format!("{prefix}patch_embedding");
    put(&mut out, format!("{pe}.position_embeddings"), v.pos_embed.val().into_data());
    if let Some(l) = &v.patch_embed {
        put_linear(&mut out, &format!("{pe}.patch_embeddings.1"), l);
    }
    if let Some(pn) = &v.patch_norms {
        put_layer_norm(&mut out, &format!("{pe}.patch_embeddings.0"), &pn.before);
        put_layer_norm(&mut out, &format!("{pe}.patch_embeddings.2"), &pn.after);
    }
    put(&mut out, format!("{prefix}cls_token"), v.cls_token.val().into_data());
    for (i, b) in v.blocks.iter().enumerate() {
        let p = format!("{prefix}blocks.{i}");
        put_layer_norm(&mut out, &format!("{p}.norm1"), &b.norm1);
        put_linear(&mut out, &format!("{p}.attn.qkv"), &b.attn.qkv);
        put_linear(&mut out, &format!("{p}.attn.out_proj"), &b.attn.out_proj);
        put_layer_norm(&mut out, &format!("{p}.norm2"), &b.norm2);
        put_linear(&mut out, &format!("{p}.mlp.linear1"), &b.mlp.linear1);
        put_linear(&mut out, &format!("{p}.mlp.linear2"), &b.mlp.linear2);
    }
    if let Some(norm) = &v.norm {
        put_layer_norm(&mut out, &format!("{prefix}norm"), norm);
    }
    if let Some(cnn) = &v.cnn {
        cnn.export(&format!("{prefix}cnn."), &mut out);
    }
    out
}

/// Every tensor of a backbone under M3D-CLIP's key names (PyTorch layouts: Linear `[out, in]`),
/// the inverse of [`Backbone::load`].
pub fn export<B: Backend>(m: &ClipBackbone<B>, text: TextWeights) -> Vec<(String, RawTensor)> {
    let mut out = export_vit(&m.vit, "vision_encoder.");
    if text == TextWeights::Embedded {
        let e = &m.bert.embeddings;
        let te = "language_encoder.embeddings";
        put(&mut out, format!("{te}.word_embeddings.weight"), e.word.weight.val().into_data());
        put(&mut out, format!("{te}.position_embeddings.weight"), e.position.weight.val().into_data());
        put(&mut out, format!("{te}.token_type_embeddings.weight"), e.token_type.weight.val().into_data());
        put_layer_norm(&mut out, &format!("{te}.LayerNorm"), &e.norm);
        for (i, l) in m.bert.layers.iter().enumerate() {
            let p = format!("language_encoder.encoder.layer.{i}");
            put_linear(&mut out, &format!("{p}.attention.self.query"), &l.query);
            put_linear(&mut out, &format!("{p}.attention.self.key"), &l.key);
            put_linear(&mut out, &format!("{p}.attention.self.value"), &l.value);
            put_linear(&mut out, &format!("{p}.attention.output.dense"), &l.attn_out);
            put_layer_norm(&mut out, &format!("{p}.attention.output.LayerNorm"), &l.attn_norm);
            put_linear(&mut out, &format!("{p}.intermediate.dense"), &l.intermediate);
            put_linear(&mut out, &format!("{p}.output.dense"), &l.output);
            put_layer_norm(&mut out, &format!("{p}.output.LayerNorm"), &l.out_norm);
        }
    }
    put_linear(&mut out, "mm_vision_proj", &m.vision_proj);
    put_linear(&mut out, "mm_language_proj", &m.text_proj);
    out.push((
        "logit_scale".into(),
        RawTensor { shape: vec![], data: m.logit_scale.val().into_data().to_vec::<f32>().unwrap_or_default() },
    ));
    out
}

/// Write a backbone directory in M3D-CLIP's layout: `config.json`, `model.safetensors` (f32)
/// and the vocabulary file `vocab` (copied; `None` for an external text tower, whose own
/// tokenizer is used). Each file is written atomically, the weights last.
pub fn save<B: Backend>(
    dir: &Path,
    model: &ClipBackbone<B>,
    config: &BackboneConfig,
    vocab: Option<&Path>,
    text: TextWeights,
) -> Result<()> {
    if model.vit.layout != VitLayout::Monai {
        return Err(Error::config(
            "model_type",
            "only MONAI-layout backbones are written by adfit; a RadFM directory comes from scripts/extract_radfm.py",
        ));
    }
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    if let Some(vocab) = vocab {
        let name = vocab.file_name().unwrap_or_default();
        let bytes = crate::limits::read_file(vocab)?;
        crate::util::write_bytes_atomic(&dir.join(name), &bytes)?;
    }
    let json =
        serde_json::to_string_pretty(config).map_err(|e| Error::Json { path: dir.join("config.json"), source: e })?;
    crate::util::write_bytes_atomic(&dir.join("config.json"), json.as_bytes())?;
    // The weights last: a folder with model.safetensors is a complete one.
    write_safetensors(&dir.join("model.safetensors"), &export(model, text))
}

/// Write named f32 tensors as safetensors, atomically.
pub fn write_safetensors(path: &Path, tensors: &[(String, RawTensor)]) -> Result<()> {
    write_safetensors_with_metadata(path, tensors, None)
}

/// [`write_safetensors`] with string metadata in the file's header (`__metadata__`).
pub fn write_safetensors_with_metadata(
    path: &Path,
    tensors: &[(String, RawTensor)],
    metadata: Option<std::collections::HashMap<String, String>>,
) -> Result<()> {
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = tensors
        .iter()
        .map(|(name, t)| {
            let bytes: &[u8] = bytemuck::cast_slice(&t.data);
            safetensors::tensor::TensorView::new(safetensors::Dtype::F32, t.shape.clone(), bytes)
                .map(|v| (name.clone(), v))
                .map_err(|e| Error::Weights { path: path.into(), reason: format!("{name}: {e}") })
        })
        .collect::<Result<_>>()?;
    let bytes = safetensors::serialize(views, metadata)
        .map_err(|e| Error::Weights { path: path.into(), reason: e.to_string() })?;
    crate::util::write_bytes_atomic(path, &bytes)
}

/// A bare ViT from a vision checkpoint: M3D's `pretrained_ViT.bin` (PyTorch pickle, bfloat16,
/// MONAI names without prefix) or any file whose keys carry the `vision_encoder.` prefix.
/// Strict: every key must be used.
pub fn load_vision_checkpoint<B: Backend>(
    path: &Path,
    cfg: &Vit3dConfig,
    native: [usize; 3],
    policy: PosEmbedPolicy,
    device: &B::Device,
) -> Result<Vit3d<B>> {
    let tensors = crate::model::weights::read_checkpoint(path)?;
    let prefixed = tensors.keys().any(|k| k.starts_with("vision_encoder."));
    let remap: &[(&str, &str)] = if prefixed { &[("vision_encoder.", "vit.")] } else { &[("", "vit.")] };
    let store = WeightStore::<B>::new(path, tensors, remap, device);
    let vit = Vit3d::load(cfg, &store, "vit.", native, policy)?;
    store.finish()?;
    Ok(vit)
}
