//! The CPU kernels of attention: the block-wise op's forward and backward passes (and inference
//! attention) on Flex, written against the raw f32 buffers.
//!
//! The generic block-wise op ([`crate::model::chunked_attention`]) builds each block from Burn
//! tensor ops. On the CPU that costs a trip through memory for every op over every score
//! (`max`, `sub`, `exp`, `sum`, `div`, each a 16 MiB tensor) and scalar `exp`. Here each
//! (batch, head) runs on one core, a tile of query rows at a time, and a tile's scores stay
//! near that core (1 MiB) from the `Q Kᵀ` product to the `P V` product:
//!
//! - forward, per tile: `S = Q_t Kᵀ·scale + bias` (gemm), per row `m = max S`,
//!   `P = exp(S − m)` (a vectorised `exp`), `l = Σ P`, `O_t = P V / l` (gemm), `lse = m + ln l`;
//! - backward, per tile: `P = exp(S − lse)`, `dV += Pᵀ dO_t`, `dP = dO_t Vᵀ`,
//!   `dS = P ⊙ (dP − rowsum(dO ⊙ O))`, `dQ_t = dS K·scale`, `dK += dSᵀ Q_t·scale`.
//!
//! The products are the `gemm` crate's (the one Flex's matmul calls), single-threaded inside a
//! head; rayon spreads the heads over the cores. Only f32 runs here: other dtypes, and every
//! other backend, take the generic path.

use burn::prelude::*;
use burn::tensor::{DType, TensorData, TensorPrimitive};
use burn_flex::FlexTensor;
use rayon::prelude::*;

use crate::backend::{same, Cpu};
use crate::model::cpu_layout;

/// Bytes of scores one tile holds (126 query rows at 2,070 keys). Measured on a 2-core AMD EPYC
/// with 512 KiB of L2 per core, with a standalone copy of the forward kernel at M3D-CLIP's shape
/// (12 heads, 2,070 tokens): 16 to 128 rows took 0.22 to 0.14 s; the wider `gemm` calls gain
/// more than leaving L2 costs.
const TILE_BYTES: usize = 1 << 20;

/// Query rows per tile.
fn tile_rows(n_k: usize) -> usize {
    (TILE_BYTES / 4 / n_k.max(1)).clamp(8, 256)
}

/// The attention inputs as contiguous f32 buffers, when `B` is the CPU backend and the tensors
/// are f32 (`None` otherwise).
struct Inputs {
    q: FlexTensor,
    k: FlexTensor,
    v: FlexTensor,
    bias: Option<Bias>,
    /// batch, heads, query rows, key rows, head size.
    dims: [usize; 5],
}

/// An additive bias broadcast to `[batch, heads, n_q, n_k]`: its contiguous values and the
/// element stride of each of the four axes (0 where it broadcasts).
struct Bias {
    values: FlexTensor,
    strides: [usize; 4],
}

impl Bias {
    fn new(t: FlexTensor, full: [usize; 4]) -> Option<Self> {
        let shape = t.layout().shape().to_vec();
        if shape.len() != 4 || (0..4).any(|i| shape[i] != 1 && shape[i] != full[i]) {
            return None;
        }
        let mut strides = [0; 4];
        let mut step = 1;
        for i in (0..4).rev() {
            strides[i] = if shape[i] == 1 { 0 } else { step };
            step *= shape[i];
        }
        Some(Self { values: t, strides })
    }

    /// Adds the bias of `(batch, head, query row)` to one row of scores.
    fn add_row(&self, row: &mut [f32], b: usize, h: usize, i: usize) {
        let values = slice(&self.values);
        let start = b * self.strides[0] + h * self.strides[1] + i * self.strides[2];
        if self.strides[3] == 0 {
            let x = values[start];
            row.iter_mut().for_each(|s| *s += x);
        } else {
            let n = row.len();
            row.iter_mut().zip(&values[start..start + n]).for_each(|(s, x)| *s += x);
        }
    }
}

/// `t` as a contiguous f32 Flex tensor when `B` is the CPU backend (copied in runs where it
/// is permuted, [`cpu_layout::contiguous`]).
fn flat<B: Backend>(t: &Tensor<B, 4>) -> Option<FlexTensor> {
    let t = same::<_, Tensor<Cpu, 4>>(cpu_layout::contiguous(t.clone()))?;
    Some(t.into_primitive().tensor()).filter(|t| t.dtype() == DType::F32).map(|t| t.to_contiguous())
}

/// A contiguous f32 buffer of `shape` as a tensor of `B` (which is the CPU backend).
pub(crate) fn from_values<B: Backend, const D: usize>(values: Vec<f32>, shape: [usize; D]) -> Tensor<B, D> {
    let t =
        Tensor::<Cpu, D>::from_primitive(TensorPrimitive::Float(FlexTensor::from_data(TensorData::new(values, shape))));
    same(t).expect("B is the CPU backend")
}

/// The values of a contiguous f32 tensor.
pub(crate) fn slice(t: &FlexTensor) -> &[f32] {
    t.as_slice::<f32>().expect("a contiguous f32 tensor")
}

impl Inputs {
    fn new<B: Backend>(
        q: &Tensor<B, 4>,
        k: &Tensor<B, 4>,
        v: &Tensor<B, 4>,
        bias: Option<&Tensor<B, 4>>,
    ) -> Option<Self> {
        let [b, h, n_q, d] = q.dims();
        let n_k = k.dims()[2];
        // Empty tensors (and shapes that do not match) take the generic path.
        if k.dims() != [b, h, n_k, d] || v.dims() != [b, h, n_k, d] || b * h * n_q * n_k * d == 0 {
            return None;
        }
        let bias = match bias {
            Some(t) => Some(Bias::new(flat(t)?, [b, h, n_q, n_k])?),
            None => None,
        };
        Some(Self { q: flat(q)?, k: flat(k)?, v: flat(v)?, bias, dims: [b, h, n_q, n_k, d] })
    }
}

/// The forward pass on the CPU: the output and each query row's log-sum-exp
/// (`[batch, heads, n_q, 1]`). `None` when `B` is not the CPU backend or the tensors not f32.
pub fn forward<B: Backend>(
    q: &Tensor<B, 4>,
    k: &Tensor<B, 4>,
    v: &Tensor<B, 4>,
    scale: f64,
    bias: Option<&Tensor<B, 4>>,
) -> Option<(Tensor<B, 4>, Tensor<B, 4>)> {
    let x = Inputs::new(q, k, v, bias)?;
    let [b, h, n_q, n_k, d] = x.dims;
    let (q, k, v) = (slice(&x.q), slice(&x.k), slice(&x.v));
    let mut out = vec![0f32; b * h * n_q * d];
    let mut lse = vec![0f32; b * h * n_q];
    let rows = tile_rows(n_k);
    out.par_chunks_mut(n_q * d).zip(lse.par_chunks_mut(n_q)).enumerate().for_each_init(
        || vec![0f32; rows * n_k],
        |scores, (bh, (out, lse))| {
            let (q, kv) = (&q[bh * n_q * d..][..n_q * d], bh * n_k * d..(bh + 1) * n_k * d);
            let (k, v) = (&k[kv.clone()], &v[kv]);
            for start in (0..n_q).step_by(rows) {
                let len = rows.min(n_q - start);
                let s = &mut scores[..len * n_k];
                gemm(s, n_k, false, Mat::rows(&q[start * d..], len, d), Mat::transposed(k, n_k, d), scale as f32);
                let mut inv = [0f32; 256];
                for (i, row) in s.chunks_exact_mut(n_k).enumerate() {
                    if let Some(bias) = &x.bias {
                        bias.add_row(row, bh / h, bh % h, start + i);
                    }
                    let m = max(row);
                    let l = exp_shifted_sum(row, m);
                    lse[start + i] = m + l.ln();
                    inv[i] = 1.0 / l;
                }
                let o = &mut out[start * d..(start + len) * d];
                gemm(o, d, false, Mat::rows(s, len, n_k), Mat::rows(v, n_k, d), 1.0);
                for (row, inv) in o.chunks_exact_mut(d).zip(inv) {
                    row.iter_mut().for_each(|x| *x *= inv);
                }
            }
        },
    );
    Some((from_values(out, [b, h, n_q, d]), from_values(lse, [b, h, n_q, 1])))
}

/// What the backward passes read: the inputs, the output, the log-sum-exp ([`forward`]'s) and the
/// output's gradient, as contiguous f32 buffers.
pub struct Saved {
    x: Inputs,
    o: FlexTensor,
    lse: FlexTensor,
    g: FlexTensor,
    scale: f32,
}

/// One (batch, head) of [`Saved`].
struct Head<'a> {
    q: &'a [f32],
    k: &'a [f32],
    v: &'a [f32],
    o: &'a [f32],
    g: &'a [f32],
    lse: &'a [f32],
    /// The bias and this head's (batch, head) index.
    bias: Option<(&'a Bias, usize, usize)>,
    d: usize,
    scale: f32,
    tile_rows: usize,
}

impl Saved {
    /// `None` when `B` is not the CPU backend or the tensors not f32.
    #[allow(clippy::too_many_arguments)]
    pub fn new<B: Backend>(
        q: &Tensor<B, 4>,
        k: &Tensor<B, 4>,
        v: &Tensor<B, 4>,
        out: &Tensor<B, 4>,
        lse: &Tensor<B, 4>,
        grad_out: &Tensor<B, 4>,
        scale: f64,
        bias: Option<&Tensor<B, 4>>,
    ) -> Option<Self> {
        let x = Inputs::new(q, k, v, bias)?;
        Some(Self { x, o: flat(out)?, lse: flat(lse)?, g: flat(grad_out)?, scale: scale as f32 })
    }

    /// The backward pass on the CPU: the gradients of Q, K and V.
    pub fn grads<B: Backend>(&self) -> [Tensor<B, 4>; 3] {
        let [_, _, n_q, n_k, d] = self.x.dims;
        self.per_head(n_q, n_k, |head, (p_tile, ds_tile), [dq, dk, dv]| {
            for start in (0..n_q).step_by(head.tile_rows) {
                let len = head.tile_rows.min(n_q - start);
                let (p, ds) = (&mut p_tile[..len * n_k], &mut ds_tile[..len * n_k]);
                head.scores_and_grads(p, ds, start, len, n_k, Some(dv));
                let dq = &mut dq[start * d..(start + len) * d];
                gemm(dq, d, false, Mat::rows(ds, len, n_k), Mat::rows(head.k, n_k, d), head.scale);
                gemm(dk, d, true, Mat::transposed(ds, len, n_k), Mat::rows(&head.q[start * d..], len, d), head.scale);
            }
        })
    }

    /// [`Self::grads`] when only the first `r` rows of Q, K and V need gradients, as in a frozen
    /// tower's first block, where [CLS], [MMSE] and the prompts train and the patch tokens are
    /// constants. Returns those rows' gradients, `[b, h, r, d]` each, at about `r / n` of the
    /// full pass's cost: every query row's scores are recomputed against the first `r` keys only
    /// (for their dK and dV), and against every key only for the first `r` query rows (their
    /// dQ). `None` when `r` is 0 or exceeds either sequence.
    pub fn leading_grads<B: Backend>(&self, r: usize) -> Option<[Tensor<B, 4>; 3]> {
        let [_, _, n_q, n_k, d] = self.x.dims;
        if r == 0 || r > n_q || r > n_k {
            return None;
        }
        Some(self.per_head(r, r, |head, (p_tile, ds_tile), [dq, dk, dv]| {
            // Every query row against the first r keys: their dK and dV.
            for start in (0..n_q).step_by(head.tile_rows) {
                let len = head.tile_rows.min(n_q - start);
                let (p, ds) = (&mut p_tile[..len * r], &mut ds_tile[..len * r]);
                head.scores_and_grads(p, ds, start, len, r, Some(&mut *dv));
                gemm(dk, d, true, Mat::transposed(ds, len, r), Mat::rows(&head.q[start * d..], len, d), head.scale);
            }
            // The first r query rows against every key: their dQ.
            for start in (0..r).step_by(head.tile_rows) {
                let len = head.tile_rows.min(r - start);
                let (p, ds) = (&mut p_tile[..len * n_k], &mut ds_tile[..len * n_k]);
                head.scores_and_grads(p, ds, start, len, n_k, None);
                let dq = &mut dq[start * d..(start + len) * d];
                gemm(dq, d, false, Mat::rows(ds, len, n_k), Mat::rows(head.k, n_k, d), head.scale);
            }
        }))
    }

    /// Runs `f` on each (batch, head) in parallel, with two score tiles of its own and zeroed
    /// gradient buffers for the first `q_rows` rows of Q and `k_rows` rows of K and V; returns
    /// those buffers as `[b, h, rows, d]` tensors.
    fn per_head<B: Backend>(
        &self,
        q_rows: usize,
        k_rows: usize,
        f: impl Fn(&Head, (&mut [f32], &mut [f32]), [&mut [f32]; 3]) + Sync,
    ) -> [Tensor<B, 4>; 3] {
        let [b, h, n_q, n_k, d] = self.x.dims;
        let (q, k, v) = (slice(&self.x.q), slice(&self.x.k), slice(&self.x.v));
        let (o, lse, g) = (slice(&self.o), slice(&self.lse), slice(&self.g));
        let mut dq = vec![0f32; b * h * q_rows * d];
        let mut dk = vec![0f32; b * h * k_rows * d];
        let mut dv = vec![0f32; b * h * k_rows * d];
        let rows = tile_rows(n_k);
        dq.par_chunks_mut(q_rows * d)
            .zip(dk.par_chunks_mut(k_rows * d))
            .zip(dv.par_chunks_mut(k_rows * d))
            .enumerate()
            .for_each_init(
                || (vec![0f32; rows * n_k], vec![0f32; rows * n_k]),
                |(p_tile, ds_tile), (bh, ((dq, dk), dv))| {
                    let qs = bh * n_q * d..(bh + 1) * n_q * d;
                    let kv = bh * n_k * d..(bh + 1) * n_k * d;
                    let head = Head {
                        q: &q[qs.clone()],
                        k: &k[kv.clone()],
                        v: &v[kv],
                        o: &o[qs.clone()],
                        g: &g[qs],
                        lse: &lse[bh * n_q..(bh + 1) * n_q],
                        bias: self.x.bias.as_ref().map(|bias| (bias, bh / h, bh % h)),
                        d,
                        scale: self.scale,
                        tile_rows: rows,
                    };
                    f(&head, (p_tile, ds_tile), [dq, dk, dv]);
                },
            );
        [from_values(dq, [b, h, q_rows, d]), from_values(dk, [b, h, k_rows, d]), from_values(dv, [b, h, k_rows, d])]
    }
}

impl Head<'_> {
    /// One tile of the backward pass: query rows `start..start + len` against the first `cols`
    /// keys. Leaves `P = exp(S − lse)` in `p` and `dS = P ⊙ (dO_t V_cᵀ − rowsum(dO ⊙ O))` in
    /// `ds` (both `len × cols`), and adds `Pᵀ dO_t` to `dv` (the first `cols` key rows) when
    /// given.
    fn scores_and_grads(
        &self,
        p: &mut [f32],
        ds: &mut [f32],
        start: usize,
        len: usize,
        cols: usize,
        dv: Option<&mut [f32]>,
    ) {
        let d = self.d;
        let (q_t, g_t) = (&self.q[start * d..], &self.g[start * d..]);
        gemm(p, cols, false, Mat::rows(q_t, len, d), Mat::transposed(self.k, cols, d), self.scale);
        for (i, row) in p.chunks_exact_mut(cols).enumerate() {
            if let Some((bias, b, h)) = self.bias {
                bias.add_row(row, b, h, start + i);
            }
            exp_shifted_sum(row, self.lse[start + i]);
        }
        if let Some(dv) = dv {
            gemm(dv, d, true, Mat::transposed(p, len, cols), Mat::rows(g_t, len, d), 1.0);
        }
        gemm(ds, cols, false, Mat::rows(g_t, len, d), Mat::transposed(self.v, cols, d), 1.0);
        for (i, (ds, p)) in ds.chunks_exact_mut(cols).zip(p.chunks_exact(cols)).enumerate() {
            let r = start + i;
            let dot: f32 = self.g[r * d..(r + 1) * d].iter().zip(&self.o[r * d..(r + 1) * d]).map(|(a, b)| a * b).sum();
            ds.iter_mut().zip(p).for_each(|(ds, p)| *ds = p * (*ds - dot));
        }
    }
}

/// A matrix operand of [`gemm`]: `rows × cols` values read from `data` with a row stride and a
/// column stride.
#[derive(Clone, Copy)]
struct Mat<'a> {
    data: &'a [f32],
    rows: usize,
    cols: usize,
    row_stride: usize,
    col_stride: usize,
}

impl<'a> Mat<'a> {
    /// The first `rows` rows of a row-major matrix with `cols` columns.
    fn rows(data: &'a [f32], rows: usize, cols: usize) -> Self {
        Self { data, rows, cols, row_stride: cols, col_stride: 1 }
    }

    /// The transpose of a row-major `rows × cols` matrix (a `cols × rows` operand).
    fn transposed(data: &'a [f32], rows: usize, cols: usize) -> Self {
        Self { data, rows: cols, cols: rows, row_stride: 1, col_stride: cols }
    }

    fn fits(&self) -> bool {
        self.rows == 0
            || self.cols == 0
            || (self.rows - 1) * self.row_stride + (self.cols - 1) * self.col_stride < self.data.len()
    }
}

/// `dst = beta · lhs rhs`, or `dst += beta · lhs rhs` when `accumulate`; `dst` is row-major
/// with `dst_row_stride`. Single-threaded: the callers run one per core.
fn gemm(dst: &mut [f32], dst_row_stride: usize, accumulate: bool, lhs: Mat, rhs: Mat, beta: f32) {
    let (m, k, n) = (lhs.rows, lhs.cols, rhs.cols);
    assert!(rhs.rows == k && lhs.fits() && rhs.fits(), "gemm operands do not match");
    assert!(m == 0 || n == 0 || (m - 1) * dst_row_stride + n <= dst.len(), "gemm output too small");
    // SAFETY: the asserts above keep every element gemm reads or writes inside the slices.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            dst_row_stride as isize,
            accumulate,
            lhs.data.as_ptr(),
            lhs.col_stride as isize,
            lhs.row_stride as isize,
            rhs.data.as_ptr(),
            rhs.col_stride as isize,
            rhs.row_stride as isize,
            1.0,
            beta,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
}

/// The largest value of a row (eight lanes, so it vectorises).
fn max(row: &[f32]) -> f32 {
    let mut lanes = [f32::NEG_INFINITY; 8];
    let chunks = row.chunks_exact(8);
    let tail = chunks.remainder();
    for c in chunks {
        for (m, &x) in lanes.iter_mut().zip(c) {
            *m = if x > *m { x } else { *m };
        }
    }
    tail.iter().chain(&lanes).fold(f32::NEG_INFINITY, |m, &x| if x > m { x } else { m })
}

/// Replaces each `x` of the row by `exp(x − shift)` and returns their sum.
fn exp_shifted_sum(row: &mut [f32], shift: f32) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
        // SAFETY: the CPU has the features the function is compiled for.
        return unsafe { exp_shifted_sum_avx2(row, shift) };
    }
    exp_shifted_sum_lanes(row, shift)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn exp_shifted_sum_avx2(row: &mut [f32], shift: f32) -> f32 {
    exp_shifted_sum_lanes(row, shift)
}

#[inline(always)]
fn exp_shifted_sum_lanes(row: &mut [f32], shift: f32) -> f32 {
    let mut sums = [0f32; 8];
    let mut chunks = row.chunks_exact_mut(8);
    for c in &mut chunks {
        for (s, x) in sums.iter_mut().zip(c.iter_mut()) {
            *x = exp(*x - shift);
            *s += *x;
        }
    }
    let mut sum: f32 = sums.iter().sum();
    for x in chunks.into_remainder() {
        *x = exp(*x - shift);
        sum += *x;
    }
    sum
}

/// `eˣ` within 2 ulp for x ≤ 88 (0 below −87.3, where f32 leaves normal numbers), branch-free
/// so that loops over it vectorise: `eˣ = 2ⁿ·eʳ` with `n = round(x/ln 2)`, `|r| ≤ ln 2 / 2`, and
/// Cephes' degree-6 polynomial for `eʳ`.
#[inline(always)]
pub(crate) fn exp(x: f32) -> f32 {
    // Adding 1.5·2²³ rounds to an integer, which then sits in the low bits of the sum.
    const ROUND: f32 = 12_582_912.0;
    let xc = if x < -87.0 {
        -87.0
    } else if x > 88.0 {
        88.0
    } else {
        x
    };
    let t = xc * std::f32::consts::LOG2_E + ROUND;
    let n = t - ROUND;
    let r = xc - n * 0.693_359_4 + n * 2.121_944_4e-4;
    let mut p = 1.987_569_2e-4_f32;
    p = p * r + 1.398_2e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 5.000_000_1e-1;
    let e = p * r * r + r + 1.0;
    // 2ⁿ from n's bits in t: n ∈ [−126, 127], so n + 127 is a normal exponent.
    let two_n = f32::from_bits(t.to_bits().wrapping_sub(ROUND.to_bits()).wrapping_add(127) << 23);
    let keep = 0u32.wrapping_sub((x >= -87.3 || x.is_nan()) as u32);
    f32::from_bits((e * two_n).to_bits() & keep)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_is_within_two_ulp_and_vanishes_below_normal_range() {
        let mut worst = 0f64;
        for i in -87_000..=88_000 {
            let x = i as f32 / 1000.0;
            let exact = (x as f64).exp();
            worst = worst.max(((exp(x) as f64) - exact).abs() / exact);
        }
        assert!(worst < 2.5e-7, "relative error {worst}");
        assert_eq!(exp(-1e9), 0.0);
        assert_eq!(exp(f32::NEG_INFINITY), 0.0);
        let mut row = vec![0.5f32; 19];
        row[3] = -1e9;
        let sum = exp_shifted_sum(&mut row, 0.5);
        assert_eq!((row[3], row[0], sum), (0.0, 1.0, 18.0));
    }

    /// The leading rows' gradients equal the full backward pass's first rows, with tiles that
    /// split both the rows and the leading block (300 keys: 256-row tiles).
    #[test]
    fn the_leading_backward_is_the_full_backward_at_those_rows() {
        use burn::tensor::Distribution;
        let device = Default::default();
        for (n, r) in [(9, 3), (300, 22), (300, 260)] {
            let x = |n| Tensor::<Cpu, 4>::random([2, 3, n, 8], Distribution::Normal(0.0, 1.0), &device);
            let (q, k, v, g) = (x(n), x(n), x(n), x(n));
            let (out, lse) = forward(&q, &k, &v, 0.35, None).unwrap();
            let saved = Saved::new(&q, &k, &v, &out, &lse, &g, 0.35, None).unwrap();
            let full: [Tensor<Cpu, 4>; 3] = saved.grads();
            let lead: [Tensor<Cpu, 4>; 3] = saved.leading_grads(r).unwrap();
            for (name, (f, l)) in ["dq", "dk", "dv"].iter().zip(full.into_iter().zip(lead)) {
                let want = f.narrow(2, 0, r);
                let scale: f32 = want.clone().abs().max().into_scalar();
                let diff: f32 = (l - want).abs().max().into_scalar();
                assert!(diff <= 1e-5 * scale.max(1.0), "n {n}, r {r}, {name}: {diff}");
            }
        }
        let x = Tensor::<Cpu, 4>::ones([1, 1, 4, 2], &device);
        let saved = Saved::new(&x, &x, &x, &x, &x.clone().narrow(3, 0, 1), &x, 1.0, None).unwrap();
        assert!(saved.leading_grads::<Cpu>(5).is_none());
    }

    #[test]
    fn max_reads_every_lane_and_the_tail() {
        for n in [1, 7, 8, 9, 17, 33] {
            for at in 0..n {
                let mut row = vec![-3.0f32; n];
                row[at] = 2.0;
                assert_eq!(max(&row), 2.0, "n {n}, at {at}");
            }
        }
    }

    #[test]
    fn gemm_reads_transposed_operands() {
        // a (2×3) · bᵀ with b stored 2×3: [[1,2,3],[4,5,6]] · [[1,0,1],[0,1,0]]ᵀ
        let a = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
        let b = [1.0, 0.0, 1.0, 0.0, 1.0, 0.0];
        let mut c = [10.0f32; 4];
        gemm(&mut c, 2, false, Mat::rows(&a, 2, 3), Mat::transposed(&b, 2, 3), 2.0);
        assert_eq!(c, [8.0, 4.0, 20.0, 10.0]);
        gemm(&mut c, 2, true, Mat::rows(&a, 2, 3), Mat::transposed(&b, 2, 3), 1.0);
        assert_eq!(c, [12.0, 6.0, 30.0, 15.0]);
    }
}
