//! adfit: data-efficient fine-tuning of 3D medical vision-language models for Alzheimer's
//! diagnosis (Cheng, Ray & Yang, "Data-efficient fine-tuning of vision-language models for
//! diagnosis of Alzheimer's disease").
//!
//! The library holds everything; `src/main.rs` only parses arguments and prints errors.
//! - [`data`]: NIfTI volumes and their operations, clinical tables, reports, the synthetic
//!   cohort, subject-level splits, the preprocessing cache and the Burn dataset over it.

pub mod cli;
pub mod data;
pub mod error;
pub mod eval;
pub mod model;
pub mod plot;
pub mod train;
pub mod util;

pub use error::{Error, Result};
