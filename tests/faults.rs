//! Faults a long job meets in the wild: SIGKILL at any point of `preprocess`, `experiment` and
//! `pretrain` (the finetune case is in tests/finetune.rs), a full disk, two processes aiming at one
//! output folder, a panic, hostile inputs on the command line, and a scan list with scans the
//! table does not know. Each must end in a clear message, nothing half-written under a final
//! name, and a rerun that completes with the results of an uninterrupted run.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{adfit, fails, ok, setup};

/// Every file under `dir` by relative path, skipping hidden ones (lock file, temporaries).
fn files(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if e.file_name().to_string_lossy().starts_with('.') {
                continue;
            }
            if p.is_dir() {
                stack.push(p);
            } else {
                out.insert(p.strip_prefix(dir).unwrap().to_path_buf(), std::fs::read(&p).unwrap());
            }
        }
    }
    out
}

/// Hidden files under `dir` other than the lock file: a killed run's temporaries.
fn walk_hidden(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let name = e.file_name().to_string_lossy().to_string();
            if e.path().is_dir() {
                stack.push(e.path());
            } else if name.starts_with('.') && name != ".adfit.lock" {
                out.push(e.path());
            }
        }
    }
    out
}

/// Run `args` and SIGKILL it after `after`; true when it was still running.
fn kill_after(d: &Path, args: &[&str], after: Duration) -> bool {
    let mut child = Command::new(env!("CARGO_BIN_EXE_adfit"))
        .args(args)
        .current_dir(d)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(after);
    let running = child.try_wait().unwrap().is_none();
    let _ = child.kill(); // SIGKILL
    let _ = child.wait();
    running
}

/// The kill test of one command: an uninterrupted reference run into `reference`, then runs into
/// fresh folders killed at fractions of its duration. After each kill, every file under a final
/// name that `stable` accepts must equal the reference's (written whole or not at all; a run's
/// `best.safetensors`, rewritten at each improvement, must be whole); the rerun
/// (with `resume` flags) must then reproduce every `stable` file of the reference.
///
/// `complete` says whether a killed folder already holds a finished result (a kill that came after
/// the last write): `pretrain` rightly refuses to overwrite a finished backbone, so there is
/// nothing to rerun.
fn kill_and_rerun(
    d: &Path,
    args: &dyn Fn(&str) -> Vec<String>,
    resume: &[&str],
    stable: &dyn Fn(&Path) -> bool,
    complete: &dyn Fn(&Path) -> bool,
) {
    let run = |out: &str, extra: &[&str]| {
        let mut a = args(out);
        a.extend(extra.iter().map(|s| s.to_string()));
        ok(d, &a.iter().map(String::as_str).collect::<Vec<_>>());
    };
    let t = Instant::now();
    run("reference", &[]);
    let took = t.elapsed();
    let reference: BTreeMap<_, _> = files(&d.join("reference")).into_iter().filter(|(p, _)| stable(p)).collect();
    assert!(!reference.is_empty());
    let mut killed_while_running = 0;
    for (i, fraction) in [0.15, 0.45, 0.8].iter().enumerate() {
        let out = format!("killed{i}");
        let a = args(&out);
        let after = took.mul_f64(*fraction).max(Duration::from_millis(30));
        killed_while_running += kill_after(d, &a.iter().map(String::as_str).collect::<Vec<_>>(), after) as usize;
        if d.join(&out).exists() {
            for (p, bytes) in files(&d.join(&out)) {
                if let Some(want) = reference.get(&p) {
                    if p.ends_with(adfit::run_folder::BEST) {
                        // Rewritten whenever validation improves: a kill between two
                        // improvements leaves an earlier best, whole. The rerun must still
                        // reproduce the reference's (checked below).
                        let whole = adfit::model::weights::read_safetensors(&d.join(&out).join(&p));
                        assert!(whole.is_ok(), "{out}/{}: a partial file under its final name", p.display());
                    } else {
                        assert!(
                            &bytes == want,
                            "{out}/{}: a partial or different file under its final name",
                            p.display()
                        );
                    }
                }
            }
        }
        if !complete(&d.join(&out)) {
            run(&out, resume);
        }
        let leftovers: Vec<_> = walk_hidden(&d.join(&out));
        assert!(leftovers.is_empty(), "{out}: temporaries left after the rerun: {leftovers:?}");
        let again: BTreeMap<_, _> = files(&d.join(&out)).into_iter().filter(|(p, _)| stable(p)).collect();
        assert_eq!(
            again.keys().collect::<Vec<_>>(),
            reference.keys().collect::<Vec<_>>(),
            "{out}: not the reference's files after the rerun"
        );
        for (p, want) in &reference {
            assert!(&again[p] == want, "{out}/{} differs from an uninterrupted run", p.display());
        }
    }
    println!("killed {killed_while_running} of 3 runs while they were running (reference run {took:?})");
    assert!(killed_while_running >= 1, "no kill landed while the command ran");
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

#[test]
fn a_killed_preprocess_leaves_whole_files_and_reruns_to_the_same_cache() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    setup(d, "21");
    let args = |out: &str| {
        let mut a = strings(&common::preprocess_args(out, "24,40,40"));
        a.extend(strings(&["--threads", "1"]));
        a
    };
    kill_and_rerun(d, &args, &[], &|_| true, &|_| false);
}

#[test]
fn a_killed_pretrain_leaves_no_backbone_and_reruns_to_the_same_weights() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    // The tiny phantom pre-training, at 12 steps so that the kills land inside it.
    let args = |out: &str| {
        let mut a = strings(&["pretrain", "--out", out]);
        a.extend(strings(&common::TINY_PRETRAIN));
        let steps = a.iter().position(|f| f == "--steps").unwrap() + 1;
        a[steps] = "12".into();
        a
    };
    // pretrain.json records the time taken, and the curves plot is drawn from the log.
    let stable = |p: &Path| !matches!(p.to_str(), Some("pretrain.json" | "pretrain_curves.png"));
    kill_and_rerun(d, &args, &[], &stable, &|out| out.join("model.safetensors").exists());
}

#[test]
fn a_killed_experiment_resumes_to_the_same_tables() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    setup(d, "22");
    let args = |out: &str| {
        strings(&[
            "experiment",
            "--backbone",
            "backbone",
            "--index",
            "cache/index.csv",
            "--split",
            "split.csv",
            "--folds",
            "0",
            "--seeds",
            "0,1",
            "--variants",
            "full",
            "--epochs",
            "2",
            "--batch-size",
            "4",
            "--out",
            out,
        ])
    };
    // Tables of metrics and the runs' weights and predictions; not logs, plots or timings.
    let stable = |p: &Path| {
        let s = p.to_string_lossy();
        s.ends_with("results.csv")
            || s.ends_with("test_metrics.json")
            || s.ends_with("best.safetensors")
            || s.ends_with("predictions.csv")
    };
    kill_and_rerun(d, &args, &[], &stable, &|_| false);
}

/// Run a shell script with `ADFIT` set to the binary; returns (status code, stderr).
fn sh(d: &Path, script: &str) -> (i32, String) {
    let out = Command::new("sh")
        .args(["-c", script])
        .env("ADFIT", env!("CARGO_BIN_EXE_adfit"))
        .current_dir(d)
        .output()
        .unwrap();
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stderr).to_string())
}

#[test]
fn a_full_disk_is_a_clear_error_and_leaves_no_corrupt_file() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    setup(d, "23");
    std::fs::create_dir_all(d.join("saved")).unwrap();
    std::fs::create_dir_all(d.join("full")).unwrap();
    let job = "\"$ADFIT\" preprocess --scans demo/adni/scans.csv --table demo/adni/ADNIMERGE.csv --out full \
               --shape 16,32,32 --threads 1 2>err.txt; echo $? > rc.txt; cp -a full/. saved/";
    // A real ENOSPC: a 200 KiB tmpfs, mounted in a private namespace (or directly as root).
    let tmpfs = format!("mount -t tmpfs -o size=200k tmpfs full || exit 90; {job}");
    let (mut code, _) = sh(d, &format!("unshare -rm sh -c '{tmpfs}'"));
    if code != 0 {
        code = sh(d, &format!("sh -c '{tmpfs}'; umount full 2>/dev/null; exit 0")).0;
    }
    let expect = if code == 0 && d.join("rc.txt").exists() {
        "No space left on device"
    } else {
        // No tmpfs here: a file-size limit makes write(2) fail the same way (EFBIG).
        let (c, e) = sh(d, &format!("trap '' XFSZ; ulimit -f 150; {job}"));
        assert_eq!(c, 0, "{e}");
        "File too large"
    };
    let rc: i32 = std::fs::read_to_string(d.join("rc.txt")).unwrap().trim().parse().unwrap();
    let err = std::fs::read_to_string(d.join("err.txt")).unwrap();
    println!("full disk ({expect}): exit {rc}\n{err}");
    assert_eq!(rc, 1, "{err}");
    assert!(err.contains(expect) && err.contains(".vol"), "the error must say why and name the file:\n{err}");
    // Whatever reached a final name is whole.
    let saved = d.join("saved");
    let mut whole = 0;
    for (p, _) in files(&saved) {
        if p.extension().is_some_and(|e| e == "vol") {
            adfit::data::cache::cached_shape(&saved.join(&p)).unwrap();
            whole += 1;
        }
    }
    if saved.join("index.csv").exists() {
        adfit::data::preprocess::read_index(&saved.join("index.csv")).unwrap();
    }
    println!("{whole} whole volumes made it before the disk filled");
}

#[test]
fn a_second_writer_of_an_output_folder_is_refused_and_a_dead_one_does_not_block() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    setup(d, "24");
    let args = common::preprocess_args("busy", "16,32,32");
    // Another process (this test) holds the folder: adfit refuses and says so.
    let held = adfit::lock::OutputLock::acquire(&d.join("busy")).unwrap();
    let err = fails(d, &args);
    assert!(err.contains("busy") && err.contains("another adfit process is writing"), "{err}");
    assert!(err.contains(&format!("pid {}", std::process::id())), "the holder is named: {err}");
    assert!(!d.join("busy/index.csv").exists());
    drop(held);
    // A writer killed while holding the lock leaves nothing stuck.
    kill_after(d, &args, Duration::from_millis(150));
    ok(d, &args);
}

#[test]
fn a_panic_exits_non_zero_and_names_the_input() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    setup(d, "25");
    let scans = std::fs::read_to_string(d.join("demo/adni/scans.csv")).unwrap();
    let victim = scans.lines().nth(2).unwrap().split(',').next().unwrap().to_string();
    let out = Command::new(env!("CARGO_BIN_EXE_adfit"))
        .args(["preprocess", "--scans", "demo/adni/scans.csv", "--table", "demo/adni/ADNIMERGE.csv"])
        .args(["--out", "p", "--shape", "16,32,32"])
        .env("ADFIT_INJECT_PANIC", &victim)
        .current_dir(d)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    println!("{err}");
    assert_eq!(out.status.code(), Some(101), "{err}");
    assert!(err.contains("internal error") && err.contains("while processing: scan") && err.contains(&victim), "{err}");
}

#[test]
fn scans_missing_from_the_table_fail_by_default_and_pass_within_an_allowance() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    setup(d, "26");
    let mut scans = std::fs::read_to_string(d.join("demo/adni/scans.csv")).unwrap();
    let header = scans.lines().next().unwrap().to_string();
    let first = scans.lines().nth(1).unwrap().to_string();
    // An unscheduled scan: a real file, but a date no visit of its subject is near.
    let cols: Vec<&str> = header.split(',').collect();
    let path_col = cols.iter().position(|c| *c == "path").unwrap();
    let mut row: Vec<String> = first.split(',').map(str::to_string).collect();
    let src = d.join("demo/adni").join(&row[path_col]);
    row[path_col] = "unscheduled.nii.gz".into();
    match cols.iter().position(|c| *c == "image_id") {
        Some(id) => row[id] = "999999".into(),
        None => row[cols.iter().position(|c| *c == "date").unwrap()] = "1990-01-01".into(),
    }
    std::fs::copy(src, d.join("demo/adni/unscheduled.nii.gz")).unwrap();
    scans.push_str(&row.join(","));
    scans.push('\n');
    std::fs::write(d.join("demo/adni/extra.csv"), &scans).unwrap();
    let args = |allow: &str| {
        vec![
            "preprocess".to_string(),
            "--scans".into(),
            "demo/adni/extra.csv".into(),
            "--table".into(),
            "demo/adni/ADNIMERGE.csv".into(),
            "--out".into(),
            "u".into(),
            "--shape".into(),
            "16,32,32".into(),
            "--allow-unmatched".into(),
            allow.into(),
        ]
    };
    let run = |allow: &str| adfit(d, &args(allow).iter().map(String::as_str).collect::<Vec<_>>());
    let strict = run("0");
    let err = String::from_utf8_lossy(&strict.stderr);
    assert_eq!(strict.status.code(), Some(1), "{err}");
    assert!(err.contains("1 of") && err.contains("--allow-unmatched"), "{err}");
    assert!(d.join("u/index.csv").exists() && d.join("u/failures.csv").exists());
    for allow in ["1", "5%"] {
        let out = run(allow);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        assert!(String::from_utf8_lossy(&out.stderr).contains("no visit in the table"));
        let failures = std::fs::read_to_string(d.join("u/failures.csv")).unwrap();
        assert!(failures.contains("unscheduled"), "{failures}");
    }
}

#[test]
fn hostile_inputs_on_the_command_line_fail_cleanly() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    use std::io::Write;
    // A small .nii.gz that inflates to far more than its header's voxels, and one whose header
    // asks for 8 GB: both refused with the file named, without the memory.
    let mut header = vec![0u8; 352];
    header[0..4].copy_from_slice(&348i32.to_le_bytes());
    for (i, v) in [3i16, 100, 100, 100, 1, 1, 1, 1].iter().enumerate() {
        header[40 + 2 * i..42 + 2 * i].copy_from_slice(&v.to_le_bytes());
    }
    header[70..72].copy_from_slice(&16i16.to_le_bytes()); // float32
    header[72..74].copy_from_slice(&32i16.to_le_bytes());
    for i in 0..4 {
        header[76 + 4 * i..80 + 4 * i].copy_from_slice(&1f32.to_le_bytes());
    }
    header[108..112].copy_from_slice(&352f32.to_le_bytes());
    header[344..348].copy_from_slice(b"n+1\0");
    let bomb = |name: &str, header: &[u8], zeros: usize| {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        gz.write_all(header).unwrap();
        let block = vec![0u8; 1 << 20];
        let mut left = zeros;
        while left > 0 {
            let n = left.min(block.len());
            gz.write_all(&block[..n]).unwrap();
            left -= n;
        }
        std::fs::write(d.join(name), gz.finish().unwrap()).unwrap();
    };
    bomb("bomb.nii.gz", &header, 64 << 20);
    let out = Command::new(env!("CARGO_BIN_EXE_adfit"))
        .args(["inspect", "bomb.nii.gz"])
        .env("ADFIT_MAX_INPUT", "1M")
        .current_dir(d)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("bomb.nii.gz") && err.contains("--max-input"), "{err}");
    // Under the default cap the same file reads: the zeros past the header's 4 MB are inflated
    // only to check the CRC, into no buffer.
    ok(d, &["inspect", "bomb.nii.gz"]);
    let err = fails(d, &["inspect", "bomb.nii.gz", "--max-input", "8M"]);
    assert!(err.contains("bomb.nii.gz") && err.contains("decompressed file"), "{err}");
    let mut huge = header.clone();
    for (i, v) in [2000i16, 2000, 2000].iter().enumerate() {
        huge[42 + 2 * i..44 + 2 * i].copy_from_slice(&v.to_le_bytes());
    }
    huge[70..72].copy_from_slice(&2i16.to_le_bytes()); // uint8: 8e9 bytes
    huge[72..74].copy_from_slice(&8i16.to_le_bytes());
    bomb("huge.nii.gz", &huge, 1 << 20);
    let err = fails(d, &["inspect", "huge.nii.gz"]);
    assert!(err.contains("huge.nii.gz") && err.contains("voxels"), "{err}");

    // A Windows-saved ADNIMERGE (CRLF, BOM) with a quoted two-line cell: the bad cell's line is
    // the line an editor shows.
    let table = "\u{feff}RID,PTID,VISCODE,EXAMDATE,DX_bl,AGE,PTGENDER,MMSE,Hippocampus,Ventricles,WholeBrain,\
                 Entorhinal,Fusiform,MidTemp,ICV,IMAGEUID,DX,COMMENT\r\n\
                 2,011_S_0002,bl,2005-09-08,CN,74.3,Male,28,8336,118233,1229740,4177,16559,27936,1984660,35475,CN,\
                 \"two\r\nlines\"\r\n\
                 3,011_S_0003,bl,2005-09-12,AD,81.3,Female,twenty,,,,,,,,32237,Dementia,\r\n";
    std::fs::write(d.join("crlf.csv"), table).unwrap();
    let err = fails(d, &["inspect", "crlf.csv"]);
    assert!(err.contains("crlf.csv:4:") && err.contains("MMSE"), "{err}");
}

#[test]
fn a_truncated_checkpoint_or_cache_file_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    setup(d, "27");
    let run = |epochs: &str, resume: bool| {
        let mut a = vec!["finetune", "--backbone", "backbone", "--index", "cache/index.csv", "--split", "split.csv"];
        a.extend(["--fold", "0", "--epochs", epochs, "--batch-size", "4", "--out", "r"]);
        if resume {
            a.push("--resume");
        }
        adfit(d, &a)
    };
    assert!(run("1", false).status.success());
    let pointer: serde_json::Value = common::read_json(d.join("r/checkpoint.json"));
    let ck = d.join("r").join(pointer["latest"].as_str().unwrap());
    for file in ["optimizer.mpk", "trainable.safetensors"] {
        let p = ck.join(file);
        let good = std::fs::read(&p).unwrap();
        std::fs::write(&p, &good[..good.len() / 2]).unwrap();
        let out = run("2", true);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && err.contains(file), "a truncated {file} must be named:\n{err}");
        std::fs::write(&p, &good).unwrap();
    }
    // A truncated cache volume fails its scan's training with the file named.
    let vol = std::fs::read_dir(d.join("cache/volumes")).unwrap().flatten().next().unwrap().path();
    let good = std::fs::read(&vol).unwrap();
    std::fs::write(&vol, &good[..good.len() - 100]).unwrap();
    let out = adfit(d, &["eval", "--backbone", "backbone", "--index", "cache/index.csv", "--out", "z"]);
    let err = String::from_utf8_lossy(&out.stderr);
    let name = vol.file_name().unwrap().to_string_lossy().to_string();
    assert!(!out.status.success() && err.contains(&name) && err.contains("truncated"), "{err}");
}

#[test]
fn an_index_without_scans_is_an_error_for_the_commands_that_need_rows() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    std::fs::write(
        d.join("index.csv"),
        "scan,subject,visit,date,label,mmse,age,sex,hippocampus,ventricles,whole_brain,entorhinal,fusiform,\
         mid_temp,icv,report,cache,source,table_line\r\n",
    )
    .unwrap();
    let err = fails(d, &["split", "--index", "index.csv", "--out", "split.csv"]);
    assert!(err.contains("index.csv") && err.contains("no scans"), "{err}");
    assert!(!d.join("split.csv").exists());
}

#[test]
fn a_config_claiming_a_huge_model_is_refused_before_any_allocation() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    common::tiny_backbone(&d.join("b"));
    let path = d.join("b/config.json");
    let mut cfg: serde_json::Value = common::read_json(&path);
    // 100,000 wide: placeholders for its missing keys alone would take hundreds of GB.
    cfg["hidden_size"] = serde_json::json!(100_000);
    std::fs::write(&path, serde_json::to_string(&cfg).unwrap()).unwrap();
    let err = fails(d, &["embed", "--backbone", "b", "--text", "A photo of AD.", "--out", "e.json"]);
    assert!(err.contains("config.json") && err.contains("does not belong to these weights"), "{err}");
}
