//! Imaging a label map: tissue intensities, partial volume (a blur on the fine lattice, then
//! trilinear sampling onto the coarser scan grid), the head's pose in the field of view, the
//! stored voxel order and its affine, the bias field, the intensity scale, and Rician noise.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;

use super::anatomy::{tissue, LabelMap};
use super::geom::{mat_mul, mat_vec, transpose, Vec3};
use super::scanner::Acquisition;
use crate::data::volume::{Affine, Volume};

/// `[1, 2, 1] / 4` along one axis of a C-order volume (edges clamp): a one-voxel partial-volume
/// blur, applied on each axis in turn.
fn blur_axis(data: &mut [f32], shape: [usize; 3], axis: usize) {
    let stride = match axis {
        0 => shape[1] * shape[2],
        1 => shape[2],
        _ => 1,
    };
    let n = shape[axis];
    if n < 3 {
        return;
    }
    let src = data.to_vec();
    for (idx, out) in data.iter_mut().enumerate() {
        let pos = (idx / stride) % n;
        let lo = if pos == 0 { idx } else { idx - stride };
        let hi = if pos + 1 == n { idx } else { idx + stride };
        *out = 0.25 * src[lo] + 0.5 * src[idx] + 0.25 * src[hi];
    }
}

/// Trilinear interpolation at a fractional lattice index; 0 (air) outside the lattice.
#[inline]
fn trilinear(data: &[f32], shape: [usize; 3], f: Vec3) -> f32 {
    let (i0, j0, k0) = (f[0].floor(), f[1].floor(), f[2].floor());
    if i0 < 0.0 || j0 < 0.0 || k0 < 0.0 {
        return 0.0;
    }
    let (i, j, k) = (i0 as usize, j0 as usize, k0 as usize);
    if i + 1 >= shape[0] || j + 1 >= shape[1] || k + 1 >= shape[2] {
        return 0.0;
    }
    let (di, dj, dk) = ((f[0] - i0) as f32, (f[1] - j0) as f32, (f[2] - k0) as f32);
    let at = |a: usize, b: usize, c: usize| data[(a * shape[1] + b) * shape[2] + c];
    let lerp = |a: f32, b: f32, t: f32| a + (b - a) * t;
    let c00 = lerp(at(i, j, k), at(i, j, k + 1), dk);
    let c01 = lerp(at(i, j + 1, k), at(i, j + 1, k + 1), dk);
    let c10 = lerp(at(i + 1, j, k), at(i + 1, j, k + 1), dk);
    let c11 = lerp(at(i + 1, j + 1, k), at(i + 1, j + 1, k + 1), dk);
    lerp(lerp(c00, c01, dj), lerp(c10, c11, dj), di)
}

/// Where a scan's stored voxels sit: its shape, its affine (stored voxel → scanner world mm,
/// RAS+), and each voxel's fractional index on the label map's lattice.
pub(crate) struct ScanGrid {
    pub shape: [usize; 3],
    pub affine: Affine,
    /// Lattice index of voxel (0, 0, 0).
    f0: Vec3,
    /// `step[c]`: lattice-index change per stored voxel along axis c.
    step: [Vec3; 3],
}

impl ScanGrid {
    /// The field of view `acq` puts around the head of `map`, in its stored voxel order.
    pub(crate) fn new(map: &LabelMap, acq: &Acquisition) -> Self {
        let lat = &map.lattice;
        // The head's extent along the grid axes, from every non-air lattice point.
        let q_t = transpose(&acq.grid_rot);
        let to_grid = mat_mul(&q_t, &acq.head_rot);
        let shift_g = mat_vec(&q_t, acq.head_shift);
        let (mut lo, mut hi) = ([f64::INFINITY; 3], [f64::NEG_INFINITY; 3]);
        for i in 0..lat.shape[0] {
            for j in 0..lat.shape[1] {
                for k in 0..lat.shape[2] {
                    if map.labels[lat.index(i, j, k)] == tissue::BG {
                        continue;
                    }
                    let g = mat_vec(&to_grid, [lat.coord(0, i), lat.coord(1, j), lat.coord(2, k)]);
                    for a in 0..3 {
                        lo[a] = lo[a].min(g[a] + shift_g[a]);
                        hi[a] = hi[a].max(g[a] + shift_g[a]);
                    }
                }
            }
        }

        // Grid: stored axis c runs along grid axis w with sign s; the FOV is centred on head+margins.
        let axes = acq.orientation.axes();
        let mut shape = [0usize; 3];
        let mut columns = [[0.0; 3]; 3]; // grid-frame step of each stored axis
        let mut start = [0.0; 3]; // grid-frame position of voxel (0, 0, 0)
        for (c, &(w, s)) in axes.iter().enumerate() {
            let (a, b) = (lo[w] - acq.margins[w][0], hi[w] + acq.margins[w][1]);
            let v = acq.voxel[c];
            let n = ((b - a) / v).ceil() as usize + 1;
            let span = (n - 1) as f64 * v;
            start[w] = 0.5 * (a + b) - s * 0.5 * span;
            shape[c] = n;
            columns[c][w] = s * v;
        }
        let mut affine: Affine = [[0.0; 4]; 4];
        let origin = mat_vec(&acq.grid_rot, start);
        for c in 0..3 {
            let col = mat_vec(&acq.grid_rot, columns[c]);
            for r in 0..3 {
                affine[r][c] = col[r];
            }
        }
        for r in 0..3 {
            affine[r][3] = origin[r];
        }
        affine[3][3] = 1.0;

        // Stored voxel → fractional lattice index: p = head_rot^T (A v + a0 − shift), f = p/h − start.
        let r_t = transpose(&acq.head_rot);
        let mut step = [[0.0; 3]; 3];
        for (c, st) in step.iter_mut().enumerate() {
            let d = mat_vec(&r_t, [affine[0][c], affine[1][c], affine[2][c]]);
            *st = [d[0] / lat.h, d[1] / lat.h, d[2] / lat.h];
        }
        let p0 = mat_vec(
            &r_t,
            [origin[0] - acq.head_shift[0], origin[1] - acq.head_shift[1], origin[2] - acq.head_shift[2]],
        );
        let f0: Vec3 = std::array::from_fn(|a| p0[a] / lat.h - lat.start[a] as f64);
        ScanGrid { shape, affine, f0, step }
    }

    /// The fractional lattice index of stored voxel (i, j, k).
    #[inline]
    fn lattice_index(&self, i: usize, j: usize, k: usize) -> Vec3 {
        let (f0, step) = (&self.f0, &self.step);
        std::array::from_fn(|a| f0[a] + step[0][a] * i as f64 + step[1][a] * j as f64 + step[2][a] * k as f64)
    }
}

/// The tissue label of each voxel of `grid`: the lattice point nearest the voxel's centre (no
/// blur, no noise), background outside the lattice. Values are label numbers, for a uint8 NIfTI.
pub(crate) fn render_labels(map: &LabelMap, grid: &ScanGrid) -> Volume {
    let lat = &map.lattice;
    let [n0, n1, n2] = grid.shape;
    let mut data = Vec::with_capacity(n0 * n1 * n2);
    for i in 0..n0 {
        for j in 0..n1 {
            for k in 0..n2 {
                let f = grid.lattice_index(i, j, k).map(f64::round);
                let inside = (0..3).all(|a| f[a] >= 0.0 && f[a] < lat.shape[a] as f64);
                let label = if inside {
                    map.labels[lat.index(f[0] as usize, f[1] as usize, f[2] as usize)]
                } else {
                    tissue::BG
                };
                data.push(label as f32);
            }
        }
    }
    Volume { shape: grid.shape, data, affine: grid.affine }
}

/// Image `map` as `acq` says: the returned volume's values are stored units (to be written as
/// int16), its affine maps stored voxels to scanner world millimetres (RAS+).
pub(crate) fn render(map: &LabelMap, acq: &Acquisition) -> Volume {
    render_on(map, acq, &ScanGrid::new(map, acq))
}

/// [`render`] on a grid already worked out (`ScanGrid::new(map, acq)`).
pub(crate) fn render_on(map: &LabelMap, acq: &Acquisition, grid: &ScanGrid) -> Volume {
    let lat = &map.lattice;
    let mut img: Vec<f32> = map.labels.iter().map(|&l| acq.table[l as usize]).collect();
    for axis in 0..3 {
        blur_axis(&mut img, lat.shape, axis);
    }
    let shape = grid.shape;
    let mut rng = ChaCha8Rng::seed_from_u64(acq.noise_seed);
    let [n0, n1, n2] = shape;
    let norm = |i: usize, n: usize| {
        if n > 1 {
            2.0 * i as f64 / (n - 1) as f64 - 1.0
        } else {
            0.0
        }
    };
    let b = &acq.bias;
    let mut data = Vec::with_capacity(n0 * n1 * n2);
    for i in 0..n0 {
        let x = norm(i, n0);
        for j in 0..n1 {
            let y = norm(j, n1);
            for k in 0..n2 {
                let z = norm(k, n2);
                let t = trilinear(&img, lat.shape, grid.lattice_index(i, j, k)) as f64;
                let log_bias = b[0] * x
                    + b[1] * y
                    + b[2] * z
                    + b[3] * x * x
                    + b[4] * y * y
                    + b[5] * z * z
                    + b[6] * x * y
                    + b[7] * x * z
                    + b[8] * y * z;
                let signal = acq.wm_value * t * log_bias.exp();
                let n1v: f64 = rng.sample(StandardNormal);
                let n2v: f64 = rng.sample(StandardNormal);
                let re = signal + acq.noise_sd * n1v;
                let im = acq.noise_sd * n2v;
                data.push((re * re + im * im).sqrt() as f32);
            }
        }
    }
    Volume { shape, data, affine: grid.affine }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::synth::anatomy::{paint, ICV_TEMPLATE};
    use crate::data::synth::atrophy::{Anatomy, Traits};
    use crate::data::synth::scanner::{Orientation, ScannerProfile};
    use crate::data::volume::matmul;

    /// The brain's bright centre lands at the same world place whatever the voxel order.
    #[test]
    fn affine_undoes_the_voxel_order() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let t = Traits::draw(&mut rng, ICV_TEMPLATE);
        let a = Anatomy::at(&t, 0.0, 70.0, 1.0, &mut rng);
        let map = paint(&a, 3.0, true);
        let mut centres = Vec::new();
        for o in [Orientation::Ras, Orientation::Pir, Orientation::Lpi] {
            let mut p = ScannerProfile::adni((3.0, 3.0), (3.5, 3.5));
            p.orientations = vec![o];
            p.noise = (0.0, 0.0);
            p.bias = 0.0;
            let vol = render(&map, &Acquisition::draw(&p, &mut ChaCha8Rng::seed_from_u64(9)));
            // Intensity-weighted centroid in world coordinates.
            let (mut sum, mut acc) = (0.0, [0.0; 3]);
            for i in 0..vol.shape[0] {
                for j in 0..vol.shape[1] {
                    for k in 0..vol.shape[2] {
                        let v = vol.get(i, j, k) as f64;
                        let w = matmul(
                            &vol.affine,
                            &[
                                [i as f64, 0.0, 0.0, 0.0],
                                [j as f64, 0.0, 0.0, 0.0],
                                [k as f64, 0.0, 0.0, 0.0],
                                [1.0, 0.0, 0.0, 0.0],
                            ],
                        );
                        sum += v;
                        for a in 0..3 {
                            acc[a] += v * w[a][0];
                        }
                    }
                }
            }
            centres.push(acc.map(|x| x / sum));
        }
        for c in &centres[1..] {
            for a in 0..3 {
                assert!((c[a] - centres[0][a]).abs() < 1.5, "{centres:?}");
            }
        }
    }

    /// The label map sits on the image: bright tissue where the image is bright, dark where it is
    /// dark, and the structures' voxel counts give back the volumes the table measures.
    #[test]
    fn labels_overlay_the_image() {
        use crate::data::labels::structure;
        use crate::data::synth::anatomy::measure;
        let mut rng = ChaCha8Rng::seed_from_u64(4);
        let t = Traits::draw(&mut rng, ICV_TEMPLATE);
        let a = Anatomy::at(&t, 1.0, 75.0, 1.0, &mut rng);
        let map = paint(&a, 2.0, true);
        let mut p = ScannerProfile::adni((3.0, 3.0), (3.5, 3.5));
        p.orientations = vec![Orientation::Pir];
        let acq = Acquisition::draw(&p, &mut ChaCha8Rng::seed_from_u64(2));
        let grid = ScanGrid::new(&map, &acq);
        let image = render_on(&map, &acq, &grid);
        assert_eq!(image, render(&map, &acq));
        let labels = render_labels(&map, &grid);
        assert_eq!((labels.shape, labels.affine), (image.shape, image.affine));

        let mean_over = |ls: &[u8]| {
            let vals: Vec<f64> = (labels.data.iter().zip(&image.data))
                .filter(|(l, _)| ls.contains(&(**l as u8)))
                .map(|(_, &v)| v as f64)
                .collect();
            assert!(!vals.is_empty(), "no voxel labelled {ls:?}");
            vals.iter().sum::<f64>() / vals.len() as f64
        };
        let (wm, gm) = (mean_over(&[tissue::WM]), mean_over(&[tissue::GM]));
        let (vent, bg) = (mean_over(&structure::VENTRICLES), mean_over(&[tissue::BG]));
        assert!(wm > gm && gm > vent && vent > bg, "WM {wm}, GM {gm}, ventricles {vent}, background {bg}");

        let m = measure(&map);
        let [x, y, z] = labels.voxel_size();
        let volume = |ls: &[u8]| labels.data.iter().filter(|&&l| ls.contains(&(l as u8))).count() as f64 * x * y * z;
        for (what, ls, table, tolerance) in [
            ("Hippocampus", &structure::HIPPOCAMPUS[..], m.hippocampus, 0.15),
            ("Ventricles", &structure::VENTRICLES, m.ventricles, 0.15),
            ("WholeBrain", &structure::BRAIN, m.whole_brain, 0.03),
            ("ICV", &[structure::BRAIN.as_slice(), &structure::FLUID].concat(), m.icv, 0.03),
        ] {
            let v = volume(ls);
            eprintln!("{what}: {v:.0} mm³ from the scan's labels, {table:.0} measured on the lattice");
            assert!(
                (v / table - 1.0).abs() < tolerance,
                "{what}: {v:.0} mm³ from the scan's labels, {table:.0} measured"
            );
        }
    }
}
