//! `adfit attribute` as a library job: for each chosen scan of a fine-tuned run, Integrated
//! Gradients over its report's tokens and one Grad-ECLIP heat map per biomarker sentence
//! (NIfTI and PNG, written as each scan finishes), scored against the scan's label map when
//! asked; then the tables over all scans.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};

use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use serde::Serialize;

use super::heatmap::{grad_eclip, gradient_saliency, to_voxels};
use super::ig::{baseline_ids, integrated_gradients, words, IgSettings, TokenAttribution};
use super::pointing::{pointing, random_tokens};
use super::spans::{attribute_spans, keep_only, Span};
use crate::backend::{DeviceSpec, Job};
use crate::data::cache::read_cached;
use crate::data::dataset::CohortDataset;
use crate::data::label::Label;
use crate::data::nifti_write::{write_nifti, OutType};
use crate::data::preprocess::IndexRow;
use crate::data::split::{read_fold, Part};
use crate::data::table::Biomarker;
use crate::data::volume::Volume;
use crate::error::{Error, Result};
use crate::model::heads::l2norm;
use crate::plot::{heat_overlay, HeatRow};
use crate::run_folder;

/// Which scans to explain.
#[derive(Debug, Clone)]
pub enum ScanChoice {
    /// These scan ids of the index.
    Ids(Vec<String>),
    /// The scans of one part of one fold.
    Split { split: PathBuf, fold: usize, part: Part },
}

/// What to run.
#[derive(Debug, Clone)]
pub struct AttributeJob {
    pub backbone: PathBuf,
    pub run: PathBuf,
    pub index: PathBuf,
    pub scans: ScanChoice,
    /// At most this many scans (in index order), `None` for all.
    pub limit: Option<usize>,
    pub out: PathBuf,
    pub ig: IgSettings,
    /// Words per scan and per class in `top_words.csv`.
    pub top_k: usize,
    /// Score the maps against the label maps `preprocess` carried from `synth --labels`.
    pub labels: bool,
    /// Write each map as NIfTI and PNG (the tables are always written).
    pub maps: bool,
    /// Only the sentences of these biomarkers get heat maps (all when empty).
    pub sentences: Vec<Biomarker>,
    /// Seed of the random maps the pointing game compares with.
    pub seed: u64,
    /// Warn when IG's completeness error of a scan is above this (relative).
    pub completeness_tolerance: f64,
    pub quiet: bool,
}

/// The explanation of one scan.
#[derive(Debug, Clone)]
pub struct ScanAttribution {
    pub scan: String,
    pub label: Option<Label>,
    pub tokens: Vec<String>,
    pub ig: TokenAttribution,
    /// Per sentence found in the report, with its pointing scores when labels were given.
    pub sentences: Vec<(Span, Option<Vec<MethodScore>>)>,
}

/// One map's pointing-game result.
#[derive(Debug, Clone, Serialize)]
pub struct MethodScore {
    pub method: &'static str,
    pub energy: f64,
    pub peak_hit: bool,
}

/// The heat-map methods, in table order.
pub const METHODS: [&str; 3] = ["grad-eclip", "gradient", "random"];

/// What `attribute` found, for the tables and the summary.
#[derive(Debug, Clone)]
pub struct AttributeReport {
    pub scans: Vec<ScanAttribution>,
    pub settings: IgSettings,
}

fn slug(s: &str) -> String {
    let s: String = s.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '-' }).collect();
    s.split('-').filter(|p| !p.is_empty()).collect::<Vec<_>>().join("-")
}

/// The folder of one scan's maps under `out`.
pub fn maps_dir(out: &Path, scan: &str) -> PathBuf {
    out.join("maps").join(scan.replace(['/', '\\'], "_"))
}

/// The chosen rows of the index, in index order, or an error naming what was not found.
fn choose(job: &AttributeJob) -> Result<CohortDataset> {
    let ds = CohortDataset::open(&job.index)?;
    let ds = match &job.scans {
        ScanChoice::Ids(ids) => {
            let known: HashSet<&str> = ds.rows().iter().map(|r| r.scan.as_str()).collect();
            if let Some(missing) = ids.iter().find(|id| !known.contains(id.as_str())) {
                return Err(Error::table(&job.index, format!("has no scan {missing:?} (asked for by --scans)")));
            }
            let wanted: HashSet<String> = ids.iter().cloned().collect();
            ds.filter(|r| wanted.contains(&r.scan))
        }
        ScanChoice::Split { split, fold, part } => {
            let parts: HashMap<String, Part> = read_fold(split, *fold)?;
            ds.filter(|r| parts.get(&r.subject) == Some(part))
        }
    };
    let silent: Vec<&str> = ds.rows().iter().filter(|r| r.report.is_empty()).map(|r| r.scan.as_str()).collect();
    if !silent.is_empty() {
        tracing::warn!(
            "{} chosen scans have no report (no diagnosis at their visit) and are skipped: {}",
            silent.len(),
            silent.join(", ")
        );
    }
    let ds = ds.filter(|r| !r.report.is_empty());
    let ds = match job.limit {
        Some(n) => {
            let keep: HashSet<String> = ds.rows().iter().take(n).map(|r| r.scan.clone()).collect();
            ds.filter(|r| keep.contains(&r.scan))
        }
        None => ds,
    };
    if ds.rows().is_empty() {
        return Err(Error::table(&job.index, "no chosen scan has a report to explain"));
    }
    Ok(ds)
}

/// Run `job` on `device`; maps are written as each scan finishes, the tables at the end.
pub fn attribute(job: AttributeJob, device: DeviceSpec) -> Result<AttributeReport> {
    let ds = choose(&job)?;
    let _lock = crate::lock::OutputLock::acquire(&job.out)?;
    let report = crate::backend::dispatch(device, Explain { job: &job, ds: &ds })?;
    super::tables::write(&job, &report)?;
    Ok(report)
}

struct Explain<'a> {
    job: &'a AttributeJob,
    ds: &'a CohortDataset,
}

impl Job for Explain<'_> {
    type Output = AttributeReport;

    fn run<B: AutodiffBackend>(self, device: B::Device) -> Result<AttributeReport> {
        let (job, ds) = (self.job, self.ds);
        let grid = ds.grid()?;
        let f = run_folder::load::<B>(&job.run, &job.backbone, grid, &device).map_err(|e| {
            Error::config(
                "--run/--backbone",
                format!("run {} does not load on backbone {}: {e}", job.run.display(), job.backbone.display()),
            )
        })?;
        let unexplained = if f.model.perceiver.is_some() {
            Some("pools its patch tokens through a spatial-pooling perceiver")
        } else if f.model.lga.is_some() {
            Some("runs a language-guided adapter beside its blocks")
        } else if f.model.mixer.is_some() {
            Some("reads a CNN's feature map (Med3DVLM's DCFormer) through trainable blocks")
        } else {
            None
        };
        if let Some(why) = unexplained {
            return Err(Error::config(
                "--run",
                format!(
                    "run {} {why}; Grad-ECLIP explains the CLS token of the plain blocks, so attribution is \
                     not available for this run",
                    job.run.display()
                ),
            ));
        }
        let same = |p: &Path| std::fs::canonicalize(p).ok();
        if same(&f.config.backbone) != same(&job.backbone) {
            tracing::warn!(
                "run {} was fine-tuned on backbone {}, not {}: its weights load, but check that this is the same backbone",
                job.run.display(),
                f.config.backbone.display(),
                job.backbone.display()
            );
        }
        let template = f.config.settings.template()?;
        let special = |t: &str| {
            f.tokenizer.token_to_id(t).map(i64::from).ok_or_else(|| Error::Tokenizer {
                path: job.backbone.clone(),
                reason: format!("the vocabulary has no {t} token"),
            })
        };
        let (pad, mask) = (special("[PAD]")?, special("[MASK]")?);
        let vit = &f.model.backbone.vit;
        let bar = crate::util::progress_bar(ds.rows().len() as u64, "explaining scans", job.quiet);
        let mut scans = Vec::new();
        for (n, row) in ds.rows().iter().enumerate() {
            let volume = read_cached(&ds.root().join(&row.cache))?;
            let x = Tensor::<B, 5>::from_data(
                TensorData::new(volume.data.clone(), [1, 1, grid[0], grid[1], grid[2]]),
                &device,
            );
            let v = f.model.encode_image(x.clone()).v.detach();
            let ids = f.tokenizer.encode_one(&row.report)?;
            let base = baseline_ids(&ids, job.ig.baseline, pad, mask);
            let ig = integrated_gradients(&f.model, v, &ids, &vec![1.0; ids.len()], base.as_deref(), &job.ig, &device);
            let err = ig.completeness_error();
            if err > job.completeness_tolerance {
                tracing::warn!(
                    "scan {}: IG completeness error {:.2}% is above {:.2}%: raise --steps (now {})",
                    row.scan,
                    100.0 * err,
                    100.0 * job.completeness_tolerance,
                    job.ig.steps
                );
            }
            let mut spans = attribute_spans(&f.tokenizer, &ids, &template)?;
            if !job.sentences.is_empty() {
                spans.retain(|s| job.sentences.contains(&s.biomarker));
            }
            let sentences = if spans.is_empty() {
                tracing::warn!("scan {}: no biomarker sentence of the run's template is in its report", row.scan);
                Vec::new()
            } else {
                let scan = ScanInput { row, index: n, x, volume: &volume, ids: &ids, vit };
                heat_maps(job, &f.model, scan, spans, &device)?
            };
            scans.push(ScanAttribution {
                scan: row.scan.clone(),
                label: row.label.as_deref().and_then(Label::parse),
                tokens: ids
                    .iter()
                    .map(|&i| f.tokenizer.id_to_token(i as u32).unwrap_or_else(|| "[UNK]".into()))
                    .collect(),
                ig,
                sentences,
            });
            bar.inc(1);
        }
        bar.finish_and_clear();
        Ok(AttributeReport { scans, settings: job.ig })
    }
}

/// One scan as the heat maps need it.
struct ScanInput<'a, B: Backend> {
    row: &'a IndexRow,
    /// Its position among the chosen scans (seeds its random maps).
    index: usize,
    /// `[1, 1, D, H, W]`
    x: Tensor<B, 5>,
    volume: &'a Volume,
    ids: &'a [i64],
    /// The ViT whose tokens the maps are over (their order on the volume's grid).
    vit: &'a crate::model::vit3d::Vit3d<B>,
}

/// The Grad-ECLIP map of each sentence (written unless `--no-maps`, with the scan's overview),
/// scored against the label map with `--labels`.
fn heat_maps<B: AutodiffBackend>(
    job: &AttributeJob,
    model: &crate::model::method::AdClip<B>,
    scan: ScanInput<B>,
    spans: Vec<Span>,
    device: &B::Device,
) -> Result<Vec<(Span, Option<Vec<MethodScore>>)>> {
    let ScanInput { row, index, x, volume, ids, vit } = scan;
    let on_grid = |tokens: &[f32]| vit.tokens_to_dhw(tokens, volume.shape);
    let labels = if job.labels { Some(read_label_map(&job.index, row, volume)?) } else { None };
    let texts = sentence_embeddings(model, ids, &spans, device);
    let eclip = grad_eclip(model, x.clone(), texts.clone());
    let grads = if labels.is_some() { Some(gradient_saliency(model, x, texts)) } else { None };
    let dir = maps_dir(&job.out, &row.scan);
    let mut out = Vec::new();
    let mut shown = Vec::new();
    for (i, span) in spans.into_iter().enumerate() {
        let (tokens, token_grid) = on_grid(&eclip[i]);
        let map = to_voxels(&tokens, token_grid, volume)?;
        let inside = labels.as_ref().map(|l| structure_mask(l, span.biomarker));
        let scores = match (&inside, &grads) {
            (Some(inside), Some(g)) => {
                let seed = job.seed ^ ((index as u64) << 8) ^ i as u64;
                let random = to_voxels(&random_tokens(eclip[i].len(), seed), token_grid, volume)?;
                Some(score_maps(inside, [&map.data, &g[i], &random.data]))
            }
            _ => None,
        };
        if job.maps {
            write_map(&dir, &row.scan, &span, volume, &map, inside.as_deref())?;
        }
        shown.push((span.name.clone(), map, inside));
        out.push((span, scores));
    }
    if job.maps {
        let rows: Vec<HeatRow> = shown
            .iter()
            .map(|(name, map, inside)| HeatRow {
                label: name.clone(),
                heat: map,
                at: peak(map),
                structure: inside.as_deref(),
            })
            .collect();
        let title = format!("{} ({}): Grad-ECLIP per sentence", row.scan, row.label.as_deref().unwrap_or("-"));
        heat_overlay(&dir.join("overview.png"), &title, volume, &rows, 2)?;
    }
    Ok(out)
}

/// One text embedding per sentence: the report with every other sentence masked out.
fn sentence_embeddings<B: Backend>(
    model: &crate::model::method::AdClip<B>,
    ids: &[i64],
    spans: &[Span],
    device: &B::Device,
) -> Tensor<B, 2> {
    let (s, t) = (spans.len(), ids.len());
    let repeated: Vec<i64> = (0..s).flat_map(|_| ids.iter().copied()).collect();
    let ids = Tensor::<B, 2, Int>::from_data(TensorData::new(repeated, [s, t]), device);
    let masks: Vec<f32> = spans.iter().flat_map(|sp| keep_only(t, &sp.tokens)).collect();
    let mask = Tensor::<B, 2>::from_data(TensorData::new(masks, [s, t]), device);
    l2norm(model.f_t.forward(model.text_features(ids, mask))).detach()
}

fn read_label_map(index: &Path, row: &IndexRow, volume: &Volume) -> Result<Volume> {
    let labels = crate::data::labels::read_labels(index, row)?;
    if labels.shape != volume.shape {
        return Err(Error::volume(
            crate::data::labels::labels_path(index, row).display().to_string(),
            format!("the label map's grid {:?} is not the cache volume's {:?}", labels.shape, volume.shape),
        ));
    }
    Ok(labels)
}

/// The voxels of the structure `biomarker` measures.
fn structure_mask(labels: &Volume, biomarker: Biomarker) -> Vec<bool> {
    let ids = crate::data::labels::structure_labels(biomarker);
    labels.data.iter().map(|&l| ids.contains(&(l.round() as u8))).collect()
}

fn score_maps(inside: &[bool], maps: [&[f32]; 3]) -> Vec<MethodScore> {
    METHODS
        .iter()
        .zip(maps)
        .map(|(&method, m)| {
            let p = pointing(m, inside);
            MethodScore { method, energy: p.energy, peak_hit: p.peak_hit }
        })
        .collect()
}

/// The (i, j, k) of a map's largest value.
fn peak(map: &Volume) -> [usize; 3] {
    let i = map.data.iter().enumerate().fold(0, |b, (i, &v)| if v > map.data[b] { i } else { b });
    let [_, n1, n2] = map.shape;
    [i / (n1 * n2), (i / n2) % n1, i % n2]
}

/// `<slug>.nii.gz` (the cache volume's grid and affine) and `<slug>.png` (slices through the
/// map's peak over the scan, the structure outlined when known).
fn write_map(
    dir: &Path,
    scan: &str,
    span: &Span,
    volume: &Volume,
    map: &Volume,
    inside: Option<&[bool]>,
) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let name = slug(&span.name);
    write_nifti(&dir.join(format!("{name}.nii.gz")), map, OutType::Float32)?;
    let row = HeatRow { label: span.name.clone(), heat: map, at: peak(map), structure: inside };
    heat_overlay(&dir.join(format!("{name}.png")), &format!("{scan}: Grad-ECLIP"), volume, &[row], 0)
}

/// Words of one scan with their summed attribution, in report order ([CLS]/[SEP] left out).
pub fn scan_words(s: &ScanAttribution) -> Vec<(String, f64)> {
    words(&s.tokens)
        .into_iter()
        .filter(|(w, _)| w != "[CLS]" && w != "[SEP]")
        .map(|(w, idx)| (w, idx.iter().map(|&i| s.ig.attributions[i]).sum()))
        .collect()
}

/// A word as it is grouped across scans: numbers become `<number>`.
pub fn word_key(w: &str) -> String {
    if w.chars().any(|c| c.is_ascii_digit()) {
        "<number>".into()
    } else {
        w.to_lowercase()
    }
}

/// Per class: each word's mean attribution per scan of the class (summed within a scan) and the
/// number of scans it appears in, highest first.
pub fn words_by_class(scans: &[ScanAttribution]) -> BTreeMap<String, Vec<(String, f64, usize)>> {
    let mut acc: BTreeMap<String, BTreeMap<String, (f64, usize)>> = BTreeMap::new();
    let mut n_class: BTreeMap<String, usize> = BTreeMap::new();
    for s in scans {
        let class = s.label.map_or("unlabelled".to_string(), |l| l.as_str().to_string());
        *n_class.entry(class.clone()).or_default() += 1;
        let mut per_scan: BTreeMap<String, f64> = BTreeMap::new();
        for (w, a) in scan_words(s) {
            *per_scan.entry(word_key(&w)).or_default() += a;
        }
        let entry = acc.entry(class).or_default();
        for (w, a) in per_scan {
            let e = entry.entry(w).or_default();
            e.0 += a;
            e.1 += 1;
        }
    }
    acc.into_iter()
        .map(|(class, m)| {
            let n = n_class[&class] as f64;
            let mut v: Vec<(String, f64, usize)> = m.into_iter().map(|(w, (sum, k))| (w, sum / n, k)).collect();
            v.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
            (class, v)
        })
        .collect()
}
