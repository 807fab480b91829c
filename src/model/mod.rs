//! The model library: the 3D ViT and BERT towers with reference semantics, the method's
//! trainable parts (prompts, MMSE token, projections, cross-attention, scale), the loss, and
//! strict checkpoint loading.

pub mod adapt;
pub mod attention;
pub mod backbones;
pub mod bert;
pub mod chunked_attention;
pub mod clip;
pub mod cpu_attention;
pub mod cpu_layout;
pub mod cpu_norm;
pub mod cpu_self_attention;
pub mod cross_attention;
pub mod dcformer;
pub mod heads;
pub mod lga;
pub mod loss;
pub mod method;
pub mod mixer;
pub mod params;
pub mod perceiver;
pub mod pos_embed;
pub mod precision;
pub mod prompts;
pub mod text_model;
pub mod tokenizer;
pub mod vit3d;
pub mod vit3d_config;
pub mod vocab;
pub mod weights;
