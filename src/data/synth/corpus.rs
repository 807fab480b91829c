//! The brain corpus that adfit's default backbone is pre-trained on: synthetic heads from the
//! cohort generator, each captioned like a radiology finding, with no diagnosis anywhere.
//!
//! Every head is its own subject, drawn from a seed space no cohort uses (`CORPUS`, never
//! `ADNI` or `OASIS`): a latent severity spread evenly over 0-3.5 (no stage is ever named), an
//! age between 55 and 90, a head size by sex, the cohort's own anatomy and atrophy model, and an
//! ADNI-like or OASIS-like scanner. The volume is preprocessed in memory exactly as
//! `adfit preprocess` would (RAS+, crop, resize, normalise). The caption gives the measured
//! structure sizes as whole numbers and plain words for how each compares with a template head
//! of the same intracranial volume: "Intracranial volume: 1512345 mm^3. Hippocampal volume: 6612
//! mm^3, hippocampi small. ..." It never holds a class name, an MMSE score or an age.

use rand::Rng;
use rayon::prelude::*;

use super::anatomy::{self, Measures, ICV_TEMPLATE};
use super::atrophy::{Anatomy, Traits};
use super::cohort::normal;
use super::render::render;
use super::scanner::{Acquisition, ScannerProfile};
use super::stream;
use crate::data::preprocess::{process_volume, PreprocessConfig};
use crate::error::Result;

/// The corpus's cohort key in [`stream`]: a seed space of its own.
const CORPUS: u64 = 3;
/// Held-out heads draw from this seed space instead of the training one.
const HELD_OUT: u64 = 0x48_454C_444F_5554;
/// Lattice spacing of the label maps (mm), as the default cohort's.
const LATTICE_MM: f64 = 1.5;

/// One preprocessed head and its caption.
pub struct Head {
    /// Normalised voxels on the requested grid, `[D, H, W]` (the cache's layout).
    pub voxels: Vec<f32>,
    pub caption: String,
    /// Ventricles, hippocampus, whole brain, entorhinal, fusiform, middle temporal, ICV (mm³).
    pub volumes: [f64; 7],
}

/// Words that name or stand for a diagnosis, a cognitive score or an age: no caption may hold
/// one (a test checks every caption of a corpus against this list).
pub const FORBIDDEN_WORDS: &[&str] = &[
    "nc",
    "cn",
    "mci",
    "ad",
    "smc",
    "emci",
    "lmci",
    "normal",
    "control",
    "impairment",
    "impaired",
    "cognitive",
    "cognitively",
    "dementia",
    "demented",
    "alzheimer",
    "alzheimers",
    "mmse",
    "age",
    "aged",
    "years",
    "year",
    "old",
    "diagnosis",
    "disease",
];

/// Heads `first..first + n` of the training corpus of `seed` (`held_out` picks the held-out
/// seed space instead), on `grid`; generated in parallel, each from its own random stream, so
/// the result does not depend on the thread count.
pub fn heads(grid: [usize; 3], seed: u64, held_out: bool, first: u64, n: usize) -> Result<Vec<Head>> {
    let space = if held_out { HELD_OUT } else { 0 };
    (first..first + n as u64).into_par_iter().map(|i| head(grid, seed, space, i)).collect()
}

fn head(grid: [usize; 3], seed: u64, space: u64, index: u64) -> Result<Head> {
    let rng = &mut stream(seed, &[CORPUS, space, index]);
    let male = rng.random_bool(0.5);
    let icv = if male { 1.60e6 + 0.12e6 * normal(rng) } else { 1.42e6 + 0.11e6 * normal(rng) };
    let traits = Traits::draw(rng, icv.clamp(1.1e6, 2.0e6));
    let severity = rng.random_range(0.0..3.5);
    let age = rng.random_range(55.0..90.0);
    let anatomy = Anatomy::at(&traits, severity, age, 1.0, rng);
    let profile = if rng.random_bool(0.5) {
        ScannerProfile::adni((1.9, 2.2), (2.1, 2.6))
    } else {
        ScannerProfile::oasis((2.1, 2.3), (2.5, 2.7))
    };
    let acquisition = Acquisition::draw(&profile, rng);
    image(&anatomy, &acquisition, grid)
}

fn image(anatomy: &Anatomy, acquisition: &Acquisition, grid: [usize; 3]) -> Result<Head> {
    let map = anatomy::paint(anatomy, LATTICE_MM, true);
    let m = anatomy::measure(&map);
    let mut raw = render(&map, acquisition);
    // As stored in an int16 NIfTI.
    raw.data.iter_mut().for_each(|v| *v = v.round().clamp(-32768.0, 32767.0));
    let cfg = PreprocessConfig { shape: grid, ..Default::default() };
    let vol = process_volume(raw, &cfg, "corpus head")?;
    Ok(Head {
        voxels: vol.data,
        caption: caption(&m),
        volumes: [m.ventricles, m.hippocampus, m.whole_brain, m.entorhinal, m.fusiform, m.mid_temp, m.icv],
    })
}

/// Each structure's share of ICV in the template head (no atrophy, age 73, average sizes).
fn template_shares() -> &'static Measures {
    static SHARES: std::sync::OnceLock<Measures> = std::sync::OnceLock::new();
    SHARES.get_or_init(|| {
        let rng = &mut stream(0, &[CORPUS, u64::MAX]);
        let mut traits = Traits::draw(rng, ICV_TEMPLATE);
        traits.z = [0.0; 6];
        traits.asym = [0.0; 5];
        let m = anatomy::measure(&anatomy::paint(&Anatomy::at(&traits, 0.0, 73.0, 1.0, rng), LATTICE_MM, false));
        Measures {
            ventricles: m.ventricles / m.icv,
            hippocampus: m.hippocampus / m.icv,
            whole_brain: m.whole_brain / m.icv,
            entorhinal: m.entorhinal / m.icv,
            fusiform: m.fusiform / m.icv,
            mid_temp: m.mid_temp / m.icv,
            icv: 1.0,
        }
    })
}

/// A word for a shrinking structure's size relative to the template's share.
fn shrink_word(ratio: f64) -> &'static str {
    match ratio {
        r if r < 0.8 => "markedly small",
        r if r < 0.92 => "small",
        r if r < 1.06 => "typical",
        _ => "large",
    }
}

/// A word for the ventricles, which grow.
fn growth_word(ratio: f64) -> &'static str {
    match ratio {
        r if r > 2.2 => "markedly enlarged",
        r if r > 1.4 => "enlarged",
        r if r > 0.75 => "typical",
        _ => "small",
    }
}

/// The finding for measured volumes `m` (see the module documentation).
pub(crate) fn caption(m: &Measures) -> String {
    let t = template_shares();
    let share = |v: f64, of: f64| v / m.icv.max(1.0) / of;
    format!(
        "Intracranial volume: {:.0} mm^3. Hippocampal volume: {:.0} mm^3, hippocampi {}. Ventricular volume: {:.0} mm^3, \
         ventricles {}. Whole brain volume: {:.0} mm^3, brain {}. Entorhinal volume: {:.0} mm^3, entorhinal cortex {}. \
         Fusiform volume: {:.0} mm^3. Middle temporal volume: {:.0} mm^3.",
        m.icv,
        m.hippocampus,
        shrink_word(share(m.hippocampus, t.hippocampus)),
        m.ventricles,
        growth_word(share(m.ventricles, t.ventricles)),
        m.whole_brain,
        match share(m.whole_brain, t.whole_brain) {
            r if r < 0.97 => "shrunken",
            _ => "typical",
        },
        m.entorhinal,
        shrink_word(share(m.entorhinal, t.entorhinal)),
        m.fusiform,
        m.mid_temp,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_caption_names_a_diagnosis_a_score_or_an_age() {
        let heads = heads([24, 24, 24], 7, false, 0, 24).unwrap();
        let held = heads_words(&heads);
        for w in FORBIDDEN_WORDS {
            assert!(!held.contains(*w), "a caption holds {w:?}");
        }
        // The words that describe atrophy do occur.
        for w in ["markedly", "enlarged", "small", "typical"] {
            assert!(held.contains(w), "no caption says {w:?}");
        }
    }

    fn heads_words(heads: &[Head]) -> std::collections::BTreeSet<String> {
        heads
            .iter()
            .flat_map(|h| {
                h.caption
                    .to_lowercase()
                    .split(|c: char| !c.is_alphanumeric())
                    .filter(|w| !w.is_empty())
                    .map(str::to_string)
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    #[test]
    fn heads_are_reproducible_and_the_held_out_space_differs() {
        let a = heads([16, 16, 16], 1, false, 3, 2).unwrap();
        let b = heads([16, 16, 16], 1, false, 4, 1).unwrap();
        assert_eq!(a[1].voxels, b[0].voxels);
        assert_eq!(a[1].caption, b[0].caption);
        let h = heads([16, 16, 16], 1, true, 4, 1).unwrap();
        assert_ne!(h[0].caption, b[0].caption);
        assert_eq!(a[0].voxels.len(), 16 * 16 * 16);
    }

    #[test]
    fn atrophy_shows_in_the_words() {
        let t = template_shares();
        let icv = 1.5e6;
        let m = |hippo: f64, vent: f64| Measures {
            ventricles: vent * t.ventricles * icv,
            hippocampus: hippo * t.hippocampus * icv,
            whole_brain: t.whole_brain * icv,
            entorhinal: t.entorhinal * icv,
            fusiform: t.fusiform * icv,
            mid_temp: t.mid_temp * icv,
            icv,
        };
        assert!(caption(&m(1.0, 1.0)).contains("hippocampi typical"));
        assert!(caption(&m(0.7, 2.5)).contains("hippocampi markedly small"));
        assert!(caption(&m(0.7, 2.5)).contains("ventricles markedly enlarged"));
    }
}
