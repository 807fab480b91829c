//! Decoupled weight decay on matrices only (nanoGPT's grouping): the weights of trainable
//! `Linear` layers shrink by `lr · wd` after each step; prompts, tokens, biases and the logit scale
//! do not. The optimiser itself runs with weight decay 0.

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;

/// Which trainable tensors decay, tracked while walking a module.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct Groups {
    /// Tensors and values that decay.
    pub decayed: (usize, usize),
    /// Trainable tensors and values that do not.
    pub kept: (usize, usize),
}

/// The grouping rule, shared by the counting visitor and the decaying mapper.
#[derive(Default)]
struct Walk {
    groups: Groups,
    containers: Vec<String>,
}

impl Walk {
    /// Whether a trainable float tensor of rank `d` with `n` values decays; counts it.
    fn decays(&mut self, d: usize, trainable: bool, n: usize) -> bool {
        if !trainable {
            return false;
        }
        let decays = d == 2 && self.containers.last().is_some_and(|c| c == "Struct:Linear");
        let slot = if decays { &mut self.groups.decayed } else { &mut self.groups.kept };
        *slot = (slot.0 + 1, slot.1 + n);
        decays
    }
}

struct Count(Walk);

impl<B: Backend> ModuleVisitor<B> for Count {
    fn enter_module(&mut self, _name: &str, container_type: &str) {
        self.0.containers.push(container_type.to_string());
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.0.containers.pop();
    }

    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        self.0.decays(D, param.is_require_grad(), param.shape().num_elements());
    }
}

struct Decay {
    walk: Walk,
    factor: f64,
}

impl<B: AutodiffBackend> ModuleMapper<B> for Decay {
    fn enter_module(&mut self, _name: &str, container_type: &str) {
        self.walk.containers.push(container_type.to_string());
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.walk.containers.pop();
    }

    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        if !self.walk.decays(D, param.is_require_grad(), param.shape().num_elements()) {
            return param;
        }
        let factor = self.factor;
        // A fresh leaf: the decayed value must not carry the old graph.
        param.map(move |t| Tensor::from_inner(t.inner() * factor).require_grad())
    }
}

/// The decay groups of a model, without touching it (to log them).
pub fn groups<B: Backend, M: Module<B>>(model: &M) -> Groups {
    let mut count = Count(Walk::default());
    model.visit(&mut count);
    count.0.groups
}

/// Apply the decay; returns the model and the groups it touched.
pub fn decay_matrices<B: AutodiffBackend, M: Module<B>>(model: M, lr: f64, weight_decay: f64) -> (M, Groups) {
    let mut mapper = Decay { walk: Walk::default(), factor: 1.0 - lr * weight_decay };
    let model = model.map(&mut mapper);
    (model, mapper.walk.groups)
}
