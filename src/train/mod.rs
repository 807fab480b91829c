//! Training: epochs of the method on the preprocessing cache, evaluation against the class
//! prompts, decoupled weight decay on matrices, and the learning-rate schedule.

pub mod checkpoint;
pub mod decay;
pub mod epoch;
pub mod plateau;
pub mod pretrain;
pub mod settings;
