//! Resumable training checkpoints: the trainable tensors (safetensors, PyTorch-readable), the
//! AdamW state (Burn's record, full precision) and the loop's state (JSON: epoch, schedule,
//! early-stop counter, metrics so far).
//!
//! A restored run continues to the bit (tests/train.rs, tests/finetune.rs).
//!
//! Each checkpoint is a complete folder `checkpoint-{epoch}`; `checkpoint.json` names the latest
//! and is replaced atomically only after the folder is complete, so a run killed at any point
//! resumes from the last epoch it finished. The optimiser's state is keyed by each tensor's
//! position in the model (Burn's parameter ids change when a model is rebuilt).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use burn::module::{Module, ModuleVisitor, Param, ParamId};
use burn::optim::adaptor::OptimizerAdaptor;
use burn::optim::{AdamW, Optimizer};
use burn::prelude::*;
use burn::record::{FullPrecisionSettings, NamedMpkBytesRecorder, Recorder};
use burn::tensor::backend::AutodiffBackend;
use serde::{de::DeserializeOwned, Serialize};

use crate::error::{Error, Result};
use crate::model::method::{AdClip, MethodConfig};
use crate::run_folder::{read_trainable, write_trainable, MmseScale};

/// The fine-tuning optimiser on backend `B`.
pub type Optim<B> = OptimizerAdaptor<AdamW, AdClip<B>, B>;
type OptimRecord<B> = <Optim<B> as Optimizer<AdClip<B>, B>>::Record;

/// Every float parameter id of a module, in traversal order.
struct Ids(Vec<ParamId>);

impl<B: burn::tensor::backend::Backend> ModuleVisitor<B> for Ids {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        self.0.push(param.id);
    }
}

fn param_ids<B: AutodiffBackend, M: Module<B>>(m: &M) -> Vec<ParamId> {
    let mut v = Ids(Vec::new());
    m.visit(&mut v);
    v.0
}

/// The optimiser state goes through bytes (MessagePack), so that it is written atomically and
/// read under the input cap with every length prefix checked against the bytes really there.
fn recorder() -> NamedMpkBytesRecorder<FullPrecisionSettings> {
    NamedMpkBytesRecorder::<FullPrecisionSettings>::default()
}

/// Write `checkpoint-{epoch}` under `run`, then point `checkpoint.json` at it and drop older ones.
pub fn save<B: AutodiffBackend, S: Serialize>(
    run: &Path,
    epoch: u64,
    model: &AdClip<B>,
    optim: &Optim<B>,
    scale: MmseScale,
    state: &S,
) -> Result<()> {
    let name = format!("checkpoint-{epoch}");
    let dir = run.join(&name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    write_trainable(&dir.join("trainable.safetensors"), model, scale)?;
    let position: HashMap<ParamId, u64> =
        param_ids(model).into_iter().enumerate().map(|(i, id)| (id, i as u64)).collect();
    let record: OptimRecord<B> =
        optim.to_record().into_iter().filter_map(|(id, r)| position.get(&id).map(|&p| (ParamId::from(p), r))).collect();
    let optimizer = dir.join("optimizer.mpk");
    let bytes = Recorder::<B>::record(&recorder(), record, ())
        .map_err(|e| Error::Weights { path: optimizer.clone(), reason: e.to_string() })?;
    crate::util::write_bytes_atomic(&optimizer, &bytes)?;
    let json =
        serde_json::to_string_pretty(state).map_err(|e| Error::Json { path: dir.join("state.json"), source: e })?;
    crate::util::write_bytes_atomic(&dir.join("state.json"), json.as_bytes())?;
    let pointer = serde_json::json!({ "latest": name, "epoch": epoch });
    crate::util::write_bytes_atomic(&run.join("checkpoint.json"), pointer.to_string().as_bytes())?;
    for entry in std::fs::read_dir(run).map_err(|e| Error::io(run, e))?.flatten() {
        let n = entry.file_name().to_string_lossy().to_string();
        if n.starts_with("checkpoint-") && n != name {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
    Ok(())
}

/// The latest complete checkpoint of `run`, if any.
pub fn latest(run: &Path) -> Result<Option<PathBuf>> {
    let pointer = run.join("checkpoint.json");
    if !pointer.exists() {
        return Ok(None);
    }
    let text = crate::limits::read_text(&pointer)?;
    let v: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| Error::Json { path: pointer.clone(), source: e })?;
    let name = v["latest"].as_str().ok_or_else(|| Error::config("checkpoint.json", "has no `latest`"))?;
    Ok(Some(run.join(name)))
}

/// Restore model weights, optimiser state and loop state from a checkpoint folder.
pub fn load<B: AutodiffBackend, S: DeserializeOwned>(
    dir: &Path,
    model: AdClip<B>,
    optim: Optim<B>,
    method: &MethodConfig,
    device: &B::Device,
) -> Result<(AdClip<B>, Optim<B>, S)> {
    let (model, _) = read_trainable(&dir.join("trainable.safetensors"), model, method, device)?;
    let ids = param_ids(&model);
    let optimizer = dir.join("optimizer.mpk");
    let bytes = crate::limits::read_file(&optimizer)?;
    let record: OptimRecord<B> = recorder().load(bytes, device).map_err(|e| Error::Weights {
        path: optimizer.clone(),
        reason: format!("not a readable optimiser state (truncated or corrupt): {e}"),
    })?;
    let record: OptimRecord<B> =
        record.into_iter().filter_map(|(p, r)| ids.get(p.val() as usize).map(|&id| (id, r))).collect();
    let optim = optim.load_record(record);
    let path = dir.join("state.json");
    let text = crate::limits::read_text(&path)?;
    let state = serde_json::from_str(&text).map_err(|e| Error::Json { path, source: e })?;
    Ok((model, optim, state))
}
