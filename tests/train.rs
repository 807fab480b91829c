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
use adfit::train::epoch::{train_epoch, EpochPlan};
use burn::backend::{Autodiff, Flex};
use burn::optim::AdamWConfig;

type AD = Autodiff<Flex>;

fn cohort(dir: &std::path::Path) -> CohortDataset {
    cohort_of(dir, 0..12)
}

/// Scans `ids` (label `id % 3`), each its own subject, with a class-dependent pattern planted in
/// the volume.
fn cohort_of(dir: &std::path::Path, ids: std::ops::Range<usize>) -> CohortDataset {
    let template = ReportTemplate::default();
    let mut rows = Vec::new();
    for s in ids {
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
        max_position_embeddings: 128,
        // bert-base's 0.02 at width 32 gives every text the same [CLS] output, and the
        // contrastive loss then cannot move from its uniform value (train/pretrain.rs).
        initializer_range: 0.2,
        ..BertConfig::tiny()
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

/// The tests' epochs: lr 1e-3, weight decay 0.01, batches of 4, λ 0.5, no clipping.
fn plan(seed: u64, epoch: u64) -> EpochPlan {
    EpochPlan { epoch, seed, lr: 1e-3, weight_decay: 0.01, batch_size: 4, lambda: 0.5, grad_clip: None }
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
            train_epoch(m, &mut optim, &ds, &tok, scale, &plan(seed, epoch), None, &device, |_, _| {}).unwrap();
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
        m = train_epoch(m, &mut optim, &ds, &tok, scale, &plan(1, epoch), None, &device, |_, _| {}).unwrap().0;
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
    let (_, a) = train_epoch(m, &mut optim, &ds, &tok, scale, &plan(1, 2), None, &device, |_, _| {}).unwrap();
    let (_, b) = train_epoch(m2, &mut optim2, &ds, &tok, scale, &plan(1, 2), None, &device, |_, _| {}).unwrap();
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

/// A model after a few epochs (its cross-attention no longer the identity it starts as).
fn trained(ds: &CohortDataset, tok: &TextTokenizer, seed: u64, epochs: u64) -> AdClip<AD> {
    let scale = MmseScale::from_dataset(ds);
    let device = Default::default();
    let mut m = model(seed);
    let mut optim = AdamWConfig::new().with_weight_decay(0.0).with_epsilon(1e-8).init::<AD, AdClip<AD>>();
    for epoch in 0..epochs {
        let p = EpochPlan { lr: 3e-3, ..plan(seed, epoch) };
        m = train_epoch(m, &mut optim, ds, tok, scale, &p, None, &device, |_, _| {}).unwrap().0;
    }
    m
}

#[test]
fn predictions_do_not_depend_on_the_batch() {
    use adfit::eval::predict::predict;
    use burn::data::dataset::Dataset;
    use burn::module::AutodiffModule;
    let _turn = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let ds = cohort_of(dir.path(), 0..16);
    let tok = TextTokenizer::from_file(&vocab(), 128).unwrap();
    let m = trained(&ds, &tok, 4, 3);
    let out = m.cross_attention.text_to_image.as_ref().unwrap().out.weight.val().abs().sum().into_scalar();
    assert!(out > 0.0, "the text-to-image attention must have left the identity for this test to mean anything");
    let inner = m.valid();
    let scale = MmseScale::from_dataset(&ds);
    let device = Default::default();
    let template = ReportTemplate::default();
    let by_scan = |ds: &CohortDataset, batch: usize| {
        let p = predict(&inner, ds, &tok, &template, &Label::ALL, scale, batch, &device).unwrap();
        let mut rows: Vec<(String, Vec<f64>, Option<f64>)> =
            (0..p.scans.len()).map(|i| (p.scans[i].clone(), p.proba[i].clone(), p.mmse[i])).collect();
        rows.sort_by(|a, b| a.0.cmp(&b.0));
        rows
    };
    let reference = by_scan(&ds, 1);
    let mut shuffled = ds.rows().to_vec();
    shuffled.reverse();
    shuffled.rotate_left(5);
    let shuffled = CohortDataset::from_rows(dir.path().to_path_buf(), shuffled);
    assert_eq!(shuffled.len(), ds.len());
    for (name, d) in [("index order", &ds), ("shuffled", &shuffled)] {
        for batch in [1, 3, 8] {
            let got = by_scan(d, batch);
            for (r, g) in reference.iter().zip(&got) {
                assert_eq!(r.0, g.0);
                let worst = r.1.iter().zip(&g.1).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
                assert!(worst <= 1e-6, "{name}, batch {batch}, scan {}: probabilities {:?} vs {:?}", r.0, r.1, g.1);
                let argmax = |p: &[f64]| p.iter().enumerate().fold(0, |b, (c, &v)| if v > p[b] { c } else { b });
                assert_eq!(argmax(&r.1), argmax(&g.1), "{name}, batch {batch}, scan {}", r.0);
            }
        }
    }
}

/// Fine-tuning learns: on scans whose class is planted in the image, validation balanced
/// accuracy rises far above chance and above the first epoch's. Fails if the optimiser does not
/// step (checked by hand: the accuracy then stays where the first epoch left it).
#[test]
fn fine_tuning_learns_a_planted_signal() {
    let _turn = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    // Trained on the texts it is scored with (the no-report variant): the tiny text tower is
    // random, so only training can make the class prompts tell the classes apart.
    let template = ReportTemplate::default();
    let as_prompts = |ds: CohortDataset| {
        let rows = ds
            .rows()
            .iter()
            .map(|r| IndexRow {
                report: template.prompt(Label::parse(r.label.as_deref().unwrap()).unwrap()),
                ..r.clone()
            })
            .collect();
        CohortDataset::from_rows(dir.path().to_path_buf(), rows)
    };
    let train = as_prompts(cohort_of(dir.path(), 0..36));
    let val = cohort_of(dir.path(), 100..118);
    let tok = TextTokenizer::from_file(&vocab(), 128).unwrap();
    let scale = MmseScale::from_dataset(&train);
    let device = Default::default();
    let mut m = model(9);
    let mut optim = AdamWConfig::new().with_weight_decay(0.0).with_epsilon(1e-8).init::<AD, AdClip<AD>>();
    let mut accuracy = Vec::new();
    for epoch in 0..8 {
        let p = EpochPlan { lr: 3e-3, batch_size: 6, ..plan(9, epoch) };
        let (next, loss) = train_epoch(m, &mut optim, &train, &tok, scale, &p, None, &device, |_, _| {}).unwrap();
        m = next;
        assert!(loss.loss.is_finite());
        let (metrics, _) =
            evaluate(&m, &val, &tok, &ReportTemplate::default(), &Label::ALL, scale, 6, &device).unwrap();
        accuracy.push(metrics.balanced_accuracy);
    }
    eprintln!("validation balanced accuracy by epoch: {accuracy:?}");
    let last = *accuracy.last().unwrap();
    assert!(last >= 0.8, "{accuracy:?}");
    assert!(last >= accuracy[0] + 0.2, "{accuracy:?}");
}
