//! `adfit pretrain` end to end, and the backbone it built that the repository ships.

mod common;
use common::{fails, ok, read_json};

use std::path::Path;

use adfit::model::backbones::Backbone;
use adfit::model::tokenizer::tokenize;
use adfit::model::vit3d::PosEmbedPolicy;
use adfit::train::pretrain::{held_out_accuracy, PretrainConfig};
use burn::backend::Flex;

const TINY: [&str; 16] = [
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

fn pretrain(d: &Path, out: &str) -> String {
    let mut args = vec!["pretrain", "--out", out];
    args.extend(TINY);
    ok(d, &args)
}

#[test]
fn pretrain_is_reproducible_and_loads_like_m3d() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let out = pretrain(d, "a");
    assert!(out.contains("held-out image→caption accuracy"), "{out}");
    pretrain(d, "b");
    for f in ["model.safetensors", "vocab.txt", "config.json", "pretrain_log.csv"] {
        assert_eq!(std::fs::read(d.join("a").join(f)).unwrap(), std::fs::read(d.join("b").join(f)).unwrap(), "{f}");
    }
    let log = std::fs::read_to_string(d.join("a/pretrain_log.csv")).unwrap();
    assert_eq!(log.lines().count(), 5, "{log}");
    assert!(std::fs::read(d.join("a/pretrain_curves.png")).unwrap().starts_with(b"\x89PNG"));
    // The folder is an M3D-CLIP-layout backbone.
    let b = Backbone::<Flex>::load(&d.join("a"), None, PosEmbedPolicy::Reinterpret, &Default::default()).unwrap();
    assert_eq!(b.config.hidden_size, 32);
    assert_eq!(b.tokenizer.tokens("hippocampal volume").unwrap(), ["[CLS]", "hippocampal", "volume", "[SEP]"]);
    // A finished backbone is never overwritten.
    let mut args = vec!["pretrain", "--out", "a"];
    args.extend(TINY);
    assert!(fails(d, &args).contains("already holds a backbone"));
    let e = fails(d, &["pretrain", "--out", "c", "--grid", "16,32,32", "--patch", "5,16,16", "--steps", "1"]);
    assert!(e.contains("patch"), "{e}");
}

/// The backbone in `backbones/phantom-64` loads like M3D-CLIP and learned its domain: on phantoms
/// no pre-training step saw, it finds each caption far above chance. Its text tower reads the
/// word after "A photo of" and the numbers of a report: the class prompts and two reports that
/// differ only in their volumes get different embeddings (a tower that maps every text to one
/// point leaves fine-tuning nothing to align).
#[test]
fn the_shipped_backbone_loads_and_learned_its_domain() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("backbones/phantom-64");
    let summary: serde_json::Value = read_json(dir.join("pretrain.json"));
    let cfg: PretrainConfig = serde_json::from_value(summary["config"].clone()).unwrap();
    let b = Backbone::<Flex>::load(&dir, Some([64, 64, 64]), PosEmbedPolicy::Reinterpret, &Default::default()).unwrap();
    assert_eq!(b.config.img_size, [64, 64, 64]);
    let size = std::fs::metadata(dir.join("model.safetensors")).unwrap().len();
    assert!(size < 4 << 20, "{size} bytes");

    let device = Default::default();
    let acc = held_out_accuracy(&b.model, &cfg, &b.tokenizer, 2, &device).unwrap();
    let chance = 1.0 / cfg.batch_size as f64;
    assert!(acc > 4.0 * chance, "held-out accuracy {acc} vs chance {chance}");
    let recorded = summary["held_out_accuracy"].as_f64().unwrap();
    assert!(recorded > 4.0 * chance, "recorded held-out accuracy {recorded}");

    let report = |hippocampus: &str| {
        format!(
            "A photo of MCI. The MRI scan reveals the following biomarkers: Hippocampal volume: {hippocampus} mm^3, \
             Ventricular size: 38556.00 mm^3, Whole brain volume: 1005834.00 mm^3."
        )
    };
    let texts = ["A photo of NC.", "A photo of MCI.", "A photo of AD."].map(String::from).to_vec();
    let texts = [texts, vec![report("7323.00"), report("5012.00")]].concat();
    let (ids, mask) = tokenize::<Flex>(&b.tokenizer, &texts, &device).unwrap();
    let w = b.model.encode_text(ids, mask);
    let w = w.clone() / w.powi_scalar(2).sum_dim(1).sqrt();
    let cos: Vec<f32> = w.clone().matmul(w.transpose()).into_data().to_vec().unwrap();
    let n = texts.len();
    // The collapsed tower of the first phantom backbone gave 0.999 or more for every pair here.
    for (i, j, most) in [(0, 1, 0.999), (0, 2, 0.99), (1, 2, 0.99), (3, 4, 0.99)] {
        assert!(cos[i * n + j] < most, "{:?} vs {:?}: cosine {}", texts[i], texts[j], cos[i * n + j]);
    }
}
