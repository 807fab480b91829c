//! Attention with a memory-efficient backward pass, for training.
//!
//! Under autodiff, Burn builds attention from matmul, exp, sum and div. Each of those saves
//! its `n_q × n_k` inputs for the backward pass. At M3D-CLIP's 2,070 tokens that is several
//! 2,070² score tensors per head and per layer, tens of GiB on a batch of 8. This op saves only
//! Q, K, V, the output and each query row's log-sum-exp (all `O(n·d)`). Its backward pass
//! recomputes the scores block by block from them, as FlashAttention's does:
//!
//! - forward, per block of query rows: `S = Q_b Kᵀ·scale + bias`, `lse = log Σ exp S`,
//!   `O_b = exp(S − lse) V`;
//! - backward, with `D = rowsum(dO ⊙ O)`, per block: `P = exp(S − lse)`, `dV += Pᵀ dO_b`,
//!   `dS = P ⊙ (dO_b Vᵀ − D_b)`, `dQ_b = dS K·scale`, `dK += dSᵀ Q_b·scale`.
//!
//! A block holds at most [`BLOCK_ELEMENTS`] scores ([`CUDA_BLOCK_ELEMENTS`] on CUDA), so memory
//! stays linear in the token count.
//! The blocks are plain tensor ops on the inner backend, so the op runs on every backend
//! (CubeCL's wgpu and CUDA; Flex too). On the CPU (f32), the same passes run as fused kernels
//! over the raw buffers instead ([`crate::model::cpu_attention`]). The additive bias (BERT's padding mask) is a
//! constant: a bias that needs a gradient takes the decomposed path (see
//! [`crate::model::attention::attention`]).

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::Autodiff;
use burn::prelude::*;
use burn::tensor::ops::FloatTensor;
use burn::tensor::TensorPrimitive;

use crate::backend::attention_block_elements;
use crate::model::cpu_attention;

/// The most scores (`batch · heads · rows · n_k`) one block computes at once: 2²² floats,
/// 16 MiB in fp32.
pub const BLOCK_ELEMENTS: usize = 1 << 22;

/// The block budget on CUDA: 2²⁷ scores, 512 MiB in fp32. Each block is a handful of kernel
/// launches, and small blocks leave the GPU idle between them: at M3D-CLIP's shape, batch 8,
/// 2²² scores make 21-row blocks, about 100 per attention call, and the step ran at 5.5 scans/s
/// on an H200 against 12.0 for the decomposed form (`scripts/gpu_check.sh`). A few blocks of
/// 2²⁷ keep the matrix products large; the backward pass's transient tensors stay a few GiB.
/// (wgpu keeps [`BLOCK_ELEMENTS`]: its buffers bind at most 128 MiB on some drivers.)
pub const CUDA_BLOCK_ELEMENTS: usize = 1 << 27;

/// Query rows per block of at most `elements` scores.
fn block_rows(elements: usize, batch: usize, heads: usize, n_q: usize, n_k: usize) -> usize {
    (elements / (batch * heads * n_k).max(1)).clamp(1, n_q.max(1))
}

/// Whether all `batch · heads · n_q · n_k` scores fit in one block (then keeping them costs
/// less than recomputing them).
pub fn fits_one_block(batch: usize, heads: usize, n_q: usize, n_k: usize) -> bool {
    batch * heads * n_q * n_k <= BLOCK_ELEMENTS
}

/// The bias rows of one query block: a bias with one row (a key mask) serves every block.
fn bias_rows<B: Backend>(bias: Option<&Tensor<B, 4>>, start: usize, len: usize) -> Option<Tensor<B, 4>> {
    bias.map(|b| if b.dims()[2] == 1 { b.clone() } else { b.clone().narrow(2, start, len) })
}

/// `q_b kᵀ + bias` for a block of query rows already multiplied by the scale.
fn scores<B: Backend>(q_scaled: Tensor<B, 4>, k_t: Tensor<B, 4>, bias: Option<Tensor<B, 4>>) -> Tensor<B, 4> {
    let s = q_scaled.matmul(k_t);
    match bias {
        Some(b) => s + b,
        None => s,
    }
}

/// The output and each query row's log-sum-exp, in blocks of rows (`[batch, heads, rows, 1]`
/// each): on the CPU, [`cpu_attention::forward`] (one block of all rows); elsewhere
/// [`forward_blocks`].
///
/// # Shapes
/// - q: `[batch, heads, n_q, head_dim]`, k and v: `[batch, heads, n_k, head_dim]`
/// - bias: broadcastable to `[batch, heads, n_q, n_k]`
pub fn forward<B: Backend>(
    q: Tensor<B, 4>,
    k: Tensor<B, 4>,
    v: Tensor<B, 4>,
    scale: f64,
    bias: Option<Tensor<B, 4>>,
) -> (Tensor<B, 4>, Vec<Tensor<B, 4>>) {
    match cpu_attention::forward(&q, &k, &v, scale, bias.as_ref()) {
        Some((out, lse)) => (out, vec![lse]),
        None => forward_blocks(q, k, v, scale, bias),
    }
}

/// [`forward`] from Burn tensor ops, on any backend. The log-sum-exp stays in blocks: Flex
/// broadcasts a fresh tensor about 11× faster than a narrowed view of a larger one.
pub fn forward_blocks<B: Backend>(
    q: Tensor<B, 4>,
    k: Tensor<B, 4>,
    v: Tensor<B, 4>,
    scale: f64,
    bias: Option<Tensor<B, 4>>,
) -> (Tensor<B, 4>, Vec<Tensor<B, 4>>) {
    let [b, h, n_q, _] = q.dims();
    let n_k = k.dims()[2];
    let rows = block_rows(attention_block_elements::<B>(), b, h, n_q, n_k);
    let k_t = k.swap_dims(2, 3);
    let (mut outs, mut lses) = (Vec::new(), Vec::new());
    for start in (0..n_q).step_by(rows) {
        let len = rows.min(n_q - start);
        let s = scores(q.clone().narrow(2, start, len) * scale, k_t.clone(), bias_rows(bias.as_ref(), start, len));
        let m = s.clone().max_dim(3);
        let p = (s - m.clone()).exp();
        let l = p.clone().sum_dim(3);
        outs.push(p.matmul(v.clone()) / l.clone());
        lses.push(m + l.log());
    }
    (Tensor::cat(outs, 2), lses)
}

/// The gradients of Q, K and V, recomputing the scores block by block (`lse` as [`forward`]
/// returns it): on the CPU, [`cpu_attention::Saved::grads`]; elsewhere [`backward_blocks`].
#[allow(clippy::too_many_arguments)]
pub fn backward<B: Backend>(
    q: Tensor<B, 4>,
    k: Tensor<B, 4>,
    v: Tensor<B, 4>,
    out: Tensor<B, 4>,
    lse: Vec<Tensor<B, 4>>,
    grad_out: Tensor<B, 4>,
    scale: f64,
    bias: Option<Tensor<B, 4>>,
) -> [Tensor<B, 4>; 3] {
    if let [all] = lse.as_slice() {
        if let Some(saved) = cpu_attention::Saved::new(&q, &k, &v, &out, all, &grad_out, scale, bias.as_ref()) {
            return saved.grads();
        }
    }
    backward_blocks(q, k, v, out, lse, grad_out, scale, bias)
}

/// [`backward`] from Burn tensor ops, on any backend; `lse` in blocks of rows as
/// [`forward_blocks`] returns it, or as one tensor of all rows.
#[allow(clippy::too_many_arguments)]
pub fn backward_blocks<B: Backend>(
    q: Tensor<B, 4>,
    k: Tensor<B, 4>,
    v: Tensor<B, 4>,
    out: Tensor<B, 4>,
    lse: Vec<Tensor<B, 4>>,
    grad_out: Tensor<B, 4>,
    scale: f64,
    bias: Option<Tensor<B, 4>>,
) -> [Tensor<B, 4>; 3] {
    let [b, h, n_q, _] = q.dims();
    let n_k = k.dims()[2];
    let rows = block_rows(attention_block_elements::<B>(), b, h, n_q, n_k);
    let lse = if lse.len() == n_q.div_ceil(rows) {
        lse
    } else {
        let all = Tensor::cat(lse, 2);
        (0..n_q).step_by(rows).map(|start| all.clone().narrow(2, start, rows.min(n_q - start))).collect()
    };
    let k_t = k.clone().swap_dims(2, 3);
    let v_t = v.clone().swap_dims(2, 3);
    let mut dq = Vec::new();
    let mut dk = k.zeros_like();
    let mut dv = v.zeros_like();
    for (start, lse) in (0..n_q).step_by(rows).zip(lse) {
        let len = rows.min(n_q - start);
        let q_b = q.clone().narrow(2, start, len) * scale;
        let g_b = grad_out.clone().narrow(2, start, len);
        let d = (g_b.clone() * out.clone().narrow(2, start, len)).sum_dim(3);
        let p = (scores(q_b.clone(), k_t.clone(), bias_rows(bias.as_ref(), start, len)) - lse).exp();
        dv = dv + p.clone().swap_dims(2, 3).matmul(g_b.clone());
        let ds = p * (g_b.matmul(v_t.clone()) - d);
        dq.push(ds.clone().matmul(k.clone()) * scale);
        dk = dk + ds.swap_dims(2, 3).matmul(q_b);
    }
    [Tensor::cat(dq, 2), dk, dv]
}

/// A float primitive as a tensor, and back: what autodiff ops save and hand over.
pub(crate) fn tensor<B: Backend, const D: usize>(p: FloatTensor<B>) -> Tensor<B, D> {
    Tensor::from_primitive(TensorPrimitive::Float(p))
}

pub(crate) fn primitive<B: Backend, const D: usize>(t: Tensor<B, D>) -> FloatTensor<B> {
    t.into_primitive().tensor()
}

#[derive(Debug)]
struct ChunkedAttentionBackward;

/// What the backward pass keeps: Q, K, V, the output, the log-sum-exp blocks, the bias and the
/// scale.
type Saved<B> = ([FloatTensor<B>; 4], Vec<FloatTensor<B>>, Option<FloatTensor<B>>, f64);

impl<B: Backend> Backward<B, 3> for ChunkedAttentionBackward {
    type State = Saved<B>;

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let grad_out = tensor::<B, 4>(grads.consume::<B>(&ops.node));
        let ([q, k, v, out], lse, bias, scale) = ops.state;
        let [dq, dk, dv] = backward(
            tensor(q),
            tensor(k),
            tensor(v),
            tensor(out),
            lse.into_iter().map(tensor).collect(),
            grad_out,
            scale,
            bias.map(tensor),
        );
        for (parent, g) in ops.parents.into_iter().zip([dq, dk, dv]) {
            if let Some(node) = parent {
                grads.register::<B>(node.id, primitive(g));
            }
        }
    }
}

/// Attention on an autodiff backend through the block-wise op. The bias must not need a
/// gradient (its graph is dropped).
pub fn autodiff<B: Backend, C: CheckpointStrategy>(
    q: Tensor<Autodiff<B, C>, 4>,
    k: Tensor<Autodiff<B, C>, 4>,
    v: Tensor<Autodiff<B, C>, 4>,
    scale: f64,
    bias: Option<Tensor<Autodiff<B, C>, 4>>,
) -> Tensor<Autodiff<B, C>, 4> {
    let bias = bias.map(|b| b.inner());
    let [q, k, v] = [q, k, v].map(|t| t.into_primitive().tensor());
    let prep = ChunkedAttentionBackward.prepare::<C>([q.node.clone(), k.node.clone(), v.node.clone()]).compute_bound();
    let [qi, ki, vi] = [&q, &k, &v].map(|t| tensor::<B, 4>(t.primitive.clone()));
    let output = match prep.stateful() {
        OpsKind::Tracked(prep) => {
            let (out, lse) = forward(qi.clone(), ki.clone(), vi.clone(), scale, bias.clone());
            let saved = [qi, ki, vi, out.clone()].map(primitive);
            let lse = lse.into_iter().map(primitive).collect();
            prep.finish((saved, lse, bias.map(primitive), scale), primitive(out))
        }
        OpsKind::UnTracked(prep) => prep.finish(primitive(forward(qi, ki, vi, scale, bias).0)),
    };
    Tensor::from_primitive(TensorPrimitive::Float(output))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::Cpu;
    use crate::model::attention::decomposed;
    use burn::tensor::Tolerance;

    type AD = Autodiff<Cpu>;

    /// Values in [-1, 1) from a seeded xorshift, independent of Burn's shared generator.
    fn random(shape: [usize; 4], seed: u64) -> Tensor<AD, 4> {
        let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        let values: Vec<f32> = (0..shape.iter().product::<usize>())
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                (state >> 40) as f32 / (1u64 << 23) as f32 - 1.0
            })
            .collect();
        Tensor::<AD, 1>::from_floats(values.as_slice(), &Default::default()).reshape(shape)
    }

    /// Gradients of `Σ w ⊙ attention(q, k, v)` for both implementations.
    fn grads(
        q: Tensor<AD, 4>,
        k: Tensor<AD, 4>,
        v: Tensor<AD, 4>,
        bias: Option<Tensor<AD, 4>>,
        chunked: bool,
    ) -> (Tensor<Cpu, 4>, [Tensor<Cpu, 4>; 3]) {
        let [q, k, v] = [q, k, v].map(|t| t.require_grad());
        let w = random(q.dims(), 99);
        let out = if chunked {
            autodiff(q.clone(), k.clone(), v.clone(), 0.3, bias)
        } else {
            decomposed(q.clone(), k.clone(), v.clone(), 0.3, bias)
        };
        let g = (out.clone() * w).sum().backward();
        (out.inner(), [&q, &k, &v].map(|t| t.grad(&g).expect("gradient")))
    }

    #[test]
    fn blocks_match_the_decomposed_attention_with_and_without_a_mask() {
        let (q, k, v) = (random([2, 3, 7, 4], 1), random([2, 3, 5, 4], 2), random([2, 3, 5, 4], 3));
        let mask = Tensor::<AD, 4>::from_floats([[[[0.0, 0.0, -1e9, 0.0, -1e9]]], [[[0.0; 5]]]], &Default::default());
        for bias in [None, Some(mask)] {
            let (o1, g1) = grads(q.clone(), k.clone(), v.clone(), bias.clone(), true);
            let (o2, g2) = grads(q.clone(), k.clone(), v.clone(), bias.clone(), false);
            o1.into_data().assert_approx_eq::<f32>(&o2.into_data(), Tolerance::absolute(1e-6));
            for (a, b) in g1.into_iter().zip(g2) {
                a.into_data().assert_approx_eq::<f32>(&b.into_data(), Tolerance::absolute(1e-5));
            }
        }
    }

    #[test]
    fn the_cpu_kernels_match_the_tensor_op_blocks_with_every_bias_shape() {
        let (q, k, v) = (random([2, 3, 7, 4], 11), random([2, 3, 9, 4], 12), random([2, 3, 9, 4], 13));
        let g = random([2, 3, 7, 4], 14).inner();
        let [q, k, v] = [q, k, v].map(|t| t.inner());
        for bias in [None, Some([2, 1, 1, 9]), Some([1, 3, 7, 9]), Some([2, 3, 7, 1])] {
            let bias = bias.map(|s| random(s, 15).inner() * 2.0);
            let (o1, lse) = forward(q.clone(), k.clone(), v.clone(), 0.3, bias.clone());
            assert_eq!(lse.len(), 1, "the CPU kernel ran");
            let (o2, blocks) = forward_blocks(q.clone(), k.clone(), v.clone(), 0.3, bias.clone());
            o1.clone().into_data().assert_approx_eq::<f32>(&o2.into_data(), Tolerance::absolute(1e-6));
            Tensor::cat(blocks, 2)
                .into_data()
                .assert_approx_eq::<f32>(&lse[0].clone().into_data(), Tolerance::absolute(1e-6));
            let g1 = backward(q.clone(), k.clone(), v.clone(), o1.clone(), lse.clone(), g.clone(), 0.3, bias.clone());
            let g2 = backward_blocks(q.clone(), k.clone(), v.clone(), o1, lse, g.clone(), 0.3, bias);
            for (a, b) in g1.into_iter().zip(g2) {
                a.into_data().assert_approx_eq::<f32>(&b.into_data(), Tolerance::absolute(1e-5));
            }
        }
    }

    #[test]
    fn the_tensor_op_backward_takes_the_cpu_kernels_single_log_sum_exp() {
        // As in several_blocks_give_the_same_gradients_as_one: blocks of 2, 2 and 1 query rows.
        let n_k = BLOCK_ELEMENTS / 2;
        let [q, k, v] =
            [([1, 1, 5, 2], 4), ([1, 1, n_k, 2], 5), ([1, 1, n_k, 2], 6)].map(|(s, seed)| random(s, seed).inner());
        let g = random([1, 1, 5, 2], 7).inner();
        let (o, lse) = forward(q.clone(), k.clone(), v.clone(), 0.3, None);
        let g1 = backward(q.clone(), k.clone(), v.clone(), o.clone(), lse.clone(), g.clone(), 0.3, None);
        let g2 = backward_blocks(q, k, v, o, lse, g, 0.3, None);
        for (a, b) in g1.into_iter().zip(g2) {
            a.into_data().assert_approx_eq::<f32>(&b.into_data(), Tolerance::absolute(1e-4));
        }
    }

    #[test]
    fn a_block_never_exceeds_its_budget_and_the_rows_are_covered() {
        assert_eq!(block_rows(BLOCK_ELEMENTS, 2, 12, 2070, 2070), BLOCK_ELEMENTS / (24 * 2070));
        assert_eq!(block_rows(BLOCK_ELEMENTS, 1, 1, 5, 3), 5);
        assert_eq!(block_rows(BLOCK_ELEMENTS, 64, 64, 10, 1 << 22), 1);
        // On CUDA, batch 8 at M3D-CLIP's shape: four blocks of up to 675 rows, not about 100.
        assert_eq!(block_rows(CUDA_BLOCK_ELEMENTS, 8, 12, 2070, 2070), 675);
        assert_eq!(attention_block_elements::<Cpu>(), BLOCK_ELEMENTS);
    }

    #[test]
    fn several_blocks_give_the_same_gradients_as_one() {
        // n_k large enough that one block holds 2 query rows (BLOCK_ELEMENTS / n_k = 2): 5 rows
        // make blocks of 2, 2 and 1.
        let n_k = BLOCK_ELEMENTS / 2;
        let (q, k, v) = (random([1, 1, 5, 2], 4), random([1, 1, n_k, 2], 5), random([1, 1, n_k, 2], 6));
        assert_eq!(block_rows(attention_block_elements::<Cpu>(), 1, 1, 5, n_k), 2);
        let (o1, g1) = grads(q.clone(), k.clone(), v.clone(), None, true);
        let (o2, g2) = grads(q, k, v, None, false);
        o1.into_data().assert_approx_eq::<f32>(&o2.into_data(), Tolerance::absolute(1e-5));
        for (a, b) in g1.into_iter().zip(g2) {
            a.into_data().assert_approx_eq::<f32>(&b.into_data(), Tolerance::absolute(1e-4));
        }
    }
}
