//! Evaluation: metrics and reference classifiers.

pub mod logreg;
pub mod metrics;
pub mod oracle;
