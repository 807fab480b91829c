//! NIfTI-1 writing: single-file `.nii` / `.nii.gz`, float32, int16 or uint8, with the affine kept
//! as both sform and qform.

use std::io::Write;
use std::path::Path;

use super::volume::{Affine, Volume};
use crate::error::{Error, Result};

fn is_gz(path: &Path) -> bool {
    path.extension().is_some_and(|e| e.eq_ignore_ascii_case("gz"))
}

/// The on-disk type of a written volume.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutType {
    Float32,
    Uint8,
    Int16,
}

/// Write `vol` as a single-file NIfTI-1 (`.nii` or `.nii.gz`, by extension), atomically: the
/// bytes go to a temporary name in the same folder, which is renamed when complete.
///
/// The affine is stored as both sform and qform (code 1, scanner) like nibabel does, so viewers
/// that read either agree. Integer outputs round and saturate; values are written unscaled.
pub fn write_nifti(path: &Path, vol: &Volume, out: OutType) -> Result<()> {
    let bytes = encode(vol, out)?;
    crate::util::write_atomic(path, |w| {
        if is_gz(path) {
            let mut gz = flate2::write::GzEncoder::new(w, flate2::Compression::new(4));
            gz.write_all(&bytes)?;
            gz.finish()?;
        } else {
            w.write_all(&bytes)?;
        }
        Ok(())
    })
}

fn encode(vol: &Volume, out: OutType) -> Result<Vec<u8>> {
    let [n0, n1, n2] = vol.shape;
    for (a, &s) in vol.shape.iter().enumerate() {
        if s == 0 || s > i16::MAX as usize {
            return Err(Error::volume("output volume", format!("axis {a} has size {s}, not in 1..32767")));
        }
    }
    let (code, size) = match out {
        OutType::Float32 => (16i16, 4usize),
        OutType::Uint8 => (2, 1),
        OutType::Int16 => (4, 2),
    };
    let mut buf = Vec::with_capacity(352 + vol.len() * size);
    let mut h = [0u8; 348];
    let put_i32 = |h: &mut [u8; 348], at: usize, v: i32| h[at..at + 4].copy_from_slice(&v.to_le_bytes());
    let put_i16 = |h: &mut [u8; 348], at: usize, v: i16| h[at..at + 2].copy_from_slice(&v.to_le_bytes());
    let put_f32 = |h: &mut [u8; 348], at: usize, v: f32| h[at..at + 4].copy_from_slice(&v.to_le_bytes());
    put_i32(&mut h, 0, 348);
    h[38] = b'r';
    let dims = [3i16, n0 as i16, n1 as i16, n2 as i16, 1, 1, 1, 1];
    for (i, d) in dims.iter().enumerate() {
        put_i16(&mut h, 40 + 2 * i, *d);
    }
    put_i16(&mut h, 70, code);
    put_i16(&mut h, 72, (size * 8) as i16);
    let zooms = vol.voxel_size();
    let q = quaternion_of(&vol.affine);
    let pixdim = [q.qfac as f32, zooms[0] as f32, zooms[1] as f32, zooms[2] as f32, 1.0, 1.0, 1.0, 1.0];
    for (i, p) in pixdim.iter().enumerate() {
        put_f32(&mut h, 76 + 4 * i, *p);
    }
    put_f32(&mut h, 108, 352.0);
    put_f32(&mut h, 112, 1.0); // scl_slope: data are written unscaled
    put_f32(&mut h, 116, 0.0);
    h[123] = 2 | 8; // mm, seconds
    let descrip = b"adfit";
    h[148..148 + descrip.len()].copy_from_slice(descrip);
    put_i16(&mut h, 252, 1); // qform_code: scanner
    put_i16(&mut h, 254, 1); // sform_code: scanner
    put_f32(&mut h, 256, q.b as f32);
    put_f32(&mut h, 260, q.c as f32);
    put_f32(&mut h, 264, q.d as f32);
    for r in 0..3 {
        put_f32(&mut h, 268 + 4 * r, vol.affine[r][3] as f32);
        for c in 0..4 {
            put_f32(&mut h, 280 + 16 * r + 4 * c, vol.affine[r][c] as f32);
        }
    }
    h[344..348].copy_from_slice(b"n+1\0");
    buf.extend_from_slice(&h);
    buf.extend_from_slice(&[0u8; 4]); // no extensions
                                      // C order in memory → Fortran order on disk.
    for k in 0..n2 {
        for j in 0..n1 {
            for i in 0..n0 {
                let v = vol.data[(i * n1 + j) * n2 + k];
                match out {
                    OutType::Float32 => buf.extend_from_slice(&v.to_le_bytes()),
                    OutType::Uint8 => buf.push(v.round().clamp(0.0, 255.0) as u8),
                    OutType::Int16 => {
                        let x = if v.is_nan() { 0 } else { v.round().clamp(-32768.0, 32767.0) as i16 };
                        buf.extend_from_slice(&x.to_le_bytes())
                    }
                }
            }
        }
    }
    Ok(buf)
}

struct Quaternion {
    b: f64,
    c: f64,
    d: f64,
    qfac: f64,
}

/// The rotation part of an affine as a NIfTI quaternion (nibabel's `mat2quat` on the polar-
/// decomposed, column-normalised rotation, with qfac absorbing a reflection).
fn quaternion_of(a: &Affine) -> Quaternion {
    let zooms = {
        let mut z = [0.0; 3];
        for (c, zc) in z.iter_mut().enumerate() {
            *zc = (a[0][c] * a[0][c] + a[1][c] * a[1][c] + a[2][c] * a[2][c]).sqrt().max(1e-12);
        }
        z
    };
    let mut r = [[0.0; 3]; 3];
    for i in 0..3 {
        for j in 0..3 {
            r[i][j] = a[i][j] / zooms[j];
        }
    }
    let det = r[0][0] * (r[1][1] * r[2][2] - r[1][2] * r[2][1]) - r[0][1] * (r[1][0] * r[2][2] - r[1][2] * r[2][0])
        + r[0][2] * (r[1][0] * r[2][1] - r[1][1] * r[2][0]);
    let qfac = if det < 0.0 {
        for row in r.iter_mut() {
            row[2] = -row[2];
        }
        -1.0
    } else {
        1.0
    };
    // Shepperd's method, then make the scalar part non-negative as NIfTI requires.
    let tr = r[0][0] + r[1][1] + r[2][2];
    let (w, x, y, z);
    if tr > 0.0 {
        let s = (tr + 1.0).sqrt() * 2.0;
        w = 0.25 * s;
        x = (r[2][1] - r[1][2]) / s;
        y = (r[0][2] - r[2][0]) / s;
        z = (r[1][0] - r[0][1]) / s;
    } else if r[0][0] > r[1][1] && r[0][0] > r[2][2] {
        let s = (1.0 + r[0][0] - r[1][1] - r[2][2]).sqrt() * 2.0;
        w = (r[2][1] - r[1][2]) / s;
        x = 0.25 * s;
        y = (r[0][1] + r[1][0]) / s;
        z = (r[0][2] + r[2][0]) / s;
    } else if r[1][1] > r[2][2] {
        let s = (1.0 + r[1][1] - r[0][0] - r[2][2]).sqrt() * 2.0;
        w = (r[0][2] - r[2][0]) / s;
        x = (r[0][1] + r[1][0]) / s;
        y = 0.25 * s;
        z = (r[1][2] + r[2][1]) / s;
    } else {
        let s = (1.0 + r[2][2] - r[0][0] - r[1][1]).sqrt() * 2.0;
        w = (r[1][0] - r[0][1]) / s;
        x = (r[0][2] + r[2][0]) / s;
        y = (r[1][2] + r[2][1]) / s;
        z = 0.25 * s;
    }
    let sign = if w < 0.0 { -1.0 } else { 1.0 };
    Quaternion { b: x * sign, c: y * sign, d: z * sign, qfac }
}
