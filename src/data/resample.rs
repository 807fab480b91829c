//! Geometry changes that keep the world position of every voxel: trilinear resize (PyTorch's
//! `interpolate(mode="trilinear", align_corners=False)`, which MONAI's `Resize` uses), its
//! nearest-neighbour counterpart for label maps, and crop to the foreground bounding box (MONAI's
//! `CropForeground`), split into finding the box and cutting it so that a label map can be cut
//! with the box its image chose.

use super::volume::{matmul, Affine, Volume};
use crate::error::{Error, Result};

/// For one output index along an axis: the two input indices and the weight of the second, as
/// PyTorch computes them for `align_corners=False` (source index clamped at 0, weights in f32).
#[derive(Debug, Clone, Copy)]
struct Tap {
    i0: usize,
    i1: usize,
    w1: f32,
}

fn taps(n_in: usize, n_out: usize) -> Vec<Tap> {
    let scale = n_in as f32 / n_out as f32;
    (0..n_out)
        .map(|o| {
            let src = (scale * (o as f32 + 0.5) - 0.5).max(0.0);
            let i0 = (src.floor() as usize).min(n_in - 1);
            let i1 = if i0 < n_in - 1 { i0 + 1 } else { i0 };
            let w1 = (src - i0 as f32).clamp(0.0, 1.0);
            Tap { i0, i1, w1 }
        })
        .collect()
}

/// Trilinear resize to `shape`, separably along each axis (the same weights as trilinear, applied
/// one axis at a time: three cheap passes instead of eight taps per voxel). The affine is updated
/// so that world positions are kept under the `align_corners=False` convention.
pub fn resize(vol: &Volume, shape: [usize; 3]) -> Result<Volume> {
    if shape.contains(&0) || vol.shape.contains(&0) {
        return Err(Error::volume(
            "resize",
            format!("cannot resize {:?} to {:?}: sizes must be ≥ 1", vol.shape, shape),
        ));
    }
    let mut data: Option<Vec<f32>> = None;
    let mut cur = vol.shape;
    // Resample the axis that shrinks the most first, so later passes touch fewer voxels.
    let mut order = [0usize, 1, 2];
    order.sort_by(|&a, &b| {
        let ra = shape[a] as f64 / cur[a] as f64;
        let rb = shape[b] as f64 / cur[b] as f64;
        ra.partial_cmp(&rb).unwrap_or(std::cmp::Ordering::Equal)
    });
    for axis in order {
        if cur[axis] == shape[axis] {
            continue;
        }
        data = Some(resize_axis(data.as_deref().unwrap_or(&vol.data), cur, axis, shape[axis]));
        cur[axis] = shape[axis];
    }
    let data = data.unwrap_or_else(|| vol.data.clone());
    Ok(Volume { shape, data, affine: resized_affine(&vol.affine, vol.shape, shape) })
}

/// The affine of a volume resized from `from` to `to` voxels under the `align_corners=False`
/// convention (voxel centres at `(o + 0.5) · n_in / n_out − 0.5` input voxels).
fn resized_affine(affine: &Affine, from: [usize; 3], to: [usize; 3]) -> Affine {
    let mut step = super::volume::identity();
    for a in 0..3 {
        let s = from[a] as f64 / to[a] as f64;
        step[a][a] = s;
        step[a][3] = 0.5 * s - 0.5;
    }
    matmul(affine, &step)
}

/// Nearest-neighbour resize to `shape` (PyTorch's `interpolate(mode="nearest-exact")`): each
/// output voxel takes the input voxel its centre falls in, so values are copied, never mixed
/// (what a label map needs). The grid and affine are exactly those of [`resize`] to `shape`.
pub fn resize_nearest(vol: &Volume, shape: [usize; 3]) -> Result<Volume> {
    if shape.contains(&0) || vol.shape.contains(&0) {
        return Err(Error::volume(
            "resize",
            format!("cannot resize {:?} to {:?}: sizes must be ≥ 1", vol.shape, shape),
        ));
    }
    let source = |a: usize| -> Vec<usize> {
        let scale = vol.shape[a] as f64 / shape[a] as f64;
        (0..shape[a]).map(|o| (((o as f64 + 0.5) * scale).floor() as usize).min(vol.shape[a] - 1)).collect()
    };
    let (si, sj, sk) = (source(0), source(1), source(2));
    let mut data = Vec::with_capacity(shape.iter().product());
    for &i in &si {
        for &j in &sj {
            let row = (i * vol.shape[1] + j) * vol.shape[2];
            data.extend(sk.iter().map(|&k| vol.data[row + k]));
        }
    }
    Ok(Volume { shape, data, affine: resized_affine(&vol.affine, vol.shape, shape) })
}

/// Linear interpolation along one axis of a C-ordered block, in parallel over the outer axes.
fn resize_axis(data: &[f32], shape: [usize; 3], axis: usize, n_out: usize) -> Vec<f32> {
    use rayon::prelude::*;
    let t = taps(shape[axis], n_out);
    let inner: usize = shape[axis + 1..].iter().product();
    let n_in = shape[axis];
    let mut out = vec![0f32; data.len() / n_in * n_out];
    out.par_chunks_mut(n_out * inner).zip(data.par_chunks(n_in * inner)).for_each(|(dst, src)| {
        if inner == 1 {
            // The contiguous axis: one multiply-add pair per output sample.
            for (d, tap) in dst.iter_mut().zip(&t) {
                *d = (1.0 - tap.w1) * src[tap.i0] + tap.w1 * src[tap.i1];
            }
            return;
        }
        for (x, tap) in t.iter().enumerate() {
            let a = &src[tap.i0 * inner..(tap.i0 + 1) * inner];
            let b = &src[tap.i1 * inner..(tap.i1 + 1) * inner];
            let d = &mut dst[x * inner..(x + 1) * inner];
            let w0 = 1.0 - tap.w1;
            for ((d, &a), &b) in d.iter_mut().zip(a).zip(b) {
                *d = w0 * a + tap.w1 * b;
            }
        }
    });
    out
}

/// A box of voxels, `lo[a]..=hi[a]` along each axis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CropBox {
    pub lo: [usize; 3],
    pub hi: [usize; 3],
}

impl CropBox {
    pub fn shape(&self) -> [usize; 3] {
        std::array::from_fn(|a| self.hi[a] - self.lo[a] + 1)
    }
}

/// The bounding box of voxels above `threshold` (MONAI `CropForeground` with its default `x > 0`
/// selection and no margin). A volume with no voxel above the threshold is an error: there is no
/// brain to crop to.
pub fn foreground_box(vol: &Volume, threshold: f32) -> Result<CropBox> {
    let [n0, n1, n2] = vol.shape;
    let mut lo = [usize::MAX; 3];
    let mut hi = [0usize; 3];
    for i in 0..n0 {
        for j in 0..n1 {
            let row = &vol.data[(i * n1 + j) * n2..(i * n1 + j + 1) * n2];
            for (k, &v) in row.iter().enumerate() {
                if v > threshold {
                    for (a, idx) in [i, j, k].into_iter().enumerate() {
                        lo[a] = lo[a].min(idx);
                        hi[a] = hi[a].max(idx);
                    }
                }
            }
        }
    }
    if lo[0] == usize::MAX {
        return Err(Error::volume(
            "crop to foreground",
            format!("no voxel is above {threshold}: the volume has no foreground"),
        ));
    }
    Ok(CropBox { lo, hi })
}

/// Cut `b` out of `vol`, keeping world positions.
pub fn crop(vol: &Volume, b: &CropBox) -> Result<Volume> {
    let [_, n1, n2] = vol.shape;
    if (0..3).any(|a| b.lo[a] > b.hi[a] || b.hi[a] >= vol.shape[a]) {
        return Err(Error::volume("crop", format!("box {b:?} does not fit a volume of shape {:?}", vol.shape)));
    }
    let (lo, hi) = (b.lo, b.hi);
    let shape = b.shape();
    let mut data = Vec::with_capacity(shape.iter().product());
    for i in lo[0]..=hi[0] {
        for j in lo[1]..=hi[1] {
            let start = (i * n1 + j) * n2;
            data.extend_from_slice(&vol.data[start + lo[2]..=start + hi[2]]);
        }
    }
    let mut affine: Affine = vol.affine;
    for r in 0..3 {
        affine[r][3] += (0..3).map(|c| vol.affine[r][c] * lo[c] as f64).sum::<f64>();
    }
    Ok(Volume { shape, data, affine })
}

/// Crop to the bounding box of voxels above `threshold` ([`foreground_box`], then [`crop`]).
pub fn crop_foreground(vol: &Volume, threshold: f32) -> Result<Volume> {
    crop(vol, &foreground_box(vol, threshold)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::volume::identity;

    #[test]
    fn resize_identity_shape_is_a_copy() {
        let v = Volume::from_fn([3, 4, 5], identity(), |i, j, k| (i + 2 * j + 3 * k) as f32);
        let r = resize(&v, [3, 4, 5]).unwrap();
        assert_eq!(r.data, v.data);
        assert_eq!(r.affine, v.affine);
    }

    #[test]
    fn resize_of_linear_ramp_stays_linear_inside() {
        // Upsampling a ramp by 2 along one axis: interior samples lie on the ramp.
        let v = Volume::from_fn([4, 1, 1], identity(), |i, _, _| i as f32);
        let r = resize(&v, [8, 1, 1]).unwrap();
        let want = [0.0, 0.25, 0.75, 1.25, 1.75, 2.25, 2.75, 3.0];
        for (a, b) in r.data.iter().zip(want) {
            assert!((a - b).abs() < 1e-6, "{:?}", r.data);
        }
        // world position of output voxel 0 is input coordinate -0.25
        assert!((r.affine[0][3] + 0.25).abs() < 1e-12);
        assert!((r.affine[0][0] - 0.5).abs() < 1e-12);
    }

    #[test]
    fn crop_keeps_world_positions() {
        let v = Volume::from_fn([5, 5, 5], identity(), |i, j, k| {
            if (1..=2).contains(&i) && j == 3 && (2..=4).contains(&k) {
                1.0
            } else {
                0.0
            }
        });
        let c = crop_foreground(&v, 0.0).unwrap();
        assert_eq!(c.shape, [2, 1, 3]);
        assert!(c.data.iter().all(|&x| x == 1.0));
        assert_eq!([c.affine[0][3], c.affine[1][3], c.affine[2][3]], [1.0, 3.0, 2.0]);
        let empty = Volume::from_fn([2, 2, 2], identity(), |_, _, _| 0.0);
        assert!(crop_foreground(&empty, 0.0).is_err());
        // The box found on one volume cuts another of the same grid at the same place.
        let b = foreground_box(&v, 0.0).unwrap();
        assert_eq!(b, CropBox { lo: [1, 3, 2], hi: [2, 3, 4] });
        let other = Volume::from_fn([5, 5, 5], identity(), |i, j, k| (i * 100 + j * 10 + k) as f32);
        let o = crop(&other, &b).unwrap();
        assert_eq!((o.shape, o.affine), (c.shape, c.affine));
        assert_eq!(o.get(1, 0, 2), 234.0);
        assert!(crop(&other, &CropBox { lo: [0; 3], hi: [5, 0, 0] }).is_err());
    }

    #[test]
    fn nearest_resize_copies_values_on_the_trilinear_grid() {
        let mut aff = identity();
        aff[0][0] = -2.0;
        aff[1][3] = 7.0;
        let v = Volume::from_fn([4, 3, 5], aff, |i, j, k| (i * 100 + j * 10 + k) as f32);
        for shape in [[8, 3, 5], [2, 6, 3], [4, 3, 5], [7, 1, 9]] {
            let n = resize_nearest(&v, shape).unwrap();
            assert_eq!(n.affine, resize(&v, shape).unwrap().affine, "{shape:?}");
            assert_eq!(n.shape, shape);
            assert!(n.data.iter().all(|x| v.data.contains(x)), "{shape:?}");
        }
        // Doubling repeats each voxel twice; halving keeps the voxel each output centre falls in.
        let up = resize_nearest(&v, [8, 3, 5]).unwrap();
        assert_eq!((0..8).map(|i| up.get(i, 1, 2)).collect::<Vec<_>>(), [12., 12., 112., 112., 212., 212., 312., 312.]);
        let down = resize_nearest(&v, [2, 3, 5]).unwrap();
        assert_eq!([down.get(0, 0, 0), down.get(1, 0, 0)], [100.0, 300.0]);
        assert_eq!(resize_nearest(&v, [4, 3, 5]).unwrap(), v);
    }
}
