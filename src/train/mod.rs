//! Training: epochs of the method on the preprocessing cache, the fine-tuning job over one fold,
//! resumable checkpoints, decoupled weight decay on matrices, the learning-rate schedule, and
//! pre-training of adfit's own small backbone.

pub mod checkpoint;
pub mod clip;
pub mod decay;
pub mod epoch;
pub mod finetune;
pub mod plateau;
pub mod pretrain;
pub mod pretrain_brains;
pub mod pretrain_job;
pub mod step_bench;
