//! `adfit preprocess`: scan list + clinical table → a cache of normalised volumes and a cohort
//! index (CSV) that every later command reads.
//!
//! Per scan, in order: read NIfTI → reorient to RAS+ → [bias-field correction, skull stripping
//! and registration to MNI belong here, between reorientation and cropping, once adfit has them;
//! today scans must arrive already skull-stripped and registered, as the paper's were] → crop to
//! the head → trilinear resize → intensity normalisation. Scans run in parallel; a scan whose
//! cache file is complete is skipped; a failing scan is reported and the others go on; files
//! appear only when complete.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::cache::{cached_shape, write_cached};
use super::nifti_io::read_nifti;
use super::normalize::{normalize, percentile, NormalizeConfig};
use super::orient::to_canonical;
use super::report::ReportTemplate;
use super::resample::{crop_foreground, resize};
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
pub fn process_volume(mut vol: Volume, cfg: &PreprocessConfig, what: &str) -> Result<Volume> {
    // Non-finite voxels would poison the percentile and the resize: apply the policy first.
    super::normalize::check_finite(&mut vol, cfg.normalize.non_finite, what)?;
    if cfg.canonical {
        vol = to_canonical(vol);
    }
    if let Some(frac) = cfg.crop_fraction {
        let threshold = frac * percentile(&vol.data, 99.0);
        vol = crop_foreground(&vol, threshold).map_err(|e| Error::volume(what, e.to_string()))?;
    }
    if vol.shape != cfg.shape {
        vol = resize(&vol, cfg.shape)?;
    }
    normalize(&mut vol, &cfg.normalize, what)?;
    Ok(vol)
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
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut reader = csv::Reader::from_reader(std::io::BufReader::new(file));
    reader
        .deserialize::<IndexRow>()
        .enumerate()
        .map(|(i, r)| {
            r.map_err(|e| {
                let line = e.position().map(|p| p.line()).unwrap_or(i as u64 + 2);
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
    let scans = read_scan_list(&job.scan_list)?;
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

    std::fs::create_dir_all(job.out.join("volumes")).map_err(|e| Error::io(&job.out, e))?;
    let cfg_path = job.out.join("preprocess.json");
    if cfg_path.exists() {
        let text = std::fs::read_to_string(&cfg_path).map_err(|e| Error::io(&cfg_path, e))?;
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
        if cached_shape(&cache_path).ok() == Some(job.config.shape) {
            reused.fetch_add(1, Ordering::Relaxed);
        } else {
            let vol = read_nifti(&m.scan.path).map_err(fail)?.volume;
            let vol = process_volume(vol, &job.config, &m.scan.rel_path).map_err(fail)?;
            write_cached(&cache_path, &vol).map_err(fail)?;
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
    fn scan_ids_drop_extensions() {
        assert_eq!(scan_id("images/a_bl.nii.gz"), "images/a_bl");
        assert_eq!(scan_id("./x.hdr"), "x");
        assert_eq!(scan_id("y.img.gz"), "y");
        assert_eq!(cache_name("images/a b"), "volumes/images_a_b.vol");
    }
}
