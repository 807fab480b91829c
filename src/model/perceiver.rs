//! M3D-LaMed's spatial-pooling projector (its "perceiver"), as the image head of the paper's
//! "3D spatial-pooling perceiver + LoRA" baseline (table 2).
//!
//! In M3D-LaMed it maps the ViT's patch tokens (CLS dropped) into the language model: the tokens
//! go back onto their 3D grid, a `k×k×k` average pool with stride `k` (default 2) shrinks the grid
//! eightfold (M3D's 8×16×16 becomes 4×8×8 = 256 tokens), and an MLP applies to each token:
//! `Linear(hidden → width)`, then `depth − 1` times GELU (exact) and `Linear(width → width)`;
//! M3D's default is depth 2 with the language model's width (3072 for Phi-3, 4096 for LLaMA).
//!
//! A CLIP classifier has no language model to feed, so adfit averages the projected tokens into
//! one vector, which `f_v` maps into the joint space in place of the CLS token. Those two
//! choices are adfit's, not M3D's. An axis shorter than the pool keeps its length (kernel
//! `min(k, grid)`); a remainder is dropped, as PyTorch's `avg_pool3d` drops it.

use burn::module::Initializer;
use burn::nn::{Linear, LinearConfig};
use burn::prelude::*;
use burn::tensor::activation::gelu;

use super::weights::{put_linear, RawTensor, WeightStore};

#[derive(Module, Debug)]
pub struct SpatialPooling<B: Backend> {
    /// `Linear(hidden → width)`, then `Linear(width → width)` for each further layer.
    pub layers: Vec<Linear<B>>,
    #[module(skip)]
    pub pool: usize,
}

impl<B: Backend> SpatialPooling<B> {
    pub fn init(hidden: usize, width: usize, depth: usize, pool: usize, device: &B::Device) -> Self {
        let init = Initializer::Normal { mean: 0.0, std: 0.02 };
        let layers = (0..depth.max(1))
            .map(|i| {
                LinearConfig::new(if i == 0 { hidden } else { width }, width)
                    .with_initializer(init.clone())
                    .init(device)
            })
            .collect();
        SpatialPooling { layers, pool: pool.max(1) }
    }

    /// Its layers as `{prefix}perceiver.{i}` (PyTorch layout).
    pub fn export(&self, prefix: &str, out: &mut Vec<(String, RawTensor)>) {
        for (i, l) in self.layers.iter().enumerate() {
            put_linear(out, &format!("{prefix}perceiver.{i}"), l);
        }
    }

    /// The layers [`SpatialPooling::export`] writes, read back.
    pub fn load(mut self, store: &WeightStore<B>, prefix: &str) -> Self {
        for (i, l) in self.layers.iter_mut().enumerate() {
            let [d_in, d_out] = l.weight.dims();
            *l = store.linear(&format!("{prefix}perceiver.{i}"), d_in, d_out, true);
        }
        self
    }

    /// The output width (the input of `f_v`).
    pub fn width(&self) -> usize {
        self.layers.last().map_or(0, |l| l.weight.dims()[1])
    }

    /// The pooled grid of a token grid.
    pub fn pooled_grid(&self, grid: [usize; 3]) -> [usize; 3] {
        grid.map(|g| g / self.pool.min(g).max(1))
    }

    /// Pool the patch tokens on their grid and project each pooled token.
    ///
    /// # Shapes
    /// - patches: `[batch, g0·g1·g2, hidden]` in the ViT's token order (`(i0·g1 + i1)·g2 + i2`)
    ///   → `[batch, pooled tokens, width]`
    pub fn tokens(&self, patches: Tensor<B, 3>, grid: [usize; 3]) -> Tensor<B, 3> {
        let [b, n, c] = patches.dims();
        assert_eq!(n, grid.iter().product::<usize>(), "patch tokens do not fill the grid {grid:?}");
        let k = grid.map(|g| self.pool.min(g).max(1));
        let a = self.pooled_grid(grid);
        let x = patches
            .reshape([b, grid[0], grid[1], grid[2], c])
            .narrow(1, 0, a[0] * k[0])
            .narrow(2, 0, a[1] * k[1])
            .narrow(3, 0, a[2] * k[2])
            .reshape([b, a[0], k[0], a[1], k[1], a[2], k[2], c])
            .mean_dim(2)
            .mean_dim(4)
            .mean_dim(6)
            .reshape([b, a[0] * a[1] * a[2], c]);
        let mut h = self.layers[0].forward(x);
        for l in &self.layers[1..] {
            h = l.forward(gelu(h));
        }
        h
    }

    /// The image feature: the projected pooled tokens, averaged.
    ///
    /// # Shapes
    /// - patches: `[batch, g0·g1·g2, hidden]` → `[batch, width]`
    pub fn forward(&self, patches: Tensor<B, 3>, grid: [usize; 3]) -> Tensor<B, 2> {
        let t = self.tokens(patches, grid);
        let [b, _, w] = t.dims();
        t.mean_dim(1).reshape([b, w])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::Cpu;
    use burn::tensor::TensorData;

    #[test]
    fn pools_each_cube_of_the_grid_like_avg_pool3d() {
        let device = Default::default();
        // One channel, grid 2×4×5: the value of token (i0, i1, i2) is 100·i0 + 10·i1 + i2.
        let grid = [2, 4, 5];
        let values: Vec<f32> = (0..2)
            .flat_map(|i0| (0..4).flat_map(move |i1| (0..5).map(move |i2| (100 * i0 + 10 * i1 + i2) as f32)))
            .collect();
        let x = Tensor::<Cpu, 3>::from_data(TensorData::new(values, [1, 40, 1]), &device);
        let mut p = SpatialPooling::<Cpu>::init(1, 1, 1, 2, &device);
        // The identity projection, so the pooled values show.
        p.layers[0].weight = burn::module::Param::from_tensor(Tensor::ones([1, 1], &device));
        p.layers[0].bias = Some(burn::module::Param::from_tensor(Tensor::zeros([1], &device)));
        assert_eq!(p.pooled_grid(grid), [1, 2, 2]);
        let got: Vec<f32> = p.tokens(x, grid).into_data().to_vec().unwrap();
        // Cube (0, j, l) averages i0 ∈ {0,1}, i1 ∈ {2j, 2j+1}, i2 ∈ {2l, 2l+1}; i2 = 4 is dropped.
        let want: Vec<f32> =
            (0..2).flat_map(|j| (0..2).map(move |l| (50 + 10 * (2 * j) + 5 + 2 * l) as f32 + 0.5)).collect();
        assert_eq!(got, want);
    }

    #[test]
    fn shapes_and_a_short_axis() {
        let device = Default::default();
        let p = SpatialPooling::<Cpu>::init(8, 12, 2, 2, &device);
        assert_eq!(p.width(), 12);
        // An axis of length 1 keeps its length.
        assert_eq!(p.pooled_grid([1, 4, 6]), [1, 2, 3]);
        let x = Tensor::<Cpu, 3>::ones([3, 24, 8], &device);
        assert_eq!(p.tokens(x.clone(), [1, 4, 6]).dims(), [3, 6, 12]);
        assert_eq!(p.forward(x, [1, 4, 6]).dims(), [3, 12]);
    }
}
