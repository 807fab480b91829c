//! The model against its references: MONAI's ViT, HF's BertModel and the method's PyTorch
//! contract, on the small random models `scripts/generate_reference.py` writes
//! (`tests/fixtures/model/`), and LoRA (through peft) and bottleneck adapters on that ViT.
//! Outputs within 1e-4 max abs error; gradients within 1e-3 relative (max |g − ref| / max |ref|).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use adfit::model::adapt::{merge_lora, BlockAdaptation, Bottleneck, Lora};
use adfit::model::bert::{pool, Bert, BertConfig, Pooling};
use adfit::model::clip::ClipBackbone;
use adfit::model::cross_attention::CrossAttentionKind;
use adfit::model::heads::l2norm;
use adfit::model::lga::{Lga, LgaShape};
use adfit::model::method::{AdClip, MethodConfig};
use adfit::model::perceiver::SpatialPooling;
use adfit::model::prompts::{prompted_vision, VisionOutput};
use adfit::model::vit3d::{PosEmbedPolicy, Vit3d, Vit3dConfig};
use adfit::model::weights::{read_safetensors, RawTensor, WeightStore};
use burn::backend::{Autodiff, Flex};
use burn::module::Param;
use burn::nn::Linear;
use burn::prelude::*;
use burn::tensor::TensorData;

type B = Flex;
type AD = Autodiff<Flex>;

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/model")
}

fn load(name: &str) -> BTreeMap<String, RawTensor> {
    read_safetensors(&dir().join(name)).unwrap()
}

fn tensor<Bk: Backend, const D: usize>(t: &RawTensor) -> Tensor<Bk, D> {
    let shape: [usize; D] = t.shape.clone().try_into().unwrap();
    Tensor::from_data(TensorData::new(t.data.clone(), shape), &Default::default())
}

fn ints<Bk: Backend>(t: &RawTensor) -> Tensor<Bk, 2, Int> {
    let data: Vec<i64> = t.data.iter().map(|&v| v as i64).collect();
    Tensor::from_data(TensorData::new(data, [t.shape[0], t.shape[1]]), &Default::default())
}

fn max_abs<Bk: Backend, const D: usize>(got: Tensor<Bk, D>, want: &RawTensor, what: &str) -> f32 {
    assert_eq!(got.dims().to_vec(), want.shape, "{what}: shape");
    let g: Vec<f32> = got.into_data().convert::<f32>().to_vec().unwrap();
    g.iter().zip(&want.data).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max)
}

fn assert_close<Bk: Backend, const D: usize>(got: Tensor<Bk, D>, want: &RawTensor, what: &str) {
    let err = max_abs(got, want, what);
    assert!(err <= 1e-4, "{what}: max abs error {err}");
}

fn assert_grad_close<Bk: Backend, const D: usize>(got: Tensor<Bk, D>, want: &RawTensor, what: &str) {
    let err = max_abs(got, want, what);
    let scale = want.data.iter().map(|v| v.abs()).fold(0.0, f32::max);
    assert!(scale > 0.0, "{what}: zero reference gradient");
    eprintln!("gradient of {what}: relative error {:.1e} against PyTorch", err / scale);
    assert!(err / scale <= 1e-3, "{what}: relative gradient error {}", err / scale);
}

fn vit_config() -> Vit3dConfig {
    Vit3dConfig { img_size: [8, 32, 48], ..Vit3dConfig::tiny() }
}

fn bert_config() -> BertConfig {
    let text = std::fs::read_to_string(dir().join("bert.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn load_vit<Bk: Backend>() -> Vit3d<Bk> {
    let store = WeightStore::<Bk>::new(
        Path::new("vit"),
        load("vit.safetensors"),
        &[("vision_encoder.", "vit.")],
        &Default::default(),
    );
    let vit = Vit3d::load(&vit_config(), &store, "vit.", [2, 2, 3], PosEmbedPolicy::Reinterpret).unwrap();
    vit
}

fn load_bert<Bk: Backend>() -> Bert<Bk> {
    let mut store = WeightStore::<Bk>::new(
        Path::new("bert"),
        load("bert.safetensors"),
        &[("language_encoder.", "text.")],
        &Default::default(),
    );
    Bert::load(&bert_config(), &mut store, "text.").unwrap()
}

#[test]
fn vit_matches_monai() {
    let f = load("vit.safetensors");
    let vit = load_vit::<B>();
    let x: Tensor<B, 5> = tensor(&f["input.volume"]);
    assert_close(vit.patchify(x.clone()), &f["out.patches"], "patches");
    let (last, hidden) = vit.forward(x, true);
    assert_eq!(hidden.len(), 3);
    for (l, h) in hidden.into_iter().enumerate() {
        assert_close(h, &f[&format!("out.hidden_states.{l}")], &format!("hidden state {l}"));
    }
    assert_close(last, &f["out.last"], "after final norm");
}

#[test]
fn vit_checkpoint_is_loaded_strictly() {
    let mut tensors = load("vit.safetensors");
    tensors.retain(|k, _| k.starts_with("vision_encoder."));
    tensors.remove("vision_encoder.blocks.1.mlp.linear2.bias");
    tensors.insert("vision_encoder.extra".into(), RawTensor { shape: vec![1], data: vec![0.0] });
    tensors.insert("vision_encoder.norm.bias".into(), RawTensor { shape: vec![65], data: vec![0.0; 65] });
    let store = WeightStore::<B>::new(Path::new("ckpt"), tensors, &[("vision_encoder.", "vit.")], &Default::default());
    let _ = Vit3d::load(&vit_config(), &store, "vit.", [2, 2, 3], PosEmbedPolicy::Reinterpret).unwrap();
    let msg = store.finish().unwrap_err().to_string();
    assert!(msg.contains("missing key vision_encoder.blocks.1.mlp.linear2.bias"), "{msg}");
    assert!(msg.contains("unexpected key vision_encoder.extra"), "{msg}");
    assert!(msg.contains("key vision_encoder.norm.bias has shape [65], expected [64]"), "{msg}");
    assert!(msg.contains("3 problem(s)"), "{msg}");
}

#[test]
fn position_embedding_policies() {
    // The fixture's grid is 2x2x3 = 12 tokens. A 4x2x... grid of 12 tokens reinterprets;
    // another token count needs interpolation; interpolation to the same grid is the identity.
    let f = load("vit.safetensors");
    let mut cfg = vit_config();
    cfg.img_size = [16, 16, 48]; // grid 4x1x3 = 12 tokens
    let store = WeightStore::<B>::new(Path::new("v"), f.clone(), &[("vision_encoder.", "vit.")], &Default::default());
    assert!(Vit3d::load(&cfg, &store, "vit.", [2, 2, 3], PosEmbedPolicy::Reinterpret).is_ok());
    cfg.img_size = [16, 32, 48]; // 4x2x3 = 24 tokens
    let err = Vit3d::<B>::load(&cfg, &store, "vit.", [2, 2, 3], PosEmbedPolicy::Reinterpret).unwrap_err();
    assert!(err.to_string().contains("interpolate"), "{err}");
    let v = Vit3d::<B>::load(&cfg, &store, "vit.", [2, 2, 3], PosEmbedPolicy::Interpolate).unwrap();
    assert_eq!(v.pos_embed.dims(), [1, 24, 64]);
    let same = Vit3d::<B>::load(&vit_config(), &store, "vit.", [2, 2, 3], PosEmbedPolicy::Interpolate).unwrap();
    assert_close(same.pos_embed.val(), &f["vision_encoder.patch_embedding.position_embeddings"], "identity resize");
}

#[test]
fn bert_matches_huggingface() {
    let f = load("bert.safetensors");
    let bert = load_bert::<B>();
    let mask: Tensor<B, 2> = tensor(&f["input.attention_mask"]);
    let (last, hidden) = bert.forward(ints(&f["input.input_ids"]), mask, true);
    for (l, h) in hidden.into_iter().enumerate() {
        assert_close(h, &f[&format!("out.hidden_states.{l}")], &format!("hidden state {l}"));
    }
    assert_close(last, &f["out.last_hidden_state"], "last hidden state");
}

fn method_config(kind: CrossAttentionKind) -> MethodConfig {
    MethodConfig {
        visual_prompts: 3,
        mmse_token: true,
        text_prompts: 4,
        cross_attention: kind,
        cross_attention_heads: 4,
        pooling: Pooling::Cls,
        embed_dim: 48,
        mmse_hidden: 32,
        train_cls: true,
        ..Default::default()
    }
}

fn wrapper<Bk: Backend>(kind: CrossAttentionKind) -> AdClip<Bk> {
    let device = Default::default();
    let backbone = ClipBackbone::from_towers(load_vit::<Bk>(), load_bert::<Bk>(), 48, &device);
    let cfg = method_config(kind);
    let mut tensors = load("wrapper.safetensors");
    tensors.retain(|k, _| k.starts_with("adfit."));
    let store = WeightStore::<Bk>::new(Path::new("wrapper"), tensors, &[], &device);
    let model = AdClip::new(backbone, &cfg, &device).load_trainable(&store, "adfit.", &cfg);
    if kind == CrossAttentionKind::MultiHead {
        store.finish().unwrap();
    }
    model
}

#[test]
fn method_forward_matches_the_contract() {
    let f = load("wrapper.safetensors");
    let m = wrapper::<B>(CrossAttentionKind::MultiHead);
    let x: Tensor<B, 5> = tensor(&f["input.volume"]);
    let (last, _) = prompted_vision(
        &m.backbone.vit,
        x.clone(),
        m.mmse_token.as_ref(),
        m.visual_prompts.as_ref(),
        &m.adaptation,
        None,
        None,
        VisionOutput::Sequence,
    );
    assert_close(last, &f["out.vision_last"], "vision sequence");
    let img = m.encode_image(x);
    assert_close(img.v.clone(), &f["out.v"], "v");
    assert_close(img.mmse.clone().unwrap(), &f["out.mmse_hat"], "mmse_hat");

    let ids = ints::<B>(&f["input.input_ids"]);
    let mask: Tensor<B, 2> = tensor(&f["input.attention_mask"]);
    let (seq, ext_mask) = m.text_prompts.as_ref().unwrap().insert(m.backbone.bert.embed(ids.clone()), mask.clone());
    assert_close(ext_mask.clone(), &f["out.text_attention_mask"], "extended mask");
    let (text_last, _) = m.backbone.bert.encode(seq, ext_mask.clone(), false);
    assert_close(text_last.clone(), &f["out.text_last"], "text sequence");
    for (p, name) in [(Pooling::Cls, "cls"), (Pooling::Mean, "mean"), (Pooling::MeanAll, "mean_all")] {
        let pooled = pool(text_last.clone(), ext_mask.clone(), p);
        assert_close(pooled.clone(), &f[&format!("out.text_pool.{name}")], name);
        assert_close(l2norm(m.f_t.forward(pooled)), &f[&format!("out.w_{name}")], &format!("w_{name}"));
    }
    let w = m.encode_text(ids, mask);
    assert_close(w.clone(), &f["out.w"], "w");
    let w3 = m.encode_text(ints(&f["input.input_ids_m3"]), tensor(&f["input.attention_mask_m3"]));
    assert_close(w3.clone(), &f["out.w3"], "w3");

    for (kind, name) in [
        (CrossAttentionKind::Off, "off"),
        (CrossAttentionKind::Simple, "simple"),
        (CrossAttentionKind::MultiHead, "multihead"),
    ] {
        let m = wrapper::<B>(kind);
        let (v_hat, w_hat) = m.cross_attention.forward(img.v.clone(), w.clone());
        assert_close(v_hat, &f[&format!("out.{name}.v_hat")], &format!("{name} v_hat"));
        assert_close(w_hat, &f[&format!("out.{name}.w_hat")], &format!("{name} w_hat"));
        assert_close(m.logits(img.v.clone(), w.clone()), &f[&format!("out.{name}.logits")], &format!("{name} logits"));
        let (v3, w3_hat) = m.cross_attention.forward(img.v.clone(), w3.clone());
        assert_close(v3, &f[&format!("out.{name}.m3.v_hat")], &format!("{name} m3 v_hat"));
        assert_close(w3_hat, &f[&format!("out.{name}.m3.w_hat")], &format!("{name} m3 w_hat"));
        assert_close(
            m.logits(img.v.clone(), w3.clone()),
            &f[&format!("out.{name}.m3.logits")],
            &format!("{name} m3 logits"),
        );
        let loss = m.loss(&img, w.clone(), tensor(&f["input.mmse_target"]), tensor(&f["input.mmse_mask"]), 0.5);
        assert_close(loss.total, &f[&format!("out.{name}.loss")], &format!("{name} loss"));
        assert_close(loss.mmse.unwrap(), &f["out.mmse_mse"], "masked mse");
    }
}

#[test]
fn method_gradients_match_autograd() {
    let f = load("wrapper.safetensors");
    let m = wrapper::<AD>(CrossAttentionKind::MultiHead);
    let img = m.encode_image(tensor(&f["input.volume"]));
    let w = m.encode_text(ints(&f["input.input_ids"]), tensor(&f["input.attention_mask"]));
    let loss = m.loss(&img, w, tensor(&f["input.mmse_target"]), tensor(&f["input.mmse_mask"]), 0.5);
    assert_close(loss.total.clone().inner(), &f["out.multihead.loss"], "loss");
    let grads = loss.total.backward();
    let g = |p: &Param<Tensor<AD, 3>>| p.grad(&grads).expect("gradient");
    assert_grad_close(g(&m.visual_prompts.as_ref().unwrap().prompts), &f["grad.visual_prompts"], "visual prompts");
    assert_grad_close(g(m.mmse_token.as_ref().unwrap()), &f["grad.mmse_token"], "mmse token");
    assert_grad_close(g(&m.backbone.vit.cls_token), &f["grad.cls_token"], "cls token");
    let tp = m.text_prompts.as_ref().unwrap().prompts.grad(&grads).unwrap();
    assert_grad_close(tp, &f["grad.text_prompts"], "text prompts");
    let scale = m.scale.grad(&grads).unwrap();
    assert_grad_close(scale, &f["grad.scale"], "scale");
    // Every other trainable tensor, under the fixture's (PyTorch's) names and layouts (torch
    // stores Linear weights [out, in]; Burn [in, out]).
    let linear = |l: &Linear<AD>, name: &str| {
        let w = l.weight.grad(&grads).unwrap().transpose();
        assert_grad_close(w, &f[&format!("grad.{name}.weight")], &format!("{name} weight"));
        let b = l.bias.as_ref().expect("bias").grad(&grads).unwrap();
        assert_grad_close(b, &f[&format!("grad.{name}.bias")], &format!("{name} bias"));
    };
    linear(&m.f_v, "f_v");
    linear(&m.f_t, "f_t");
    let head = m.mmse_head.as_ref().unwrap();
    linear(&head.fc1, "f_mmse.0");
    linear(&head.fc2, "f_mmse.2");
    let xattn = &m.cross_attention;
    for (name, mha) in [("xattn.i2t", &xattn.image_to_text), ("xattn.t2i", &xattn.text_to_image)] {
        let mha = mha.as_ref().unwrap();
        let parts = [&mha.q, &mha.k, &mha.v];
        // torch packs q, k, v into one in_proj: [3·dim, dim] and [3·dim].
        let w = Tensor::cat(parts.iter().map(|l| l.weight.grad(&grads).unwrap().transpose()).collect(), 0);
        assert_grad_close(w, &f[&format!("grad.{name}.in_proj_weight")], &format!("{name} in_proj weight"));
        let b = Tensor::cat(parts.iter().map(|l| l.bias.as_ref().unwrap().grad(&grads).unwrap()).collect(), 0);
        assert_grad_close(b, &f[&format!("grad.{name}.in_proj_bias")], &format!("{name} in_proj bias"));
        linear(&mha.out, &format!("{name}.out_proj"));
    }
    // Frozen backbone weights hold no gradient.
    assert!(m.backbone.vit.blocks[0].attn.qkv.weight.grad(&grads).is_none());
    assert!(m.backbone.bert.embeddings.word.weight.grad(&grads).is_none());
}

#[test]
fn hf_bert_checkpoints_load_with_or_without_the_bert_prefix() {
    let f = load("bert.safetensors");
    for prefix in ["bert.", ""] {
        let tensors: BTreeMap<String, RawTensor> = f
            .iter()
            .filter_map(|(k, v)| k.strip_prefix("language_encoder.").map(|rest| (format!("{prefix}{rest}"), v.clone())))
            .collect();
        let mut store =
            WeightStore::<B>::new(Path::new("hf"), tensors, &[("bert.", "text."), ("", "text.")], &Default::default());
        let bert = Bert::load(&bert_config(), &mut store, "text.").unwrap();
        store.finish().unwrap();
        let (last, _) = bert.forward(ints(&f["input.input_ids"]), tensor(&f["input.attention_mask"]), false);
        assert_close(last, &f["out.last_hidden_state"], &format!("prefix {prefix:?}"));
    }
}

#[test]
fn pretrained_vit_bin_in_bfloat16_loads_strictly() {
    use adfit::model::backbones::m3d::load_vision_checkpoint;
    use adfit::model::weights::read_pytorch;
    let path = dir().join("pretrained_vit_bf16.bin");
    let reference: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir().join("pretrained_vit_bf16.json")).unwrap()).unwrap();
    let tensors = read_pytorch(&path).unwrap();
    let want = reference["tensors"].as_object().unwrap();
    assert_eq!(tensors.len(), want.len());
    for (name, w) in want {
        let t = &tensors[name];
        let shape: Vec<usize> = w["shape"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as usize).collect();
        assert_eq!(t.shape, shape, "{name}");
        let first4: Vec<f32> = w["first4"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap() as f32).collect();
        assert_eq!(&t.data[..4], &first4[..], "{name}: bf16 values must convert exactly");
        let sum: f64 = t.data.iter().map(|&v| v as f64).sum();
        assert!((sum - w["sum"].as_f64().unwrap()).abs() < 1e-6 * (1.0 + sum.abs()), "{name}: sum {sum}");
    }
    // The whole ViT loads strictly from it and stays close to the f32 reference (bf16 weights).
    let vit: Vit3d<B> =
        load_vision_checkpoint(&path, &vit_config(), [2, 2, 3], PosEmbedPolicy::Reinterpret, &Default::default())
            .unwrap();
    let f = load("vit.safetensors");
    let (last, _) = vit.forward(tensor(&f["input.volume"]), false);
    let err = max_abs(last, &f["out.last"], "bf16 ViT");
    assert!(err < 0.1, "bf16 weights moved the output by {err}");
}

#[test]
fn only_trainable_parameters_get_gradients_and_optimizer_state() {
    use burn::optim::{AdamWConfig, GradientsParams, Optimizer};
    let f = load("wrapper.safetensors");
    let m = wrapper::<AD>(CrossAttentionKind::MultiHead);
    let img = m.encode_image(tensor(&f["input.volume"]));
    let w = m.encode_text(ints(&f["input.input_ids"]), tensor(&f["input.attention_mask"]));
    let loss = m.loss(&img, w, tensor(&f["input.mmse_target"]), tensor(&f["input.mmse_mask"]), 0.5);
    let grads = GradientsParams::from_grads(loss.total.backward(), &m);
    // prompts (visual, text), MMSE token, MMSE head (4), f_v (2), f_t (2), cross-attention
    // (2 directions x 4 linears x 2), scale, CLS = 29 tensors; nothing from the frozen towers.
    assert_eq!(grads.len(), 29);
    let mut optim = AdamWConfig::new().init::<AD, AdClip<AD>>();
    let before = m.backbone.vit.blocks[0].attn.qkv.weight.val().into_data();
    let m = optim.step(1e-3, m, grads);
    assert_eq!(optim.to_record().len(), 29, "optimiser state only for trainable tensors");
    assert_eq!(m.backbone.vit.blocks[0].attn.qkv.weight.val().into_data(), before, "frozen weights unchanged");
}

#[test]
fn trainable_tensors_round_trip_through_safetensors() {
    use adfit::model::backbones::m3d::write_safetensors;
    let f = load("wrapper.safetensors");
    let m = wrapper::<B>(CrossAttentionKind::MultiHead);
    let exported = m.trainable_tensors("adfit.");
    // Same names and values as the PyTorch reference it was loaded from.
    let vit = load("vit.safetensors");
    // 29 tensors, with each direction's q, k, v packed into in_proj as torch stores them: 21 names.
    assert_eq!(exported.len(), 21);
    for (name, t) in &exported {
        let want = if name == "adfit.cls_token" { &vit["vision_encoder.cls_token"] } else { &f[name] };
        assert_eq!(&t.shape, &want.shape, "{name}");
        let err = t.data.iter().zip(&want.data).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
        assert!(err == 0.0, "{name}: {err}");
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("trainable.safetensors");
    write_safetensors(&path, &exported).unwrap();
    let store = WeightStore::<B>::new(&path, read_safetensors(&path).unwrap(), &[], &Default::default());
    let backbone = ClipBackbone::from_towers(load_vit::<B>(), load_bert::<B>(), 48, &Default::default());
    let cfg = method_config(CrossAttentionKind::MultiHead);
    let again = AdClip::new(backbone, &cfg, &Default::default()).load_trainable(&store, "adfit.", &cfg);
    store.finish().unwrap();
    let x: Tensor<B, 5> = tensor(&f["input.volume"]);
    assert_close(again.encode_image(x).v, &f["out.v"], "v after the round trip");
}

// ---- fixture 6: LoRA (peft) and adapters on fixture 1's ViT -------------------------------------

/// `[out, in]` (torch) as Burn's `[in, out]`.
fn transposed<Bk: Backend>(t: &RawTensor) -> Tensor<Bk, 2> {
    tensor::<Bk, 2>(t).transpose()
}

/// The fixture's LoRA (peft keys, torch layout) as adfit's block adaptations.
fn lora_adaptation<Bk: Backend>(f: &BTreeMap<String, RawTensor>) -> Vec<BlockAdaptation<Bk>> {
    let info: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir().join("adapt.json")).unwrap()).unwrap();
    let rank = info["config"]["lora_rank"].as_u64().unwrap() as usize;
    let alpha = info["config"]["lora_alpha"].as_f64().unwrap();
    let lora = |module: &str| {
        let a = transposed::<Bk>(&f[&format!("lora.{module}.lora_A.default.weight")]);
        let b = transposed::<Bk>(&f[&format!("lora.{module}.lora_B.default.weight")]);
        assert_eq!(a.dims()[1], rank);
        Some(Lora { a: Param::from_tensor(a), b: Param::from_tensor(b), scale: alpha / rank as f64 })
    };
    (0..2)
        .map(|l| BlockAdaptation {
            qkv: lora(&format!("blocks.{l}.attn.qkv")),
            out_proj: lora(&format!("blocks.{l}.attn.out_proj")),
            mlp1: lora(&format!("blocks.{l}.mlp.linear1")),
            mlp2: lora(&format!("blocks.{l}.mlp.linear2")),
            after_attn: None,
            after_mlp: None,
        })
        .collect()
}

/// The fixture's bottleneck adapters as adfit's block adaptations.
fn adapter_adaptation<Bk: Backend>(f: &BTreeMap<String, RawTensor>) -> Vec<BlockAdaptation<Bk>> {
    let linear = |name: String| Linear {
        weight: Param::from_tensor(transposed::<Bk>(&f[&format!("{name}.weight")])),
        bias: Some(Param::from_tensor(tensor::<Bk, 1>(&f[&format!("{name}.bias")]))),
    };
    let bottleneck = |site: String| {
        Some(Bottleneck { down: linear(format!("adapter.{site}.down")), up: linear(format!("adapter.{site}.up")) })
    };
    (0..2)
        .map(|l| BlockAdaptation {
            qkv: None,
            out_proj: None,
            mlp1: None,
            mlp2: None,
            after_attn: bottleneck(format!("blocks.{l}.after_attn")),
            after_mlp: bottleneck(format!("blocks.{l}.after_mlp")),
        })
        .collect()
}

fn adapted_forward<Bk: Backend>(
    vit: &Vit3d<Bk>,
    adaptation: &[BlockAdaptation<Bk>],
    f: &BTreeMap<String, RawTensor>,
    prefix: &str,
) -> Tensor<Bk, 3> {
    let (last, hidden) =
        prompted_vision(vit, tensor(&f["input.volume"]), None, None, adaptation, None, None, VisionOutput::Hidden);
    assert_eq!(hidden.len(), 3);
    for (l, h) in hidden.into_iter().enumerate() {
        assert_close(h, &f[&format!("{prefix}.out.hidden_states.{l}")], &format!("{prefix} hidden state {l}"));
    }
    assert_close(last.clone(), &f[&format!("{prefix}.out.last")], &format!("{prefix} last"));
    last
}

fn adapt_fixture() -> BTreeMap<String, RawTensor> {
    let mut f = load("adapt.safetensors");
    f.insert("input.volume".into(), load("vit.safetensors")["input.volume"].clone());
    f
}

#[test]
fn lora_vit_matches_peft_and_merges_like_peft() {
    let f = adapt_fixture();
    let mut vit = load_vit::<B>();
    let mut adaptation = lora_adaptation::<B>(&f);
    adapted_forward(&vit, &adaptation, &f, "lora");
    merge_lora(&mut vit.blocks, &mut adaptation);
    assert!(adaptation.iter().all(|a| a.qkv.is_none() && a.mlp2.is_none()));
    let (merged, _) = vit.forward(tensor(&f["input.volume"]), false);
    assert_close(merged, &f["lora.out.merged_last"], "merged LoRA (peft merge)");
}

#[test]
fn adapter_vit_matches_the_pytorch_reference() {
    let f = adapt_fixture();
    adapted_forward(&load_vit::<B>(), &adapter_adaptation::<B>(&f), &f, "adapter");
}

#[test]
fn lora_and_adapter_gradients_match_autograd() {
    let f = adapt_fixture();
    let vit = load_vit::<AD>().no_grad(); // frozen, as AdClip holds it
    let probe: Tensor<AD, 3> = tensor(&f["input.probe"]);
    let loss_of = |adaptation: &[BlockAdaptation<AD>], prefix: &str| {
        let last = adapted_forward(&vit, adaptation, &f, prefix);
        let loss = (last * probe.clone()).sum();
        // A sum over 1,664 products of order 1: compared relative to its size.
        let (got, want) = (loss.clone().into_scalar().elem::<f32>(), f[&format!("{prefix}.out.loss")].data[0]);
        assert!((got - want).abs() <= 1e-5 * want.abs(), "{prefix} loss {got}, PyTorch {want}");
        loss.backward()
    };
    let lora = lora_adaptation::<AD>(&f);
    let grads = loss_of(&lora, "lora");
    for (l, ad) in lora.iter().enumerate() {
        for (u, module) in [
            (&ad.qkv, "attn.qkv"),
            (&ad.out_proj, "attn.out_proj"),
            (&ad.mlp1, "mlp.linear1"),
            (&ad.mlp2, "mlp.linear2"),
        ] {
            let u = u.as_ref().unwrap();
            let name = format!("blocks.{l}.{module}");
            let ga = u.a.grad(&grads).unwrap().transpose();
            assert_grad_close(ga, &f[&format!("lora.grad.{name}.lora_A.default.weight")], &format!("{name} A"));
            let gb = u.b.grad(&grads).unwrap().transpose();
            assert_grad_close(gb, &f[&format!("lora.grad.{name}.lora_B.default.weight")], &format!("{name} B"));
        }
    }
    assert!(vit.blocks[0].attn.qkv.weight.grad(&grads).is_none(), "a frozen weight has no gradient");
    let adapters = adapter_adaptation::<AD>(&f);
    let grads = loss_of(&adapters, "adapter");
    for (l, ad) in adapters.iter().enumerate() {
        for (bn, site) in [(&ad.after_attn, "after_attn"), (&ad.after_mlp, "after_mlp")] {
            let bn = bn.as_ref().unwrap();
            for (lin, part) in [(&bn.down, "down"), (&bn.up, "up")] {
                let name = format!("blocks.{l}.{site}.{part}");
                let gw = lin.weight.grad(&grads).unwrap().transpose();
                assert_grad_close(gw, &f[&format!("adapter.grad.{name}.weight")], &format!("{name} weight"));
                let gb = lin.bias.as_ref().unwrap().grad(&grads).unwrap();
                assert_grad_close(gb, &f[&format!("adapter.grad.{name}.bias")], &format!("{name} bias"));
            }
        }
    }
}

// ---- fixture 7: M3D-LaMed's spatial-pooling projector and LGA's interaction blocks -------------

#[test]
fn perceiver_and_lga_match_their_pytorch_references() {
    let f = load("heads.safetensors");
    let device = Default::default();
    let store = WeightStore::<B>::new(Path::new("heads"), f.clone(), &[], &device);
    // The perceiver: avg_pool3d over the 2×4×5 grid (the remainder along the last axis dropped),
    // then Linear, GELU, Linear.
    let perceiver = SpatialPooling::<B>::init(16, 24, 2, 2, &device).load(&store, "");
    let tokens = perceiver.tokens(tensor(&f["input.patches"]), [2, 4, 5]);
    assert_close(tokens, &f["perceiver.out.tokens"], "perceiver tokens");
    // One LGA interaction (extractor, then gated injector) and the final injector.
    let shape = LgaShape {
        dim: 16,
        text_dim: 16,
        layers: 1,
        every: 1,
        heads: 2,
        reduction: 2,
        ffn_ratio: 0.5,
        final_injector: true,
    };
    let lga = Lga::<B>::init(&shape, &device).load(&store, "");
    let (x, t) = lga.before_block(0, tensor(&f["input.lga_x"]), tensor(&f["input.lga_t"]));
    assert_close(t.clone(), &f["lga.out.t"], "LGA extractor (text stream)");
    assert_close(x.clone(), &f["lga.out.x"], "LGA injector (image tokens)");
    assert_close(lga.after_blocks(x, t), &f["lga.out.final"], "LGA final injector");
}
