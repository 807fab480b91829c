//! Voxel orientation: axis codes and reorientation to the closest canonical (RAS+) voxel order,
//! with nibabel's `io_orientation` / `as_closest_canonical` semantics.

use super::volume::{Affine, Volume};

/// For each storage axis: the world axis it runs along most (0 = x, 1 = y, 2 = z) and whether it
/// runs along it (+1) or against it (-1).
pub type Orientation = [(usize, i8); 3];

/// nibabel's `io_orientation`: polar-decompose the affine's 3x3 part to the closest rotation,
/// then give each voxel axis, in turn, the world axis it moves most, never reusing one.
pub fn io_orientation(affine: &Affine) -> Orientation {
    let mut rs = [[0.0f64; 3]; 3];
    for c in 0..3 {
        let zoom = (0..3).map(|r| affine[r][c] * affine[r][c]).sum::<f64>().sqrt();
        let zoom = if zoom == 0.0 { 1.0 } else { zoom };
        for r in 0..3 {
            rs[r][c] = affine[r][c] / zoom;
        }
    }
    let mut rot = polar_rotation(rs);
    let mut out = [(0usize, 1i8); 3];
    let mut used = [false; 3];
    for (in_ax, o) in out.iter_mut().enumerate() {
        let mut best = None;
        for r in 0..3 {
            if used[r] {
                continue;
            }
            let v = rot[r][in_ax];
            if best.is_none_or(|(_, b): (usize, f64)| v.abs() > b.abs()) {
                best = Some((r, v));
            }
        }
        // `best` always exists: three axes, three rows.
        let (r, v) = best.unwrap_or((in_ax, 1.0));
        *o = (r, if v < 0.0 { -1 } else { 1 });
        used[r] = true;
        for c in 0..3 {
            rot[r][c] = 0.0;
        }
    }
    out
}

/// The orthogonal factor of the polar decomposition of `m` (Newton iteration
/// `X ← (X + X⁻ᵀ) / 2`, which converges quadratically for a non-singular matrix). A singular
/// matrix is returned as it is, which still lets the arg-max pick axes.
fn polar_rotation(m: [[f64; 3]; 3]) -> [[f64; 3]; 3] {
    let mut x = m;
    for _ in 0..100 {
        let Some(inv) = inverse3(&x) else { return m };
        let mut next = [[0.0; 3]; 3];
        let mut delta: f64 = 0.0;
        for r in 0..3 {
            for c in 0..3 {
                next[r][c] = 0.5 * (x[r][c] + inv[c][r]);
                delta = delta.max((next[r][c] - x[r][c]).abs());
            }
        }
        x = next;
        if delta < 1e-15 {
            break;
        }
    }
    x
}

fn inverse3(m: &[[f64; 3]; 3]) -> Option<[[f64; 3]; 3]> {
    let det = m[0][0] * (m[1][1] * m[2][2] - m[1][2] * m[2][1]) - m[0][1] * (m[1][0] * m[2][2] - m[1][2] * m[2][0])
        + m[0][2] * (m[1][0] * m[2][1] - m[1][1] * m[2][0]);
    if det.abs() < 1e-12 {
        return None;
    }
    let mut inv = [[0.0; 3]; 3];
    for r in 0..3 {
        for c in 0..3 {
            // cofactor of (c, r)
            let (r1, r2) = ((c + 1) % 3, (c + 2) % 3);
            let (c1, c2) = ((r + 1) % 3, (r + 2) % 3);
            inv[r][c] = (m[r1][c1] * m[r2][c2] - m[r1][c2] * m[r2][c1]) / det;
        }
    }
    Some(inv)
}

/// Axis codes of an affine, e.g. `["R", "A", "S"]` (nibabel's `aff2axcodes`).
pub fn axcodes(affine: &Affine) -> [&'static str; 3] {
    const LABELS: [(&str, &str); 3] = [("L", "R"), ("P", "A"), ("I", "S")];
    let o = io_orientation(affine);
    let mut out = [""; 3];
    for (a, &(world, flip)) in o.iter().enumerate() {
        out[a] = if flip > 0 { LABELS[world].1 } else { LABELS[world].0 };
    }
    out
}

/// The volume with its voxel axes permuted and flipped so that they run R, A, S, and the affine
/// adjusted so every voxel keeps its world position (nibabel's `as_closest_canonical`).
pub fn to_canonical(vol: Volume) -> Volume {
    let o = io_orientation(&vol.affine);
    if o == [(0, 1), (1, 1), (2, 1)] {
        return vol;
    }
    // Output axis m comes from input axis `src[m]`.
    let mut src = [0usize; 3];
    for (a, &(m, _)) in o.iter().enumerate() {
        src[m] = a;
    }
    let in_shape = vol.shape;
    let shape = [in_shape[src[0]], in_shape[src[1]], in_shape[src[2]]];

    // Affine: column m is ±(input column a); flips move the origin to the far end.
    let a = &vol.affine;
    let mut affine = [[0.0; 4]; 4];
    affine[3][3] = 1.0;
    for r in 0..3 {
        affine[r][3] = a[r][3];
    }
    for (ax, &(m, flip)) in o.iter().enumerate() {
        let f = flip as f64;
        for r in 0..3 {
            affine[r][m] = f * a[r][ax];
            if flip < 0 {
                affine[r][3] += a[r][ax] * (in_shape[ax] as f64 - 1.0);
            }
        }
    }

    // Input stride of each output axis, and the start offset that flips imply.
    let in_strides = [in_shape[1] * in_shape[2], in_shape[2], 1];
    let mut stride = [0isize; 3];
    let mut start = 0isize;
    for (ax, &(m, flip)) in o.iter().enumerate() {
        let s = in_strides[ax] as isize;
        if flip < 0 {
            start += s * (in_shape[ax] as isize - 1);
            stride[m] = -s;
        } else {
            stride[m] = s;
        }
    }
    let mut data = Vec::with_capacity(vol.data.len());
    for i in 0..shape[0] {
        let oi = start + i as isize * stride[0];
        for j in 0..shape[1] {
            let oj = oi + j as isize * stride[1];
            for k in 0..shape[2] {
                data.push(vol.data[(oj + k as isize * stride[2]) as usize]);
            }
        }
    }
    Volume { shape, data, affine }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::volume::identity;

    #[test]
    fn lps_flips_two_axes() {
        let mut a = identity();
        a[0][0] = -1.0;
        a[1][1] = -2.0;
        assert_eq!(axcodes(&a), ["L", "P", "S"]);
        let vol = Volume::from_fn([2, 3, 4], a, |i, j, k| (i * 100 + j * 10 + k) as f32);
        let c = to_canonical(vol.clone());
        assert_eq!(axcodes(&c.affine), ["R", "A", "S"]);
        assert_eq!(c.shape, [2, 3, 4]);
        // voxel (0,0,0) of the canonical image is input voxel (1,2,0)
        assert_eq!(c.get(0, 0, 0), 120.0);
        // world position of canonical voxel (0,0,0) equals that of input voxel (1,2,0)
        assert_eq!(c.affine[0][3], -1.0);
        assert_eq!(c.affine[1][3], -4.0);
    }

    #[test]
    fn permuted_axes() {
        // storage axis 0 runs along z (S), 1 along x (L), 2 along y (A): "SLA"
        let mut a = [[0.0; 4]; 4];
        a[2][0] = 1.0;
        a[0][1] = -1.0;
        a[1][2] = 1.0;
        a[3][3] = 1.0;
        assert_eq!(axcodes(&a), ["S", "L", "A"]);
        let vol = Volume::from_fn([2, 3, 4], a, |i, j, k| (i * 100 + j * 10 + k) as f32);
        let c = to_canonical(vol.clone());
        assert_eq!(c.shape, [3, 4, 2]);
        assert_eq!(axcodes(&c.affine), ["R", "A", "S"]);
        // canonical (x, y, z) = input (i = z, j = 2 - x, k = y)
        for x in 0..3 {
            for y in 0..4 {
                for z in 0..2 {
                    assert_eq!(c.get(x, y, z), vol.get(z, 2 - x, y));
                }
            }
        }
    }
}
