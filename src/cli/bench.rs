//! `adfit bench-step`: time the method's training step at a named backbone shape on a device
//! (random weights, nothing read or written), as one JSON line.

use clap::Args;

use super::DeviceArg;
use crate::model::adapt::AdaptKind;
use crate::model::attention::TrainingAttention;
use crate::model::precision::Precision;
use crate::train::step_bench::{BenchShape, StepBench};

#[derive(Debug, Args)]
pub struct BenchStepArgs {
    #[arg(long, value_enum, default_value_t = BenchShape::Phantom)]
    pub shape: BenchShape,
    /// Scans per step (default: 8 for phantom, 2 for m3d).
    #[arg(long)]
    pub batch: Option<usize>,
    /// Text length in tokens.
    #[arg(long, default_value_t = 96)]
    pub tokens: usize,
    /// Timed steps after one warm-up step; the median is reported.
    #[arg(long, default_value_t = 3)]
    pub repeat: usize,
    /// Element type of the frozen towers.
    #[arg(long, value_enum, default_value_t = Precision::Fp32)]
    pub precision: Precision,
    /// Time another adaptation in place of the visual prompts (the paper's comparison rows):
    /// lora, adapter, perceiver-lora, full (needs fp32).
    #[arg(long, value_enum, default_value_t = AdaptKind::None)]
    pub adaptation: AdaptKind,
    /// How attention is differentiated: block-wise (adfit's op, memory linear in the tokens) or
    /// decomposed (Burn's matmul/softmax/matmul, which keeps n×n scores; the path before it).
    #[arg(long, value_enum, default_value_t = TrainingAttention::BlockWise)]
    pub attention: TrainingAttention,
    #[command(flatten)]
    pub device: DeviceArg,
}

pub fn run(a: BenchStepArgs) -> anyhow::Result<()> {
    let job = StepBench {
        shape: a.shape,
        batch: a.batch.unwrap_or(a.shape.default_batch()).max(2),
        tokens: a.tokens.max(2),
        repeat: a.repeat.max(1),
        precision: a.precision,
        adaptation: a.adaptation,
        attention: a.attention,
    };
    let t = crate::backend::dispatch(a.device.device, job)?;
    let mut v = serde_json::to_value(&t)?;
    v["tool"] = "adfit".into();
    v["device"] = a.device.device.to_string().into();
    println!("{v}");
    Ok(())
}
