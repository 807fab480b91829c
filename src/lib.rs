//! adfit: data-efficient fine-tuning of 3D medical vision-language models for Alzheimer's
//! diagnosis (Cheng, Ray & Yang, "Data-efficient fine-tuning of vision-language models for
//! diagnosis of Alzheimer's disease").
//!
//! The library holds everything; `src/main.rs` only parses arguments and prints errors.
//! - [`data`]: NIfTI volumes and their operations, clinical tables, reports, the synthetic
//!   cohort, subject-level splits, the preprocessing cache and the Burn dataset over it.
//! - [`model`]: the 3D ViT, BERT, the CLIP backbone and its checkpoints, and the method.
//! - [`train`]: fine-tuning (one fold as a job), checkpoints, pre-training.
//! - [`eval`]: predictions, metrics, the zero-shot/fine-tuned/oracle evaluation job.
//! - [`experiment`]: folds × seeds × variants, with tables.
//! - [`backend`]: the one module that names concrete backends and runs jobs on `--device`.
//! - [`run_folder`]: the files of a fine-tuned run, and its loader.
//! - [`settings`]: a run's settings, the source of every run's configuration.

pub mod attribute;
pub mod backend;
pub mod cli;
pub mod data;
pub mod embed;
pub mod error;
pub mod eval;
pub mod experiment;
pub mod limits;
pub mod lock;
pub mod model;
pub mod panic_context;
pub mod plot;
pub mod run_folder;
pub mod settings;
pub mod train;
pub mod util;
pub mod variant;

pub use error::{Error, Result};
