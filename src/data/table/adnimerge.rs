//! ADNIMERGE (and TADPOLE-style) rows.

use super::{read_biomarkers, Biomarker, Cells, ClinicalRow, Columns};
use crate::data::label::Label;
use crate::error::Result;

const VOLUMES: [(Biomarker, &str); 7] = [
    (Biomarker::Hippocampus, "Hippocampus"),
    (Biomarker::Ventricles, "Ventricles"),
    (Biomarker::WholeBrain, "WholeBrain"),
    (Biomarker::Entorhinal, "Entorhinal"),
    (Biomarker::Fusiform, "Fusiform"),
    (Biomarker::MidTemp, "MidTemp"),
    (Biomarker::Icv, "ICV"),
];

/// Months after baseline that a VISCODE stands for (`bl`, `sc` → 0; `m06` → 6), if it says.
fn months(viscode: &str) -> Option<f32> {
    let v = viscode.to_ascii_lowercase();
    match v.as_str() {
        "bl" | "sc" | "scmri" => Some(0.0),
        _ => v.strip_prefix('m').and_then(|m| m.parse::<f32>().ok()),
    }
}

/// Checks the header once and returns the row parser.
pub(super) fn parser(cols: &Columns) -> Result<impl Fn(&Cells) -> Result<ClinicalRow>> {
    cols.require("PTID")?;
    cols.require("VISCODE")?;
    cols.require("DX")?;
    Ok(|c: &Cells| {
        let subject = c.required_text("PTID")?;
        let visit = c.required_text("VISCODE")?;
        let label = match c.text("DX") {
            None => None,
            Some(code) => Label::from_adni_code(&code).map_err(|e| c.error("DX", e))?,
        };
        if let Some(code) = c.text("DX_bl") {
            Label::from_adni_code(&code).map_err(|e| c.error("DX_bl", e))?;
        }
        let baseline_age = c.number("AGE")?;
        let age = baseline_age.map(|a| a as f32 + months(&visit).unwrap_or(0.0) / 12.0);
        let sex = match c.text("PTGENDER").as_deref() {
            None => None,
            Some("Male") | Some("M") => Some("M".to_string()),
            Some("Female") | Some("F") => Some("F".to_string()),
            Some(other) => return Err(c.error("PTGENDER", format!("{other:?} is not Male or Female"))),
        };
        let image_id = match c.number("IMAGEUID")? {
            Some(v) if v.fract() == 0.0 => Some(format!("{}", v as i64)),
            Some(v) => return Err(c.error("IMAGEUID", format!("{v} is not an integer id"))),
            None => None,
        };
        Ok(ClinicalRow {
            line: c.line,
            subject,
            visit: Some(visit),
            date: c.date("EXAMDATE")?,
            image_id,
            label,
            mmse: c.mmse("MMSE")?,
            age,
            sex,
            biomarkers: read_biomarkers(c, &VOLUMES)?,
        })
    })
}
