//! Training-step throughput of the method, in scans per second: encode the batch's volumes with
//! deep visual prompts and the [MMSE] token through the frozen ViT, the texts with text prompts
//! through the frozen BERT, cross-attention, the loss, backward, and an AdamW step on the
//! trainable parts. `scripts/bench_step.py` runs the same step in PyTorch; `scripts/bench_step.sh`
//! runs both and prints ratios.
//!
//!   cargo bench --bench step                        # both shapes
//!   ADFIT_BENCH_SHAPE=phantom cargo bench --bench step
//!
//! Shapes: `phantom` (adfit's own backbone: 64³, 16³ patches, width 64, 4 + 2 blocks; batch 8)
//! and `m3d` (M3D-CLIP: 128³, 4×16×16 patches = 2048 tokens, ViT-B and bert-base; batch 2).
//! Random weights; texts of 96 tokens. Each shape runs in its own child process so its peak
//! RSS is its own. One JSON line per shape.

mod common;
use common::*;
use std::process::Command;
use std::time::Instant;

use adfit::model::bert::{Bert, BertConfig};
use adfit::model::clip::ClipBackbone;
use adfit::model::method::{AdClip, MethodConfig};
use adfit::model::vit3d::{Vit3d, Vit3dConfig};
use adfit::train::pretrain::PretrainConfig;
use burn::backend::{Autodiff, Flex};
use burn::optim::{AdamWConfig, GradientsParams, Optimizer};
use burn::prelude::*;
use burn::tensor::{Distribution, TensorData};

type AD = Autodiff<Flex>;

struct Shape {
    vit: Vit3dConfig,
    text: BertConfig,
    batch: usize,
}

fn shape(name: &str) -> Shape {
    match name {
        "m3d" => Shape {
            vit: Vit3dConfig { img_size: [128, 128, 128], ..Vit3dConfig::m3d() },
            text: BertConfig { max_position_embeddings: 512, ..BertConfig::bert_base_uncased() },
            batch: 2,
        },
        // The shipped backbone's shape, as `adfit pretrain` builds it.
        _ => Shape { vit: PretrainConfig::default().vit(), text: PretrainConfig::default().text(200), batch: 8 },
    }
}

fn single(name: &str, repeat: usize, tokens: usize) {
    let device = Default::default();
    let s = shape(name);
    let batch = std::env::var("ADFIT_BENCH_BATCH").ok().and_then(|v| v.parse().ok()).unwrap_or(s.batch);
    let h = s.vit.hidden_size;
    let backbone = ClipBackbone::<AD>::from_towers(
        Vit3d::init(&s.vit, &device).expect("vit"),
        Bert::init(&s.text, &device).expect("bert"),
        h,
        &device,
    );
    let cfg = MethodConfig { embed_dim: h, mmse_hidden: h / 2, ..Default::default() };
    let mut model = AdClip::new(backbone, &cfg, &device);
    let mut optim = AdamWConfig::new().init::<AD, AdClip<AD>>();
    let [d, hh, w] = s.vit.img_size;
    let x = Tensor::<AD, 5>::random([batch, 1, d, hh, w], Distribution::Uniform(0.0, 1.0), &device);
    let ids: Vec<i64> = (0..batch * tokens).map(|i| 5 + (i as i64 * 7919) % (s.text.vocab_size as i64 - 5)).collect();
    let ids = Tensor::<AD, 2, Int>::from_data(TensorData::new(ids, [batch, tokens]), &device);
    let mask = Tensor::<AD, 2>::ones([batch, tokens], &device);
    let target = Tensor::<AD, 1>::random([batch], Distribution::Normal(0.0, 1.0), &device);
    let mmse_mask = Tensor::<AD, 1>::ones([batch], &device);
    let mut times = Vec::new();
    for i in 0..=repeat {
        let t = Instant::now();
        let image = model.encode_image(x.clone());
        let text = model.encode_text(ids.clone(), mask.clone());
        let loss = model.loss(&image, text, target.clone(), mmse_mask.clone(), 0.5);
        let grads = GradientsParams::from_grads(loss.total.backward(), &model);
        model = optim.step(1e-3, model, grads);
        let _ = model.scale.val().into_data();
        if i > 0 {
            times.push(t.elapsed().as_secs_f64());
        }
    }
    times.sort_by(f64::total_cmp);
    let sec = times[times.len() / 2];
    println!(
        "{{\"tool\": \"adfit\", \"backend\": \"flex\", \"shape\": \"{name}\", \"batch\": {batch}, \"tokens\": {tokens}, \
         \"seconds\": {sec:.4}, \"scans_per_s\": {:.4}, \"peak_rss_mib\": {:.1}, \"threads\": {}}}",
        batch as f64 / sec,
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
