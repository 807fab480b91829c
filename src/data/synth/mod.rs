//! The synthetic cohort: adfit's own embedded default dataset, standing in for ADNI and OASIS-2,
//! which cannot be downloaded here.
//!
//! Each scan is a brain phantom (`anatomy.rs`, `atrophy.rs`) whose size-based disease signal
//! sits in the structures the reports name, imaged by a scanner model (`scanner.rs`,
//! `render.rs`) with the nuisances a raw T1 has. Subjects and visits come from `cohort.rs`,
//! `adni.rs` and `oasis.rs`; the tables are written in the real cohorts' formats (`tables.rs`),
//! with volume columns counted from each scan's own label map. An ADNI-like cohort (NC/MCI/AD,
//! converters, visits without MRI, blank cells) is for training and testing; an OASIS-like one
//! (NC/AD plus converters, another scanner) is for zero-shot transfer.
//!
//! Output is a pure function of the configuration: every subject, visit and scan draws from its
//! own `ChaCha8Rng` stream keyed by (seed, cohort, subject, visit), so the files are byte-identical
//! whatever the thread count.

mod adni;
mod anatomy;
mod atrophy;
#[cfg(test)]
mod calibration;
mod cohort;
pub mod corpus;
mod geom;
mod oasis;
mod render;
mod scanner;
mod tables;
#[cfg(test)]
mod tests;

use std::path::Path;
use std::time::Instant;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use serde::Serialize;

pub use scanner::{Contrast, Orientation, ScannerProfile};

use crate::data::label::Label;
use crate::data::labels;
use crate::data::nifti_io::{write_nifti, OutType};
use crate::error::{Error, Result};

/// Named sizes of the cohort.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Preset {
    /// A few dozen small scans, generated in about a second: for tests and smoke runs.
    Tiny,
    /// A few hundred scans: the default dataset of `adfit synth`.
    Default,
}

/// How many subjects a cohort has and how many MRI visits each gets.
#[derive(Debug, Clone, Serialize)]
pub struct CohortSize {
    pub subjects: usize,
    pub min_visits: usize,
    pub max_visits: usize,
}

/// Everything that determines the generated files.
#[derive(Debug, Clone, Serialize)]
pub struct SynthConfig {
    pub preset: Preset,
    pub seed: u64,
    /// ADNI-like cohort: ~150 subjects with 1-4 scanned visits gives a few hundred scans, enough
    /// for 5-fold subject-level splits with every class in every fold.
    pub adni: CohortSize,
    /// OASIS-like cohort: every subject has at least two sessions, as in OASIS-2.
    pub oasis: CohortSize,
    /// Spacing (mm) of the lattice each label map is drawn and measured on. Finer than the
    /// scans' voxels so that imaging has partial volume; coarse enough to stay fast.
    pub lattice_mm: f64,
    pub adni_scanner: ScannerProfile,
    pub oasis_scanner: ScannerProfile,
    /// Multiplies every disease effect on anatomy: 1 is the calibrated cohort (a logistic
    /// regression on the volume columns and age reaches ~80-92% balanced accuracy), 0 removes
    /// the imaging signal altogether.
    pub effect: f64,
    /// Write the NIfTI volumes. Off, the label maps are still drawn and measured (the tables
    /// are identical), only faster: for tests of the tables.
    pub write_images: bool,
    /// Also write each scan's tissue label map beside it (`X_labels.nii.gz`, uint8, the scan's
    /// grid and affine; see `data/labels.rs`) and the legend `labels.json`. Needs the images.
    /// Left out of `cohort.json` when off, so a cohort without labels keeps its bytes.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub write_labels: bool,
}

impl SynthConfig {
    pub fn preset(preset: Preset, seed: u64) -> Self {
        match preset {
            // ~40-48 voxels a side: big enough for every shape check, small enough to be instant.
            Preset::Tiny => SynthConfig {
                preset,
                seed,
                adni: CohortSize { subjects: 14, min_visits: 2, max_visits: 2 },
                oasis: CohortSize { subjects: 6, min_visits: 2, max_visits: 2 },
                lattice_mm: 2.5,
                adni_scanner: ScannerProfile::adni((4.4, 4.8), (4.6, 5.0)),
                oasis_scanner: ScannerProfile::oasis((4.6, 4.8), (4.9, 5.1)),
                effect: 1.0,
                write_images: true,
                write_labels: false,
            },
            // Voxels of ~2 mm (not the 1 mm of real T1s) keep the whole cohort under ~400 MB and
            // its generation under a minute; models downstream resample to 64-128³ anyway.
            Preset::Default => SynthConfig {
                preset,
                seed,
                adni: CohortSize { subjects: 150, min_visits: 1, max_visits: 4 },
                oasis: CohortSize { subjects: 60, min_visits: 2, max_visits: 4 },
                lattice_mm: 1.5,
                adni_scanner: ScannerProfile::adni((1.9, 2.2), (2.1, 2.6)),
                oasis_scanner: ScannerProfile::oasis((2.1, 2.3), (2.5, 2.7)),
                effect: 1.0,
                write_images: true,
                write_labels: false,
            },
        }
    }

    /// Reject settings the generator cannot honour, naming the field.
    pub fn validate(&self) -> Result<()> {
        let bad = |field: &str, reason: &str| Err(Error::config(format!("synth {field}"), reason));
        if !(0.5..=5.0).contains(&self.lattice_mm) {
            return bad("lattice_mm", "must be between 0.5 and 5 mm");
        }
        if !(0.0..=3.0).contains(&self.effect) {
            return bad("effect", "must be between 0 and 3");
        }
        if self.write_labels && !self.write_images {
            return bad("write_labels", "needs write_images: label maps are drawn in each scan's grid");
        }
        if self.adni.subjects == 0 || self.adni.min_visits == 0 || self.adni.min_visits > self.adni.max_visits {
            return bad("adni", "needs at least one subject and 1 <= min_visits <= max_visits");
        }
        if self.oasis.min_visits < 1 || self.oasis.min_visits > self.oasis.max_visits {
            return bad("oasis", "needs 1 <= min_visits <= max_visits");
        }
        for (name, p) in [("adni_scanner", &self.adni_scanner), ("oasis_scanner", &self.oasis_scanner)] {
            let ranges = [p.wm_value, p.noise, p.voxel_inplane, p.voxel_slice, p.fov_margin];
            if ranges.iter().any(|&(lo, hi)| !(lo.is_finite() && hi.is_finite() && lo >= 0.0 && lo <= hi)) {
                return bad(name, "every range must be finite, non-negative, and low <= high");
            }
            if p.voxel_inplane.0 < 0.5 || p.voxel_slice.0 < 0.5 {
                return bad(name, "voxels must be at least 0.5 mm");
            }
            if p.orientations.is_empty() {
                return bad(name, "needs at least one orientation");
            }
            let non_negative = [p.contrast_jitter, p.bias, p.max_rotation_deg, p.max_shift_mm, p.oblique_max_deg];
            if non_negative.iter().any(|v| !(v.is_finite() && *v >= 0.0)) {
                return bad(name, "jitter, bias, rotation, shift and obliquity must be finite and >= 0");
            }
            if !(0.0..=1.0).contains(&p.oblique_fraction) {
                return bad(name, "oblique_fraction must be in [0, 1]");
            }
        }
        Ok(())
    }
}

/// What was generated, for the CLI to print and `cohort.json` to record.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SynthSummary {
    pub adni_subjects: usize,
    /// ADNIMERGE rows, scanned or not.
    pub adni_rows: usize,
    pub adni_scans: usize,
    /// ADNI scans by their own visit's DX (NC, MCI, AD); scans whose DX cell is blank are in
    /// `adni_scans_without_dx`.
    pub adni_scans_by_label: [usize; 3],
    pub adni_scans_without_dx: usize,
    pub oasis_subjects: usize,
    pub oasis_scans: usize,
    /// OASIS subjects by `Group`: Nondemented, Demented, Converted.
    pub oasis_subjects_by_group: [usize; 3],
    /// Total size of the images, label maps and tables written (`cohort.json` aside).
    pub bytes_written: u64,
}

/// A random stream for one part of the cohort: `parts` (cohort, role, subject, visit, …) are
/// mixed into the seed with SplitMix64, so every stream is independent of every other.
pub(crate) fn stream(seed: u64, parts: &[u64]) -> ChaCha8Rng {
    fn mix(mut z: u64) -> u64 {
        z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    let mut h = mix(seed);
    for &p in parts {
        h = mix(h ^ mix(p.wrapping_add(0x5851_F42D_4C95_7F2D)));
    }
    ChaCha8Rng::seed_from_u64(h)
}

/// Draw, measure and (if asked) image one scan; returns its measures and the bytes written.
fn run_scan(scan: &cohort::Scan, dir: &Path, cfg: &SynthConfig) -> Result<(anatomy::Measures, u64)> {
    let map = anatomy::paint(&scan.anatomy, cfg.lattice_mm, cfg.write_images);
    let measures = anatomy::measure(&map);
    if !cfg.write_images {
        return Ok((measures, 0));
    }
    let grid = render::ScanGrid::new(&map, &scan.acquisition);
    let volume = render::render_on(&map, &scan.acquisition, &grid);
    let path = dir.join(&scan.file);
    write_nifti(&path, &volume, OutType::Int16)?;
    let mut bytes = file_size(&path)?;
    if cfg.write_labels {
        let label_path = labels::sibling_path(&path);
        labels::write_label_map(&label_path, &render::render_labels(&map, &grid))?;
        bytes += file_size(&label_path)?;
    }
    Ok((measures, bytes))
}

/// Every scan of a cohort, in subject then visit order (the order the tables are written in).
fn scan_jobs<'a>(subjects: &'a [cohort::Subject], dir: &Path) -> Vec<(&'a cohort::Scan, std::path::PathBuf)> {
    let scans = subjects.iter().flat_map(|s| s.visits.iter().filter_map(|v| v.scan.as_ref()));
    scans.map(|sc| (sc, dir.to_path_buf())).collect()
}

fn file_size(path: &Path) -> Result<u64> {
    Ok(std::fs::metadata(path).map_err(|e| Error::io(path, e))?.len())
}

/// Generate the cohort under `out`: `adni/` (ADNIMERGE.csv, scans.csv, scans_by_id.csv,
/// images/), `oasis/` (oasis_longitudinal.csv, scans.csv, images/) and `cohort.json` (the
/// configuration and the summary); with `write_labels`, also `images/X_labels.nii.gz` beside
/// each scan and the legend `labels.json` (never in a scan list). Files are written atomically;
/// existing ones are replaced.
pub fn generate(out: &Path, cfg: &SynthConfig) -> Result<SynthSummary> {
    cfg.validate()?;
    let started = Instant::now();
    let adni = adni::subjects(cfg, &cfg.adni_scanner);
    let oasis = oasis::subjects(cfg, &cfg.oasis_scanner);
    let (adni_dir, oasis_dir) = (out.join("adni"), out.join("oasis"));
    let mut jobs = scan_jobs(&adni, &adni_dir);
    let n_adni = jobs.len();
    jobs.extend(scan_jobs(&oasis, &oasis_dir));
    tracing::info!(scans = jobs.len(), images = cfg.write_images, "generating synthetic cohort");
    let results = jobs.par_iter().map(|(scan, dir)| run_scan(scan, dir, cfg)).collect::<Result<Vec<_>>>()?;
    let measures: Vec<_> = results.iter().map(|r| r.0).collect();
    let mut bytes: u64 = results.iter().map(|r| r.1).sum();

    tables::write_adni(&adni_dir, &adni, &measures[..n_adni])?;
    tables::write_oasis(&oasis_dir, &oasis, &measures[n_adni..])?;
    for f in ["ADNIMERGE.csv", "scans.csv", "scans_by_id.csv"] {
        bytes += file_size(&adni_dir.join(f))?;
    }
    for f in ["oasis_longitudinal.csv", "scans.csv"] {
        bytes += file_size(&oasis_dir.join(f))?;
    }
    if cfg.write_labels {
        let legend = out.join("labels.json");
        crate::util::write_json(&legend, &labels::legend_json())?;
        bytes += file_size(&legend)?;
    }

    let mut by_label = [0usize; 3];
    let mut without_dx = 0;
    for v in adni.iter().flat_map(|s| &s.visits).filter(|v| v.scan.is_some()) {
        match v.dx {
            Some(l) => by_label[l.index()] += 1,
            None => without_dx += 1,
        }
    }
    let group_count = |g: &str| oasis.iter().filter(|s| s.group == g).count();
    let summary = SynthSummary {
        adni_subjects: adni.len(),
        adni_rows: adni.iter().map(|s| s.visits.len()).sum(),
        adni_scans: n_adni,
        adni_scans_by_label: by_label,
        adni_scans_without_dx: without_dx,
        oasis_subjects: oasis.len(),
        oasis_scans: jobs.len() - n_adni,
        oasis_subjects_by_group: [group_count("Nondemented"), group_count("Demented"), group_count("Converted")],
        bytes_written: bytes,
    };
    let json_path = out.join("cohort.json");
    let doc = serde_json::json!({
            "generator": format!("adfit {} synth", env!("CARGO_PKG_VERSION")),
            "description": "Synthetic brain-phantom cohort: ADNI-like (adni/) and OASIS-2-like (oasis/) tables and int16 T1 \
                NIfTI volumes. Volume columns are counted from each scan's own phantom label map. Labels: ADNIMERGE DX \
                (CN/MCI/Dementia) per visit; OASIS Group per subject. Same configuration, same bytes.",
            "labels": Label::ALL.map(|l| l.as_str()),
            "config": cfg,
            "summary": summary,
    });
    let text = serde_json::to_vec_pretty(&doc).map_err(|e| Error::Json { path: json_path.clone(), source: e })?;
    crate::util::write_bytes_atomic(&json_path, &text)?;
    tracing::info!(
        seconds = started.elapsed().as_secs_f64(),
        bytes = summary.bytes_written,
        "synthetic cohort written"
    );
    Ok(summary)
}
