//! The shape of a 3D ViT ([`Vit3dConfig`], M3D-CLIP's `config.json` fields) and the layout
//! conventions it follows ([`VitLayout`]: MONAI's or RadFM's), with the checks a shape must pass.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Shape of a 3D ViT. Field names follow M3D-CLIP's `config.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Vit3dConfig {
    /// Input volume (D, H, W).
    pub img_size: [usize; 3],
    /// Patch (D, H, W); must divide `img_size`.
    pub patch_size: [usize; 3],
    pub in_channels: usize,
    pub hidden_size: usize,
    pub mlp_dim: usize,
    pub num_layers: usize,
    pub num_heads: usize,
    /// MONAI's LayerNorm default.
    #[serde(default = "default_eps")]
    pub layer_norm_eps: f64,
    /// Which published ViT this is (token layout, patch embedding, CLS, final norm).
    #[serde(default)]
    pub layout: VitLayout,
    /// Width of one attention head; `hidden_size / num_heads` when absent (RadFM: 64 with 8
    /// heads in a 768-wide stream).
    #[serde(default)]
    pub head_dim: Option<usize>,
    /// The patch the checkpoint's patch embedding was trained on, when `patch_size` differs from
    /// it (RadFM at 4×16×16: its 4×32×32 embedding resampled, [`super::backbones::radfm`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint_patch_size: Option<[usize; 3]>,
}

/// The published ViT a [`Vit3d`] follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VitLayout {
    /// MONAI 1.3's ViT as M3D-CLIP uses it: `(D, H, W)` patches, `Linear` patch embedding, a
    /// learned row per token, a CLS token without position embedding, a final LayerNorm.
    #[default]
    Monai,
    /// RadFM's: the volume read depth last (`H, W, D`) with its one channel repeated to
    /// `in_channels`, LayerNorm → Linear → LayerNorm patch embedding, factorised position
    /// embedding, no CLS, no final LayerNorm.
    Radfm,
    /// Med3DVLM's DCFormer, a CNN ([`super::dcformer`]): its last stage's feature map is the token
    /// sequence; no patch embedding, position embedding (a frozen zero row per token), blocks,
    /// CLS or final norm of its own. The method adds a CLS token and trainable blocks after it.
    Dcformer,
}

impl VitLayout {
    /// Whether the published encoder has a CLS token (RadFM's output is patch tokens only).
    pub fn has_cls(self) -> bool {
        self == VitLayout::Monai
    }

    /// Whether the tower is a CNN whose last feature map is its only token sequence.
    pub fn is_cnn(self) -> bool {
        self == VitLayout::Dcformer
    }
}

fn default_eps() -> f64 {
    1e-5
}

impl Vit3dConfig {
    /// M3D-CLIP as published: 32x256x256 input, 4x16x16 patches, ViT-B (768, 12 layers, 12 heads).
    pub fn m3d() -> Self {
        Vit3dConfig {
            img_size: [32, 256, 256],
            patch_size: [4, 16, 16],
            in_channels: 1,
            hidden_size: 768,
            mlp_dim: 3072,
            num_layers: 12,
            num_heads: 12,
            layer_norm_eps: 1e-5,
            layout: VitLayout::Monai,
            head_dim: None,
            checkpoint_patch_size: None,
        }
    }

    /// RadFM's ViT as published (`embedding_layer.vision_encoder`): 512×512 slices, up to 512
    /// frames (D, H, W = 512, 512, 512 spans its position tables: 128 depth rows, 16 × 16
    /// in-plane), 4×32×32 patches of 3 channels, 768 wide, 12 layers of 8 heads × 64, MLP 2048.
    pub fn radfm() -> Self {
        Vit3dConfig {
            img_size: [512, 512, 512],
            patch_size: [4, 32, 32],
            in_channels: 3,
            hidden_size: 768,
            mlp_dim: 2048,
            num_layers: 12,
            num_heads: 8,
            layer_norm_eps: 1e-5,
            layout: VitLayout::Radfm,
            head_dim: Some(64),
            checkpoint_patch_size: None,
        }
    }

    /// A small ViT for tests: same family, a few hundred thousand weights.
    pub fn tiny() -> Self {
        Vit3dConfig {
            img_size: [16, 32, 32],
            hidden_size: 64,
            mlp_dim: 128,
            num_layers: 2,
            num_heads: 4,
            ..Self::m3d()
        }
    }

    /// The width of one attention head.
    pub fn head_dim(&self) -> usize {
        self.head_dim.unwrap_or(self.hidden_size / self.num_heads.max(1))
    }

    /// The width attention works in (`heads × head_dim`; the hidden size in MONAI's ViT).
    pub fn attention_dim(&self) -> usize {
        self.num_heads * self.head_dim()
    }

    /// About how many parameters this configuration describes (f64: a corrupt configuration's
    /// sizes must not overflow).
    pub fn params_estimate(&self) -> f64 {
        let f = |v: usize| v as f64;
        let (h, m, a) = (f(self.hidden_size), f(self.mlp_dim), f(self.attention_dim()));
        let grid: Vec<f64> = (0..3).map(|a| f(self.img_size[a]) / f(self.patch_size[a].max(1))).collect();
        let patch_dim: f64 = self.patch_size.iter().map(|&p| f(p)).product::<f64>() * f(self.in_channels);
        let blocks = f(self.num_layers) * (4.0 * h * a + 2.0 * h * m + 6.0 * h + m);
        match self.layout {
            VitLayout::Monai => blocks + grid.iter().product::<f64>() * h + patch_dim * h + 4.0 * h,
            // Factorised position tables (a third of the width each), the patch embedding's two
            // LayerNorms, adfit's CLS; no final norm.
            VitLayout::Radfm => blocks + grid.iter().sum::<f64>() * h / 3.0 + patch_dim * (h + 2.0) + 4.0 * h,
            // Med3DVLM's directories are loaded by their own loader, which checks no claim.
            VitLayout::Dcformer => 0.0,
        }
    }

    /// The token grid (D, H, W), or an error naming the axis the patch does not divide.
    pub fn grid(&self) -> Result<[usize; 3]> {
        let mut g = [0; 3];
        for a in 0..3 {
            let (s, p) = (self.img_size[a], self.patch_size[a]);
            if p == 0 || s % p != 0 {
                return Err(Error::config(
                    "img_size/patch_size",
                    format!("patch {:?} does not divide the volume {:?} on axis {a}", self.patch_size, self.img_size),
                ));
            }
            g[a] = s / p;
        }
        Ok(g)
    }

    pub fn num_patches(&self) -> Result<usize> {
        Ok(self.grid()?.iter().product())
    }

    pub fn patch_dim(&self) -> usize {
        self.patch_size.iter().product::<usize>() * self.in_channels
    }

    pub fn validate(&self) -> Result<()> {
        self.grid()?;
        if self.layout == VitLayout::Radfm && self.hidden_size % 3 != 0 {
            return Err(Error::config(
                "hidden_size",
                format!(
                    "{}: RadFM's position embedding is three tables of a third of the width each",
                    self.hidden_size
                ),
            ));
        }
        if self.head_dim.is_none() && self.hidden_size % self.num_heads != 0 {
            return Err(Error::config(
                "num_heads",
                format!("{} heads do not divide hidden size {}", self.num_heads, self.hidden_size),
            ));
        }
        Ok(())
    }
}
