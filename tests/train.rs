//! A few epochs of the method on a tiny random backbone and cached random volumes: the loop runs,
//! stays finite, is repeatable with a fixed seed, and evaluation yields probabilities.

mod common;
use common::vocab;

use adfit::data::cache::write_cached;
use adfit::data::dataset::CohortDataset;
use adfit::data::label::Label;
use adfit::data::preprocess::IndexRow;
use adfit::data::report::ReportTemplate;
use adfit::data::table::Biomarkers;
use adfit::data::volume::{identity, Volume};
use adfit::eval::predict::evaluate;
use adfit::model::bert::{Bert, BertConfig};
use adfit::model::clip::ClipBackbone;
use adfit::model::method::{AdClip, MethodConfig};
use adfit::model::tokenizer::TextTokenizer;
use adfit::model::vit3d::{Vit3d, Vit3dConfig};
use adfit::run_folder::MmseScale;
use adfit::train::epoch::train_epoch;
use burn::backend::{Autodiff, Flex};
use burn::optim::AdamWConfig;

type AD = Autodiff<Flex>;

fn cohort(dir: &std::path::Path) -> CohortDataset {
    let template = ReportTemplate::default();
    let mut rows = Vec::new();
    for s in 0..12usize {
        let label = Label::ALL[s % 3];
        // Class-dependent intensity so there is something to learn.
        let v = Volume::from_fn([16, 32, 32], identity(), |i, j, k| {
            let noise = (((i * 131 + j * 71 + k * 29 + s * 17) % 97) as f32) / 97.0;
            0.3 * noise + 0.2 * label.index() as f32 * ((i + j) % 2) as f32
        });
        let cache = format!("volumes/s{s}.vol");
        write_cached(&dir.join(&cache), &v).unwrap();
        let b = Biomarkers { hippocampus: Some(7000.0 - 600.0 * label.index() as f64), ..Default::default() };
        rows.push(IndexRow {
            label: Some(label.as_str().into()),
            mmse: (s % 4 != 0).then_some(29.0 - 4.0 * label.index() as f32),
            hippocampus: b.hippocampus,
            report: template.render(label, &b),
            ..IndexRow::bare(&format!("s{s}"), &format!("subj{s}"), &cache)
        });
    }
    CohortDataset::from_rows(dir.to_path_buf(), rows)
}

fn model(seed: u64) -> AdClip<AD> {
    use burn::tensor::backend::Backend;
    let device = Default::default();
    <AD as Backend>::seed(&device, seed);
    let bert = BertConfig {
        hidden_size: 32,
        num_hidden_layers: 1,
        num_attention_heads: 4,
        intermediate_size: 64,
        max_position_embeddings: 128,
        ..BertConfig::bert_base_uncased()
    };
    let backbone = ClipBackbone::from_towers(
        Vit3d::init(&Vit3dConfig::tiny(), &device).unwrap(),
        Bert::init(&bert, &device).unwrap(),
        32,
        &device,
    );
    let cfg = MethodConfig {
        visual_prompts: 4,
        text_prompts: 4,
        embed_dim: 32,
        mmse_hidden: 16,
        cross_attention_heads: 4,
        ..Default::default()
    };
    AdClip::new(backbone, &cfg, &device)
}

/// Burn's random seed is global to the backend: the tests below take turns.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[test]
fn weight_decay_touches_trainable_matrices_only() {
    let _turn = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    use adfit::train::decay::decay_matrices;
    let m = model(3);
    let before_fv = m.f_v.weight.val().into_data().to_vec::<f32>().unwrap();
    let before_prompts = m.text_prompts.as_ref().unwrap().prompts.val().into_data().to_vec::<f32>().unwrap();
    let before_frozen = m.backbone.vit.blocks[0].mlp.linear1.weight.val().into_data().to_vec::<f32>().unwrap();
    let (m, groups) = decay_matrices(m, 0.5, 0.2); // factor 0.9
                                                   // f_v, f_t, MMSE head (2), cross-attention (2 x 4) = 12 matrices
    assert_eq!(groups.decayed.0, 12);
    let after_fv = m.f_v.weight.val().into_data().to_vec::<f32>().unwrap();
    assert!(after_fv.iter().zip(&before_fv).all(|(a, b)| (a - 0.9 * b).abs() < 1e-7));
    assert_eq!(m.text_prompts.as_ref().unwrap().prompts.val().into_data().to_vec::<f32>().unwrap(), before_prompts);
    assert_eq!(m.backbone.vit.blocks[0].mlp.linear1.weight.val().into_data().to_vec::<f32>().unwrap(), before_frozen);
    assert!(m.f_v.weight.is_require_grad(), "still trainable after the decay");
}

fn run(seed: u64) -> (Vec<f64>, adfit::eval::metrics::ClassMetrics) {
    let dir = tempfile::tempdir().unwrap();
    let ds = cohort(dir.path());
    let tok = TextTokenizer::from_file(&vocab(), 128).unwrap();
    let scale = MmseScale::from_dataset(&ds);
    let device = Default::default();
    let mut m = model(seed);
    let mut optim = AdamWConfig::new().with_weight_decay(0.0).init::<AD, AdClip<AD>>();
    let mut losses = Vec::new();
    for epoch in 0..3 {
        let (next, loss) =
            train_epoch(m, &mut optim, &ds, &tok, scale, 1e-3, 0.01, 4, 0.5, seed, epoch, &device, |_, _| {}).unwrap();
        m = next;
        assert_eq!(loss.batches, 3);
        assert!(loss.loss.is_finite() && loss.mmse >= 0.0, "{loss:?}");
        losses.push(loss.loss);
    }
    let (metrics, mmse) = evaluate(&m, &ds, &tok, &ReportTemplate::default(), &Label::ALL, scale, 5, &device).unwrap();
    assert_eq!(metrics.n, 12);
    assert!(mmse.unwrap().n == 9);
    (losses, metrics)
}

#[test]
fn training_is_finite_repeatable_and_evaluates() {
    let _turn = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let (a, m) = run(7);
    let (b, _) = run(7);
    assert_eq!(a, b, "same seed, same losses");
    assert_eq!(m.confusion.iter().flatten().sum::<usize>(), 12);
    assert!((0.0..=1.0).contains(&m.balanced_accuracy));
}

#[test]
fn a_checkpoint_restores_training_state() {
    use adfit::train::checkpoint;
    let _turn = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let ds = cohort(dir.path());
    let tok = TextTokenizer::from_file(&vocab(), 128).unwrap();
    let scale = MmseScale::from_dataset(&ds);
    let device = Default::default();
    let cfg = MethodConfig {
        visual_prompts: 4,
        text_prompts: 4,
        embed_dim: 32,
        mmse_hidden: 16,
        cross_attention_heads: 4,
        ..Default::default()
    };
    let mut m = model(5);
    let mut optim = AdamWConfig::new().with_weight_decay(0.0).init::<AD, AdClip<AD>>();
    for epoch in 0..2 {
        m = train_epoch(m, &mut optim, &ds, &tok, scale, 1e-3, 0.01, 4, 0.5, 1, epoch, &device, |_, _| {}).unwrap().0;
    }
    let run = dir.path().join("run");
    std::fs::create_dir_all(&run).unwrap();
    checkpoint::save(&run, 1, &m, &optim, scale, &serde_json::json!({"epoch": 1})).unwrap();
    let (m2, mut optim2, _state): (_, _, serde_json::Value) = checkpoint::load(
        &checkpoint::latest(&run).unwrap().unwrap(),
        model(5), // the same frozen backbone; its trainable parts are replaced
        AdamWConfig::new().with_weight_decay(0.0).init::<AD, AdClip<AD>>(),
        &cfg,
        &device,
    )
    .unwrap();
    let (_, a) = train_epoch(m, &mut optim, &ds, &tok, scale, 1e-3, 0.01, 4, 0.5, 1, 2, &device, |_, _| {}).unwrap();
    let (_, b) = train_epoch(m2, &mut optim2, &ds, &tok, scale, 1e-3, 0.01, 4, 0.5, 1, 2, &device, |_, _| {}).unwrap();
    // Restored weights and AdamW moments continue the run to the bit.
    assert_eq!(a.loss.to_bits(), b.loss.to_bits(), "{a:?} vs {b:?}");
}

#[test]
fn a_fresh_model_trains_every_trainable_tensor() {
    use burn::optim::GradientsParams;
    let _turn = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let ds = cohort(dir.path());
    let tok = TextTokenizer::from_file(&vocab(), 128).unwrap();
    let m = model(2);
    let device = Default::default();
    let items: Vec<_> = (0..4).map(|i| ds.load(i).unwrap()).collect();
    let batch: adfit::data::dataset::CohortBatch<AD> =
        burn::data::dataloader::batcher::Batcher::batch(&adfit::data::dataset::CohortBatcher, items, &device);
    let (ids, mask) = adfit::model::tokenizer::tokenize::<AD>(&tok, &batch.reports, &device).unwrap();
    let image = m.encode_image(batch.volumes);
    let w = m.encode_text(ids, mask);
    let loss = m.loss(&image, w, batch.mmse, batch.mmse_mask, 0.5);
    // Including the cross-attention biases, which start at zero.
    assert_eq!(GradientsParams::from_grads(loss.total.backward(), &m).len(), 29);
}
