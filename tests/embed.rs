//! `adfit embed` on a tiny backbone directory written in M3D-CLIP's exact layout and key names
//! (the ViT and BERT of tests/fixtures/model plus projections and a 0-d logit_scale).

mod common;
use common::{adfit, vocab};

use std::path::{Path, PathBuf};

use adfit::data::nifti_io::{write_nifti, OutType};
use adfit::data::volume::{identity, Volume};
use adfit::model::backbones::m3d::write_safetensors;
use adfit::model::weights::{read_safetensors, RawTensor};
use serde_json::{json, Value};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/model")
}

fn seeded(n: usize, seed: u32) -> Vec<f32> {
    // A small deterministic generator; values in [-0.25, 0.25].
    let mut s = seed.wrapping_mul(2654435761).wrapping_add(1);
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            (s as f32 / u32::MAX as f32 - 0.5) * 0.5
        })
        .collect()
}

/// Writes the backbone directory; `drop` removes one key from model.safetensors.
fn tiny_backbone(dir: &Path, drop: Option<&str>) -> (Vec<(String, RawTensor)>, Value) {
    std::fs::create_dir_all(dir).unwrap();
    let mut tensors: Vec<(String, RawTensor)> = Vec::new();
    for (file, prefix) in [("vit.safetensors", "vision_encoder."), ("bert.safetensors", "language_encoder.")] {
        for (k, v) in read_safetensors(&fixtures().join(file)).unwrap() {
            if k.starts_with(prefix) {
                tensors.push((k, v));
            }
        }
    }
    let lin = |name: &str, o: usize, i: usize, seed: u32| {
        vec![
            (format!("{name}.weight"), RawTensor { shape: vec![o, i], data: seeded(o * i, seed) }),
            (format!("{name}.bias"), RawTensor { shape: vec![o], data: seeded(o, seed + 1) }),
        ]
    };
    tensors.extend(lin("mm_vision_proj", 32, 64, 1));
    tensors.extend(lin("mm_language_proj", 32, 16, 3));
    tensors.push(("logit_scale".into(), RawTensor { shape: vec![], data: vec![2.6592600] }));
    let kept: Vec<_> = tensors.iter().filter(|(k, _)| Some(k.as_str()) != drop).cloned().collect();
    write_safetensors(&dir.join("model.safetensors"), &kept).unwrap();
    let bert: Value = serde_json::from_str(&std::fs::read_to_string(fixtures().join("bert.json")).unwrap()).unwrap();
    let config = json!({
        "img_size": [8, 32, 48], "patch_size": [4, 16, 16], "hidden_size": 64, "mlp_dim": 128,
        "num_layers": 2, "num_heads": 4, "in_channels": 1, "pos_embed": "perceptron",
        "vocab_size": 30522, "language_model_name_or_path": "tiny-random-bert", "max_text_len": 64,
        "projection_dim": 32,
        "text_config": {
            "vocab_size": 30522, "hidden_size": bert["hidden_size"], "num_hidden_layers": bert["num_hidden_layers"],
            "num_attention_heads": bert["num_attention_heads"], "intermediate_size": bert["intermediate_size"],
            "hidden_act": "gelu", "max_position_embeddings": bert["max_position_embeddings"],
            "type_vocab_size": 2, "layer_norm_eps": 1e-12
        }
    });
    std::fs::write(dir.join("config.json"), serde_json::to_string_pretty(&config).unwrap()).unwrap();
    std::fs::copy(vocab(), dir.join("vocab.txt")).unwrap();
    (tensors, config)
}

fn get<'a>(t: &'a [(String, RawTensor)], k: &str) -> &'a RawTensor {
    &t.iter().find(|(n, _)| n == k).unwrap().1
}

/// l2norm(W x + b) for one row.
fn project(w: &RawTensor, b: &RawTensor, x: &[f32]) -> Vec<f32> {
    let (o, i) = (w.shape[0], w.shape[1]);
    let y: Vec<f32> = (0..o).map(|r| (0..i).map(|c| w.data[r * i + c] * x[c]).sum::<f32>() + b.data[r]).collect();
    let n = y.iter().map(|v| v * v).sum::<f32>().sqrt();
    y.iter().map(|v| v / n).collect()
}

#[test]
fn embed_matches_the_backbone_computation() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let (tensors, _) = tiny_backbone(&d.join("backbone"), None);
    // The ViT fixture's two input volumes, written as NIfTI in (D, H, W) storage order.
    let vit = read_safetensors(&fixtures().join("vit.safetensors")).unwrap();
    let x = &vit["input.volume"];
    let per = 8 * 32 * 48;
    for v in 0..2 {
        let vol = Volume { shape: [8, 32, 48], data: x.data[v * per..(v + 1) * per].to_vec(), affine: identity() };
        write_nifti(&d.join(format!("v{v}.nii.gz")), &vol, OutType::Float32).unwrap();
    }
    let bert = read_safetensors(&fixtures().join("bert.safetensors")).unwrap();
    let sentences = ["A photo of AD.", "A photo of NC. The MRI scan reveals the following biomarkers: Hippocampal volume: 7323.00 mm^3, Ventricular size: unavailable.", "MCI"];
    let mut args = vec!["embed", "--backbone", "backbone", "--volume", "v0.nii.gz", "--volume", "v1.nii.gz"];
    for s in &sentences {
        args.extend(["--text", s]);
    }
    args.extend(["--out", "out.json"]);
    // The CPU, and the GPU code path (CubeCL kernels) on wgpu where this build has it; the
    // wgpu tests in tests/device.rs say loudly when no Vulkan device can be opened.
    let mut devices = vec!["cpu"];
    if cfg!(feature = "wgpu") {
        devices.push("wgpu");
    }
    for device in devices {
        let mut args = args.clone();
        args.extend(["--device", device]);
        let out = adfit(d, &args);
        if !out.status.success() && device == "wgpu" && std::env::var_os("CI").is_none() {
            eprintln!("!!!!! embed on wgpu NOT CHECKED: {}", String::from_utf8_lossy(&out.stderr));
            continue;
        }
        assert!(out.status.success(), "{device}: {}", String::from_utf8_lossy(&out.stderr));
        let worst = check_embedding(d, &tensors, &vit, &bert);
        eprintln!("embed on {device}: max abs error {worst:.2e} against the reference fixtures");
        assert!(worst < 1e-4, "{device}: max abs error {worst}");
    }

    // The same through safetensors output.
    let mut st_args = args.clone();
    *st_args.last_mut().unwrap() = "out.safetensors";
    assert!(adfit(d, &st_args).status.success());
    let st = read_safetensors(&d.join("out.safetensors")).unwrap();
    assert_eq!(st["logits"].shape, vec![2, 3]);
    assert_eq!(st["image_embeddings"].shape, vec![2, 32]);
}

/// Max abs error of `out.json` against the fixtures' hidden states through the projections.
fn check_embedding(
    d: &Path,
    tensors: &[(String, RawTensor)],
    vit: &std::collections::BTreeMap<String, RawTensor>,
    bert: &std::collections::BTreeMap<String, RawTensor>,
) -> f32 {
    let v: Value = serde_json::from_str(&std::fs::read_to_string(d.join("out.json")).unwrap()).unwrap();

    let last = &vit["out.last"]; // [2, 13, 64]: CLS is token 0
    let text_last = &bert["out.last_hidden_state"]; // [3, 38, 16]
    let mut worst = 0.0f32;
    let mut img = Vec::new();
    for i in 0..2 {
        let cls = &last.data[i * 13 * 64..i * 13 * 64 + 64];
        let want = project(get(tensors, "mm_vision_proj.weight"), get(tensors, "mm_vision_proj.bias"), cls);
        for (g, w) in v["image_embeddings"][i].as_array().unwrap().iter().zip(&want) {
            worst = worst.max((g.as_f64().unwrap() as f32 - w).abs());
        }
        img.push(want);
    }
    let mut txt = Vec::new();
    for j in 0..3 {
        let cls = &text_last.data[j * 38 * 16..j * 38 * 16 + 16];
        let want = project(get(tensors, "mm_language_proj.weight"), get(tensors, "mm_language_proj.bias"), cls);
        for (g, w) in v["text_embeddings"][j].as_array().unwrap().iter().zip(&want) {
            worst = worst.max((g.as_f64().unwrap() as f32 - w).abs());
        }
        txt.push(want);
    }
    for i in 0..2 {
        for j in 0..3 {
            let want = img[i].iter().zip(&txt[j]).map(|(a, b)| a * b).sum::<f32>() * 2.6592600;
            worst = worst.max((v["logits"][i][j].as_f64().unwrap() as f32 - want).abs());
        }
    }
    worst
}

#[test]
fn a_missing_key_or_a_wrong_volume_is_refused_by_name() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    tiny_backbone(&d.join("broken"), Some("vision_encoder.blocks.1.attn.qkv.weight"));
    let out = adfit(d, &["embed", "--backbone", "broken", "--text", "A photo of AD.", "--out", "o.json"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("missing key vision_encoder.blocks.1.attn.qkv.weight"), "{err}");
    assert!(!d.join("o.json").exists());

    tiny_backbone(&d.join("ok"), None);
    let vol = Volume { shape: [8, 32, 40], data: vec![0.5; 8 * 32 * 40], affine: identity() };
    write_nifti(&d.join("small.nii"), &vol, OutType::Float32).unwrap();
    let out = adfit(d, &["embed", "--backbone", "ok", "--volume", "small.nii", "--out", "o.json"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("small.nii") && err.contains("preprocess"), "{err}");
}
