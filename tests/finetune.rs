//! `adfit finetune` end to end on the tiny synthetic cohort with a tiny random backbone written
//! in M3D-CLIP's layout.

mod common;
use common::{ok, read_json, setup};

use std::process::Command;

use adfit::model::weights::read_safetensors;

#[test]
fn finetune_runs_a_fold_end_to_end() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    setup(d, "2");
    let out = ok(
        d,
        &[
            "finetune",
            "--backbone",
            "backbone",
            "--index",
            "cache/index.csv",
            "--split",
            "split.csv",
            "--fold",
            "0",
            "--out",
            "run",
            "--epochs",
            "2",
            "--batch-size",
            "4",
            "--augment",
        ],
    );
    assert!(out.contains("test balanced accuracy"), "{out}");
    let metrics = std::fs::read_to_string(d.join("run/metrics.csv")).unwrap();
    assert_eq!(metrics.lines().count(), 3, "{metrics}");
    assert!(metrics.starts_with("epoch,lr,train_loss"));
    let best = read_safetensors(&d.join("run/best.safetensors")).unwrap();
    assert!(best.contains_key("adfit.visual_prompts") && best.contains_key("adfit.xattn.i2t.in_proj_weight"));
    let test: serde_json::Value = read_json(d.join("run/test_metrics.json"));
    assert!(test["classification"]["balanced_accuracy"].is_number());
    let config: serde_json::Value = read_json(d.join("run/config.json"));
    assert_eq!(config["img_size"], serde_json::json!([16, 32, 32]));
    for png in ["run/curves.png", "run/confusion.png"] {
        assert!(std::fs::read(d.join(png)).unwrap().starts_with(b"\x89PNG"), "{png}");
    }

    // Evaluation: the bare backbone zero-shot, the fine-tuned run on its test fold, and the
    // OASIS-like cohort as a two-class transfer set.
    let zs = ok(
        d,
        &[
            "eval",
            "--backbone",
            "backbone",
            "--index",
            "cache/index.csv",
            "--split",
            "split.csv",
            "--fold",
            "0",
            "--out",
            "eval_zs",
        ],
    );
    assert!(zs.contains("balanced accuracy"), "{zs}");
    ok(
        d,
        &[
            "eval",
            "--backbone",
            "backbone",
            "--run",
            "run",
            "--index",
            "cache/index.csv",
            "--split",
            "split.csv",
            "--fold",
            "0",
            "--out",
            "eval_ft",
        ],
    );
    let m: serde_json::Value = read_json(d.join("eval_ft/metrics.json"));
    assert_eq!(m["model"], "fine-tuned");
    assert!(std::fs::read(d.join("eval_ft/confusion.png")).unwrap().starts_with(b"\x89PNG"));
    // The test fold scored by `finetune` and by `eval` agree.
    common::same_predictions(&d.join("run/test_predictions.csv"), &d.join("eval_ft/predictions.csv"), 1e-5);
    // The metadata oracle, fitted on the run's training scans, on the same test scans.
    ok(
        d,
        &[
            "eval",
            "--oracle",
            "--run",
            "run",
            "--index",
            "cache/index.csv",
            "--split",
            "split.csv",
            "--fold",
            "0",
            "--out",
            "eval_or",
        ],
    );
    let o: serde_json::Value = read_json(d.join("eval_or/metrics.json"));
    assert_eq!(o["model"], "oracle");
    assert_eq!(o["scan"]["classification"]["n"], m["scan"]["classification"]["n"]);
    assert!(o["scan"]["mmse"]["mae"].is_number());
    let train = std::fs::read_to_string(d.join("run/train.csv")).unwrap();
    assert_eq!(train.lines().count(), 1 + config["train_scans"].as_u64().unwrap() as usize, "{train}");
    let preds = std::fs::read_to_string(d.join("eval_ft/predictions.csv")).unwrap();
    assert!(preds.starts_with("scan,subject,label,predicted,p_NC,p_MCI,p_AD,mmse,mmse_predicted"), "{preds}");
    ok(
        d,
        &[
            "preprocess",
            "--scans",
            "demo/oasis/scans.csv",
            "--table",
            "demo/oasis/oasis_longitudinal.csv",
            "--out",
            "oasis",
            "--shape",
            "16,32,32",
        ],
    );
    ok(
        d,
        &[
            "eval",
            "--backbone",
            "backbone",
            "--run",
            "run",
            "--index",
            "oasis/index.csv",
            "--classes",
            "NC,AD",
            "--out",
            "eval_oasis",
        ],
    );
    let o: serde_json::Value = read_json(d.join("eval_oasis/metrics.json"));
    assert_eq!(o["scan"]["classification"]["confusion"].as_array().unwrap().len(), 2);

    // An ablation run without the MMSE token and the report.
    ok(
        d,
        &[
            "finetune",
            "--backbone",
            "backbone",
            "--index",
            "cache/index.csv",
            "--split",
            "split.csv",
            "--fold",
            "1",
            "--out",
            "run2",
            "--epochs",
            "1",
            "--batch-size",
            "4",
            "--no-mmse",
            "--no-report",
            "--cross-attention",
            "simple",
            "--train-size",
            "10",
        ],
    );
    let config2: serde_json::Value = read_json(d.join("run2/config.json"));
    let n = config2["train_scans"].as_u64().unwrap();
    assert!(n <= 10 && n >= 5, "train scans {n}");
    let best2 = read_safetensors(&d.join("run2/best.safetensors")).unwrap();
    assert!(!best2.contains_key("adfit.mmse_token") && !best2.contains_key("adfit.xattn.i2t.in_proj_weight"));
}

#[test]
fn a_killed_run_resumes_bit_identically() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    setup(d, "4");
    let args = |out: &str| -> Vec<String> {
        [
            "finetune",
            "--backbone",
            "backbone",
            "--index",
            "cache/index.csv",
            "--split",
            "split.csv",
            "--fold",
            "0",
            "--epochs",
            "4",
            "--batch-size",
            "4",
            "--augment",
            "--seed",
            "3",
            "--early-stop",
            "10",
            "--out",
            out,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    let arg_refs = |v: &[String]| -> Vec<String> { v.to_vec() };
    let full = args("full");
    ok(d, &full.iter().map(String::as_str).collect::<Vec<_>>());
    // Two uninterrupted runs with the same seed agree to the bit.
    let full2 = args("full2");
    ok(d, &full2.iter().map(String::as_str).collect::<Vec<_>>());
    for file in ["checkpoint-3/trainable.safetensors", "metrics.csv"] {
        let same =
            std::fs::read(d.join("full").join(file)).unwrap() == std::fs::read(d.join("full2").join(file)).unwrap();
        assert!(same, "{file}: two runs with the same seed differ");
    }
    // The same run into an existing folder without --resume is refused.
    let again = Command::new(env!("CARGO_BIN_EXE_adfit")).args(&full).current_dir(d).output().unwrap();
    assert!(!again.status.success() && String::from_utf8_lossy(&again.stderr).contains("--resume"));

    for (i, kill_ms) in [250u64, 700].iter().enumerate() {
        let out = format!("killed{i}");
        let mut child = Command::new(env!("CARGO_BIN_EXE_adfit")).args(args(&out)).current_dir(d).spawn().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(*kill_ms));
        let _ = child.kill(); // SIGKILL
        let _ = child.wait();
        let mut resume = arg_refs(&args(&out));
        resume.push("--resume".into());
        ok(d, &resume.iter().map(String::as_str).collect::<Vec<_>>());
        for file in ["checkpoint-3/trainable.safetensors", "best.safetensors", "metrics.csv", "test_metrics.json"] {
            let same =
                std::fs::read(d.join("full").join(file)).unwrap() == std::fs::read(d.join(&out).join(file)).unwrap();
            assert!(same, "{file} differs after a kill at {kill_ms} ms");
        }
    }
}

#[test]
fn experiment_aggregates_runs_and_reuses_finished_ones() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    setup(d, "5");
    ok(
        d,
        &[
            "preprocess",
            "--scans",
            "demo/oasis/scans.csv",
            "--table",
            "demo/oasis/oasis_longitudinal.csv",
            "--out",
            "oasis",
            "--shape",
            "16,32,32",
        ],
    );
    let args = [
        "experiment",
        "--backbone",
        "backbone",
        "--index",
        "cache/index.csv",
        "--split",
        "split.csv",
        "--folds",
        "0,1",
        "--seeds",
        "0",
        "--variants",
        "full,no-mmse",
        "--epochs",
        "1",
        "--batch-size",
        "4",
        "--out",
        "exp",
        "--transfer",
        "oasis/index.csv",
        "--tables",
        "tables/tiny",
        "--train-sizes",
        "8",
    ];
    let out = ok(d, &args);
    for row in [
        "| zero-shot | 2 |",
        "| linear-probe | 2 |",
        "| fine-tuned | 2 |",
        "| oracle | 2 |",
        "| full | 2 |",
        "| no-mmse | 2 |",
        "| ≤ 8 | 2 |",
    ] {
        assert!(out.contains(row), "{row} missing from\n{out}");
    }
    assert!(out.contains("## Transfer to `oasis/index.csv`"), "{out}");
    assert!(out.contains("## Models on the test subjects (each subject's baseline visit)"), "{out}");
    assert!(
        out.contains("| fine-tuned − zero-shot | 2 |")
            && out.contains("| no-mmse − full | 2 |")
            && out.contains("| no-mmse − linear-probe | 2 |"),
        "{out}"
    );
    let csv = std::fs::read_to_string(d.join("exp/results.csv")).unwrap();
    assert_eq!(csv, std::fs::read_to_string(d.join("tables/tiny.csv")).unwrap());
    assert!(csv.starts_with("model,metric,mean,std,n_runs\n"));
    for line in [
        "fine-tuned,balanced_accuracy,",
        "oracle,mmse_mae,",
        "zero-shot,auc,",
        "oracle/transfer,accuracy,",
        "linear-probe,balanced_accuracy,",
        "linear-probe/transfer,auc,",
        "diff/fine-tuned − linear-probe,balanced_accuracy,",
        "train-size/8,balanced_accuracy,",
        "subject/fine-tuned,balanced_accuracy,",
        "diff/fine-tuned − zero-shot,balanced_accuracy,",
    ] {
        assert!(csv.contains(line), "{line} missing from\n{csv}");
    }
    // Each variant's parameter count and training speed, from its runs' speed.json.
    assert!(out.contains("| trainable | training scans/s |"), "{out}");
    let value = |name: &str| -> f64 {
        let line = csv.lines().find(|l| l.starts_with(name)).unwrap_or_else(|| panic!("{name} missing from\n{csv}"));
        line.split(',').nth(2).unwrap().parse().unwrap()
    };
    assert!(value("ablation/full,scans_per_second,") > 0.0);
    // Without the [MMSE] token and its head the variant trains fewer parameters.
    let (with, without) = (value("ablation/full,trainable_params,"), value("ablation/no-mmse,trainable_params,"));
    assert!(without < with && with > 0.0, "{with} {without}");
    // The zero-shot backbone and the ablation without the MMSE token predict no MMSE.
    assert!(!csv.contains("zero-shot,mmse_mae") && !csv.contains("ablation/no-mmse,mmse_mae"), "{csv}");
    // Every model was scored on the same test scans.
    let n = |p: &str| {
        let v: serde_json::Value = read_json(d.join(p));
        v["scan"]["classification"]["n"].as_u64().unwrap()
    };
    assert_eq!(n("exp/zero-shot/fold1/metrics.json"), n("exp/runs/full/fold1-seed0/oracle/metrics.json"));
    assert_eq!(n("exp/zero-shot/fold1/metrics.json"), n("exp/runs/full/fold1-seed0/linear-probe/metrics.json"));
    let small: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(d.join("exp/runs/train-size-8/fold0-seed0/config.json")).unwrap(),
    )
    .unwrap();
    assert!(small["train_scans"].as_u64().unwrap() <= 8, "{small}");
    // A second call reuses every run: the runs' files are untouched.
    let before = std::fs::read(d.join("exp/runs/full/fold0-seed0/best.safetensors")).unwrap();
    let modified = std::fs::metadata(d.join("exp/runs/full/fold0-seed0/best.safetensors")).unwrap().modified().unwrap();
    ok(d, &args);
    assert_eq!(std::fs::read(d.join("exp/runs/full/fold0-seed0/best.safetensors")).unwrap(), before);
    assert_eq!(
        std::fs::metadata(d.join("exp/runs/full/fold0-seed0/best.safetensors")).unwrap().modified().unwrap(),
        modified
    );
}

#[test]
fn a_run_config_file_sets_the_run_and_flags_override_it() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    setup(d, "7");
    std::fs::write(
        d.join("run.json"),
        r#"{"epochs": 1, "batch_size": 4, "text_prompts": 5, "cross_attention": "off"}"#,
    )
    .unwrap();
    let base = ["finetune", "--backbone", "backbone", "--cohort", "cache/index.csv", "--split", "split.csv"];
    let mut args: Vec<&str> = base.to_vec();
    args.extend(["--out", "run", "--config", "run.json", "--epochs", "2", "--no-mmse"]);
    ok(d, &args);
    let config: serde_json::Value = read_json(d.join("run/config.json"));
    let s = &config["settings"];
    assert_eq!(
        (s["epochs"].as_u64(), s["batch_size"].as_u64(), s["text_prompts"].as_u64()),
        (Some(2), Some(4), Some(5))
    );
    assert_eq!((s["cross_attention"].as_str(), s["mmse_token"].as_bool()), (Some("off"), Some(false)));
    assert_eq!(s["lr"], serde_json::json!(0.001));
    assert_eq!(std::fs::read_to_string(d.join("run/metrics.csv")).unwrap().lines().count(), 3);

    std::fs::write(d.join("bad.json"), r#"{"epochs": 1, "learning_rate": 0.1}"#).unwrap();
    let mut args: Vec<&str> = base.to_vec();
    args.extend(["--out", "run2", "--config", "bad.json"]);
    let e = common::fails(d, &args);
    assert!(e.contains("bad.json") && e.contains("learning_rate"), "{e}");
    assert!(!d.join("run2").exists(), "a refused run leaves no folder");
}

/// LoRA, adapters and full fine-tuning in place of the visual prompts: each trains, its
/// checkpoint resumes to the bit, and `eval` reads the run back (LoRA merged into the frozen
/// weights for inference, a fully fine-tuned ViT from the run's own weights).
#[test]
fn adapted_runs_resume_bit_identically_and_evaluate() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    setup(d, "6");
    for kind in ["lora", "adapter", "full", "perceiver-lora", "lga"] {
        let args = |out: &str, epochs: &str| -> Vec<String> {
            [
                "finetune",
                "--backbone",
                "backbone",
                "--index",
                "cache/index.csv",
                "--split",
                "split.csv",
                "--fold",
                "0",
                "--epochs",
                epochs,
                "--batch-size",
                "4",
                "--seed",
                "5",
                "--no-visual-prompts",
                "--adaptation",
                kind,
                "--lora-rank",
                "4",
                "--out",
                out,
            ]
            .iter()
            .map(|s| s.to_string())
            .collect()
        };
        let run = |a: Vec<String>| ok(d, &a.iter().map(String::as_str).collect::<Vec<_>>());
        let (full, part) = (format!("{kind}-full"), format!("{kind}-part"));
        run(args(&full, "2"));
        run(args(&part, "1"));
        let mut resume = args(&part, "2");
        resume.push("--resume".into());
        run(resume);
        for file in ["checkpoint-1/trainable.safetensors", "best.safetensors", "metrics.csv"] {
            let same =
                std::fs::read(d.join(&full).join(file)).unwrap() == std::fs::read(d.join(&part).join(file)).unwrap();
            assert!(same, "{kind}: {file} differs after a resume");
        }
        let names = adfit::model::weights::read_safetensors(&d.join(&full).join("best.safetensors")).unwrap();
        let own: &[&str] = match kind {
            "full" => &["vit.blocks.0.attn.qkv"],
            "perceiver-lora" => &["adapt.0.qkv.a", "perceiver.0.weight", "perceiver.1.bias"],
            "lga" => &["lga.0.injector.gamma", "lga.0.extractor.ffn.fc2.weight", "lga.final_injector.source_norm.bias"],
            _ => &["adapt.0."],
        };
        for own in own {
            assert!(names.keys().any(|k| k.contains(own)), "{kind}: no {own} in {:?}", names.keys());
        }
        // speed.json: both epochs of the resumed run, and what it trains.
        let speed = |run: &str| -> serde_json::Value { read_json(d.join(run).join("speed.json")) };
        let (a, b) = (speed(&full), speed(&part));
        assert_eq!(b["epochs"].as_array().map(Vec::len), Some(2), "{kind}: {b}");
        assert_eq!(b["epochs"][1]["epoch"], 1, "{kind}: {b}");
        assert_eq!(a["trainable_params"], b["trainable_params"], "{kind}");
        assert!(a["epochs"][0]["scans_per_second"].as_f64().unwrap() > 0.0, "{kind}: {a}");
        assert!(!names.keys().any(|k| k.ends_with("visual_prompts")), "{kind}: prompts are off");
        let ev = format!("{kind}-eval");
        ok(
            d,
            &[
                "eval",
                "--backbone",
                "backbone",
                "--run",
                &full,
                "--index",
                "cache/index.csv",
                "--split",
                "split.csv",
                "--fold",
                "0",
                "--out",
                &ev,
            ],
        );
        let test: serde_json::Value = read_json(d.join(&full).join("test_metrics.json"));
        let evaluated: serde_json::Value = read_json(d.join(&ev).join("metrics.json"));
        // The merged model (eval) scores the test fold as the trained one did (finetune).
        common::same_predictions(
            &d.join(&full).join("test_predictions.csv"),
            &d.join(&ev).join("predictions.csv"),
            1e-4,
        );
        let bacc = |v: &serde_json::Value| v["classification"]["balanced_accuracy"].as_f64();
        println!("{kind}: test balanced accuracy {:?} (finetune) = {:?} (eval)", bacc(&test), bacc(&evaluated["scan"]));
        // Grad-ECLIP explains the plain blocks' CLS token: runs that pool through the perceiver
        // or run LGA beside the blocks are refused, by name, before anything is written.
        if let Some(why) = match kind {
            "perceiver-lora" => Some("spatial-pooling perceiver"),
            "lga" => Some("language-guided adapter"),
            _ => None,
        } {
            let at = format!("{kind}-attribute");
            let first = common::first_scan(d);
            let e = common::fails(
                d,
                &[
                    "attribute",
                    "--backbone",
                    "backbone",
                    "--run",
                    &full,
                    "--index",
                    "cache/index.csv",
                    "--scans",
                    &first,
                    "--out",
                    &at,
                ],
            );
            assert!(e.contains(why) && e.contains(&full) && e.contains("not available"), "{kind}: {e}");
            assert!(!d.join(&at).exists(), "{kind}: a refused attribution left {at}");
        }
    }
}
