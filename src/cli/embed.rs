//! `adfit embed`: image and text embeddings exactly as a backbone computes them (M3D-CLIP's
//! `encode_image` / `encode_text`), and their similarity times `logit_scale`.

use std::path::PathBuf;

use anyhow::{bail, Context};
use burn::backend::Flex;
use burn::prelude::*;
use burn::tensor::TensorData;
use clap::Args;
use serde::Serialize;

use crate::data::nifti_io::read_nifti;
use crate::model::backbones::m3d::{write_safetensors, Backbone};
use crate::model::vit3d::PosEmbedPolicy;
use crate::model::weights::RawTensor;

#[derive(Debug, Args)]
pub struct EmbedArgs {
    /// Backbone directory in M3D-CLIP's layout: config.json, model.safetensors, and
    /// vocab.txt or tokenizer.json.
    #[arg(long)]
    pub backbone: PathBuf,
    /// A volume whose stored array (D, H, W) has exactly the backbone's img_size; it is used as
    /// stored (no reorientation, resampling or normalisation: run `adfit preprocess` or
    /// `adfit convert` first). Repeat for several.
    #[arg(long = "volume")]
    pub volumes: Vec<PathBuf>,
    /// A text to embed (uncased, truncated to config.json's max_text_len). Repeat for several.
    #[arg(long = "text")]
    pub texts: Vec<String>,
    /// Output: .json (image_embeddings [N][D], text_embeddings [M][D], logits [N][M]) or
    /// .safetensors (the same names).
    #[arg(long)]
    pub out: PathBuf,
}

#[derive(Serialize)]
struct EmbedOutput {
    image_embeddings: Vec<Vec<f32>>,
    text_embeddings: Vec<Vec<f32>>,
    logits: Vec<Vec<f32>>,
    logit_scale: f32,
}

fn rows(t: &RawTensor) -> Vec<Vec<f32>> {
    match t.shape.as_slice() {
        [_, d] if *d > 0 => t.data.chunks(*d).map(<[f32]>::to_vec).collect(),
        _ => Vec::new(),
    }
}

fn raw<const D: usize>(t: Tensor<Flex, D>) -> anyhow::Result<RawTensor> {
    let shape = t.dims().to_vec();
    let data = t.into_data().to_vec::<f32>().map_err(|e| anyhow::anyhow!("{e:?}"))?;
    Ok(RawTensor { shape, data })
}

pub fn run(a: EmbedArgs) -> anyhow::Result<()> {
    if a.volumes.is_empty() && a.texts.is_empty() {
        bail!("nothing to embed: give at least one --volume or --text");
    }
    let ext = a.out.extension().map(|e| e.to_string_lossy().to_lowercase()).unwrap_or_default();
    if ext != "json" && ext != "safetensors" {
        bail!("{}: --out must end in .json or .safetensors", a.out.display());
    }
    let device = Default::default();
    let backbone = Backbone::<Flex>::load(&a.backbone, None, PosEmbedPolicy::Reinterpret, &device)
        .with_context(|| format!("loading backbone {}", a.backbone.display()))?;
    let [d, h, w] = backbone.config.img_size;
    let joint = backbone.config.joint_dim();

    let images = if a.volumes.is_empty() {
        Tensor::<Flex, 2>::zeros([0, joint], &device)
    } else {
        let mut voxels = Vec::with_capacity(a.volumes.len() * d * h * w);
        for path in &a.volumes {
            let vol = read_nifti(path)?.volume;
            if vol.shape != [d, h, w] {
                bail!(
                    "{}: the volume is {:?} but the backbone takes {:?} (D, H, W as stored); \
                     preprocess it first (adfit preprocess --shape {d},{h},{w}, or adfit convert --resize)",
                    path.display(),
                    vol.shape,
                    [d, h, w]
                );
            }
            voxels.extend_from_slice(&vol.data);
        }
        let x = Tensor::<Flex, 5>::from_data(TensorData::new(voxels, [a.volumes.len(), 1, d, h, w]), &device);
        backbone.model.encode_image(x)
    };
    let texts = if a.texts.is_empty() {
        Tensor::<Flex, 2>::zeros([0, joint], &device)
    } else {
        let enc = backbone.tokenizer.encode(&a.texts)?;
        let (b, n) = (enc.batch(), enc.len());
        let ids = Tensor::<Flex, 2, Int>::from_data(TensorData::new(enc.ids.concat(), [b, n]), &device);
        let mask: Vec<f32> = enc.mask.concat().into_iter().map(|m| m as f32).collect();
        let mask = Tensor::<Flex, 2>::from_data(TensorData::new(mask, [b, n]), &device);
        backbone.model.encode_text(ids, mask)
    };
    let scale = backbone.model.logit_scale.val().into_data().to_vec::<f32>().map_err(|e| anyhow::anyhow!("{e:?}"))?[0];
    let logits = if a.volumes.is_empty() || a.texts.is_empty() {
        Tensor::<Flex, 2>::zeros([a.volumes.len(), a.texts.len()], &device)
    } else {
        backbone.model.logits(images.clone(), texts.clone())
    };
    let (images, texts, logits) = (raw(images)?, raw(texts)?, raw(logits)?);
    if ext == "json" {
        let out = EmbedOutput {
            image_embeddings: rows(&images),
            text_embeddings: rows(&texts),
            logits: if a.texts.is_empty() { vec![Vec::new(); a.volumes.len()] } else { rows(&logits) },
            logit_scale: scale,
        };
        crate::util::write_bytes_atomic(&a.out, serde_json::to_string_pretty(&out)?.as_bytes())?;
    } else {
        let mut named = Vec::new();
        for (name, t) in [("image_embeddings", images), ("text_embeddings", texts), ("logits", logits)] {
            if !t.data.is_empty() {
                named.push((name.to_string(), t));
            }
        }
        write_safetensors(&a.out, &named)?;
    }
    println!(
        "embedded {} volume(s) and {} text(s) with {} → {}",
        a.volumes.len(),
        a.texts.len(),
        a.backbone.display(),
        a.out.display()
    );
    Ok(())
}
