//! Med3DVLM's CLIP against its reference (`scripts/generate_reference.py` fixture 10: a small
//! random DCFormer written from Med3DVLM's `dcformer.py`, with BatchNorm running statistics, a
//! small random HF `DistilBertModel` and the projections, in the backbone directory
//! `tests/fixtures/backbones/med3dvlm-tiny`), loaded strictly.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use adfit::model::backbones::m3d::Backbone;
use adfit::model::backbones::med3dvlm::{load_model, read_config, KEY_TABLE};
use adfit::model::vit3d::PosEmbedPolicy;
use adfit::model::weights::{read_safetensors, RawTensor, WeightStore};
use burn::prelude::*;
use burn::tensor::TensorData;
use common::max_abs;

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

fn ints<B: Backend>(t: &RawTensor, device: &B::Device) -> Tensor<B, 2, Int> {
    let data: Vec<i64> = t.data.iter().map(|&v| v as i64).collect();
    Tensor::from_data(TensorData::new(data, [t.shape[0], t.shape[1]]), device)
}

/// The worst error over every stage (relative to its largest value), both towers' embeddings,
/// the text states and the logits (absolute); panics past 1e-4.
fn parity<B: Backend>(device: &B::Device) -> f32 {
    let f = reference();
    let b = Backbone::<B>::load(&backbone_dir(), Some([64, 128, 64]), PosEmbedPolicy::Reinterpret, device).unwrap();
    let m = &b.model;
    let x = input::<B>(device);
    let stages = m.vit.cnn.as_ref().expect("DCFormer").forward(x.clone());
    assert_eq!(stages.len(), 5);
    // The random stages' activations reach ~30: their error is taken relative to their largest
    // value; embeddings, text states and logits (order 1) absolutely.
    let mut worst = 0f32;
    for (s, t) in stages.into_iter().enumerate().skip(1) {
        let want = &f[&format!("out.stage.{s}")];
        let scale = want.data.iter().fold(1f32, |m, v| m.max(v.abs()));
        let err = max_abs(t, want, &format!("stage {s}"));
        println!("stage {s}: max abs error {err:.1e}, {:.1e} of its largest value {scale:.1}", err / scale);
        worst = worst.max(err / scale);
    }
    let image = m.encode_image(x);
    worst = worst.max(max_abs(image.clone(), &f["out.image_embedding"], "image embedding"));
    let (ids, mask) = (ints::<B>(&f["input.ids"], device), ints::<B>(&f["input.mask"], device).float());
    let (last, _) = m.bert.forward(ids.clone(), mask.clone(), false);
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
    println!("Med3DVLM on cpu: worst error {worst:.1e} against PyTorch");
}

#[cfg(feature = "wgpu")]
#[test]
fn med3dvlm_matches_the_reference_on_wgpu() {
    let worst = parity::<burn::backend::Wgpu>(&Default::default());
    println!("Med3DVLM on wgpu: worst error {worst:.1e} against PyTorch");
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
    let b = Backbone::<adfit::backend::Cpu>::load(&backbone_dir(), Some(shape), PosEmbedPolicy::Reinterpret, &device)
        .unwrap();
    let x = Tensor::<adfit::backend::Cpu, 5>::from_data(TensorData::new(data, [1, 1, 32, 64, 64]), &device);
    let want: Vec<f32> = b.model.encode_image(x).into_data().to_vec().unwrap();
    let got: Vec<f32> =
        e["image_embeddings"][0].as_array().unwrap().iter().map(|v| v.as_f64().unwrap() as f32).collect();
    assert_eq!(got, want);
    assert_eq!(e["logit_scale"].as_f64().map(|v| v as f32), Some((1.0f32 / 0.07).ln()));
    // SigLIP's logit: the cosine times t_prime, plus the fixture's bias (−1.5).
    let text: Vec<f64> = e["text_embeddings"][0].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
    let cos: f64 = got.iter().zip(&text).map(|(a, b)| *a as f64 * b).sum();
    let logit = e["logits"][0][0].as_f64().unwrap();
    assert!((logit - (cos * (1.0f64 / 0.07).ln() - 1.5)).abs() < 1e-5, "{logit} vs cosine {cos}");
}

/// The method on Med3DVLM: CLS, [MMSE] and the prompts in a trainable block after DCFormer's last
/// stage. `finetune` and `eval` (the test fold scored alike), zero-shot `eval`, `params`; LoRA and
/// attribution refused by name.
#[test]
fn finetune_and_eval_run_on_a_med3dvlm_backbone() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    common::setup(d, "8");
    let backbone = backbone_dir();
    let backbone = backbone.to_str().unwrap();
    let data = ["--index", "cache/index.csv", "--split", "split.csv", "--fold", "0"];
    let run = |extra: &[&str]| -> Vec<String> {
        let mut a = vec!["finetune", "--backbone", backbone];
        a.extend(data);
        a.extend(["--epochs", "2", "--batch-size", "4", "--seed", "3"]);
        a.extend(extra);
        a.iter().map(|s| s.to_string()).collect()
    };
    let ok = |a: Vec<String>| common::ok(d, &a.iter().map(String::as_str).collect::<Vec<_>>());
    let fails = |a: Vec<String>| common::fails(d, &a.iter().map(String::as_str).collect::<Vec<_>>());
    ok(run(&["--out", "method"]));
    let mut ev = vec!["eval", "--backbone", backbone, "--run", "method"];
    ev.extend(data);
    common::ok(d, &[&ev[..], &["--out", "method-eval"]].concat());
    common::same_predictions(&d.join("method/test_predictions.csv"), &d.join("method-eval/predictions.csv"), 1e-5);
    let trained = adfit::model::weights::read_safetensors(&d.join("method/best.safetensors")).unwrap();
    assert!(
        trained.contains_key("adfit.mixer.0.attn.qkv.weight") && trained.contains_key("adfit.cls_token"),
        "{:?}",
        trained.keys()
    );
    // Zero-shot: Med3DVLM's own embeddings and SigLIP temperature.
    let mut zs = vec!["eval", "--backbone", backbone];
    zs.extend(data);
    common::ok(d, &[&zs[..], &["--out", "zero-shot"]].concat());
    let params = common::ok(d, &["params", "--backbone", backbone, "--json"]);
    let v: serde_json::Value = serde_json::from_str(&params).unwrap();
    let mixer = v["groups"].as_array().unwrap().iter().find(|g| g["group"] == "token mixer (CNN tower)").unwrap();
    // One block of width 24 (MLP ×4) and its final norm.
    assert_eq!(mixer["params"], 24 * 72 + (24 * 24 + 24) + (24 * 96 + 96) + (96 * 24 + 24) + 4 * 24 + 2 * 24);
    // Full fine-tuning of DCFormer: resumes to the bit, BatchNorm statistics kept, eval agrees.
    let full = |out: &str, epochs: &str| {
        let mut a = run(&["--out", out, "--no-visual-prompts", "--adaptation", "full"]);
        let at = a.iter().position(|x| x == "--epochs").unwrap();
        a[at + 1] = epochs.into();
        a
    };
    ok(full("full", "2"));
    ok(full("part", "1"));
    let mut resume = full("part", "2");
    resume.push("--resume".into());
    ok(resume);
    for file in ["checkpoint-1/trainable.safetensors", "best.safetensors", "metrics.csv"] {
        assert_eq!(
            std::fs::read(d.join("full").join(file)).unwrap(),
            std::fs::read(d.join("part").join(file)).unwrap(),
            "{file}"
        );
    }
    let saved = adfit::model::weights::read_safetensors(&d.join("full/checkpoint-1/trainable.safetensors")).unwrap();
    let released = adfit::model::weights::read_safetensors(&backbone_dir().join("model.safetensors")).unwrap();
    let key = |n: &str| {
        saved.keys().find(|k| k.ends_with(&format!("vit.cnn.{n}"))).unwrap_or_else(|| panic!("{n}: {:?}", saved.keys()))
    };
    let (stat, weight) = ("s2.1.dwconv.c3.1.running_var", "s2.1.mlp.mlp.0.weight");
    assert_eq!(saved[key(stat)].data, released[&format!("vision_encoder.encoder.{stat}")].data, "statistics kept");
    assert_ne!(saved[key(weight)].data, released[&format!("vision_encoder.encoder.{weight}")].data, "the CNN trains");
    let mut ev = vec!["eval", "--backbone", backbone, "--run", "full"];
    ev.extend(data);
    common::ok(d, &[&ev[..], &["--out", "full-eval"]].concat());
    common::same_predictions(&d.join("full/test_predictions.csv"), &d.join("full-eval/predictions.csv"), 1e-5);
    let refused = fails(run(&["--out", "lora", "--adaptation", "lora"]));
    assert!(refused.contains("CNN") && refused.contains("Lora"), "{refused}");
    assert!(!d.join("lora").exists(), "a refused run leaves no folder");
    let mut at = vec!["attribute", "--backbone", backbone, "--run", "method"];
    at.extend(data);
    let refused = common::fails(d, &[&at[..], &["--out", "attr"]].concat());
    assert!(refused.contains("DCFormer"), "{refused}");
}

/// On DCFormer the method's loss reaches what it trains: the mixer's blocks and norm, the CLS
/// token, the prompts and the [MMSE] token; the CNN gets no gradient.
#[test]
fn the_method_trains_its_parts_on_a_cnn_tower() {
    use adfit::model::backbones::m3d::Backbone;
    use adfit::model::method::AdClip;
    use adfit::model::vit3d::PosEmbedPolicy;
    type AD = burn::backend::Autodiff<adfit::backend::Cpu>;
    let device = Default::default();
    let b = Backbone::<AD>::load(&backbone_dir(), Some([16, 32, 32]), PosEmbedPolicy::Reinterpret, &device).unwrap();
    let cfg = adfit::settings::RunSettings::default().method(b.model.vit.hidden_size()).unwrap();
    let m = AdClip::new(b.model, &cfg, &device);
    let n = 2 * 16 * 32 * 32;
    let x = Tensor::<AD, 5>::from_data(
        TensorData::new((0..n).map(|i| ((i % 13) as f32 - 6.0) / 6.0).collect::<Vec<_>>(), [2, 1, 16, 32, 32]),
        &device,
    );
    let texts = ["a photo of nc. 3.1 and 41".to_string(), "a photo of ad. 2.2 and 60".to_string()];
    let (ids, mask) = adfit::model::tokenizer::tokenize::<AD>(&b.tokenizer, &texts, &device).unwrap();
    let image = m.encode_image(x);
    let w = m.encode_text(ids, mask);
    let mmse = Tensor::<AD, 1>::from_data(TensorData::new(vec![0.5f32, -0.5], [2]), &device);
    let loss = m.loss(&image, w, mmse, Tensor::ones([2], &device), 0.5);
    let grads = loss.total.backward();
    let mixer = m.mixer.as_ref().expect("a CNN tower gets the token mixer");
    let has = |g: Option<Tensor<adfit::backend::Cpu, 2>>, what: &str| {
        let g = g.unwrap_or_else(|| panic!("{what}: no gradient"));
        assert!(g.abs().sum().into_scalar() > 0.0, "{what}: zero gradient");
    };
    has(mixer.blocks[0].attn.qkv.weight.grad(&grads), "mixer qkv");
    has(mixer.blocks[0].mlp.linear2.weight.grad(&grads), "mixer MLP");
    has(mixer.norm.gamma.grad(&grads).map(|g| g.unsqueeze()), "mixer norm");
    has(m.backbone.vit.cls_token.grad(&grads).map(|g| g.reshape([1, -1])), "CLS token");
    has(m.visual_prompts.as_ref().unwrap().prompts.grad(&grads).map(|g| g.reshape([1, -1])), "visual prompts");
    has(m.mmse_token.as_ref().unwrap().grad(&grads).map(|g| g.reshape([1, -1])), "[MMSE] token");
    let cnn = m.backbone.vit.cnn.as_ref().unwrap();
    assert!(cnn.stages[0][0].mlp1.weight.grad(&grads).is_none(), "the CNN is frozen");
}
