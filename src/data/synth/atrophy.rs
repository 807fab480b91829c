//! How a subject's anatomy differs from the template, and how disease and age change it.
//!
//! Disease enters only through sizes: a latent severity shrinks the medial-temporal structures
//! and the brain and widens the ventricles and sulci; age does the same, more slowly. Every
//! subject also has their own size of each structure (independent of disease), which is what
//! makes the diagnostic classes overlap.

use rand::Rng;
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;

use super::anatomy::{BRAIN_FRAC, ICV_TEMPLATE};
use super::geom::Vec3;

/// How one structure's volume varies: `exp(between·z + scan·ε) · (1 − effect·per_severity·s)
/// · (1 − per_year·(age − 73))`, with the ventricles using exponentials because they grow.
struct Effect {
    /// SD of the subject's own log-volume, independent of disease: what makes classes overlap.
    between: f64,
    /// Fractional loss per unit of latent severity (NC ≈ 0-1, MCI 1-2, AD 2-4).
    per_severity: f64,
    /// Fractional loss per year of age: ageing atrophies the same structures, more slowly.
    per_year: f64,
    /// SD of scan-to-scan log-volume noise (segmentation repeatability is ~2-3%).
    scan: f64,
}

/// Hippocampus, entorhinal, fusiform, middle temporal, ventricles, brain (in that order, as
/// `Traits::z`). The severity effects are close to real ADNI group differences (AD/NC
/// hippocampus ≈ 0.79, entorhinal ≈ 0.77, ventricles ≈ 1.9); the between-subject spread is
/// smaller than real (2.5-3% beyond head size, against ~10%), which is the knob that sets the
/// difficulty. Calibrated so that a logistic regression on the six volumes and age reaches
/// 0.86 ± 0.03 balanced accuracy over seeds (real ADNI: ~0.6), see `calibration.rs`.
const EFFECTS: [Effect; 6] = [
    Effect { between: 0.025, per_severity: 0.105, per_year: 0.004, scan: 0.012 },
    Effect { between: 0.032, per_severity: 0.11, per_year: 0.003, scan: 0.02 },
    Effect { between: 0.027, per_severity: 0.05, per_year: 0.003, scan: 0.015 },
    Effect { between: 0.027, per_severity: 0.055, per_year: 0.003, scan: 0.015 },
    Effect { between: 0.18, per_severity: -0.26, per_year: -0.03, scan: 0.03 },
    Effect { between: 0.009, per_severity: 0.015, per_year: 0.002, scan: 0.004 },
];

/// What a subject keeps across visits: head size and shape, and how big each structure is
/// for them regardless of disease.
#[derive(Debug, Clone)]
pub(crate) struct Traits {
    pub head_scale: f64,
    pub shape: [f64; 8],
    pub skull_mm: f64,
    pub scalp_mm: f64,
    pub sulcal_dirs: [Vec3; 3],
    pub sulcal_phase: Vec3,
    /// Standard-normal size scores, one per entry of `EFFECTS`.
    pub z: [f64; 6],
    /// Right-minus-left log-volume difference of each paired structure.
    pub asym: [f64; 5],
}

fn normal(rng: &mut ChaCha8Rng) -> f64 {
    rng.sample(StandardNormal)
}

impl Traits {
    /// `icv_mm3`: the subject's intracranial volume (head size), which every structure follows.
    pub fn draw(rng: &mut ChaCha8Rng, icv_mm3: f64) -> Self {
        let head_scale = (icv_mm3 / ICV_TEMPLATE).cbrt();
        // Odd terms (shifts) small, even terms (elongation, flattening) larger.
        let sd = [0.01, 0.02, 0.02, 0.03, 0.03, 0.01, 0.03, 0.01];
        let mut shape = [0.0; 8];
        for (s, d) in shape.iter_mut().zip(sd) {
            *s = d * normal(rng);
        }
        let mut sulcal_dirs = [[0.0; 3]; 3];
        for (a, dir) in sulcal_dirs.iter_mut().enumerate() {
            let mut v = [0.35 * normal(rng), 0.35 * normal(rng), 0.35 * normal(rng)];
            v[a] += 1.0;
            let n = (v[0] * v[0] + v[1] * v[1] + v[2] * v[2]).sqrt().max(1e-6);
            *dir = [v[0] / n, v[1] / n, v[2] / n];
        }
        let tau = std::f64::consts::TAU;
        Traits {
            head_scale,
            shape,
            skull_mm: rng.random_range(5.0..8.0),
            scalp_mm: rng.random_range(4.0..7.0),
            sulcal_dirs,
            sulcal_phase: [rng.random_range(0.0..tau), rng.random_range(0.0..tau), rng.random_range(0.0..tau)],
            z: std::array::from_fn(|_| normal(rng)),
            asym: std::array::from_fn(|_| 0.04 * normal(rng)),
        }
    }
}

/// Everything needed to draw one scan's label map.
#[derive(Debug, Clone)]
pub(crate) struct Anatomy {
    pub head_scale: f64,
    pub shape: [f64; 8],
    pub skull_mm: f64,
    pub scalp_mm: f64,
    /// Brain radius over intracranial radius (shrinks with atrophy).
    pub brain_frac: f64,
    /// Half-width of the sulcal band of the pattern (widens with atrophy).
    pub sulcal_width: f64,
    pub sulcal_dirs: [Vec3; 3],
    pub sulcal_phase: Vec3,
    /// Volume factor of each size class (hippocampus, entorhinal, fusiform, middle temporal,
    /// ventricles), right then left.
    pub size: [[f64; 2]; 5],
}

impl Anatomy {
    /// The subject at one visit: latent `severity`, `age` in years, `effect` scaling every
    /// severity effect (1 = the calibrated cohort), `rng` for scan-to-scan noise.
    pub fn at(t: &Traits, severity: f64, age: f64, effect: f64, rng: &mut ChaCha8Rng) -> Self {
        let years = age - 73.0;
        let s = severity.max(0.0) * effect;
        let factor = |e: &Effect, z: f64, rng: &mut ChaCha8Rng| -> f64 {
            let log_own = e.between * z + e.scan * normal(rng);
            if e.per_severity < 0.0 {
                // Growth (ventricles): multiplicative in both severity and age.
                (log_own - e.per_severity * s - e.per_year * years).exp()
            } else {
                log_own.exp() * (1.0 - e.per_severity * s).max(0.3) * (1.0 - e.per_year * years).clamp(0.5, 1.5)
            }
        };
        let mut size = [[1.0; 2]; 5];
        for (c, pair) in size.iter_mut().enumerate() {
            let f = factor(&EFFECTS[c], t.z[c], rng);
            let half = 0.5 * t.asym[c];
            *pair = [f * half.exp(), f * (-half).exp()];
        }
        let brain = factor(&EFFECTS[5], t.z[5], rng);
        Anatomy {
            // Scanner gradient calibration drifts by a few tenths of a percent, so even ICV
            // differs a little between a subject's sessions, as FreeSurfer's does.
            head_scale: t.head_scale * (1.0 + 0.004 * normal(rng)),
            shape: t.shape,
            skull_mm: t.skull_mm,
            scalp_mm: t.scalp_mm,
            brain_frac: BRAIN_FRAC * brain.cbrt(),
            // Sulci widen with severity and age, as the cortex thins.
            sulcal_width: 0.30 * (1.0 + 0.12 * s + 0.015 * years).max(0.5),
            sulcal_dirs: t.sulcal_dirs,
            sulcal_phase: t.sulcal_phase,
            size,
        }
    }
}
