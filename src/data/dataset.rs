//! A Burn dataset over the preprocessing cache, and the batcher that turns its items into
//! `[B, 1, D, H, W]` tensors with labels and a masked MMSE target.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use burn::data::dataloader::batcher::Batcher;
use burn::data::dataset::Dataset;
use burn::prelude::*;
use burn::tensor::TensorData;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::augment::{augment, AugmentConfig};
use super::cache::read_cached;
use super::label::Label;
use super::preprocess::{read_index, IndexRow};
use crate::error::{Error, Result};

/// One cached scan with its targets.
#[derive(Debug, Clone)]
pub struct CohortItem {
    pub scan: String,
    pub subject: String,
    pub shape: [usize; 3],
    /// C-ordered voxels, read as (D, H, W).
    pub voxels: Vec<f32>,
    pub label: Option<Label>,
    pub mmse: Option<f32>,
    pub report: String,
}

/// The scans of a cohort index (optionally a subset), read lazily from the cache.
pub struct CohortDataset {
    root: PathBuf,
    rows: Vec<IndexRow>,
    augment: Option<AugmentConfig>,
    seed: u64,
    epoch: AtomicU64,
}

impl CohortDataset {
    /// All rows of `index.csv`; cache paths are resolved against its folder.
    pub fn open(index: &Path) -> Result<Self> {
        let rows = read_index(index)?;
        if rows.is_empty() {
            return Err(Error::table(
                index,
                "has a header but no scans: preprocess wrote no usable scan (see failures.csv)",
            ));
        }
        let root = index.parent().unwrap_or(Path::new(".")).to_path_buf();
        Ok(Self::from_rows(root, rows))
    }

    pub fn from_rows(root: PathBuf, rows: Vec<IndexRow>) -> Self {
        CohortDataset { root, rows, augment: None, seed: 0, epoch: AtomicU64::new(0) }
    }

    /// Keep only the rows `keep` accepts (a split part, labelled scans, ...).
    pub fn filter(mut self, keep: impl Fn(&IndexRow) -> bool) -> Self {
        self.rows.retain(|r| keep(r));
        self
    }

    /// Turn on augmentation. Each item's draw depends only on (seed, epoch, index), so a run is
    /// repeatable whatever the loading order or thread count.
    pub fn with_augmentation(mut self, cfg: AugmentConfig, seed: u64) -> Self {
        self.augment = Some(cfg);
        self.seed = seed;
        self
    }

    pub fn set_epoch(&self, epoch: u64) {
        self.epoch.store(epoch, Ordering::Relaxed);
    }

    /// The folder cache paths are relative to.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The grid (D, H, W) of the cached volumes (the first scan's: `preprocess` writes one
    /// shape for every scan).
    pub fn grid(&self) -> Result<[usize; 3]> {
        let first = self.rows.first().ok_or_else(|| Error::config("index", "has no scans"))?;
        super::cache::cached_shape(&self.root.join(&first.cache))
    }

    pub fn rows(&self) -> &[IndexRow] {
        &self.rows
    }

    /// Load one item, with its error.
    /// The items at `indices`, read in parallel.
    pub fn load_many(&self, indices: &[usize]) -> Result<Vec<CohortItem>> {
        use rayon::prelude::*;
        indices.par_iter().map(|&i| self.load(i)).collect()
    }

    pub fn load(&self, index: usize) -> Result<CohortItem> {
        let row = self
            .rows
            .get(index)
            .ok_or_else(|| Error::config("index", format!("{index} is past the {} scans", self.rows.len())))?;
        let vol = read_cached(&self.root.join(&row.cache))?;
        let mut voxels = vol.data;
        if let Some(cfg) = &self.augment {
            let epoch = self.epoch.load(Ordering::Relaxed);
            let stream = (epoch << 32) ^ index as u64;
            let mut rng = ChaCha8Rng::seed_from_u64(self.seed);
            rng.set_stream(stream);
            augment(&mut voxels, vol.shape, cfg, &mut rng);
        }
        let label = match row.label.as_deref() {
            None | Some("") => None,
            Some(s) => Some(Label::parse(s).ok_or_else(|| {
                Error::config("index label", format!("scan {}: {s:?} is not NC, MCI or AD", row.scan))
            })?),
        };
        Ok(CohortItem {
            scan: row.scan.clone(),
            subject: row.subject.clone(),
            shape: vol.shape,
            voxels,
            label,
            mmse: row.mmse,
            report: row.report.clone(),
        })
    }
}

impl Dataset<CohortItem> for CohortDataset {
    /// `None` past the end, or when the cache file is unreadable (logged with its reason; use
    /// [`CohortDataset::load`] to get the error itself).
    fn get(&self, index: usize) -> Option<CohortItem> {
        match self.load(index) {
            Ok(item) => Some(item),
            Err(e) => {
                if index < self.rows.len() {
                    tracing::error!("{e}");
                }
                None
            }
        }
    }

    fn len(&self) -> usize {
        self.rows.len()
    }
}

/// A batch on device `B`.
#[derive(Debug, Clone)]
pub struct CohortBatch<B: Backend> {
    /// `[B, 1, D, H, W]`
    pub volumes: Tensor<B, 5>,
    /// `[B]` class index (NC 0, MCI 1, AD 2); -1 where the scan has no diagnosis.
    pub labels: Tensor<B, 1, Int>,
    /// `[B]` MMSE, 0 where missing.
    pub mmse: Tensor<B, 1>,
    /// `[B]` 1 where MMSE is present, 0 where missing: the MSE term is masked with it.
    pub mmse_mask: Tensor<B, 1>,
    pub reports: Vec<String>,
    pub scans: Vec<String>,
    pub subjects: Vec<String>,
}

#[derive(Debug, Clone, Copy, Default)]
pub struct CohortBatcher;

impl<B: Backend> Batcher<B, CohortItem, CohortBatch<B>> for CohortBatcher {
    fn batch(&self, items: Vec<CohortItem>, device: &B::Device) -> CohortBatch<B> {
        let n = items.len();
        let shape = items.first().map(|i| i.shape).unwrap_or([1, 1, 1]);
        let mut voxels = Vec::with_capacity(n * shape.iter().product::<usize>());
        for item in &items {
            // The cache was written with one shape for every scan (checked by `preprocess`).
            assert_eq!(item.shape, shape, "scan {} has another shape than the batch", item.scan);
            voxels.extend_from_slice(&item.voxels);
        }
        let labels: Vec<i64> = items.iter().map(|i| i.label.map_or(-1, |l| l.index() as i64)).collect();
        let mmse: Vec<f32> = items.iter().map(|i| i.mmse.unwrap_or(0.0)).collect();
        let mask: Vec<f32> = items.iter().map(|i| if i.mmse.is_some() { 1.0 } else { 0.0 }).collect();
        CohortBatch {
            volumes: Tensor::from_data(TensorData::new(voxels, [n, 1, shape[0], shape[1], shape[2]]), device),
            labels: Tensor::from_data(TensorData::new(labels, [n]), device),
            mmse: Tensor::from_data(TensorData::new(mmse, [n]), device),
            mmse_mask: Tensor::from_data(TensorData::new(mask, [n]), device),
            reports: items.iter().map(|i| i.report.clone()).collect(),
            scans: items.iter().map(|i| i.scan.clone()).collect(),
            subjects: items.iter().map(|i| i.subject.clone()).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::Cpu;
    use crate::data::cache::write_cached;
    use crate::data::volume::{identity, Volume};

    fn row(scan: &str, label: Option<&str>, mmse: Option<f32>) -> IndexRow {
        IndexRow {
            label: label.map(String::from),
            mmse,
            report: format!("report {scan}"),
            ..IndexRow::bare(scan, &format!("s_{scan}"), &format!("volumes/{scan}.vol"))
        }
    }

    #[test]
    fn batches_have_shapes_labels_and_mmse_mask() {
        let dir = tempfile::tempdir().unwrap();
        for (n, s) in ["a", "b"].iter().enumerate() {
            let v = Volume::from_fn([2, 3, 4], identity(), |i, j, k| (n * 100 + i * 12 + j * 4 + k) as f32);
            write_cached(&dir.path().join(format!("volumes/{s}.vol")), &v).unwrap();
        }
        let ds = CohortDataset::from_rows(
            dir.path().to_path_buf(),
            vec![row("a", Some("AD"), Some(21.0)), row("b", None, None)],
        );
        let items: Vec<_> = (0..2).map(|i| ds.get(i).unwrap()).collect();
        assert!(ds.get(2).is_none());
        let batch: CohortBatch<Cpu> = CohortBatcher.batch(items, &Default::default());
        assert_eq!(batch.volumes.dims(), [2, 1, 2, 3, 4]);
        let v: Vec<f32> = batch.volumes.into_data().to_vec().unwrap();
        assert_eq!(v[23], 23.0);
        assert_eq!(v[24], 100.0);
        let labels: Vec<i64> = batch.labels.into_data().convert::<i64>().to_vec().unwrap();
        assert_eq!(labels, vec![2, -1]);
        assert_eq!(batch.mmse_mask.into_data().to_vec::<f32>().unwrap(), vec![1.0, 0.0]);
        assert_eq!(batch.mmse.into_data().to_vec::<f32>().unwrap(), vec![21.0, 0.0]);
    }

    #[test]
    fn augmentation_is_seeded_by_epoch_and_index() {
        let dir = tempfile::tempdir().unwrap();
        let v = Volume::from_fn([6, 6, 6], identity(), |i, j, k| (i * 36 + j * 6 + k) as f32);
        write_cached(&dir.path().join("volumes/a.vol"), &v).unwrap();
        let make = || {
            CohortDataset::from_rows(dir.path().to_path_buf(), vec![row("a", Some("NC"), None)])
                .with_augmentation(AugmentConfig::default(), 9)
        };
        let (d1, d2) = (make(), make());
        assert_eq!(d1.get(0).unwrap().voxels, d2.get(0).unwrap().voxels);
        let e0 = d1.get(0).unwrap().voxels;
        d1.set_epoch(1);
        assert_ne!(d1.get(0).unwrap().voxels, e0);
    }
}
