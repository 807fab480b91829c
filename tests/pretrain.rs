//! `adfit pretrain` end to end on both corpora, and the backbones the repository ships.

mod common;
use common::{fails, ok, read_json};

use std::path::Path;

use adfit::model::backbones::Backbone;
use adfit::model::tokenizer::tokenize;
use adfit::model::vit3d::PosEmbedPolicy;
use adfit::train::pretrain::{held_out_accuracy, PretrainConfig};
use burn::backend::Flex;

use common::TINY_PRETRAIN as TINY;

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
    let e = fails(d, &["pretrain", "--out", "c", "--corpus", "phantoms", "--grid", "16,32,32", "--patch", "5,16,16"]);
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

const TINY_BRAINS: [&str; 20] = [
    "--grid",
    "16,32,32",
    "--patch",
    "8,16,16",
    "--hidden",
    "32",
    "--layers",
    "1",
    "--steps",
    "3",
    "--batch-size",
    "4",
    "--corpus-size",
    "8",
    "--held-out",
    "4",
    "--seed",
    "5",
    "-q",
    "--device=cpu",
];

/// The brain corpus against the real, frozen all-MiniLM-L6-v2: the written backbone holds the
/// image side only, names its text tower, and loads with the tower resolved from the asset
/// cache; without the tower, loading says what to fetch.
#[test]
fn brain_pretraining_keeps_the_text_tower_outside_and_resolves_it() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let mut args = vec!["pretrain", "--out", "a"];
    args.extend(TINY_BRAINS);
    let out = ok(d, &args);
    assert!(out.contains("held-out image→caption accuracy"), "{out}");
    let mut again = vec!["pretrain", "--out", "b"];
    again.extend(TINY_BRAINS);
    ok(d, &again);
    for f in ["model.safetensors", "config.json", "pretrain_log.csv"] {
        assert_eq!(std::fs::read(d.join("a").join(f)).unwrap(), std::fs::read(d.join("b").join(f)).unwrap(), "{f}");
    }
    let dir = d.join("a");
    let cfg: serde_json::Value = read_json(dir.join("config.json"));
    assert_eq!(cfg["language_model_name_or_path"], "sentence-transformers/all-MiniLM-L6-v2");
    let keys = adfit::model::weights::read_safetensors(&dir.join("model.safetensors")).unwrap();
    assert!(!keys.keys().any(|k| k.starts_with("language_encoder.")));
    assert!(keys.contains_key("mm_language_proj.weight") && keys["mm_language_proj.weight"].shape == [32, 384]);
    let summary: serde_json::Value = read_json(dir.join("pretrain.json"));
    let caption = summary["example_caption"].as_str().unwrap();
    assert!(caption.contains("Hippocampal volume"), "{caption}");
    assert_eq!(summary["text_model"]["frozen"], true);
    // The findings term is on by default: logged every step, scored on the held-out heads, and
    // its head is not part of the backbone.
    let log = std::fs::read_to_string(dir.join("pretrain_log.csv")).unwrap();
    assert!(log.starts_with("step,lr,loss,accuracy,findings_mse\n"), "{log}");
    let r2 = summary["held_out_findings_r2"].as_object().unwrap();
    assert_eq!(r2.len(), 7, "{r2:?}");
    assert!(r2["hippocampus"].as_f64().unwrap().is_finite());
    assert_eq!(summary["config"]["findings_weight"], 1.0);
    // Without the term: no findings column, no R², and the same weights are written (the head
    // never is).
    let mut off = vec!["pretrain", "--out", "c", "--findings-weight", "0"];
    off.extend(TINY_BRAINS);
    ok(d, &off);
    let c = d.join("c");
    assert!(std::fs::read_to_string(c.join("pretrain_log.csv")).unwrap().starts_with("step,lr,loss,accuracy\n"));
    let summary_off: serde_json::Value = read_json(c.join("pretrain.json"));
    assert!(summary_off["held_out_findings_r2"].is_null());
    let keys_off = adfit::model::weights::read_safetensors(&c.join("model.safetensors")).unwrap();
    assert_eq!(keys.keys().collect::<Vec<_>>(), keys_off.keys().collect::<Vec<_>>());

    let b = Backbone::<Flex>::load(&dir, None, PosEmbedPolicy::Reinterpret, &Default::default()).unwrap();
    assert_eq!(b.model.bert.hidden_size(), 384);
    assert_eq!(b.tokenizer.tokens("hippocampi").unwrap(), ["[CLS]", "hip", "##po", "##camp", "##i", "[SEP]"]);

    // With no asset cache and no Hugging Face cache, the error names the tower and the fix.
    let empty = tempfile::tempdir().unwrap();
    let run = std::process::Command::new(env!("CARGO_BIN_EXE_adfit"))
        .args(["embed", "--backbone", "a", "--text", "A photo of AD.", "--out", "e.json"])
        .current_dir(d)
        .env("HOME", empty.path())
        .env("ADFIT_ASSETS", empty.path())
        .env_remove("ADFIT_TEXT_MODELS")
        .env_remove("HF_HOME")
        .output()
        .unwrap();
    assert!(!run.status.success());
    let err = String::from_utf8_lossy(&run.stderr);
    assert!(err.contains("all-MiniLM-L6-v2") && err.contains("fetch_minilm.sh"), "{err}");
}

/// The default backbone in `backbones/brain-64` loads with the fetched all-MiniLM-L6-v2, finds
/// each held-out head's finding among 32 far above chance, and its text side tells the class
/// prompts apart (the phantom backbone's tower gave cosine 0.998 between "A photo of NC." and
/// "A photo of MCI.").
#[test]
fn the_default_brain_backbone_loads_with_minilm_and_reads_findings() {
    use adfit::data::synth::corpus;
    use adfit::train::pretrain_brains::retrieval_accuracy;

    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("backbones/brain-64");
    let summary: serde_json::Value = read_json(dir.join("pretrain.json"));
    let cfg: PretrainConfig = serde_json::from_value(summary["config"].clone()).unwrap();
    let size = std::fs::metadata(dir.join("model.safetensors")).unwrap().len();
    assert!(size < 4 << 20, "{size} bytes");
    let device = Default::default();
    let b = Backbone::<Flex>::load(&dir, Some(cfg.grid), PosEmbedPolicy::Reinterpret, &device).unwrap();
    assert_eq!(b.model.bert.hidden_size(), 384, "the text tower is all-MiniLM-L6-v2");

    // Four batches: one batch of 32 is too few to tell 0.15 from chance reliably.
    let held = corpus::heads(cfg.grid, cfg.seed, true, 0, 128).unwrap();
    let acc = retrieval_accuracy(&b.model, &b.tokenizer, &held, cfg.grid, 32, &device).unwrap();
    let chance = 1.0 / 32.0;
    println!("brain-64: held-out retrieval accuracy {acc:.3} on 128 heads, each among 32 (chance {chance:.3})");
    assert!(acc > 3.0 * chance, "held-out accuracy {acc}");
    assert!(summary["held_out_accuracy"].as_f64().unwrap() > 4.0 * chance);

    let texts: Vec<String> = ["A photo of NC.", "A photo of MCI.", "A photo of AD."].map(String::from).to_vec();
    let (ids, mask) = tokenize::<Flex>(&b.tokenizer, &texts, &device).unwrap();
    let w = b.model.encode_text(ids, mask);
    let cos: Vec<f32> = w.clone().matmul(w.transpose()).into_data().to_vec().unwrap();
    println!("brain-64: class-prompt cosines NC·MCI {:.3}, NC·AD {:.3}, MCI·AD {:.3}", cos[1], cos[2], cos[5]);
    for (i, j) in [(0, 1), (0, 2), (1, 2)] {
        assert!(cos[i * 3 + j] < 0.97, "{:?} vs {:?}: cosine {}", texts[i], texts[j], cos[i * 3 + j]);
    }
}
