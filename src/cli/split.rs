//! `adfit split`: make a subject-level k-fold split file, or check one for leakage.

use std::collections::HashMap;
use std::path::PathBuf;

use anyhow::bail;
use clap::Args;

use crate::data::label::Label;
use crate::data::preprocess::read_index;
use crate::data::split::{make_split, read_split, strata, subsample_subjects, write_split, Part, Split, SplitConfig};

#[derive(Debug, Args)]
pub struct SplitArgs {
    /// The cohort index written by `adfit preprocess` (index.csv): subjects, visits, labels.
    #[arg(long, required_unless_present = "check")]
    pub index: Option<PathBuf>,
    /// Where to write the split (CSV: fold,subject,part,stratum).
    #[arg(long, required_unless_present = "check")]
    pub out: Option<PathBuf>,
    /// Number of folds; their test sets partition the subjects.
    #[arg(long, default_value_t = 5)]
    pub folds: usize,
    /// Share of each diagnosis's non-test subjects that goes to validation in each fold.
    #[arg(long, default_value_t = 0.15)]
    pub val_fraction: f64,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Keep at most N training scans per fold, by whole subjects, stratified (the paper's
    /// 500/1000/1500/2000 runs). Subjects left out are in no part of that fold.
    #[arg(long)]
    pub train_size: Option<usize>,
    /// Only check an existing split file for leakage and print its sizes.
    #[arg(long, value_name = "SPLIT", conflicts_with_all = ["out", "train_size"])]
    pub check: Option<PathBuf>,
}

pub fn run(a: SplitArgs) -> anyhow::Result<()> {
    if let Some(path) = &a.check {
        let split = read_split(path)?;
        println!("{}: no subject leaks between parts or test folds", path.display());
        print_summary(&split, None);
        return Ok(());
    }
    let (Some(index), Some(out)) = (&a.index, &a.out) else { bail!("--index and --out are required") };
    let mut rows = read_index(index)?;
    if rows.is_empty() {
        bail!("{}: has a header but no scans: there is nothing to split", index.display());
    }
    rows.sort_by(|x, y| (&x.subject, x.date.is_none(), &x.date).cmp(&(&y.subject, y.date.is_none(), &y.date)));
    let subjects = strata(rows.iter().map(|r| (r.subject.as_str(), r.label.as_deref().and_then(Label::parse))));
    let cfg = SplitConfig { folds: a.folds, val_fraction: a.val_fraction, seed: a.seed };
    let mut split = make_split(&subjects, &cfg)?;
    let mut scans: HashMap<&str, usize> = HashMap::new();
    for r in &rows {
        *scans.entry(r.subject.as_str()).or_default() += 1;
    }
    if let Some(n) = a.train_size {
        let mut keep_rows = Vec::new();
        for fold in 0..a.folds {
            let train: Vec<_> = subjects
                .iter()
                .filter(|s| split.fold(fold).get(s.subject.as_str()) == Some(&Part::Train))
                .map(|s| (s.clone(), scans[s.subject.as_str()]))
                .collect();
            let keep: std::collections::HashSet<String> =
                subsample_subjects(&train, n, a.seed + fold as u64).into_iter().collect();
            keep_rows.extend(
                split
                    .rows
                    .iter()
                    .filter(|r| r.fold == fold && (r.part != Part::Train || keep.contains(&r.subject)))
                    .cloned(),
            );
        }
        split = Split { rows: keep_rows };
    }
    write_split(out, &split)?;
    println!("wrote {} ({} folds, seed {})", out.display(), a.folds, a.seed);
    print_summary(&split, Some(&scans));
    Ok(())
}

fn print_summary(split: &Split, scans: Option<&HashMap<&str, usize>>) {
    println!("{:>5} {:>6} {:>9} {:>5} {:>5} {:>5} {:>7}", "fold", "part", "subjects", "NC", "MCI", "AD", "scans");
    for fold in 0..split.folds() {
        for part in [Part::Train, Part::Val, Part::Test] {
            let rows: Vec<_> = split.rows.iter().filter(|r| r.fold == fold && r.part == part).collect();
            let by = |l: Label| rows.iter().filter(|r| r.stratum == l).count();
            let n_scans = scans
                .map(|s| {
                    rows.iter().map(|r| s.get(r.subject.as_str()).copied().unwrap_or(0)).sum::<usize>().to_string()
                })
                .unwrap_or_else(|| "-".into());
            println!(
                "{fold:>5} {:>6} {:>9} {:>5} {:>5} {:>5} {n_scans:>7}",
                part.as_str(),
                rows.len(),
                by(Label::NC),
                by(Label::MCI),
                by(Label::AD)
            );
        }
    }
}
