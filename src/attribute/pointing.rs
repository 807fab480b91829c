//! Scoring a heat map against the structure it should find (the synthetic cohort's label maps):
//! the energy-based pointing game (the share of the map's positive mass inside the structure)
//! and whether the map's peak voxel lies inside it.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// How one map meets one structure.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Pointing {
    /// Positive mass inside / all positive mass, in [0, 1].
    pub energy: f64,
    /// The peak voxel is inside.
    pub peak_hit: bool,
}

/// A map with no positive mass points nowhere: energy 0 and no hit (it counts as a miss, not as
/// a scan left out).
pub fn pointing(map: &[f32], inside: &[bool]) -> Pointing {
    assert_eq!(map.len(), inside.len(), "the map and the structure mask have the same grid");
    let (mut total, mut within) = (0f64, 0f64);
    let mut peak = (f32::NEG_INFINITY, 0usize);
    for (i, (&m, &k)) in map.iter().zip(inside).enumerate() {
        if m > peak.0 {
            peak = (m, i);
        }
        if m > 0.0 {
            total += m as f64;
            if k {
                within += m as f64;
            }
        }
    }
    if total > 0.0 {
        Pointing { energy: within / total, peak_hit: inside[peak.1] }
    } else {
        Pointing { energy: 0.0, peak_hit: false }
    }
}

/// A uniform random map over `n` tokens, seeded: the chance level of the pointing game once it is
/// resized to voxels like the real maps.
pub fn random_tokens(n: usize, seed: u64) -> Vec<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..n).map(|_| rng.random::<f32>()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn energy_is_the_share_of_positive_mass_inside() {
        let inside = [true, true, false, false];
        let p = pointing(&[3.0, 1.0, 4.0, -2.0], &inside);
        assert!((p.energy - 0.5).abs() < 1e-12);
        assert!(!p.peak_hit);
        assert!(pointing(&[5.0, 0.0, 1.0, 0.0], &inside).peak_hit);
        assert_eq!(pointing(&[0.0, -1.0, 0.0, 0.0], &inside), Pointing { energy: 0.0, peak_hit: false });
        assert_eq!(random_tokens(8, 3), random_tokens(8, 3));
    }
}
