//! Strict weight loading from safetensors checkpoints.
//!
//! A checkpoint is read into a name → tensor map after its key names are rewritten by a prefix
//! table (one per checkpoint layout, in [`crate::model::backbones`]). Module constructors then
//! `take` what they need by internal name and shape. [`WeightStore::finish`] fails with one error
//! that lists every missing, mis-shaped and unexpected key, so a partial load can never pass
//! silently (M3D #53: `strict=False` quietly degraded results).

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use burn::module::Param;
use burn::nn::{Embedding, LayerNorm, LayerNormConfig, Linear};
use burn::prelude::*;
use burn::tensor::TensorData;
use safetensors::{Dtype, SafeTensors};

use crate::error::{Error, Result};

/// A raw tensor: shape and f32 values.
#[derive(Debug, Clone)]
pub struct RawTensor {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

/// `t` (as f32) under `name`, for a safetensors export.
pub fn put(out: &mut Vec<(String, RawTensor)>, name: String, t: TensorData) {
    let shape = t.shape.to_vec();
    let data = t.convert::<f32>().to_vec::<f32>().unwrap_or_default();
    out.push((name, RawTensor { shape, data }));
}

/// A Linear's `{name}.weight` in PyTorch's layout (`[out, in]`) and its `{name}.bias`.
pub fn put_linear<B: Backend>(out: &mut Vec<(String, RawTensor)>, name: &str, l: &Linear<B>) {
    put(out, format!("{name}.weight"), l.weight.val().transpose().into_data());
    if let Some(b) = &l.bias {
        put(out, format!("{name}.bias"), b.val().into_data());
    }
}

/// A LayerNorm's `{name}.weight` and `{name}.bias` (PyTorch's names).
pub fn put_layer_norm<B: Backend>(out: &mut Vec<(String, RawTensor)>, name: &str, l: &LayerNorm<B>) {
    put(out, format!("{name}.weight"), l.gamma.val().into_data());
    if let Some(b) = &l.beta {
        put(out, format!("{name}.bias"), b.val().into_data());
    }
}

/// Read every tensor of a safetensors file as f32 (F32, F16, BF16 and F64 are converted).
pub fn read_safetensors(path: &Path) -> Result<BTreeMap<String, RawTensor>> {
    let _context = crate::panic_context::input(format!("safetensors {}", path.display()));
    let bytes = crate::limits::read_file(path)?;
    let st = SafeTensors::deserialize(&bytes)
        .map_err(|e| Error::Weights { path: path.into(), reason: format!("not a safetensors file: {e}") })?;
    let mut out = BTreeMap::new();
    for (name, view) in st.tensors() {
        let raw = view.data();
        let data: Vec<f32> = match view.dtype() {
            Dtype::F32 => raw.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect(),
            Dtype::F64 => raw
                .chunks_exact(8)
                .map(|b| f64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]) as f32)
                .collect(),
            Dtype::BF16 => {
                raw.chunks_exact(2).map(|b| f32::from_bits((u16::from_le_bytes([b[0], b[1]]) as u32) << 16)).collect()
            }
            Dtype::F16 => raw.chunks_exact(2).map(|b| f16_to_f32(u16::from_le_bytes([b[0], b[1]]))).collect(),
            Dtype::I64 => raw
                .chunks_exact(8)
                .map(|b| i64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]) as f32)
                .collect(),
            other => {
                return Err(Error::Weights {
                    path: path.into(),
                    reason: format!("tensor {name} has dtype {other:?}, expected a float type"),
                })
            }
        };
        out.insert(name, RawTensor { shape: view.shape().to_vec(), data });
    }
    Ok(out)
}

/// The string metadata (`__metadata__`) of a safetensors file's header; empty when it has none.
pub fn read_safetensors_metadata(path: &Path) -> Result<std::collections::HashMap<String, String>> {
    let bytes = crate::limits::read_file(path)?;
    let (_, meta) = SafeTensors::read_metadata(&bytes)
        .map_err(|e| Error::Weights { path: path.into(), reason: format!("not a safetensors file: {e}") })?;
    Ok(meta.metadata().clone().unwrap_or_default())
}

/// Read every tensor of a PyTorch checkpoint (`torch.save`: zip or legacy pickle, any float
/// dtype including bfloat16, as M3D-CLIP's `pretrained_ViT.bin`) as f32.
pub fn read_pytorch(path: &Path) -> Result<BTreeMap<String, RawTensor>> {
    let err = |reason: String| Error::Weights { path: path.into(), reason };
    crate::limits::check_file(path, "a checkpoint")?;
    let reader =
        burn_store::pytorch::PytorchReader::new(path).map_err(|e| err(format!("not a readable PyTorch file: {e}")))?;
    let mut out = BTreeMap::new();
    for (name, snap) in reader.into_tensors() {
        let data = snap.to_data().map_err(|e| err(format!("tensor {name}: {e:?}")))?;
        let shape = data.shape.to_vec();
        let values = data.convert::<f32>().to_vec::<f32>().map_err(|e| err(format!("tensor {name}: {e:?}")))?;
        out.insert(name, RawTensor { shape, data: values });
    }
    Ok(out)
}

/// A checkpoint by extension: `.safetensors`, or a PyTorch pickle (`.bin`, `.pt`, `.pth`).
pub fn read_checkpoint(path: &Path) -> Result<BTreeMap<String, RawTensor>> {
    match path.extension().and_then(|e| e.to_str()) {
        Some("safetensors") => read_safetensors(path),
        _ => read_pytorch(path),
    }
}

fn f16_to_f32(h: u16) -> f32 {
    let sign = ((h >> 15) as u32) << 31;
    let exp = ((h >> 10) & 0x1f) as u32;
    let frac = (h & 0x3ff) as u32;
    let bits = match (exp, frac) {
        (0, 0) => sign,
        (0, f) => {
            // subnormal: renormalise
            let shift = f.leading_zeros() - 21;
            let f = (f << shift) & 0x3ff;
            sign | ((127 - 15 + 1 - shift) << 23) | (f << 13)
        }
        (0x1f, f) => sign | 0x7f80_0000 | (f << 13),
        (e, f) => sign | ((e + 127 - 15) << 23) | (f << 13),
    };
    f32::from_bits(bits)
}

/// Checkpoint tensors under internal names, handed out by name and checked shape.
pub struct WeightStore<B: Backend> {
    source: PathBuf,
    tensors: BTreeMap<String, RawTensor>,
    used: RefCell<BTreeSet<String>>,
    problems: RefCell<Vec<String>>,
    /// Keys that the checkpoint may hold and we deliberately do not use (e.g. BERT's pooler).
    ignored: Vec<String>,
    /// `(checkpoint prefix, internal prefix)` pairs, to report problems in the checkpoint's names.
    remap: Vec<(String, String)>,
    device: B::Device,
}

impl<B: Backend> WeightStore<B> {
    /// Refuse a configuration that describes far more parameters than the checkpoint holds,
    /// before anything is built from it: a model's placeholders for missing keys are sized from the
    /// configuration, and a corrupt or foreign `config` must not make us allocate gigabytes.
    pub fn check_claim(&self, config: &Path, claimed_params: f64) -> Result<()> {
        let held: f64 = self.tensors.values().map(|t| t.data.len() as f64).sum();
        if !claimed_params.is_finite() || claimed_params > 2.0 * held + (1u64 << 20) as f64 {
            return Err(Error::Weights {
                path: config.into(),
                reason: format!(
                    "describes a model of {claimed_params:.3e} parameters but {} holds {held:.3e}: this \
                     configuration does not belong to these weights",
                    self.source.display()
                ),
            });
        }
        Ok(())
    }

    /// `remap` is the layout's prefix table: a checkpoint key starting with `from` is renamed to
    /// start with `to`. Keys that no rule matches keep their name (and will be reported as
    /// unexpected if nothing takes them).
    pub fn new(
        source: &Path,
        tensors: BTreeMap<String, RawTensor>,
        remap: &[(&str, &str)],
        device: &B::Device,
    ) -> Self {
        let tensors = tensors
            .into_iter()
            .map(|(k, v)| {
                let name = remap
                    .iter()
                    .find_map(|(from, to)| k.strip_prefix(from).map(|rest| format!("{to}{rest}")))
                    .unwrap_or(k);
                (name, v)
            })
            .collect();
        WeightStore {
            source: source.to_path_buf(),
            tensors,
            used: RefCell::new(BTreeSet::new()),
            problems: RefCell::new(Vec::new()),
            ignored: Vec::new(),
            remap: remap.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect(),
            device: device.clone(),
        }
    }

    /// The checkpoint's own name for an internal name.
    fn checkpoint_name(&self, internal: &str) -> String {
        self.remap
            .iter()
            .find_map(|(from, to)| internal.strip_prefix(to.as_str()).map(|rest| format!("{from}{rest}")))
            .unwrap_or_else(|| internal.to_string())
    }

    /// Accept (and drop) keys starting with `prefix` without using them.
    pub fn ignore_prefix(&mut self, prefix: &str) {
        self.ignored.push(prefix.to_string());
    }

    pub fn device(&self) -> &B::Device {
        &self.device
    }

    pub fn contains(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }

    /// The raw tensor `name`, marked used, if present (no shape check).
    pub fn raw(&self, name: &str) -> Option<&RawTensor> {
        let t = self.tensors.get(name)?;
        self.used.borrow_mut().insert(name.to_string());
        Some(t)
    }

    /// Tensor `name` with exactly `shape`. A missing or mis-shaped tensor is recorded and a zero
    /// tensor returned, so loading goes on and `finish` can list every problem at once.
    pub fn tensor<const D: usize>(&self, name: &str, shape: [usize; D]) -> Tensor<B, D> {
        match self.tensors.get(name) {
            None => self
                .problems
                .borrow_mut()
                .push(format!("missing key {} (expected shape {shape:?})", self.checkpoint_name(name))),
            Some(t) if t.shape != shape => {
                self.used.borrow_mut().insert(name.to_string());
                self.problems.borrow_mut().push(format!(
                    "key {} has shape {:?}, expected {shape:?}",
                    self.checkpoint_name(name),
                    t.shape
                ))
            }
            Some(t) => {
                self.used.borrow_mut().insert(name.to_string());
                return Tensor::from_data(TensorData::new(t.data.clone(), shape), &self.device);
            }
        }
        Tensor::zeros(shape, &self.device)
    }

    pub fn param<const D: usize>(&self, name: &str, shape: [usize; D]) -> Param<Tensor<B, D>> {
        Param::from_tensor(self.tensor(name, shape))
    }

    /// Rows `rows` of the `[out, in]` matrix `name`, transposed to a contiguous `[in, rows]`.
    /// The copy is made here, not left as a strided view: a view would change the summation
    /// order of the matmuls that use it, so a reloaded model would not compute to the bit what
    /// the saved one did.
    pub fn transposed(&self, name: &str, shape: [usize; 2], rows: std::ops::Range<usize>) -> Tensor<B, 2> {
        let [n_out, n_in] = shape;
        let full = self.tensor::<2>(name, shape);
        let data: Vec<f32> = match full.into_data().to_vec::<f32>() {
            Ok(v) if v.len() == n_out * n_in => v,
            _ => vec![0.0; n_out * n_in],
        };
        let n = rows.len();
        let mut t = vec![0f32; n_in * n];
        for (r, row) in rows.enumerate() {
            for c in 0..n_in {
                t[c * n + r] = data[row * n_in + c];
            }
        }
        Tensor::from_data(TensorData::new(t, [n_in, n]), &self.device)
    }

    /// A PyTorch `Linear` (`weight` `[out, in]`) as a Burn `Linear` (`[in, out]`, contiguous).
    pub fn linear(&self, prefix: &str, d_in: usize, d_out: usize, bias: bool) -> Linear<B> {
        let weight = self.transposed(&format!("{prefix}.weight"), [d_out, d_in], 0..d_out);
        Linear {
            weight: Param::from_tensor(weight),
            bias: bias.then(|| self.param(&format!("{prefix}.bias"), [d_out])),
        }
    }

    /// A LayerNorm from `{prefix}.weight` / `{prefix}.bias` (HF's `gamma`/`beta` spelling too).
    pub fn layer_norm(&self, prefix: &str, d: usize, eps: f64) -> LayerNorm<B> {
        self.fill_layer_norm(LayerNormConfig::new(d).with_epsilon(eps).init(&self.device), prefix)
    }

    /// `ln` (its width and epsilon kept) with its weight and bias from `{prefix}.*`.
    pub fn fill_layer_norm(&self, mut ln: LayerNorm<B>, prefix: &str) -> LayerNorm<B> {
        let d = ln.gamma.dims()[0];
        let (w, b) = if self.contains(&format!("{prefix}.gamma")) { ("gamma", "beta") } else { ("weight", "bias") };
        ln.gamma = self.param(&format!("{prefix}.{w}"), [d]);
        ln.beta = Some(self.param(&format!("{prefix}.{b}"), [d]));
        ln
    }

    pub fn embedding(&self, name: &str, n: usize, d: usize) -> Embedding<B> {
        Embedding { weight: self.param(name, [n, d]) }
    }

    /// Fail with every problem found, plus every checkpoint key nothing took.
    pub fn finish(self) -> Result<()> {
        let used = self.used.take();
        let mut problems = self.problems.take();
        for name in self.tensors.keys() {
            if !used.contains(name) && !self.ignored.iter().any(|p| name.starts_with(p.as_str())) {
                problems.push(format!("unexpected key {}", self.checkpoint_name(name)));
            }
        }
        if problems.is_empty() {
            return Ok(());
        }
        Err(Error::Weights {
            path: self.source,
            reason: format!("{} problem(s) loading weights:\n  {}", problems.len(), problems.join("\n  ")),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn half_precision_conversions() {
        assert_eq!(f16_to_f32(0x3c00), 1.0);
        assert_eq!(f16_to_f32(0xc000), -2.0);
        assert_eq!(f16_to_f32(0x0001), 5.960_464_5e-8);
        assert_eq!(f16_to_f32(0x7bff), 65504.0);
        assert!(f16_to_f32(0x7c00).is_infinite());
    }
}
