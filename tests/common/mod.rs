//! Helpers shared by the integration tests: running the real binary, and the fetched
//! all-MiniLM-L6-v2 assets (`scripts/fetch_minilm.sh`, run by scripts/test.sh).
#![allow(dead_code)] // each test binary uses a different subset

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use adfit::model::backbones::m3d::{save, BackboneConfig, TextWeights};
use adfit::model::bert::{Bert, BertConfig};
use adfit::model::clip::ClipBackbone;
use adfit::model::vit3d::{Vit3d, Vit3dConfig};

/// Run `adfit` in `dir`.
pub fn adfit(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_adfit"))
        .args(args)
        .current_dir(dir)
        .env_remove("RUST_LOG")
        .output()
        .expect("run adfit")
}

/// Run a command that must succeed; returns its stdout.
pub fn ok(dir: &Path, args: &[&str]) -> String {
    let out = adfit(dir, args);
    assert!(
        out.status.success(),
        "adfit {args:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Run a command that must fail; returns its stderr.
pub fn fails(dir: &Path, args: &[&str]) -> String {
    let out = adfit(dir, args);
    assert!(!out.status.success(), "adfit {args:?} should have failed");
    String::from_utf8(out.stderr).unwrap()
}

/// A JSON file the test reads, as a value or any deserialisable type.
pub fn read_json<T: serde::de::DeserializeOwned>(path: impl AsRef<Path>) -> T {
    let path = path.as_ref();
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The all-MiniLM-L6-v2 folder (`ADFIT_MINILM_DIR`, else the asset cache).
pub fn minilm_dir() -> PathBuf {
    let dir = std::env::var("ADFIT_MINILM_DIR").map(PathBuf::from).unwrap_or_else(|_| {
        let assets = std::env::var("ADFIT_ASSETS")
            .map(PathBuf::from)
            .unwrap_or_else(|_| PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cache/adfit-assets"));
        assets.join("all-MiniLM-L6-v2")
    });
    assert!(
        dir.join("model.safetensors").exists(),
        "all-MiniLM-L6-v2 not found in {}: run `bash scripts/fetch_minilm.sh` (scripts/test.sh does)",
        dir.display()
    );
    dir
}

/// The real uncased BERT vocabulary.
pub fn vocab() -> PathBuf {
    minilm_dir().join("vocab.txt")
}

/// A tiny random backbone in M3D-CLIP's layout (ViT 16×32×32-ready, 1-layer BERT of width 32).
pub fn tiny_backbone(dir: &Path) {
    tiny_backbone_with(dir, &Vit3dConfig::tiny());
}

/// As [`tiny_backbone`], with the ViT of `vit`.
pub fn tiny_backbone_with(dir: &Path, vit: &Vit3dConfig) {
    let device = Default::default();
    let text = BertConfig::tiny();
    let model = ClipBackbone::<adfit::backend::Cpu>::from_towers(
        Vit3d::init(vit, &device).unwrap(),
        Bert::init(&text, &device).unwrap(),
        64,
        &device,
    );
    let config = BackboneConfig::from_towers(vit, text, "tiny-random-bert", 256, 64);
    save(dir, &model, &config, Some(&vocab()), TextWeights::Embedded).unwrap();
}

/// In `d`: a tiny backbone (`backbone/`), the tiny synthetic cohort for `seed` (`demo/`),
/// preprocessed to 16×32×32 (`cache/`), and a 3-fold split (`split.csv`).
pub fn setup(d: &Path, seed: &str) {
    setup_with(d, seed, &[]);
}

/// As [`setup`], with more `synth` flags (e.g. `--labels`).
pub fn setup_with(d: &Path, seed: &str, synth_flags: &[&str]) {
    tiny_backbone(&d.join("backbone"));
    ok(d, &[&["synth", "--out", "demo", "--preset", "tiny", "--seed", seed][..], synth_flags].concat());
    ok(d, &preprocess_args("cache", "16,32,32"));
    ok(d, &["split", "--index", "cache/index.csv", "--out", "split.csv", "--folds", "3", "--seed", "1"]);
}

/// `adfit pretrain` flags for a tiny phantom backbone in seconds (4 steps).
pub const TINY_PRETRAIN: [&str; 18] = [
    "--corpus",
    "phantoms",
    "--grid",
    "16,32,32",
    "--patch",
    "4,16,16",
    "--hidden",
    "32",
    "--layers",
    "1",
    "--text-layers",
    "1",
    "--steps",
    "4",
    "--batch-size",
    "4",
    "--seed",
    "3",
];

/// `adfit preprocess` of the synthetic ADNI-like cohort of [`setup`] into `out` at `shape`.
pub fn preprocess_args<'a>(out: &'a str, shape: &'a str) -> Vec<&'a str> {
    vec![
        "preprocess",
        "--scans",
        "demo/adni/scans.csv",
        "--table",
        "demo/adni/ADNIMERGE.csv",
        "--out",
        out,
        "--shape",
        shape,
    ]
}

/// The first scan id of `setup`'s cache index.
pub fn first_scan(d: &Path) -> String {
    let index = std::fs::read_to_string(d.join("cache/index.csv")).unwrap();
    index.lines().nth(1).unwrap().split(',').next().unwrap().to_string()
}

/// The class probabilities of a `predictions.csv` (`p_*` columns), by scan.
fn probabilities(path: &Path) -> std::collections::BTreeMap<String, Vec<f64>> {
    let mut csv = csv::Reader::from_path(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let header = csv.headers().unwrap().clone();
    let p: Vec<usize> = (0..header.len()).filter(|&i| header[i].starts_with("p_")).collect();
    csv.records()
        .map(|r| {
            let r = r.unwrap();
            (r[0].to_string(), p.iter().map(|&i| r[i].parse::<f64>().unwrap()).collect())
        })
        .collect()
}

/// Two scorings of the same scans by the same model agree: every probability within `tol`, and
/// the predicted class the same unless the first scoring's top two classes are within `2·tol`
/// (a near-tie that a rounding difference between two summation orders may flip, as merged
/// LoRA weights or another CPU's SIMD width do).
pub fn same_predictions(a: &Path, b: &Path, tol: f64) {
    let (pa, pb) = (probabilities(a), probabilities(b));
    assert_eq!(pa.keys().collect::<Vec<_>>(), pb.keys().collect::<Vec<_>>(), "{} vs {}", a.display(), b.display());
    let argmax = |p: &[f64]| (0..p.len()).fold(0, |m, c| if p[c] > p[m] { c } else { m });
    let mut worst = 0f64;
    for (scan, x) in &pa {
        let y = &pb[scan];
        worst = x.iter().zip(y).fold(worst, |w, (u, v)| w.max((u - v).abs()));
        let (bx, by) = (argmax(x), argmax(y));
        if bx != by {
            assert!((x[bx] - x[by]).abs() <= 2.0 * tol, "{scan}: class {bx} vs {by} at {x:?} vs {y:?}");
        }
    }
    println!("{} vs {}: probabilities within {worst:e}", a.display(), b.display());
    assert!(worst <= tol, "{} vs {}: probabilities differ by {worst:e}", a.display(), b.display());
}

/// A stored tensor on `device`.
pub fn tensor<B: burn::prelude::Backend, const D: usize>(
    t: &adfit::model::weights::RawTensor,
    device: &B::Device,
) -> burn::prelude::Tensor<B, D> {
    let shape: [usize; D] = t.shape.clone().try_into().unwrap();
    burn::prelude::Tensor::from_data(burn::tensor::TensorData::new(t.data.clone(), shape), device)
}

/// The largest absolute difference between `got` and a stored reference of the same shape.
pub fn max_abs<B: burn::prelude::Backend, const D: usize>(
    got: burn::prelude::Tensor<B, D>,
    want: &adfit::model::weights::RawTensor,
    what: &str,
) -> f32 {
    assert_eq!(got.dims().to_vec(), want.shape, "{what}: shape");
    let g: Vec<f32> = got.into_data().convert::<f32>().to_vec().unwrap();
    g.iter().zip(&want.data).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max)
}
