//! The few pieces of 3D geometry the phantom needs: 3x3 rotations, rotated ellipsoids, and a box of
//! points on a fixed lattice.

use std::ops::Range;

pub(crate) type Vec3 = [f64; 3];
pub(crate) type Mat3 = [[f64; 3]; 3];

pub(crate) fn mat_vec(m: &Mat3, v: Vec3) -> Vec3 {
    [
        m[0][0] * v[0] + m[0][1] * v[1] + m[0][2] * v[2],
        m[1][0] * v[0] + m[1][1] * v[1] + m[1][2] * v[2],
        m[2][0] * v[0] + m[2][1] * v[1] + m[2][2] * v[2],
    ]
}

pub(crate) fn mat_mul(a: &Mat3, b: &Mat3) -> Mat3 {
    let mut out = [[0.0; 3]; 3];
    for (i, row) in out.iter_mut().enumerate() {
        for (j, o) in row.iter_mut().enumerate() {
            *o = (0..3).map(|k| a[i][k] * b[k][j]).sum();
        }
    }
    out
}

pub(crate) fn transpose(m: &Mat3) -> Mat3 {
    let mut out = [[0.0; 3]; 3];
    for (i, row) in out.iter_mut().enumerate() {
        for (j, o) in row.iter_mut().enumerate() {
            *o = m[j][i];
        }
    }
    out
}

/// The rotation `Rz · Ry · Rx` for angles in radians about the x, y and z axes.
pub(crate) fn rotation(angles: Vec3) -> Mat3 {
    let (sx, cx) = angles[0].sin_cos();
    let (sy, cy) = angles[1].sin_cos();
    let (sz, cz) = angles[2].sin_cos();
    let rx = [[1.0, 0.0, 0.0], [0.0, cx, -sx], [0.0, sx, cx]];
    let ry = [[cy, 0.0, sy], [0.0, 1.0, 0.0], [-sy, 0.0, cy]];
    let rz = [[cz, -sz, 0.0], [sz, cz, 0.0], [0.0, 0.0, 1.0]];
    mat_mul(&rz, &mat_mul(&ry, &rx))
}

/// A solid ellipsoid with semi-axes `semi` along its own axes, turned by a rotation.
#[derive(Debug, Clone)]
pub(crate) struct Ellipsoid {
    pub center: Vec3,
    pub semi: Vec3,
    /// World → ellipsoid axes (the transpose of the rotation that placed it).
    to_local: Mat3,
}

impl Ellipsoid {
    /// `rot` turns the ellipsoid's own axes into the world's.
    pub fn new(center: Vec3, semi: Vec3, rot: &Mat3) -> Self {
        Ellipsoid { center, semi, to_local: transpose(rot) }
    }

    #[inline]
    pub fn contains(&self, p: Vec3) -> bool {
        let d = [p[0] - self.center[0], p[1] - self.center[1], p[2] - self.center[2]];
        let l = mat_vec(&self.to_local, d);
        let q = |a: usize| l[a] / self.semi[a];
        q(0) * q(0) + q(1) * q(1) + q(2) * q(2) <= 1.0
    }

    /// Half-sizes of the axis-aligned box that holds the ellipsoid.
    pub fn half_extent(&self) -> Vec3 {
        let mut out = [0.0; 3];
        for (w, o) in out.iter_mut().enumerate() {
            // Column c of the placing rotation is row c of `to_local`.
            *o = (0..3).map(|c| (self.to_local[c][w] * self.semi[c]).powi(2)).sum::<f64>().sqrt();
        }
        out
    }
}

/// An axis-aligned box of points `h · (start + index)` mm. Every box with the same spacing sits on
/// the same lattice, so a small box and a large one agree point for point where they overlap:
/// measuring in the brain's box gives exactly the counts of the whole head's box.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Lattice {
    pub h: f64,
    pub start: [i64; 3],
    pub shape: [usize; 3],
}

impl Lattice {
    /// The smallest box holding every lattice point of `[lo, hi]`.
    pub fn covering(lo: Vec3, hi: Vec3, h: f64) -> Self {
        let mut start = [0i64; 3];
        let mut shape = [1usize; 3];
        for a in 0..3 {
            let s = (lo[a] / h).floor() as i64;
            let e = (hi[a] / h).ceil() as i64;
            start[a] = s;
            shape[a] = (e - s + 1).max(1) as usize;
        }
        Lattice { h, start, shape }
    }

    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }

    #[inline]
    pub fn coord(&self, axis: usize, index: usize) -> f64 {
        self.h * (self.start[axis] + index as i64) as f64
    }

    #[inline]
    pub fn index(&self, i: usize, j: usize, k: usize) -> usize {
        (i * self.shape[1] + j) * self.shape[2] + k
    }

    /// Indices along `axis` whose points lie in `[lo, hi]` (empty when the box misses them).
    pub fn range(&self, axis: usize, lo: f64, hi: f64) -> Range<usize> {
        let first = ((lo / self.h).ceil() as i64 - self.start[axis]).max(0);
        let last = ((hi / self.h).floor() as i64 - self.start[axis]).min(self.shape[axis] as i64 - 1);
        if last < first {
            0..0
        } else {
            first as usize..last as usize + 1
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotation_is_orthonormal() {
        let r = rotation([0.1, -0.2, 0.3]);
        let rtr = mat_mul(&transpose(&r), &r);
        for (i, row) in rtr.iter().enumerate() {
            for (j, v) in row.iter().enumerate() {
                assert!((v - if i == j { 1.0 } else { 0.0 }).abs() < 1e-12);
            }
        }
    }

    #[test]
    fn lattice_boxes_share_points() {
        let big = Lattice::covering([-10.0; 3], [10.0; 3], 1.5);
        let small = Lattice::covering([-3.2; 3], [4.1; 3], 1.5);
        let r = big.range(0, small.coord(0, 0), small.coord(0, small.shape[0] - 1));
        assert_eq!(r.len(), small.shape[0]);
        assert!((big.coord(0, r.start) - small.coord(0, 0)).abs() < 1e-12);
    }

    #[test]
    fn rotated_ellipsoid_extent_holds_it() {
        let e = Ellipsoid::new([1.0, 2.0, 3.0], [4.0, 10.0, 2.0], &rotation([0.4, 0.2, -0.3]));
        let h = e.half_extent();
        let l = Lattice::covering([-15.0; 3], [15.0; 3], 0.5);
        for i in 0..l.shape[0] {
            for j in 0..l.shape[1] {
                for k in 0..l.shape[2] {
                    let p = [l.coord(0, i), l.coord(1, j), l.coord(2, k)];
                    if e.contains(p) {
                        for a in 0..3 {
                            assert!((p[a] - e.center[a]).abs() <= h[a] + 1e-9);
                        }
                    }
                }
            }
        }
    }
}
