//! Subject-level, diagnosis-stratified k-fold splits, written to a CSV that later runs reuse.
//!
//! Every visit of a subject lands in one part. Each subject is stratified by its baseline (first
//! labelled) diagnosis. The k test sets partition the subjects; each fold's validation subjects
//! are drawn from that fold's non-test remainder. Reading a split file runs the leakage check.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::label::Label;
use crate::error::{Error, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Part {
    Train,
    Val,
    Test,
}

impl Part {
    pub fn as_str(self) -> &'static str {
        match self {
            Part::Train => "train",
            Part::Val => "val",
            Part::Test => "test",
        }
    }
}

/// A subject and the diagnosis it is stratified by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubjectStratum {
    pub subject: String,
    pub label: Label,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SplitConfig {
    pub folds: usize,
    /// Share of each stratum's non-test subjects that go to validation.
    pub val_fraction: f64,
    pub seed: u64,
}

impl Default for SplitConfig {
    fn default() -> Self {
        SplitConfig { folds: 5, val_fraction: 0.15, seed: 0 }
    }
}

/// One row of the split file: in fold `fold`, `subject` belongs to `part`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Assignment {
    pub fold: usize,
    pub subject: String,
    pub part: Part,
    /// The diagnosis the subject was stratified by.
    pub stratum: Label,
}

/// The assignments of every fold.
#[derive(Debug, Clone, PartialEq)]
pub struct Split {
    pub rows: Vec<Assignment>,
}

impl Split {
    pub fn folds(&self) -> usize {
        self.rows.iter().map(|r| r.fold + 1).max().unwrap_or(0)
    }

    /// `subject → part` for one fold.
    pub fn fold(&self, fold: usize) -> HashMap<&str, Part> {
        self.rows.iter().filter(|r| r.fold == fold).map(|r| (r.subject.as_str(), r.part)).collect()
    }

    pub fn subjects(&self, fold: usize, part: Part) -> Vec<&str> {
        self.rows.iter().filter(|r| r.fold == fold && r.part == part).map(|r| r.subject.as_str()).collect()
    }
}

/// Baseline stratum of each subject from `(subject, label)` pairs in visit order: the first
/// labelled visit wins.
pub fn strata<'a>(visits: impl IntoIterator<Item = (&'a str, Option<Label>)>) -> Vec<SubjectStratum> {
    let mut seen: BTreeMap<&str, Option<Label>> = BTreeMap::new();
    for (subject, label) in visits {
        let slot = seen.entry(subject).or_insert(None);
        if slot.is_none() {
            *slot = label;
        }
    }
    seen.into_iter().filter_map(|(s, l)| l.map(|label| SubjectStratum { subject: s.to_string(), label })).collect()
}

/// Make a k-fold split. Within each diagnosis, subjects are shuffled and dealt to folds in turn,
/// continuing where the previous diagnosis stopped, so fold sizes differ by at most one overall
/// and by at most one per diagnosis.
pub fn make_split(subjects: &[SubjectStratum], cfg: &SplitConfig) -> Result<Split> {
    if cfg.folds < 2 {
        return Err(Error::config("folds", format!("{} (need at least 2)", cfg.folds)));
    }
    if !(0.0..1.0).contains(&cfg.val_fraction) {
        return Err(Error::config("val-fraction", format!("{} (need 0 ≤ f < 1)", cfg.val_fraction)));
    }
    if subjects.len() < cfg.folds {
        return Err(Error::config(
            "folds",
            format!("{} folds but only {} labelled subjects", cfg.folds, subjects.len()),
        ));
    }
    let mut by_label: BTreeMap<Label, Vec<&str>> = BTreeMap::new();
    for s in subjects {
        by_label.entry(s.label).or_default().push(&s.subject);
    }
    let stratum: HashMap<&str, Label> = subjects.iter().map(|s| (s.subject.as_str(), s.label)).collect();
    let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
    let mut test_fold: HashMap<&str, usize> = HashMap::new();
    let mut next = 0usize;
    for list in by_label.values_mut() {
        list.sort_unstable();
        list.shuffle(&mut rng);
        for s in list.iter() {
            test_fold.insert(s, next % cfg.folds);
            next += 1;
        }
    }
    let mut rows = Vec::new();
    for fold in 0..cfg.folds {
        let mut fold_rng =
            ChaCha8Rng::seed_from_u64(cfg.seed ^ (0x9E37_79B9_7F4A_7C15u64.wrapping_mul(fold as u64 + 1)));
        for list in by_label.values() {
            let mut rest: Vec<&str> = list.iter().copied().filter(|s| test_fold[s] != fold).collect();
            rest.sort_unstable();
            rest.shuffle(&mut fold_rng);
            let n_val = (rest.len() as f64 * cfg.val_fraction).round() as usize;
            for (i, s) in rest.iter().enumerate() {
                let part = if i < n_val { Part::Val } else { Part::Train };
                rows.push(Assignment { fold, subject: s.to_string(), part, stratum: stratum[s] });
            }
            for s in list.iter().filter(|s| test_fold[*s] == fold) {
                rows.push(Assignment { fold, subject: s.to_string(), part: Part::Test, stratum: stratum[s] });
            }
        }
    }
    rows.sort_by(|a, b| (a.fold, a.part, &a.subject).cmp(&(b.fold, b.part, &b.subject)));
    Ok(Split { rows })
}

/// Write the split as CSV (`fold,subject,part,stratum`), atomically.
pub fn write_split(path: &Path, split: &Split) -> Result<()> {
    crate::util::write_atomic(path, |w| {
        let mut csv = csv::Writer::from_writer(w);
        for r in &split.rows {
            csv.serialize(r).map_err(std::io::Error::other)?;
        }
        csv.flush()
    })
}

/// Read a split file and refuse it if any subject leaks between parts of a fold, or sits in the
/// test set of two folds.
pub fn read_split(path: &Path) -> Result<Split> {
    let input = super::csv_input::CsvInput::open(path)?;
    let mut reader = input.reader();
    let mut rows = Vec::new();
    for (i, rec) in reader.deserialize::<Assignment>().enumerate() {
        let row = rec.map_err(|e| {
            let line = e.position().map(|_| input.error_line(&e)).unwrap_or(i as u64 + 2);
            Error::row(path, line, "-", format!("not a split row (fold,subject,part,stratum): {e}"))
        })?;
        rows.push(row);
    }
    if rows.is_empty() {
        return Err(Error::Split { path: path.into(), reason: "the split file has no rows".into() });
    }
    check_leakage(path, &rows)?;
    Ok(Split { rows })
}

/// The part of every subject in `fold` of the split file at `path` (read and leak-checked).
pub fn read_fold(path: &Path, fold: usize) -> Result<HashMap<String, Part>> {
    let split = read_split(path)?;
    if fold >= split.folds() {
        return Err(Error::Split {
            path: path.into(),
            reason: format!("fold {fold} asked for, but the split has {} folds", split.folds()),
        });
    }
    Ok(split.fold(fold).into_iter().map(|(s, p)| (s.to_string(), p)).collect())
}

/// The leakage check: one part per subject per fold; one test fold per subject.
pub fn check_leakage(path: &Path, rows: &[Assignment]) -> Result<()> {
    let mut parts: BTreeMap<(usize, &str), Vec<Part>> = BTreeMap::new();
    let mut tests: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for r in rows {
        parts.entry((r.fold, &r.subject)).or_default().push(r.part);
        if r.part == Part::Test {
            tests.entry(&r.subject).or_default().push(r.fold);
        }
    }
    let mut problems: Vec<String> = parts
        .iter()
        .filter(|(_, p)| p.len() > 1)
        .map(|((fold, s), p)| {
            let names: Vec<&str> = p.iter().map(|p| p.as_str()).collect();
            format!("subject {s} is in {} of fold {fold}", names.join(" and "))
        })
        .collect();
    problems.extend(
        tests
            .iter()
            .filter(|(_, f)| f.len() > 1)
            .map(|(s, f)| format!("subject {s} is in the test set of folds {f:?}")),
    );
    if problems.is_empty() {
        return Ok(());
    }
    let n = problems.len();
    problems.truncate(10);
    Err(Error::Split {
        path: path.into(),
        reason: format!(
            "refusing a leaking split ({n} problem{}): {}{}",
            if n == 1 { "" } else { "s" },
            problems.join("; "),
            if n > 10 { "; ..." } else { "" }
        ),
    })
}

/// Training subjects kept to reach at most `target` scans, by whole subjects. Subjects are
/// shuffled within each diagnosis and interleaved in proportion, so the subsample keeps the class
/// mix; a subject that would overshoot is passed over for a smaller one.
pub fn subsample_subjects(subjects: &[(SubjectStratum, usize)], target: usize, seed: u64) -> Vec<String> {
    let mut by_label: BTreeMap<Label, Vec<(&str, usize)>> = BTreeMap::new();
    for (s, n) in subjects {
        by_label.entry(s.label).or_default().push((&s.subject, *n));
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut ranked: Vec<(f64, &str, usize)> = Vec::new();
    for list in by_label.values_mut() {
        list.sort_unstable();
        list.shuffle(&mut rng);
        let len = list.len() as f64;
        for (i, (s, n)) in list.iter().enumerate() {
            ranked.push(((i as f64 + 0.5) / len, s, *n));
        }
    }
    ranked.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(b.1)));
    let mut total = 0;
    let mut keep = Vec::new();
    for (_, s, n) in ranked {
        if total + n <= target {
            total += n;
            keep.push(s.to_string());
        }
    }
    keep.sort();
    keep
}

#[cfg(test)]
mod tests;
