//! Evaluation: predictions against the class prompts, metrics, the metadata oracle, and the
//! `eval` job that scores a zero-shot backbone, a fine-tuned run or the oracle.

pub mod job;
pub mod logreg;
pub mod metrics;
pub mod oracle;
pub mod predict;
pub mod probe;
pub mod probe_job;
