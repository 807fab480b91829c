//! Med3DVLM's CLIP against its reference (`scripts/generate_reference.py` fixture 10: a small
//! random DCFormer written from Med3DVLM's `dcformer.py`, with BatchNorm running statistics, a
//! small random HF `DistilBertModel` and the projections, in the backbone directory
//! `tests/fixtures/backbones/med3dvlm-tiny`), loaded strictly.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use adfit::model::backbones::med3dvlm::{load_model, read_config, Med3dvlmBackbone, KEY_TABLE};
use adfit::model::weights::{read_safetensors, RawTensor, WeightStore};
use burn::prelude::*;
use burn::tensor::TensorData;

fn backbone_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/backbones/med3dvlm-tiny")
}

fn reference() -> BTreeMap<String, RawTensor> {
    read_safetensors(&Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/model/med3dvlm.safetensors")).unwrap()
}

/// The fixture's volume (too large to store): sin(0.0137·i) + cos(0.00071·i) over the flat index,
/// in f64, rounded to f32, as the generator computes it.
fn input<B: Backend>(device: &B::Device) -> Tensor<B, 5> {
    let shape = [2, 1, 64, 128, 64];
    let n: usize = shape.iter().product();
    let data: Vec<f32> = (0..n).map(|i| ((0.0137 * i as f64).sin() + (0.00071 * i as f64).cos()) as f32).collect();
    Tensor::from_data(TensorData::new(data, shape), device)
}

fn max_abs<B: Backend, const D: usize>(got: Tensor<B, D>, want: &RawTensor, what: &str) -> f32 {
    assert_eq!(got.dims().to_vec(), want.shape, "{what}: shape");
    let g: Vec<f32> = got.into_data().convert::<f32>().to_vec().unwrap();
    g.iter().zip(&want.data).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max)
}

fn ints<B: Backend>(t: &RawTensor, device: &B::Device) -> Tensor<B, 2, Int> {
    let data: Vec<i64> = t.data.iter().map(|&v| v as i64).collect();
    Tensor::from_data(TensorData::new(data, [t.shape[0], t.shape[1]]), device)
}

/// Max abs error over every stage, both towers' embeddings and the logits; panics past 1e-4.
fn parity<B: Backend>(device: &B::Device) -> f32 {
    let f = reference();
    let b = Med3dvlmBackbone::<B>::load(&backbone_dir(), device).unwrap();
    let m = &b.model;
    let x = input::<B>(device);
    let stages = m.vision.forward(x.clone());
    assert_eq!(stages.len(), 5);
    let mut worst = 0f32;
    for (s, t) in stages.into_iter().enumerate().skip(1) {
        worst = worst.max(max_abs(t, &f[&format!("out.stage.{s}")], &format!("stage {s}")));
    }
    let image = m.encode_image(x);
    worst = worst.max(max_abs(image.clone(), &f["out.image_embedding"], "image embedding"));
    let (ids, mask) = (ints::<B>(&f["input.ids"], device), ints::<B>(&f["input.mask"], device).float());
    let (last, _) = m.text.forward(ids.clone(), mask.clone(), false);
    // Padded positions differ (HF fills their scores with the dtype's minimum): compare the rest.
    let keep = |t: Tensor<B, 3>| t * mask.clone().unsqueeze_dim::<3>(2);
    let want = &f["out.text_last"];
    let masked_want: Vec<f32> =
        want.data.iter().enumerate().map(|(i, v)| v * f["input.mask"].data[i / want.shape[2]]).collect();
    let masked_want = RawTensor { shape: want.shape.clone(), data: masked_want };
    worst = worst.max(max_abs(keep(last), &masked_want, "DistilBERT last hidden state"));
    let text = m.encode_text(ids, mask);
    worst = worst.max(max_abs(text.clone(), &f["out.text_embedding"], "text embedding"));
    worst = worst.max(max_abs(m.logits(image, text), &f["out.logits"], "SigLIP logits"));
    assert!(worst <= 1e-4, "max abs error {worst}");
    worst
}

#[test]
fn med3dvlm_matches_the_reference() {
    let worst = parity::<adfit::backend::Cpu>(&Default::default());
    println!("Med3DVLM on cpu: max abs error {worst:.1e} against PyTorch");
}

#[cfg(feature = "wgpu")]
#[test]
fn med3dvlm_matches_the_reference_on_wgpu() {
    let worst = parity::<burn::backend::Wgpu>(&Default::default());
    println!("Med3DVLM on wgpu: max abs error {worst:.1e} against PyTorch");
}

#[test]
fn a_broken_med3dvlm_checkpoint_is_refused_naming_each_key() {
    let mut t = read_safetensors(&backbone_dir().join("model.safetensors")).unwrap();
    t.remove("vision_encoder.encoder.s3.0.dwconv.c2.1.running_var");
    t.insert(
        "language_encoder.transformer.layer.1.ffn.lin1.weight".into(),
        RawTensor { shape: vec![16, 16], data: vec![0.0; 256] },
    );
    t.insert("vision_encoder.encoder.s5.0.scale".into(), RawTensor { shape: vec![1], data: vec![0.0] });
    let config = read_config(&backbone_dir()).unwrap();
    let mut store =
        WeightStore::<adfit::backend::Cpu>::new(Path::new("med3dvlm-tiny"), t, KEY_TABLE, &Default::default());
    let _ = load_model(&config, &mut store).unwrap();
    let msg = store.finish().unwrap_err().to_string();
    assert!(msg.contains("missing key vision_encoder.encoder.s3.0.dwconv.c2.1.running_var"), "{msg}");
    assert!(
        msg.contains("key language_encoder.transformer.layer.1.ffn.lin1.weight has shape [16, 16], expected [32, 16]"),
        "{msg}"
    );
    assert!(msg.contains("unexpected key vision_encoder.encoder.s5.0.scale"), "{msg}");
    assert!(msg.contains("3 problem(s)"), "{msg}");
}

/// `adfit embed` on a Med3DVLM directory: the model's own embeddings, its SigLIP logits, and the
/// last stage's tokens.
#[test]
fn embed_reads_a_med3dvlm_directory() {
    use adfit::data::nifti_write::{write_nifti, OutType};
    use adfit::data::volume::{identity, Volume};
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let shape = [32, 64, 64];
    let data: Vec<f32> = (0..shape.iter().product::<usize>()).map(|i| ((i % 97) as f32 / 97.0) - 0.5).collect();
    write_nifti(&d.join("v.nii.gz"), &Volume { shape, data: data.clone(), affine: identity() }, OutType::Float32)
        .unwrap();
    let backbone = backbone_dir();
    let args = ["embed", "--backbone", backbone.to_str().unwrap(), "--volume", "v.nii.gz", "--text", "a photo of ad."];
    common::ok(d, &[&args[..], &["--out", "e.json", "--tokens", "t.json"]].concat());
    let e: serde_json::Value = common::read_json(d.join("e.json"));
    let t: serde_json::Value = common::read_json(d.join("t.json"));
    // 32×64×64 read as (H, W, D) = 64×64×32: /4, then /2 four times → 1×1×1, 24 channels.
    assert_eq!(t["shape"], serde_json::json!([1, 1, 24]));
    assert_eq!(t["cls_first"], false);
    let device = Default::default();
    let b = Med3dvlmBackbone::<adfit::backend::Cpu>::load(&backbone_dir(), &device).unwrap();
    let x = Tensor::<adfit::backend::Cpu, 5>::from_data(TensorData::new(data, [1, 1, 32, 64, 64]), &device);
    let want: Vec<f32> = b.model.encode_image(x).into_data().to_vec().unwrap();
    let got: Vec<f32> =
        e["image_embeddings"][0].as_array().unwrap().iter().map(|v| v.as_f64().unwrap() as f32).collect();
    assert_eq!(got, want);
    assert_eq!(e["logit_scale"].as_f64().map(|v| v as f32), Some((1.0f32 / 0.07).ln()));
}
