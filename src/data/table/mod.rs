//! Clinical tables as distributed: ADNIMERGE (every DX code version) and OASIS-2's
//! `oasis_longitudinal.csv`. Columns are found by name in any order; each data row becomes a
//! [`ClinicalRow`] that remembers its physical line, so every error can point at it.

mod adnimerge;
mod oasis;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::date::Date;
use super::label::Label;
use crate::error::{Error, Result};

pub use oasis::ConvertedPolicy;

/// Which table a CSV is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TableFormat {
    Adnimerge,
    Oasis2,
}

impl TableFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            TableFormat::Adnimerge => "adnimerge",
            TableFormat::Oasis2 => "oasis2",
        }
    }
}

/// FreeSurfer volumes (mm³) that the synthetic report describes, plus intracranial volume.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Biomarkers {
    pub hippocampus: Option<f64>,
    pub ventricles: Option<f64>,
    pub whole_brain: Option<f64>,
    pub entorhinal: Option<f64>,
    pub fusiform: Option<f64>,
    pub mid_temp: Option<f64>,
    pub icv: Option<f64>,
}

/// One of the report's biomarkers, named as ADNIMERGE names its column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, clap::ValueEnum)]
pub enum Biomarker {
    Hippocampus,
    Ventricles,
    WholeBrain,
    Entorhinal,
    Fusiform,
    MidTemp,
    Icv,
}

impl Biomarker {
    /// The six volumes of the paper's report, in its order.
    pub const REPORT: [Biomarker; 6] = [
        Biomarker::Hippocampus,
        Biomarker::Ventricles,
        Biomarker::WholeBrain,
        Biomarker::Entorhinal,
        Biomarker::Fusiform,
        Biomarker::MidTemp,
    ];

    pub fn column(self) -> &'static str {
        match self {
            Biomarker::Hippocampus => "Hippocampus",
            Biomarker::Ventricles => "Ventricles",
            Biomarker::WholeBrain => "WholeBrain",
            Biomarker::Entorhinal => "Entorhinal",
            Biomarker::Fusiform => "Fusiform",
            Biomarker::MidTemp => "MidTemp",
            Biomarker::Icv => "ICV",
        }
    }
}

impl Biomarkers {
    pub fn get(&self, b: Biomarker) -> Option<f64> {
        match b {
            Biomarker::Hippocampus => self.hippocampus,
            Biomarker::Ventricles => self.ventricles,
            Biomarker::WholeBrain => self.whole_brain,
            Biomarker::Entorhinal => self.entorhinal,
            Biomarker::Fusiform => self.fusiform,
            Biomarker::MidTemp => self.mid_temp,
            Biomarker::Icv => self.icv,
        }
    }

    pub fn set(&mut self, b: Biomarker, v: Option<f64>) {
        let slot = match b {
            Biomarker::Hippocampus => &mut self.hippocampus,
            Biomarker::Ventricles => &mut self.ventricles,
            Biomarker::WholeBrain => &mut self.whole_brain,
            Biomarker::Entorhinal => &mut self.entorhinal,
            Biomarker::Fusiform => &mut self.fusiform,
            Biomarker::MidTemp => &mut self.mid_temp,
            Biomarker::Icv => &mut self.icv,
        };
        *slot = v;
    }
}

/// One visit of one subject, with what adfit uses from the table.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ClinicalRow {
    /// 1-based physical line in the file (the header is line 1).
    pub line: u64,
    /// ADNI `PTID` or OASIS `Subject ID`.
    pub subject: String,
    /// ADNI `VISCODE` or OASIS `Visit`.
    pub visit: Option<String>,
    /// ADNI `EXAMDATE`; OASIS has no calendar dates.
    pub date: Option<Date>,
    /// ADNI `IMAGEUID` or OASIS `MRI ID`.
    pub image_id: Option<String>,
    /// Diagnosis at this visit; `None` when the row has none (blank, or excluded by policy).
    pub label: Option<Label>,
    /// MMSE in 0..=30, `None` when blank.
    pub mmse: Option<f32>,
    /// Age at this visit, in years.
    pub age: Option<f32>,
    /// `M` or `F`.
    pub sex: Option<String>,
    pub biomarkers: Biomarkers,
}

/// Reading options.
#[derive(Debug, Clone, Copy, Default)]
pub struct TableOptions {
    /// Skip rows with a bad cell instead of failing; each skip is reported.
    pub skip_bad_rows: bool,
    /// What OASIS `Converted` subjects become.
    pub converted: ConvertedPolicy,
}

/// A parsed table and the rows that were skipped (only with `skip_bad_rows`).
#[derive(Debug)]
pub struct Table {
    pub path: PathBuf,
    pub format: TableFormat,
    pub rows: Vec<ClinicalRow>,
    pub skipped: Vec<Error>,
}

/// Read a clinical table, detecting its format from the header.
pub fn read_table(path: &Path, opts: &TableOptions) -> Result<Table> {
    let _context = crate::panic_context::input(format!("table {}", path.display()));
    let input = crate::data::csv_input::CsvInput::open(path)?;
    let mut reader = input.reader();
    let headers =
        reader.headers().map_err(|e| Error::table(path, format!("cannot read the header line: {e}")))?.clone();
    let cols = Columns::new(path, &headers)?;
    let format = if cols.has("PTID") && cols.has("VISCODE") {
        TableFormat::Adnimerge
    } else if cols.has("Subject ID") && cols.has("MRI ID") {
        TableFormat::Oasis2
    } else {
        return Err(Error::table(
            path,
            "unknown table: expected ADNIMERGE columns (PTID, VISCODE, DX, ...) or OASIS-2 columns (Subject ID, MRI ID, Group, ...)",
        ));
    };
    let parse_row: Box<dyn Fn(&Cells) -> Result<ClinicalRow>> = match format {
        TableFormat::Adnimerge => Box::new(adnimerge::parser(&cols)?),
        TableFormat::Oasis2 => Box::new(oasis::parser(&cols, opts.converted)?),
    };

    let mut rows = Vec::new();
    let mut skipped = Vec::new();
    let mut seen: HashMap<(String, String), u64> = HashMap::new();
    let mut record = csv::StringRecord::new();
    loop {
        let more = reader
            .read_record(&mut record)
            .map_err(|e| Error::row(path, input.error_line(&e), "-", format!("malformed CSV: {e}")));
        let more = match more {
            Ok(m) => m,
            Err(e) if opts.skip_bad_rows => {
                skipped.push(e);
                continue;
            }
            Err(e) => return Err(e),
        };
        if !more {
            break;
        }
        let line = input.line(record.position());
        if record.iter().all(|c| c.trim().is_empty()) {
            continue;
        }
        let cells = Cells { path, cols: &cols, record: &record, line };
        let parsed = parse_row(&cells).and_then(|row| {
            let key = (row.subject.clone(), row.visit.clone().unwrap_or_default());
            if let Some(first) = seen.get(&key).filter(|_| row.visit.is_some()) {
                return Err(Error::row(
                    path,
                    line,
                    format.visit_column(),
                    format!("subject {} visit {} already appears on line {first}", key.0, key.1),
                ));
            }
            seen.insert(key, line);
            Ok(row)
        });
        match parsed {
            Ok(row) => rows.push(row),
            Err(e) if opts.skip_bad_rows => skipped.push(e),
            Err(e) => return Err(e),
        }
    }
    Ok(Table { path: path.to_path_buf(), format, rows, skipped })
}

impl TableFormat {
    fn visit_column(self) -> &'static str {
        match self {
            TableFormat::Adnimerge => "VISCODE",
            TableFormat::Oasis2 => "Visit",
        }
    }
}

/// Column positions by name.
pub(crate) struct Columns {
    path: PathBuf,
    index: HashMap<String, usize>,
}

impl Columns {
    fn new(path: &Path, headers: &csv::StringRecord) -> Result<Columns> {
        let mut index = HashMap::new();
        for (i, h) in headers.iter().enumerate() {
            let name = h.trim().trim_start_matches('\u{feff}').to_string();
            if !name.is_empty() && index.insert(name.clone(), i).is_some() {
                return Err(Error::table(path, format!("column `{name}` appears twice in the header")));
            }
        }
        Ok(Columns { path: path.to_path_buf(), index })
    }

    pub(crate) fn has(&self, name: &str) -> bool {
        self.index.contains_key(name)
    }

    pub(crate) fn require(&self, name: &str) -> Result<usize> {
        self.index
            .get(name)
            .copied()
            .ok_or_else(|| Error::table(&self.path, format!("required column `{name}` is missing from the header")))
    }

    pub(crate) fn optional(&self, name: &str) -> Option<usize> {
        self.index.get(name).copied()
    }
}

/// One record with typed accessors whose errors name file, line and column.
pub(crate) struct Cells<'a> {
    path: &'a Path,
    cols: &'a Columns,
    record: &'a csv::StringRecord,
    pub(crate) line: u64,
}

fn is_missing(s: &str) -> bool {
    matches!(s, "" | "NA" | "N/A" | "NaN" | "nan" | "NULL" | "null")
}

impl Cells<'_> {
    pub(crate) fn error(&self, column: &str, reason: impl Into<String>) -> Error {
        Error::row(self.path, self.line, column, reason)
    }

    /// The trimmed cell, `None` when blank or a missing-value marker, or when the column is absent.
    pub(crate) fn text(&self, column: &str) -> Option<String> {
        let i = self.cols.optional(column)?;
        let s = self.record.get(i)?.trim();
        (!is_missing(s)).then(|| s.to_string())
    }

    pub(crate) fn required_text(&self, column: &str) -> Result<String> {
        self.text(column).ok_or_else(|| self.error(column, "is blank but required"))
    }

    pub(crate) fn number(&self, column: &str) -> Result<Option<f64>> {
        match self.text(column) {
            None => Ok(None),
            Some(s) => match s.parse::<f64>() {
                Ok(v) if v.is_finite() => Ok(Some(v)),
                _ => Err(self.error(column, format!("{s:?} is not a number"))),
            },
        }
    }

    /// A non-negative volume in mm³.
    pub(crate) fn volume(&self, column: &str) -> Result<Option<f64>> {
        match self.number(column)? {
            Some(v) if v < 0.0 => Err(self.error(column, format!("volume {v} is negative"))),
            v => Ok(v),
        }
    }

    /// MMSE, which must lie in 0..=30.
    pub(crate) fn mmse(&self, column: &str) -> Result<Option<f32>> {
        match self.number(column)? {
            Some(v) if !(0.0..=30.0).contains(&v) => Err(self.error(column, format!("MMSE {v} is outside 0..30"))),
            v => Ok(v.map(|v| v as f32)),
        }
    }

    pub(crate) fn date(&self, column: &str) -> Result<Option<Date>> {
        match self.text(column) {
            None => Ok(None),
            Some(s) => {
                Date::parse(&s).map(Some).ok_or_else(|| self.error(column, format!("{s:?} is not a date (YYYY-MM-DD)")))
            }
        }
    }
}

fn read_biomarkers(cells: &Cells, columns: &[(Biomarker, &str)]) -> Result<Biomarkers> {
    let mut b = Biomarkers::default();
    for &(marker, column) in columns {
        b.set(marker, cells.volume(column)?);
    }
    Ok(b)
}

#[cfg(test)]
mod tests;
