//! The OASIS-2-like transfer cohort: nondemented and demented older adults, a few converters.

use rand::Rng;

use super::atrophy::{Anatomy, Traits};
use super::cohort::{days_from_civil, groups, mmse, normal, pick, Scan, Subject, Visit, OASIS, ROSTER, SUBJECT, VISIT};
use super::scanner::{Acquisition, ScannerProfile};
use super::{stream, SynthConfig};
use crate::data::label::Label;

/// OASIS-2 clinical dementia rating of a latent severity.
fn cdr(severity: f64) -> f64 {
    match severity {
        s if s < 1.5 => 0.0,
        s if s < 2.6 => 0.5,
        s if s < 3.3 => 1.0,
        _ => 2.0,
    }
}

/// The OASIS-like cohort: older adults, nondemented or demented (CDR ≥ 0.5) throughout, plus a
/// few who convert; two or more sessions a year or two apart, every one of them scanned.
pub(crate) fn subjects(cfg: &SynthConfig, profile: &ScannerProfile) -> Vec<Subject> {
    let n = cfg.oasis.subjects;
    let mut roster = stream(cfg.seed, &[OASIS, ROSTER]);
    let kinds = groups(n, &[("Nondemented", 0.48), ("Demented", 0.40), ("Converted", 0.12)], &mut roster);
    let mut number = 0u32;
    let mut subjects = Vec::with_capacity(n);
    for (i, &group) in kinds.iter().enumerate() {
        number += roster.random_range(1..=3);
        let rng = &mut stream(cfg.seed, &[OASIS, SUBJECT, i as u64]);
        let (lo, hi) = (cfg.oasis.min_visits, cfg.oasis.max_visits);
        let weights: Vec<(usize, f64)> =
            [(2, 0.55), (3, 0.3), (4, 0.12), (5, 0.03)].into_iter().filter(|(v, _)| (lo..=hi).contains(v)).collect();
        let sessions = if weights.is_empty() { lo } else { pick(rng, &weights) };
        let mut delays = vec![0i64];
        for _ in 1..sessions {
            let last = delays[delays.len() - 1];
            delays.push(last + rng.random_range(450..900));
        }
        let span = delays[delays.len() - 1] as f64 / 365.25;
        let (s0, mut rate): (f64, f64) = match group {
            "Nondemented" => (rng.random_range(0.0..0.9), rng.random_range(0.0..0.05)),
            "Demented" => (rng.random_range(1.8..3.1), rng.random_range(0.2..0.5)),
            _ => (rng.random_range(1.05..1.45), rng.random_range(0.15..0.35)),
        };
        if group == "Converted" && sessions > 1 {
            // A converter must reach CDR 0.5 by the last session.
            rate = rate.max((1.6 - s0) / span.max(0.5));
        }
        let age_bl =
            (if group == "Demented" { 76.0 + 7.0 * normal(rng) } else { 77.0 + 8.0 * normal(rng) }).clamp(60.0, 96.0);
        let male = rng.random_bool(0.43);
        let educ = (14.6 + 2.9 * normal(rng)).round().clamp(6.0, 23.0) as u32;
        let ses = pick(rng, &[(1u32, 0.25), (2, 0.27), (3, 0.25), (4, 0.2), (5, 0.03)]);
        let ses = (!rng.random_bool(0.05)).then_some(ses);
        let icv = if male { 1.62e6 + 0.13e6 * normal(rng) } else { 1.42e6 + 0.12e6 * normal(rng) };
        let traits = Traits::draw(rng, icv.clamp(1.1e6, 2.0e6));
        let id = format!("OAS2_{number:04}");
        let first_date = days_from_civil(1997, 1, 1) + rng.random_range(0..1500);
        let mut visits = Vec::with_capacity(sessions);
        for (v, &delay) in delays.iter().enumerate() {
            let vr = &mut stream(cfg.seed, &[OASIS, VISIT, i as u64, v as u64]);
            let years = delay as f64 / 365.25;
            let severity = s0 + rate * years;
            let label = if group == "Nondemented" || cdr(severity) == 0.0 { Label::NC } else { Label::AD };
            let score = mmse(severity, educ, traits.z[0], vr);
            let mri_id = format!("{id}_MR{}", v + 1);
            let anatomy = Anatomy::at(&traits, severity, age_bl + years, cfg.effect, vr);
            let acquisition = Acquisition::draw(profile, vr);
            visits.push(Visit {
                month: v as u32 + 1,
                delay,
                date: first_date + delay,
                dx: Some(label),
                cdr: cdr(severity),
                mmse: (!vr.random_bool(0.01)).then_some(score),
                scan: Some(Scan {
                    file: format!("images/{mri_id}.nii.gz"),
                    date: first_date + delay,
                    image_id: mri_id,
                    anatomy,
                    acquisition,
                    blank: [false; 7],
                }),
            });
        }
        subjects.push(Subject {
            id,
            rid: number,
            site: 0,
            protocol: "OASIS-2",
            male,
            age_bl,
            educ,
            apoe4: 0,
            ses,
            ethnicity: "",
            race: "",
            marital: "",
            group,
            visits,
        });
    }
    subjects
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cdr_follows_severity() {
        assert_eq!(cdr(0.3), 0.0);
        assert_eq!(cdr(2.0), 0.5);
        assert_eq!(cdr(3.0), 1.0);
        assert_eq!(cdr(3.5), 2.0);
    }
}
