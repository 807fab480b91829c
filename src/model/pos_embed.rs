//! How a checkpoint's learned position embedding (MONAI's: one row per token of its native grid)
//! meets the token grid of the volumes adfit reads (M3D-CLIP at 128³: backbones.md §4). RadFM's
//! factorised tables follow their own rule ([`super::backbones::radfm::factorised_pos_embed`]).

use burn::prelude::*;
use serde::{Deserialize, Serialize};

use super::vit3d::Vit3dConfig;
use super::weights::WeightStore;
use crate::data::resample::resize;
use crate::data::volume::{identity, Volume};
use crate::error::{Error, Result};

/// How a checkpoint's position embedding meets a token grid other than the one it was trained on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum PosEmbedPolicy {
    /// Use the rows as they are when the token count matches (DEFT: M3D's 8x16x16 grid read as
    /// 32x8x8 at 128³, silently reinterpreted).
    #[default]
    Reinterpret,
    /// Reshape to the native grid and resize trilinearly to the new one (faithful geometry).
    Interpolate,
}

/// The position embedding `[1, tokens, hidden]` for `cfg`'s grid from the table `name` of a
/// checkpoint trained on the grid `native`, under `policy`.
pub(crate) fn load_pos_embed<B: Backend>(
    cfg: &Vit3dConfig,
    store: &WeightStore<B>,
    name: &str,
    native: [usize; 3],
    policy: PosEmbedPolicy,
) -> Result<Tensor<B, 3>> {
    let grid = cfg.grid()?;
    let n = cfg.num_patches()?;
    let h = cfg.hidden_size;
    let n_native: usize = native.iter().product();
    let raw = store.raw(name).cloned();
    let Some(raw) = raw else {
        return Ok(store.tensor(name, [1, n, h]));
    };
    if raw.shape != [1, n_native, h] {
        return Ok(store.tensor(name, [1, n_native, h]));
    }
    let data = match policy {
        PosEmbedPolicy::Reinterpret if n == n_native => raw.data,
        PosEmbedPolicy::Interpolate if grid == native => raw.data,
        PosEmbedPolicy::Reinterpret => {
            return Err(Error::config(
                "pos-embed",
                format!(
                    "the checkpoint's position embedding has {n_native} rows (grid {native:?}) but the \
                     input grid {grid:?} has {n} tokens: use the `interpolate` policy"
                ),
            ))
        }
        PosEmbedPolicy::Interpolate => {
            // One channel at a time: [n_native] → native grid → resized grid.
            let mut out = vec![0f32; n * h];
            for c in 0..h {
                let vol = Volume {
                    shape: native,
                    data: (0..n_native).map(|t| raw.data[t * h + c]).collect(),
                    affine: identity(),
                };
                let r = resize(&vol, grid)?;
                for (t, v) in r.data.iter().enumerate() {
                    out[t * h + c] = *v;
                }
            }
            out
        }
    };
    Ok(Tensor::from_data(burn::tensor::TensorData::new(data, [1, n, h]), store.device()))
}
