//! Scan lists and their matching to clinical table rows.
//!
//! A scan list is a CSV with a `path` column (relative to the list's folder) and either
//! `image_id` (ADNIMERGE `IMAGEUID`, OASIS `MRI ID`) or `subject` + `date` (matched to the same
//! subject's nearest `EXAMDATE`, at most `max_days` apart). Each scan gets the row of its own
//! visit, so each scan carries the diagnosis of that visit.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use super::date::Date;
use super::table::{ClinicalRow, Table};
use crate::error::{Error, Result};

/// The default window for date matching (ADNI visits are months apart).
pub const DEFAULT_MAX_DAYS: i32 = 120;

#[derive(Debug, Clone, PartialEq)]
pub enum ScanKey {
    ImageId(String),
    SubjectDate { subject: String, date: Date },
}

#[derive(Debug, Clone, PartialEq)]
pub struct ScanEntry {
    /// 1-based physical line in the scan list.
    pub line: u64,
    /// As written in the list.
    pub rel_path: String,
    /// Resolved against the list's folder.
    pub path: PathBuf,
    pub key: ScanKey,
}

/// Read a scan list. Errors name the list, line and column.
pub fn read_scan_list(path: &Path) -> Result<Vec<ScanEntry>> {
    let _context = crate::panic_context::input(format!("scan list {}", path.display()));
    let input = super::csv_input::CsvInput::open(path)?;
    let mut reader = input.reader();
    let headers =
        reader.headers().map_err(|e| Error::table(path, format!("cannot read the header line: {e}")))?.clone();
    let find = |name: &str| headers.iter().position(|h| h.trim() == name);
    let path_col = find("path").ok_or_else(|| Error::table(path, "a scan list needs a `path` column"))?;
    let (id_col, subject_col, date_col) = (find("image_id"), find("subject"), find("date"));
    if id_col.is_none() && (subject_col.is_none() || date_col.is_none()) {
        return Err(Error::table(
            path,
            "a scan list needs either an `image_id` column or both `subject` and `date` columns",
        ));
    }
    let base = path.parent().unwrap_or(Path::new("."));
    let mut out = Vec::new();
    for record in reader.records() {
        let record = record.map_err(|e| Error::row(path, input.error_line(&e), "-", format!("malformed CSV: {e}")))?;
        let line = input.line(record.position());
        let cell = |c: Option<usize>| c.and_then(|c| record.get(c)).map(str::trim).filter(|s| !s.is_empty());
        let rel = cell(Some(path_col)).ok_or_else(|| Error::row(path, line, "path", "is blank"))?;
        let key = if let Some(id) = cell(id_col) {
            ScanKey::ImageId(normalize_id(id))
        } else {
            let subject = cell(subject_col)
                .ok_or_else(|| Error::row(path, line, "subject", "is blank and there is no image_id"))?;
            let date_text = cell(date_col).ok_or_else(|| Error::row(path, line, "date", "is blank"))?;
            let date = Date::parse(date_text)
                .ok_or_else(|| Error::row(path, line, "date", format!("{date_text:?} is not a date (YYYY-MM-DD)")))?;
            ScanKey::SubjectDate { subject: subject.to_string(), date }
        };
        out.push(ScanEntry { line, rel_path: rel.to_string(), path: base.join(rel), key });
    }
    Ok(out)
}

/// ADNI image ids appear as `I12345` in file names and as `12345` in IMAGEUID: compare digits.
fn normalize_id(id: &str) -> String {
    let id = id.trim();
    match id.strip_prefix(['I', 'i']) {
        Some(rest) if !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_digit()) => rest.to_string(),
        _ => id.to_string(),
    }
}

/// A scan with the table row of its visit.
#[derive(Debug, Clone)]
pub struct MatchedScan {
    pub scan: ScanEntry,
    pub row: ClinicalRow,
    /// Days between scan date and exam date (0 for id matches).
    pub days_apart: i32,
}

/// Match each scan to one table row. Scans that match none, or two rows equally well, come back
/// as errors naming the scan's path; the others are matched.
pub fn match_scans(scans: &[ScanEntry], table: &Table, max_days: i32) -> (Vec<MatchedScan>, Vec<Error>) {
    let mut by_id: HashMap<String, Vec<&ClinicalRow>> = HashMap::new();
    let mut by_subject: HashMap<&str, Vec<&ClinicalRow>> = HashMap::new();
    for row in &table.rows {
        if let Some(id) = &row.image_id {
            by_id.entry(normalize_id(id)).or_default().push(row);
        }
        by_subject.entry(row.subject.as_str()).or_default().push(row);
    }
    let mut matched = Vec::new();
    let mut errors = Vec::new();
    for scan in scans {
        let fail = |reason: String| Error::Match { scan: scan.rel_path.clone(), reason };
        let result = match &scan.key {
            ScanKey::ImageId(id) => match by_id.get(id).map(Vec::as_slice) {
                Some([row]) => Ok(((*row).clone(), 0)),
                Some(rows) => {
                    Err(fail(format!("image id {id} is on {} table rows (lines {})", rows.len(), lines(rows))))
                }
                None => Err(fail(format!("image id {id} is not in {}", table.path.display()))),
            },
            ScanKey::SubjectDate { subject, date } => {
                nearest_visit(by_subject.get(subject.as_str()).map(Vec::as_slice).unwrap_or(&[]), *date, max_days)
                    .map_err(|reason| fail(format!("subject {subject} on {date}: {reason}")))
            }
        };
        match result {
            Ok((row, days_apart)) => matched.push(MatchedScan { scan: scan.clone(), row, days_apart }),
            Err(e) => errors.push(e),
        }
    }
    (matched, errors)
}

fn lines(rows: &[&ClinicalRow]) -> String {
    rows.iter().map(|r| r.line.to_string()).collect::<Vec<_>>().join(", ")
}

fn nearest_visit(rows: &[&ClinicalRow], date: Date, max_days: i32) -> std::result::Result<(ClinicalRow, i32), String> {
    if rows.is_empty() {
        return Err("subject is not in the table".into());
    }
    let mut dated: Vec<(i32, &ClinicalRow)> =
        rows.iter().filter_map(|r| r.date.map(|d| ((d.0 - date.0).abs(), *r))).collect();
    if dated.is_empty() {
        return Err("none of the subject's rows has an EXAMDATE".into());
    }
    dated.sort_by_key(|(d, r)| (*d, r.line));
    let (best, row) = dated[0];
    if best > max_days {
        return Err(format!("the nearest visit (line {}) is {best} days away, more than {max_days}", row.line));
    }
    if let Some((_, other)) = dated.get(1).filter(|(d, _)| *d == best) {
        return Err(format!("two visits are {best} days away (lines {} and {}): ambiguous", row.line, other.line));
    }
    Ok((row.clone(), best))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::table::{read_table, TableOptions};

    fn setup(table: &str, list: &str) -> (tempfile::TempDir, Table, Vec<ScanEntry>) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("t.csv"), table).unwrap();
        std::fs::write(dir.path().join("scans.csv"), list).unwrap();
        let t = read_table(&dir.path().join("t.csv"), &TableOptions::default()).unwrap();
        let s = read_scan_list(&dir.path().join("scans.csv")).unwrap();
        (dir, t, s)
    }

    const TABLE: &str = "PTID,VISCODE,EXAMDATE,DX,IMAGEUID\n\
        a,bl,2010-01-01,CN,100\n\
        a,m06,2010-07-01,MCI,101\n\
        b,bl,2010-01-01,AD,200\n\
        b,m03,2010-03-02,AD,\n";

    #[test]
    fn matches_by_date_and_by_id() {
        let (dir, t, s) = setup(
            TABLE,
            "path,subject,date\nimg/a1.nii.gz,a,2010-01-20\nimg/a2.nii.gz,a,2010-06-01\nimg/x.nii,a,2011-06-01\nimg/b.nii,b,2010-01-31\nimg/c.nii,c,2010-01-01\n",
        );
        assert_eq!(s[0].path, dir.path().join("img/a1.nii.gz"));
        let (m, e) = match_scans(&s, &t, DEFAULT_MAX_DAYS);
        assert_eq!(m.len(), 2);
        assert_eq!(m[0].row.visit.as_deref(), Some("bl"));
        assert_eq!(m[1].row.visit.as_deref(), Some("m06"));
        assert_eq!(m[1].days_apart, 30);
        assert_eq!(e.len(), 3);
        let msgs: Vec<String> = e.iter().map(|e| e.to_string()).collect();
        assert!(msgs[0].starts_with("img/x.nii:") && msgs[0].contains("more than 120"), "{msgs:?}");
        assert!(msgs[1].starts_with("img/b.nii:") && msgs[1].contains("ambiguous"), "{msgs:?}");
        assert!(msgs[2].starts_with("img/c.nii:") && msgs[2].contains("not in the table"), "{msgs:?}");

        let (_d, t, s) = setup(TABLE, "path,image_id\nx.nii,I101\ny.nii,999\n");
        let (m, e) = match_scans(&s, &t, DEFAULT_MAX_DAYS);
        assert_eq!(m[0].row.label, Some(crate::data::label::Label::MCI));
        assert!(e[0].to_string().starts_with("y.nii:"));
    }

    #[test]
    fn bad_scan_lists() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s.csv");
        for (text, want) in [
            ("file,subject\n", "`path` column"),
            ("path,subject\nx,a\n", "`image_id` column or both"),
            ("path,subject,date\nx,a,yesterday\n", "s.csv:2: column `date`"),
            ("path,image_id\n,5\n", "s.csv:2: column `path`"),
        ] {
            std::fs::write(&p, text).unwrap();
            let msg = read_scan_list(&p).unwrap_err().to_string();
            assert!(msg.contains(want), "{text:?} → {msg}");
        }
    }
}
