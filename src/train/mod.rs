//! Training: epochs of the method on the preprocessing cache, evaluation against the class
//! prompts, and the learning-rate schedule. (`adfit finetune` assembles these.)

pub mod epoch;
pub mod plateau;
