//! RadFM's ViT against its reference (`scripts/generate_reference.py` fixture 9: a small random
//! ViT in RadFM's layout, written from RadFM's public code), its checkpoint loaded strictly, and
//! the method end to end on a RadFM-layout backbone (`tests/fixtures/backbones/radfm-tiny`, made
//! by `scripts/extract_radfm.py`; its text tower is the fetched all-MiniLM-L6-v2).

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use adfit::model::backbones::m3d::{read_config, Backbone, KEY_TABLE};
use adfit::model::vit3d::{PosEmbedPolicy, Vit3d};
use adfit::model::weights::{read_safetensors, RawTensor, WeightStore};
use burn::prelude::*;
use burn::tensor::TensorData;
use common::{max_abs, ok, tensor};

fn backbone_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/backbones/radfm-tiny")
}

fn reference() -> BTreeMap<String, RawTensor> {
    read_safetensors(&Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/model/radfm.safetensors")).unwrap()
}

/// The ViT of the fixture backbone, loaded strictly from `tensors` (its `vision_encoder.*`), for
/// the reference input's 16³ grid.
fn load_vit<B: Backend>(tensors: BTreeMap<String, RawTensor>, device: &B::Device) -> (Vit3d<B>, adfit::Result<()>) {
    let config = read_config(&backbone_dir()).unwrap();
    let mut cfg = config.vit();
    cfg.img_size = [16, 16, 16];
    let tensors = tensors.into_iter().filter(|(k, _)| k.starts_with("vision_encoder.")).collect();
    let store = WeightStore::<B>::new(Path::new("radfm-tiny"), tensors, KEY_TABLE, device);
    let vit = Vit3d::load(&cfg, &store, "vit.", config.vit().grid().unwrap(), PosEmbedPolicy::Reinterpret).unwrap();
    (vit, store.finish())
}

/// Max abs error of every reference activation; panics past 1e-4.
fn parity<B: Backend>(device: &B::Device) -> f32 {
    let f = reference();
    let (vit, loaded) = load_vit::<B>(read_safetensors(&backbone_dir().join("model.safetensors")).unwrap(), device);
    loaded.unwrap();
    let x: Tensor<B, 5> = tensor(&f["input.volume"], device);
    let mut worst = max_abs(vit.patchify(x.clone()), &f["out.patches"], "patches");
    let (last, hidden) = vit.forward(x, true);
    assert_eq!(hidden.len(), 3);
    for (l, h) in hidden.into_iter().enumerate() {
        worst = worst.max(max_abs(h, &f[&format!("out.hidden_states.{l}")], &format!("hidden state {l}")));
    }
    // No final norm: the output is the last block's.
    worst = worst.max(max_abs(last.clone(), &f["out.hidden_states.2"], "output"));
    worst = worst.max(max_abs(vit.pooled(last), &f["out.pooled"], "pooled"));
    assert!(worst <= 1e-4, "max abs error {worst}");
    worst
}

#[test]
fn radfm_vit_matches_the_reference() {
    let worst = parity::<adfit::backend::Cpu>(&Default::default());
    println!("RadFM ViT on cpu: max abs error {worst:.1e} against PyTorch");
}

#[cfg(feature = "wgpu")]
#[test]
fn radfm_vit_matches_the_reference_on_wgpu() {
    let worst = parity::<burn::backend::Wgpu>(&Default::default());
    println!("RadFM ViT on wgpu: max abs error {worst:.1e} against PyTorch");
}

/// The fetched all-MiniLM-L6-v2 (the fixture backbone's text tower) where adfit looks for text
/// models, for this process and the binaries it runs.
fn find_minilm() {
    std::env::set_var("ADFIT_TEXT_MODELS", common::minilm_dir().parent().unwrap());
}

#[test]
fn the_radfm_backbone_embeds_as_the_reference() {
    find_minilm();
    let f = reference();
    let device = Default::default();
    let b = Backbone::<adfit::backend::Cpu>::load(
        &backbone_dir(),
        Some([16, 16, 16]),
        PosEmbedPolicy::Reinterpret,
        &device,
    )
    .unwrap();
    let x: Tensor<adfit::backend::Cpu, 5> = tensor(&f["input.volume"], &device);
    let err = max_abs(b.model.encode_image(x), &f["out.image_embedding"], "image embedding");
    assert!(err <= 1e-5, "image embedding: max abs error {err}");
}

#[test]
fn a_broken_radfm_checkpoint_is_refused_naming_each_key() {
    let mut t = read_safetensors(&backbone_dir().join("model.safetensors")).unwrap();
    t.remove("vision_encoder.transformer.layers.1.1.fn.net.3.bias");
    t.insert(
        "vision_encoder.transformer.layers.0.0.fn.to_out.0.weight".into(),
        RawTensor { shape: vec![48, 48], data: vec![0.0; 48 * 48] },
    );
    t.insert("vision_encoder.pos_embedding.extra".into(), RawTensor { shape: vec![1], data: vec![0.0] });
    let (_, loaded) = load_vit::<adfit::backend::Cpu>(t, &Default::default());
    let msg = loaded.unwrap_err().to_string();
    assert!(msg.contains("missing key vision_encoder.transformer.layers.1.1.fn.net.3.bias"), "{msg}");
    assert!(
        msg.contains(
            "key vision_encoder.transformer.layers.0.0.fn.to_out.0.weight has shape [48, 48], expected [48, 32]"
        ),
        "{msg}"
    );
    assert!(msg.contains("unexpected key vision_encoder.pos_embedding.extra"), "{msg}");
    assert!(msg.contains("3 problem(s)"), "{msg}");
}

/// The method, LoRA in place of the prompts, and the frozen-feature probe on a RadFM-layout
/// backbone: `finetune`, `eval` (the test fold scored alike), `params` and `embed`.
#[test]
fn finetune_and_eval_run_on_a_radfm_backbone() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    find_minilm();
    common::setup(d, "7");
    let backbone = backbone_dir();
    let backbone = backbone.to_str().unwrap();
    let data = ["--index", "cache/index.csv", "--split", "split.csv", "--fold", "0"];
    for (run, extra) in [
        ("method", &[][..]),
        ("lora", &["--no-visual-prompts", "--adaptation", "lora"][..]),
        ("adapter", &["--no-visual-prompts", "--adaptation", "adapter"][..]),
        ("perceiver", &["--no-visual-prompts", "--adaptation", "perceiver-lora"][..]),
    ] {
        let mut args = vec!["finetune", "--backbone", backbone];
        args.extend(data);
        args.extend(["--epochs", "1", "--batch-size", "4", "--seed", "3", "--out", run]);
        args.extend(extra);
        ok(d, &args);
        let ev = format!("{run}-eval");
        let mut args = vec!["eval", "--backbone", backbone, "--run", run];
        args.extend(data);
        args.extend(["--out", &ev]);
        ok(d, &args);
        common::same_predictions(&d.join(run).join("test_predictions.csv"), &d.join(&ev).join("predictions.csv"), 1e-4);
    }
    // Grad-ECLIP maps of RadFM's tokens (which run H, W, D) land on the volume's (D, H, W) grid.
    let mut args = vec!["attribute", "--backbone", backbone, "--run", "method"];
    args.extend(data);
    args.extend(["--limit", "1", "--steps", "8", "--out", "attr"]);
    ok(d, &args);
    let maps: Vec<_> = std::fs::read_dir(d.join("attr/maps")).unwrap().map(|e| e.unwrap().path()).collect();
    let map = adfit::data::nifti_io::read_nifti(&maps[0].join("hippocampal-volume.nii.gz")).unwrap().volume;
    assert_eq!(map.shape, [16, 32, 32]);
    assert!(map.data.iter().all(|v| v.is_finite() && *v >= 0.0));
    let params = ok(d, &["params", "--backbone", backbone]);
    assert!(params.contains("backbone CLS token"), "RadFM's CLS is adfit's and trains: {params}");
    // One scan at the cache's grid, as NIfTI.
    let images = std::fs::read_dir(d.join("demo/adni/images")).unwrap();
    let mut images: Vec<PathBuf> = images.map(|e| e.unwrap().path()).collect();
    images.sort();
    ok(d, &["convert", images[0].to_str().unwrap(), "one.nii.gz", "--resize", "16,32,32", "--normalize", "zscore"]);
    let args = ["--backbone", backbone, "--volume", "one.nii.gz", "--text", "A photo of AD."];
    ok(d, &[&["embed"][..], &args, &["--out", "e.json", "--tokens", "tokens.json"]].concat());
    let tokens: serde_json::Value = common::read_json(d.join("tokens.json"));
    // 16×32×32 in 4×8×8 patches: 64 patch tokens of width 48, no CLS.
    assert_eq!(tokens["shape"], serde_json::json!([1, 64, 48]));
    assert_eq!(tokens["cls_first"], false);
    let e: serde_json::Value = common::read_json(d.join("e.json"));
    assert_eq!(e["image_embeddings"][0].as_array().map(Vec::len), Some(32));
}

/// RadFM read at half its in-plane patch (FlexiViT-style: `patch_size` 4×4×4 in `config.json`,
/// the checkpoint's 4×8×8 embedding resampled when loaded) on a volume agrees with RadFM at its
/// own patch on that volume upsampled 2× in-plane: the same token grid, the patch embedding exact
/// but for the LayerNorm's statistics (those of the small patch, not of its upsampled copy).
#[test]
fn a_resampled_patch_reads_a_volume_as_the_native_patch_reads_it_upsampled() {
    use adfit::data::resample::resize;
    use adfit::data::volume::{identity, Volume};
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("radfm-4x4x4");
    std::fs::create_dir(&dir).unwrap();
    std::fs::copy(backbone_dir().join("model.safetensors"), dir.join("model.safetensors")).unwrap();
    let mut cfg: serde_json::Value = common::read_json(backbone_dir().join("config.json"));
    cfg["checkpoint_patch_size"] = serde_json::json!([4, 8, 8]);
    cfg["patch_size"] = serde_json::json!([4, 4, 4]);
    cfg["img_size"] = serde_json::json!([32, 16, 16]);
    std::fs::write(dir.join("config.json"), cfg.to_string()).unwrap();
    let device = Default::default();
    type C = adfit::backend::Cpu;
    // Smooth volumes, as MRI is at the scale of a patch (white noise would change its variance
    // when upsampled, and with it the LayerNorm's statistics).
    let smooth = |b: usize| -> Vec<f32> {
        (0..16 * 16 * 16)
            .map(|i| {
                let (d, h, w) = ((i / 256) as f32, (i / 16 % 16) as f32, (i % 16) as f32);
                (0.3 * d + b as f32).sin() + (0.25 * h).cos() * (0.2 * w + 0.5 * b as f32).sin() + 0.05 * h
            })
            .collect()
    };
    // Bilinear 4 → 8 (align_corners = false) inside each 4×4 in-plane patch: the model the
    // resampling is exact for; and the whole volume resized, where patch edges see neighbours.
    let taps = |o: usize| -> [(usize, f32); 2] {
        let src = ((o as f32 + 0.5) * 0.5 - 0.5).max(0.0);
        let i0 = src.floor() as usize;
        let i1 = (i0 + 1).min(3);
        [(i0, 1.0 - (src - i0 as f32)), (i1, src - i0 as f32)]
    };
    let mut small = Vec::new();
    let (mut per_patch, mut whole) = (Vec::new(), Vec::new());
    for b in 0..2 {
        let vol = Volume { shape: [16, 16, 16], data: smooth(b), affine: identity() };
        whole.extend(resize(&vol, [16, 32, 32]).unwrap().data);
        for d in 0..16 {
            for hh in 0..32 {
                for ww in 0..32 {
                    let mut v = 0.0;
                    for (i, a) in taps(hh % 8) {
                        for (j, c) in taps(ww % 8) {
                            v += a * c * vol.data[(d * 16 + hh / 8 * 4 + i) * 16 + ww / 8 * 4 + j];
                        }
                    }
                    per_patch.push(v);
                }
            }
        }
        small.extend(vol.data);
    }
    let small = Tensor::<C, 5>::from_data(TensorData::new(small, [2, 1, 16, 16, 16]), &device);
    let vit = |dir: &Path, grid: [usize; 3]| {
        let config = read_config(dir).unwrap();
        let mut cfg = config.vit();
        cfg.img_size = grid;
        let tensors = read_safetensors(&dir.join("model.safetensors")).unwrap();
        let tensors = tensors.into_iter().filter(|(k, _)| k.starts_with("vision_encoder.")).collect();
        let store = WeightStore::<C>::new(dir, tensors, KEY_TABLE, &device);
        let v = Vit3d::load(&cfg, &store, "vit.", config.vit().grid().unwrap(), PosEmbedPolicy::Reinterpret).unwrap();
        store.finish().unwrap();
        v
    };
    let resampled = vit(&dir, [16, 16, 16]);
    let native = vit(&backbone_dir(), [16, 32, 32]);
    let (a, ha) = resampled.forward(small, true);
    let big = |v: Vec<f32>| Tensor::<C, 5>::from_data(TensorData::new(v, [2, 1, 16, 32, 32]), &device);
    let (w, hw) = native.forward(big(whole), true);
    let (b, hb) = native.forward(big(per_patch), true);
    let rel = |a: Tensor<C, 3>, b: Tensor<C, 3>| -> f32 {
        let scale = b.clone().abs().max().into_scalar();
        (a - b).abs().max().into_scalar() / scale
    };
    let embedded = rel(ha[0].clone(), hb[0].clone());
    let output = rel(a.clone(), b.clone());
    let cos = {
        let (pa, pb) = (resampled.pooled(a.clone()), native.pooled(b));
        let dot = (pa.clone() * pb.clone()).sum_dim(1);
        let n = (pa.clone() * pa).sum_dim(1).sqrt() * (pb.clone() * pb).sum_dim(1).sqrt();
        (dot / n).min().into_scalar()
    };
    let (whole_embedded, whole_output) = (rel(ha[0].clone(), hw[0].clone()), rel(a.clone(), w));
    println!(
        "resampled vs native on patches upsampled in place: embedded tokens {embedded:.1e}, output {output:.1e} of \
         the largest value, pooled cosine {cos:.5}; on the volume upsampled whole: {whole_embedded:.1e}, {whole_output:.1e}"
    );
    assert!(embedded < 0.02 && output < 0.05 && cos > 0.999, "{embedded} {output} {cos}");
}

/// A config.json whose img_size / patch_size do not span the checkpoint's position tables is
/// refused by name, not as a mis-shaped key.
#[test]
fn an_img_size_that_does_not_span_the_tables_is_named() {
    find_minilm();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("radfm");
    std::fs::create_dir(&dir).unwrap();
    std::fs::copy(backbone_dir().join("model.safetensors"), dir.join("model.safetensors")).unwrap();
    let mut cfg: serde_json::Value = common::read_json(backbone_dir().join("config.json"));
    cfg["img_size"] = serde_json::json!([16, 16, 16]);
    std::fs::write(dir.join("config.json"), cfg.to_string()).unwrap();
    let e = Backbone::<adfit::backend::Cpu>::load(&dir, None, PosEmbedPolicy::Reinterpret, &Default::default())
        .err()
        .expect("refused")
        .to_string();
    assert!(e.contains("img_size must span") && e.contains("dep_embed"), "{e}");
}
