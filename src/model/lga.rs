//! LGA, the language-guided adapter (Hu et al., MICCAI 2024), as the paper's table-2 baseline:
//! a text stream runs beside the frozen ViT and trades information with it through interaction
//! blocks, in the style of ViT-Adapter.
//!
//! Before each chosen block (every `every`-th, from the first) an interaction runs:
//! - the **extractor** updates the text stream from the image tokens:
//!   `t ← t + Attn(q = LN(t), kv = LN(x))`, then `t ← t + FFN(LN(t))`;
//! - the **injector** updates the image tokens from the text stream:
//!   `x ← x + γ ⊙ Attn(q = LN(x), kv = LN(t))`, then `x ← x + FFN(LN(x))`, with `γ` per
//!   channel, zero at the start.
//!
//! After the last block a final injector runs (`final_injector`). `Attn` projects q, k and v to
//! `dim / reduction` (with `heads` heads) and back to `dim`. `FFN` is `dim → dim·ffn_ratio → dim`
//! with ReLU. LGA's released configuration uses 1 head, reduction 8, ratio 0.25, interactions
//! before blocks 0, 4 and 8 of 12, and a final injector: 4.18M parameters at width 768.
//!
//! The text stream starts from text features. LGA feeds the report of the image being segmented.
//! adfit never shows a report at test time, so the guide is the text every scan is scored
//! against: the class prompts ("A photo of NC." ...), encoded by the frozen text tower (pooled
//! as the run pools, no text prompts), one token each. When the text tower's width differs from
//! the ViT's, a trainable `Linear` maps them across (LGA's towers are both 768 wide).

use burn::module::{Initializer, Param};
use burn::nn::{LayerNorm, LayerNormConfig, Linear, LinearConfig};
use burn::prelude::*;
use burn::tensor::activation::relu;

use super::attention::{attention, merge_heads, split_heads};
use super::weights::{put, put_layer_norm, put_linear, RawTensor, WeightStore};

/// Sizes of the adapter.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LgaShape {
    pub dim: usize,
    pub text_dim: usize,
    pub layers: usize,
    pub every: usize,
    pub heads: usize,
    pub reduction: usize,
    pub ffn_ratio: f64,
    pub final_injector: bool,
}

impl LgaShape {
    /// The sizes `a` asks for, on a backbone of ViT width `dim`, text width `text_dim`.
    pub fn of(a: &super::adapt::AdaptConfig, dim: usize, text_dim: usize, layers: usize) -> Self {
        LgaShape {
            dim,
            text_dim,
            layers,
            every: a.lga_every,
            heads: a.lga_heads,
            reduction: a.lga_reduction,
            ffn_ratio: a.lga_ffn_ratio,
            final_injector: a.lga_final_injector,
        }
    }

    fn internal(&self) -> usize {
        (self.dim / self.reduction.max(1)).max(self.heads)
    }

    fn ffn(&self) -> usize {
        ((self.dim as f64 * self.ffn_ratio) as usize).max(1)
    }

    /// The blocks an interaction runs before.
    pub fn interaction_layers(&self) -> Vec<usize> {
        (0..self.layers).step_by(self.every.max(1)).collect()
    }
}

fn linear<B: Backend>(i: usize, o: usize, device: &B::Device) -> Linear<B> {
    LinearConfig::new(i, o).with_initializer(Initializer::Normal { mean: 0.0, std: 0.02 }).init(device)
}

/// Attention that projects to a smaller internal width.
#[derive(Module, Debug)]
pub struct DownAttention<B: Backend> {
    pub q: Linear<B>,
    pub k: Linear<B>,
    pub v: Linear<B>,
    pub out: Linear<B>,
    #[module(skip)]
    pub heads: usize,
}

impl<B: Backend> DownAttention<B> {
    fn init(s: &LgaShape, device: &B::Device) -> Self {
        let (d, i) = (s.dim, s.internal());
        DownAttention {
            q: linear(d, i, device),
            k: linear(d, i, device),
            v: linear(d, i, device),
            out: linear(i, d, device),
            heads: s.heads,
        }
    }

    /// - q: `[batch, n, dim]`, kv: `[batch, m, dim]` → `[batch, n, dim]`
    fn forward(&self, q: Tensor<B, 3>, kv: Tensor<B, 3>) -> Tensor<B, 3> {
        let h = self.heads;
        let internal = self.q.weight.dims()[1];
        let scale = ((internal / h) as f64).powf(-0.5);
        let q = split_heads(self.q.forward(q), h);
        let k = split_heads(self.k.forward(kv.clone()), h);
        let v = split_heads(self.v.forward(kv), h);
        self.out.forward(merge_heads(attention(q, k, v, scale, None)))
    }
}

#[derive(Module, Debug)]
pub struct Ffn<B: Backend> {
    pub fc1: Linear<B>,
    pub fc2: Linear<B>,
}

impl<B: Backend> Ffn<B> {
    fn init(s: &LgaShape, device: &B::Device) -> Self {
        Ffn { fc1: linear(s.dim, s.ffn(), device), fc2: linear(s.ffn(), s.dim, device) }
    }

    fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        self.fc2.forward(relu(self.fc1.forward(x)))
    }
}

/// One direction of an interaction: `target ← target + gate · Attn(LN(target), LN(source))`,
/// then `target ← target + FFN(LN(target))`. The injector is gated (`gamma`), the extractor not.
#[derive(Module, Debug)]
pub struct Exchange<B: Backend> {
    pub target_norm: LayerNorm<B>,
    pub source_norm: LayerNorm<B>,
    pub attn: DownAttention<B>,
    pub ffn_norm: LayerNorm<B>,
    pub ffn: Ffn<B>,
    /// `[dim]`, zero at the start (injector only).
    pub gamma: Option<Param<Tensor<B, 1>>>,
}

impl<B: Backend> Exchange<B> {
    fn init(s: &LgaShape, gated: bool, device: &B::Device) -> Self {
        let ln = || LayerNormConfig::new(s.dim).init(device);
        Exchange {
            target_norm: ln(),
            source_norm: ln(),
            attn: DownAttention::init(s, device),
            ffn_norm: ln(),
            ffn: Ffn::init(s, device),
            gamma: gated.then(|| Initializer::Zeros.init([s.dim], device)),
        }
    }

    fn forward(&self, target: Tensor<B, 3>, source: Tensor<B, 3>) -> Tensor<B, 3> {
        let a = self.attn.forward(self.target_norm.forward(target.clone()), self.source_norm.forward(source));
        let a = match &self.gamma {
            Some(g) => a * g.val().unsqueeze::<3>(),
            None => a,
        };
        let target = target + a;
        target.clone() + self.ffn.forward(self.ffn_norm.forward(target))
    }

    fn export(&self, name: &str, out: &mut Vec<(String, RawTensor)>) {
        put_layer_norm(out, &format!("{name}.target_norm"), &self.target_norm);
        put_layer_norm(out, &format!("{name}.source_norm"), &self.source_norm);
        put_layer_norm(out, &format!("{name}.ffn_norm"), &self.ffn_norm);
        for (n, l) in [
            ("attn.q", &self.attn.q),
            ("attn.k", &self.attn.k),
            ("attn.v", &self.attn.v),
            ("attn.out", &self.attn.out),
            ("ffn.fc1", &self.ffn.fc1),
            ("ffn.fc2", &self.ffn.fc2),
        ] {
            put_linear(out, &format!("{name}.{n}"), l);
        }
        if let Some(g) = &self.gamma {
            put(out, format!("{name}.gamma"), g.val().into_data());
        }
    }

    fn load(mut self, store: &WeightStore<B>, name: &str) -> Self {
        self.target_norm = store.fill_layer_norm(self.target_norm, &format!("{name}.target_norm"));
        self.source_norm = store.fill_layer_norm(self.source_norm, &format!("{name}.source_norm"));
        self.ffn_norm = store.fill_layer_norm(self.ffn_norm, &format!("{name}.ffn_norm"));
        for (n, l) in [
            ("attn.q", &mut self.attn.q),
            ("attn.k", &mut self.attn.k),
            ("attn.v", &mut self.attn.v),
            ("attn.out", &mut self.attn.out),
            ("ffn.fc1", &mut self.ffn.fc1),
            ("ffn.fc2", &mut self.ffn.fc2),
        ] {
            let [i, o] = l.weight.dims();
            *l = store.linear(&format!("{name}.{n}"), i, o, true);
        }
        if let Some(g) = &mut self.gamma {
            *g = store.param(&format!("{name}.gamma"), g.dims());
        }
        self
    }
}

/// One interaction: the extractor, then the injector.
#[derive(Module, Debug)]
pub struct Interaction<B: Backend> {
    pub extractor: Exchange<B>,
    pub injector: Exchange<B>,
}

#[derive(Module, Debug)]
pub struct Lga<B: Backend> {
    /// Text width → ViT width, when they differ.
    pub text_in: Option<Linear<B>>,
    pub interactions: Vec<Interaction<B>>,
    pub final_injector: Option<Exchange<B>>,
    /// The block each interaction runs before.
    #[module(skip)]
    pub at: Vec<usize>,
}

impl<B: Backend> Lga<B> {
    pub fn init(s: &LgaShape, device: &B::Device) -> Self {
        let at = s.interaction_layers();
        Lga {
            text_in: (s.text_dim != s.dim).then(|| linear(s.text_dim, s.dim, device)),
            interactions: at
                .iter()
                .map(|_| Interaction {
                    extractor: Exchange::init(s, false, device),
                    injector: Exchange::init(s, true, device),
                })
                .collect(),
            final_injector: s.final_injector.then(|| Exchange::init(s, true, device)),
            at,
        }
    }

    /// The text stream for a batch: the guide texts' features `[texts, text_dim]` → `[batch,
    /// texts, dim]`.
    pub fn text_stream(&self, guide: Tensor<B, 2>, batch: usize) -> Tensor<B, 3> {
        let g = match &self.text_in {
            Some(l) => l.forward(guide),
            None => guide,
        };
        let [n, d] = g.dims();
        g.reshape([1, n, d]).expand([batch, n, d])
    }

    /// The interaction before block `layer`, if any: `(x, t)` → updated `(x, t)`.
    pub fn before_block(&self, layer: usize, x: Tensor<B, 3>, t: Tensor<B, 3>) -> (Tensor<B, 3>, Tensor<B, 3>) {
        match self.at.iter().position(|&l| l == layer) {
            Some(i) => {
                let it = &self.interactions[i];
                let t = it.extractor.forward(t, x.clone());
                (it.injector.forward(x, t.clone()), t)
            }
            None => (x, t),
        }
    }

    /// After the last block: the final injector, if any.
    pub fn after_blocks(&self, x: Tensor<B, 3>, t: Tensor<B, 3>) -> Tensor<B, 3> {
        match &self.final_injector {
            Some(inj) => inj.forward(x, t),
            None => x,
        }
    }

    /// Every tensor under `{prefix}lga.*`, in PyTorch layouts.
    pub fn export(&self, prefix: &str, out: &mut Vec<(String, RawTensor)>) {
        if let Some(l) = &self.text_in {
            put_linear(out, &format!("{prefix}lga.text_in"), l);
        }
        for (i, it) in self.interactions.iter().enumerate() {
            it.extractor.export(&format!("{prefix}lga.{i}.extractor"), out);
            it.injector.export(&format!("{prefix}lga.{i}.injector"), out);
        }
        if let Some(inj) = &self.final_injector {
            inj.export(&format!("{prefix}lga.final_injector"), out);
        }
    }

    /// The tensors [`Lga::export`] writes, read back.
    pub fn load(mut self, store: &WeightStore<B>, prefix: &str) -> Self {
        if let Some(l) = &mut self.text_in {
            let [i, o] = l.weight.dims();
            *l = store.linear(&format!("{prefix}lga.text_in"), i, o, true);
        }
        self.interactions = self
            .interactions
            .into_iter()
            .enumerate()
            .map(|(i, it)| Interaction {
                extractor: it.extractor.load(store, &format!("{prefix}lga.{i}.extractor")),
                injector: it.injector.load(store, &format!("{prefix}lga.{i}.injector")),
            })
            .collect();
        self.final_injector = self.final_injector.map(|inj| inj.load(store, &format!("{prefix}lga.final_injector")));
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::Cpu;

    fn shape(dim: usize, layers: usize) -> LgaShape {
        LgaShape { dim, text_dim: dim, layers, every: 4, heads: 1, reduction: 8, ffn_ratio: 0.25, final_injector: true }
    }

    #[test]
    fn the_released_configuration_has_4_18m_parameters_at_width_768() {
        let device = Default::default();
        let lga = Lga::<Cpu>::init(&shape(768, 12), &device);
        assert_eq!(lga.at, vec![0, 4, 8]);
        assert_eq!(lga.num_params(), 4_178_208);
        // The paper's +85.2M: an interaction before every block, no reduction, ratio 1, no final
        // injector.
        let big = LgaShape { every: 1, reduction: 1, ffn_ratio: 1.0, final_injector: false, ..shape(768, 12) };
        assert_eq!(Lga::<Cpu>::init(&big, &device).num_params(), 85_165_056);
    }

    #[test]
    fn exported_tensors_load_back_to_the_same_outputs() {
        let device = Default::default();
        let s = LgaShape { text_dim: 12, ..shape(16, 2) };
        let lga = Lga::<Cpu>::init(&s, &device);
        let mut tensors = Vec::new();
        lga.export("adfit.", &mut tensors);
        assert!(tensors.iter().any(|(n, _)| n == "adfit.lga.0.injector.gamma"));
        assert!(tensors.iter().any(|(n, _)| n == "adfit.lga.text_in.weight"));
        let store = WeightStore::<Cpu>::new(std::path::Path::new("lga"), tensors.into_iter().collect(), &[], &device);
        let fresh = Lga::<Cpu>::init(&s, &device).load(&store, "adfit.");
        store.finish().unwrap();
        let x = Tensor::<Cpu, 3>::random([2, 5, 16], burn::tensor::Distribution::Normal(0.0, 1.0), &device);
        let guide = Tensor::<Cpu, 2>::random([3, 12], burn::tensor::Distribution::Normal(0.0, 1.0), &device);
        let run = |m: &Lga<Cpu>| {
            let t = m.text_stream(guide.clone(), 2);
            let (x, t) = m.before_block(0, x.clone(), t);
            assert_eq!(t.dims(), [2, 3, 16]);
            m.after_blocks(x, t)
        };
        let d = (run(&lga) - run(&fresh)).abs().max().into_scalar();
        assert_eq!(d, 0.0);
    }
}
