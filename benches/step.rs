//! Training-step throughput of the method, in scans per second: encode the batch's volumes with
//! deep visual prompts and the [MMSE] token through the frozen ViT, the texts with text prompts
//! through the frozen BERT, cross-attention, the loss, backward, and an AdamW step on the
//! trainable parts. `scripts/bench_step.py` runs the same step in PyTorch; `scripts/bench_step.sh`
//! runs both and prints ratios.
//!
//!   cargo bench --bench step                        # both shapes
//!   ADFIT_BENCH_SHAPE=phantom cargo bench --bench step
//!   ADFIT_BENCH_ATTENTION=decomposed cargo bench --bench step   # the attention path before adfit's op
//!   ADFIT_BENCH_MALLOPT=1 cargo bench --bench step              # glibc's malloc thresholds raised
//!
//! Shapes: `phantom` (adfit's own backbone: 64³, 16³ patches, width 64, 4 + 2 blocks; batch 8)
//! and `m3d` (M3D-CLIP: 128³, 4×16×16 patches = 2048 tokens, ViT-B and bert-base; batch 2).
//! Random weights; texts of 96 tokens. Each shape runs in its own child process so its peak
//! RSS is its own. One JSON line per shape.

mod common;
use common::*;
use std::process::Command;

use adfit::backend::{dispatch, DeviceSpec};
use adfit::model::attention::TrainingAttention;
use adfit::train::step_bench::{BenchShape, StepBench};
use clap::ValueEnum;

fn single(name: &str, repeat: usize, tokens: usize) {
    raise_malloc_thresholds();
    let shape = if name == "m3d" { BenchShape::M3d } else { BenchShape::Phantom };
    let attention = std::env::var("ADFIT_BENCH_ATTENTION")
        .map(|a| TrainingAttention::from_str(&a, true).expect("ADFIT_BENCH_ATTENTION: block-wise or decomposed"))
        .unwrap_or_default();
    let batch = std::env::var("ADFIT_BENCH_BATCH").ok().and_then(|v| v.parse().ok()).unwrap_or(shape.default_batch());
    let t = dispatch(
        DeviceSpec::Cpu,
        StepBench {
            shape,
            batch,
            tokens,
            repeat: repeat.max(1),
            precision: Default::default(),
            adaptation: Default::default(),
            attention,
        },
    )
    .expect("step bench");
    println!(
        "{{\"tool\": \"adfit\", \"backend\": \"flex\", \"shape\": \"{name}\", \"attention\": {}, \"batch\": {batch}, \"tokens\": {tokens}, \
         \"seconds\": {:.4}, \"scans_per_s\": {:.4}, \"peak_rss_mib\": {:.1}, \"threads\": {}}}",
        serde_json::to_string(&attention).expect("a name"),
        t.seconds,
        t.scans_per_s,
        peak_rss_mib(),
        rayon::current_num_threads()
    );
}

fn main() {
    let repeat = std::env::var("ADFIT_BENCH_REPEAT").ok().and_then(|v| v.parse().ok()).unwrap_or(3);
    if let Ok(name) = std::env::var("ADFIT_BENCH_SINGLE") {
        single(&name, repeat, 96);
        return;
    }
    let shapes = std::env::var("ADFIT_BENCH_SHAPE").unwrap_or_else(|_| "phantom,m3d".into());
    let exe = std::env::current_exe().expect("own path");
    for name in shapes.split(',') {
        let out = Command::new(&exe).env("ADFIT_BENCH_SINGLE", name).output().expect("child");
        print!("{}", String::from_utf8_lossy(&out.stdout));
        if !out.status.success() {
            eprintln!("{name} failed: {}", String::from_utf8_lossy(&out.stderr));
        }
    }
}
