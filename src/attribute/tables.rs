//! The tables `attribute` writes over all scans: tokens.csv, top_words.csv, completeness.csv,
//! pointing.csv (with label maps), summary.md and attribution.json.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use super::ig::words;
use super::ig::IgSettings;
use super::job::{scan_words, words_by_class, AttributeJob, AttributeReport, METHODS};
use crate::error::Result;
use crate::util::{write_atomic, write_csv};

/// Mean energy and peak-hit rate of one method on one biomarker.
#[derive(Debug, Clone, Serialize)]
pub struct PointingSummary {
    pub biomarker: String,
    pub method: String,
    pub scans: usize,
    pub energy: f64,
    pub peak_hit_rate: f64,
}

/// The pointing game over scans, per biomarker (report order) and method.
pub fn pointing_summary(report: &AttributeReport) -> Vec<PointingSummary> {
    let mut acc: Vec<((String, &str), (f64, f64, usize))> = Vec::new();
    for s in &report.scans {
        for (span, scores) in &s.sentences {
            for m in scores.iter().flatten() {
                let key = (span.name.clone(), m.method);
                let at = match acc.iter().position(|(k, _)| *k == key) {
                    Some(i) => i,
                    None => {
                        acc.push((key, (0.0, 0.0, 0)));
                        acc.len() - 1
                    }
                };
                let e = &mut acc[at].1;
                e.0 += m.energy;
                e.1 += f64::from(u8::from(m.peak_hit));
                e.2 += 1;
            }
        }
    }
    acc.into_iter()
        .map(|((biomarker, method), (e, h, n))| PointingSummary {
            biomarker,
            method: method.to_string(),
            scans: n,
            energy: e / n as f64,
            peak_hit_rate: h / n as f64,
        })
        .collect()
}

#[derive(Serialize)]
struct Summary<'a> {
    settings: &'a IgSettings,
    scans: usize,
    completeness_error_median: f64,
    completeness_error_max: f64,
    top_words_by_class: BTreeMap<String, Vec<(String, f64, usize)>>,
    pointing: Vec<PointingSummary>,
}

/// Write every table of `report` into `job.out`.
pub fn write(job: &AttributeJob, report: &AttributeReport) -> Result<()> {
    let out = &job.out;
    let label = |s: &super::job::ScanAttribution| s.label.map(|l| l.as_str().to_string()).unwrap_or_default();
    write_csv(
        &out.join("tokens.csv"),
        &["scan", "label", "position", "token", "word", "attribution"],
        report.scans.iter().flat_map(|s| {
            let mut word_of = vec![String::new(); s.tokens.len()];
            for (w, idx) in words(&s.tokens) {
                for i in idx {
                    word_of[i] = w.clone();
                }
            }
            (0..s.tokens.len())
                .map(|i| {
                    vec![
                        s.scan.clone(),
                        label(s),
                        i.to_string(),
                        s.tokens[i].clone(),
                        word_of[i].clone(),
                        format!("{:.6e}", s.ig.attributions[i]),
                    ]
                })
                .collect::<Vec<_>>()
        }),
    )?;
    write_csv(
        &out.join("completeness.csv"),
        &["scan", "label", "score", "baseline_score", "attribution_sum", "relative_error"],
        report.scans.iter().map(|s| {
            vec![
                s.scan.clone(),
                label(s),
                format!("{:.6}", s.ig.score),
                format!("{:.6}", s.ig.baseline_score),
                format!("{:.6}", s.ig.attributions.iter().sum::<f64>()),
                format!("{:.6}", s.ig.completeness_error()),
            ]
        }),
    )?;
    let by_class = words_by_class(&report.scans);
    let k = job.top_k;
    let per_scan = report.scans.iter().flat_map(|s| {
        let mut w = scan_words(s);
        w.sort_by(|a, b| b.1.total_cmp(&a.1));
        w.into_iter()
            .take(k)
            .enumerate()
            .map(|(r, (word, a))| {
                vec!["scan".into(), s.scan.clone(), label(s), (r + 1).to_string(), word, format!("{a:.6e}"), "1".into()]
            })
            .collect::<Vec<_>>()
    });
    let per_class = by_class.iter().flat_map(|(class, v)| {
        v.iter()
            .take(k)
            .enumerate()
            .map(|(r, (word, a, n))| {
                vec![
                    "class".into(),
                    class.clone(),
                    class.clone(),
                    (r + 1).to_string(),
                    word.clone(),
                    format!("{a:.6e}"),
                    n.to_string(),
                ]
            })
            .collect::<Vec<_>>()
    });
    write_csv(
        &out.join("top_words.csv"),
        &["level", "key", "label", "rank", "word", "attribution", "scans"],
        per_class.chain(per_scan),
    )?;
    let pointing = pointing_summary(report);
    if job.labels {
        write_csv(
            &out.join("pointing.csv"),
            &["scan", "label", "biomarker", "method", "energy", "peak_hit"],
            report.scans.iter().flat_map(|s| {
                s.sentences
                    .iter()
                    .flat_map(|(span, scores)| {
                        scores.iter().flatten().map(|m| {
                            vec![
                                s.scan.clone(),
                                label(s),
                                span.name.clone(),
                                m.method.to_string(),
                                format!("{:.6}", m.energy),
                                u8::from(m.peak_hit).to_string(),
                            ]
                        })
                    })
                    .collect::<Vec<_>>()
            }),
        )?;
    }
    let mut errors: Vec<f64> = report.scans.iter().map(|s| s.ig.completeness_error()).collect();
    errors.sort_by(f64::total_cmp);
    let median = errors.get(errors.len() / 2).copied().unwrap_or(0.0);
    let max = errors.last().copied().unwrap_or(0.0);
    let md = summary_markdown(job, report, &by_class, &pointing, median, max);
    write_atomic(&out.join("summary.md"), |w| w.write_all(md.as_bytes()))?;
    let top: BTreeMap<String, Vec<(String, f64, usize)>> =
        by_class.into_iter().map(|(c, v)| (c, v.into_iter().take(k).collect())).collect();
    crate::util::write_json(
        &out.join("attribution.json"),
        &Summary {
            settings: &report.settings,
            scans: report.scans.len(),
            completeness_error_median: median,
            completeness_error_max: max,
            top_words_by_class: top,
            pointing,
        },
    )
}

fn summary_markdown(
    job: &AttributeJob,
    report: &AttributeReport,
    by_class: &BTreeMap<String, Vec<(String, f64, usize)>>,
    pointing: &[PointingSummary],
    median: f64,
    max: f64,
) -> String {
    let mut s = String::new();
    let ig = &report.settings;
    let _ = writeln!(s, "# adfit attribute\n");
    let _ = writeln!(
        s,
        "Run `{}` on backbone `{}`, {} scans of `{}`. Integrated Gradients: {} steps (Gauss–Legendre), {:?} \
         baseline; completeness error (|Σ IG − (s(x) − s(x'))| / |s(x) − s(x')|) median {:.3}%, max {:.3}%.\n",
        job.run.display(),
        job.backbone.display(),
        report.scans.len(),
        job.index.display(),
        ig.steps,
        ig.baseline,
        100.0 * median,
        100.0 * max
    );
    let _ = writeln!(s, "## Top words by class (mean IG attribution per scan)\n");
    let _ = writeln!(s, "| class | {} |", (1..=job.top_k).map(|i| format!("#{i}")).collect::<Vec<_>>().join(" | "));
    let _ = writeln!(s, "|---|{}", "---|".repeat(job.top_k));
    for (class, v) in by_class {
        let cells: Vec<String> = v.iter().take(job.top_k).map(|(w, a, _)| format!("{w} ({a:+.3})")).collect();
        let _ = writeln!(s, "| {class} | {} |", cells.join(" | "));
    }
    if !pointing.is_empty() {
        let _ = writeln!(s, "\n## Pointing game against the label maps\n");
        let _ = writeln!(
            s,
            "Energy: the share of a map's positive mass inside the structure its sentence names; peak: the \
             share of scans whose map peaks inside it. grad-eclip: adfit's heat map; gradient: |∂s/∂x|; \
             random: a uniform random patch map resized like the others (chance). Label maps come from \
             `adfit synth --labels`, carried into the cache grid by `adfit preprocess`.\n"
        );
        let head: Vec<String> = METHODS.iter().flat_map(|m| [format!("{m} energy"), format!("{m} peak")]).collect();
        let _ = writeln!(s, "| biomarker | scans | {} | grad-eclip energy ÷ random |", head.join(" | "));
        let _ = writeln!(s, "|---|---|{}---|", "---|".repeat(head.len()));
        let mut names: Vec<&str> = Vec::new();
        for p in pointing {
            if !names.contains(&p.biomarker.as_str()) {
                names.push(&p.biomarker);
            }
        }
        for b in names {
            let row: Vec<&PointingSummary> = pointing.iter().filter(|p| p.biomarker == b).collect();
            let n = row.first().map_or(0, |p| p.scans);
            let cells: Vec<String> = METHODS
                .iter()
                .flat_map(|m| match row.iter().find(|p| p.method == *m) {
                    Some(p) => [format!("{:.4}", p.energy), format!("{:.2}", p.peak_hit_rate)],
                    None => ["-".into(), "-".into()],
                })
                .collect();
            let energy = |m: &str| row.iter().find(|p| p.method == m).map(|p| p.energy);
            let lift = match (energy("grad-eclip"), energy("random")) {
                (Some(e), Some(r)) if r > 0.0 => format!("{:.1}×", e / r),
                _ => "-".into(),
            };
            let _ = writeln!(s, "| {b} | {n} | {} | {lift} |", cells.join(" | "));
        }
    }
    s
}
