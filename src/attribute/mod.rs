//! Explaining a fine-tuned run: Integrated Gradients over the report's tokens (which words drive
//! the image–report match) and Grad-ECLIP heat maps per biomarker sentence (where in the volume
//! each sentence looks), scored on the synthetic cohort against the structures it atrophies.

pub mod heatmap;
pub mod ig;
pub mod job;
pub mod pointing;
pub mod spans;
pub mod tables;

pub use job::{attribute, AttributeJob, AttributeReport, ScanChoice};
