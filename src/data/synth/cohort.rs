//! Subjects and visits: who is in each cohort, their latent disease course, the clinical labels,
//! MMSE, and which cells of the tables will be blank.
//!
//! Every subject draws from its own random stream (seed, cohort, subject) and every visit from
//! (seed, cohort, subject, visit), so a subject does not change when the cohort grows, and the
//! scans can be imaged in any order on any number of threads.

use rand::seq::SliceRandom;
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;

use super::atrophy::Anatomy;
use super::scanner::Acquisition;
use crate::data::label::Label;

pub(crate) const ADNI: u64 = 1;
pub(crate) const OASIS: u64 = 2;
pub(crate) const SUBJECT: u64 = 1;
pub(crate) const VISIT: u64 = 2;
pub(crate) const ROSTER: u64 = 3;

/// One scanned visit: what to draw, how to image it, and where the file goes.
#[derive(Debug, Clone)]
pub(crate) struct Scan {
    /// Path relative to the cohort folder (`images/…nii.gz`).
    pub file: String,
    /// Days since 1970-01-01 (ADNI scan date; the session date for OASIS).
    pub date: i64,
    /// ADNI `IMAGEUID` or OASIS `MRI ID`.
    pub image_id: String,
    pub anatomy: Anatomy,
    pub acquisition: Acquisition,
    /// Which measured columns are blank: Ventricles, Hippocampus, WholeBrain, Entorhinal,
    /// Fusiform, MidTemp, ICV (FreeSurfer failures and QC rejections, as in ADNIMERGE).
    pub blank: [bool; 7],
}

#[derive(Debug, Clone)]
pub(crate) struct Visit {
    /// Months since baseline (ADNI `VISCODE`).
    pub month: u32,
    /// Days since the baseline visit (OASIS `MR Delay`).
    pub delay: i64,
    /// Days since 1970-01-01.
    pub date: i64,
    /// The visit's own clinical label; `None` where the table leaves DX blank.
    pub dx: Option<Label>,
    /// OASIS Clinical Dementia Rating.
    pub cdr: f64,
    pub mmse: Option<u32>,
    pub scan: Option<Scan>,
}

#[derive(Debug, Clone)]
pub(crate) struct Subject {
    /// PTID (`011_S_0002`) or Subject ID (`OAS2_0001`).
    pub id: String,
    pub rid: u32,
    pub site: u32,
    /// ADNI protocol of the baseline visit (`ADNI1`, `ADNIGO`, `ADNI2`).
    pub protocol: &'static str,
    pub male: bool,
    pub age_bl: f64,
    pub educ: u32,
    pub apoe4: u8,
    pub ses: Option<u32>,
    pub ethnicity: &'static str,
    pub race: &'static str,
    pub marital: &'static str,
    /// ADNI `DX_bl` (`CN`, `SMC`, `EMCI`, `LMCI`, `AD`) or OASIS `Group`.
    pub group: &'static str,
    pub visits: Vec<Visit>,
}

pub(crate) fn normal(rng: &mut ChaCha8Rng) -> f64 {
    rng.sample(StandardNormal)
}

pub(crate) fn pick<T: Copy>(rng: &mut ChaCha8Rng, items: &[(T, f64)]) -> T {
    let total: f64 = items.iter().map(|(_, w)| w).sum();
    let mut u = rng.random_range(0.0..total);
    for &(item, w) in items {
        if u < w {
            return item;
        }
        u -= w;
    }
    items[items.len() - 1].0
}

/// Clinical stage of a latent severity: NC below 1, MCI below 2, AD above.
pub(crate) fn stage(severity: f64) -> Label {
    if severity < 1.0 {
        Label::NC
    } else if severity < 2.0 {
        Label::MCI
    } else {
        Label::AD
    }
}

/// MMSE: near-ceiling in NC, a slow decline through MCI and a steep one in dementia; education
/// and a subject's own hippocampal size (cognitive reserve, atrophy) shift it; test-retest noise.
pub(crate) fn mmse(severity: f64, educ: u32, hippo_z: f64, rng: &mut ChaCha8Rng) -> u32 {
    let s = severity.max(0.0);
    let base = if s < 1.0 {
        29.4 - 0.4 * s
    } else if s < 2.0 {
        29.0 - 1.6 * (s - 1.0)
    } else {
        27.4 - 4.5 * (s - 2.0)
    };
    let v = base + 0.12 * (educ as f64 - 16.0) + 0.5 * hippo_z + 1.2 * normal(rng);
    v.round().clamp(0.0, 30.0) as u32
}

/// Groups in exact proportions (largest remainder), shuffled: even a tiny cohort has every class.
pub(crate) fn groups<T: Copy>(n: usize, shares: &[(T, f64)], rng: &mut ChaCha8Rng) -> Vec<T> {
    let mut out = Vec::with_capacity(n);
    let mut taken = 0usize;
    for (g, (item, share)) in shares.iter().enumerate() {
        let want = if g + 1 == shares.len() { n - taken } else { ((share * n as f64).round() as usize).min(n - taken) };
        out.extend(std::iter::repeat_n(*item, want));
        taken += want;
    }
    out.shuffle(rng);
    out
}

/// Days since 1970-01-01 of a civil date (proleptic Gregorian; Howard Hinnant's algorithm).
pub(crate) fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m as i64 + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146097 + doe - 719468
}

/// `YYYY-MM-DD` of days since 1970-01-01.
pub(crate) fn iso_date(days: i64) -> String {
    let z = days + 719468;
    let era = z.div_euclid(146097);
    let doe = z - era * 146097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

/// Blank measured columns of a scanned row: a failed FreeSurfer run blanks all seven (~6%), a QC
/// rejection of one region blanks its columns, and ICV is missing a little more often: about
/// 13% of scanned rows lack some volume.
pub(crate) fn blank_volumes(rng: &mut ChaCha8Rng) -> [bool; 7] {
    if rng.random_bool(0.06) {
        return [true; 7];
    }
    let mut b = [false; 7];
    b[0] = rng.random_bool(0.01);
    b[1] = rng.random_bool(0.02);
    b[2] = rng.random_bool(0.01);
    let temporal = rng.random_bool(0.025);
    b[3] = temporal;
    b[4] = temporal;
    b[5] = temporal;
    b[6] = rng.random_bool(0.04);
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates_round_trip() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(iso_date(days_from_civil(2008, 2, 29)), "2008-02-29");
        assert_eq!(iso_date(days_from_civil(2013, 12, 31) + 1), "2014-01-01");
    }

    #[test]
    fn stages_follow_severity() {
        assert_eq!(stage(0.5), Label::NC);
        assert_eq!(stage(1.5), Label::MCI);
        assert_eq!(stage(2.5), Label::AD);
    }
}
