//! Layer norm and exact GELU as single autodiff ops on the CPU, over the raw f32 buffers.
//!
//! Burn's autodiff has no layer-norm op: it differentiates the backend's default composition
//! (mean, subtract, square, mean, add, sqrt, divide, multiply, add), so a forward pass is nine
//! tensor ops and the backward pass more, each a trip through memory and an allocation. Flex's
//! GELU is one pass but calls a scalar `erf`. Together they were about a fifth of the phantom
//! training step (`perf record` on `benches/step.rs`). Here each is one op: layer norm keeps the
//! normalised rows and each row's `1/σ` for its backward pass, GELU its input; both run rows
//! (or chunks) in parallel with a vectorisable `erf`.
//!
//! Only frozen layer norms (γ and β outside the autodiff graph: the backbones' towers) take the
//! op; a trainable one keeps Burn's composition, which gives γ and β their gradients.

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::{BalancedCheckpointing, CheckpointStrategy, NoCheckpointing};
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::Autodiff;
use burn::nn::LayerNorm;
use burn::prelude::*;
use burn::tensor::ops::FloatTensor;
use burn::tensor::{DType, TensorPrimitive};
use burn_flex::FlexTensor;
use rayon::prelude::*;

use crate::backend::{same, Cpu};
use crate::model::chunked_attention::{primitive, tensor};
use crate::model::cpu_attention::{exp, from_values, slice};
use crate::model::cpu_layout::outside_graph;

/// Elements per parallel chunk of GELU, and the fewest a layer norm splits into rows for.
const CHUNK: usize = 1 << 14;

/// `norm(x)`: on the CPU with a frozen γ and β, one op ([`LayerNorm::forward`] otherwise).
pub fn layer_norm<B: Backend, const D: usize>(norm: &LayerNorm<B>, x: Tensor<B, D>) -> Tensor<B, D> {
    cpu_layer_norm(norm, &x).unwrap_or_else(|| norm.forward(x))
}

/// Exact (erf) GELU: on the CPU, one op with a vectorised `erf`
/// ([`burn::tensor::activation::gelu`] otherwise).
pub fn gelu<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    cpu_gelu(&x).unwrap_or_else(|| burn::tensor::activation::gelu(x))
}

/// The ε a layer norm was built with. Burn keeps it private; its module display prints it
/// (`epsilon: 0.00001`) in Rust's shortest round-trip form, so parsing gives it back exactly.
fn epsilon<B: Backend>(norm: &LayerNorm<B>) -> Option<f64> {
    let shown = format!("{norm}");
    let rest = &shown[shown.find("epsilon: ")? + "epsilon: ".len()..];
    rest[..rest.find([',', '}'])?].trim().parse().ok()
}

/// The op's forms on this build's CPU backends: plain Flex, and Flex under each autodiff
/// checkpointing strategy. `None` for other backends, dtypes, or a γ/β that needs a gradient.
fn cpu_layer_norm<B: Backend, const D: usize>(norm: &LayerNorm<B>, x: &Tensor<B, D>) -> Option<Tensor<B, D>> {
    if x.dtype() != DType::F32 || x.dims().iter().product::<usize>() == 0 {
        return None;
    }
    let eps = epsilon(norm)?;
    let gamma = norm.gamma.val();
    let beta = norm.beta.as_ref().map(|b| b.val());
    if gamma.dtype() != DType::F32 || beta.as_ref().is_some_and(|b| b.dtype() != DType::F32) {
        return None;
    }
    if let Some(x) = same::<_, Tensor<Cpu, D>>(x.clone()) {
        let gamma = same::<_, Tensor<Cpu, 1>>(gamma)?;
        let beta = beta.map(|b| same::<_, Tensor<Cpu, 1>>(b).expect("the same backend as γ"));
        return same(norm_forward(x, gamma, beta, eps)?.0);
    }
    macro_rules! on {
        ($strategy:ty) => {
            if let Some(x) = same::<_, Tensor<Autodiff<Cpu, $strategy>, D>>(x.clone()) {
                let frozen = |t: Tensor<Autodiff<Cpu, $strategy>, 1>| outside_graph(&t).then(|| t.inner());
                let gamma = frozen(same(gamma.clone())?)?;
                let beta = match beta.clone() {
                    Some(b) => Some(frozen(same(b)?)?),
                    None => None,
                };
                return same(layer_norm_autodiff(x, gamma, beta, eps)?);
            }
        };
    }
    on!(NoCheckpointing);
    on!(BalancedCheckpointing);
    None
}

fn cpu_gelu<B: Backend, const D: usize>(x: &Tensor<B, D>) -> Option<Tensor<B, D>> {
    if x.dtype() != DType::F32 {
        return None;
    }
    if let Some(x) = same::<_, Tensor<Cpu, D>>(x.clone()) {
        return same(map_values(&x, gelu_chunk));
    }
    if let Some(x) = same::<_, Tensor<Autodiff<Cpu, NoCheckpointing>, D>>(x.clone()) {
        return same(gelu_autodiff(x));
    }
    if let Some(x) = same::<_, Tensor<Autodiff<Cpu, BalancedCheckpointing>, D>>(x.clone()) {
        return same(gelu_autodiff(x));
    }
    None
}

/// The values of `t` as a contiguous f32 Flex tensor.
fn flat<const D: usize>(t: &Tensor<Cpu, D>) -> FlexTensor {
    t.clone().into_primitive().tensor().to_contiguous()
}

/// `f(x, out)` over `x`'s values in parallel chunks, into a new tensor of its shape.
fn map_values<const D: usize>(x: &Tensor<Cpu, D>, f: fn(&[f32], &mut [f32])) -> Tensor<Cpu, D> {
    let x_flat = flat(x);
    let xs = slice(&x_flat);
    let mut out = vec![0f32; xs.len()];
    out.par_chunks_mut(CHUNK).zip(xs.par_chunks(CHUNK)).for_each(|(o, x)| f(x, o));
    from_values::<Cpu, D>(out, x.dims())
}

/// The normalised rows `x̂` and each row's `1/σ` (what the backward pass keeps), and the output
/// `x̂ γ + β`. `None` for a γ or β of the wrong length.
fn norm_forward<const D: usize>(
    x: Tensor<Cpu, D>,
    gamma: Tensor<Cpu, 1>,
    beta: Option<Tensor<Cpu, 1>>,
    eps: f64,
) -> Option<(Tensor<Cpu, D>, Tensor<Cpu, D>, Vec<f32>)> {
    let dims = x.dims();
    let n = dims[D - 1];
    let (x_flat, g_flat) = (flat(&x), flat(&gamma));
    let b_flat = beta.as_ref().map(flat);
    let (xs, g) = (slice(&x_flat), slice(&g_flat));
    let b = b_flat.as_ref().map(slice);
    if g.len() != n || b.is_some_and(|b| b.len() != n) {
        return None;
    }
    let rows = xs.len() / n;
    let (mut xhat, mut out, mut rstd) = (vec![0f32; xs.len()], vec![0f32; xs.len()], vec![0f32; rows]);
    let per = (CHUNK / n).max(1);
    xhat.par_chunks_mut(per * n)
        .zip(out.par_chunks_mut(per * n))
        .zip(rstd.par_chunks_mut(per))
        .zip(xs.par_chunks(per * n))
        .for_each(|(((xhat, out), rstd), xs)| {
            for (((xhat, out), r), x) in xhat.chunks_mut(n).zip(out.chunks_mut(n)).zip(rstd).zip(xs.chunks(n)) {
                let mean = x.iter().sum::<f32>() / n as f32;
                let var = x.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / n as f32;
                *r = 1.0 / (var + eps as f32).sqrt();
                for (((h, o), v), gamma) in xhat.iter_mut().zip(out.iter_mut()).zip(x).zip(g) {
                    *h = (v - mean) * *r;
                    *o = *h * gamma;
                }
                if let Some(b) = b {
                    out.iter_mut().zip(b).for_each(|(o, b)| *o += b);
                }
            }
        });
    Some((from_values::<Cpu, D>(out, dims), from_values::<Cpu, D>(xhat, dims), rstd))
}

/// The gradient of the input of a layer norm with a frozen γ:
/// `dx = (1/σ)·(g γ − mean(g γ) − x̂ · mean(g γ ⊙ x̂))` per row.
fn norm_backward<const D: usize>(
    grad: Tensor<Cpu, D>,
    xhat: &Tensor<Cpu, D>,
    rstd: &[f32],
    gamma: &Tensor<Cpu, 1>,
) -> Tensor<Cpu, D> {
    let dims = grad.dims();
    let n = dims[D - 1];
    let (g_flat, h_flat, w_flat) = (flat(&grad), flat(xhat), flat(gamma));
    let (gs, hs, w) = (slice(&g_flat), slice(&h_flat), slice(&w_flat));
    let mut dx = vec![0f32; gs.len()];
    let per = (CHUNK / n).max(1);
    dx.par_chunks_mut(per * n)
        .zip(gs.par_chunks(per * n))
        .zip(hs.par_chunks(per * n))
        .zip(rstd.par_chunks(per))
        .for_each(|(((dx, gs), hs), rstd)| {
            for (((dx, g), h), r) in dx.chunks_mut(n).zip(gs.chunks(n)).zip(hs.chunks(n)).zip(rstd) {
                let (mut sum, mut dot) = (0f32, 0f32);
                for ((g, h), w) in g.iter().zip(h).zip(w) {
                    sum += g * w;
                    dot += g * w * h;
                }
                let (mean, mean_dot) = (sum / n as f32, dot / n as f32);
                for (((dx, g), h), w) in dx.iter_mut().zip(g).zip(h).zip(w) {
                    *dx = r * (g * w - mean - h * mean_dot);
                }
            }
        });
    from_values::<Cpu, D>(dx, dims)
}

#[derive(Debug)]
struct LayerNormBackward<const D: usize>;

impl<const D: usize> Backward<Cpu, 1> for LayerNormBackward<D> {
    /// `x̂`, each row's `1/σ`, γ.
    type State = (FloatTensor<Cpu>, Vec<f32>, FloatTensor<Cpu>);

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let grad = tensor::<Cpu, D>(grads.consume::<Cpu>(&ops.node));
        let (xhat, rstd, gamma) = ops.state;
        let [parent] = ops.parents;
        if let Some(node) = parent {
            let dx = norm_backward(grad, &tensor::<Cpu, D>(xhat), &rstd, &tensor::<Cpu, 1>(gamma));
            grads.register::<Cpu>(node.id, primitive(dx));
        }
    }
}

fn layer_norm_autodiff<C: CheckpointStrategy, const D: usize>(
    x: Tensor<Autodiff<Cpu, C>, D>,
    gamma: Tensor<Cpu, 1>,
    beta: Option<Tensor<Cpu, 1>>,
    eps: f64,
) -> Option<Tensor<Autodiff<Cpu, C>, D>> {
    let x = x.into_primitive().tensor();
    let (out, xhat, rstd) = norm_forward(tensor::<Cpu, D>(x.primitive.clone()), gamma.clone(), beta, eps)?;
    let output = match LayerNormBackward::<D>.prepare::<C>([x.node.clone()]).compute_bound().stateful() {
        OpsKind::Tracked(prep) => prep.finish((primitive(xhat), rstd, primitive(gamma)), primitive(out)),
        OpsKind::UnTracked(prep) => prep.finish(primitive(out)),
    };
    Some(Tensor::from_primitive(TensorPrimitive::Float(output)))
}

#[derive(Debug)]
struct GeluBackward<const D: usize>;

impl<const D: usize> Backward<Cpu, 1> for GeluBackward<D> {
    /// The input.
    type State = FloatTensor<Cpu>;

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let grad = tensor::<Cpu, D>(grads.consume::<Cpu>(&ops.node));
        let [parent] = ops.parents;
        if let Some(node) = parent {
            let (x, g) = (flat(&tensor::<Cpu, D>(ops.state)), flat(&grad));
            let (xs, gs) = (slice(&x), slice(&g));
            let mut dx = vec![0f32; xs.len()];
            dx.par_chunks_mut(CHUNK).zip(xs.par_chunks(CHUNK)).zip(gs.par_chunks(CHUNK)).for_each(|((dx, x), g)| {
                gelu_grad_chunk(x, g, dx);
            });
            grads.register::<Cpu>(node.id, primitive(from_values::<Cpu, D>(dx, grad.dims())));
        }
    }
}

fn gelu_autodiff<C: CheckpointStrategy, const D: usize>(x: Tensor<Autodiff<Cpu, C>, D>) -> Tensor<Autodiff<Cpu, C>, D> {
    let x = x.into_primitive().tensor();
    let out = map_values(&tensor::<Cpu, D>(x.primitive.clone()), gelu_chunk);
    let output = match GeluBackward::<D>.prepare::<C>([x.node.clone()]).compute_bound().stateful() {
        OpsKind::Tracked(prep) => prep.finish(x.primitive.clone(), primitive(out)),
        OpsKind::UnTracked(prep) => prep.finish(primitive(out)),
    };
    Tensor::from_primitive(TensorPrimitive::Float(output))
}

/// `1/√2`, and `1/√(2π)`.
const FRAC_1_SQRT_2: f32 = std::f32::consts::FRAC_1_SQRT_2;
const FRAC_1_SQRT_2PI: f32 = 0.398_942_3;

/// `erf(x)` and `exp(−x²)`: Abramowitz & Stegun 7.1.26 (1.5e-7 absolute in exact arithmetic,
/// under 5e-7 in f32 against libm's `erff`), branch-free so that loops over it vectorise.
#[inline(always)]
fn erf_and_gauss(x: f32) -> (f32, f32) {
    let a = x.abs();
    let t = 1.0 / (1.0 + 0.327_591_1 * a);
    let poly = ((((1.061_405_4 * t - 1.453_152_1) * t + 1.421_413_8) * t - 0.284_496_74) * t + 0.254_829_6) * t;
    let gauss = exp(-a * a);
    ((1.0 - poly * gauss).copysign(x), gauss)
}

/// `gelu(x) = x·Φ(x)`, `Φ(x) = (1 + erf(x/√2))/2`.
fn gelu_chunk(x: &[f32], out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
        // SAFETY: the CPU has the features the function is compiled for.
        return unsafe { gelu_chunk_avx2(x, out) };
    }
    gelu_chunk_lanes(x, out)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn gelu_chunk_avx2(x: &[f32], out: &mut [f32]) {
    gelu_chunk_lanes(x, out)
}

#[inline(always)]
fn gelu_chunk_lanes(x: &[f32], out: &mut [f32]) {
    for (o, &x) in out.iter_mut().zip(x) {
        let (erf, _) = erf_and_gauss(x * FRAC_1_SQRT_2);
        *o = 0.5 * x * (1.0 + erf);
    }
}

/// `dx = g·(Φ(x) + x·φ(x))`, `φ(x) = exp(−x²/2)/√(2π)`.
fn gelu_grad_chunk(x: &[f32], g: &[f32], dx: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
        // SAFETY: the CPU has the features the function is compiled for.
        return unsafe { gelu_grad_chunk_avx2(x, g, dx) };
    }
    gelu_grad_chunk_lanes(x, g, dx)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn gelu_grad_chunk_avx2(x: &[f32], g: &[f32], dx: &mut [f32]) {
    gelu_grad_chunk_lanes(x, g, dx)
}

#[inline(always)]
fn gelu_grad_chunk_lanes(x: &[f32], g: &[f32], dx: &mut [f32]) {
    for ((d, &x), &g) in dx.iter_mut().zip(x).zip(g) {
        let (erf, gauss) = erf_and_gauss(x * FRAC_1_SQRT_2);
        *d = g * (0.5 * (1.0 + erf) + x * FRAC_1_SQRT_2PI * gauss);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::nn::LayerNormConfig;
    use burn::tensor::{Distribution, Tolerance};

    type AD = Autodiff<Cpu>;

    #[test]
    fn epsilon_is_read_back_exactly() {
        for eps in [1e-5, 1e-6, 1e-12, 0.1] {
            let norm = LayerNormConfig::new(4).with_epsilon(eps).init::<Cpu>(&Default::default());
            assert_eq!(epsilon(&norm), Some(eps));
        }
    }

    #[test]
    fn erf_is_within_its_bound() {
        // Flex's erf is libm's erff (within an ulp or so).
        let xs: Vec<f32> = (-6000..=6000).map(|i| i as f32 / 1000.0).collect();
        let reference = Tensor::<Cpu, 1>::from_floats(xs.as_slice(), &Default::default())
            .erf()
            .into_data()
            .to_vec::<f32>()
            .unwrap();
        let mut worst = 0f64;
        for i in -6000..=6000 {
            let x = i as f32 / 1000.0;
            let (erf, gauss) = erf_and_gauss(x);
            worst = worst.max((erf - reference[(i + 6000) as usize]).abs() as f64);
            assert!((gauss as f64 - (-(x as f64) * x as f64).exp()).abs() < 1e-7, "exp(-x²) at {x}");
        }
        assert!(worst < 5e-7, "erf off by {worst}");
    }

    /// Output and input gradient of the op and of Burn's composition, for a frozen norm with and
    /// without β, and for GELU.
    #[test]
    fn the_ops_match_burns_with_gradients() {
        let device = Default::default();
        let x = Tensor::<Cpu, 3>::random([2, 5, 24], Distribution::Normal(0.5, 2.0), &device);
        let w = Tensor::<Cpu, 3>::random([2, 5, 24], Distribution::Uniform(-1.0, 1.0), &device);
        for bias in [true, false] {
            let mut norm = LayerNormConfig::new(24).with_epsilon(1e-6).with_bias(bias).init::<AD>(&device);
            norm.gamma =
                burn::module::Param::from_tensor(Tensor::random([24], Distribution::Uniform(0.5, 1.5), &device));
            let norm = norm.no_grad();
            type F = fn(&LayerNorm<AD>, Tensor<AD, 3>) -> Tensor<AD, 3>;
            let [ours, burns]: [F; 2] =
                [|n, x| gelu(layer_norm(n, x)), |n, x| burn::tensor::activation::gelu(n.forward(x))];
            let run = |f: F| {
                let leaf = Tensor::<AD, 3>::from_inner(x.clone()).require_grad();
                let y = f(&norm, leaf.clone() * 2.0);
                let g = (y.clone() * Tensor::from_inner(w.clone())).sum().backward();
                (y.inner(), leaf.grad(&g).expect("a gradient"))
            };
            let ((y1, g1), (y2, g2)) = (run(ours), run(burns));
            y1.into_data().assert_approx_eq::<f32>(&y2.into_data(), Tolerance::absolute(2e-6));
            g1.into_data().assert_approx_eq::<f32>(&g2.into_data(), Tolerance::absolute(1e-5));
            // Inference, on plain Flex.
            let plain = LayerNormConfig::new(24).with_epsilon(1e-6).with_bias(bias).init::<Cpu>(&device);
            layer_norm(&plain, x.clone())
                .into_data()
                .assert_approx_eq::<f32>(&plain.forward(x.clone()).into_data(), Tolerance::absolute(2e-6));
        }
    }

    #[test]
    fn a_trainable_norm_keeps_burns_composition_and_its_gradients() {
        let device = Default::default();
        let norm = LayerNormConfig::new(8).init::<AD>(&device);
        let x = Tensor::<AD, 2>::random([3, 8], Distribution::Normal(0.0, 1.0), &device).require_grad();
        assert!(cpu_layer_norm(&norm, &x).is_none(), "γ needs a gradient");
        let g = (layer_norm(&norm, x) * 3.0).sum().backward();
        assert!(norm.gamma.grad(&g).is_some());
    }
}
