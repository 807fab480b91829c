//! End-to-end tests through the real `adfit` binary, in temporary folders, on the tiny synthetic
//! preset and the committed NIfTI fixtures.

mod common;
use common::{adfit, fails, ok, preprocess_args};

use std::path::{Path, PathBuf};

use serde_json::Value;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/nifti").join(name)
}

#[test]
fn help_lists_the_subcommands() {
    let dir = tempfile::tempdir().unwrap();
    let help = ok(dir.path(), &["--help"]);
    for cmd in ["inspect", "convert", "synth", "split", "preprocess", "attribute"] {
        assert!(help.contains(cmd), "--help lacks {cmd}:\n{help}");
    }
    let sub = ok(dir.path(), &["preprocess", "--help"]);
    assert!(sub.contains("--scans") && sub.contains("image_id"), "{sub}");
}

#[test]
fn inspect_volume_json_has_stable_keys() {
    let dir = tempfile::tempdir().unwrap();
    let path = fixture("i16_be_scaled_pil.nii");
    let v: Value = serde_json::from_str(&ok(dir.path(), &["inspect", path.to_str().unwrap(), "--json"])).unwrap();
    for key in ["shape", "datatype", "voxel_size", "affine", "axcodes", "scl_slope", "scl_inter", "stats"] {
        assert!(!v[key].is_null(), "missing {key}: {v}");
    }
    assert_eq!(v["datatype"], "int16");
    assert_eq!(v["scl_slope"], 2.5);
    assert_eq!(v["axcodes"], serde_json::json!(["P", "I", "L"]));
    for key in ["min", "max", "mean", "std", "sum"] {
        assert!(v["stats"][key].is_number(), "stats.{key}");
    }
    let c: Value =
        serde_json::from_str(&ok(dir.path(), &["inspect", path.to_str().unwrap(), "--json", "--canonical"])).unwrap();
    assert_eq!(c["axcodes"], serde_json::json!(["R", "A", "S"]));
    assert_eq!(c["stats"], v["stats"], "reorientation keeps the intensities");
    let err = fails(dir.path(), &["inspect", fixture("bad_magic.nii").to_str().unwrap()]);
    assert!(err.contains("bad_magic.nii") && err.contains("magic"), "{err}");
}

#[test]
fn inspect_table_json_and_bad_rows() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("t.csv"),
        "RID,PTID,VISCODE,EXAMDATE,DX,MMSE\n1,a,bl,2010-01-01,CN,29\n1,a,m12,2011-01-01,NL to MCI,\n2,b,bl,2010-02-01,,24\n",
    )
    .unwrap();
    let v: Value = serde_json::from_str(&ok(dir.path(), &["inspect", "t.csv", "--json"])).unwrap();
    assert_eq!(v["format"], "adnimerge");
    let rows = v["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 3);
    assert_eq!(rows[1], serde_json::json!({"line": 3, "subject": "a", "visit": "m12", "label": "MCI", "mmse": null}));
    assert_eq!(rows[2]["label"], Value::Null);
    assert_eq!(rows[0]["mmse"], 29.0);

    std::fs::write(dir.path().join("bad.csv"), "PTID,VISCODE,DX\na,bl,CN\nb,bl,Alzheimer\n").unwrap();
    let err = fails(dir.path(), &["inspect", "bad.csv", "--json"]);
    assert!(err.contains("bad.csv:3: column `DX`"), "{err}");
    let v: Value = serde_json::from_str(&ok(dir.path(), &["inspect", "bad.csv", "--json", "--skip-bad-rows"])).unwrap();
    assert_eq!(v["rows"].as_array().unwrap().len(), 1);
    assert_eq!(v["skipped"].as_array().unwrap().len(), 1);
}

#[test]
fn convert_reorients_resizes_and_never_touches_the_input() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.nii");
    std::fs::copy(fixture("i32_be_slp.nii"), &input).unwrap();
    let before = std::fs::read(&input).unwrap();
    ok(dir.path(), &["convert", "in.nii", "out.nii.gz", "--canonical", "--resize", "8,9,10", "--normalize", "minmax"]);
    assert_eq!(std::fs::read(&input).unwrap(), before);
    let v: Value = serde_json::from_str(&ok(dir.path(), &["inspect", "out.nii.gz", "--json"])).unwrap();
    assert_eq!(v["shape"], serde_json::json!([8, 9, 10]));
    assert_eq!(v["datatype"], "float32");
    assert_eq!(v["axcodes"], serde_json::json!(["R", "A", "S"]));
    assert_eq!(v["stats"]["min"], 0.0);
    assert_eq!(v["stats"]["max"], 1.0);
    let err = fails(dir.path(), &["convert", "in.nii", "in.nii"]);
    assert!(err.contains("refusing to overwrite"), "{err}");
    let err = fails(dir.path(), &["convert", "in.nii", "out.nii", "--resize", "0,3,3"]);
    assert!(err.contains("not a shape"), "{err}");
    assert!(!dir.path().join("out.nii").exists());
}

#[test]
fn synth_preprocess_split_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    ok(d, &["synth", "--out", "demo", "--preset", "tiny", "--seed", "3"]);
    for f in ["adni/ADNIMERGE.csv", "adni/scans.csv", "oasis/oasis_longitudinal.csv", "oasis/scans.csv"] {
        assert!(d.join("demo").join(f).exists(), "{f}");
    }
    let table: Value = serde_json::from_str(&ok(d, &["inspect", "demo/adni/ADNIMERGE.csv", "--json"])).unwrap();
    assert_eq!(table["format"], "adnimerge");
    let oasis: Value =
        serde_json::from_str(&ok(d, &["inspect", "demo/oasis/oasis_longitudinal.csv", "--json"])).unwrap();
    assert_eq!(oasis["format"], "oasis2");

    let args = preprocess_args("cache", "24,28,24");
    let first = ok(d, &args);
    assert!(first.contains("0 failed"), "{first}");
    let index = std::fs::read_to_string(d.join("cache/index.csv")).unwrap();
    let n_rows = index.lines().count() - 1;
    assert!(n_rows >= 10, "{index}");
    assert!(index.lines().next().unwrap().starts_with("scan,subject,visit,date,label,mmse"));
    assert!(index.contains("A photo of"), "reports in the index");
    // Rerun: everything comes from the cache.
    let again = ok(d, &args);
    assert!(again.contains(&format!("0 scans preprocessed, {n_rows} reused")), "{again}");
    // Other settings into the same folder are refused.
    let err = fails(
        d,
        &["preprocess", "--scans", "demo/adni/scans.csv", "--table", "demo/adni/ADNIMERGE.csv", "--out", "cache"],
    );
    assert!(err.contains("other settings"), "{err}");

    // A corrupt scan is reported by path; the others still go through.
    let scans = std::fs::read_to_string(d.join("demo/adni/scans.csv")).unwrap();
    let victim = scans.lines().nth(1).unwrap().split(',').next().unwrap().to_string();
    let victim_path = d.join("demo/adni").join(&victim);
    let bytes = std::fs::read(&victim_path).unwrap();
    std::fs::write(&victim_path, &bytes[..bytes.len() / 3]).unwrap();
    let out = adfit(d, &preprocess_args("cache2", "24,28,24"));
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(&victim), "{stderr}");
    let index2 = std::fs::read_to_string(d.join("cache2/index.csv")).unwrap();
    assert_eq!(index2.lines().count() - 1, n_rows - 1);
    assert!(std::fs::read_to_string(d.join("cache2/failures.csv")).unwrap().contains(&victim));

    // Split, check, and refuse a leaking split.
    let out = ok(d, &["split", "--index", "cache/index.csv", "--out", "split.csv", "--folds", "3", "--seed", "1"]);
    assert!(out.contains("test"), "{out}");
    ok(d, &["split", "--check", "split.csv"]);
    let mut text = std::fs::read_to_string(d.join("split.csv")).unwrap();
    let test_row = text.lines().find(|l| l.contains(",test,")).unwrap().to_string();
    text.push_str(&test_row.replace(",test,", ",train,"));
    text.push('\n');
    std::fs::write(d.join("leak.csv"), text).unwrap();
    let err = fails(d, &["split", "--check", "leak.csv"]);
    let subject = test_row.split(',').nth(1).unwrap();
    assert!(err.contains("leaking") && err.contains(subject), "{err}");
}

#[test]
fn synth_labels_follow_their_scans_into_the_cache() {
    use adfit::data::{cache::read_cached, labels, nifti_io::read_nifti, preprocess::read_index};
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    ok(d, &["synth", "--out", "plain", "--preset", "tiny", "--seed", "4"]);
    let out = ok(d, &["synth", "--out", "demo", "--preset", "tiny", "--seed", "4", "--labels"]);
    assert!(out.contains("labels.json"), "{out}");
    assert!(d.join("demo/labels.json").is_file() && !d.join("plain/labels.json").exists());
    // --labels changes no table, scan list or scan, and no scan list names a label map.
    for f in ["adni/ADNIMERGE.csv", "adni/scans.csv", "adni/scans_by_id.csv", "oasis/scans.csv"] {
        let text = std::fs::read_to_string(d.join("demo").join(f)).unwrap();
        assert_eq!(text, std::fs::read_to_string(d.join("plain").join(f)).unwrap(), "{f}");
        assert!(!text.contains("_labels"), "{f} lists a label map");
    }
    let list = std::fs::read_to_string(d.join("demo/adni/scans.csv")).unwrap();
    let paths: Vec<&str> = list.lines().skip(1).map(|l| l.split(',').next().unwrap()).collect();
    for p in &paths {
        let stem = p.strip_suffix(".nii.gz").unwrap();
        assert_eq!(
            std::fs::read(d.join("demo/adni").join(p)).unwrap(),
            std::fs::read(d.join("plain/adni").join(p)).unwrap()
        );
        assert!(d.join(format!("demo/adni/{stem}_labels.nii.gz")).is_file(), "{stem}");
        assert!(!d.join(format!("plain/adni/{stem}_labels.nii.gz")).exists());
    }

    let preprocess = |scans: &str, out: &str| {
        let args =
            ["preprocess", "--scans", scans, "--table", "demo/adni/ADNIMERGE.csv", "--out", out, "--shape", "40"];
        adfit(d, &args)
    };
    assert!(preprocess("demo/adni/scans.csv", "cache").status.success());
    let index = d.join("cache/index.csv");
    let rows = read_index(&index).unwrap();
    assert_eq!(rows.len(), paths.len());
    let (mut counted, mut table) = (0.0, 0.0);
    for row in &rows {
        let path = labels::labels_path(&index, row);
        let map = read_nifti(&path).unwrap();
        assert_eq!(map.info.datatype.name(), "uint8", "{}", path.display());
        let cache = read_cached(&d.join("cache").join(&row.cache)).unwrap();
        let map = labels::read_labels(&index, row).unwrap();
        assert_eq!(map.shape, [40, 40, 40]);
        for (a, b) in map.affine.iter().flatten().zip(cache.affine.iter().flatten()) {
            assert!(
                (a - b).abs() < 1e-4 * (1.0 + b.abs()),
                "{}: {:?} vs {:?}",
                path.display(),
                map.affine,
                cache.affine
            );
        }
        // The brain is where the cache volume is bright.
        let brain = labels::structure_labels(adfit::data::table::Biomarker::WholeBrain);
        let mean = |inside: bool| {
            let v: Vec<f32> = map
                .data
                .iter()
                .zip(&cache.data)
                .filter(|(l, _)| brain.contains(&(**l as u8)) == inside)
                .map(|(_, &v)| v)
                .collect();
            v.iter().sum::<f32>() / v.len() as f32
        };
        assert!(mean(true) > 2.0 * mean(false), "{}: brain {} vs the rest {}", row.scan, mean(true), mean(false));
        if let Some(h) = row.hippocampus {
            let [x, y, z] = map.voxel_size();
            let hippo = labels::structure_labels(adfit::data::table::Biomarker::Hippocampus);
            counted += map.data.iter().filter(|&&l| hippo.contains(&(l as u8))).count() as f64 * x * y * z;
            table += h;
        }
    }
    eprintln!("hippocampus over all scans: {counted:.0} mm³ from the cache-grid label maps, {table:.0} in the table");
    assert!(table > 0.0 && (counted / table - 1.0).abs() < 0.15, "{counted} vs {table}");

    // Rerun: all reused. A missing label map alone is remade, the cache volume left as it is.
    let again = preprocess("demo/adni/scans.csv", "cache");
    assert!(String::from_utf8_lossy(&again.stdout).contains(&format!("0 scans preprocessed, {} reused", rows.len())));
    let victim = labels::labels_path(&index, &rows[0]);
    let before = std::fs::read(&victim).unwrap();
    std::fs::remove_file(&victim).unwrap();
    let third = preprocess("demo/adni/scans.csv", "cache");
    assert!(
        String::from_utf8_lossy(&third.stdout).contains(&format!("1 scans preprocessed, {} reused", rows.len() - 1))
    );
    assert_eq!(std::fs::read(&victim).unwrap(), before);

    // Without label maps beside the scans: the same cache, and no labels/.
    assert!(preprocess("plain/adni/scans.csv", "cache_plain").status.success());
    assert!(!d.join("cache_plain/labels").exists());
    let plain_index = std::fs::read_to_string(d.join("cache_plain/index.csv")).unwrap();
    assert_eq!(plain_index, std::fs::read_to_string(&index).unwrap());
    for row in &rows {
        let (a, b) = (d.join("cache").join(&row.cache), d.join("cache_plain").join(&row.cache));
        assert_eq!(std::fs::read(a).unwrap(), std::fs::read(b).unwrap(), "{}", row.cache);
    }

    // A label map that is not in its scan's grid fails that scan, naming the label file.
    let (a, b) = (paths[0].strip_suffix(".nii.gz").unwrap(), paths[1].strip_suffix(".nii.gz").unwrap());
    let wrong = d.join(format!("demo/adni/{a}_labels.nii.gz"));
    std::fs::copy(d.join(format!("demo/adni/{b}_labels.nii.gz")), &wrong).unwrap();
    let out = preprocess("demo/adni/scans.csv", "cache_bad");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(&format!("{a}_labels.nii.gz")) && stderr.contains("grid"), "{stderr}");
    let failures = std::fs::read_to_string(d.join("cache_bad/failures.csv")).unwrap();
    assert!(failures.contains(paths[0]), "{failures}");
}

#[test]
fn synth_is_deterministic() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    ok(d, &["synth", "--out", "a", "--preset", "tiny", "--seed", "11"]);
    ok(d, &["synth", "--out", "b", "--preset", "tiny", "--seed", "11"]);
    for f in ["adni/ADNIMERGE.csv", "adni/scans.csv", "oasis/oasis_longitudinal.csv"] {
        assert_eq!(std::fs::read(d.join("a").join(f)).unwrap(), std::fs::read(d.join("b").join(f)).unwrap(), "{f}");
    }
    let scans = std::fs::read_to_string(d.join("a/adni/scans.csv")).unwrap();
    let first = scans.lines().nth(1).unwrap().split(',').next().unwrap();
    assert_eq!(
        std::fs::read(d.join("a/adni").join(first)).unwrap(),
        std::fs::read(d.join("b/adni").join(first)).unwrap()
    );
}

#[test]
fn synth_refuses_a_non_empty_folder() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("x")).unwrap();
    std::fs::write(dir.path().join("x/keep.txt"), "mine").unwrap();
    let err = fails(dir.path(), &["synth", "--out", "x", "--preset", "tiny"]);
    assert!(err.contains("not empty"), "{err}");
    assert_eq!(std::fs::read_to_string(dir.path().join("x/keep.txt")).unwrap(), "mine");
}

#[test]
fn params_reports_trainable_groups() {
    let dir = tempfile::tempdir().unwrap();
    let v: Value = serde_json::from_str(&ok(dir.path(), &["params", "--shape", "tiny", "--json"])).unwrap();
    let groups = v["groups"].as_array().unwrap();
    let sum: u64 = groups.iter().map(|g| g["params"].as_u64().unwrap()).sum();
    assert_eq!(sum, v["trainable"].as_u64().unwrap());
    let vp = groups.iter().find(|g| g["group"] == "visual prompts").unwrap();
    assert_eq!(vp["params"], 2 * 20 * 64, "2 layers x 20 prompts x 64 wide");
    let off: Value = serde_json::from_str(&ok(
        dir.path(),
        &["params", "--shape", "tiny", "--json", "--visual-prompts", "0", "--no-mmse", "--cross-attention", "off"],
    ))
    .unwrap();
    assert!(off["trainable"].as_u64().unwrap() < v["trainable"].as_u64().unwrap());
}

#[test]
fn params_counts_the_perceiver_and_lga_at_the_m3d_shape() {
    let dir = tempfile::tempdir().unwrap();
    let count = |extra: &[&str]| -> Value {
        let mut args = vec!["params", "--json", "--visual-prompts", "0"];
        args.extend_from_slice(extra);
        serde_json::from_str(&ok(dir.path(), &args)).unwrap()
    };
    let group = |v: &Value, name: &str| {
        v["groups"].as_array().unwrap().iter().find(|g| g["group"] == name).unwrap()["params"].as_u64().unwrap()
    };
    let lora = count(&["--adaptation", "lora"]);
    let perceiver = count(&["--adaptation", "perceiver-lora"]);
    // M3D-LaMed's projector at width 768, depth 2: 768·768 + 768 twice.
    assert_eq!(group(&perceiver, "spatial-pooling perceiver"), 2 * (768 * 768 + 768));
    assert_eq!(group(&perceiver, "LoRA / adapters"), group(&lora, "LoRA / adapters"));
    assert_eq!(perceiver["trainable"].as_u64().unwrap() - lora["trainable"].as_u64().unwrap(), 2 * (768 * 768 + 768));
    // At Phi-3's width, as M3D-LaMed feeds its language model: 768·3072 + 3072 + 3072² + 3072.
    let wide = count(&["--adaptation", "perceiver-lora", "--perceiver-width", "3072"]);
    assert_eq!(group(&wide, "spatial-pooling perceiver"), 11_802_624);
    // LGA as released (4.18M), and the setting that gives the paper's +85.2M.
    assert_eq!(group(&count(&["--adaptation", "lga"]), "language-guided adapter"), 4_178_208);
    let big = count(&[
        "--adaptation",
        "lga",
        "--lga-every",
        "1",
        "--lga-reduction",
        "1",
        "--lga-ffn-ratio",
        "1",
        "--no-lga-final-injector",
    ]);
    assert_eq!(group(&big, "language-guided adapter"), 85_165_056);
    // Every variant in one table, beside the paper's figures.
    let rows: Value = serde_json::from_str(&ok(dir.path(), &["params", "--compare", "--json"])).unwrap();
    let row = |v: &str| rows.as_array().unwrap().iter().find(|r| r["variant"] == v).unwrap().clone();
    assert_eq!(row("full")["trainable"], 6_410_498);
    assert_eq!(row("full")["paper_trainable"], "+12.2M");
    assert_eq!(row("perceiver-lora")["trainable"], perceiver["trainable"]);
    assert_eq!(row("lga")["paper_trainable"], "+85.2M");
    assert_eq!(
        row("full-finetune")["trainable"].as_u64().unwrap() + row("full-finetune")["frozen"].as_u64().unwrap(),
        row("full")["trainable"].as_u64().unwrap() + row("full")["frozen"].as_u64().unwrap() - 184_320
    );
}

/// RadFM's ViT at 128³ with bert-base-uncased: the method's count as on M3D-CLIP, LoRA sized to
/// its attention (8 × 64 = 512 inside a 768-wide stream), the frozen ViT and BERT.
#[test]
fn params_counts_the_method_at_the_radfm_shape() {
    let dir = tempfile::tempdir().unwrap();
    let count = |extra: &[&str]| -> Value {
        let mut args = vec!["params", "--json", "--shape", "radfm"];
        args.extend_from_slice(extra);
        serde_json::from_str(&ok(dir.path(), &args)).unwrap()
    };
    let method = count(&[]);
    assert_eq!(method["trainable"], 6_410_498);
    assert_eq!(method["frozen"], 176_633_089);
    let lora = count(&["--visual-prompts", "0", "--adaptation", "lora"]);
    let group = lora["groups"].as_array().unwrap().iter().find(|g| g["group"] == "LoRA / adapters").unwrap();
    // Rank 8 on qkv (768 → 3·512) and out_proj (512 → 768) in each of 12 blocks.
    assert_eq!(group["params"], 12 * 8 * ((768 + 1536) + (512 + 768)));
    assert_eq!(lora["trainable"], 6_410_498 - 184_320 + 344_064);
}

/// Med3DVLM's released CLIP at 128³: one mixer block of 768 after DCFormer carries the prompts
/// (20 for its one layer), and adaptations that need a ViT's blocks are refused.
#[test]
fn params_counts_the_method_at_the_med3dvlm_shape() {
    let dir = tempfile::tempdir().unwrap();
    let v: Value = serde_json::from_str(&ok(dir.path(), &["params", "--json", "--shape", "med3dvlm"])).unwrap();
    let group = |name: &str| {
        v["groups"].as_array().unwrap().iter().find(|g| g["group"] == name).unwrap()["params"].as_u64().unwrap()
    };
    let block = (768 * 2304) + (768 * 768 + 768) + (768 * 3072 + 3072) + (3072 * 768 + 768) + 4 * 768;
    assert_eq!(group("token mixer (CNN tower)"), block + 2 * 768);
    assert_eq!(group("visual prompts"), 20 * 768);
    assert_eq!(v["trainable"], 13_328_642);
    let e = fails(dir.path(), &["params", "--shape", "med3dvlm", "--visual-prompts", "0", "--adaptation", "lora"]);
    assert!(e.contains("CNN"), "{e}");
}

#[test]
fn bench_step_times_each_adaptation() {
    let dir = tempfile::tempdir().unwrap();
    let step_with = |kind: &str, attention: &str| -> Value {
        let out = ok(
            dir.path(),
            &[
                "bench-step",
                "--shape",
                "phantom",
                "--batch",
                "2",
                "--repeat",
                "1",
                "--adaptation",
                kind,
                "--attention",
                attention,
            ],
        );
        serde_json::from_str(out.lines().last().unwrap()).unwrap()
    };
    let step = |kind: &str| step_with(kind, "block-wise");
    let method = step("none");
    assert_eq!(method["attention"], "block-wise");
    let decomposed = step_with("none", "decomposed");
    assert_eq!(decomposed["attention"], "decomposed");
    assert_eq!(decomposed["trainable_params"], method["trainable_params"]);
    for kind in ["lora", "perceiver-lora", "lga", "full"] {
        let v = step(kind);
        assert_eq!(v["adaptation"], kind);
        assert!(v["scans_per_s"].as_f64().unwrap() > 0.0, "{v}");
        assert_ne!(v["trainable_params"], method["trainable_params"], "{kind}");
    }
    let err = fails(dir.path(), &["bench-step", "--shape", "phantom", "--adaptation", "full", "--precision", "f16"]);
    assert!(err.contains("fp32"), "{err}");
}

#[test]
fn a_table_or_scan_list_without_rows_is_an_error_naming_it() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    ok(d, &["synth", "--out", "demo", "--preset", "tiny", "--seed", "2"]);
    let header = |file: &str| std::fs::read_to_string(d.join(file)).unwrap().lines().next().unwrap().to_string();
    // Windows line endings too: the header alone, then nothing.
    std::fs::write(d.join("demo/adni/empty_table.csv"), format!("{}\r\n", header("demo/adni/ADNIMERGE.csv"))).unwrap();
    std::fs::write(d.join("demo/adni/empty_scans.csv"), format!("{}\n", header("demo/adni/scans.csv"))).unwrap();
    let run = |scans: &str, table: &str| {
        fails(d, &["preprocess", "--scans", scans, "--table", table, "--out", "cache", "--shape", "16,32,32"])
    };
    let err = run("demo/adni/scans.csv", "demo/adni/empty_table.csv");
    assert!(err.contains("empty_table.csv") && err.contains("no rows"), "{err}");
    let err = run("demo/adni/empty_scans.csv", "demo/adni/ADNIMERGE.csv");
    assert!(err.contains("empty_scans.csv") && err.contains("no scans"), "{err}");
    assert!(!d.join("cache").exists(), "nothing is written");
}
