//! Writing the cohorts out as the real tables are distributed: ADNIMERGE (one row per visit,
//! volumes from FreeSurfer), the OASIS-2 longitudinal sheet (one row per MRI session), and the
//! scan lists that tie image files to rows (by subject and date, or by image ID).

use std::path::Path;

use super::anatomy::Measures;
use super::cohort::{iso_date, Subject};
use crate::data::label::Label;
use crate::error::Result;
use crate::util::write_atomic;

/// ADNIMERGE columns, in the real table's order (a subset: the ones adfit reads, plus a few
/// neighbours so that readers must find columns by name).
pub(crate) const ADNI_COLUMNS: [&str; 30] = [
    "RID",
    "COLPROT",
    "ORIGPROT",
    "PTID",
    "SITE",
    "VISCODE",
    "EXAMDATE",
    "DX_bl",
    "AGE",
    "PTGENDER",
    "PTEDUCAT",
    "PTETHCAT",
    "PTRACCAT",
    "PTMARRY",
    "APOE4",
    "MMSE",
    "FLDSTRENG",
    "FSVERSION",
    "IMAGEUID",
    "Ventricles",
    "Hippocampus",
    "WholeBrain",
    "Entorhinal",
    "Fusiform",
    "MidTemp",
    "ICV",
    "DX",
    "EXAMDATE_bl",
    "Years_bl",
    "M",
];

/// OASIS-2 `oasis_longitudinal.csv` columns, in the distributed order.
pub(crate) const OASIS_COLUMNS: [&str; 15] = [
    "Subject ID",
    "MRI ID",
    "Group",
    "Visit",
    "MR Delay",
    "M/F",
    "Hand",
    "Age",
    "EDUC",
    "SES",
    "MMSE",
    "CDR",
    "eTIV",
    "nWBV",
    "ASF",
];

fn write_csv(path: &Path, header: &[&str], rows: &[Vec<String>]) -> Result<()> {
    write_atomic(path, |w| {
        let mut csv = csv::Writer::from_writer(w);
        csv.write_record(header)?;
        for row in rows {
            csv.write_record(row)?;
        }
        csv.flush()
    })
}

fn opt<T: ToString>(v: Option<T>) -> String {
    v.map(|v| v.to_string()).unwrap_or_default()
}

/// `measures` holds one entry per scan, in subject then visit order.
pub(crate) fn write_adni(dir: &Path, subjects: &[Subject], measures: &[Measures]) -> Result<()> {
    let mut rows = Vec::new();
    let (mut by_date, mut by_id) = (Vec::new(), Vec::new());
    let mut next = measures.iter();
    for s in subjects {
        let bl = s.visits.first().map(|v| v.date).unwrap_or_default();
        for v in &s.visits {
            let scan = v.scan.as_ref().map(|scan| (scan, next.next()));
            let volumes: [String; 7] = match scan {
                Some((scan, Some(m))) => {
                    let vals =
                        [m.ventricles, m.hippocampus, m.whole_brain, m.entorhinal, m.fusiform, m.mid_temp, m.icv];
                    std::array::from_fn(|c| if scan.blank[c] { String::new() } else { format!("{:.0}", vals[c]) })
                }
                _ => Default::default(),
            };
            let dx = v.dx.map(|l| match l {
                Label::NC => "CN",
                Label::MCI => "MCI",
                Label::AD => "Dementia",
            });
            let adni1 = s.protocol == "ADNI1";
            let scanned = |text: &str| {
                if scan.is_some() {
                    text.to_string()
                } else {
                    String::new()
                }
            };
            let viscode = if v.month == 0 { "bl".to_string() } else { format!("m{:02}", v.month) };
            let mut row = vec![
                s.rid.to_string(),
                s.protocol.to_string(),
                s.protocol.to_string(),
                s.id.clone(),
                s.site.to_string(),
                viscode,
                iso_date(v.date),
                s.group.to_string(),
                format!("{:.1}", s.age_bl),
                if s.male { "Male" } else { "Female" }.to_string(),
                s.educ.to_string(),
                s.ethnicity.to_string(),
                s.race.to_string(),
                s.marital.to_string(),
                s.apoe4.to_string(),
                opt(v.mmse),
                scanned(if adni1 { "1.5 Tesla MRI" } else { "3 Tesla MRI" }),
                scanned(if adni1 {
                    "Cross-Sectional FreeSurfer (FreeSurfer Version 4.3)"
                } else {
                    "Cross-Sectional FreeSurfer (5.1)"
                }),
                opt(scan.map(|(sc, _)| sc.image_id.clone())),
            ];
            row.extend(volumes);
            row.push(opt(dx));
            row.push(iso_date(bl));
            row.push(format!("{:.5}", (v.date - bl) as f64 / 365.25));
            row.push(v.month.to_string());
            rows.push(row);
            if let Some((scan, _)) = scan {
                by_date.push(vec![scan.file.clone(), s.id.clone(), iso_date(scan.date)]);
                by_id.push(vec![scan.file.clone(), scan.image_id.clone()]);
            }
        }
    }
    write_csv(&dir.join("ADNIMERGE.csv"), &ADNI_COLUMNS, &rows)?;
    write_csv(&dir.join("scans.csv"), &["path", "subject", "date"], &by_date)?;
    write_csv(&dir.join("scans_by_id.csv"), &["path", "image_id"], &by_id)
}

/// `measures` holds one entry per scan, in subject then visit order (every OASIS visit is one).
pub(crate) fn write_oasis(dir: &Path, subjects: &[Subject], measures: &[Measures]) -> Result<()> {
    let mut rows = Vec::new();
    let mut by_id = Vec::new();
    let mut next = measures.iter();
    for s in subjects {
        for v in &s.visits {
            let (Some(scan), Some(m)) = (v.scan.as_ref(), next.next()) else {
                continue;
            };
            // OASIS reports eTIV in cm³, nWBV as a fraction, ASF = atlas eTIV (1755 cm³) / eTIV.
            let etiv = (m.icv / 1000.0).round();
            let cdr = if v.cdr == 0.5 { "0.5".to_string() } else { format!("{:.0}", v.cdr) };
            rows.push(vec![
                s.id.clone(),
                scan.image_id.clone(),
                s.group.to_string(),
                v.month.to_string(),
                v.delay.to_string(),
                if s.male { "M" } else { "F" }.to_string(),
                "R".to_string(),
                ((s.age_bl + v.delay as f64 / 365.25).floor() as u32).to_string(),
                s.educ.to_string(),
                opt(s.ses),
                opt(v.mmse),
                cdr,
                format!("{etiv:.0}"),
                format!("{:.3}", m.whole_brain / m.icv),
                format!("{:.3}", 1755.0 / etiv),
            ]);
            by_id.push(vec![scan.file.clone(), scan.image_id.clone()]);
        }
    }
    write_csv(&dir.join("oasis_longitudinal.csv"), &OASIS_COLUMNS, &rows)?;
    write_csv(&dir.join("scans.csv"), &["path", "image_id"], &by_id)
}
