//! The ADNI-like cohort: who is in it, their disease course, their visits.

use rand::Rng;

use super::atrophy::{Anatomy, Traits};
use super::cohort::{
    blank_volumes, days_from_civil, groups, mmse, normal, pick, stage, Scan, Subject, Visit, ADNI, ROSTER, SUBJECT,
    VISIT,
};
use super::scanner::{Acquisition, ScannerProfile};
use super::{stream, SynthConfig};
use crate::data::label::Label;

/// ADNI sites (the first three digits of a PTID).
const SITES: [u32; 24] = [2, 3, 5, 6, 7, 9, 11, 12, 13, 16, 18, 22, 23, 24, 27, 31, 32, 35, 36, 41, 52, 67, 94, 116];

/// The ADNI-like cohort: baseline group (CN/SMC, EMCI/LMCI, AD), a latent severity that grows at
/// a subject-specific rate (some NC and MCI convert), visits on the ADNI schedule, some of them
/// without MRI.
pub(crate) fn subjects(cfg: &SynthConfig, profile: &ScannerProfile) -> Vec<Subject> {
    let n = cfg.adni.subjects;
    let mut roster = stream(cfg.seed, &[ADNI, ROSTER]);
    let labels = groups(n, &[(Label::NC, 0.35), (Label::MCI, 0.40), (Label::AD, 0.25)], &mut roster);
    // RIDs rise with enrolment; ADNI1 (from 2005), ADNIGO (2009) and ADNI2 (2011) use separate ranges.
    let mut rids = Vec::with_capacity(n);
    let mut rid = 1u32;
    for i in 0..n {
        let protocol = match i * 20 / n.max(1) {
            0..=10 => "ADNI1",
            11..=12 => "ADNIGO",
            _ => "ADNI2",
        };
        let floor = match protocol {
            "ADNI1" => 1,
            "ADNIGO" => 2000,
            _ => 4000,
        };
        rid = rid.max(floor) + roster.random_range(1..=12);
        rids.push((rid, protocol));
    }
    let mut image_id = 30_000u64;
    let mut subjects = Vec::with_capacity(n);
    for (i, (&label, &(rid, protocol))) in labels.iter().zip(&rids).enumerate() {
        let rng = &mut stream(cfg.seed, &[ADNI, SUBJECT, i as u64]);
        let (group, s0, rate) = match label {
            Label::NC => {
                let smc = rng.random_bool(0.15);
                let s0 = if smc { rng.random_range(0.3..0.95) } else { rng.random_range(0.0..0.9) };
                // About one NC in eight is preclinical and will convert to MCI.
                let rate =
                    if rng.random_bool(0.12) { rng.random_range(0.15..0.4) } else { rng.random_range(0.0..0.06) };
                (if smc { "SMC" } else { "CN" }, s0, rate)
            }
            Label::MCI => {
                if rng.random_bool(0.45) {
                    ("EMCI", rng.random_range(1.0..1.5), rng.random_range(0.05..0.25))
                } else {
                    ("LMCI", rng.random_range(1.4..1.98), rng.random_range(0.1..0.45))
                }
            }
            Label::AD => ("AD", rng.random_range(2.02..3.0), rng.random_range(0.25..0.6)),
        };
        let (age_mean, age_sd, p_male, educ_mean, apoe) = match label {
            Label::NC => (75.5, 5.5, 0.5, 16.3, [0.72, 0.25, 0.03]),
            Label::MCI => (73.5, 7.5, 0.6, 15.9, [0.50, 0.38, 0.12]),
            Label::AD => (75.0, 7.8, 0.55, 15.2, [0.33, 0.47, 0.20]),
        };
        let age_bl = ((age_mean + age_sd * normal(rng)).clamp(55.0, 90.0) * 10.0).round() / 10.0;
        let male = rng.random_bool(p_male);
        let educ = (educ_mean + 2.8 * normal(rng)).round().clamp(6.0, 20.0) as u32;
        let apoe4 = pick(rng, &[(0u8, apoe[0]), (1, apoe[1]), (2, apoe[2])]);
        let icv = if male { 1.60e6 + 0.12e6 * normal(rng) } else { 1.42e6 + 0.11e6 * normal(rng) };
        let traits = Traits::draw(rng, icv.clamp(1.1e6, 2.0e6));
        let site = SITES[rng.random_range(0..SITES.len())];
        let ethnicity = pick(rng, &[("Not Hisp/Latino", 0.96), ("Hisp/Latino", 0.04)]);
        let race = pick(rng, &[("White", 0.92), ("Black", 0.04), ("Asian", 0.02), ("More than one", 0.02)]);
        let marital = pick(
            rng,
            &[("Married", 0.75), ("Widowed", 0.11), ("Divorced", 0.09), ("Never married", 0.04), ("Unknown", 0.01)],
        );
        let (y0, y1) = match protocol {
            "ADNI1" => (2005, 2007),
            "ADNIGO" => (2009, 2010),
            _ => (2011, 2013),
        };
        let bl_date = days_from_civil(y0, 9, 1) + rng.random_range(0..(365 * (y1 - y0) + 300));

        // ADNI's MRI schedule per group; each subject has 1..=max scanned visits and sometimes
        // one extra visit without MRI.
        let schedule: &[u32] = match label {
            Label::NC => &[0, 6, 12, 24, 36, 48],
            Label::MCI => &[0, 6, 12, 18, 24, 36, 48],
            Label::AD => &[0, 6, 12, 24, 36],
        };
        let (lo, hi) = (cfg.adni.min_visits, cfg.adni.max_visits);
        let weights: Vec<(usize, f64)> = [(1, 0.15), (2, 0.3), (3, 0.3), (4, 0.25), (5, 0.1), (6, 0.05)]
            .into_iter()
            .filter(|(v, _)| (lo..=hi).contains(v))
            .collect();
        let scanned = if weights.is_empty() { lo } else { pick(rng, &weights) }.min(schedule.len());
        let rows = (scanned + usize::from(rng.random_bool(0.25))).min(schedule.len());
        let unscanned = if rows > scanned && rows > 1 { Some(rng.random_range(1..rows)) } else { None };

        let id = format!("{site:03}_S_{rid:04}");
        let mut visits = Vec::with_capacity(rows);
        let mut last_date = bl_date;
        for (v, &month) in schedule[..rows].iter().enumerate() {
            let vr = &mut stream(cfg.seed, &[ADNI, VISIT, i as u64, v as u64]);
            let delay = if month == 0 { 0 } else { (month as f64 * 30.44 + 10.0 * normal(vr)).round() as i64 };
            let date = (bl_date + delay).max(last_date + 60 * i64::from(v > 0));
            last_date = date;
            let years = (date - bl_date) as f64 / 365.25;
            let severity = s0 + rate * years;
            // Follow-up diagnoses carry a little clinical noise (so some MCI revert, as in ADNI).
            let dx = if v == 0 { label } else { stage(severity + 0.06 * normal(vr)) };
            let dx = (!vr.random_bool(0.025)).then_some(dx);
            let score = mmse(severity, educ, traits.z[0], vr);
            let mmse = (!vr.random_bool(0.05)).then_some(score);
            let scan = if Some(v) == unscanned {
                None
            } else {
                let anatomy = Anatomy::at(&traits, severity, age_bl + years, cfg.effect, vr);
                let acquisition = Acquisition::draw(profile, vr);
                // Scan dates sit near the exam date, once in a while a couple of months off.
                let off = if vr.random_bool(0.04) { vr.random_range(35..80) } else { vr.random_range(0..21) };
                let off = if vr.random_bool(0.5) { -off } else { off };
                image_id += vr.random_range(1..4000);
                let viscode = if month == 0 { "bl".to_string() } else { format!("m{month:02}") };
                Some(Scan {
                    file: format!("images/{id}_{viscode}.nii.gz"),
                    date: date + off,
                    image_id: image_id.to_string(),
                    anatomy,
                    acquisition,
                    blank: blank_volumes(vr),
                })
            };
            visits.push(Visit { month, delay, date, dx, cdr: 0.0, mmse, scan });
        }
        subjects.push(Subject {
            id,
            rid,
            site,
            protocol,
            male,
            age_bl,
            educ,
            apoe4,
            ses: None,
            ethnicity,
            race,
            marital,
            group,
            visits,
        });
    }
    subjects
}
