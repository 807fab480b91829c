//! Small heads: L2 normalisation and the MMSE regression head.

use burn::module::Initializer;
use burn::nn::{Linear, LinearConfig};
use burn::prelude::*;
use burn::tensor::activation::relu;

use super::weights::WeightStore;

/// `x / max(‖x‖₂, 1e-12)` along the last axis (torch's `F.normalize`).
pub fn l2norm<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    let norm = x.clone().powi_scalar(2).sum_dim(D - 1).sqrt().clamp_min(1e-12);
    x / norm
}

/// `f_mmse`: Linear(hidden → hidden/2) → ReLU → Linear(→ 1), on the final [MMSE] token.
#[derive(Module, Debug)]
pub struct MmseHead<B: Backend> {
    pub fc1: Linear<B>,
    pub fc2: Linear<B>,
}

impl<B: Backend> MmseHead<B> {
    pub fn init(hidden: usize, inner: usize, device: &B::Device) -> Self {
        let init = Initializer::KaimingUniform { gain: 1.0 / 3f64.sqrt(), fan_out_only: false };
        MmseHead {
            fc1: LinearConfig::new(hidden, inner).with_initializer(init.clone()).init(device),
            fc2: LinearConfig::new(inner, 1).with_initializer(init).init(device),
        }
    }

    /// Torch layout `{prefix}.0` and `{prefix}.2` (an `nn.Sequential` with the ReLU at index 1).
    pub fn load(store: &WeightStore<B>, prefix: &str, hidden: usize, inner: usize) -> Self {
        MmseHead {
            fc1: store.linear(&format!("{prefix}.0"), hidden, inner, true),
            fc2: store.linear(&format!("{prefix}.2"), inner, 1, true),
        }
    }

    /// # Shapes
    /// - m: `[batch, hidden]` → `[batch]`
    pub fn forward(&self, m: Tensor<B, 2>) -> Tensor<B, 1> {
        let [b, _] = m.dims();
        self.fc2.forward(relu(self.fc1.forward(m))).reshape([b])
    }
}
