//! `adfit preprocess`: scans + table → cache of normalised volumes and a cohort index.

use std::path::PathBuf;

use anyhow::bail;
use clap::Args;

use crate::data::normalize::{NonFinite, Normalize, NormalizeConfig};
use crate::data::preprocess::{run as run_job, Allowance, PreprocessConfig, PreprocessJob};
use crate::data::report::ReportTemplate;
use crate::data::scanlist::DEFAULT_MAX_DAYS;
use crate::data::table::{ConvertedPolicy, TableOptions};

#[derive(Debug, Args)]
#[command(after_long_help = "Exit status: 0 all scans usable (or the unmatched within --allow-unmatched); \
1 an error, a failed scan, or too many unmatched scans (index.csv still lists the usable ones, \
failures.csv the rest); 101 an internal error (a bug; the message names the input).")]
pub struct PreprocessArgs {
    /// Scan list: CSV with `path` (relative to the list's folder) and either `image_id`
    /// (ADNIMERGE IMAGEUID / OASIS MRI ID) or `subject` + `date` (nearest EXAMDATE).
    #[arg(long)]
    pub scans: PathBuf,
    /// Clinical table: ADNIMERGE.csv or OASIS-2 oasis_longitudinal.csv.
    #[arg(long)]
    pub table: PathBuf,
    /// Output folder: volumes/, index.csv, preprocess.json (and failures.csv if any scan failed).
    /// A scan X.nii(.gz) with a tissue label map X_labels.nii.gz beside it (`adfit synth
    /// --labels`) also gets that map carried automatically through the scan's own reorientation,
    /// crop box and a nearest-neighbour resize, into labels/<cache file stem>.nii.gz (uint8, the
    /// cache volume's grid and affine). A label map whose shape or affine is not its scan's
    /// fails that scan.
    #[arg(long)]
    pub out: PathBuf,
    /// Output grid D,H,W (or one size for a cube).
    #[arg(long, value_parser = super::parse_shape, default_value = "128,128,128")]
    pub shape: [usize; 3],
    /// Keep the stored voxel order instead of reorienting to RAS+.
    #[arg(long)]
    pub no_canonical: bool,
    /// Crop to voxels above this fraction of the 99th intensity percentile before resizing.
    #[arg(long, default_value_t = 0.1, conflicts_with = "no_crop")]
    pub crop_fraction: f32,
    /// Keep the whole field of view.
    #[arg(long)]
    pub no_crop: bool,
    #[arg(long, value_enum, default_value_t = Normalize::Minmax)]
    pub normalize: Normalize,
    /// Clip to these percentiles before min-max, e.g. 0.5,99.5.
    #[arg(long, value_parser = super::convert::parse_percentiles)]
    pub clip_percentiles: Option<(f32, f32)>,
    /// What to do with NaN/Inf voxels.
    #[arg(long, value_enum, default_value_t = NonFinite::Error)]
    pub non_finite: NonFinite,
    /// Largest gap in days between a scan's date and the matched EXAMDATE.
    #[arg(long, default_value_t = DEFAULT_MAX_DAYS)]
    pub max_days: i32,
    /// Skip table rows with a bad cell (each is reported) instead of failing.
    #[arg(long)]
    pub skip_bad_rows: bool,
    /// For OASIS-2: what the `Converted` group becomes.
    #[arg(long, value_enum, default_value_t = ConvertedPolicy::Exclude)]
    pub converted: ConvertedPolicy,
    /// Report template (JSON; see configs/report.json) for the training text in index.csv.
    #[arg(long)]
    pub report_template: Option<PathBuf>,
    /// Scans without a matching visit in the table that still count as a success: a number
    /// (e.g. 3) or a percentage of the scan list (e.g. 5%). They are reported and listed in
    /// failures.csv either way. Unscheduled scans are common in real ADNI downloads.
    #[arg(long, value_parser = Allowance::parse, default_value = "0")]
    pub allow_unmatched: Allowance,
    /// Worker threads (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
}

pub fn run(a: PreprocessArgs, quiet: bool) -> anyhow::Result<()> {
    let (lower_percentile, upper_percentile) = a.clip_percentiles.unwrap_or((0.0, 100.0));
    let config = PreprocessConfig {
        shape: a.shape,
        canonical: !a.no_canonical,
        crop_fraction: (!a.no_crop).then_some(a.crop_fraction),
        normalize: NormalizeConfig {
            method: a.normalize,
            lower_percentile,
            upper_percentile,
            non_finite: a.non_finite,
        },
    };
    let report = match &a.report_template {
        Some(p) => ReportTemplate::from_json(p)?,
        None => ReportTemplate::default(),
    };
    let job = PreprocessJob {
        scan_list: a.scans.clone(),
        table: a.table.clone(),
        out: a.out.clone(),
        config,
        table_options: TableOptions { skip_bad_rows: a.skip_bad_rows, converted: a.converted },
        max_days: a.max_days,
        report,
        threads: a.threads,
    };
    let n_scans = crate::data::scanlist::read_scan_list(&a.scans)?.len() as u64;
    let bar = super::progress_bar(n_scans, "preprocess", quiet);
    let t = std::time::Instant::now();
    let summary = run_job(&job, &|_scan: &str| bar.inc(1))?;
    bar.finish_and_clear();
    for f in &summary.unmatched {
        tracing::warn!("not matched: {}: {}", f.scan, f.reason);
    }
    for f in &summary.failed {
        tracing::error!("failed: {}: {}", f.scan, f.reason);
    }
    println!(
        "{} scans preprocessed, {} reused from the cache, {} failed, {} not matched to the table ({:.1} s)",
        summary.processed,
        summary.reused,
        summary.failed.len(),
        summary.unmatched.len(),
        t.elapsed().as_secs_f32()
    );
    if summary.skipped_rows > 0 {
        println!("{} bad table rows skipped", summary.skipped_rows);
    }
    println!("cohort index: {}", summary.index.display());
    let failures = a.out.join("failures.csv");
    if !summary.failed.is_empty() {
        bail!(
            "{} scan(s) failed and {} had no visit in the table; reasons in {} (the index lists the others)",
            summary.failed.len(),
            summary.unmatched.len(),
            failures.display()
        );
    }
    if !summary.unmatched.is_empty() {
        if !a.allow_unmatched.allows(summary.unmatched.len(), summary.total()) {
            bail!(
                "{} of {} scan(s) had no visit in the table, more than --allow-unmatched {}; reasons in {} \
                 (the index lists the others)",
                summary.unmatched.len(),
                summary.total(),
                a.allow_unmatched,
                failures.display()
            );
        }
        tracing::warn!(
            "{} scan(s) had no visit in the table and were left out (allowed by --allow-unmatched); see {}",
            summary.unmatched.len(),
            failures.display()
        );
    }
    Ok(())
}
