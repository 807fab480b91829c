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
    let table = |name: &str, rows: usize| -> Vec<f32> {
        let name = p(&format!("pos_embedding.{name}.weight"));
        store.tensor(&name, [rows, third]).into_data().to_vec::<f32>().unwrap_or_default()
    };
    let (row_t, col_t, dep_t) = (table("row_embed", row), table("col_embed", col), table("dep_embed", dep));
    let grid = cfg.grid()?;
    let pos = factorised_pos_embed([&dep_t, &row_t, &col_t], [dep, row, col], grid, third)?;
    Ok(Vit3d {
        patch_embed: Some(store.linear(&p("to_patch_embedding.2"), cfg.patch_dim(), h, true)),
        cnn: None,
        patch_norms: Some(PatchNorms {
            before: store.layer_norm(&p("to_patch_embedding.1"), cfg.patch_dim(), eps),
            after: store.layer_norm(&p("to_patch_embedding.3"), h, eps),
        }),
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

/// RadFM's `PositionEmbeddingLearned3d`: for a token grid (D, H, W) = `grid`, the rows
/// `(k + 1)·(rows / g) − 1` (integer division; a subsampling, not an interpolation) of the depth,
/// row and column tables, concatenated `[row | col | dep]` for each token in RadFM's order
/// (H, W, D with depth fastest). `tables` and `rows` are in (D, H, W) order. Returns
/// `[tokens × 3·width]` values.
pub fn factorised_pos_embed(tables: [&[f32]; 3], rows: [usize; 3], grid: [usize; 3], width: usize) -> Result<Vec<f32>> {
    let mut pick: Vec<Vec<usize>> = Vec::with_capacity(3);
    for axis in 0..3 {
        let (n, g) = (rows[axis], grid[axis]);
        if g == 0 || n / g == 0 {
            return Err(Error::config(
                "img_size",
                format!(
                    "RadFM's position table for axis {axis} (D, H, W) has {n} rows: a grid of {g} tokens on it \
                     needs at most {n} (a smaller volume or a larger patch)"
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
