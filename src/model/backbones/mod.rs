//! Pre-trained backbones: their directory layouts, configurations and checkpoint key tables.

pub mod m3d;
pub mod med3dvlm;
pub mod radfm;

pub use m3d::{Backbone, BackboneConfig};
