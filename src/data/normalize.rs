//! Intensity normalisation with explicit policies for volumes that cannot be normalised as they
//! are (constant, NaN- or Inf-bearing): such a volume is an error unless the user chose a policy,
//! never a silent NaN.

use serde::{Deserialize, Serialize};

use super::volume::Volume;
use crate::error::{Error, Result};

/// How intensities are mapped before the model sees them.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, clap::ValueEnum, Default)]
#[serde(rename_all = "lowercase")]
pub enum Normalize {
    /// Min-max to [0, 1], as the paper's ADNI pipeline (after optional percentile clipping).
    #[default]
    Minmax,
    /// Whole-volume z-score (zero mean, unit standard deviation), as DEFT did.
    Zscore,
    /// Leave intensities as they are.
    None,
}

/// What to do with NaN and ±Inf voxels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum, Default)]
#[serde(rename_all = "lowercase")]
pub enum NonFinite {
    /// Refuse the volume, saying how many voxels are not finite.
    #[default]
    Error,
    /// Replace them with 0 before normalising (DEFT's `nan_to_num`).
    Zero,
}

/// Normalisation settings. Percentiles are in [0, 100]; `(0, 100)` means no clipping.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct NormalizeConfig {
    pub method: Normalize,
    /// Clip below this percentile before min-max (e.g. 0.5 tames dark outliers).
    pub lower_percentile: f32,
    /// Clip above this percentile before min-max (e.g. 99.5 tames bright vessels and fat).
    pub upper_percentile: f32,
    pub non_finite: NonFinite,
}

impl Default for NormalizeConfig {
    fn default() -> Self {
        NormalizeConfig {
            method: Normalize::Minmax,
            lower_percentile: 0.0,
            upper_percentile: 100.0,
            non_finite: NonFinite::Error,
        }
    }
}

/// Apply the non-finite policy in place; returns how many voxels were replaced.
pub fn check_finite(vol: &mut Volume, policy: NonFinite, what: &str) -> Result<usize> {
    let bad = vol.data.iter().filter(|v| !v.is_finite()).count();
    if bad == 0 {
        return Ok(0);
    }
    match policy {
        NonFinite::Error => Err(Error::volume(
            what,
            format!("{bad} of {} voxels are NaN or infinite (use --non-finite zero to replace them with 0)", vol.len()),
        )),
        NonFinite::Zero => {
            for v in vol.data.iter_mut().filter(|v| !v.is_finite()) {
                *v = 0.0;
            }
            Ok(bad)
        }
    }
}

/// The `q`-th percentile (0..=100) with linear interpolation between order statistics, as
/// `numpy.percentile` computes it by default.
pub fn percentile(values: &[f32], q: f32) -> f32 {
    let mut v: Vec<f32> = values.to_vec();
    let n = v.len();
    if n == 0 {
        return f32::NAN;
    }
    let pos = (q.clamp(0.0, 100.0) as f64 / 100.0) * (n - 1) as f64;
    let lo = pos.floor() as usize;
    let hi = pos.ceil() as usize;
    let (_, &mut a, _) = v.select_nth_unstable_by(lo, f32::total_cmp);
    let b = if hi == lo {
        a
    } else {
        // The smallest element above index `lo` is the minimum of the upper partition.
        v[lo + 1..].iter().copied().fold(f32::INFINITY, f32::min)
    };
    (a as f64 + (b as f64 - a as f64) * (pos - lo as f64)) as f32
}

/// Normalise `vol` in place. `what` names the volume in errors.
pub fn normalize(vol: &mut Volume, cfg: &NormalizeConfig, what: &str) -> Result<()> {
    check_finite(vol, cfg.non_finite, what)?;
    match cfg.method {
        Normalize::None => Ok(()),
        Normalize::Minmax => {
            let clip = cfg.lower_percentile > 0.0 || cfg.upper_percentile < 100.0;
            let (lo, hi) = if clip {
                if !(0.0..=100.0).contains(&cfg.lower_percentile)
                    || !(0.0..=100.0).contains(&cfg.upper_percentile)
                    || cfg.lower_percentile >= cfg.upper_percentile
                {
                    return Err(Error::config(
                        "percentiles",
                        format!(
                            "need 0 ≤ lower < upper ≤ 100, got {} and {}",
                            cfg.lower_percentile, cfg.upper_percentile
                        ),
                    ));
                }
                (percentile(&vol.data, cfg.lower_percentile), percentile(&vol.data, cfg.upper_percentile))
            } else {
                vol.data.iter().fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), &v| (a.min(v), b.max(v)))
            };
            if hi <= lo {
                return Err(Error::volume(
                    what,
                    format!("intensity range is empty (all voxels in the clipping range equal {lo}): cannot min-max normalise a constant volume"),
                ));
            }
            let scale = 1.0 / (hi - lo);
            for v in vol.data.iter_mut() {
                *v = ((v.clamp(lo, hi)) - lo) * scale;
            }
            Ok(())
        }
        Normalize::Zscore => {
            let n = vol.len() as f64;
            let mean = vol.data.iter().map(|&v| v as f64).sum::<f64>() / n;
            let var = vol.data.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n;
            let std = var.sqrt();
            if std == 0.0 {
                return Err(Error::volume(what, format!("constant volume (every voxel is {mean}): cannot z-score")));
            }
            for v in vol.data.iter_mut() {
                *v = ((*v as f64 - mean) / std) as f32;
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::volume::identity;

    fn vol(values: &[f32]) -> Volume {
        Volume { shape: [values.len(), 1, 1], data: values.to_vec(), affine: identity() }
    }

    #[test]
    fn minmax_maps_to_unit_range() {
        let mut v = vol(&[2.0, 4.0, 6.0]);
        normalize(&mut v, &NormalizeConfig::default(), "t").unwrap();
        assert_eq!(v.data, vec![0.0, 0.5, 1.0]);
    }

    #[test]
    fn percentile_matches_numpy_linear() {
        let v: Vec<f32> = (0..11).map(|x| x as f32).collect();
        assert_eq!(percentile(&v, 50.0), 5.0);
        assert!((percentile(&v, 95.0) - 9.5).abs() < 1e-6);
        assert_eq!(percentile(&v, 0.0), 0.0);
        assert_eq!(percentile(&v, 100.0), 10.0);
    }

    #[test]
    fn zscore_has_zero_mean_unit_std() {
        let mut v = vol(&[1.0, 2.0, 3.0, 4.0]);
        let cfg = NormalizeConfig { method: Normalize::Zscore, ..Default::default() };
        normalize(&mut v, &cfg, "t").unwrap();
        let mean: f32 = v.data.iter().sum::<f32>() / 4.0;
        let var: f32 = v.data.iter().map(|x| (x - mean).powi(2)).sum::<f32>() / 4.0;
        assert!(mean.abs() < 1e-6 && (var - 1.0).abs() < 1e-5);
    }

    #[test]
    fn constant_and_nonfinite_volumes_have_explicit_policies() {
        let mut c = vol(&[3.0, 3.0]);
        let err = normalize(&mut c, &NormalizeConfig::default(), "const.nii").unwrap_err();
        assert!(err.to_string().contains("constant"), "{err}");
        let mut n = vol(&[1.0, f32::NAN, f32::INFINITY, 3.0]);
        let err = normalize(&mut n, &NormalizeConfig::default(), "nan.nii").unwrap_err();
        assert!(err.to_string().contains("2 of 4"), "{err}");
        let cfg = NormalizeConfig { non_finite: NonFinite::Zero, ..Default::default() };
        normalize(&mut n, &cfg, "nan.nii").unwrap();
        assert_eq!(n.data, vec![1.0 / 3.0, 0.0, 0.0, 1.0]);
        let mut all_nan = vol(&[f32::NAN, f32::NAN]);
        assert!(normalize(&mut all_nan, &cfg, "x").is_err());
    }
}
