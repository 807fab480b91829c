//! Decoupled weight decay on matrices only (nanoGPT's grouping): the weights of trainable
//! `Linear` layers shrink by `lr · wd` after each step; prompts, tokens, biases and the logit scale
//! do not. The optimiser itself runs with weight decay 0.

use burn::module::{Module, ModuleMapper, Param};
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;

/// Multiplies trainable `Linear` weights by `factor`, counting what it touched.
pub struct DecayMatrices {
    pub factor: f64,
    /// Tensors and values decayed / left alone (trainable ones only).
    pub decayed: (usize, usize),
    pub kept: (usize, usize),
    stack: Vec<String>,
}

impl DecayMatrices {
    pub fn new(factor: f64) -> Self {
        DecayMatrices { factor, decayed: (0, 0), kept: (0, 0), stack: Vec::new() }
    }
}

impl<B: AutodiffBackend> ModuleMapper<B> for DecayMatrices {
    fn enter_module(&mut self, _name: &str, container_type: &str) {
        self.stack.push(container_type.to_string());
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.stack.pop();
    }

    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        if !param.is_require_grad() {
            return param;
        }
        let n = param.shape().num_elements();
        let in_linear = self.stack.last().is_some_and(|c| c == "Struct:Linear");
        if D == 2 && in_linear {
            self.decayed = (self.decayed.0 + 1, self.decayed.1 + n);
            let factor = self.factor;
            param.map(move |t| Tensor::from_inner(t.inner() * factor).require_grad())
        } else {
            self.kept = (self.kept.0 + 1, self.kept.1 + n);
            param
        }
    }
}

/// Apply the decay; returns the model and the mapper (for its counts).
pub fn decay_matrices<B: AutodiffBackend, M: Module<B>>(model: M, lr: f64, weight_decay: f64) -> (M, DecayMatrices) {
    let mut mapper = DecayMatrices::new(1.0 - lr * weight_decay);
    let model = model.map(&mut mapper);
    (model, mapper)
}
