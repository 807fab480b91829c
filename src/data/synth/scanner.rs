//! The scanner's settings: what each scan draws before it is imaged (see `render.rs`). Tissue
//! contrast (WM bright, GM mid, CSF dark, scalp fat bright, skull dark), a small head pose in the
//! field of view, a stored voxel order that varies from scan to scan (with the affine that undoes
//! it, sometimes oblique), voxel size, a smooth multiplicative bias field, a global intensity
//! scale, and the Rician noise level.

use rand::Rng;
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;
use serde::Serialize;

use super::anatomy::tissue;
use super::geom::{rotation, Mat3, Vec3};

/// The direction each stored axis (i, j, k) runs towards, as nibabel's `aff2axcodes` names it.
/// Axial (`RAS`, `LAS`, `LPS`, `LPI`), sagittal (`PIR`, `ASL`, `ASR`) and coronal (`RSA`) orders
/// all occur in raw scans; the slice axis is always the last one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Orientation {
    Ras,
    Las,
    Lps,
    Lpi,
    Pir,
    Asl,
    Asr,
    Rsa,
}

impl Orientation {
    pub fn code(self) -> &'static str {
        match self {
            Orientation::Ras => "RAS",
            Orientation::Las => "LAS",
            Orientation::Lps => "LPS",
            Orientation::Lpi => "LPI",
            Orientation::Pir => "PIR",
            Orientation::Asl => "ASL",
            Orientation::Asr => "ASR",
            Orientation::Rsa => "RSA",
        }
    }

    /// For each stored axis: the world axis (0 = x/R, 1 = y/A, 2 = z/S) and the sign.
    pub(crate) fn axes(self) -> [(usize, f64); 3] {
        let (r, l, a, p, s, i) = ((0, 1.0), (0, -1.0), (1, 1.0), (1, -1.0), (2, 1.0), (2, -1.0));
        match self {
            Orientation::Ras => [r, a, s],
            Orientation::Las => [l, a, s],
            Orientation::Lps => [l, p, s],
            Orientation::Lpi => [l, p, i],
            Orientation::Pir => [p, i, r],
            Orientation::Asl => [a, s, l],
            Orientation::Asr => [a, s, r],
            Orientation::Rsa => [r, s, a],
        }
    }
}

/// Relative T1 intensity of each tissue, white matter = 1.
#[derive(Debug, Clone, Serialize)]
pub struct Contrast {
    pub csf: f64,
    pub gm: f64,
    pub wm: f64,
    pub deep_gm: f64,
    pub cerebellum: f64,
    /// Hippocampus and entorhinal cortex: grey matter, a little brighter on T1.
    pub mesial: f64,
    /// Scalp fat is bright on T1.
    pub scalp: f64,
    pub skull: f64,
}

/// One site's or scanner family's acquisition settings; each scan draws within these ranges.
#[derive(Debug, Clone, Serialize)]
pub struct ScannerProfile {
    pub contrast: Contrast,
    /// SD of the per-scan log-intensity jitter of each tissue (vendor and sequence drift).
    pub contrast_jitter: f64,
    /// White-matter value in stored units: raw scans have arbitrary, scanner-specific scales.
    pub wm_value: (f64, f64),
    /// Noise SD as a fraction of the white-matter value.
    pub noise: (f64, f64),
    /// SD of each coefficient of the quadratic log bias field (0.1 ≈ ±20% across the head).
    pub bias: f64,
    /// In-plane voxel size (mm) of the two first stored axes.
    pub voxel_inplane: (f64, f64),
    /// Slice thickness (mm) of the last stored axis.
    pub voxel_slice: (f64, f64),
    /// Space between the head and each edge of the field of view (mm).
    pub fov_margin: (f64, f64),
    pub orientations: Vec<Orientation>,
    /// Largest head rotation about each axis (degrees) and shift (mm) in the scanner.
    pub max_rotation_deg: f64,
    pub max_shift_mm: f64,
    /// Fraction of scans with an oblique grid (the rotation lives in the affine), and its angle.
    pub oblique_fraction: f64,
    pub oblique_max_deg: f64,
}

/// Everything one scan draws from its profile.
#[derive(Debug, Clone)]
pub(crate) struct Acquisition {
    pub orientation: Orientation,
    /// Voxel size of each stored axis (mm).
    pub voxel: Vec3,
    /// Space below and above the head along each grid axis (mm).
    pub margins: [[f64; 2]; 3],
    /// Subject space → scanner world: `world = head_rot · p + head_shift`.
    pub head_rot: Mat3,
    pub head_shift: Vec3,
    /// Grid axes in the world (identity unless oblique).
    pub grid_rot: Mat3,
    pub table: [f32; tissue::COUNT],
    pub wm_value: f64,
    pub noise_sd: f64,
    pub bias: [f64; 9],
    pub noise_seed: u64,
}

impl Acquisition {
    pub fn draw(p: &ScannerProfile, rng: &mut ChaCha8Rng) -> Self {
        let orientation = p.orientations[rng.random_range(0..p.orientations.len())];
        let inplane = rng.random_range(p.voxel_inplane.0..=p.voxel_inplane.1);
        let slice = rng.random_range(p.voxel_slice.0..=p.voxel_slice.1);
        // Scanners report voxel sizes to a few decimals.
        let round = |v: f64| (v * 1e4).round() / 1e4;
        let voxel = [round(inplane), round(inplane), round(slice)];
        let margins =
            std::array::from_fn(|_| std::array::from_fn(|_| rng.random_range(p.fov_margin.0..=p.fov_margin.1)));
        let deg = |rng: &mut ChaCha8Rng, max: f64| rng.random_range(-max..=max).to_radians();
        let head_rot =
            rotation([deg(rng, p.max_rotation_deg), deg(rng, p.max_rotation_deg), deg(rng, p.max_rotation_deg)]);
        let head_shift = std::array::from_fn(|_| rng.random_range(-p.max_shift_mm..=p.max_shift_mm));
        let grid_rot = if rng.random_bool(p.oblique_fraction) {
            rotation([deg(rng, p.oblique_max_deg), deg(rng, p.oblique_max_deg), deg(rng, p.oblique_max_deg)])
        } else {
            rotation([0.0; 3])
        };
        let mut jitter = |v: f64| (v * (p.contrast_jitter * rng.sample::<f64, _>(StandardNormal)).exp()) as f32;
        let c = &p.contrast;
        let (csf, gm, wm, deep, cb, mes) =
            (jitter(c.csf), jitter(c.gm), jitter(c.wm), jitter(c.deep_gm), jitter(c.cerebellum), jitter(c.mesial));
        let (scalp, skull) = (jitter(c.scalp), jitter(c.skull));
        use tissue::*;
        let mut table = [0f32; COUNT];
        for (l, t) in table.iter_mut().enumerate() {
            *t = match l as u8 {
                BG => 0.0,
                SCALP => scalp,
                SKULL => skull,
                CSF | SULCAL | VENT_R | VENT_L => csf,
                WM => wm,
                DEEP_GM => deep,
                CEREBELLUM => cb,
                HIPPO_R | HIPPO_L | ENTO_R | ENTO_L => mes,
                _ => gm,
            };
        }
        let wm_value = rng.random_range(p.wm_value.0..=p.wm_value.1);
        let noise_sd = rng.random_range(p.noise.0..=p.noise.1) * wm_value;
        let bias = std::array::from_fn(|_| p.bias * rng.sample::<f64, _>(StandardNormal));
        Acquisition {
            orientation,
            voxel,
            margins,
            head_rot,
            head_shift,
            grid_rot,
            table,
            wm_value,
            noise_sd,
            bias,
            noise_seed: rng.random(),
        }
    }
}

impl ScannerProfile {
    /// ADNI-like: several vendors and field strengths, so wider contrast, scale and noise ranges,
    /// and every voxel order.
    pub fn adni(voxel_inplane: (f64, f64), voxel_slice: (f64, f64)) -> Self {
        use Orientation::*;
        ScannerProfile {
            contrast: Contrast {
                csf: 0.22,
                gm: 0.58,
                wm: 1.0,
                deep_gm: 0.74,
                cerebellum: 0.8,
                mesial: 0.62,
                scalp: 0.78,
                skull: 0.08,
            },
            contrast_jitter: 0.04,
            wm_value: (400.0, 1000.0),
            noise: (0.02, 0.04),
            bias: 0.07,
            voxel_inplane,
            voxel_slice,
            fov_margin: (1.0, 8.0),
            orientations: vec![Ras, Las, Lps, Pir, Asl, Rsa],
            max_rotation_deg: 5.0,
            max_shift_mm: 12.0,
            oblique_fraction: 0.25,
            oblique_max_deg: 6.0,
        }
    }

    /// OASIS-like: one older 1.5 T scanner, a flatter grey/white contrast, more noise, a smaller
    /// intensity scale, thicker voxels, and its own voxel orders.
    pub fn oasis(voxel_inplane: (f64, f64), voxel_slice: (f64, f64)) -> Self {
        use Orientation::*;
        ScannerProfile {
            contrast: Contrast {
                csf: 0.16,
                gm: 0.64,
                wm: 1.0,
                deep_gm: 0.78,
                cerebellum: 0.84,
                mesial: 0.66,
                scalp: 0.9,
                skull: 0.05,
            },
            contrast_jitter: 0.02,
            wm_value: (250.0, 400.0),
            noise: (0.035, 0.055),
            bias: 0.05,
            voxel_inplane,
            voxel_slice,
            fov_margin: (3.0, 12.0),
            orientations: vec![Asr, Lpi],
            max_rotation_deg: 7.0,
            max_shift_mm: 15.0,
            oblique_fraction: 0.0,
            oblique_max_deg: 0.0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orientation_codes_match_axes() {
        let letters = [['L', 'R'], ['P', 'A'], ['I', 'S']];
        for o in [
            Orientation::Ras,
            Orientation::Las,
            Orientation::Lps,
            Orientation::Lpi,
            Orientation::Pir,
            Orientation::Asl,
            Orientation::Asr,
            Orientation::Rsa,
        ] {
            let code: String = o.axes().iter().map(|&(w, s)| letters[w][(s > 0.0) as usize]).collect();
            assert_eq!(code, o.code());
        }
    }
}
