//! The synthetic report: training text written from a visit's metadata (method.md).
//!
//! "A photo of NC. The MRI scan reveals the following biomarkers: Hippocampal volume: 7323.00
//! mm^3, ..." A missing value is written as "unavailable", never as 0 or NaN. The report is a
//! training input only: inference matches against the class prompts alone.

use serde::{Deserialize, Serialize};

use super::label::Label;
use super::table::{Biomarker, Biomarkers};
use crate::error::{Error, Result};

/// One sentence fragment of the report: `"{name}: {value} {unit}"`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Attribute {
    pub name: String,
    pub biomarker: Biomarker,
    #[serde(default = "default_unit")]
    pub unit: String,
}

fn default_unit() -> String {
    "mm^3".into()
}

/// The report template. `class_prompt` holds `{class}`; it is also the inference prompt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReportTemplate {
    pub class_prompt: String,
    pub preamble: String,
    pub attributes: Vec<Attribute>,
    /// Written in place of a missing value (DEFT wrote "Data unavailable").
    pub missing: String,
    /// Digits after the decimal point (the paper writes 7323.00).
    pub decimals: usize,
    /// The words that stand for each class in `{class}` (the paper's NC, MCI, AD by default).
    /// The same template file should go to `preprocess` (training reports) and to the run
    /// (inference prompts), so both use the same words.
    #[serde(default)]
    pub class_names: ClassNames,
}

/// The word written for each diagnosis in a prompt or report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClassNames {
    #[serde(rename = "NC")]
    pub nc: String,
    #[serde(rename = "MCI")]
    pub mci: String,
    #[serde(rename = "AD")]
    pub ad: String,
}

impl Default for ClassNames {
    fn default() -> Self {
        ClassNames { nc: "NC".into(), mci: "MCI".into(), ad: "AD".into() }
    }
}

impl ClassNames {
    pub fn of(&self, label: Label) -> &str {
        match label {
            Label::NC => &self.nc,
            Label::MCI => &self.mci,
            Label::AD => &self.ad,
        }
    }
}

impl Default for ReportTemplate {
    fn default() -> Self {
        let attr = |name: &str, biomarker| Attribute { name: name.into(), biomarker, unit: default_unit() };
        ReportTemplate {
            class_prompt: "A photo of {class}.".into(),
            preamble: "The MRI scan reveals the following biomarkers:".into(),
            attributes: vec![
                attr("Hippocampal volume", Biomarker::Hippocampus),
                attr("Ventricular size", Biomarker::Ventricles),
                attr("Whole brain volume", Biomarker::WholeBrain),
                attr("Entorhinal cortex volume", Biomarker::Entorhinal),
                attr("Fusiform gyrus volume", Biomarker::Fusiform),
                attr("Middle temporal gyrus volume", Biomarker::MidTemp),
            ],
            missing: "unavailable".into(),
            decimals: 2,
            class_names: ClassNames::default(),
        }
    }
}

impl ReportTemplate {
    /// Load a template from JSON; fields left out keep their defaults.
    pub fn from_json(path: &std::path::Path) -> Result<Self> {
        let text = crate::limits::read_text(path)?;
        let t: ReportTemplate =
            serde_json::from_str(&text).map_err(|e| Error::Json { path: path.into(), source: e })?;
        t.validate()?;
        Ok(t)
    }

    pub fn validate(&self) -> Result<()> {
        if !self.class_prompt.contains("{class}") {
            return Err(Error::config("report template class_prompt", "must contain `{class}`"));
        }
        for l in Label::ALL {
            if self.class_names.of(l).trim().is_empty() {
                return Err(Error::config("report template class_names", format!("the name of {l} is empty")));
            }
        }
        Ok(())
    }

    /// "A photo of {class}." for one class: the inference prompt.
    pub fn prompt(&self, label: Label) -> String {
        self.class_prompt.replace("{class}", self.class_names.of(label))
    }

    /// The full training report for one visit.
    pub fn render(&self, label: Label, biomarkers: &Biomarkers) -> String {
        let mut out = self.prompt(label);
        if self.attributes.is_empty() {
            return out;
        }
        if !self.preamble.is_empty() {
            out.push(' ');
            out.push_str(&self.preamble);
        }
        let parts: Vec<String> = self
            .attributes
            .iter()
            .map(|a| match biomarkers.get(a.biomarker) {
                Some(v) if a.unit.is_empty() => format!("{}: {:.*}", a.name, self.decimals, v),
                Some(v) => format!("{}: {:.*} {}", a.name, self.decimals, v, a.unit),
                None => format!("{}: {}", a.name, self.missing),
            })
            .collect();
        out.push(' ');
        out.push_str(&parts.join(", "));
        out.push('.');
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paper_example_verbatim() {
        let b = Biomarkers {
            hippocampus: Some(7323.0),
            ventricles: Some(43767.0),
            whole_brain: Some(968731.0),
            entorhinal: Some(4056.0),
            fusiform: Some(18775.0),
            mid_temp: Some(17048.0),
            icv: None,
        };
        assert_eq!(
            ReportTemplate::default().render(Label::NC, &b),
            "A photo of NC. The MRI scan reveals the following biomarkers: Hippocampal volume: 7323.00 mm^3, \
             Ventricular size: 43767.00 mm^3, Whole brain volume: 968731.00 mm^3, Entorhinal cortex volume: \
             4056.00 mm^3, Fusiform gyrus volume: 18775.00 mm^3, Middle temporal gyrus volume: 17048.00 mm^3."
        );
    }

    #[test]
    fn class_names_are_a_setting() {
        let t: ReportTemplate = serde_json::from_str(
            r#"{"class_prompt": "A photo of {class}.", "preamble": "", "attributes": [], "missing": "n/a",
                "decimals": 1, "class_names": {"NC": "a healthy brain", "AD": "Alzheimer's disease"}}"#,
        )
        .unwrap();
        assert_eq!(t.prompt(Label::NC), "A photo of a healthy brain.");
        assert_eq!(t.prompt(Label::MCI), "A photo of MCI.");
        assert_eq!(t.render(Label::AD, &Biomarkers::default()), "A photo of Alzheimer's disease.");
        assert_eq!(ReportTemplate::default().prompt(Label::AD), "A photo of AD.");
    }

    #[test]
    fn missing_values_are_unavailable_and_template_is_configurable() {
        let b = Biomarkers { hippocampus: Some(6000.5), ..Default::default() };
        let t = ReportTemplate {
            attributes: ReportTemplate::default().attributes[..2].to_vec(),
            missing: "Data unavailable".into(),
            ..Default::default()
        };
        let r = t.render(Label::AD, &b);
        assert_eq!(
            r,
            "A photo of AD. The MRI scan reveals the following biomarkers: Hippocampal volume: 6000.50 mm^3, \
             Ventricular size: Data unavailable."
        );
        assert!(!r.contains("NaN") && !r.contains(" 0.00"));
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("configs");
        assert_eq!(ReportTemplate::from_json(&dir.join("report.json")).unwrap(), ReportTemplate::default());
        let deft = ReportTemplate::from_json(&dir.join("report_deft.json")).unwrap();
        assert_eq!(
            deft.render(Label::MCI, &b),
            "A photo of MCI: Hippocampal Vol: 6000.5, Ventricular size: Data unavailable, Whole brain Vol: Data \
             unavailable, Entorhinal Vol: Data unavailable."
        );
        let no_report = ReportTemplate { attributes: vec![], ..Default::default() };
        assert_eq!(no_report.render(Label::MCI, &b), "A photo of MCI.");
    }
}
