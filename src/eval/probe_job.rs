//! `adfit probe` as a library job: per fold of a split, the backbone's frozen features of the
//! training and test scans, the linear probe of the diagnosis and the volume R² (`eval::probe`).

use std::collections::HashMap;
use std::path::PathBuf;

use burn::tensor::backend::AutodiffBackend;
use serde::Serialize;

use crate::backend::Job;
use crate::data::dataset::CohortDataset;
use crate::data::label::Label;
use crate::data::split::{read_fold, Part};
use crate::error::{Error, Result};
use crate::eval::predict::score;
use crate::eval::probe::{frozen_features, linear_probe, volume_r2, VolumeR2};
use crate::model::backbones::Backbone;
use crate::model::vit3d::PosEmbedPolicy;

/// Probe `backbone` on the folds of `split` over the scans of `index`.
#[derive(Debug, Clone)]
pub struct ProbeJob {
    pub backbone: PathBuf,
    pub index: PathBuf,
    pub split: PathBuf,
    pub folds: Vec<usize>,
    pub pos_embed: PosEmbedPolicy,
}

/// One fold's figures.
#[derive(Debug, Clone, Serialize)]
pub struct FoldProbe {
    pub fold: usize,
    pub train_scans: usize,
    pub test_scans: usize,
    /// Scan-level balanced accuracy of the linear probe on the fold's test subjects (NC/MCI/AD).
    pub balanced_accuracy: f64,
    /// The probe's penalty, chosen by subject-grouped cross-validation on the training scans.
    pub penalty: f64,
    pub r2: VolumeR2,
}

impl Job for ProbeJob {
    type Output = Vec<FoldProbe>;

    fn run<AD: AutodiffBackend>(self, device: AD::Device) -> Result<Vec<FoldProbe>> {
        type B<AD> = <AD as AutodiffBackend>::InnerBackend;
        let index = CohortDataset::open(&self.index)?.filter(|r| r.label.as_deref().and_then(Label::parse).is_some());
        let grid = index.grid()?;
        let b = Backbone::<B<AD>>::load(&self.backbone, Some(grid), self.pos_embed, &device)?;
        let features = frozen_features(&b.model, &index, 8, &device)?;
        let by_scan: HashMap<&str, usize> =
            index.rows().iter().enumerate().map(|(i, r)| (r.scan.as_str(), i)).collect();
        let mut out = Vec::new();
        for &fold in &self.folds {
            let parts = read_fold(&self.split, fold)?;
            let pick = |part: Part| {
                let rows: Vec<_> =
                    index.rows().iter().filter(|r| parts.get(&r.subject) == Some(&part)).cloned().collect();
                let x: Vec<_> = rows.iter().map(|r| features[by_scan[r.scan.as_str()]].clone()).collect();
                (rows, x)
            };
            let (train, train_x) = pick(Part::Train);
            let (test, test_x) = pick(Part::Test);
            if train.is_empty() || test.is_empty() {
                return Err(Error::table(&self.split, format!("fold {fold} has no labelled training or test scans")));
            }
            let (p, penalty) = linear_probe(&train, &train_x, &test, &test_x, &Label::ALL)?;
            out.push(FoldProbe {
                fold,
                train_scans: train.len(),
                test_scans: test.len(),
                balanced_accuracy: score(&p, &Label::ALL).0.balanced_accuracy,
                penalty,
                r2: volume_r2(&train, &train_x, &test, &test_x)?,
            });
        }
        Ok(out)
    }
}
