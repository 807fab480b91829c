//! Permuted tensors made contiguous on the CPU, in runs of their innermost axis.
//!
//! Flex copies a strided tensor that does not collapse to two axes one element at a time
//! through a general index iterator. Patchifying a volume (an 8-axis permute) went that way and
//! took 14% of the phantom training step (`perf record` on `benches/step.rs`). Here the copy
//! walks the outer axes with an odometer and moves each run of the innermost axis with one
//! `copy_from_slice`.

use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::Autodiff;
use burn::prelude::*;
use burn::tensor::{DType, TensorPrimitive};
use burn_flex::{FlexTensor, Layout};

use crate::backend::{same, Cpu};

/// `t` in contiguous memory. On the CPU (Flex, or Flex under autodiff when `t` is outside the
/// autodiff graph) through [`copy_runs`] when its innermost axis is contiguous; otherwise `t`
/// as it is, for the backend's reshape to copy.
pub fn contiguous<B: Backend, const D: usize>(t: Tensor<B, D>) -> Tensor<B, D> {
    if let Some(flex) = same::<_, Tensor<Cpu, D>>(t.clone()) {
        return same(on_flex(flex)).expect("the same backend");
    }
    if let Some(ad) = same::<_, Tensor<Autodiff<Cpu>, D>>(t.clone()) {
        if outside_graph(&ad) {
            return same(Tensor::<Autodiff<Cpu>, D>::from_inner(on_flex(ad.inner()))).expect("the same backend");
        }
    }
    t
}

/// Whether `t` is outside the autodiff graph. (`is_require_grad` is true for leaves only; a
/// tensor computed from one is tracked too.)
pub(crate) fn outside_graph<C: CheckpointStrategy, const D: usize>(t: &Tensor<Autodiff<Cpu, C>, D>) -> bool {
    match t.clone().into_primitive() {
        TensorPrimitive::Float(p) => p.node.requirement.is_none(),
        TensorPrimitive::QFloat(_) => false,
    }
}

fn on_flex<const D: usize>(t: Tensor<Cpu, D>) -> Tensor<Cpu, D> {
    match t.clone().into_primitive() {
        TensorPrimitive::Float(p) => match copy_runs(&p) {
            Some(c) => Tensor::from_primitive(TensorPrimitive::Float(c)),
            None => t,
        },
        TensorPrimitive::QFloat(_) => t,
    }
}

/// A contiguous f32 copy of a non-contiguous tensor whose innermost axis (after dropping axes
/// of size 1) has stride 1. `None` when it is contiguous already or does not qualify.
fn copy_runs(t: &FlexTensor) -> Option<FlexTensor> {
    if t.dtype() != DType::F32 || t.is_contiguous() {
        return None;
    }
    let layout = t.layout();
    let axes: Vec<(usize, isize)> =
        layout.shape().iter().zip(layout.strides()).filter(|(&n, _)| n != 1).map(|(&n, &s)| (n, s)).collect();
    let &(run, inner_stride) = axes.last()?;
    if inner_stride != 1 || axes.iter().any(|&(_, s)| s < 0) {
        return None;
    }
    let outer = &axes[..axes.len() - 1];
    let src = t.storage::<f32>();
    let total = layout.num_elements();
    let mut dst = Vec::with_capacity(total);
    let mut index = vec![0usize; outer.len()];
    let mut offset = layout.start_offset();
    for _ in 0..total / run {
        push_run(&mut dst, &src[offset..offset + run]);
        // Odometer over the outer axes, last fastest.
        for (i, &(n, s)) in outer.iter().enumerate().rev() {
            index[i] += 1;
            offset += s as usize;
            if index[i] < n {
                break;
            }
            index[i] = 0;
            offset -= n * s as usize;
        }
    }
    let shape = layout.shape().clone();
    Some(FlexTensor::new(burn::tensor::Bytes::from_elems(dst), Layout::contiguous(shape), DType::F32))
}

/// Append `run` to `dst` in fixed-size blocks of 16 floats. One `memmove` call per short run (an
/// attention head is 16-64 floats, a patch row 16) cost more than the copy itself.
fn push_run(dst: &mut Vec<f32>, run: &[f32]) {
    let (blocks, rest) = run.as_chunks::<16>();
    for b in blocks {
        dst.extend_from_slice(b);
    }
    if !rest.is_empty() {
        dst.extend_from_slice(rest);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::Tolerance;

    #[test]
    fn a_permuted_tensor_copies_to_the_values_flex_gives() {
        let d = Default::default();
        let x = Tensor::<Cpu, 1, Int>::arange(0..2 * 3 * 4 * 5 * 6, &d).float().reshape([2, 3, 4, 5, 6]);
        for (perm, in_runs) in [([0, 2, 1, 3, 4], true), ([3, 0, 2, 1, 4], true), ([4, 3, 2, 1, 0], false)] {
            let p = x.clone().permute(perm);
            assert_eq!(copy_runs(&p.clone().into_primitive().tensor()).is_some(), in_runs, "{perm:?}");
            let fast = contiguous(p.clone());
            fast.clone().into_data().assert_approx_eq::<f32>(&p.clone().into_data(), Tolerance::absolute(0.0));
            let reshaped = fast.reshape([-1]);
            reshaped.into_data().assert_approx_eq::<f32>(&p.reshape([-1]).into_data(), Tolerance::absolute(0.0));
        }
        // A narrowed view (an offset), and one whose innermost axis is strided (left to Flex).
        let v = x.clone().narrow(3, 1, 3).permute([0, 2, 1, 3, 4]);
        contiguous(v.clone()).into_data().assert_approx_eq::<f32>(&v.into_data(), Tolerance::absolute(0.0));
        let w = x.clone().narrow(4, 2, 1).permute([0, 4, 1, 2, 3]);
        contiguous(w.clone()).into_data().assert_approx_eq::<f32>(&w.into_data(), Tolerance::absolute(0.0));
        let ad = Tensor::<Autodiff<Cpu>, 5>::from_inner(x.clone()).permute([0, 2, 1, 3, 4]);
        contiguous(ad.clone()).into_data().assert_approx_eq::<f32>(&ad.into_data(), Tolerance::absolute(0.0));
    }

    #[test]
    fn a_tensor_in_the_autodiff_graph_keeps_its_gradient() {
        let x = Tensor::<Autodiff<Cpu>, 3>::ones([2, 3, 4], &Default::default()).require_grad();
        let y = contiguous((x.clone() * 2.0).permute([0, 2, 1]));
        let grads = (y * 3.0).sum().backward();
        let g = x.grad(&grads).expect("the input keeps its gradient");
        g.into_data().assert_approx_eq::<f32>(
            &Tensor::<Cpu, 3>::full([2, 3, 4], 6.0, &Default::default()).into_data(),
            Tolerance::absolute(0.0),
        );
    }
}
