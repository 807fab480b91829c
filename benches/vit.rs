//! ViT blocks at M3D-CLIP width (768 wide, 12 heads, MLP 3072) on the method's sequence
//! (CLS + MMSE + 20 prompts + 2048 patches = 2070 tokens): forward, and forward + backward with
//! only the deep prompts trainable. Backward modes: `forward_backward` (adfit's block-wise
//! attention op), `forward_backward_decomposed` (Burn's decomposed attention, the path before
//! it) and `forward_backward_checkpointed` (block-wise, with Burn's balanced checkpointing).
//! `scripts/bench_torch.py` measures the same shapes in PyTorch; `scripts/bench_scaling.py`
//! sweeps the token count.
//!
//!   cargo bench --bench vit                       # 2 layers, batch 1 and 2, every mode
//!   ADFIT_BENCH_LAYERS=12 cargo bench --bench vit
//!   ADFIT_BENCH_TOKENS=4096 ADFIT_BENCH_BATCHES=1 ADFIT_BENCH_MODES=forward_backward cargo bench --bench vit
//!
//! Each configuration runs in a fresh child process so its peak RSS (VmHWM) is its own. One JSON
//! line per configuration.

mod common;
use common::*;
use std::process::Command;
use std::time::Instant;

use adfit::model::attention::{set_training_attention, Block, Mlp, SelfAttention, TrainingAttention};
use burn::backend::autodiff::checkpoint::strategy::BalancedCheckpointing;
use burn::backend::{Autodiff, Flex};
use burn::module::{Initializer, Module, Param};
use burn::nn::{LayerNormConfig, LinearConfig};
use burn::prelude::*;
use burn::tensor::Distribution;

const HIDDEN: usize = 768;
const HEADS: usize = 12;
const MLP: usize = 3072;
const PROMPTS: usize = 20;

fn env(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn blocks<B: Backend>(layers: usize, device: &B::Device) -> Vec<Block<B>> {
    let init = Initializer::Normal { mean: 0.0, std: 0.02 };
    let lin = |i, o, bias| LinearConfig::new(i, o).with_bias(bias).with_initializer(init.clone()).init(device);
    (0..layers)
        .map(|_| Block {
            norm1: LayerNormConfig::new(HIDDEN).init(device),
            attn: SelfAttention {
                qkv: lin(HIDDEN, 3 * HIDDEN, false),
                out_proj: lin(HIDDEN, HIDDEN, true),
                heads: HEADS,
            },
            norm2: LayerNormConfig::new(HIDDEN).init(device),
            mlp: Mlp { linear1: lin(HIDDEN, MLP, true), linear2: lin(MLP, HIDDEN, true) },
        })
        .collect()
}

/// VPT-deep through the blocks: positions 2..22 are replaced by the layer's prompts.
fn run<B: Backend>(blocks: &[Block<B>], x: Tensor<B, 3>, prompts: &Tensor<B, 3>) -> Tensor<B, 3> {
    let [b, n, h] = x.dims();
    let mut x = x;
    for (l, block) in blocks.iter().enumerate() {
        let p = prompts.clone().narrow(0, l, 1).expand([b, PROMPTS, h]);
        let head = x.clone().narrow(1, 0, 2);
        let tail = x.narrow(1, 2 + PROMPTS, n - 2 - PROMPTS);
        x = block.forward(Tensor::cat(vec![head, p, tail], 1));
    }
    x
}

/// Forward + backward with only the prompts trainable; the checkpointing strategy is the
/// backend's (`BalancedCheckpointing` recomputes cheap ops in backward instead of keeping them).
fn forward_backward<AD: burn::tensor::backend::AutodiffBackend>(
    batch: usize,
    layers: usize,
    tokens: usize,
    repeat: usize,
) -> Vec<f64> {
    let device = Default::default();
    let bl: Vec<Block<AD>> = blocks::<AD>(layers, &device).into_iter().map(|b| b.no_grad()).collect();
    let x = Tensor::<AD, 3>::random([batch, tokens, HIDDEN], Distribution::Normal(0.0, 1.0), &device);
    let p = Param::from_tensor(Tensor::<AD, 3>::random(
        [layers, PROMPTS, HIDDEN],
        Distribution::Normal(0.0, 0.02),
        &device,
    ));
    let mut times = Vec::new();
    for i in 0..=repeat {
        let t = Instant::now();
        let out = run(&bl, x.clone(), &p.val());
        let grads = out.narrow(1, 0, 1).sum().backward();
        let g = p.grad(&grads).expect("prompt gradient");
        let _ = g.into_data();
        if i > 0 {
            times.push(t.elapsed().as_secs_f64());
        }
    }
    times
}

fn single(mode: &str, batch: usize, layers: usize, tokens: usize, repeat: usize) {
    let device = Default::default();
    let base_rss = current_rss_mib();
    let mut times = Vec::new();
    match mode {
        "forward" => {
            let bl = blocks::<Flex>(layers, &device);
            let x = Tensor::<Flex, 3>::random([batch, tokens, HIDDEN], Distribution::Normal(0.0, 1.0), &device);
            let p = Tensor::<Flex, 3>::random([layers, PROMPTS, HIDDEN], Distribution::Normal(0.0, 0.02), &device);
            for i in 0..=repeat {
                let t = Instant::now();
                let out = run(&bl, x.clone(), &p);
                let _ = out.narrow(1, 0, 1).into_data();
                if i > 0 {
                    times.push(t.elapsed().as_secs_f64());
                }
            }
        }
        "forward_backward" => times = forward_backward::<Autodiff<Flex>>(batch, layers, tokens, repeat),
        "forward_backward_decomposed" => {
            set_training_attention(TrainingAttention::Decomposed);
            times = forward_backward::<Autodiff<Flex>>(batch, layers, tokens, repeat)
        }
        "forward_backward_checkpointed" => {
            times = forward_backward::<Autodiff<Flex, BalancedCheckpointing>>(batch, layers, tokens, repeat)
        }
        other => panic!("unknown mode {other}"),
    }
    times.sort_by(f64::total_cmp);
    let peak = peak_rss_mib();
    println!(
        "{{\"tool\": \"adfit\", \"backend\": \"flex\", \"batch\": {batch}, \"mode\": \"{mode}\", \"layers\": {layers}, \"tokens\": {tokens}, \
         \"seconds\": {:.4}, \"peak_rss_mib\": {peak:.1}, \"delta_rss_mib\": {:.1}, \"threads\": {}}}",
        times[times.len() / 2],
        peak - base_rss,
        rayon::current_num_threads()
    );
}

fn main() {
    let layers = env("ADFIT_BENCH_LAYERS", 2);
    let tokens = env("ADFIT_BENCH_TOKENS", 2 + PROMPTS + 2048);
    let repeat = env("ADFIT_BENCH_REPEAT", 3);
    if let Ok(spec) = std::env::var("ADFIT_BENCH_SINGLE") {
        let (mode, batch) = spec.split_once(':').expect("mode:batch");
        single(mode, batch.parse().expect("batch"), layers, tokens, repeat);
        return;
    }
    let exe = std::env::current_exe().expect("own path");
    let modes = std::env::var("ADFIT_BENCH_MODES").unwrap_or_else(|_| {
        "forward,forward_backward,forward_backward_decomposed,forward_backward_checkpointed".into()
    });
    let batches = std::env::var("ADFIT_BENCH_BATCHES").unwrap_or_else(|_| "1,2".into());
    for mode in modes.split(',') {
        for batch in batches.split(',') {
            let out = Command::new(&exe).env("ADFIT_BENCH_SINGLE", format!("{mode}:{batch}")).output().expect("child");
            print!("{}", String::from_utf8_lossy(&out.stdout));
            if !out.status.success() {
                eprintln!("{mode} batch {batch} failed: {}", String::from_utf8_lossy(&out.stderr));
            }
        }
    }
}
