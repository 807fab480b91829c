//! Gradient clipping by the global L2 norm over every trainable tensor, as PyTorch's
//! `clip_grad_norm_` does it (Burn's own clipping works tensor by tensor).

use burn::module::{AutodiffModule, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;

struct SquaredNorm<'a, B: AutodiffBackend> {
    grads: &'a GradientsParams,
    sum: Option<Tensor<B::InnerBackend, 1>>,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for SquaredNorm<'_, B> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        if let Some(g) = self.grads.get::<B::InnerBackend, D>(param.id) {
            let s = g.powi_scalar(2).sum();
            self.sum = Some(match self.sum.take() {
                Some(acc) => acc + s,
                None => s,
            });
        }
    }
}

struct Scale<'a> {
    grads: &'a mut GradientsParams,
    factor: f64,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for Scale<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        if let Some(g) = self.grads.remove::<B::InnerBackend, D>(param.id) {
            self.grads.register::<B::InnerBackend, D>(param.id, g * self.factor);
        }
    }
}

/// The global L2 norm of `grads` over `model`'s parameters.
pub fn global_norm<B: AutodiffBackend, M: AutodiffModule<B>>(model: &M, grads: &GradientsParams) -> f64 {
    let mut n = SquaredNorm::<B> { grads, sum: None };
    model.visit(&mut n);
    n.sum.map_or(0.0, |s| s.into_scalar().elem::<f64>().sqrt())
}

/// Scale `grads` by `max_norm / (norm + 1e-6)` when their global norm exceeds `max_norm`
/// (PyTorch's rule); returns the norm before clipping.
pub fn clip_global_norm<B: AutodiffBackend, M: AutodiffModule<B>>(
    model: &M,
    grads: &mut GradientsParams,
    max_norm: f64,
) -> f64 {
    let norm = global_norm::<B, M>(model, grads);
    if norm > max_norm {
        model.visit(&mut Scale { grads, factor: max_norm / (norm + 1e-6) });
    }
    norm
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::Cpu;
    use burn::backend::Autodiff;
    use burn::nn::{Linear, LinearConfig};

    type AD = Autodiff<Cpu>;

    #[test]
    fn the_global_norm_is_clipped_as_torch_does() {
        let device = Default::default();
        let l: Linear<AD> = LinearConfig::new(3, 2).init(&device);
        let x = Tensor::<AD, 2>::ones([4, 3], &device) * 10.0;
        let loss = l.forward(x).powi_scalar(2).sum();
        let mut grads = GradientsParams::from_grads(loss.backward(), &l);
        let before = global_norm::<AD, _>(&l, &grads);
        assert!(before > 1.0);
        let returned = clip_global_norm::<AD, _>(&l, &mut grads, 1.0);
        assert!((returned - before).abs() < 1e-9 * before.max(1.0));
        let after = global_norm::<AD, _>(&l, &grads);
        assert!((after - 1.0).abs() < 1e-4, "{after}");
        // Below the bound nothing changes.
        assert!((clip_global_norm::<AD, _>(&l, &mut grads, 10.0) - after).abs() < 1e-9);
        assert!((global_norm::<AD, _>(&l, &grads) - after).abs() < 1e-9);
    }
}
