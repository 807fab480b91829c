//! A NIfTI-1 header's voxel-to-world affine, as nibabel's `get_best_affine` chooses it: the sform
//! when `sform_code > 0`, else the qform when `qform_code > 0`, else a pixdim-only affine centred
//! on the volume with x flipped.

use nifti::NiftiHeader;

use super::volume::Affine;

/// Which of sform, qform or pixdim gave the affine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AffineSource {
    Sform,
    Qform,
    Pixdim,
}

/// nibabel's `get_best_affine`.
pub(super) fn best_affine(h: &NiftiHeader, shape: [usize; 3]) -> std::result::Result<(Affine, AffineSource), String> {
    if h.sform_code > 0 {
        let rows = [h.srow_x, h.srow_y, h.srow_z];
        let mut a = [[0.0; 4]; 4];
        for (r, row) in rows.iter().enumerate() {
            for c in 0..4 {
                a[r][c] = row[c] as f64;
            }
        }
        a[3][3] = 1.0;
        if a.iter().flatten().any(|v| !v.is_finite()) {
            return Err("sform holds a non-finite value".into());
        }
        return Ok((a, AffineSource::Sform));
    }
    if h.qform_code > 0 {
        return Ok((qform_affine(h)?, AffineSource::Qform));
    }
    let zooms = [h.pixdim[1] as f64, h.pixdim[2] as f64, h.pixdim[3] as f64];
    let mut a = [[0.0; 4]; 4];
    for c in 0..3 {
        let z = if zooms[c].is_finite() && zooms[c] != 0.0 { zooms[c].abs() } else { 1.0 };
        let z = if c == 0 { -z } else { z };
        a[c][c] = z;
        a[c][3] = -((shape[c] as f64 - 1.0) / 2.0) * z;
    }
    a[3][3] = 1.0;
    Ok((a, AffineSource::Pixdim))
}

/// The qform affine from quaternion, pixdim and qfac (nibabel's `get_qform`).
fn qform_affine(h: &NiftiHeader) -> std::result::Result<Affine, String> {
    let (b, c, d) = (h.quatern_b as f64, h.quatern_c as f64, h.quatern_d as f64);
    let w2 = 1.0 - (b * b + c * c + d * d);
    let thresh = -(f32::EPSILON as f64) * 3.0;
    let a = if w2 < 0.0 {
        if w2 < thresh {
            return Err(format!("qform quaternion ({b}, {c}, {d}) has norm > 1"));
        }
        0.0
    } else {
        w2.sqrt()
    };
    let r = [
        [a * a + b * b - c * c - d * d, 2.0 * (b * c - a * d), 2.0 * (b * d + a * c)],
        [2.0 * (b * c + a * d), a * a + c * c - b * b - d * d, 2.0 * (c * d - a * b)],
        [2.0 * (b * d - a * c), 2.0 * (c * d + a * b), a * a + d * d - b * b - c * c],
    ];
    let mut vox = [h.pixdim[1] as f64, h.pixdim[2] as f64, h.pixdim[3] as f64];
    if vox.iter().any(|v| *v < 0.0 || !v.is_finite()) {
        return Err(format!("pixdim[1..4] = {vox:?} must be positive for a qform"));
    }
    let qfac = if h.pixdim[0] == -1.0 { -1.0 } else { 1.0 };
    vox[2] *= qfac;
    let mut out = [[0.0; 4]; 4];
    for i in 0..3 {
        for j in 0..3 {
            out[i][j] = r[i][j] * vox[j];
        }
    }
    out[0][3] = h.quatern_x as f64;
    out[1][3] = h.quatern_y as f64;
    out[2][3] = h.quatern_z as f64;
    out[3][3] = 1.0;
    Ok(out)
}
