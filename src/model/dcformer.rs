//! DCFormer, Med3DVLM's vision encoder (`decomp_small` in `mirthAI/Med3DVLM`; backbones.md §1): a
//! CNN of decomposed 3D convolutions. Each [`DecompConv`] sums three convolutions with kernels
//! `(k,1,1)`, `(1,k,1)` and `(1,1,k)`, each followed by BatchNorm (running statistics: eval mode).
//! The stem is four of them (the first at stride 4; no activation, as released); each of the four
//! stages starts with a 3×3×3 max-pool at stride 2 and a 1×1 projection, then blocks of a
//! depthwise [`DecompConv`], a channels-last MLP (×4, exact GELU) scaled per channel, and a
//! residual. The volume `[B, 1, D, H, W]` is read as `(H, W, D)`; stage outputs are returned as
//! tokens in (D, H, W) order, `[B, D·H·W, C]`, as Med3DVLM packs them.

use burn::module::Param;
use burn::nn::Linear;
use burn::prelude::*;
use burn::tensor::activation::gelu;
use burn::tensor::module::conv3d;
use burn::tensor::ops::ConvOptions;
use serde::{Deserialize, Serialize};

use super::weights::{put, put_linear, RawTensor, WeightStore};

/// DCFormer's shape: channels of the stem and the four stages, blocks per stage (entry 0 is the
/// stem, always one), and each stage's decomposed-kernel size.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DcformerConfig {
    pub channels: [usize; 5],
    pub blocks: [usize; 5],
    pub kernels: [usize; 4],
}

impl DcformerConfig {
    /// `decomp_small`, the encoder of Med3DVLM's released CLIP (`MagicXin/DCFormer_SigLIP`).
    pub fn decomp_small() -> Self {
        DcformerConfig { channels: [64, 96, 192, 384, 768], blocks: [1, 2, 3, 6, 2], kernels: [13, 11, 9, 7] }
    }

    /// The width of the last stage's tokens.
    pub fn width(&self) -> usize {
        self.channels[4]
    }

    /// The last stage's grid (D, H, W) for a volume of `volume` (D, H, W): the stem divides each
    /// axis by 4 (`⌊(L − 1) / 4⌋ + 1`), each stage's max-pool halves it (`⌊(L + 1) / 2⌋`).
    pub fn token_grid(volume: [usize; 3]) -> [usize; 3] {
        volume.map(|l| (0..4).fold(l.saturating_sub(1) / 4 + 1, |l, _| l.div_ceil(2)))
    }
}

/// A 3D convolution with PyTorch's weight layout `[out, in / groups, kD, kH, kW]`.
#[derive(Module, Debug)]
pub struct Conv<B: Backend> {
    pub weight: Param<Tensor<B, 5>>,
    pub bias: Option<Param<Tensor<B, 1>>>,
    #[module(skip)]
    pub stride: usize,
    #[module(skip)]
    pub padding: [usize; 3],
    #[module(skip)]
    pub groups: usize,
}

impl<B: Backend> Conv<B> {
    pub fn forward(&self, x: Tensor<B, 5>) -> Tensor<B, 5> {
        let options = ConvOptions::new([self.stride; 3], self.padding, [1; 3], self.groups);
        conv3d(x, self.weight.val(), self.bias.as_ref().map(Param::val), options)
    }
}

/// BatchNorm3d in eval mode: `(x − running_mean) / √(running_var + eps) · weight + bias`.
#[derive(Module, Debug)]
pub struct BatchNorm<B: Backend> {
    pub weight: Param<Tensor<B, 1>>,
    pub bias: Param<Tensor<B, 1>>,
    pub mean: Param<Tensor<B, 1>>,
    pub var: Param<Tensor<B, 1>>,
    #[module(skip)]
    pub eps: f64,
}

impl<B: Backend> BatchNorm<B> {
    pub fn forward(&self, x: Tensor<B, 5>) -> Tensor<B, 5> {
        let c = self.weight.dims()[0];
        let per_channel = |t: Tensor<B, 1>| t.reshape([1, c, 1, 1, 1]);
        let inv = per_channel((self.var.val() + self.eps).sqrt());
        (x - per_channel(self.mean.val())) / inv * per_channel(self.weight.val()) + per_channel(self.bias.val())
    }
}

/// One branch of a [`DecompConv`]: a one-axis convolution and its BatchNorm.
#[derive(Module, Debug)]
pub struct Branch<B: Backend> {
    pub conv: Conv<B>,
    pub norm: BatchNorm<B>,
}

/// Three one-axis convolutions (`(k,1,1)`, `(1,k,1)`, `(1,1,k)`, padded to keep the size at
/// stride 1), each with BatchNorm, summed.
#[derive(Module, Debug)]
pub struct DecompConv<B: Backend> {
    pub branches: Vec<Branch<B>>,
}

impl<B: Backend> DecompConv<B> {
    pub fn forward(&self, x: Tensor<B, 5>) -> Tensor<B, 5> {
        let mut out: Option<Tensor<B, 5>> = None;
        for b in &self.branches {
            let y = b.norm.forward(b.conv.forward(x.clone()));
            out = Some(match out {
                Some(o) => o + y,
                None => y,
            });
        }
        out.expect("a decomposed convolution has three branches")
    }
}

/// A stage block: (max-pool + 1×1 projection when it opens the stage,) depthwise
/// [`DecompConv`], channels-last MLP scaled per channel, residual.
#[derive(Module, Debug)]
pub struct ConvBlock<B: Backend> {
    pub proj: Option<Conv<B>>,
    pub dwconv: DecompConv<B>,
    pub mlp1: Linear<B>,
    pub mlp2: Linear<B>,
    /// Layer scale `[channels]`.
    pub scale: Param<Tensor<B, 1>>,
}

impl<B: Backend> ConvBlock<B> {
    pub fn forward(&self, x: Tensor<B, 5>) -> Tensor<B, 5> {
        let x = match &self.proj {
            Some(p) => p.forward(max_pool_3_2_1(x)),
            None => x,
        };
        let c = self.scale.dims()[0];
        let y = self.dwconv.forward(x.clone()).permute([0, 2, 3, 4, 1]);
        let y = self.mlp2.forward(gelu(self.mlp1.forward(y))) * self.scale.val().reshape([1, 1, 1, 1, c]);
        x + y.permute([0, 4, 1, 2, 3])
    }
}

/// `MaxPool3d(kernel 3, stride 2, padding 1)`, one axis at a time (the max over a cube is the max
/// of the maxima along each axis); padding never wins, as PyTorch's implicit −∞.
pub fn max_pool_3_2_1<B: Backend>(x: Tensor<B, 5>) -> Tensor<B, 5> {
    let mut x = x;
    for axis in 2..5 {
        x = max_pool_axis(x, axis);
    }
    x
}

/// Along `axis`: `out[i] = max(x[2i−1], x[2i], x[2i+1])` over the indices inside the volume.
fn max_pool_axis<B: Backend>(x: Tensor<B, 5>, axis: usize) -> Tensor<B, 5> {
    let dims = x.dims();
    let len = dims[axis];
    let out = (len + 1) / 2;
    let (device, dtype) = (x.device(), x.dtype());
    let slab = |n: usize| {
        let mut d = dims;
        d[axis] = n;
        Tensor::<B, 5>::full(d, f32::NEG_INFINITY, &device).cast(dtype)
    };
    // x' = [−∞, x, (−∞)]: length 2·out + 1, x'[j] = x[j − 1].
    let mut parts = vec![slab(1), x];
    if 2 * out > len {
        parts.push(slab(2 * out - len));
    }
    let padded = Tensor::cat(parts, axis);
    let pairs = |t: Tensor<B, 5>| -> Tensor<B, 6> {
        let mut shape = [0usize; 6];
        for (i, s) in shape.iter_mut().enumerate() {
            *s = match i.cmp(&axis) {
                std::cmp::Ordering::Less => dims[i],
                std::cmp::Ordering::Equal => out,
                std::cmp::Ordering::Greater if i == axis + 1 => 2,
                std::cmp::Ordering::Greater => dims[i - 1],
            };
        }
        t.reshape(shape)
    };
    let mut shape = dims;
    shape[axis] = out;
    // max(x'[2i], x'[2i+1]) and x'[2i+2].
    let first = pairs(padded.clone().narrow(axis, 0, 2 * out)).max_dim(axis + 1).reshape(shape);
    let third = pairs(padded.narrow(axis, 1, 2 * out)).narrow(axis + 1, 1, 1).reshape(shape);
    first.max_pair(third)
}

/// A feature map `[B, C, H, W, D]` as tokens `[B, D·H·W, C]` in (D, H, W) order.
fn tokens<B: Backend>(t: Tensor<B, 5>) -> Tensor<B, 3> {
    let [b, c, h, w, d] = t.dims();
    t.permute([0, 4, 2, 3, 1]).reshape([b, d * h * w, c])
}

/// DCFormer's encoder.
#[derive(Module, Debug)]
pub struct Dcformer<B: Backend> {
    pub stem: Vec<DecompConv<B>>,
    pub stages: Vec<Vec<ConvBlock<B>>>,
}

impl<B: Backend> Dcformer<B> {
    /// Load from `store`, names after `prefix` as Med3DVLM saves them (`encoder.s0.0.{0..3}.c{1,2,3}.{0,1}.*`,
    /// `encoder.s{1..4}.{i}.{proj, dwconv.c{1,2,3}.{0,1}, mlp.mlp.{0,3}, scale}`). BatchNorm's
    /// `num_batches_tracked` is read and not used.
    pub fn load(cfg: &DcformerConfig, store: &WeightStore<B>, prefix: &str) -> Self {
        let ch = cfg.channels;
        let decomp = |name: &str, cin: usize, cout: usize, k: usize, stride: usize, groups: usize| DecompConv {
            branches: (0..3)
                .map(|a| {
                    let mut kernel = [1; 3];
                    kernel[a] = k;
                    let mut padding = [0; 3];
                    padding[a] = k / 2;
                    let b = |s: &str| format!("{name}.c{}.{s}", a + 1);
                    let _ = store.raw(&b("1.num_batches_tracked"));
                    Branch {
                        conv: Conv {
                            weight: store.param(&b("0.weight"), [cout, cin / groups, kernel[0], kernel[1], kernel[2]]),
                            bias: Some(store.param(&b("0.bias"), [cout])),
                            stride,
                            padding,
                            groups,
                        },
                        norm: BatchNorm {
                            weight: store.param(&b("1.weight"), [cout]),
                            bias: store.param(&b("1.bias"), [cout]),
                            mean: store.param(&b("1.running_mean"), [cout]),
                            var: store.param(&b("1.running_var"), [cout]),
                            eps: 1e-5,
                        },
                    }
                })
                .collect(),
        };
        let p = |s: String| format!("{prefix}{s}");
        let stem = (0..4)
            .map(|i| {
                let (cin, k, stride) = if i == 0 { (1, 7, 4) } else { (ch[0], 3, 1) };
                decomp(&p(format!("s0.0.{i}")), cin, ch[0], k, stride, 1)
            })
            .collect();
        let stages = (1..5)
            .map(|s| {
                (0..cfg.blocks[s])
                    .map(|i| {
                        let n = |x: &str| p(format!("s{s}.{i}.{x}"));
                        let c = ch[s];
                        ConvBlock {
                            proj: (i == 0).then(|| Conv {
                                weight: store.param(&n("proj.weight"), [c, ch[s - 1], 1, 1, 1]),
                                bias: None,
                                stride: 1,
                                padding: [0; 3],
                                groups: 1,
                            }),
                            dwconv: decomp(&n("dwconv"), c, c, cfg.kernels[s - 1], 1, c),
                            mlp1: store.linear(&n("mlp.mlp.0"), c, 4 * c, true),
                            mlp2: store.linear(&n("mlp.mlp.3"), 4 * c, c, true),
                            // `scale` in the released weights; some copies of the code call it `gamma`.
                            scale: store.param(&n(if store.contains(&n("gamma")) { "gamma" } else { "scale" }), [c]),
                        }
                    })
                    .collect()
            })
            .collect();
        Dcformer { stem, stages }
    }

    /// The shape this encoder was built with.
    pub fn config(&self) -> DcformerConfig {
        let mut channels = [0; 5];
        let mut blocks = [1; 5];
        let mut kernels = [0; 4];
        channels[0] = self.stem.first().map_or(0, |c| c.branches[0].conv.weight.dims()[0]);
        for (s, stage) in self.stages.iter().enumerate() {
            blocks[s + 1] = stage.len();
            if let Some(b) = stage.first() {
                channels[s + 1] = b.scale.dims()[0];
                kernels[s] = b.dwconv.branches[0].conv.weight.dims()[2];
            }
        }
        DcformerConfig { channels, blocks, kernels }
    }

    /// Every tensor under Med3DVLM's names after `prefix` (the inverse of [`load`](Self::load)):
    /// a fully fine-tuned encoder saved with its run.
    pub fn export(&self, prefix: &str, out: &mut Vec<(String, RawTensor)>) {
        let decomp = |out: &mut Vec<(String, RawTensor)>, name: String, c: &DecompConv<B>| {
            for (a, b) in c.branches.iter().enumerate() {
                let n = |s: &str| format!("{name}.c{}.{s}", a + 1);
                put(out, n("0.weight"), b.conv.weight.val().into_data());
                if let Some(bias) = &b.conv.bias {
                    put(out, n("0.bias"), bias.val().into_data());
                }
                put(out, n("1.weight"), b.norm.weight.val().into_data());
                put(out, n("1.bias"), b.norm.bias.val().into_data());
                put(out, n("1.running_mean"), b.norm.mean.val().into_data());
                put(out, n("1.running_var"), b.norm.var.val().into_data());
            }
        };
        for (i, c) in self.stem.iter().enumerate() {
            decomp(out, format!("{prefix}s0.0.{i}"), c);
        }
        for (s, stage) in self.stages.iter().enumerate() {
            for (i, b) in stage.iter().enumerate() {
                let n = |x: &str| format!("{prefix}s{}.{i}.{x}", s + 1);
                if let Some(p) = &b.proj {
                    put(out, n("proj.weight"), p.weight.val().into_data());
                }
                decomp(out, n("dwconv"), &b.dwconv);
                put_linear(out, &n("mlp.mlp.0"), &b.mlp1);
                put_linear(out, &n("mlp.mlp.3"), &b.mlp2);
                put(out, n("scale"), b.scale.val().into_data());
            }
        }
    }

    /// Every weight trainable except BatchNorm's running statistics, which stay as loaded (the
    /// encoder runs BatchNorm in eval mode, fine-tuned or not).
    pub fn trainable(self) -> Self {
        let mut m = self.map(&mut super::adapt::RequireGrad);
        for c in m.stem.iter_mut().chain(m.stages.iter_mut().flatten().map(|b| &mut b.dwconv)) {
            for b in &mut c.branches {
                b.norm.mean = b.norm.mean.clone().set_require_grad(false);
                b.norm.var = b.norm.var.clone().set_require_grad(false);
            }
        }
        m
    }

    /// How many values the running statistics hold (frozen even when the encoder trains).
    pub fn statistics(&self) -> usize {
        self.stem
            .iter()
            .chain(self.stages.iter().flatten().map(|b| &b.dwconv))
            .flat_map(|c| &c.branches)
            .map(|b| 2 * b.norm.mean.dims()[0])
            .sum()
    }

    /// Zero weights of `cfg`'s shapes (BatchNorm variances 1): for counting parameters at a
    /// published shape without its checkpoint.
    pub fn shaped(cfg: &DcformerConfig, device: &B::Device) -> Self {
        let store = WeightStore::<B>::new(std::path::Path::new("(shape only)"), Default::default(), &[], device);
        let mut m = Self::load(cfg, &store, "");
        for b in m.stem.iter_mut().chain(m.stages.iter_mut().flatten().map(|b| &mut b.dwconv)) {
            for branch in &mut b.branches {
                branch.norm.var = Param::from_tensor(branch.norm.var.val().ones_like());
            }
        }
        m
    }

    /// Every stage's output as tokens `[B, D·H·W, C]` in (D, H, W) order (entry 0 the stem's,
    /// entry 4 the last stage's).
    ///
    /// # Shapes
    /// - x: `[batch, 1, D, H, W]`
    pub fn forward(&self, x: Tensor<B, 5>) -> Vec<Tensor<B, 3>> {
        let mut out = Vec::with_capacity(5);
        self.run(x, |t| out.push(tokens(t)));
        out
    }

    /// The last stage's tokens `[B, tokens, C]` (the stages before stay feature maps).
    pub fn last_tokens(&self, x: Tensor<B, 5>) -> Tensor<B, 3> {
        tokens(self.run(x, |_| {}))
    }

    /// The stem and the stages on `x`, read as (H, W, D) as Med3DVLM does; `each` sees every
    /// stage's feature map `[B, C, H, W, D]`; returns the last one.
    fn run(&self, x: Tensor<B, 5>, mut each: impl FnMut(Tensor<B, 5>)) -> Tensor<B, 5> {
        let mut x = x.permute([0, 1, 3, 4, 2]);
        for conv in &self.stem {
            x = conv.forward(x);
        }
        each(x.clone());
        for stage in &self.stages {
            for block in stage {
                x = block.forward(x);
            }
            each(x.clone());
        }
        x
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type B = crate::backend::Cpu;

    /// The grid `token_grid` predicts is the one the encoder makes (128³: 2×2×2, as released).
    #[test]
    fn the_token_grid_is_the_last_stage_s() {
        assert_eq!(DcformerConfig::token_grid([128, 128, 128]), [2, 2, 2]);
        let cfg = DcformerConfig { channels: [2, 2, 2, 2, 2], blocks: [1, 1, 1, 1, 1], kernels: [3; 4] };
        let m = Dcformer::<B>::shaped(&cfg, &Default::default());
        for volume in [[32, 64, 64], [16, 32, 32], [40, 70, 96]] {
            let x = Tensor::<B, 5>::zeros([1, 1, volume[0], volume[1], volume[2]], &Default::default());
            let n: usize = DcformerConfig::token_grid(volume).iter().product();
            assert_eq!(m.last_tokens(x).dims(), [1, n, 2], "{volume:?}");
        }
    }

    #[test]
    fn max_pool_matches_pytorchs_on_odd_and_even_sizes() {
        // One axis of 5 and one of 4: PyTorch's MaxPool3d(3, 2, 1) keeps 3 and 2.
        let data: Vec<f32> = (0..20).map(|i| ((i * 7) % 11) as f32).collect();
        let x = Tensor::<B, 5>::from_data(TensorData::new(data.clone(), [1, 1, 5, 4, 1]), &Default::default());
        let got: Vec<f32> = max_pool_3_2_1(x).into_data().to_vec().unwrap();
        let at = |d: i64, h: i64| -> f32 {
            let mut m = f32::NEG_INFINITY;
            for dd in d * 2 - 1..=d * 2 + 1 {
                for hh in h * 2 - 1..=h * 2 + 1 {
                    if (0..5).contains(&dd) && (0..4).contains(&hh) {
                        m = m.max(data[(dd * 4 + hh) as usize]);
                    }
                }
            }
            m
        };
        let want: Vec<f32> = (0..3).flat_map(|d| (0..2).map(move |h| (d, h))).map(|(d, h)| at(d, h)).collect();
        assert_eq!(got, want);
    }
}
