//! Command-line interface: one file per subcommand, each turning arguments into one library call.

mod attribute;
mod bench;
mod convert;
mod embed;
mod eval;
mod experiment;
mod finetune;
mod inspect;
mod params;
mod preprocess;
mod pretrain;
mod probe;
mod split;
mod synth;

use std::io::IsTerminal;

use clap::{Args, Parser, Subcommand};

/// Fine-tune 3D medical vision-language models (M3D-CLIP and kin) for Alzheimer's diagnosis
/// from T1 MRI with little data: deep visual prompts, an MMSE token, text prompts on reports
/// written from clinical metadata, and cross-attention between image and text.
///
/// A typical session on the embedded synthetic cohort, with adfit's own small backbone
/// (backbones/brain-64: a 3D ViT pre-trained on 64³ synthetic brains described by findings, never
/// diagnoses, read by a frozen all-MiniLM-L6-v2 that `bash scripts/fetch_minilm.sh` fetches; use
/// M3D-CLIP's folder for real work):
///
///   adfit synth --out demo
///   adfit preprocess --scans demo/adni/scans.csv --table demo/adni/ADNIMERGE.csv \
///       --out demo/cache --shape 64,64,64
///   adfit split --index demo/cache/index.csv --out demo/split.csv
///   adfit finetune --backbone backbones/brain-64 --cohort demo/cache/index.csv \
///       --split demo/split.csv --fold 0 --config configs/finetune.json --out runs/fold0
///   adfit eval --backbone backbones/brain-64 --run runs/fold0 --index demo/cache/index.csv \
///       --split demo/split.csv --fold 0 --out runs/fold0/eval
///   adfit eval --oracle --run runs/fold0 --index demo/cache/index.csv \
///       --split demo/split.csv --fold 0 --out runs/fold0/oracle
///
/// With real data, point `preprocess` at your ADNIMERGE.csv (or OASIS-2's
/// oasis_longitudinal.csv) and a scan list of your NIfTI files. Every command that runs tensors
/// (embed, finetune, eval, experiment, pretrain, probe, attribute, bench-step) takes --device cpu|cuda[:N]|
/// wgpu[:N]|auto; a GPU backend must be compiled in (cargo build --release --features cuda).
#[derive(Debug, Parser)]
#[command(name = "adfit", version, about, long_about, verbatim_doc_comment, max_term_width = 100)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// More log output (-v: debug, -vv: trace). RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Only warnings and errors; no progress bars.
    #[arg(short, long, global = true)]
    pub quiet: bool,
    /// The most adfit reads from one input file (decompressed for .gz): 4G by default, or
    /// ADFIT_MAX_INPUT. A header or gzip stream asking for more is refused with an error that
    /// names the file, instead of exhausting memory.
    #[arg(long, global = true, value_name = "SIZE", value_parser = crate::limits::parse_size)]
    pub max_input: Option<u64>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print what a NIfTI volume or a clinical table holds (shape, affine, orientation, intensity
    /// statistics; or the detected table format and each row's subject, visit, label and MMSE).
    Inspect(inspect::InspectArgs),
    /// Convert a NIfTI volume: reorient to RAS+, resize, normalise, and write float32 NIfTI.
    Convert(convert::ConvertArgs),
    /// Generate the embedded synthetic cohort: raw-looking T1 volumes with ADNIMERGE- and
    /// OASIS-2-format tables and scan lists.
    Synth(synth::SynthArgs),
    /// Embed volumes and texts with a backbone exactly as it computes them, with their
    /// similarity logits (JSON or safetensors).
    Embed(embed::EmbedArgs),
    /// Fine-tune the method (prompts, MMSE token, projections, cross-attention) on one fold of
    /// a split, keep the best checkpoint by validation balanced accuracy, and score the test set.
    Finetune(finetune::FinetuneArgs),
    /// Classify scans against "A photo of {class}." with a bare backbone (zero-shot) or a
    /// fine-tuned run; metrics at scan and subject level, predictions as CSV.
    Eval(eval::EvalArgs),
    /// Run a configuration over folds and seeds (optionally the paper's ablations) and write
    /// mean ± std tables (results.md, results.csv); finished runs are reused.
    Experiment(experiment::ExperimentArgs),
    /// Pre-train adfit's own small CLIP-style backbone (contrastive), written in M3D-CLIP's
    /// layout: on synthetic brains captioned with findings against a frozen all-MiniLM-L6-v2
    /// (the embedded default), or on head phantoms (a tiny test fixture).
    Pretrain(pretrain::PretrainArgs),
    /// What a backbone's frozen image features hold: per fold, a linear probe of the diagnosis
    /// and the R² of the hippocampal and ventricular volumes (fitted on training subjects).
    Probe(probe::ProbeArgs),
    /// Count the parameters the method trains, by group, for a backbone.
    Params(params::ParamsArgs),
    /// Time the method's training step at a named backbone shape (random weights) on a device:
    /// one JSON line with scans/s (scripts/gpu_check.sh, scripts/bench_step.sh).
    BenchStep(bench::BenchStepArgs),
    /// Make (or check) a subject-level, diagnosis-stratified k-fold split file.
    Split(split::SplitArgs),
    /// Match scans to table rows, then reorient, crop, resize and normalise every scan into a
    /// cache, with a cohort index (index.csv) for training and evaluation.
    Preprocess(preprocess::PreprocessArgs),
    /// Explain a fine-tuned run: Integrated Gradients over each report's words and a Grad-ECLIP
    /// 3D heat map per biomarker sentence (NIfTI + PNG), scored against the synthetic cohort's
    /// label maps with --labels.
    Attribute(attribute::AttributeArgs),
}

/// `--device`, for every command that runs tensors.
#[derive(Debug, Clone, Args)]
pub struct DeviceArg {
    /// Where tensors run: cpu, cuda[:N] (built with --features cuda), wgpu[:N] (built with
    /// --features wgpu; Vulkan/Metal/DX12, or Mesa's lavapipe on a CPU), or auto (the first GPU,
    /// else the CPU).
    #[arg(long, default_value = "cpu", help_heading = "Device", long_help = device_help())]
    pub device: crate::backend::DeviceSpec,
}

fn device_help() -> String {
    format!(
        "Where tensors run: cpu, cuda[:N], wgpu[:N] or auto (the first GPU, else the CPU). This binary \
         was built with: {}. CUDA needs `cargo build --release --features cuda`; wgpu needs \
         `--features wgpu` and a Vulkan, Metal or DX12 driver (on a Linux machine without a GPU, Mesa's \
         lavapipe: apt-get install mesa-vulkan-drivers).",
        crate::backend::built_with().join(", ")
    )
}

/// Logs go to stderr; `-v`/`-q` pick the level, `RUST_LOG` overrides both.
pub fn init_logging(global: &GlobalArgs) {
    let level = match (global.quiet, global.verbose) {
        (true, _) => "warn",
        (false, 0) => "info",
        (false, 1) => "debug",
        (false, _) => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(format!("adfit={level}")));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .without_time()
        .try_init();
}

pub fn run(cli: Cli) -> anyhow::Result<()> {
    let quiet = cli.global.quiet;
    if let Some(bytes) = cli.global.max_input {
        crate::limits::set_max_input_bytes(bytes);
    }
    match cli.command {
        Command::Inspect(a) => inspect::run(a),
        Command::Convert(a) => convert::run(a),
        Command::Synth(a) => synth::run(a, quiet),
        Command::Split(a) => split::run(a),
        Command::Embed(a) => embed::run(a),
        Command::Params(a) => params::run(a),
        Command::BenchStep(a) => bench::run(a),
        Command::Finetune(a) => finetune::run(a, quiet),
        Command::Eval(a) => eval::run(a),
        Command::Experiment(a) => experiment::run(a, quiet),
        Command::Pretrain(a) => pretrain::run(a, quiet),
        Command::Probe(a) => probe::run(a),
        Command::Preprocess(a) => preprocess::run(a, quiet),
        Command::Attribute(a) => attribute::run(a, quiet),
    }
}

pub(crate) use crate::util::progress_bar;

/// Parse `D,H,W` (or a single `N` for a cube).
pub(crate) fn parse_shape(s: &str) -> Result<[usize; 3], String> {
    let parts: Vec<&str> = s.split([',', 'x']).map(str::trim).collect();
    let nums: Result<Vec<usize>, _> = parts.iter().map(|p| p.parse::<usize>()).collect();
    match nums.as_deref() {
        Ok([n]) if *n > 0 => Ok([*n; 3]),
        Ok([a, b, c]) if *a > 0 && *b > 0 && *c > 0 => Ok([*a, *b, *c]),
        _ => Err(format!("{s:?} is not a shape: give D,H,W (e.g. 128,128,128) or one size for a cube")),
    }
}
