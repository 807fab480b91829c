//! The training objective: symmetric image-text cross-entropy plus λ · masked MSE on MMSE.

use burn::prelude::*;
use burn::tensor::activation::log_softmax;
use burn::tensor::TensorData;

/// Mean cross-entropy of each row of `logits` against the diagonal, both ways:
/// `CE(i→t) + CE(t→i)` with targets `arange(N)`.
///
/// # Shapes
/// - logits: `[n, n]` → `[1]`
pub fn clip_loss<B: Backend>(logits: Tensor<B, 2>) -> Tensor<B, 1> {
    let [n, m] = logits.dims();
    debug_assert_eq!(n, m, "the contrastive loss pairs image i with text i");
    let eye = eye::<B>(n, &logits.device());
    let ce = |l: Tensor<B, 2>| (log_softmax(l, 1) * eye.clone()).sum().neg() / n as f64;
    ce(logits.clone()) + ce(logits.transpose())
}

/// `Σ mask·(pred − target)² / max(Σ mask, 1)`: scans with a missing MMSE add nothing.
///
/// # Shapes
/// - pred, target, mask: `[n]` → `[1]`
pub fn masked_mse<B: Backend>(pred: Tensor<B, 1>, target: Tensor<B, 1>, mask: Tensor<B, 1>) -> Tensor<B, 1> {
    let count = mask.clone().sum().clamp_min(1.0);
    ((pred - target).powi_scalar(2) * mask).sum() / count
}

/// The identity matrix.
pub fn eye<B: Backend>(n: usize, device: &B::Device) -> Tensor<B, 2> {
    let mut data = vec![0f32; n * n];
    for i in 0..n {
        data[i * n + i] = 1.0;
    }
    Tensor::from_data(TensorData::new(data, [n, n]), device)
}
