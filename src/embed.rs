//! Embedding volumes and texts exactly as a backbone computes them (M3D-CLIP's `encode_image` /
//! `encode_text`), and their similarity times `logit_scale`: `adfit embed` as a library job.

use std::path::{Path, PathBuf};

use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::TensorData;
use serde::Serialize;

use crate::backend::Job;
use crate::data::nifti_io::read_nifti;
use crate::error::{Error, Result};
use crate::model::backbones::m3d::{read_config, write_safetensors, Backbone, BackboneConfig};
use crate::model::backbones::med3dvlm;
use crate::model::precision::{cast_frozen, Precision};
use crate::model::tokenizer::tokenize;
use crate::model::vit3d::PosEmbedPolicy;
use crate::model::weights::RawTensor;

/// What to embed, with which backbone.
#[derive(Debug, Clone)]
pub struct EmbedJob {
    pub backbone: PathBuf,
    /// Volumes used as stored (D, H, W), all of one grid that the backbone's patch divides.
    pub volumes: Vec<PathBuf>,
    pub texts: Vec<String>,
    /// How the position embedding meets a grid other than the backbone's own.
    pub pos_embed: PosEmbedPolicy,
    /// Element type of the frozen towers.
    pub precision: Precision,
    /// Also keep the vision encoder's final token sequence (before pooling and projection).
    pub tokens: bool,
}

/// Embeddings `[n, joint]`, texts `[m, joint]` and logits `[n, m]`.
#[derive(Debug, Clone)]
pub struct Embeddings {
    pub images: RawTensor,
    pub texts: RawTensor,
    pub logits: RawTensor,
    pub logit_scale: f32,
    /// The vision encoder's output sequence `[n, tokens, hidden]` when asked for: after the final
    /// norm, CLS first (M3D-CLIP's ViT); the patch tokens of the last block (RadFM's); the last
    /// stage's tokens (Med3DVLM's DCFormer).
    pub tokens: Option<RawTensor>,
    /// Whether token 0 of `tokens` is a CLS token.
    pub cls_first: bool,
}

/// `tokens.json`: the token sequences `[N][T][hidden]` and whether token 0 is a CLS.
#[derive(Serialize)]
struct TokensJson {
    tokens: Vec<Vec<Vec<f32>>>,
    shape: Vec<usize>,
    cls_first: bool,
}

#[derive(Serialize)]
struct EmbedJson {
    image_embeddings: Vec<Vec<f32>>,
    text_embeddings: Vec<Vec<f32>>,
    logits: Vec<Vec<f32>>,
    logit_scale: f32,
}

fn rows(t: &RawTensor) -> Vec<Vec<f32>> {
    match t.shape.as_slice() {
        [_, d] if *d > 0 => t.data.chunks(*d).map(<[f32]>::to_vec).collect(),
        [n, 0] => vec![Vec::new(); *n],
        _ => Vec::new(),
    }
}

impl Embeddings {
    /// `.json` (image_embeddings [N][D], text_embeddings [M][D], logits [N][M], logit_scale) or
    /// `.safetensors` (the same names; empty ones left out).
    pub fn write(&self, path: &Path) -> Result<()> {
        if is_json(path)? {
            let out = EmbedJson {
                image_embeddings: rows(&self.images),
                text_embeddings: rows(&self.texts),
                logits: rows(&self.logits),
                logit_scale: self.logit_scale,
            };
            return crate::util::write_json(path, &out);
        }
        let named: Vec<(String, RawTensor)> =
            [("image_embeddings", &self.images), ("text_embeddings", &self.texts), ("logits", &self.logits)]
                .into_iter()
                .filter(|(_, t)| !t.data.is_empty())
                .map(|(n, t)| (n.to_string(), t.clone()))
                .collect();
        write_safetensors(path, &named)
    }
}

impl Embeddings {
    /// The token sequences ([`EmbedJob::tokens`]) as `.json` (`tokens` [N][T][hidden], `shape`,
    /// `cls_first`) or `.safetensors` (`tokens`), when they were kept.
    pub fn write_tokens(&self, path: &Path) -> Result<()> {
        let cls_first = self.cls_first;
        let Some(t) = &self.tokens else {
            return Err(Error::config("--tokens", "the job was not asked to keep the token sequences"));
        };
        if !is_json(path)? {
            return write_safetensors(path, &[("tokens".to_string(), t.clone())]);
        }
        let (n, h) = (t.shape[0], t.shape[2]);
        let per_scan = t.shape[1] * h;
        let tokens = (0..n)
            .map(|i| t.data[i * per_scan..(i + 1) * per_scan].chunks(h.max(1)).map(<[f32]>::to_vec).collect())
            .collect();
        crate::util::write_json(path, &TokensJson { tokens, shape: t.shape.clone(), cls_first })
    }
}

/// Whether `path` asks for JSON (`.json`) rather than safetensors; anything else is an error.
pub fn is_json(path: &Path) -> Result<bool> {
    match path.extension().map(|e| e.to_string_lossy().to_lowercase()).as_deref() {
        Some("json") => Ok(true),
        Some("safetensors") => Ok(false),
        _ => Err(Error::config("--out", format!("{}: must end in .json or .safetensors", path.display()))),
    }
}

/// The volumes' voxels and their common grid, checked against the backbone's configuration
/// before any weight is read.
fn read_volumes(job: &EmbedJob) -> Result<Option<([usize; 3], Vec<f32>)>> {
    // Med3DVLM's DCFormer is a CNN: it reads any grid.
    let config = if med3dvlm::is_med3dvlm(&job.backbone) { None } else { Some(read_config(&job.backbone)?) };
    let mut grid: Option<[usize; 3]> = None;
    let mut voxels = Vec::new();
    for path in &job.volumes {
        let vol = read_nifti(path)?.volume;
        let problem = match grid {
            None => config.as_ref().and_then(|c| unreadable(c, vol.shape, job.pos_embed)),
            Some(g) if g != vol.shape => Some(format!(
                "the volume is {:?} but the first one is {g:?}: embed volumes of one grid at a time",
                vol.shape
            )),
            Some(_) => None,
        };
        if let Some(reason) = problem {
            return Err(Error::volume(path.display().to_string(), reason));
        }
        grid = Some(vol.shape);
        voxels.extend_from_slice(&vol.data);
    }
    Ok(grid.map(|g| (g, voxels)))
}

/// Why the backbone of `config` cannot read a volume of `shape` under `policy`, if it cannot.
fn unreadable(config: &BackboneConfig, shape: [usize; 3], policy: PosEmbedPolicy) -> Option<String> {
    let mut vit = config.vit();
    vit.img_size = shape;
    let divides = vit.grid().is_ok();
    // RadFM's factorised position tables serve any grid up to theirs (checked when loading).
    let tokens_fit = policy == PosEmbedPolicy::Interpolate
        || config.layout() == crate::model::vit3d::VitLayout::Radfm
        || vit.num_patches().ok() == config.vit().num_patches().ok();
    if divides && tokens_fit {
        return None;
    }
    Some(format!(
        "the volume is {shape:?} (D, H, W as stored), which the backbone (img_size {:?}, patch {:?}) cannot read{}; \
         preprocess it first (adfit preprocess --shape D,H,W, or adfit convert --resize)",
        config.img_size,
        config.patch_size,
        if divides { " with --pos-embed reinterpret (another token count): try --pos-embed interpolate" } else { "" }
    ))
}

fn raw<B: Backend, const D: usize>(t: Tensor<B, D>) -> Result<RawTensor> {
    let shape = t.dims().to_vec();
    let data = t.into_data().convert::<f32>().to_vec::<f32>().map_err(|e| Error::config("tensor", format!("{e:?}")))?;
    Ok(RawTensor { shape, data })
}

impl Job for EmbedJob {
    type Output = Embeddings;

    fn run<AD: AutodiffBackend>(self, device: AD::Device) -> Result<Embeddings> {
        type B<AD> = <AD as AutodiffBackend>::InnerBackend;
        if self.volumes.is_empty() && self.texts.is_empty() {
            return Err(Error::config("embed", "nothing to embed: give at least one volume or text"));
        }
        let volumes = read_volumes(&self)?;
        let grid = volumes.as_ref().map(|(g, _)| *g);
        let mut backbone = Backbone::<B<AD>>::load(&self.backbone, grid, self.pos_embed, &device)?;
        backbone.model = cast_frozen(backbone.model, self.precision)?;
        let joint = backbone.config.joint_dim();
        let mut tokens = None;
        let images = match volumes {
            None => Tensor::<B<AD>, 2>::zeros([0, joint], &device),
            Some(([d, h, w], voxels)) => {
                let x: Tensor<B<AD>, 5> =
                    Tensor::from_data(TensorData::new(voxels, [self.volumes.len(), 1, d, h, w]), &device);
                if self.tokens {
                    tokens = Some(raw(backbone.model.vit.forward(x.clone(), false).0)?);
                }
                backbone.model.encode_image(x)
            }
        };
        let texts = if self.texts.is_empty() {
            Tensor::<B<AD>, 2>::zeros([0, joint], &device)
        } else {
            let (ids, mask) = tokenize::<B<AD>>(&backbone.tokenizer, &self.texts, &device)?;
            backbone.model.encode_text(ids, mask)
        };
        let logit_scale = raw(backbone.model.logit_scale.val())?.data[0];
        let logits = if self.volumes.is_empty() || self.texts.is_empty() {
            RawTensor { shape: vec![self.volumes.len(), self.texts.len()], data: Vec::new() }
        } else {
            raw(backbone.model.logits(images.clone(), texts.clone()))?
        };
        let cls_first = backbone.model.vit.layout.has_cls();
        Ok(Embeddings { images: raw(images)?, texts: raw(texts)?, logits, logit_scale, tokens, cls_first })
    }
}
