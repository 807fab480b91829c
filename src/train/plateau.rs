//! ReduceLROnPlateau on a validation metric (PyTorch semantics, relative threshold): after
//! `patience` epochs without an improvement larger than `threshold`, multiply the learning rate by
//! `factor`, then wait `cooldown` epochs before counting again. Serialisable, so a resumed run
//! continues exactly.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Mode {
    /// Higher is better (accuracy, balanced accuracy, AUC).
    Max,
    /// Lower is better (loss).
    Min,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plateau {
    pub mode: Mode,
    /// The paper: 0.1.
    pub factor: f64,
    /// The paper: 5 epochs.
    pub patience: usize,
    /// Relative improvement needed to count as better (PyTorch's default 1e-4).
    pub threshold: f64,
    pub cooldown: usize,
    pub min_lr: f64,
    pub lr: f64,
    best: Option<f64>,
    bad_epochs: usize,
    cooldown_left: usize,
}

impl Plateau {
    pub fn new(lr: f64, mode: Mode, factor: f64, patience: usize) -> Self {
        Plateau {
            mode,
            factor,
            patience,
            threshold: 1e-4,
            cooldown: 0,
            min_lr: 0.0,
            lr,
            best: None,
            bad_epochs: 0,
            cooldown_left: 0,
        }
    }

    pub fn best(&self) -> Option<f64> {
        self.best
    }

    fn better(&self, value: f64, best: f64) -> bool {
        match self.mode {
            Mode::Max => value > best * (1.0 + self.threshold.copysign(best)),
            Mode::Min => value < best * (1.0 - self.threshold.copysign(best)),
        }
    }

    /// Record one epoch's metric; returns whether it is a new best. A NaN metric counts as bad.
    pub fn step(&mut self, value: f64) -> bool {
        let improved = !value.is_nan() && self.best.is_none_or(|b| self.better(value, b));
        if improved {
            self.best = Some(value);
            self.bad_epochs = 0;
        } else {
            self.bad_epochs += 1;
        }
        if self.cooldown_left > 0 {
            self.cooldown_left -= 1;
            self.bad_epochs = 0;
        }
        if self.bad_epochs > self.patience {
            self.lr = (self.lr * self.factor).max(self.min_lr);
            self.cooldown_left = self.cooldown;
            self.bad_epochs = 0;
        }
        improved
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reduces_after_patience_bad_epochs() {
        let mut p = Plateau::new(1e-3, Mode::Max, 0.1, 2);
        assert!(p.step(0.5));
        assert!(p.step(0.6));
        assert!(!p.step(0.6)); // 1 bad
        assert!(!p.step(0.59)); // 2 bad: still within patience
        assert_eq!(p.lr, 1e-3);
        assert!(!p.step(0.58)); // 3 bad > patience → reduce
        assert!((p.lr - 1e-4).abs() < 1e-15);
        assert!(!p.step(0.6)); // counting restarts; equal is not better
        assert!(p.step(0.7));
        assert_eq!(p.best(), Some(0.7));
    }

    #[test]
    fn min_mode_threshold_and_nan() {
        let mut p = Plateau::new(1.0, Mode::Min, 0.5, 0);
        assert!(p.step(1.0));
        assert!(!p.step(0.99995)); // within the relative threshold: not better → reduce
        assert_eq!(p.lr, 0.5);
        assert!(!p.step(f64::NAN));
        assert_eq!(p.lr, 0.25);
        let json = serde_json::to_string(&p).unwrap();
        assert_eq!(serde_json::from_str::<Plateau>(&json).unwrap(), p);
    }
}
