//! `adfit inspect`: a volume's header facts and statistics, or a table's parsed rows.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use serde::Serialize;

use crate::data::nifti_io::{read_nifti, Stats};
use crate::data::orient::{axcodes, to_canonical};
use crate::data::table::{read_table, ConvertedPolicy, TableOptions};

#[derive(Debug, Args)]
pub struct InspectArgs {
    /// A NIfTI volume (.nii, .nii.gz, .hdr/.img) or a clinical table (.csv: ADNIMERGE or
    /// OASIS-2 oasis_longitudinal.csv, detected from its header).
    pub path: PathBuf,
    /// Print JSON (stable keys: shape, datatype, voxel_size, affine, axcodes, scl_slope,
    /// scl_inter, stats; or format and rows for a table).
    #[arg(long)]
    pub json: bool,
    /// Describe the volume after reorientation to RAS+ (as nibabel's as_closest_canonical).
    #[arg(long)]
    pub canonical: bool,
    /// For tables: skip rows with a bad cell and list them, instead of failing on the first.
    #[arg(long)]
    pub skip_bad_rows: bool,
    /// For OASIS-2 tables: what the `Converted` group becomes.
    #[arg(long, value_enum, default_value_t = ConvertedPolicy::Exclude)]
    pub converted: ConvertedPolicy,
}

#[derive(Serialize)]
struct VolumeInfo {
    path: String,
    shape: [usize; 3],
    datatype: &'static str,
    voxel_size: [f64; 3],
    affine: [[f64; 4]; 4],
    affine_source: crate::data::nifti_io::AffineSource,
    axcodes: [&'static str; 3],
    scl_slope: Option<f64>,
    scl_inter: Option<f64>,
    canonical: bool,
    stats: Stats,
}

#[derive(Serialize)]
struct TableRowInfo<'a> {
    line: u64,
    subject: &'a str,
    visit: Option<&'a str>,
    label: Option<&'static str>,
    mmse: Option<f32>,
}

#[derive(Serialize)]
struct TableInfo<'a> {
    path: String,
    format: &'static str,
    rows: Vec<TableRowInfo<'a>>,
    skipped: Vec<String>,
}

pub fn run(a: InspectArgs) -> anyhow::Result<()> {
    let is_table = a.path.extension().is_some_and(|e| e.eq_ignore_ascii_case("csv"));
    if is_table {
        return inspect_table(&a);
    }
    let img = read_nifti(&a.path)?;
    let vol = if a.canonical { to_canonical(img.volume) } else { img.volume };
    let info = VolumeInfo {
        path: a.path.display().to_string(),
        shape: vol.shape,
        datatype: img.info.datatype.name(),
        voxel_size: vol.voxel_size(),
        affine: vol.affine,
        affine_source: img.info.affine_source,
        axcodes: axcodes(&vol.affine),
        scl_slope: img.info.scaling.map(|s| s.0),
        scl_inter: img.info.scaling.map(|s| s.1),
        canonical: a.canonical,
        stats: img.stats,
    };
    if a.json {
        println!("{}", serde_json::to_string_pretty(&info)?);
        return Ok(());
    }
    println!("{}", info.path);
    println!("  shape       {:?}  ({})", info.shape, info.datatype);
    println!(
        "  orientation {}{}{}{}",
        info.axcodes[0],
        info.axcodes[1],
        info.axcodes[2],
        if a.canonical { " (reoriented)" } else { "" }
    );
    let v = info.voxel_size;
    println!("  voxel size  {:.4} x {:.4} x {:.4} mm", v[0], v[1], v[2]);
    match info.scl_slope.zip(info.scl_inter) {
        Some((s, i)) => println!("  scaling     value * {s} + {i}"),
        None => println!("  scaling     none"),
    }
    println!("  affine ({:?})", info.affine_source);
    for row in &info.affine {
        println!("    [{:>10.4} {:>10.4} {:>10.4} {:>10.4}]", row[0], row[1], row[2], row[3]);
    }
    let s = info.stats;
    println!("  intensity   min {:.6}  max {:.6}  mean {:.6}  std {:.6}", s.min, s.max, s.mean, s.std);
    Ok(())
}

fn inspect_table(a: &InspectArgs) -> anyhow::Result<()> {
    let opts = TableOptions { skip_bad_rows: a.skip_bad_rows, converted: a.converted };
    let table = read_table(&a.path, &opts).with_context(|| format!("reading table {}", a.path.display()))?;
    let rows: Vec<TableRowInfo> = table
        .rows
        .iter()
        .map(|r| TableRowInfo {
            line: r.line,
            subject: &r.subject,
            visit: r.visit.as_deref(),
            label: r.label.map(|l| l.as_str()),
            mmse: r.mmse,
        })
        .collect();
    let info = TableInfo {
        path: a.path.display().to_string(),
        format: table.format.as_str(),
        rows,
        skipped: table.skipped.iter().map(|e| e.to_string()).collect(),
    };
    if a.json {
        println!("{}", serde_json::to_string_pretty(&info)?);
    } else {
        let count = |l| table.rows.iter().filter(|r| r.label == Some(l)).count();
        use crate::data::label::Label;
        let subjects: std::collections::HashSet<&str> = table.rows.iter().map(|r| r.subject.as_str()).collect();
        println!("{}: {} table, {} rows, {} subjects", info.path, info.format, info.rows.len(), subjects.len());
        println!(
            "  NC {}  MCI {}  AD {}  no diagnosis {}  MMSE missing {}",
            count(Label::NC),
            count(Label::MCI),
            count(Label::AD),
            table.rows.iter().filter(|r| r.label.is_none()).count(),
            table.rows.iter().filter(|r| r.mmse.is_none()).count()
        );
    }
    for s in &info.skipped {
        eprintln!("skipped: {s}");
    }
    Ok(())
}
