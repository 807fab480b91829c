//! `--device`: a device this binary cannot use is refused with a message that says how to get
//! it, and (built with `--features wgpu`) the GPU code path runs end to end on wgpu, which on a
//! machine without a GPU is Mesa's lavapipe (Vulkan on the CPU) running the same CubeCL kernels
//! as CUDA: fine-tuning agrees with the CPU run epoch by epoch, a checkpoint written on wgpu
//! resumes on the CPU, and evaluation of a wgpu-trained run agrees across devices.

mod common;
#[cfg_attr(not(feature = "wgpu"), allow(unused_imports))]
use common::{adfit, fails, ok, setup};

#[test]
fn a_device_this_binary_cannot_use_is_refused_with_how_to_get_it() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    common::tiny_backbone(&d.join("backbone"));
    let args = |device: &'static str| {
        ["embed", "--backbone", "backbone", "--text", "A photo of AD.", "--out", "o.json", "--device", device]
    };
    if !cfg!(feature = "cuda") {
        let e = fails(d, &args("cuda"));
        assert!(e.contains("--device cuda:0") && e.contains("cargo build --release --features cuda"), "{e}");
    }
    if !cfg!(feature = "wgpu") {
        let e = fails(d, &args("wgpu"));
        assert!(e.contains("--features wgpu"), "{e}");
    }
    let e = fails(d, &args("tpu"));
    assert!(e.contains("tpu") && e.contains("cpu, cuda, cuda:N, wgpu, wgpu:N or auto"), "{e}");
    assert!(!d.join("o.json").exists(), "a refused device leaves no output");
    // `auto` falls back to the CPU when there is no GPU, and runs.
    ok(d, &args("auto"));
    assert!(d.join("o.json").exists());
}

/// Whether wgpu can open a device here. Without one, say so loudly; under CI it is a failure.
#[cfg(feature = "wgpu")]
fn wgpu_available(d: &std::path::Path) -> bool {
    common::tiny_backbone(&d.join("probe-backbone"));
    let out =
        adfit(d, &["embed", "--backbone", "probe-backbone", "--text", "x", "--out", "probe.json", "--device", "wgpu"]);
    if out.status.success() {
        return true;
    }
    let err = String::from_utf8_lossy(&out.stderr);
    let msg =
        format!("\n!!!!! wgpu TESTS NOT RUN: no Vulkan device ({err}); install mesa-vulkan-drivers libvulkan1 !!!!!\n");
    assert!(std::env::var_os("CI").is_none(), "{msg}");
    eprintln!("{msg}");
    false
}

/// Per-epoch training losses of a run folder's metrics.csv.
#[cfg(feature = "wgpu")]
fn losses(path: &std::path::Path) -> Vec<f64> {
    let text = std::fs::read_to_string(path).unwrap();
    let mut rows = text.lines();
    let header: Vec<&str> = rows.next().unwrap().split(',').collect();
    let col = header.iter().position(|h| *h == "train_loss").unwrap();
    rows.map(|l| l.split(',').nth(col).unwrap().parse().unwrap()).collect()
}

/// The "N training scans/s" of each epoch's log line.
#[cfg(feature = "wgpu")]
fn speeds(stderr: &[u8]) -> Vec<f64> {
    String::from_utf8_lossy(stderr)
        .lines()
        .filter_map(|l| l.split('(').nth(1)?.strip_suffix(" training scans/s)")?.parse().ok())
        .collect()
}

/// Class probabilities of predictions.csv, row by row.
#[cfg(feature = "wgpu")]
fn probabilities(path: &std::path::Path) -> Vec<Vec<f64>> {
    let text = std::fs::read_to_string(path).unwrap();
    text.lines().skip(1).map(|l| l.split(',').skip(4).take(3).map(|v| v.parse().unwrap()).collect()).collect()
}

#[cfg(feature = "wgpu")]
#[test]
fn fine_tuning_on_wgpu_agrees_with_the_cpu_and_resumes_there() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    if !wgpu_available(d) {
        return;
    }
    setup(d, "3");
    let finetune = |out: &str, device: &str, epochs: &str| -> Vec<String> {
        let mut v: Vec<String> =
            ["finetune", "--backbone", "backbone", "--index", "cache/index.csv", "--split", "split.csv"]
                .iter()
                .map(|s| s.to_string())
                .collect();
        v.extend(
            ["--fold", "0", "--batch-size", "4", "--seed", "1", "--out", out, "--device", device, "--epochs", epochs]
                .map(String::from),
        );
        v
    };
    let run = |args: Vec<String>| {
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let started = std::time::Instant::now();
        let out = adfit(d, &refs);
        assert!(out.status.success(), "adfit {refs:?}:\n{}", String::from_utf8_lossy(&out.stderr));
        (out, started.elapsed().as_secs_f64())
    };
    let (cpu, cpu_s) = run(finetune("cpu", "cpu", "2"));
    let (gpu, gpu_s) = run(finetune("wgpu", "wgpu", "2"));
    let (lc, lg) = (losses(&d.join("cpu/metrics.csv")), losses(&d.join("wgpu/metrics.csv")));
    let worst = lc.iter().zip(&lg).map(|(a, b)| (a - b).abs() / a.abs()).fold(0.0, f64::max);
    eprintln!(
        "tiny finetune, 2 epochs: cpu losses {lc:?} ({:?} training scans/s, {cpu_s:.1} s in all); \
         wgpu (lavapipe) losses {lg:?} ({:?} training scans/s, {gpu_s:.1} s in all); worst relative loss difference {worst:.2e}",
        speeds(&cpu.stderr),
        speeds(&gpu.stderr)
    );
    assert_eq!(lc.len(), 2);
    assert!(worst < 1e-3, "per-epoch losses differ by {worst:.2e} relative between cpu and wgpu");

    // A checkpoint written on wgpu resumes on the CPU.
    run(finetune("moved", "wgpu", "1"));
    let mut resume = finetune("moved", "cpu", "2");
    resume.push("--resume".into());
    run(resume);
    let lm = losses(&d.join("moved/metrics.csv"));
    assert_eq!(lm.len(), 2);
    assert!((lm[1] - lc[1]).abs() / lc[1] < 1e-3, "resumed on cpu: {lm:?} vs {lc:?}");

    // The wgpu-trained run scored on both devices gives the same probabilities.
    for device in ["cpu", "wgpu"] {
        let out = format!("eval-{device}");
        ok(
            d,
            &[
                "eval",
                "--backbone",
                "backbone",
                "--run",
                "wgpu",
                "--index",
                "cache/index.csv",
                "--split",
                "split.csv",
                "--fold",
                "0",
                "--out",
                &out,
                "--device",
                device,
            ],
        );
    }
    let (pc, pg) =
        (probabilities(&d.join("eval-cpu/predictions.csv")), probabilities(&d.join("eval-wgpu/predictions.csv")));
    assert_eq!(pc.len(), pg.len());
    let worst = pc.iter().flatten().zip(pg.iter().flatten()).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
    eprintln!("eval of the wgpu run: {} scans, worst probability difference cpu vs wgpu {worst:.2e}", pc.len());
    assert!(worst < 1e-3, "{worst}");
}
