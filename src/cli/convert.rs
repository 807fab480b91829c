//! `adfit convert`: one NIfTI volume through the geometry and intensity steps, to float32 NIfTI.

use std::path::PathBuf;

use anyhow::bail;
use clap::Args;

use crate::data::nifti_io::{read_nifti, write_nifti, OutType};
use crate::data::normalize::{normalize, NonFinite, Normalize, NormalizeConfig};
use crate::data::orient::to_canonical;
use crate::data::resample::resize;

#[derive(Debug, Args)]
pub struct ConvertArgs {
    /// Input NIfTI (.nii, .nii.gz, .hdr/.img). Never modified.
    pub input: PathBuf,
    /// Output NIfTI (.nii or .nii.gz), written as float32 with the updated affine.
    pub output: PathBuf,
    /// Reorient to RAS+ first (nibabel's as_closest_canonical).
    #[arg(long)]
    pub canonical: bool,
    /// Trilinear resize to D,H,W (align_corners=False, as torch and MONAI), e.g. 128,128,128.
    #[arg(long, value_parser = super::parse_shape)]
    pub resize: Option<[usize; 3]>,
    /// Intensity normalisation.
    #[arg(long, value_enum, default_value_t = Normalize::None)]
    pub normalize: Normalize,
    /// Clip to these percentiles before min-max, e.g. 0.5,99.5.
    #[arg(long, value_parser = parse_percentiles)]
    pub clip_percentiles: Option<(f32, f32)>,
    /// What to do with NaN/Inf voxels: refuse the volume, or set them to 0.
    #[arg(long, value_enum, default_value_t = NonFinite::Error)]
    pub non_finite: NonFinite,
}

pub(crate) fn parse_percentiles(s: &str) -> Result<(f32, f32), String> {
    let parts: Vec<f32> =
        s.split(',').map(|p| p.trim().parse::<f32>()).collect::<Result<_, _>>().map_err(|e| format!("{s:?}: {e}"))?;
    match parts.as_slice() {
        [lo, hi] if 0.0 <= *lo && lo < hi && *hi <= 100.0 => Ok((*lo, *hi)),
        _ => Err(format!("{s:?}: give LOW,HIGH with 0 ≤ LOW < HIGH ≤ 100")),
    }
}

pub fn run(a: ConvertArgs) -> anyhow::Result<()> {
    let name = a.output.file_name().map(|n| n.to_string_lossy().to_lowercase()).unwrap_or_default();
    if !(name.ends_with(".nii") || name.ends_with(".nii.gz")) {
        bail!("{}: the output must end in .nii or .nii.gz", a.output.display());
    }
    if let (Ok(i), Ok(o)) = (a.input.canonicalize(), a.output.canonicalize()) {
        if i == o {
            bail!("{}: refusing to overwrite the input; choose another output", a.output.display());
        }
    }
    let mut vol = read_nifti(&a.input)?.volume;
    if a.canonical {
        vol = to_canonical(vol);
    }
    let (lower_percentile, upper_percentile) = a.clip_percentiles.unwrap_or((0.0, 100.0));
    let cfg = NormalizeConfig { method: a.normalize, lower_percentile, upper_percentile, non_finite: a.non_finite };
    let what = a.input.display().to_string();
    // Non-finite values must be dealt with before resizing spreads them.
    crate::data::normalize::check_finite(&mut vol, cfg.non_finite, &what)?;
    if let Some(shape) = a.resize {
        vol = resize(&vol, shape)?;
    }
    normalize(&mut vol, &cfg, &what)?;
    write_nifti(&a.output, &vol, OutType::Float32)?;
    tracing::info!("wrote {} {:?}", a.output.display(), vol.shape);
    Ok(())
}
