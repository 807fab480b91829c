//! `adfit pretrain` end to end, and the backbone it built that the repository ships.

mod common;
use common::{fails, ok};

use std::path::Path;

use adfit::model::backbones::Backbone;
use adfit::model::vit3d::PosEmbedPolicy;
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

/// The backbone in `backbones/phantom-64` is what `adfit pretrain` with its recorded command
/// wrote, and it learned its domain: captions are found far above chance on phantoms it never saw.
#[test]
fn the_shipped_backbone_loads_and_learned_its_domain() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("backbones/phantom-64");
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("pretrain.json")).unwrap()).unwrap();
    let (acc, chance) = (summary["held_out_accuracy"].as_f64().unwrap(), summary["chance"].as_f64().unwrap());
    assert!(acc > 2.5 * chance, "held-out accuracy {acc} vs chance {chance}");
    let b = Backbone::<Flex>::load(&dir, Some([64, 64, 64]), PosEmbedPolicy::Reinterpret, &Default::default()).unwrap();
    assert_eq!(b.config.img_size, [64, 64, 64]);
    let size = std::fs::metadata(dir.join("model.safetensors")).unwrap().len();
    assert!(size < 4 << 20, "{size} bytes");
}
