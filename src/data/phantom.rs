//! The pre-training domain of adfit's own small backbone: head phantoms, not brains. Each is an
//! ellipsoidal "head" with a grey rim of some thickness inside a thin bright shell, holding a
//! dark central cavity, a pair of grey nodes low on either side, and sometimes one more blob of
//! a size, a tone, a shape and a place. The caption is written like a radiology report: a
//! one-word kind in "A photo of {kind}." (the extra blob's tone, or "plain"), then the measured
//! sizes as numbers. Phantom 0 of seed 0: "A photo of grey. The scan shows the following: Rim:
//! thin, Cavity volume: 18638.54 mm^3, Left node volume: 2230.59 mm^3, Right node volume: 1117.48
//! mm^3, Blob: a large grey round blob low."
//!
//! Nothing here knows about diagnoses, the synthetic cohort's anatomy or its tables. The
//! backbone learns to read the size, contrast and place of structures, and its text tower learns
//! to read the word after "A photo of" and numbers written as digits; fine-tuning has to find
//! atrophy with that.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

/// One generated phantom: a min-max normalised volume in `[D, H, W]` order and its caption.
pub struct Phantom {
    pub voxels: Vec<f32>,
    pub caption: String,
}

const SIZES: [&str; 3] = ["small", "medium", "large"];
const TONES: [(&str, f32); 3] = [("dark", 0.2), ("grey", 0.6), ("bright", 1.35)];
/// Per axis: the word for the negative and the positive side.
const SIDES: [(&str, &str); 3] = [("on the left", "on the right"), ("at the back", "at the front"), ("low", "high")];

/// Every word a caption may use (the pre-training vocabulary is built from it).
pub fn corpus() -> String {
    let mut words = vec![
        "a photo of plain . the scan shows following : rim thin thick , cavity left right node volume mm ^ 3 blob \
         none in centre round elongated"
            .to_string(),
    ];
    words.extend(SIZES.iter().map(|s| s.to_string()));
    words.extend(TONES.iter().map(|(t, _)| t.to_string()));
    words.extend(SIDES.iter().flat_map(|(a, b)| [a.to_string(), b.to_string()]));
    words.join(" ")
}

/// Edge of the field of view in nominal millimetres, for the volumes the captions state.
const FIELD_MM: f64 = 160.0;

/// Nominal volume in mm^3 of an ellipsoid with semi-axes given in `[-1, 1]` coordinates.
fn volume_mm3(semi: [f64; 3]) -> f64 {
    let half = FIELD_MM / 2.0;
    4.0 / 3.0 * std::f64::consts::PI * semi.iter().map(|s| s * half).product::<f64>()
}

/// The phantoms of one batch, reproducible from `(seed, index)` alone; generated in parallel.
pub fn batch(grid: [usize; 3], seed: u64, first: u64, n: usize) -> Vec<Phantom> {
    (0..n as u64).into_par_iter().map(|i| generate(grid, seed, first + i)).collect()
}

struct Blob {
    center: [f64; 3],
    semi: [f64; 3],
    value: f32,
}

impl Blob {
    fn contains(&self, p: [f64; 3]) -> bool {
        (0..3).map(|a| ((p[a] - self.center[a]) / self.semi[a]).powi(2)).sum::<f64>() <= 1.0
    }
}

/// A point given in units of the head's semi-axes.
fn scaled(p: [f64; 3], head: [f64; 3]) -> [f64; 3] {
    [p[0] * head[0], p[1] * head[1], p[2] * head[2]]
}

/// Phantom number `index` of the stream `seed`.
pub fn generate(grid: [usize; 3], seed: u64, index: u64) -> Phantom {
    let mut rng = ChaCha8Rng::seed_from_u64(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ index);
    // Coordinates in [-1, 1] along each axis.
    let head = [rng.random_range(0.72..0.9), rng.random_range(0.78..0.92), rng.random_range(0.7..0.88)];
    let rim = rng.random_range(0.06..0.2);
    let mut facts = vec![format!("Rim: {}", if rim < 0.13 { "thin" } else { "thick" })];
    let mut blobs = Vec::new();
    // The central cavity, longer front to back.
    let r = rng.random_range(0.06..0.26);
    let center = [rng.random_range(-0.05..0.05), rng.random_range(-0.05..0.1), rng.random_range(0.0..0.15)];
    blobs.push(Blob { center: scaled(center, head), semi: scaled([r * 0.8, r * 1.4, r], head), value: TONES[0].1 });
    // The nodes, low on either side, each its own size.
    for side in [-1.0, 1.0] {
        let r = rng.random_range(0.05..0.14);
        let center = [side * rng.random_range(0.4..0.5), rng.random_range(-0.1..0.1), rng.random_range(-0.4..-0.25)];
        blobs.push(Blob {
            center: scaled(center, head),
            semi: scaled([r * 0.8, r * 1.5, r * 0.8], head),
            value: TONES[1].1,
        });
    }
    facts.push(format!("Cavity volume: {:.2} mm^3", volume_mm3(blobs[0].semi)));
    facts.push(format!("Left node volume: {:.2} mm^3", volume_mm3(blobs[1].semi)));
    facts.push(format!("Right node volume: {:.2} mm^3", volume_mm3(blobs[2].semi)));
    let mut kind = "plain";
    if rng.random_bool(0.5) {
        let size = rng.random_range(0..3);
        let radius = [0.08, 0.12, 0.16][size] * rng.random_range(0.85..1.15);
        let elongated = rng.random_bool(0.5);
        let mut semi = [radius; 3];
        if elongated {
            let a = rng.random_range(0..3);
            semi[a] *= 1.7;
            semi[(a + 1) % 3] /= 1.3;
        }
        let mut center = [0.0f64; 3];
        for c in center.iter_mut() {
            *c = rng.random_range(-0.6..0.6);
        }
        let (tone, value) = TONES[rng.random_range(0..3)];
        let axis = (0..3).max_by(|&a, &b| center[a].abs().total_cmp(&center[b].abs())).unwrap_or(0);
        let place = if center[axis].abs() < 0.22 {
            "in the centre"
        } else if center[axis] < 0.0 {
            SIDES[axis].0
        } else {
            SIDES[axis].1
        };
        let shape = if elongated { "elongated" } else { "round" };
        facts.push(format!("Blob: a {} {tone} {shape} blob {place}", SIZES[size]));
        kind = tone;
        blobs.push(Blob { center: scaled(center, head), semi, value });
    } else {
        facts.push("Blob: none".to_string());
    }
    let caption = format!("A photo of {kind}. The scan shows the following: {}.", facts.join(", "));
    let gain = rng.random_range(0.85..1.15f32);
    let tilt: [f32; 3] = [rng.random_range(-0.08..0.08), rng.random_range(-0.08..0.08), rng.random_range(-0.08..0.08)];
    let noise_seed = rng.random::<u64>();
    let [d, h, w] = grid;
    let coord = |i: usize, n: usize| (i as f64 + 0.5) / n as f64 * 2.0 - 1.0;
    let mut noise = ChaCha8Rng::seed_from_u64(noise_seed);
    let mut voxels = vec![0f32; d * h * w];
    for z in 0..d {
        for y in 0..h {
            for x in 0..w {
                let p = [coord(z, d), coord(y, h), coord(x, w)];
                let r = (0..3).map(|a| (p[a] / head[a]).powi(2)).sum::<f64>().sqrt();
                let mut v = if r > 1.08 {
                    0.0
                } else if r > 1.0 {
                    1.3
                } else if r > 1.0 - rim {
                    0.6
                } else {
                    1.0
                };
                if r <= 1.0 {
                    for b in &blobs {
                        if b.contains(p) {
                            v = b.value;
                        }
                    }
                }
                let bias = 1.0 + tilt[0] * p[0] as f32 + tilt[1] * p[1] as f32 + tilt[2] * p[2] as f32;
                let n: f32 = noise.random_range(-0.05..0.05);
                voxels[(z * h + y) * w + x] = (v * gain * bias + if v > 0.0 { n } else { n * 0.2 }).max(0.0);
            }
        }
    }
    let (lo, hi) = voxels.iter().fold((f32::MAX, f32::MIN), |(l, u), &v| (l.min(v), u.max(v)));
    let span = (hi - lo).max(1e-6);
    voxels.iter_mut().for_each(|v| *v = (*v - lo) / span);
    Phantom { voxels, caption }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reproducible_normalised_and_captioned() {
        let a = generate([16, 16, 16], 3, 7);
        let b = generate([16, 16, 16], 3, 7);
        assert_eq!(a.voxels, b.voxels);
        assert_eq!(a.caption, b.caption);
        assert_ne!(generate([16, 16, 16], 3, 8).voxels, a.voxels);
        let (lo, hi) = a.voxels.iter().fold((1f32, 0f32), |(l, u), &v| (l.min(v), u.max(v)));
        assert!(lo == 0.0 && (hi - 1.0).abs() < 1e-6);
        assert!(a.caption.starts_with("A photo of "), "{}", a.caption);
        assert_eq!(a.caption.matches("Cavity volume: ").count(), 1, "{}", a.caption);
        assert_eq!(a.caption.matches(" node volume: ").count(), 2, "{}", a.caption);
        assert_eq!(a.caption.matches("Blob: ").count(), 1, "{}", a.caption);
        // The kind names the extra blob's tone, or says there is none.
        let kind = a.caption["A photo of ".len()..].split('.').next().unwrap();
        assert_eq!(kind == "plain", a.caption.contains("Blob: none"), "{}", a.caption);
    }

    #[test]
    fn captions_use_only_corpus_words() {
        let words: std::collections::HashSet<String> = corpus().split_whitespace().map(str::to_lowercase).collect();
        for i in 0..50 {
            let c = generate([8, 8, 8], 1, i).caption.to_lowercase();
            let c = c.replace(|ch: char| ch.is_ascii_digit(), " ");
            for w in c.replace(['.', ',', ':', '^'], " . ").split_whitespace().filter(|w| *w != ".") {
                assert!(words.contains(w), "{w:?} in {c:?}");
            }
        }
    }

    #[test]
    fn a_large_cavity_darkens_the_centre() {
        // Over many phantoms, the centre of those whose caption states a large cavity volume is
        // darker than the centre of those with a small one.
        let (mut large, mut small) = (vec![], vec![]);
        for i in 0..120 {
            let p = generate([16, 16, 16], 2, i);
            let mut centre = 0.0;
            for z in 7..9 {
                for y in 7..10 {
                    for x in 8..10 {
                        centre += p.voxels[(z * 16 + y) * 16 + x] / 12.0;
                    }
                }
            }
            let volume: f64 =
                p.caption.split("Cavity volume: ").nth(1).and_then(|s| s.split(' ').next()).unwrap().parse().unwrap();
            if volume > 6000.0 {
                large.push(centre)
            } else if volume < 1500.0 {
                small.push(centre)
            }
        }
        let mean = |v: &[f32]| v.iter().sum::<f32>() / v.len().max(1) as f32;
        assert!(!large.is_empty() && !small.is_empty());
        assert!(mean(&large) < mean(&small) - 0.1, "{} vs {}", mean(&large), mean(&small));
    }
}
