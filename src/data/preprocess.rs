//! `adfit preprocess`: scan list + clinical table → a cache of normalised volumes and a cohort
//! index (CSV) that every later command reads.
//!
//! Per scan, in order: read NIfTI → reorient to RAS+ → [bias-field correction, skull stripping
//! and registration to MNI belong here, between reorientation and cropping, once adfit has them;
//! today scans must arrive already skull-stripped and registered, as the paper's were] → crop to
//! the head → trilinear resize → intensity normalisation. Scans run in parallel; a scan whose
//! cache file is complete is skipped; a failing scan is reported and the others go on; files
//! appear only when complete. A scan `X.nii(.gz)` with a tissue label map `X_labels.nii.gz`
//! beside it (`adfit synth --labels`) gets that map carried through the same geometry (same
//! reorientation and crop box, nearest-neighbour resize) to `labels/` (see `labels.rs`).

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::cache::{cached_shape, write_cached};
use super::labels;
use super::nifti_io::read_nifti;
use super::normalize::{normalize, percentile, NormalizeConfig};
use super::orient::to_canonical;
use super::report::ReportTemplate;
use super::resample::{crop, foreground_box, resize, resize_nearest, CropBox};
use super::scanlist::{match_scans, read_scan_list, MatchedScan};
use super::table::{read_table, Table, TableOptions};
use super::volume::Volume;
use crate::error::{Error, Result};

/// The geometry and intensity steps. Saved next to the cache: a rerun with other settings is
/// refused rather than mixing volumes made two ways.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PreprocessConfig {
    /// Output grid (D, H, W); 128³ is the paper's input.
    pub shape: [usize; 3],
    /// Reorient to RAS+ first, so every cached volume has the same voxel axes.
    pub canonical: bool,
    /// Crop to voxels above `crop_fraction` × the 99th intensity percentile before resizing, so the
    /// head, not the empty field of view, fills the grid. `None` keeps the whole field of view.
    pub crop_fraction: Option<f32>,
    pub normalize: NormalizeConfig,
}

impl Default for PreprocessConfig {
    fn default() -> Self {
        PreprocessConfig {
            shape: [128, 128, 128],
            canonical: true,
            crop_fraction: Some(0.1),
            normalize: NormalizeConfig::default(),
        }
    }
}

/// Run the per-scan steps on a loaded volume.
pub fn process_volume(vol: Volume, cfg: &PreprocessConfig, what: &str) -> Result<Volume> {
    Ok(process_with_geometry(vol, cfg, what)?.0)
}

/// The geometry steps [`process_volume`] took on one scan, so that they can be replayed on another
/// volume of the scan's voxel grid (its label map) and leave the two aligned voxel for voxel.
#[derive(Debug, Clone, PartialEq)]
pub struct Geometry {
    /// Reoriented to RAS+.
    pub canonical: bool,
    /// The foreground box the image's crop chose, in (reoriented) voxels; `None` when not cropped.
    pub crop: Option<CropBox>,
    /// The grid it was resized to.
    pub shape: [usize; 3],
}

impl Geometry {
    /// Replay the steps on `vol`, which must have the scan's shape and affine before processing,
    /// resizing by nearest neighbour and not normalising: label values stay labels. The crop uses
    /// the image's box, never one found in `vol`, whose own foreground is another.
    pub fn replay_nearest(&self, mut vol: Volume) -> Result<Volume> {
        if self.canonical {
            vol = to_canonical(vol);
        }
        if let Some(b) = &self.crop {
            vol = crop(&vol, b)?;
        }
        if vol.shape != self.shape {
            vol = resize_nearest(&vol, self.shape)?;
        }
        Ok(vol)
    }
}

/// [`process_volume`], also returning the geometry steps it took.
pub fn process_with_geometry(mut vol: Volume, cfg: &PreprocessConfig, what: &str) -> Result<(Volume, Geometry)> {
    // Non-finite voxels would poison the percentile and the resize: apply the policy first.
    super::normalize::check_finite(&mut vol, cfg.normalize.non_finite, what)?;
    if cfg.canonical {
        vol = to_canonical(vol);
    }
    let mut crop_box = None;
    if let Some(frac) = cfg.crop_fraction {
        let threshold = frac * percentile(&vol.data, 99.0);
        let b = foreground_box(&vol, threshold).map_err(|e| Error::volume(what, e.to_string()))?;
        vol = crop(&vol, &b)?;
        crop_box = Some(b);
    }
    if vol.shape != cfg.shape {
        vol = resize(&vol, cfg.shape)?;
    }
    normalize(&mut vol, &cfg.normalize, what)?;
    Ok((vol, Geometry { canonical: cfg.canonical, crop: crop_box, shape: cfg.shape }))
}

/// One row of `index.csv`: what later commands need to know about a cached scan.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IndexRow {
    /// Scan id: the scan list's path without extension.
    pub scan: String,
    pub subject: String,
    pub visit: Option<String>,
    pub date: Option<String>,
    pub label: Option<String>,
    pub mmse: Option<f32>,
    pub age: Option<f32>,
    pub sex: Option<String>,
    #[serde(rename = "Hippocampus")]
    pub hippocampus: Option<f64>,
    #[serde(rename = "Ventricles")]
    pub ventricles: Option<f64>,
    #[serde(rename = "WholeBrain")]
    pub whole_brain: Option<f64>,
    #[serde(rename = "Entorhinal")]
    pub entorhinal: Option<f64>,
    #[serde(rename = "Fusiform")]
    pub fusiform: Option<f64>,
    #[serde(rename = "MidTemp")]
    pub mid_temp: Option<f64>,
    #[serde(rename = "ICV")]
    pub icv: Option<f64>,
    /// The synthetic report (training text); empty when the visit has no diagnosis.
    pub report: String,
    /// Cache file, relative to the index's folder.
    pub cache: String,
    /// The source NIfTI as given in the scan list.
    pub source: String,
    /// Line of the table row the scan was matched to.
    pub table_line: u64,
}

impl IndexRow {
    /// A row with only the identifiers and the cache path set (for tests, benches and tools
    /// that build an index by hand).
    pub fn bare(scan: &str, subject: &str, cache: &str) -> Self {
        IndexRow {
            scan: scan.into(),
            subject: subject.into(),
            visit: None,
            date: None,
            label: None,
            mmse: None,
            age: None,
            sex: None,
            hippocampus: None,
            ventricles: None,
            whole_brain: None,
            entorhinal: None,
            fusiform: None,
            mid_temp: None,
            icv: None,
            report: String::new(),
            cache: cache.into(),
            source: String::new(),
            table_line: 0,
        }
    }

    pub fn biomarkers(&self) -> super::table::Biomarkers {
        super::table::Biomarkers {
            hippocampus: self.hippocampus,
            ventricles: self.ventricles,
            whole_brain: self.whole_brain,
            entorhinal: self.entorhinal,
            fusiform: self.fusiform,
            mid_temp: self.mid_temp,
            icv: self.icv,
        }
    }
}

/// Read `index.csv`; errors name the line.
pub fn read_index(path: &Path) -> Result<Vec<IndexRow>> {
    let input = super::csv_input::CsvInput::open(path)?;
    let mut reader = input.reader();
    reader
        .deserialize::<IndexRow>()
        .enumerate()
        .map(|(i, r)| {
            r.map_err(|e| {
                let line = e.position().map(|_| input.error_line(&e)).unwrap_or(i as u64 + 2);
                Error::row(path, line, "-", format!("not a cohort index row: {e}"))
            })
        })
        .collect()
}

fn write_csv<T: Serialize>(path: &Path, rows: &[T]) -> Result<()> {
    crate::util::write_atomic(path, |w| {
        let mut csv = csv::Writer::from_writer(w);
        for r in rows {
            csv.serialize(r).map_err(std::io::Error::other)?;
        }
        csv.flush()
    })
}

/// Inputs of one preprocessing run.
#[derive(Debug, Clone)]
pub struct PreprocessJob {
    pub scan_list: PathBuf,
    pub table: PathBuf,
    pub out: PathBuf,
    pub config: PreprocessConfig,
    pub table_options: TableOptions,
    pub max_days: i32,
    pub report: ReportTemplate,
    pub threads: Option<usize>,
}

/// A scan that could not be used, and why.
#[derive(Debug, Clone, Serialize)]
pub struct Failure {
    pub scan: String,
    pub reason: String,
}

#[derive(Debug, Default)]
pub struct PreprocessSummary {
    pub processed: usize,
    pub reused: usize,
    pub failed: Vec<Failure>,
    pub unmatched: Vec<Failure>,
    pub skipped_rows: usize,
    pub index: PathBuf,
}

/// How many scans without a table visit a run may have and still count as a success: real ADNI
/// downloads hold unscheduled scans that no ADNIMERGE row describes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Allowance {
    /// At most this many scans.
    Count(usize),
    /// At most this percentage of the scan list.
    Percent(f64),
}

impl Allowance {
    /// `3` (scans) or `5%` (of the scan list).
    pub fn parse(s: &str) -> std::result::Result<Self, String> {
        let t = s.trim();
        let bad = || format!("{s:?} is neither a count (e.g. 3) nor a percentage (e.g. 5%)");
        match t.strip_suffix('%') {
            Some(p) => {
                let p: f64 = p.trim().parse().map_err(|_| bad())?;
                if !(0.0..=100.0).contains(&p) {
                    return Err(format!("{s:?}: a percentage lies in 0..100"));
                }
                Ok(Allowance::Percent(p))
            }
            None => t.parse().map(Allowance::Count).map_err(|_| bad()),
        }
    }

    /// Whether `unmatched` of `total` scans is within the allowance.
    pub fn allows(self, unmatched: usize, total: usize) -> bool {
        match self {
            Allowance::Count(n) => unmatched <= n,
            Allowance::Percent(p) => unmatched as f64 <= p / 100.0 * total as f64 + 1e-9,
        }
    }
}

impl std::fmt::Display for Allowance {
    /// As `--allow-unmatched` takes it.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Allowance::Count(n) => write!(f, "{n}"),
            Allowance::Percent(p) => write!(f, "{p}%"),
        }
    }
}

impl PreprocessSummary {
    /// Scans in the scan list.
    pub fn total(&self) -> usize {
        self.processed + self.reused + self.failed.len() + self.unmatched.len()
    }
}

/// The scan id of a scan-list path: the path without `.nii`, `.nii.gz`, `.hdr`, `.img`.
pub fn scan_id(rel: &str) -> String {
    let mut s = rel.replace('\\', "/");
    for ext in [".gz", ".nii", ".hdr", ".img"] {
        if s.to_ascii_lowercase().ends_with(ext) {
            s.truncate(s.len() - ext.len());
        }
    }
    s.trim_start_matches("./").to_string()
}

fn cache_name(id: &str) -> String {
    let safe: String =
        id.chars().map(|c| if c.is_ascii_alphanumeric() || "-_.".contains(c) { c } else { '_' }).collect();
    format!("volumes/{safe}.vol")
}

/// Run a preprocessing job. `progress` is told after each scan.
pub fn run(job: &PreprocessJob, progress: &(dyn Fn(&str) + Sync)) -> Result<PreprocessSummary> {
    let table: Table = read_table(&job.table, &job.table_options)?;
    if table.rows.is_empty() && table.skipped.is_empty() {
        return Err(Error::table(&job.table, "has a header but no rows: there are no visits to match scans to"));
    }
    let scans = read_scan_list(&job.scan_list)?;
    if scans.is_empty() {
        return Err(Error::table(&job.scan_list, "has a header but no scans: there is nothing to preprocess"));
    }
    let mut seen = HashSet::new();
    for s in &scans {
        if !seen.insert(cache_name(&scan_id(&s.rel_path))) {
            return Err(Error::row(
                &job.scan_list,
                s.line,
                "path",
                format!("{} is listed twice (or maps to the same cache file as another scan)", s.rel_path),
            ));
        }
    }
    let (matched, errors) = match_scans(&scans, &table, job.max_days);
    let unmatched: Vec<Failure> = errors
        .iter()
        .map(|e| match e {
            Error::Match { scan, reason } => Failure { scan: scan.clone(), reason: reason.clone() },
            other => Failure { scan: String::new(), reason: other.to_string() },
        })
        .collect();

    // Inputs are read and checked: only now is the output folder created, and locked.
    let _lock = crate::lock::OutputLock::acquire(&job.out)?;
    std::fs::create_dir_all(job.out.join("volumes")).map_err(|e| Error::io(&job.out, e))?;
    let cfg_path = job.out.join("preprocess.json");
    if cfg_path.exists() {
        let text = crate::limits::read_text(&cfg_path)?;
        let old: PreprocessConfig =
            serde_json::from_str(&text).map_err(|e| Error::Json { path: cfg_path.clone(), source: e })?;
        if old != job.config {
            return Err(Error::config(
                "--out",
                format!(
                    "{} holds volumes preprocessed with other settings; choose a new --out folder",
                    job.out.display()
                ),
            ));
        }
    } else {
        let text =
            serde_json::to_string_pretty(&job.config).map_err(|e| Error::Json { path: cfg_path.clone(), source: e })?;
        crate::util::write_bytes_atomic(&cfg_path, text.as_bytes())?;
    }

    let reused = AtomicUsize::new(0);
    let work = |m: &MatchedScan| -> std::result::Result<IndexRow, Failure> {
        let id = scan_id(&m.scan.rel_path);
        let cache = cache_name(&id);
        let cache_path = job.out.join(&cache);
        let fail = |e: Error| Failure { scan: m.scan.rel_path.clone(), reason: e.to_string() };
        let _context = crate::panic_context::input(format!("scan {}", m.scan.path.display()));
        // A scan with a label sibling gets its label map carried along: cheap next to the scan.
        let labels_src = Some(labels::sibling_path(&m.scan.path)).filter(|p| p.is_file());
        let labels_out = job.out.join(labels::cache_labels_rel(&cache));
        let cache_done = cached_shape(&cache_path).ok() == Some(job.config.shape);
        if cache_done && (labels_src.is_none() || labels_out.is_file()) {
            reused.fetch_add(1, Ordering::Relaxed);
        } else {
            let vol = read_nifti(&m.scan.path).map_err(fail)?.volume;
            // Checked before any file is written, so a bad label map leaves no half-done scan.
            let label_map =
                labels_src.map(|p| labels::read_sibling(&p, &vol, &m.scan.rel_path)).transpose().map_err(fail)?;
            let (vol, geometry) = process_with_geometry(vol, &job.config, &m.scan.rel_path).map_err(fail)?;
            if let Some(map) = label_map {
                let map = geometry.replay_nearest(map).map_err(fail)?;
                // Its affine is the cache volume's by construction; stated, not relied on.
                let map = Volume { affine: vol.affine, ..map };
                labels::write_label_map(&labels_out, &map).map_err(fail)?;
            }
            if !cache_done {
                write_cached(&cache_path, &vol).map_err(fail)?;
            }
        }
        progress(&m.scan.rel_path);
        let r = &m.row;
        let b = &r.biomarkers;
        Ok(IndexRow {
            scan: id,
            subject: r.subject.clone(),
            visit: r.visit.clone(),
            date: r.date.map(|d| d.to_string()),
            label: r.label.map(|l| l.as_str().to_string()),
            mmse: r.mmse,
            age: r.age,
            sex: r.sex.clone(),
            hippocampus: b.hippocampus,
            ventricles: b.ventricles,
            whole_brain: b.whole_brain,
            entorhinal: b.entorhinal,
            fusiform: b.fusiform,
            mid_temp: b.mid_temp,
            icv: b.icv,
            report: r.label.map(|l| job.report.render(l, b)).unwrap_or_default(),
            cache,
            source: m.scan.rel_path.clone(),
            table_line: r.line,
        })
    };
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(job.threads.unwrap_or(0))
        .build()
        .map_err(|e| Error::config("threads", e.to_string()))?;
    let results: Vec<_> = pool.install(|| matched.par_iter().map(work).collect());
    let mut rows = Vec::new();
    let mut failed = Vec::new();
    for r in results {
        match r {
            Ok(row) => rows.push(row),
            Err(f) => failed.push(f),
        }
    }
    let index = job.out.join("index.csv");
    write_csv(&index, &rows)?;
    let problems: Vec<&Failure> = unmatched.iter().chain(&failed).collect();
    let failures_path = job.out.join("failures.csv");
    if problems.is_empty() {
        let _ = std::fs::remove_file(&failures_path);
    } else {
        write_csv(&failures_path, &problems)?;
    }
    let reused = reused.into_inner();
    Ok(PreprocessSummary {
        processed: rows.len() - reused,
        reused,
        failed,
        unmatched,
        skipped_rows: table.skipped.len(),
        index,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allowances_count_scans_or_percent_of_the_list() {
        assert_eq!(Allowance::parse("3"), Ok(Allowance::Count(3)));
        assert_eq!(Allowance::parse(" 5 %"), Ok(Allowance::Percent(5.0)));
        assert!(Allowance::parse("-1").is_err() && Allowance::parse("120%").is_err() && Allowance::parse("x").is_err());
        assert!(Allowance::Count(2).allows(2, 10) && !Allowance::Count(2).allows(3, 10));
        assert!(Allowance::Percent(10.0).allows(1, 10) && !Allowance::Percent(10.0).allows(2, 10));
        assert!(Allowance::Count(0).allows(0, 10));
    }

    #[test]
    fn scan_ids_drop_extensions() {
        assert_eq!(scan_id("images/a_bl.nii.gz"), "images/a_bl");
        assert_eq!(scan_id("./x.hdr"), "x");
        assert_eq!(scan_id("y.img.gz"), "y");
        assert_eq!(cache_name("images/a b"), "volumes/images_a_b.vol");
    }

    /// A label map replayed through the image's geometry lands on the cache grid, with the
    /// image's crop box (not one of its own) and its structures where the image shows them.
    #[test]
    fn label_maps_follow_the_image_geometry() {
        // An LPS scan: a dim head with a bright block in it. Labels: head 1, block 2, and a stray
        // 5 outside the head, which a crop box found in the labels would keep.
        let mut affine = crate::data::volume::identity();
        (affine[0][0], affine[1][1], affine[2][2]) = (-2.0, -2.0, 2.5);
        (affine[0][3], affine[1][3], affine[2][3]) = (20.0, 18.0, -20.0);
        let head = |i: usize, j: usize, k: usize| (3..17).contains(&i) && (2..15).contains(&j) && (4..14).contains(&k);
        let block = |i: usize, j: usize, k: usize| (5..9).contains(&i) && (6..10).contains(&j) && (6..10).contains(&k);
        let label = |i, j, k| -> f32 {
            if block(i, j, k) {
                2.0
            } else if head(i, j, k) {
                1.0
            } else if (i, j, k) == (0, 0, 0) {
                5.0
            } else {
                0.0
            }
        };
        let image =
            Volume::from_fn([20, 18, 16], affine, |i, j, k| if head(i, j, k) { label(i, j, k) * 100.0 } else { 0.0 });
        let labels = Volume::from_fn([20, 18, 16], affine, label);
        let cfg = PreprocessConfig { shape: [12, 12, 12], ..Default::default() };
        let (vol, geometry) = process_with_geometry(image.clone(), &cfg, "test").unwrap();
        assert_eq!(vol, process_volume(image, &cfg, "test").unwrap());
        // LPS → RAS flips the first two axes: the head's box counts from the other end.
        assert_eq!(geometry.crop, Some(CropBox { lo: [3, 3, 4], hi: [16, 15, 13] }));
        let carried = geometry.replay_nearest(labels.clone()).unwrap();
        assert_eq!((carried.shape, carried.affine), (vol.shape, vol.affine));
        assert!(!carried.data.contains(&5.0), "the stray label was cropped away with the image's box");

        let mean_over = |l: f32| {
            let v: Vec<f32> = carried.data.iter().zip(&vol.data).filter(|(c, _)| **c == l).map(|(_, &v)| v).collect();
            v.iter().sum::<f32>() / v.len() as f32
        };
        assert!(mean_over(2.0) > 0.7 && mean_over(1.0) < 0.2, "{} {}", mean_over(2.0), mean_over(1.0));
        // The block's centre keeps its world position (within one cache voxel).
        let centre = |v: &Volume| {
            let (mut n, mut acc) = (0.0, [0.0; 3]);
            for i in 0..v.shape[0] {
                for j in 0..v.shape[1] {
                    for k in 0..v.shape[2] {
                        if v.get(i, j, k) == 2.0 {
                            n += 1.0;
                            for (r, a) in acc.iter_mut().enumerate() {
                                let w = &v.affine[r];
                                *a += w[0] * i as f64 + w[1] * j as f64 + w[2] * k as f64 + w[3];
                            }
                        }
                    }
                }
            }
            acc.map(|a| a / n)
        };
        let (before, after) = (centre(&labels), centre(&carried));
        let voxel = carried.voxel_size();
        for r in 0..3 {
            assert!((before[r] - after[r]).abs() <= voxel[r], "{before:?} → {after:?}");
        }
    }
}
