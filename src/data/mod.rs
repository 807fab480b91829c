//! Everything between a file on disk and a batch of tensors.

pub mod augment;
pub mod cache;
pub mod csv_input;
pub mod dataset;
pub mod date;
pub mod label;
pub mod labels;
pub mod nifti_affine;
pub mod nifti_io;
pub mod nifti_write;
pub mod normalize;
pub mod orient;
pub mod phantom;
pub mod preprocess;
pub mod report;
pub mod resample;
pub mod scanlist;
pub mod split;
pub mod synth;
pub mod table;
pub mod volume;
