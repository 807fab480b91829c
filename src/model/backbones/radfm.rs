//! RadFM's 3D ViT (`chaoyi-wu/RadFM`, `embedding_layer.vision_encoder.*`; backbones.md §1):
//! its checkpoint names and its factorised position embedding.
//!
//! A RadFM backbone directory is M3D-CLIP's layout with `"model_type": "radfm"` in
//! `config.json`: `model.safetensors` holds the ViT under `vision_encoder.` with RadFM's own
//! names, and what RadFM never had (it feeds its patch tokens to a perceiver and LLaMA) is adfit's
//! addition, drawn once when the directory is made (`scripts/extract_radfm.py`): the CLS token the
//! method prepends (`vision_encoder.cls_token`), the projections `mm_vision_proj` /
//! `mm_language_proj` and `logit_scale`. The text tower is the BERT model
//! `language_model_name_or_path` names (RadFM has none).

use burn::module::Param;
use burn::prelude::*;
use burn::tensor::TensorData;

use crate::error::{Error, Result};
use crate::model::attention::{Block, Mlp, SelfAttention};
use crate::model::vit3d::{PatchNorms, Vit3d, Vit3dConfig, VitLayout};
use crate::model::weights::WeightStore;

/// `config.json`'s `model_type` of a RadFM backbone directory.
pub const MODEL_TYPE: &str = "radfm";

/// The key a RadFM checkpoint (`pytorch_model.bin`) gives its vision encoder.
pub const CHECKPOINT_PREFIX: &str = "embedding_layer.vision_encoder.";

/// RadFM's ViT from `store` (names after `prefix`), for the input grid of `cfg`. `native` is the
/// grid (D, H, W) the position tables span (`dep_embed`, `row_embed`, `col_embed` rows).
pub fn load_vit<B: Backend>(
    cfg: &Vit3dConfig,
    store: &WeightStore<B>,
    prefix: &str,
    native: [usize; 3],
) -> Result<Vit3d<B>> {
    let (h, m, a) = (cfg.hidden_size, cfg.mlp_dim, cfg.attention_dim());
    let eps = cfg.layer_norm_eps;
    let p = |s: &str| format!("{prefix}{s}");
    let blocks = (0..cfg.num_layers)
        .map(|i| {
            let b = |s: &str| format!("{prefix}transformer.layers.{i}.{s}");
            Block {
                norm1: store.layer_norm(&b("0.norm"), h, eps),
                attn: SelfAttention {
                    qkv: store.linear(&b("0.fn.to_qkv"), h, 3 * a, false),
                    out_proj: store.linear(&b("0.fn.to_out.0"), a, h, true),
                    heads: cfg.num_heads,
                },
                norm2: store.layer_norm(&b("1.norm"), h, eps),
                mlp: Mlp {
                    linear1: store.linear(&b("1.fn.net.0"), h, m, true),
                    linear2: store.linear(&b("1.fn.net.3"), m, h, true),
                },
            }
        })
        .collect();
    let [dep, row, col] = native;
    let third = h / 3;
    // The tables' rows come from config.json's img_size / patch_size: say so when they disagree.
    for (name, rows) in [("dep_embed", dep), ("row_embed", row), ("col_embed", col)] {
        if let Some(t) = store.raw(&p(&format!("pos_embedding.{name}.weight"))) {
            if t.shape.len() == 2 && t.shape[0] != rows && t.shape[1] == third {
                return Err(Error::config(
                    "img_size",
                    format!(
                        "config.json's img_size {:?} / patch_size {:?} give {rows} {name} rows but the checkpoint's \
                         table has {}: img_size must span RadFM's position tables (patch × rows on each axis)",
                        cfg.img_size, cfg.patch_size, t.shape[0]
                    ),
                ));
            }
        }
    }
    let table = |name: &str, rows: usize| -> Vec<f32> {
        let name = p(&format!("pos_embedding.{name}.weight"));
        store.tensor(&name, [rows, third]).into_data().to_vec::<f32>().unwrap_or_default()
    };
    let (row_t, col_t, dep_t) = (table("row_embed", row), table("col_embed", col), table("dep_embed", dep));
    let grid = cfg.grid()?;
    let pos = factorised_pos_embed([&dep_t, &row_t, &col_t], [dep, row, col], grid, third)?;
    let (before, patch_embed) = match cfg.checkpoint_patch_size.filter(|c| *c != cfg.patch_size) {
        None => (
            store.layer_norm(&p("to_patch_embedding.1"), cfg.patch_dim(), eps),
            store.linear(&p("to_patch_embedding.2"), cfg.patch_dim(), h, true),
        ),
        Some(from) => {
            let channels = cfg.in_channels;
            let dim = |patch: [usize; 3]| patch.iter().product::<usize>() * channels;
            let d = dim(from);
            let get = |name: &str, shape: &[usize]| -> Vec<f32> {
                let name = p(name);
                match shape {
                    [n] => store.tensor(&name, [*n]).into_data().to_vec().unwrap_or_default(),
                    [o, i] => store.tensor(&name, [*o, *i]).into_data().to_vec().unwrap_or_default(),
                    _ => unreachable!("1-D and 2-D tensors only"),
                }
            };
            let embed = PatchEmbedding {
                gamma: get("to_patch_embedding.1.weight", &[d]),
                beta: get("to_patch_embedding.1.bias", &[d]),
                weight: get("to_patch_embedding.2.weight", &[h, d]),
                bias: get("to_patch_embedding.2.bias", &[h]),
                patch: from,
                channels,
            };
            let r = embed.resampled(cfg.patch_size)?;
            let device = store.device();
            let n = dim(cfg.patch_size);
            let mut ln = burn::nn::LayerNormConfig::new(n).with_epsilon(eps).init(device);
            ln.gamma = Param::from_tensor(Tensor::from_data(TensorData::new(r.gamma, [n]), device));
            ln.beta = Some(Param::from_tensor(Tensor::from_data(TensorData::new(r.beta, [n]), device)));
            // PyTorch's [out, in] → Burn's [in, out].
            let w = Tensor::<B, 2>::from_data(TensorData::new(r.weight, [h, n]), device).transpose();
            let w = Tensor::from_data(w.into_data(), device);
            let linear = burn::nn::Linear {
                weight: Param::from_tensor(w),
                bias: Some(Param::from_tensor(Tensor::from_data(TensorData::new(r.bias, [h]), device))),
            };
            (ln, linear)
        }
    };
    Ok(Vit3d {
        patch_embed: Some(patch_embed),
        cnn: None,
        patch_norms: Some(PatchNorms { before, after: store.layer_norm(&p("to_patch_embedding.3"), h, eps) }),
        pos_embed: Param::from_tensor(Tensor::from_data(
            TensorData::new(pos, [1, grid.iter().product(), h]),
            store.device(),
        )),
        cls_token: store.param(&p("cls_token"), [1, 1, h]),
        blocks,
        norm: None,
        patch_size: cfg.patch_size,
        layout: VitLayout::Radfm,
    })
}

/// RadFM's patch embedding before its last LayerNorm, as PyTorch stores it: `LayerNorm(d)`
/// (`gamma`, `beta`) then `Linear(d → hidden)` (`weight` `[hidden, d]`, `bias`), on patches of
/// `patch` (D, H, W) with features in RadFM's order `(p1 p2 pf c)` (H, W, D offsets, channel).
#[derive(Debug, Clone)]
pub struct PatchEmbedding {
    pub gamma: Vec<f32>,
    pub beta: Vec<f32>,
    pub weight: Vec<f32>,
    pub bias: Vec<f32>,
    pub patch: [usize; 3],
    pub channels: usize,
}

impl PatchEmbedding {
    /// The embedding resampled to an in-plane patch of `to` (FlexiViT-style; the depth patch and
    /// the channels stay). A patch `x` of the new size is read as the patch `U x` of the
    /// checkpoint's size that bilinear upsampling (align_corners = false, per in-plane axis)
    /// makes of it, so the linear map becomes `W diag(γ) U` (exact for that upsampled patch) and
    /// its bias `b + W β`; the LayerNorm keeps its place with unit weight and zero bias, its
    /// statistics now those of the new patch (those of `U x` only approximately: bilinear
    /// upsampling keeps a patch's mean and shrinks its variance slightly).
    pub fn resampled(&self, to: [usize; 3]) -> Result<PatchEmbedding> {
        let [pd, ph, pw] = self.patch;
        if to[0] != pd {
            return Err(Error::config(
                "patch_size",
                format!("RadFM's depth patch is {pd}: only the in-plane patch can be resampled, not to {:?}", to),
            ));
        }
        let c = self.channels;
        let d_old = ph * pw * pd * c;
        let hidden = self.bias.len();
        let (uh, uw) = (upsampling(to[1], ph), upsampling(to[2], pw));
        let d_new = to[1] * to[2] * pd * c;
        let mut weight = vec![0f32; hidden * d_new];
        let mut bias = self.bias.clone();
        for o in 0..hidden {
            let w = &self.weight[o * d_old..(o + 1) * d_old];
            bias[o] += w.iter().zip(&self.beta).map(|(a, b)| (a * b) as f64).sum::<f64>() as f32;
            let row = &mut weight[o * d_new..(o + 1) * d_new];
            for big_i in 0..ph {
                for big_j in 0..pw {
                    for f in 0..pd * c {
                        let old = (big_i * pw + big_j) * pd * c + f;
                        let v = (w[old] * self.gamma[old]) as f64;
                        for &(i, a) in &uh[big_i] {
                            for &(j, b) in &uw[big_j] {
                                row[(i * to[2] + j) * pd * c + f] += (v * a * b) as f32;
                            }
                        }
                    }
                }
            }
        }
        Ok(PatchEmbedding { gamma: vec![1.0; d_new], beta: vec![0.0; d_new], weight, bias, patch: to, channels: c })
    }
}

/// Bilinear upsampling from `n` to `m` samples on one axis (align_corners = false, PyTorch's):
/// for each output sample, its (input index, weight) pairs.
fn upsampling(n: usize, m: usize) -> Vec<Vec<(usize, f64)>> {
    (0..m)
        .map(|o| {
            let src = ((o as f64 + 0.5) * n as f64 / m as f64 - 0.5).max(0.0);
            let i0 = (src.floor() as usize).min(n - 1);
            let i1 = (i0 + 1).min(n - 1);
            let l = src - i0 as f64;
            if i1 == i0 {
                vec![(i0, 1.0)]
            } else {
                vec![(i0, 1.0 - l), (i1, l)]
            }
        })
        .collect()
}

/// RadFM's `PositionEmbeddingLearned3d`: for a token grid (D, H, W) = `grid`, the rows
/// `(k + 1)·(rows / g) − 1` (integer division; a subsampling, not an interpolation) of the depth,
/// row and column tables, concatenated `[row | col | dep]` for each token in RadFM's order
/// (H, W, D with depth fastest). `tables` and `rows` are in (D, H, W) order. Returns
/// `[tokens × 3·width]` values.
pub fn factorised_pos_embed(tables: [&[f32]; 3], rows: [usize; 3], grid: [usize; 3], width: usize) -> Result<Vec<f32>> {
    let mut pick: Vec<Vec<usize>> = Vec::with_capacity(3);
    for (axis, name) in ["D (dep_embed)", "H (row_embed)", "W (col_embed)"].iter().enumerate() {
        let (n, g) = (rows[axis], grid[axis]);
        if g == 0 || n / g == 0 {
            return Err(Error::config(
                "img_size",
                format!(
                    "RadFM's position table for axis {name} has {n} rows, but the volume makes {g} tokens on that \
                     axis: at most {n} fit (a smaller volume or a larger patch)"
                ),
            ));
        }
        pick.push((0..g).map(|k| (k + 1) * (n / g) - 1).collect());
    }
    let [gd, gh, gw] = grid;
    let mut out = Vec::with_capacity(gd * gh * gw * 3 * width);
    for &i in &pick[1] {
        for &j in &pick[2] {
            for &k in &pick[0] {
                out.extend_from_slice(&tables[1][i * width..(i + 1) * width]);
                out.extend_from_slice(&tables[2][j * width..(j + 1) * width]);
                out.extend_from_slice(&tables[0][k * width..(k + 1) * width]);
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The resampled linear map on a patch equals the checkpoint's on the patch bilinearly
    /// upsampled from it, γ and β folded in.
    #[test]
    fn a_resampled_patch_embedding_reads_the_upsampled_patch() {
        let (pd, c, hidden) = (2, 3, 5);
        let from = [pd, 8, 8];
        let d = 8 * 8 * pd * c;
        let val = |i: usize, k: f32| ((i as f32 * k).sin() * 0.7) + 0.1;
        let e = PatchEmbedding {
            gamma: (0..d).map(|i| 1.0 + 0.1 * val(i, 0.3)).collect(),
            beta: (0..d).map(|i| 0.1 * val(i, 0.7)).collect(),
            weight: (0..hidden * d).map(|i| val(i, 0.013)).collect(),
            bias: (0..hidden).map(|i| val(i, 1.1)).collect(),
            patch: from,
            channels: c,
        };
        let r = e.resampled([pd, 4, 4]).unwrap();
        let small: Vec<f32> = (0..4 * 4 * pd * c).map(|i| val(i, 0.37)).collect();
        // The patch upsampled 4 → 8 per in-plane axis.
        let u = upsampling(4, 8);
        let mut big = vec![0f64; d];
        for (bi, wi) in u.iter().enumerate() {
            for (bj, wj) in u.iter().enumerate() {
                for f in 0..pd * c {
                    for &(i, a) in wi {
                        for &(j, b) in wj {
                            big[(bi * 8 + bj) * pd * c + f] += a * b * small[(i * 4 + j) * pd * c + f] as f64;
                        }
                    }
                }
            }
        }
        for o in 0..hidden {
            let want: f64 = e.bias[o] as f64
                + (0..d)
                    .map(|k| e.weight[o * d + k] as f64 * (e.gamma[k] as f64 * big[k] + e.beta[k] as f64))
                    .sum::<f64>();
            let n = small.len();
            let got: f64 = r.bias[o] as f64 + (0..n).map(|k| r.weight[o * n + k] as f64 * small[k] as f64).sum::<f64>();
            assert!((got - want).abs() < 1e-4, "output {o}: {got} vs {want}");
        }
        assert!(e.resampled([1, 4, 4]).is_err(), "the depth patch stays");
    }

    #[test]
    fn the_position_rows_are_subsampled_as_radfm_indexes_them() {
        // One value per row: table value = 100·axis + row.
        let t = |axis: usize, n: usize| (0..n).map(|r| (100 * axis + r) as f32).collect::<Vec<_>>();
        let (dep, row, col) = (t(0, 8), t(1, 4), t(2, 4));
        let pos = factorised_pos_embed([&dep, &row, &col], [8, 4, 4], [2, 2, 1], 1).unwrap();
        // Tokens in (H, W, D) order, depth fastest; rows (k+1)·(n/g)−1: H {1, 3}, W {3}, D {3, 7}.
        let want = [[101., 203., 3.], [101., 203., 7.], [103., 203., 3.], [103., 203., 7.]];
        assert_eq!(pos, want.concat());
        let e = factorised_pos_embed([&dep, &row, &col], [8, 4, 4], [16, 1, 1], 1).unwrap_err().to_string();
        assert!(e.contains("8 rows"), "{e}");
    }
}
