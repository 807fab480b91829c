//! Integrated Gradients (Sundararajan et al., 2017) of the image–report matching score with
//! respect to the report's token embeddings (the BERT embedding layer's output, after which the
//! text prompts are inserted), through the whole fine-tuned text side: text prompts, the frozen
//! encoder, `f_t`, the cross-attention and the logit scale.
//!
//! `IG_t = Σ_h (x − x')_{t,h} · ∫₀¹ ∂s(x' + α(x − x'))/∂x_{t,h} dα`, the integral taken by
//! Gauss–Legendre quadrature at `steps` points (Captum's default; exact for polynomials of degree
//! 2·steps − 1, so far fewer points than a Riemann sum reach the same accuracy), evaluated in
//! chunks of points per backward pass so that memory stays bounded. Completeness:
//! `Σ_t IG_t ≈ s(x) − s(x')`; the relative error is reported for every scan.

use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use serde::{Deserialize, Serialize};

use crate::model::heads::l2norm;
use crate::model::method::AdClip;

/// The reference input IG integrates from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Baseline {
    /// Every token's embedding set to zero.
    #[default]
    Zero,
    /// Every token but [CLS] and [SEP] replaced by [PAD] (embedded with its position).
    Pad,
    /// Every token but [CLS] and [SEP] replaced by [MASK].
    Mask,
}

/// How IG is computed.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct IgSettings {
    /// Points on the path from the baseline to the input.
    pub steps: usize,
    /// Points per forward/backward pass (memory grows with it).
    pub chunk: usize,
    pub baseline: Baseline,
}

impl Default for IgSettings {
    fn default() -> Self {
        IgSettings { steps: 50, chunk: 10, baseline: Baseline::Zero }
    }
}

/// One report's attribution.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenAttribution {
    /// Per token, in the report's order ([CLS] and [SEP] included).
    pub attributions: Vec<f64>,
    /// `s(x)`: the matching score (scaled cosine) of the image and its report.
    pub score: f64,
    /// `s(x')`: the same at the baseline.
    pub baseline_score: f64,
}

impl TokenAttribution {
    /// `|Σ IG − (s(x) − s(x'))| / |s(x) − s(x')|` (the absolute gap when the difference is ~0).
    pub fn completeness_error(&self) -> f64 {
        let delta = self.score - self.baseline_score;
        let gap = (self.attributions.iter().sum::<f64>() - delta).abs();
        if delta.abs() > 1e-9 {
            gap / delta.abs()
        } else {
            gap
        }
    }
}

/// The matching score of one image against each of a batch of embedded texts, each pair on its
/// own (the cross-attention sees one image and one text, as at inference).
///
/// # Shapes
/// - v: `[1, embed]` (L2-normalised image embedding), embedded: `[n, tokens, hidden]`,
///   mask: `[n, tokens]` → `[n]`
pub fn text_scores<B: Backend>(
    model: &AdClip<B>,
    v: Tensor<B, 2>,
    embedded: Tensor<B, 3>,
    mask: Tensor<B, 2>,
) -> Tensor<B, 1> {
    let w = l2norm(model.f_t.forward(model.text_features_from_embeddings(embedded, mask)));
    let [n, d] = w.dims();
    model.logits_paired(v.expand([n, d]), w)
}

/// The baseline's token ids for `ids` ([CLS] first and [SEP] last kept), or `None` for the zero
/// baseline.
pub fn baseline_ids(ids: &[i64], baseline: Baseline, pad: i64, mask: i64) -> Option<Vec<i64>> {
    let fill = match baseline {
        Baseline::Zero => return None,
        Baseline::Pad => pad,
        Baseline::Mask => mask,
    };
    let n = ids.len();
    Some(ids.iter().enumerate().map(|(i, &id)| if i == 0 || i + 1 == n { id } else { fill }).collect())
}

/// IG of the score of `v` against the text `ids` (one report, unpadded; `mask` is its attention
/// mask, 1 = attended) from `baseline` (`None`: zero embeddings).
pub fn integrated_gradients<B: AutodiffBackend>(
    model: &AdClip<B>,
    v: Tensor<B, 2>,
    ids: &[i64],
    mask: &[f32],
    baseline: Option<&[i64]>,
    cfg: &IgSettings,
    device: &B::Device,
) -> TokenAttribution {
    let t = ids.len();
    let to_ids = |ids: &[i64]| Tensor::<B, 2, Int>::from_data(TensorData::new(ids.to_vec(), [1, t]), device);
    let bert = &model.backbone.bert;
    let x = bert.embed(to_ids(ids)).detach();
    let [_, _, h] = x.dims();
    let x0 = match baseline {
        Some(b) => bert.embed(to_ids(b)).detach(),
        None => x.zeros_like(),
    };
    let v = v.detach();
    let mask = Tensor::<B, 2>::from_data(TensorData::new(mask.to_vec(), [1, t]), device);
    let diff = x.clone() - x0.clone();
    let (alphas, weights) = gauss_legendre(cfg.steps.max(1));
    let mut grad_sum: Option<Tensor<B::InnerBackend, 2>> = None;
    let chunk = cfg.chunk.max(1);
    for (alpha, weight) in alphas.chunks(chunk).zip(weights.chunks(chunk)) {
        let c = alpha.len();
        let column = |v: &[f64]| {
            let v: Vec<f32> = v.iter().map(|&a| a as f32).collect();
            Tensor::<B, 1>::from_data(TensorData::new(v, [c]), device).reshape([c, 1, 1])
        };
        let a = crate::model::precision::to_dtype(column(alpha), x.dtype());
        let points = (x0.clone().expand([c, t, h]) + diff.clone().expand([c, t, h]) * a).detach().require_grad();
        // Each point's score weighted by its quadrature weight: one backward gives Σ w_k ∇s(α_k).
        let scores = text_scores(model, v.clone(), points.clone(), mask.clone().expand([c, t]));
        let grads = (scores * column(weight).reshape([c])).sum().backward();
        let g = points.grad(&grads).expect("the path points are tracked");
        let g = crate::model::precision::to_dtype(g, burn::tensor::DType::F32).sum_dim(0).reshape([t, h]);
        grad_sum = Some(match grad_sum {
            Some(s) => s + g,
            None => g,
        });
    }
    let mean_grad = grad_sum.expect("at least one step");
    let diff32 = crate::model::precision::to_dtype(diff.inner(), burn::tensor::DType::F32).reshape([t, h]);
    let attributions: Vec<f64> =
        (diff32 * mean_grad).sum_dim(1).into_data().convert::<f64>().to_vec().unwrap_or_default();
    let score_of = |e: Tensor<B, 3>| -> f64 {
        text_scores(model, v.clone(), e, mask.clone()).into_data().convert::<f64>().to_vec::<f64>().unwrap_or_default()
            [0]
    };
    TokenAttribution { attributions, score: score_of(x), baseline_score: score_of(x0) }
}

/// Gauss–Legendre nodes and weights on [0, 1] (weights sum to 1), nodes ascending: the roots
/// of the Legendre polynomial P_n by Newton's method from Chebyshev guesses.
pub fn gauss_legendre(n: usize) -> (Vec<f64>, Vec<f64>) {
    let (mut nodes, mut weights) = (Vec::with_capacity(n), Vec::with_capacity(n));
    for i in 0..n {
        let mut x = (std::f64::consts::PI * (i as f64 + 0.75) / (n as f64 + 0.5)).cos();
        let mut dp = 1.0;
        for _ in 0..100 {
            // P_n(x) and P_n'(x) by the three-term recurrence.
            let (mut p0, mut p1) = (1.0, x);
            for k in 2..=n {
                let p2 = ((2 * k - 1) as f64 * x * p1 - (k - 1) as f64 * p0) / k as f64;
                p0 = p1;
                p1 = p2;
            }
            let p = if n == 0 { 1.0 } else { p1 };
            let p_prev = if n <= 1 { 1.0 } else { p0 };
            dp = n as f64 * (x * p - p_prev) / (x * x - 1.0);
            let step = p / dp;
            x -= step;
            if step.abs() < 1e-15 {
                break;
            }
        }
        // On [-1, 1] the weight is 2 / ((1 − x²) P_n'(x)²); mapped to [0, 1] it halves.
        nodes.push((1.0 - x) / 2.0);
        weights.push(1.0 / ((1.0 - x * x) * dp * dp));
    }
    (nodes, weights)
}

/// WordPiece tokens merged into words: each word's text and the positions of its tokens
/// (a `##` piece joins the word before it).
pub fn words(tokens: &[String]) -> Vec<(String, Vec<usize>)> {
    let mut out: Vec<(String, Vec<usize>)> = Vec::new();
    for (i, tok) in tokens.iter().enumerate() {
        match (tok.strip_prefix("##"), out.last_mut()) {
            (Some(rest), Some((word, idx))) => {
                word.push_str(rest);
                idx.push(i);
            }
            _ => out.push((tok.clone(), vec![i])),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::Cpu;
    use crate::model::clip::ClipBackbone;
    use crate::model::method::MethodConfig;
    use burn::backend::Autodiff;

    type AD = Autodiff<Cpu>;

    /// The backend's generator is global: tests that seed it build their models one at a time.
    static SEEDED: std::sync::Mutex<()> = std::sync::Mutex::new(());

    /// A tiny random model with every part of the method on, and an image embedding.
    fn tiny() -> (AdClip<AD>, Tensor<AD, 2>) {
        let _one_at_a_time = SEEDED.lock().unwrap_or_else(|e| e.into_inner());
        let device = Default::default();
        <AD as Backend>::seed(&device, 3);
        let backbone = ClipBackbone::<AD>::tiny(&device);
        let cfg =
            MethodConfig { embed_dim: 64, mmse_hidden: 32, text_prompts: 4, visual_prompts: 3, ..Default::default() };
        let mut model = AdClip::new(backbone, &cfg, &device);
        // A non-zero cross-attention output, so the attention is on the path too.
        let mha = model.cross_attention.text_to_image.as_mut().unwrap();
        mha.out.weight = burn::module::Param::from_tensor(Tensor::random(
            [64, 64],
            burn::tensor::Distribution::Normal(0.0, 0.1),
            &device,
        ));
        let x = Tensor::<AD, 5>::random([1, 1, 16, 32, 32], burn::tensor::Distribution::Normal(0.0, 1.0), &device);
        let v = model.encode_image(x).v.detach();
        (model, v)
    }

    #[test]
    fn completeness_holds_within_one_percent_with_enough_steps() {
        let (model, v) = tiny();
        let ids = [1i64, 7, 12, 30, 4, 9, 2];
        let mask = [1.0f32; 7];
        for (baseline, ids0) in [(Baseline::Zero, None), (Baseline::Pad, baseline_ids(&ids, Baseline::Pad, 0, 3))] {
            let cfg = IgSettings { steps: 64, chunk: 16, baseline };
            let a = integrated_gradients(&model, v.clone(), &ids, &mask, ids0.as_deref(), &cfg, &Default::default());
            assert!((a.score - a.baseline_score).abs() > 1e-5, "a path with a change to explain");
            let err = a.completeness_error();
            assert!(err < 0.01, "{baseline:?}: completeness error {err}");
        }
    }

    #[test]
    fn the_completeness_error_is_relative_to_the_score_change() {
        let a = TokenAttribution { attributions: vec![0.5, 0.3], score: 2.0, baseline_score: 1.0 };
        assert!((a.completeness_error() - 0.2).abs() < 1e-12);
        let flat = TokenAttribution { attributions: vec![0.01, -0.02], score: 1.0, baseline_score: 1.0 };
        assert!((flat.completeness_error() - 0.01).abs() < 1e-12, "the absolute gap when nothing changes");
    }

    #[test]
    fn a_token_the_score_does_not_see_gets_no_attribution() {
        let (model, v) = tiny();
        let ids = [1i64, 7, 12, 30, 4, 9, 2];
        // Position 3 is masked out of the attention: the score cannot depend on it.
        let mask = [1.0, 1.0, 1.0, 0.0, 1.0, 1.0, 1.0];
        let a = integrated_gradients(&model, v, &ids, &mask, None, &IgSettings::default(), &Default::default());
        let largest = a.attributions.iter().fold(0f64, |m, x| m.max(x.abs()));
        assert!(largest > 1e-4, "{:?}", a.attributions);
        assert!(a.attributions[3].abs() < 1e-6 * largest.max(1.0), "{:?}", a.attributions);
    }

    #[test]
    fn gauss_legendre_integrates_polynomials_exactly() {
        for n in [1, 2, 5, 50] {
            let (x, w) = gauss_legendre(n);
            assert!((w.iter().sum::<f64>() - 1.0).abs() < 1e-12, "{n}");
            assert!(x.windows(2).all(|p| p[0] < p[1]) && x[0] > 0.0 && x[n - 1] < 1.0);
            // ∫₀¹ t^k dt = 1/(k+1), exact up to degree 2n − 1.
            let k = 2 * n - 1;
            let q: f64 = x.iter().zip(&w).map(|(t, w)| w * t.powi(k as i32)).sum();
            assert!((q - 1.0 / (k + 1) as f64).abs() < 1e-10, "{n}: {q}");
        }
    }

    #[test]
    fn word_pieces_merge_into_words() {
        let toks: Vec<String> =
            ["[CLS]", "hip", "##po", "##camp", "##al", "volume", ":", "73", "##23", "[SEP]"].map(String::from).to_vec();
        let w = words(&toks);
        let names: Vec<&str> = w.iter().map(|(s, _)| s.as_str()).collect();
        assert_eq!(names, ["[CLS]", "hippocampal", "volume", ":", "7323", "[SEP]"]);
        assert_eq!(w[1].1, vec![1, 2, 3, 4]);
    }

    #[test]
    fn baselines_keep_cls_and_sep() {
        assert_eq!(baseline_ids(&[101, 5, 6, 102], Baseline::Pad, 0, 103), Some(vec![101, 0, 0, 102]));
        assert_eq!(baseline_ids(&[101, 5, 102], Baseline::Mask, 0, 103), Some(vec![101, 103, 102]));
        assert_eq!(baseline_ids(&[101, 5, 102], Baseline::Zero, 0, 103), None);
    }
}
