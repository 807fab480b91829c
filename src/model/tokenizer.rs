//! The uncased WordPiece tokenizer of BERT-family text towers, through the `tokenizers` crate,
//! from a `tokenizer.json` or a bare `vocab.txt`. Padding and truncation are always set here,
//! never inherited from the file (all-MiniLM's tokenizer.json pads everything to 128).

use std::path::{Path, PathBuf};

use tokenizers::models::wordpiece::WordPiece;
use tokenizers::normalizers::bert::BertNormalizer;
use tokenizers::pre_tokenizers::bert::BertPreTokenizer;
use tokenizers::processors::bert::BertProcessing;
use tokenizers::{Tokenizer, TruncationDirection, TruncationParams, TruncationStrategy};

use burn::prelude::*;
use burn::tensor::TensorData;

use crate::error::{Error, Result};

/// Token ids and attention masks of a batch, padded to its longest sequence.
#[derive(Debug, Clone, PartialEq)]
pub struct Encoded {
    /// `[batch][tokens]`
    pub ids: Vec<Vec<i64>>,
    /// `[batch][tokens]`, 1 for real tokens, 0 for padding.
    pub mask: Vec<Vec<i64>>,
}

impl Encoded {
    pub fn len(&self) -> usize {
        self.ids.first().map_or(0, Vec::len)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn batch(&self) -> usize {
        self.ids.len()
    }
}

pub struct TextTokenizer {
    inner: Tokenizer,
    source: PathBuf,
    pad_id: i64,
    max_len: usize,
}

impl TextTokenizer {
    /// From a `tokenizer.json` (its own padding is switched off) or a `vocab.txt` (uncased BERT:
    /// lower-case, strip accents, split punctuation and CJK, `[CLS] … [SEP]`).
    pub fn from_file(path: &Path, max_len: usize) -> Result<Self> {
        let err = |reason: String| Error::Tokenizer { path: path.into(), reason };
        let is_json = path.extension().is_some_and(|e| e.eq_ignore_ascii_case("json"));
        let mut inner = if is_json {
            Tokenizer::from_bytes(crate::limits::read_file(path)?).map_err(|e| err(e.to_string()))?
        } else {
            // The vocabulary is read whole by the tokenizers crate: bound it first.
            crate::limits::check_file(path, "a vocabulary")?;
            let file = path.to_str().ok_or_else(|| err("path is not UTF-8".into()))?;
            let wp = WordPiece::from_file(file).unk_token("[UNK]".into()).build().map_err(|e| err(e.to_string()))?;
            let mut t = Tokenizer::new(wp);
            t.with_normalizer(Some(BertNormalizer::new(true, true, None, true)));
            t.with_pre_tokenizer(Some(BertPreTokenizer));
            let id = |tok: &str| t.token_to_id(tok).ok_or_else(|| err(format!("vocabulary has no {tok}")));
            let (cls, sep) = (id("[CLS]")?, id("[SEP]")?);
            t.with_post_processor(Some(BertProcessing::new(("[SEP]".into(), sep), ("[CLS]".into(), cls))));
            t
        };
        inner.with_padding(None);
        inner
            .with_truncation(Some(TruncationParams {
                max_length: max_len,
                strategy: TruncationStrategy::LongestFirst,
                stride: 0,
                direction: TruncationDirection::Right,
            }))
            .map_err(|e| err(e.to_string()))?;
        let pad_id = inner.token_to_id("[PAD]").unwrap_or(0) as i64;
        Ok(TextTokenizer { inner, source: path.into(), pad_id, max_len })
    }

    pub fn max_len(&self) -> usize {
        self.max_len
    }

    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    pub fn id_to_token(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }

    /// Token ids of one text, with [CLS] and [SEP], truncated to `max_len`.
    pub fn encode_one(&self, text: &str) -> Result<Vec<i64>> {
        let enc = self.inner.encode(text, true).map_err(|e| Error::Tokenizer {
            path: self.source.clone(),
            reason: format!("cannot encode {text:?}: {e}"),
        })?;
        Ok(enc.get_ids().iter().map(|&i| i as i64).collect())
    }

    /// The tokens (strings) of one text, for attribution output.
    pub fn tokens(&self, text: &str) -> Result<Vec<String>> {
        let ids = self.encode_one(text)?;
        Ok(ids.iter().map(|&i| self.inner.id_to_token(i as u32).unwrap_or_else(|| "[UNK]".into())).collect())
    }

    /// Encode a batch, padded with `[PAD]` to the longest text.
    pub fn encode(&self, texts: &[impl AsRef<str>]) -> Result<Encoded> {
        let seqs: Vec<Vec<i64>> = texts.iter().map(|t| self.encode_one(t.as_ref())).collect::<Result<_>>()?;
        let n = seqs.iter().map(Vec::len).max().unwrap_or(0);
        let mut ids = Vec::with_capacity(seqs.len());
        let mut mask = Vec::with_capacity(seqs.len());
        for s in seqs {
            let real = s.len();
            let mut row = s;
            row.resize(n, self.pad_id);
            ids.push(row);
            mask.push((0..n).map(|i| i64::from(i < real)).collect());
        }
        Ok(Encoded { ids, mask })
    }
}

/// Token ids and mask tensors (`[batch, tokens]`) for a batch of texts.
pub fn tokenize<B: Backend>(
    tok: &TextTokenizer,
    texts: &[String],
    device: &B::Device,
) -> Result<(Tensor<B, 2, Int>, Tensor<B, 2>)> {
    let enc = tok.encode(texts)?;
    let (b, n) = (enc.batch(), enc.len());
    let ids = Tensor::from_data(TensorData::new(enc.ids.concat(), [b, n]), device);
    let mask: Vec<f32> = enc.mask.concat().into_iter().map(|m| m as f32).collect();
    Ok((ids, Tensor::from_data(TensorData::new(mask, [b, n]), device)))
}
