//! The calibrated difficulty of the default cohort (a hard requirement: learnable from the volume
//! columns, never trivially), plus hand-run reports of its statistics, calibration and timing.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::tests::read_table;
use super::*;
use crate::eval::logreg::{balanced_accuracy, fit};

/// Balanced accuracy of a logistic regression on the six volume columns plus AGE, trained on 70%
/// of the subjects and scored on the rest, from the table as written.
fn volume_lr_balanced_accuracy(root: &Path, split_seed: u64) -> f64 {
    let (_, rows) = read_table(&root.join("adni/ADNIMERGE.csv"));
    let features = ["Hippocampus", "Ventricles", "WholeBrain", "Entorhinal", "Fusiform", "MidTemp", "AGE"];
    let mut data: Vec<(String, Vec<f64>, usize)> = Vec::new();
    for r in &rows {
        let Ok(Some(label)) = crate::data::label::Label::from_adni_code(&r["DX"]) else {
            continue;
        };
        let x: Option<Vec<f64>> = features.iter().map(|f| r[*f].parse::<f64>().ok()).collect();
        if let Some(x) = x {
            data.push((r["PTID"].clone(), x, label.index()));
        }
    }
    let mut subjects: Vec<String> = data.iter().map(|d| d.0.clone()).collect::<BTreeSet<_>>().into_iter().collect();
    subjects.shuffle(&mut ChaCha8Rng::seed_from_u64(split_seed));
    let train: BTreeSet<&String> = subjects[..subjects.len() * 7 / 10].iter().collect();
    let (tr, te): (Vec<_>, Vec<_>) = data.iter().partition(|d| train.contains(&d.0));
    let xs = |v: &[&(String, Vec<f64>, usize)]| v.iter().map(|d| d.1.clone()).collect::<Vec<_>>();
    let ys = |v: &[&(String, Vec<f64>, usize)]| v.iter().map(|d| d.2).collect::<Vec<_>>();
    let model = fit(&xs(&tr), &ys(&tr), 3, 1e-2).unwrap();
    balanced_accuracy(&ys(&te), &model.predict(&xs(&te)), 3)
}

/// Mean balanced accuracy over five random 70/30 subject splits of one written cohort: a single
/// split of ~45 test subjects scatters by ±4.5 points, the mean of five by about half that.
fn mean_split_accuracy(root: &Path, seed: u64) -> (f64, Vec<f64>) {
    let scores: Vec<f64> = (0..5).map(|k| volume_lr_balanced_accuracy(root, 100 + seed + 1000 * k)).collect();
    (scores.iter().sum::<f64>() / scores.len() as f64, scores)
}

/// The hard requirement on the default cohort: learnable from the volume columns, never trivially
/// (80-92% balanced accuracy is the target; the assertion leaves a little room).
#[test]
fn default_cohort_is_calibrated() {
    let mut means = Vec::new();
    for seed in [1, 2, 3] {
        let dir = tempfile::tempdir().unwrap();
        let cfg = SynthConfig { write_images: false, ..SynthConfig::preset(Preset::Default, seed) };
        let started = std::time::Instant::now();
        let s = generate(dir.path(), &cfg).unwrap();
        let (mean, scores) = mean_split_accuracy(dir.path(), seed);
        eprintln!(
            "seed {seed}: {} ADNI scans {:?}, {:.1} s; volume+age LR balanced accuracy {mean:.3} (splits {scores:.3?})",
            s.adni_scans,
            s.adni_scans_by_label,
            started.elapsed().as_secs_f64()
        );
        assert!(scores.iter().all(|&b| b < 0.99), "a split is (nearly) perfectly separable: {scores:?}");
        means.push(mean);
    }
    for m in &means {
        assert!((0.78..=0.94).contains(m), "mean balanced accuracies per seed {means:?}");
    }
}

/// Per-diagnosis mean ± SD of every measured column of the default cohort (run by hand:
/// `cargo test --lib synth::calibration::print_default_statistics -- --ignored --nocapture`).
#[test]
#[ignore]
fn print_default_statistics() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = SynthConfig { write_images: false, ..SynthConfig::preset(Preset::Default, 1) };
    generate(dir.path(), &cfg).unwrap();
    let (_, rows) = read_table(&dir.path().join("adni/ADNIMERGE.csv"));
    let columns =
        ["Hippocampus", "Ventricles", "WholeBrain", "Entorhinal", "Fusiform", "MidTemp", "ICV", "MMSE", "AGE"];
    for dx in ["CN", "MCI", "Dementia"] {
        let mut line = format!("{dx:>9}");
        for c in columns {
            let v: Vec<f64> = rows.iter().filter(|r| r["DX"] == dx).filter_map(|r| r[c].parse().ok()).collect();
            let m = v.iter().sum::<f64>() / v.len() as f64;
            let sd = (v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / v.len() as f64).sqrt();
            line += &format!(" {c} {m:.0}±{sd:.0}");
        }
        eprintln!("{line}");
    }
    let (_, orows) = read_table(&dir.path().join("oasis/oasis_longitudinal.csv"));
    for g in ["Nondemented", "Demented", "Converted"] {
        let col = |c: &str| -> f64 {
            let v: Vec<f64> = orows.iter().filter(|r| r["Group"] == g).filter_map(|r| r[c].parse().ok()).collect();
            v.iter().sum::<f64>() / v.len() as f64
        };
        eprintln!(
            "{g:>12} eTIV {:.0} nWBV {:.3} ASF {:.3} MMSE {:.1} CDR {:.2} Age {:.1}",
            col("eTIV"),
            col("nWBV"),
            col("ASF"),
            col("MMSE"),
            col("CDR"),
            col("Age")
        );
    }
}

/// Calibration over more seeds and splits (run by hand, ~1 min:
/// `cargo test --lib synth::calibration::print_calibration -- --ignored --nocapture`).
#[test]
#[ignore]
fn print_calibration() {
    let mut all = Vec::new();
    let mut means = Vec::new();
    for seed in 1..=10 {
        let dir = tempfile::tempdir().unwrap();
        let cfg = SynthConfig { write_images: false, ..SynthConfig::preset(Preset::Default, seed) };
        generate(dir.path(), &cfg).unwrap();
        let (mean, scores) = mean_split_accuracy(dir.path(), seed);
        eprintln!("seed {seed}: mean {mean:.3}, splits {scores:.3?}");
        all.extend(scores);
        means.push(mean);
    }
    let stats = |v: &[f64]| {
        let m = v.iter().sum::<f64>() / v.len() as f64;
        let sd = (v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / v.len() as f64).sqrt();
        let (lo, hi) = v.iter().fold((1.0f64, 0.0f64), |(lo, hi), &x| (lo.min(x), hi.max(x)));
        format!("{m:.3} ± {sd:.3} (min {lo:.3}, max {hi:.3})")
    };
    eprintln!("single splits ({}): {}", all.len(), stats(&all));
    eprintln!("per-seed means of 5 splits ({}): {}", means.len(), stats(&means));
}

/// The whole default cohort with images, timed (run by hand; set ADFIT_SYNTH_OUT to keep it,
/// ADFIT_SYNTH_PRESET=tiny for the tiny one:
/// `cargo test --lib synth::calibration::time_default_with_images -- --ignored --nocapture`).
#[test]
#[ignore]
fn time_default_with_images() {
    let keep = std::env::var_os("ADFIT_SYNTH_OUT").map(PathBuf::from);
    let tmp = tempfile::tempdir().unwrap();
    let out = keep.unwrap_or_else(|| tmp.path().to_path_buf());
    let started = std::time::Instant::now();
    let preset = match std::env::var("ADFIT_SYNTH_PRESET").as_deref() {
        Ok("tiny") => Preset::Tiny,
        _ => Preset::Default,
    };
    let s = generate(&out, &SynthConfig::preset(preset, 1)).unwrap();
    eprintln!("{s:?}");
    eprintln!(
        "{:.1} s on {} threads, {:.1} MB",
        started.elapsed().as_secs_f64(),
        rayon::current_num_threads(),
        s.bytes_written as f64 / 1e6
    );
}
