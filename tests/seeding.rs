//! Seeded initialisation, alone in its own process: the test seeds the backend's shared random
//! generator and compares two sequences of draws, which a test drawing in parallel (any other
//! test of the library) would interleave.

use adfit::backend::Cpu;
use adfit::model::clip::ClipBackbone;
use adfit::model::method::{AdClip, Materialise, MethodConfig};
use burn::backend::Autodiff;
use burn::module::Module;
use burn::prelude::*;

type AD = Autodiff<Cpu>;

/// On the CPU, the seeded start is exactly what a model built in place draws after the same
/// seed (so results from before device-independent seeding reproduce), and it does not depend
/// on anything drawn before the seed.
#[test]
fn seeded_initialisation_matches_building_in_place() {
    let device = Default::default();
    let backbone = ClipBackbone::<AD>::tiny(&device);
    backbone.visit(&mut Materialise); // as a loaded backbone is
    let cfg = MethodConfig { embed_dim: 64, mmse_hidden: 32, ..Default::default() };
    <AD as Backend>::seed(&device, 11);
    let in_place = AdClip::new(backbone.clone(), &cfg, &device);
    in_place.visit(&mut Materialise);
    let want = in_place.trainable_tensors("");
    let _ = Tensor::<AD, 1>::random([5], burn::tensor::Distribution::Default, &device); // unrelated draws
    let got = AdClip::new_seeded::<Cpu>(backbone, &cfg, 11, &device).trainable_tensors("");
    assert_eq!(want.len(), got.len());
    for ((n, a), (m, b)) in want.iter().zip(&got) {
        assert_eq!((n, &a.shape), (m, &b.shape));
        assert!(a.data == b.data, "{n} differs");
    }
}
