//! The pieces of adfit's block-wise attention op at M3D-CLIP's shape (batch 1, 12 heads, 2,070
//! tokens, head size 64) on Flex, where its time goes: the two kinds of matmul it runs (scores
//! `Q Kᵀ`, inner size 64 with an n×n output; `P V`, inner size n), a broadcast against a fresh
//! tensor and against a narrowed view, and the op's forward and backward passes beside Burn's
//! fused (inference) attention kernel. The op's passes run twice: built from Burn tensor ops
//! (`forward_blocks` / `backward_blocks`, what wgpu and CUDA run) and as adfit's CPU kernels
//! (`forward` / `backward` on Flex). One JSON line per piece: median seconds of 3 runs, and
//! GFLOP/s for the matmuls.
//!
//!   cargo bench --bench attention
//!
//! Two switches for the allocation study in the README: `ADFIT_BENCH_ONE_PRODUCT=1` runs only
//! one block's `Q_b Kᵀ` a hundred times (for `perf stat -e page-faults`), and
//! `ADFIT_BENCH_MALLOPT=1` first raises glibc's mmap and trim thresholds (32 MiB, 1 GiB).

use std::time::Instant;

mod common;
use common::raise_malloc_thresholds;

use adfit::model::chunked_attention::{backward, backward_blocks, forward, forward_blocks};
use burn::backend::Flex;
use burn::prelude::*;
use burn::tensor::Distribution;

type B = Flex;

fn median(f: impl Fn() -> Tensor<B, 4>) -> f64 {
    let run = || {
        let t = Instant::now();
        // Reading one value back waits for the result.
        let _ = f().slice([0..1, 0..1, 0..1, 0..1]).into_data();
        t.elapsed().as_secs_f64()
    };
    run();
    let mut times: Vec<f64> = (0..3).map(|_| run()).collect();
    times.sort_by(f64::total_cmp);
    times[1]
}

fn report(piece: &str, seconds: f64, flops: Option<f64>) {
    let rate = flops.map_or("null".to_string(), |f| format!("{:.1}", f / seconds / 1e9));
    println!("{{\"piece\": \"{piece}\", \"seconds\": {seconds:.4}, \"gflop_per_s\": {rate}}}");
}

fn main() {
    let d = Default::default();
    let (h, n, hd) = (12, 2070, 64);
    let r = |s: [usize; 4]| Tensor::<B, 4>::random(s, Distribution::Normal(0.0, 1.0), &d);
    let (q, k, v) = (r([1, h, n, hd]), r([1, h, n, hd]), r([1, h, n, hd]));
    let s = r([1, h, n, n]);
    let matmul_flops = Some(2.0 * (h * n * n * hd) as f64);
    raise_malloc_thresholds();
    if std::env::var("ADFIT_BENCH_ONE_PRODUCT").is_ok() {
        let q_block = q.clone().narrow(2, 0, 168) * 1.0;
        for _ in 0..100 {
            let _ = q_block.clone().matmul(k.clone().swap_dims(2, 3)).slice([0..1, 0..1, 0..1, 0..1]).into_data();
        }
        return;
    }
    report("Q Kt (scores, inner size 64)", median(|| q.clone().matmul(k.clone().swap_dims(2, 3))), matmul_flops);
    // The same product for one block's rows: a 16 MiB output instead of a fresh 205 MiB one.
    let q_block = q.clone().narrow(2, 0, 168) * 1.0;
    report(
        "Q_b Kt, one block (168 rows)",
        median(|| q_block.clone().matmul(k.clone().swap_dims(2, 3))),
        Some(2.0 * (h * 168 * n * hd) as f64),
    );
    report("P V (inner size n)", median(|| s.clone().matmul(v.clone())), matmul_flops);
    // One block's rows (168 of 2,070) minus a per-row value: fresh, and as a narrowed view.
    let rows = 168;
    let block = s.clone().narrow(2, 0, rows) * 1.0;
    let lse = r([1, h, n, 1]);
    let lse_fresh = lse.clone().narrow(2, rows, rows) * 1.0;
    report("block - fresh row values", median(|| block.clone() - lse_fresh.clone()), None);
    report("block - narrowed row values", median(|| block.clone() - lse.clone().narrow(2, rows, rows)), None);
    report(
        "fused attention (inference)",
        median(|| burn::tensor::module::attention(q.clone(), k.clone(), v.clone(), None, None, Default::default())),
        None,
    );
    report(
        "block-wise forward, tensor ops",
        median(|| forward_blocks(q.clone(), k.clone(), v.clone(), 0.125, None).0),
        None,
    );
    report("block-wise forward, CPU kernel", median(|| forward(q.clone(), k.clone(), v.clone(), 0.125, None).0), None);
    let (o, lse) = forward_blocks(q.clone(), k.clone(), v.clone(), 0.125, None);
    report(
        "block-wise backward, tensor ops",
        median(|| {
            let [dq, _, _] =
                backward_blocks(q.clone(), k.clone(), v.clone(), o.clone(), lse.clone(), q.clone(), 0.125, None);
            dq
        }),
        None,
    );
    let (o, lse) = forward(q.clone(), k.clone(), v.clone(), 0.125, None);
    report(
        "block-wise backward, CPU kernel",
        median(|| {
            let [dq, _, _] = backward(q.clone(), k.clone(), v.clone(), o.clone(), lse.clone(), q.clone(), 0.125, None);
            dq
        }),
        None,
    );
}
