//! `adfit pretrain` as a library job: pre-train adfit's own small backbone on the chosen backend,
//! on the brain corpus against a frozen, locally resolved text tower (the default) or on head
//! phantoms with a vocabulary of their own, and write it as an M3D-CLIP-layout directory with its
//! log, curves and summary.

use std::path::{Path, PathBuf};

use burn::module::AutodiffModule;
use burn::tensor::backend::AutodiffBackend;

use crate::backend::Job;
use crate::data::report::ReportTemplate;
use crate::data::synth::corpus::{self, Head};
use crate::error::{Error, Result};
use crate::model::backbones::m3d::{save, tokenizer_path, BackboneConfig, TextWeights};
use crate::model::text_model;
use crate::model::tokenizer::TextTokenizer;
use crate::model::vocab;
use crate::train::pretrain::{self, Corpus, PretrainConfig, StepLog};
use crate::train::pretrain_brains::{self, ImageSide};

/// Pre-train into `out` (which must not hold a backbone yet).
#[derive(Debug, Clone)]
pub struct PretrainJob {
    pub out: PathBuf,
    pub cfg: PretrainConfig,
    pub quiet: bool,
    /// The command line, recorded in pretrain.json.
    pub command: String,
}

/// What pre-training reached.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PretrainSummary {
    /// Image→caption accuracy on held-out phantom batches.
    pub held_out_accuracy: f64,
    pub chance: f64,
    pub seconds: f64,
}

impl Job for PretrainJob {
    type Output = PretrainSummary;

    fn run<B: AutodiffBackend>(self, device: B::Device) -> Result<PretrainSummary> {
        let out = &self.out;
        if out.join("model.safetensors").exists() {
            return Err(Error::config(
                "--out",
                format!("{} already holds a backbone: choose a new --out", out.display()),
            ));
        }
        self.cfg.vit().validate()?;
        std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
        let _lock = crate::lock::OutputLock::acquire(out)?;
        match self.cfg.corpus {
            Corpus::Phantoms => self.phantoms::<B>(device),
            Corpus::Brains => self.brains::<B>(device),
        }
    }
}

impl PretrainJob {
    fn phantoms<B: AutodiffBackend>(self, device: B::Device) -> Result<PretrainSummary> {
        let (out, cfg) = (&self.out, &self.cfg);
        let tokens = vocab::build(&pretrain::corpus(&ReportTemplate::default()));
        let vocab_path = out.join("vocab.txt");
        crate::util::write_bytes_atomic(&vocab_path, vocab::to_text(&tokens).as_bytes())?;
        let tok = TextTokenizer::from_file(&vocab_path, cfg.max_text_len)?;
        let model = pretrain::init::<B>(cfg, tokens.len(), &device)?;
        tracing::info!(
            "pre-training on head phantoms: grid {:?}, patch {:?}, width {}, {} + {} blocks, {} steps of {}",
            cfg.grid,
            cfg.patch,
            cfg.hidden,
            cfg.layers,
            cfg.text_layers,
            cfg.steps,
            cfg.batch_size
        );
        let mut log = StepLogger::new(cfg.steps, self.quiet);
        let started = std::time::Instant::now();
        let model = pretrain::train(model, cfg, &tok, &device, |s| log.push(s))?;
        let seconds = started.elapsed().as_secs_f64();
        log.finish(out, cfg.batch_size)?;
        let held_out = pretrain::held_out_accuracy(&model.valid(), cfg, &tok, 8, &device)?;
        let summary = PretrainSummary { held_out_accuracy: held_out, chance: 1.0 / cfg.batch_size as f64, seconds };
        let extra = serde_json::json!({ "domain": "head phantoms (adfit::data::phantom)" });
        self.write_summary(&summary, extra)?;
        save(out, &model, &cfg.backbone(tokens.len()), Some(&vocab_path), TextWeights::Embedded)?;
        Ok(summary)
    }

    fn brains<B: AutodiffBackend>(self, device: B::Device) -> Result<PretrainSummary> {
        let (out, cfg) = (&self.out, &self.cfg);
        let started = std::time::Instant::now();
        let text_dir = text_model::resolve(&cfg.text_model, Path::new("."))?;
        let text_cfg = text_model::config(&text_dir)?;
        let bert = text_model::load::<B::InnerBackend>(&text_dir, &text_cfg, &device)?;
        let tok = TextTokenizer::from_file(&tokenizer_path(&text_dir)?, cfg.max_text_len)?;
        tracing::info!(
            "generating the brain corpus: {} heads + {} held out on {:?}",
            cfg.corpus_size,
            cfg.held_out,
            cfg.grid
        );
        let corpus = generate(cfg, false, cfg.corpus_size, self.quiet)?;
        let held = generate(cfg, true, cfg.held_out, self.quiet)?;
        let generated = started.elapsed().as_secs_f64();
        let captions: Vec<String> = corpus.iter().map(|h| h.caption.clone()).collect();
        let lengths = captions.iter().map(|c| tok.encode_one(c).map(|t| t.len())).collect::<Result<Vec<_>>>()?;
        tracing::info!(
            "first caption ({} tokens at most): {}",
            lengths.iter().max().unwrap_or(&0),
            captions.first().map(String::as_str).unwrap_or("")
        );
        let text = pretrain_brains::text_states(&bert, &tok, &captions, &device)?;
        let encoded = started.elapsed().as_secs_f64();
        tracing::info!(
            "pre-training the image side against frozen {}: grid {:?}, patch {:?}, width {}, {} blocks, {} steps of {}",
            cfg.text_model,
            cfg.grid,
            cfg.patch,
            cfg.hidden,
            cfg.layers,
            cfg.steps,
            cfg.batch_size
        );
        let side = ImageSide::<B>::init(cfg, text_cfg.hidden_size, &device)?;
        let mut log = StepLogger::new(cfg.steps, self.quiet);
        let findings = pretrain_brains::Findings::fit(&corpus);
        let side = pretrain_brains::train(side, &corpus, text, &findings, cfg, &device, |s| log.push(s))?;
        let seconds = started.elapsed().as_secs_f64();
        log.finish(out, cfg.batch_size)?;
        let side = side.valid();
        let r2 = pretrain_brains::findings_r2(&side, &findings, &held, cfg.grid, &device);
        if let Some(r2) = &r2 {
            tracing::info!("held-out findings R²: {:?}", pretrain_brains::FINDINGS.iter().zip(r2).collect::<Vec<_>>());
        }
        let model = side.with_text(bert);
        let batch = cfg.batch_size.min(cfg.held_out.max(2));
        let held_out = pretrain_brains::retrieval_accuracy(&model, &tok, &held, cfg.grid, batch, &device)?;
        let train_acc = pretrain_brains::retrieval_accuracy(
            &model,
            &tok,
            &corpus[..cfg.held_out.min(corpus.len())],
            cfg.grid,
            batch,
            &device,
        )?;
        let summary = PretrainSummary { held_out_accuracy: held_out, chance: 1.0 / batch as f64, seconds };
        let extra = serde_json::json!({
            "domain": "brain corpus (adfit::data::synth::corpus): synthetic heads with radiology-style findings, no diagnosis",
            "text_model": { "name": cfg.text_model, "resolved_from": text_dir.display().to_string(), "frozen": true },
            "training_heads_accuracy": train_acc,
            "held_out_findings_r2": r2.map(|r2| pretrain_brains::FINDINGS.iter().zip(r2).map(|(k, v)| (k.to_string(), serde_json::json!(v))).collect::<serde_json::Map<_, _>>()),
            "seconds_generating": generated,
            "seconds_encoding_captions": encoded - generated,
            "seconds_training": seconds - encoded,
            "example_caption": captions.first(),
        });
        self.write_summary(&summary, extra)?;
        let mut config =
            BackboneConfig::from_towers(&cfg.vit(), text_cfg.clone(), &cfg.text_model, cfg.max_text_len, cfg.joint_dim);
        config.text_config = None;
        save(out, &model, &config, None, TextWeights::External)?;
        Ok(summary)
    }

    /// `pretrain.json`: the configuration, what was reached, how long it took, the command.
    fn write_summary(&self, s: &PretrainSummary, extra: serde_json::Value) -> Result<()> {
        let mut summary = serde_json::json!({
            "config": self.cfg,
            "held_out_accuracy": s.held_out_accuracy,
            "chance": s.chance,
            "seconds": s.seconds,
            "command": self.command,
        });
        if let (Some(map), serde_json::Value::Object(more)) = (summary.as_object_mut(), extra) {
            map.extend(more);
        }
        crate::util::write_json(&self.out.join("pretrain.json"), &summary)
    }
}

/// `n` heads of the corpus (or of its held-out space), with a progress bar.
fn generate(cfg: &PretrainConfig, held_out: bool, n: usize, quiet: bool) -> Result<Vec<Head>> {
    let bar = crate::util::progress_bar(n as u64, if held_out { "held-out heads" } else { "corpus heads" }, quiet);
    let mut heads = Vec::with_capacity(n);
    while heads.len() < n {
        let take = 32.min(n - heads.len());
        heads.extend(corpus::heads(cfg.grid, cfg.seed, held_out, heads.len() as u64, take)?);
        bar.inc(take as u64);
    }
    bar.finish_and_clear();
    Ok(heads)
}

/// Every step's log, a progress bar, and at the end `pretrain_log.csv` and `pretrain_curves.png`.
struct StepLogger {
    log: Vec<StepLog>,
    bar: indicatif::ProgressBar,
}

impl StepLogger {
    fn new(steps: usize, quiet: bool) -> Self {
        StepLogger { log: Vec::with_capacity(steps), bar: crate::util::progress_bar(steps as u64, "pretrain", quiet) }
    }

    fn push(&mut self, s: &StepLog) {
        let log = &mut self.log;
        log.push(s.clone());
        let recent = &log[log.len().saturating_sub(50)..];
        let n = recent.len() as f64;
        let (loss, acc) = recent.iter().fold((0.0, 0.0), |(l, c), s| (l + s.loss / n, c + s.accuracy / n));
        self.bar.set_message(format!("loss {loss:.3}, batch accuracy {acc:.2}"));
        self.bar.inc(1);
        if (s.step + 1).is_multiple_of(100) {
            let findings: Vec<f64> = recent.iter().filter_map(|s| s.findings).collect();
            let findings = match findings.len() {
                0 => String::new(),
                k => format!(", findings MSE {:.3}", findings.iter().sum::<f64>() / k as f64),
            };
            tracing::info!(
                "step {}: loss {loss:.4}, in-batch accuracy {acc:.3}{findings} (last {} steps)",
                s.step + 1,
                n
            );
        }
    }

    fn finish(self, out: &Path, batch: usize) -> Result<()> {
        self.bar.finish_and_clear();
        let log = self.log;
        let chance = 1.0 / batch as f64;
        let with_findings = log.iter().any(|s| s.findings.is_some());
        let mut csv = String::from(if with_findings {
            "step,lr,loss,accuracy,findings_mse\n"
        } else {
            "step,lr,loss,accuracy\n"
        });
        for s in &log {
            csv.push_str(&format!("{},{},{},{}", s.step, s.lr, s.loss, s.accuracy));
            if with_findings {
                csv.push_str(&format!(",{}", s.findings.unwrap_or(f64::NAN)));
            }
            csv.push('\n');
        }
        crate::util::write_bytes_atomic(&out.join("pretrain_log.csv"), csv.as_bytes())?;
        let smooth = |f: fn(&StepLog) -> f64| -> Vec<(f64, f64)> {
            let w = 50.min(log.len()).max(1);
            log.windows(w).map(|win| (win[w - 1].step as f64, win.iter().map(f).sum::<f64>() / w as f64)).collect()
        };
        let mut panels = vec![
            ("contrastive loss (mean of 50 steps)", vec![("loss", smooth(|s| s.loss))]),
            (
                "in-batch image-to-caption accuracy",
                vec![("accuracy", smooth(|s| s.accuracy)), ("chance", vec![(0.0, chance), (log.len() as f64, chance)])],
            ),
        ];
        if with_findings {
            panels.push((
                "findings MSE, standardised (mean of 50 steps)",
                vec![("findings", smooth(|s| s.findings.unwrap_or(f64::NAN)))],
            ));
        }
        crate::plot::curves(&out.join("pretrain_curves.png"), "step", &panels)
    }
}
