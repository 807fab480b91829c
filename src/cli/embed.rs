//! `adfit embed`: image and text embeddings exactly as a backbone computes them (M3D-CLIP's
//! `encode_image` / `encode_text`), and their similarity times `logit_scale`.

use std::path::PathBuf;

use clap::Args;

use super::DeviceArg;
use crate::embed::{is_json, EmbedJob};
use crate::model::precision::Precision;
use crate::model::vit3d::PosEmbedPolicy;

#[derive(Debug, Args)]
pub struct EmbedArgs {
    /// Backbone directory: M3D-CLIP's layout, RadFM's (`"model_type": "radfm"`) or Med3DVLM's
    /// (`"dec_clip"`): config.json, model.safetensors, and vocab.txt or tokenizer.json (or the
    /// text model config.json names).
    #[arg(long)]
    pub backbone: PathBuf,
    /// A volume, used as stored (no reorientation, resampling or normalisation: run `adfit
    /// preprocess` or `adfit convert` first). Its grid (D, H, W) may differ from the backbone's
    /// img_size when the patch size divides it, as in fine-tuning (M3D-CLIP at 128³); volumes
    /// share one grid, checked before the weights are read. Repeat for several.
    #[arg(long = "volume")]
    pub volumes: Vec<PathBuf>,
    /// A text to embed (uncased, truncated to config.json's max_text_len). Repeat for several.
    #[arg(long = "text")]
    pub texts: Vec<String>,
    /// How the position embedding meets a grid other than the backbone's own: reinterpret
    /// (same token count, rows used as they are; DEFT's choice) or interpolate.
    #[arg(long, value_enum, default_value_t = PosEmbedPolicy::Reinterpret)]
    pub pos_embed: PosEmbedPolicy,
    /// Element type of the frozen ViT and BERT (outputs are f32 either way).
    #[arg(long, value_enum, default_value_t = Precision::Fp32)]
    pub precision: Precision,
    /// Output: .json (image_embeddings [N][D], text_embeddings [M][D], logits [N][M]) or
    /// .safetensors (the same names).
    #[arg(long)]
    pub out: PathBuf,
    /// Also write the vision encoder's final token sequences, before any pooling or projection
    /// (.json: tokens [N][T][hidden], shape, cls_first; or .safetensors: tokens), to compare an
    /// encoder with its reference implementation. M3D-CLIP's: after the final norm, CLS first;
    /// RadFM's: the last block's patch tokens.
    #[arg(long)]
    pub tokens: Option<PathBuf>,
    #[command(flatten)]
    pub device: DeviceArg,
}

pub fn run(a: EmbedArgs) -> anyhow::Result<()> {
    if a.volumes.is_empty() && a.texts.is_empty() {
        anyhow::bail!("nothing to embed: give at least one --volume or --text");
    }
    is_json(&a.out)?;
    if let Some(t) = &a.tokens {
        is_json(t)?;
        if a.volumes.is_empty() {
            anyhow::bail!("--tokens {}: give at least one --volume", t.display());
        }
    }
    let job = EmbedJob {
        backbone: a.backbone.clone(),
        volumes: a.volumes,
        texts: a.texts,
        pos_embed: a.pos_embed,
        precision: a.precision,
        tokens: a.tokens.is_some(),
    };
    let (n, m) = (job.volumes.len(), job.texts.len());
    let e = crate::backend::dispatch(a.device.device, job)?;
    e.write(&a.out)?;
    if let Some(t) = &a.tokens {
        e.write_tokens(t)?;
        println!("token sequences {:?} → {}", e.tokens.as_ref().map(|t| t.shape.clone()), t.display());
    }
    println!("embedded {n} volume(s) and {m} text(s) with {} → {}", a.backbone.display(), a.out.display());
    Ok(())
}
