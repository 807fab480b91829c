//! Self-attention straight from the packed `qkv` projection, on the CPU: one autodiff op from
//! `qkv` to the merged heads.
//!
//! The generic path splits `qkv` into heads with reshape, permute and narrow, and merges the
//! output back the same way. Under autodiff each of those is a node of the graph, and Flex
//! copies each permuted reshape one element at a time through its general index iterator.
//! Their backward passes are worse: narrow's builds a zero tensor the size of all of `qkv` for
//! each of Q, K and V, writes its part and the three are summed. At the phantom shape (64
//! tokens) those copies took about a fifth of the training step (`perf record` on
//! `benches/step.rs`).
//!
//! Here the split and the merge are copies in runs of `head_dim` ([`cpu_layout`]), attention is
//! [`cpu_attention`]'s kernels, and the backward pass writes the gradient of `qkv` in its own
//! layout in one more run copy.

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::{BalancedCheckpointing, CheckpointStrategy, NoCheckpointing};
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::Autodiff;
use burn::prelude::*;
use burn::tensor::ops::FloatTensor;
use burn::tensor::{DType, TensorPrimitive};

use crate::backend::{same, Cpu};
use crate::model::chunked_attention::{primitive, tensor};
use crate::model::{cpu_attention, cpu_layout};

/// `softmax(q kᵀ · scale) v` over heads, from the packed projection, when `qkv` lives on the CPU
/// backend (with or without autodiff) in f32; `None` otherwise, for the caller's generic path.
/// `bias` (BERT's padding mask) is added to the scores; it must be a constant (no gradient).
///
/// # Shapes
/// - qkv: `[batch, tokens, 3 · heads · head_dim]`, `[q | k | v]` with heads outermost in each
/// - bias: broadcastable to `[batch, heads, tokens, tokens]`
/// - output: `[batch, tokens, heads · head_dim]`
pub fn self_attention<B: Backend>(
    qkv: &Tensor<B, 3>,
    heads: usize,
    scale: f64,
    bias: Option<&Tensor<B, 4>>,
) -> Option<Tensor<B, 3>> {
    let [b, n, w] = qkv.dims();
    if qkv.dtype() != DType::F32 || heads == 0 || w % (3 * heads) != 0 || b * n * w == 0 {
        return None;
    }
    if let Some(t) = same::<_, Tensor<Cpu, 3>>(qkv.clone()) {
        let bias = match bias {
            Some(b) => Some(same::<_, Tensor<Cpu, 4>>(b.clone())?),
            None => None,
        };
        return same(forward(t, heads, scale, bias)?.0);
    }
    if crate::model::attention::decomposed_training() {
        return None;
    }
    fn on<C: CheckpointStrategy, B: Backend>(
        qkv: &Tensor<B, 3>,
        heads: usize,
        scale: f64,
        bias: Option<&Tensor<B, 4>>,
    ) -> Option<Tensor<B, 3>> {
        let qkv = same::<_, Tensor<Autodiff<Cpu, C>, 3>>(qkv.clone())?;
        let values = qkv.clone().inner();
        same(record(qkv, values, heads, scale, constant::<B, C>(bias)?, None)?)
    }
    on::<NoCheckpointing, B>(qkv, heads, scale, bias)
        .or_else(|| on::<BalancedCheckpointing, B>(qkv, heads, scale, bias))
}

/// The bias's values when it is a constant of the autodiff backend `Autodiff<Cpu, C>`
/// (`Some(None)` without a bias); `None` when it needs a gradient or lives elsewhere.
#[allow(clippy::option_option)]
fn constant<B: Backend, C: CheckpointStrategy>(bias: Option<&Tensor<B, 4>>) -> Option<Option<Tensor<Cpu, 4>>> {
    match bias {
        None => Some(None),
        Some(b) => {
            let b = same::<_, Tensor<Autodiff<Cpu, C>, 4>>(b.clone())?;
            cpu_layout::outside_graph(&b).then(|| Some(b.inner()))
        }
    }
}

/// [`self_attention`] of `[head; tail]` (joined along the tokens) under autodiff on the CPU,
/// where `tail` is a constant outside the graph (a frozen tower's patch tokens entering its
/// first block): the backward pass computes the gradient of `head` alone
/// ([`cpu_attention::Saved::leading_grads`]). `None` when `tail` is in the graph, or the tensors are
/// not f32 tensors of the CPU backend under autodiff, for the caller's generic path.
///
/// # Shapes
/// - head: `[batch, r, 3 · heads · head_dim]`, tail: `[batch, n − r, 3 · heads · head_dim]`
/// - output: `[batch, n, heads · head_dim]`
pub fn self_attention_constant_tail<B: Backend>(
    head: &Tensor<B, 3>,
    tail: &Tensor<B, 3>,
    heads: usize,
    scale: f64,
) -> Option<Tensor<B, 3>> {
    let ([b, r, w], [bt, _, wt]) = (head.dims(), tail.dims());
    if (bt, wt) != (b, w) || r == 0 || crate::model::attention::decomposed_training() {
        return None;
    }
    fn on<C: CheckpointStrategy, B: Backend>(
        head: &Tensor<B, 3>,
        tail: &Tensor<B, 3>,
        heads: usize,
        scale: f64,
    ) -> Option<Tensor<B, 3>> {
        let head = same::<_, Tensor<Autodiff<Cpu, C>, 3>>(head.clone())?;
        let tail = same::<_, Tensor<Autodiff<Cpu, C>, 3>>(tail.clone())?;
        same(constant_tail(head, tail, heads, scale)?)
    }
    on::<NoCheckpointing, B>(head, tail, heads, scale)
        .or_else(|| on::<BalancedCheckpointing, B>(head, tail, heads, scale))
}

fn constant_tail<C: CheckpointStrategy>(
    head: Tensor<Autodiff<Cpu, C>, 3>,
    tail: Tensor<Autodiff<Cpu, C>, 3>,
    heads: usize,
    scale: f64,
) -> Option<Tensor<Autodiff<Cpu, C>, 3>> {
    if !cpu_layout::outside_graph(&tail) {
        return None;
    }
    let rows = head.dims()[1];
    let qkv = Tensor::cat(vec![head.clone().inner(), tail.inner()], 1);
    if qkv.dtype() != DType::F32 || qkv.dims()[2] % (3 * heads) != 0 {
        return None;
    }
    record(head, qkv, heads, scale, None, Some(rows))
}

/// What the backward pass keeps: Q, K, V (`[b, h, n, d]`), the output in the same layout, each
/// query row's log-sum-exp.
type Saved = [Tensor<Cpu, 4>; 5];

/// The merged output and what the backward pass keeps.
fn forward(
    qkv: Tensor<Cpu, 3>,
    heads: usize,
    scale: f64,
    bias: Option<Tensor<Cpu, 4>>,
) -> Option<(Tensor<Cpu, 3>, Saved)> {
    let [q, k, v] = split(qkv, heads);
    let (out, lse) = cpu_attention::forward(&q, &k, &v, scale, bias.as_ref())?;
    Some((merge(out.clone()), [q, k, v, out, lse]))
}

/// `[b, n, 3·h·d]` → contiguous Q, K and V, each `[b, h, n, d]`.
fn split(qkv: Tensor<Cpu, 3>, heads: usize) -> [Tensor<Cpu, 4>; 3] {
    let [b, n, w] = qkv.dims();
    let d = w / (3 * heads);
    let t = qkv.reshape([b, n, 3, heads, d]);
    [0, 1, 2]
        .map(|i| cpu_layout::contiguous(t.clone().narrow(2, i, 1).permute([2, 0, 3, 1, 4])).reshape([b, heads, n, d]))
}

/// `[b, h, n, d]` → contiguous `[b, n, h·d]`.
fn merge(x: Tensor<Cpu, 4>) -> Tensor<Cpu, 3> {
    let [b, h, n, d] = x.dims();
    cpu_layout::contiguous(x.swap_dims(1, 2)).reshape([b, n, h * d])
}

/// The gradients of Q, K and V (`[b, h, n, d]` each) as the gradient of the packed `qkv`.
fn pack([dq, dk, dv]: [Tensor<Cpu, 4>; 3]) -> Tensor<Cpu, 3> {
    let [b, h, n, d] = dq.dims();
    cpu_layout::contiguous(Tensor::stack::<5>(vec![dq, dk, dv], 0).permute([1, 3, 0, 2, 4])).reshape([b, n, 3 * h * d])
}

/// The attention of `qkv` as one graph node whose backward pass registers the gradient of
/// `parent`: `qkv` holds `parent`'s values, or (with `leading`) `parent`'s rows followed by
/// constant ones, whose gradients are never computed ([`cpu_attention::Saved::leading_grads`]).
fn record<C: CheckpointStrategy>(
    parent: Tensor<Autodiff<Cpu, C>, 3>,
    qkv: Tensor<Cpu, 3>,
    heads: usize,
    scale: f64,
    bias: Option<Tensor<Cpu, 4>>,
    leading: Option<usize>,
) -> Option<Tensor<Autodiff<Cpu, C>, 3>> {
    let parent = parent.into_primitive().tensor();
    let (out, saved) = forward(qkv, heads, scale, bias.clone())?;
    let output = match SelfAttentionBackward.prepare::<C>([parent.node.clone()]).compute_bound().stateful() {
        OpsKind::Tracked(prep) => {
            prep.finish((saved.map(primitive), bias.map(primitive), leading, scale), primitive(out))
        }
        OpsKind::UnTracked(prep) => prep.finish(primitive(out)),
    };
    Some(Tensor::from_primitive(TensorPrimitive::Float(output)))
}

#[derive(Debug)]
struct SelfAttentionBackward;

impl Backward<Cpu, 1> for SelfAttentionBackward {
    /// The saved tensors, the bias, the leading rows that need gradients (all when `None`) and
    /// the scale.
    type State = ([FloatTensor<Cpu>; 5], Option<FloatTensor<Cpu>>, Option<usize>, f64);

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let grad_out = tensor::<Cpu, 3>(grads.consume::<Cpu>(&ops.node));
        let (saved, bias, leading, scale) = ops.state;
        let [q, k, v, out, lse] = saved.map(tensor::<Cpu, 4>);
        let bias = bias.map(tensor::<Cpu, 4>);
        let [b, h, n, d] = q.dims();
        let grad_out = grad_out.reshape([b, n, h, d]).swap_dims(1, 2);
        let saved = cpu_attention::Saved::new(&q, &k, &v, &out, &lse, &grad_out, scale, bias.as_ref())
            .expect("f32 tensors on the CPU, as in the forward pass");
        let grads_qkv = match leading {
            Some(r) => saved.leading_grads(r).expect("the leading rows fit the sequence, as in the forward pass"),
            None => saved.grads(),
        };
        let [parent] = ops.parents;
        if let Some(node) = parent {
            grads.register::<Cpu>(node.id, primitive(pack(grads_qkv)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::attention::{decomposed, merge_heads};
    use burn::tensor::{Distribution, Tolerance};

    type AD = Autodiff<Cpu>;

    /// The generic path: split, Burn's decomposed attention, merge.
    fn reference<B: Backend>(qkv: Tensor<B, 3>, heads: usize, scale: f64, bias: Option<Tensor<B, 4>>) -> Tensor<B, 3> {
        let [b, n, w] = qkv.dims();
        let d = w / (3 * heads);
        let t = qkv.reshape([b, n, 3, heads, d]).permute([2, 0, 3, 1, 4]);
        let part = |i: usize| t.clone().narrow(0, i, 1).reshape([b, heads, n, d]);
        merge_heads(decomposed(part(0), part(1), part(2), scale, bias))
    }

    /// With and without a padding mask (BERT's `[batch, 1, 1, tokens]` additive bias: the
    /// second sequence's last two tokens are padding).
    #[test]
    fn the_packed_op_matches_split_decomposed_and_merge_with_gradients() {
        let device = Default::default();
        let (heads, d) = (3, 4);
        let x = Tensor::<Cpu, 3>::random([2, 7, 3 * heads * d], Distribution::Uniform(-1.0, 1.0), &device);
        let w = Tensor::<Cpu, 3>::random([2, 7, heads * d], Distribution::Uniform(-1.0, 1.0), &device);
        let mut mask = vec![0f32; 14];
        mask[12..].fill(-10_000.0);
        let mask = Tensor::<Cpu, 4>::from_data(TensorData::new(mask, [2, 1, 1, 7]), &device);
        for bias in [None, Some(mask)] {
            // Inference.
            let out = self_attention(&x, heads, 0.4, bias.as_ref()).expect("the CPU op");
            out.into_data().assert_approx_eq::<f32>(
                &reference(x.clone(), heads, 0.4, bias.clone()).into_data(),
                Tolerance::absolute(1e-6),
            );
            // Training: the gradient of qkv, for an input computed from a leaf (as the qkv
            // Linear's output is).
            let grads = |packed: bool| {
                let leaf = Tensor::<AD, 3>::from_inner(x.clone()).require_grad();
                let qkv = leaf.clone() * 1.5;
                let bias = bias.clone().map(Tensor::<AD, 4>::from_inner);
                let out = if packed {
                    self_attention(&qkv, heads, 0.4, bias.as_ref()).expect("the CPU op")
                } else {
                    reference(qkv, heads, 0.4, bias)
                };
                let g = (out.clone() * Tensor::from_inner(w.clone())).sum().backward();
                (out.inner(), leaf.grad(&g).expect("a gradient"))
            };
            let ((o1, g1), (o2, g2)) = (grads(true), grads(false));
            o1.into_data().assert_approx_eq::<f32>(&o2.into_data(), Tolerance::absolute(1e-6));
            g1.into_data().assert_approx_eq::<f32>(&g2.into_data(), Tolerance::absolute(1e-5));
        }
        // A bias that needs a gradient is left to the generic path.
        let tracked = Tensor::<AD, 4>::zeros([2, 1, 1, 7], &device).require_grad();
        let qkv = Tensor::<AD, 3>::from_inner(x).require_grad();
        assert!(self_attention(&qkv, heads, 0.4, Some(&tracked)).is_none());
    }

    #[test]
    fn other_dtypes_and_shapes_take_the_generic_path() {
        let device = Default::default();
        let x = Tensor::<Cpu, 3>::ones([1, 2, 12], &device);
        assert!(self_attention(&x, 5, 1.0, None).is_none(), "12 is not 3 · 5 · d");
        assert!(self_attention(&x.clone().cast(DType::F16), 2, 1.0, None).is_none());
        assert!(self_attention(&Tensor::<Cpu, 3>::ones([1, 0, 12], &device), 2, 1.0, None).is_none());
    }
}
