//! Preprocessing and loading speed, the Rust side. `scripts/bench.sh` runs this and
//! `scripts/bench_preprocess.py` (nibabel + torch) on the same scan in one go and prints ratios.
//!
//! 1. read + reorient + resize + normalise one 1 mm T1 (`ADFIT_BENCH_T1`, default: the MNI152
//!    template that `scripts/fetch_assets.sh` extracts) to 128³, median of N runs per step;
//! 2. batches per second from the preprocessing cache at B = 8, 128³, with and without
//!    augmentation, serial and with parallel item loading.
//! Prints one JSON line per measurement; peak RSS (VmHWM) is reported at the end.

mod common;
use common::*;
use std::path::PathBuf;
use std::time::Instant;

use adfit::data::augment::AugmentConfig;
use adfit::data::cache::write_cached;
use adfit::data::dataset::{CohortBatcher, CohortDataset};
use adfit::data::nifti_io::read_nifti;
use adfit::data::normalize::{normalize, NormalizeConfig};
use adfit::data::orient::to_canonical;
use adfit::data::preprocess::IndexRow;
use adfit::data::resample::resize;
use adfit::data::volume::{identity, Volume};
use burn::backend::Flex;
use burn::data::dataloader::batcher::Batcher;
use burn::data::dataset::Dataset;
use rayon::prelude::*;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn template() -> Option<PathBuf> {
    if let Ok(p) = std::env::var("ADFIT_BENCH_T1") {
        return Some(PathBuf::from(p));
    }
    let cache = std::env::var("ADFIT_ASSETS")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cache/adfit-assets"));
    let p = cache.join("tpl-MNI152NLin6Asym_res-01_T1w.nii.gz");
    p.exists().then_some(p)
}

fn bench_preprocess(repeat: usize) {
    let Some(path) = template() else {
        eprintln!("no 1 mm T1 found: run scripts/fetch_assets.sh or set ADFIT_BENCH_T1");
        return;
    };
    let (mut load, mut canon, mut rs, mut norm) = (vec![], vec![], vec![], vec![]);
    let mut shape = [0; 3];
    for i in 0..=repeat {
        let t = Instant::now();
        let vol = read_nifti(&path).expect("read").volume;
        let t1 = t.elapsed().as_secs_f64();
        shape = vol.shape;
        let t = Instant::now();
        let vol = to_canonical(vol);
        let t2 = t.elapsed().as_secs_f64();
        let t = Instant::now();
        let mut vol = resize(&vol, [128, 128, 128]).expect("resize");
        let t3 = t.elapsed().as_secs_f64();
        let t = Instant::now();
        normalize(&mut vol, &NormalizeConfig::default(), "bench").expect("normalise");
        let t4 = t.elapsed().as_secs_f64();
        if i > 0 {
            load.push(t1);
            canon.push(t2);
            rs.push(t3);
            norm.push(t4);
        }
    }
    let steps = [median(load), median(canon), median(rs), median(norm)];
    println!(
        "{{\"tool\": \"adfit\", \"bench\": \"preprocess\", \"input\": {:?}, \"shape\": {:?}, \"repeat\": {repeat}, \
         \"steps_s\": {{\"load\": {:.6}, \"canonical\": {:.6}, \"resize\": {:.6}, \"normalize\": {:.6}}}, \"total_s\": {:.6}, \"peak_rss_mib\": {:.1}}}",
        path.file_name().unwrap_or_default(),
        shape,
        steps[0],
        steps[1],
        steps[2],
        steps[3],
        steps.iter().sum::<f64>(),
        peak_rss_mib()
    );
}

fn bench_loading(batches: usize) {
    let dir = tempfile::tempdir().expect("tempdir");
    let n = 16;
    let mut rows = Vec::new();
    for s in 0..n {
        let v = Volume::from_fn([128, 128, 128], identity(), |i, j, k| ((i * 7 + j * 3 + k + s) % 97) as f32 / 97.0);
        let cache = format!("volumes/s{s}.vol");
        write_cached(&dir.path().join(&cache), &v).expect("write");
        rows.push(IndexRow {
            label: Some("NC".into()),
            mmse: Some(28.0),
            ..IndexRow::bare(&format!("s{s}"), &format!("s{s}"), &cache)
        });
    }
    let device = Default::default();
    for (augment, parallel) in [(false, false), (false, true), (true, false), (true, true)] {
        let mut ds = CohortDataset::from_rows(dir.path().to_path_buf(), rows.clone());
        if augment {
            ds = ds.with_augmentation(AugmentConfig::default(), 0);
        }
        let t = Instant::now();
        for b in 0..batches {
            let idx: Vec<usize> = (0..8).map(|i| (b * 8 + i) % n).collect();
            let items: Vec<_> = if parallel {
                idx.par_iter().map(|&i| ds.get(i).expect("item")).collect()
            } else {
                idx.iter().map(|&i| ds.get(i).expect("item")).collect()
            };
            let batch: adfit::data::dataset::CohortBatch<Flex> = CohortBatcher.batch(items, &device);
            std::hint::black_box(batch.volumes.dims());
        }
        let secs = t.elapsed().as_secs_f64();
        println!(
            "{{\"tool\": \"adfit\", \"bench\": \"loading\", \"batch\": 8, \"shape\": [128,128,128], \"augment\": {augment}, \
             \"parallel_items\": {parallel}, \"threads\": {}, \"batches_per_s\": {:.3}}}",
            rayon::current_num_threads(),
            batches as f64 / secs
        );
    }
}

fn main() {
    // `cargo bench` passes `--bench`; any other flag is ignored.
    let repeat = std::env::var("ADFIT_BENCH_REPEAT").ok().and_then(|r| r.parse().ok()).unwrap_or(5);
    bench_preprocess(repeat);
    bench_loading(repeat.max(4));
    println!("{{\"tool\": \"adfit\", \"peak_rss_mib\": {:.1}}}", peak_rss_mib());
}
