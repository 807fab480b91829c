//! The phantom's anatomy: a head drawn as nested, gently deformed ellipsoids (scalp, skull,
//! intracranial space, brain with a cortical ribbon cut by sulci) plus a handful of ellipsoidal
//! structures at their textbook positions (RAS mm about the centre of the intracranial space,
//! close to MNI152 coordinates): cerebellum, brainstem, deep grey matter, and, left and right,
//! the lateral ventricles, hippocampus, entorhinal cortex, fusiform and middle temporal gyri.
//!
//! The sizes come from `Anatomy` (see `atrophy.rs`). The table's volume columns are counted
//! from the label map drawn here, so they carry exactly what an image would show,
//! discretisation included.

use super::atrophy::Anatomy;
use super::geom::{rotation, Ellipsoid, Lattice, Vec3};
use crate::data::labels::structure;

/// Tissue labels of the phantom's label map (defined with their names in `data/labels.rs`).
pub(crate) use crate::data::labels::tissue;
use tissue::*;

/// Semi-axes of the template's intracranial space (mm): 4/3·π·67·87·61 ≈ 1.49 L, the mean
/// FreeSurfer ICV of an elderly cohort.
const IC_SEMI: Vec3 = [67.0, 87.0, 61.0];
/// Template intracranial volume, what a head scale of 1 means.
pub(crate) const ICV_TEMPLATE: f64 = 4.0 / 3.0 * std::f64::consts::PI * 67.0 * 87.0 * 61.0;
/// Brain radius over intracranial radius for a young, healthy template: 0.92³ ≈ 0.78 of the
/// intracranial volume is brain before sulci and ventricles, which leaves nWBV ≈ 0.70-0.75.
pub(crate) const BRAIN_FRAC: f64 = 0.92;
/// Depth of the cortical ribbon as a fraction of the brain radius (~9 mm): a smooth phantom has
/// no folds, so the ribbon is thicker than real cortex to hold a realistic grey-matter volume.
const RIBBON: f64 = 0.14;
/// Linear size of a measured structure ∝ head scale^ALLOMETRY, so its volume ∝ ICV^0.6.
const ALLOMETRY: f64 = 0.6;
/// Spatial period of the sulcal pattern (template mm).
const SULCAL_PERIOD: f64 = 22.0;

/// Which size factor scales a structure.
#[derive(Debug, Clone, Copy)]
enum Size {
    Fixed,
    Hippocampus,
    Entorhinal,
    Fusiform,
    MidTemp,
    Ventricles,
}

/// Labels a structure may overwrite, as a bit mask over label values.
const fn mask(labels: &[u8]) -> u32 {
    let mut m = 0u32;
    let mut i = 0;
    while i < labels.len() {
        m |= 1 << labels[i];
        i += 1;
    }
    m
}
const BRAIN: u32 = mask(&[GM, WM, SULCAL, DEEP_GM]);

struct Part {
    /// Right and left labels (equal for a midline structure).
    labels: [u8; 2],
    /// Centre of the right one; the left one is its mirror image (x → -x).
    center: Vec3,
    semi: Vec3,
    /// Rotation angles (rad) about x, y, z of the right one.
    tilt: Vec3,
    paired: bool,
    size: Size,
    over: u32,
}

/// Drawn in this order, each over what is already there, so later structures win where two touch.
const PARTS: [Part; 8] = [
    Part {
        labels: [CEREBELLUM, CEREBELLUM],
        center: [0.0, -52.0, -34.0],
        semi: [40.0, 20.0, 14.0],
        tilt: [0.0; 3],
        paired: false,
        size: Size::Fixed,
        over: mask(&[GM, WM, SULCAL]),
    },
    Part {
        labels: [WM, WM],
        center: [0.0, -20.0, -38.0],
        semi: [10.0, 12.0, 22.0],
        tilt: [0.2, 0.0, 0.0],
        paired: false,
        size: Size::Fixed,
        over: mask(&[GM, SULCAL, CSF]),
    },
    Part {
        labels: [DEEP_GM, DEEP_GM],
        center: [14.0, -2.0, -2.0],
        semi: [11.0, 20.0, 10.0],
        tilt: [0.0; 3],
        paired: true,
        size: Size::Fixed,
        over: mask(&[GM, WM, SULCAL]),
    },
    Part {
        labels: [VENT_R, VENT_L],
        center: [11.0, -4.0, 12.0],
        semi: [8.0, 32.0, 12.0],
        tilt: [-0.1, 0.0, 0.05],
        paired: true,
        size: Size::Ventricles,
        over: BRAIN,
    },
    Part {
        labels: [MTG_R, MTG_L],
        center: [48.0, -18.0, -12.0],
        semi: [7.5, 34.0, 10.5],
        tilt: [0.15, 0.0, 0.05],
        paired: true,
        size: Size::MidTemp,
        over: BRAIN,
    },
    Part {
        labels: [FUSI_R, FUSI_L],
        center: [36.0, -42.0, -20.0],
        semi: [10.0, 34.0, 8.0],
        tilt: [0.1, 0.0, 0.0],
        paired: true,
        size: Size::Fusiform,
        over: BRAIN,
    },
    Part {
        labels: [ENTO_R, ENTO_L],
        center: [22.0, 2.0, -32.0],
        semi: [5.5, 10.0, 8.5],
        tilt: [0.0; 3],
        paired: true,
        size: Size::Entorhinal,
        over: BRAIN,
    },
    Part {
        labels: [HIPPO_R, HIPPO_L],
        center: [27.0, -20.0, -14.0],
        semi: [7.3, 19.5, 6.7],
        tilt: [-0.45, 0.0, 0.1],
        paired: true,
        size: Size::Hippocampus,
        over: BRAIN,
    },
];

/// A label map on a lattice of subject space (RAS mm about the intracranial centre).
#[derive(Debug, Clone)]
pub(crate) struct LabelMap {
    pub lattice: Lattice,
    pub labels: Vec<u8>,
}

/// Radius of a unit direction on the deformed surface, relative to the ellipsoid's.
#[inline]
fn deform(shape: &[f64; 8], u: Vec3) -> f64 {
    1.0 + shape[0] * u[0]
        + shape[1] * u[1]
        + shape[2] * u[2]
        + shape[3] * (u[0] * u[0] - u[1] * u[1])
        + shape[4] * 0.5 * (3.0 * u[2] * u[2] - 1.0)
        + shape[5] * u[0] * u[1]
        + shape[6] * u[1] * u[2]
        + shape[7] * u[0] * u[2]
}

/// Draw the label map on a lattice of spacing `h` mm. With `with_head` the box holds scalp and
/// skull too (for an image); without, only the intracranial space (enough for measuring, and
/// with identical labels there, since both boxes sit on the same lattice).
pub(crate) fn paint(a: &Anatomy, h: f64, with_head: bool) -> LabelMap {
    let k = a.head_scale;
    let semi = [IC_SEMI[0] * k, IC_SEMI[1] * k, IC_SEMI[2] * k];
    let r_mean = (semi[0] * semi[1] * semi[2]).cbrt();
    let (skull, scalp) = (a.skull_mm / r_mean, a.scalp_mm / r_mean);
    let outer = if with_head { 1.0 + skull + scalp } else { 1.0 };
    let reach = outer * (1.0 + a.shape.iter().map(|c| c.abs()).sum::<f64>());
    let hi = [semi[0] * reach, semi[1] * reach, semi[2] * reach];
    let lattice = Lattice::covering([-hi[0], -hi[1], -hi[2]], hi, h);
    let mut labels = vec![BG; lattice.len()];
    let beta = a.brain_frac;
    let ribbon_in = beta * (1.0 - RIBBON);
    let sulcus_in = beta * (1.0 - 0.8 * RIBBON);
    let omega = std::f64::consts::TAU / (SULCAL_PERIOD * k);
    let [n0, n1, n2] = lattice.shape;
    for i in 0..n0 {
        let x = lattice.coord(0, i);
        let qx = x / semi[0];
        for j in 0..n1 {
            let y = lattice.coord(1, j);
            let qy = y / semi[1];
            let row = lattice.index(i, j, 0);
            for kk in 0..n2 {
                let z = lattice.coord(2, kk);
                let qz = z / semi[2];
                let r2 = qx * qx + qy * qy + qz * qz;
                if r2 > reach * reach {
                    continue;
                }
                let r = r2.sqrt();
                let rho = if r > 0.0 { r / deform(&a.shape, [qx / r, qy / r, qz / r]) } else { 0.0 };
                let label = if rho > outer {
                    BG
                } else if rho > 1.0 + skull {
                    SCALP
                } else if rho > 1.0 {
                    SKULL
                } else if rho > beta {
                    CSF
                } else if rho > ribbon_in {
                    let sulcal = rho > sulcus_in && {
                        let p = [x, y, z];
                        let wave =
                            |d: &Vec3, phase: f64| (omega * (d[0] * p[0] + d[1] * p[1] + d[2] * p[2]) + phase).sin();
                        let s: f64 = (0..3).map(|m| wave(&a.sulcal_dirs[m], a.sulcal_phase[m])).sum();
                        s.abs() < a.sulcal_width
                    };
                    if sulcal {
                        SULCAL
                    } else {
                        GM
                    }
                } else {
                    WM
                };
                labels[row + kk] = label;
            }
        }
    }
    let mut map = LabelMap { lattice, labels };
    let shrink = beta / BRAIN_FRAC;
    for part in &PARTS {
        let sides = if part.paired { 2 } else { 1 };
        for side in 0..sides {
            let factor = match part.size {
                Size::Fixed => 1.0,
                Size::Hippocampus => a.size[0][side],
                Size::Entorhinal => a.size[1][side],
                Size::Fusiform => a.size[2][side],
                Size::MidTemp => a.size[3][side],
                Size::Ventricles => a.size[4][side],
            };
            let mirror = if side == 1 { -1.0 } else { 1.0 };
            // Structures move inward with the shrinking brain, and scale with the head.
            let c = part.center;
            let center = [mirror * c[0] * k * shrink, c[1] * k * shrink, c[2] * k * shrink];
            // Structures grow less than proportionally with head size (allometry: volume ∝
            // ICV^0.6), as real ones do; the fixed parts fill the head.
            let g = match part.size {
                Size::Fixed => k,
                _ => k.powf(ALLOMETRY) * factor.cbrt(),
            };
            let semi = [part.semi[0] * g, part.semi[1] * g, part.semi[2] * g];
            let tilt = [part.tilt[0], mirror * part.tilt[1], mirror * part.tilt[2]];
            let e = Ellipsoid::new(center, semi, &rotation(tilt));
            fill(&mut map, &e, part.labels[side], part.over);
        }
    }
    map
}

/// Set `label` on every point of `e` whose current label is in the bit mask `over`.
fn fill(map: &mut LabelMap, e: &Ellipsoid, label: u8, over: u32) {
    let half = e.half_extent();
    let l = &map.lattice;
    let ranges: [_; 3] = std::array::from_fn(|a| l.range(a, e.center[a] - half[a], e.center[a] + half[a]));
    for i in ranges[0].clone() {
        for j in ranges[1].clone() {
            for kk in ranges[2].clone() {
                let idx = l.index(i, j, kk);
                let cur = map.labels[idx];
                if over & (1 << cur) != 0 && e.contains([l.coord(0, i), l.coord(1, j), l.coord(2, kk)]) {
                    map.labels[idx] = label;
                }
            }
        }
    }
}

/// The volumes ADNIMERGE reports (FreeSurfer's names), in mm³.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Measures {
    pub ventricles: f64,
    pub hippocampus: f64,
    pub whole_brain: f64,
    pub entorhinal: f64,
    pub fusiform: f64,
    pub mid_temp: f64,
    pub icv: f64,
}

/// Count the label map: voxel count × voxel volume, both hemispheres together. Whole brain is
/// every brain tissue label (ventricles and CSF excluded); ICV is everything inside the skull.
pub(crate) fn measure(map: &LabelMap) -> Measures {
    let mut counts = [0u64; COUNT];
    for &l in &map.labels {
        counts[l as usize] += 1;
    }
    let v = map.lattice.h.powi(3);
    let sum = |ls: &[u8]| ls.iter().map(|&l| counts[l as usize]).sum::<u64>() as f64 * v;
    // The label sets `labels::structure_labels` gives the attribution scores: one definition.
    Measures {
        ventricles: sum(&structure::VENTRICLES),
        hippocampus: sum(&structure::HIPPOCAMPUS),
        whole_brain: sum(&structure::BRAIN),
        entorhinal: sum(&structure::ENTORHINAL),
        fusiform: sum(&structure::FUSIFORM),
        mid_temp: sum(&structure::MID_TEMP),
        icv: sum(&structure::BRAIN) + sum(&structure::FLUID),
    }
}

#[cfg(test)]
mod tests {
    use super::super::atrophy::Traits;
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    fn anatomy(seed: u64, severity: f64) -> Anatomy {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let t = Traits::draw(&mut rng, ICV_TEMPLATE);
        Anatomy::at(&t, severity, 73.0, 1.0, &mut rng)
    }

    #[test]
    fn measuring_box_agrees_with_head_box() {
        let a = anatomy(3, 1.0);
        let head = paint(&a, 3.0, true);
        let brain = paint(&a, 3.0, false);
        assert!(brain.labels.len() < head.labels.len());
        assert_eq!(measure(&head), measure(&brain));
        assert!(head.labels.contains(&SCALP) && !brain.labels.contains(&SCALP));
    }

    #[test]
    fn template_volumes_are_plausible() {
        let m = measure(&paint(&anatomy(5, 0.0), 2.0, false));
        let within = |v: f64, lo: f64, hi: f64, what: &str| assert!(v > lo && v < hi, "{what} = {v}");
        within(m.icv, 1.2e6, 1.8e6, "ICV");
        within(m.whole_brain, 0.85e6, 1.3e6, "WholeBrain");
        within(m.hippocampus, 5000.0, 9500.0, "Hippocampus");
        within(m.ventricles, 8000.0, 60000.0, "Ventricles");
        within(m.entorhinal, 2500.0, 5500.0, "Entorhinal");
        within(m.fusiform, 12000.0, 24000.0, "Fusiform");
        within(m.mid_temp, 13000.0, 26000.0, "MidTemp");
    }
}
