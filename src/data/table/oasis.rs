//! OASIS-2 `oasis_longitudinal.csv` rows. The table has no MCI group and no FreeSurfer volumes:
//! `eTIV` is taken as intracranial volume and `nWBV × eTIV` as whole-brain volume.

use serde::{Deserialize, Serialize};

use super::{Biomarkers, Cells, ClinicalRow, Columns};
use crate::data::label::Label;
use crate::error::Result;

/// What a subject of the `Converted` group becomes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
pub enum ConvertedPolicy {
    /// No label: the rows stay in the table but not in any labelled set.
    #[default]
    Exclude,
    /// Label each visit by its own CDR: 0 → NC, ≥ 0.5 → AD.
    ByCdr,
}

pub(super) fn parser(cols: &Columns, converted: ConvertedPolicy) -> Result<impl Fn(&Cells) -> Result<ClinicalRow>> {
    cols.require("Subject ID")?;
    cols.require("MRI ID")?;
    cols.require("Group")?;
    Ok(move |c: &Cells| {
        let subject = c.required_text("Subject ID")?;
        let image_id = c.required_text("MRI ID")?;
        let cdr = c.number("CDR")?;
        if let Some(v) = cdr {
            if ![0.0, 0.5, 1.0, 2.0, 3.0].contains(&v) {
                return Err(c.error("CDR", format!("{v} is not a CDR score (0, 0.5, 1, 2, 3)")));
            }
        }
        let group = c.required_text("Group")?;
        let label = match group.as_str() {
            "Nondemented" => Some(Label::NC),
            "Demented" => Some(Label::AD),
            "Converted" => match (converted, cdr) {
                (ConvertedPolicy::Exclude, _) | (ConvertedPolicy::ByCdr, None) => None,
                (ConvertedPolicy::ByCdr, Some(v)) if v == 0.0 => Some(Label::NC),
                (ConvertedPolicy::ByCdr, Some(_)) => Some(Label::AD),
            },
            other => return Err(c.error("Group", format!("{other:?} is not Nondemented, Demented or Converted"))),
        };
        let sex = match c.text("M/F").as_deref() {
            None => None,
            Some("M") => Some("M".to_string()),
            Some("F") => Some("F".to_string()),
            Some(other) => return Err(c.error("M/F", format!("{other:?} is not M or F"))),
        };
        let etiv = c.volume("eTIV")?;
        let nwbv = c.number("nWBV")?;
        if let Some(v) = nwbv.filter(|v| !(0.0..=1.0).contains(v)) {
            return Err(c.error("nWBV", format!("{v} is not a fraction in 0..1")));
        }
        let biomarkers =
            Biomarkers { icv: etiv, whole_brain: etiv.zip(nwbv).map(|(e, n)| e * n), ..Default::default() };
        Ok(ClinicalRow {
            line: c.line,
            subject,
            visit: c.text("Visit"),
            date: None,
            image_id: Some(image_id),
            label,
            mmse: c.mmse("MMSE")?,
            age: c.number("Age")?.map(|a| a as f32),
            sex,
            biomarkers,
        })
    })
}
