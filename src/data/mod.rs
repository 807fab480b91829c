//! Everything between a file on disk and a batch of tensors.

pub mod nifti_io;
pub mod volume;
pub mod label;
pub mod normalize;
pub mod orient;
pub mod resample;
pub mod date;
pub mod table;
pub mod report;
pub mod scanlist;
pub mod split;
pub mod augment;
pub mod cache;
pub mod dataset;
pub mod preprocess;
pub mod synth;
