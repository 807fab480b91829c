//! Diagnostic labels and the mapping from every code the cohort tables use.

use serde::{Deserialize, Serialize};

/// The three diagnostic groups adfit classifies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Label {
    NC,
    MCI,
    AD,
}

impl Label {
    pub const ALL: [Label; 3] = [Label::NC, Label::MCI, Label::AD];

    pub fn as_str(self) -> &'static str {
        match self {
            Label::NC => "NC",
            Label::MCI => "MCI",
            Label::AD => "AD",
        }
    }

    /// 0, 1, 2 in the order NC, MCI, AD.
    pub fn index(self) -> usize {
        self as usize
    }

    pub fn parse(s: &str) -> Option<Label> {
        match s.trim().to_ascii_uppercase().as_str() {
            "NC" => Some(Label::NC),
            "MCI" => Some(Label::MCI),
            "AD" => Some(Label::AD),
            _ => None,
        }
    }

    /// An ADNIMERGE diagnosis code (`DX`, `DX_bl`, or the older `DXCHANGE`-style text such as
    /// `MCI to Dementia`) → label. `Ok(None)` for a blank cell; `Err` for a code we do not know,
    /// so that a new code is never guessed silently.
    pub fn from_adni_code(code: &str) -> Result<Option<Label>, String> {
        let code = code.trim();
        if code.is_empty() {
            return Ok(None);
        }
        // Transitions ("NL to MCI", "Dementia to NL"): the state after "to" is the current one.
        let current = match code.rsplit_once(" to ") {
            Some((_, after)) => after.trim(),
            None => code,
        };
        let label = match current.to_ascii_uppercase().as_str() {
            "CN" | "NL" | "SMC" | "NC" => Label::NC,
            "MCI" | "EMCI" | "LMCI" => Label::MCI,
            "DEMENTIA" | "AD" => Label::AD,
            _ => {
                return Err(format!(
                "unknown diagnosis code {code:?} (expected CN, NL, SMC, MCI, EMCI, LMCI, Dementia, AD, or \"X to Y\")"
            ))
            }
        };
        Ok(Some(label))
    }
}

impl std::fmt::Display for Label {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_adni_code_version_maps() {
        let cases = [
            ("CN", Some(Label::NC)),
            ("SMC", Some(Label::NC)),
            ("NL", Some(Label::NC)),
            ("EMCI", Some(Label::MCI)),
            ("LMCI", Some(Label::MCI)),
            ("MCI", Some(Label::MCI)),
            ("Dementia", Some(Label::AD)),
            ("AD", Some(Label::AD)),
            ("NL to MCI", Some(Label::MCI)),
            ("MCI to Dementia", Some(Label::AD)),
            ("NL to Dementia", Some(Label::AD)),
            ("MCI to NL", Some(Label::NC)),
            ("Dementia to MCI", Some(Label::MCI)),
            ("Dementia to NL", Some(Label::NC)),
            ("", None),
            ("  ", None),
        ];
        for (code, want) in cases {
            assert_eq!(Label::from_adni_code(code).unwrap(), want, "{code}");
        }
        assert!(Label::from_adni_code("Probable AD").is_err());
        assert!(Label::from_adni_code("MCI to ???").is_err());
    }
}
