//! Training: the learning-rate schedule (more of the loop lands with `adfit finetune`).

pub mod plateau;
