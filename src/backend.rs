//! The one place that names concrete backends: which ones this binary was built with, the
//! `--device` a user asks for, and the dispatch that runs a job generic over the backend.
//!
//! - `cpu`: Burn's Flex backend (pure Rust, rayon + SIMD gemm); always built.
//! - `cuda[:N]`: Burn's CUDA backend (CubeCL, kernels compiled through NVRTC at run time);
//!   built with `--features cuda`.
//! - `wgpu[:N]`: Burn's wgpu backend (CubeCL over Vulkan/Metal/DX12); built with
//!   `--features wgpu`. On a machine without a GPU, Mesa's lavapipe ("llvmpipe") runs the same
//!   kernels on the CPU, which is how the test suite exercises the GPU code path.
//! - `auto`: the first CUDA device, else the first discrete wgpu GPU, else the CPU.
//!
//! Everything else in the library is generic over `B: Backend` (or `B: AutodiffBackend` for
//! training); a [`Job`] is the bridge, since a closure cannot be generic.

use std::fmt;
use std::str::FromStr;

use burn::backend::Autodiff;
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;

use crate::error::{Error, Result};

/// The CPU backend, for code that needs a concrete backend but no device choice (parameter
/// counting, tests).
pub type Cpu = burn::backend::Flex;

/// A device as `--device` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeviceSpec {
    #[default]
    Cpu,
    /// The N-th CUDA device.
    Cuda(usize),
    /// wgpu's default adapter (`None`), or the N-th discrete GPU.
    Wgpu(Option<usize>),
    /// The first GPU found, else the CPU.
    Auto,
}

impl FromStr for DeviceSpec {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let s = s.trim().to_ascii_lowercase();
        let (name, index) = match s.split_once(':') {
            Some((n, i)) => {
                let i = i.parse::<usize>().map_err(|_| {
                    format!("{s:?}: the device index must be a number (cpu, cuda, cuda:N, wgpu, wgpu:N or auto)")
                })?;
                (n.to_string(), Some(i))
            }
            None => (s.clone(), None),
        };
        match (name.as_str(), index) {
            ("cpu", None) => Ok(DeviceSpec::Cpu),
            ("cuda", i) => Ok(DeviceSpec::Cuda(i.unwrap_or(0))),
            ("wgpu", i) => Ok(DeviceSpec::Wgpu(i)),
            ("auto", None) => Ok(DeviceSpec::Auto),
            _ => Err(format!("{s:?} is not a device: use cpu, cuda, cuda:N, wgpu, wgpu:N or auto")),
        }
    }
}

impl fmt::Display for DeviceSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceSpec::Cpu => write!(f, "cpu"),
            DeviceSpec::Cuda(i) => write!(f, "cuda:{i}"),
            DeviceSpec::Wgpu(None) => write!(f, "wgpu"),
            DeviceSpec::Wgpu(Some(i)) => write!(f, "wgpu:{i}"),
            DeviceSpec::Auto => write!(f, "auto"),
        }
    }
}

/// Work that runs on whichever backend the user chose. Training jobs use `B` (autodiff);
/// inference jobs use `B::InnerBackend`, whose device is the same.
pub trait Job {
    type Output;
    fn run<B: AutodiffBackend>(self, device: B::Device) -> Result<Self::Output>;
}

/// The four tensors of an attention call, handed back when [`chunked_attention`] does not apply.
pub type AttentionInputs<B> = (Tensor<B, 4>, Tensor<B, 4>, Tensor<B, 4>, Option<Tensor<B, 4>>);

/// Attention through adfit's block-wise autodiff op when `B` is one of the autodiff backends
/// this binary trains with (the CPU's, plain and with balanced checkpointing, and each built
/// GPU backend's); the inputs come back otherwise (inference backends, which have Burn's fused
/// op). Model code is generic over `B: Backend`, so the concrete type is found at run time.
///
/// On the GPU backends, scores that fit in one block (`one_block`) come back too: there the
/// op's blocks are tensor ops, and recomputing so few scores costs more time than keeping them
/// costs memory. The CPU's fused kernels are faster than the decomposed form at every size.
pub fn chunked_attention<B: Backend>(
    q: Tensor<B, 4>,
    k: Tensor<B, 4>,
    v: Tensor<B, 4>,
    scale: f64,
    bias: Option<Tensor<B, 4>>,
    one_block: bool,
) -> std::result::Result<Tensor<B, 4>, AttentionInputs<B>> {
    use crate::model::chunked_attention::autodiff;
    use burn::backend::autodiff::checkpoint::strategy::{BalancedCheckpointing, NoCheckpointing};
    macro_rules! on {
        ($inner:ty, $strategy:ty) => {
            if std::any::TypeId::of::<B>() == std::any::TypeId::of::<Autodiff<$inner, $strategy>>()
                && (!one_block || std::any::TypeId::of::<$inner>() == std::any::TypeId::of::<Cpu>())
            {
                let (q, k, v, bias): AttentionInputs<Autodiff<$inner, $strategy>> =
                    same((q, k, v, bias)).expect("the same backend");
                return Ok(same(autodiff::<$inner, $strategy>(q, k, v, scale, bias)).expect("the same backend"));
            }
        };
    }
    on!(Cpu, NoCheckpointing);
    on!(Cpu, BalancedCheckpointing);
    #[cfg(feature = "cuda")]
    on!(burn::backend::cuda::Cuda, NoCheckpointing);
    #[cfg(feature = "wgpu")]
    on!(burn::backend::wgpu::Wgpu, NoCheckpointing);
    Err((q, k, v, bias))
}

/// The most scores one block of the block-wise attention's tensor-op path computes at once on
/// `B` (the inner backend): [`CUDA_BLOCK_ELEMENTS`] on CUDA, [`BLOCK_ELEMENTS`] elsewhere.
///
/// [`CUDA_BLOCK_ELEMENTS`]: crate::model::chunked_attention::CUDA_BLOCK_ELEMENTS
/// [`BLOCK_ELEMENTS`]: crate::model::chunked_attention::BLOCK_ELEMENTS
pub fn attention_block_elements<B: Backend>() -> usize {
    #[cfg(feature = "cuda")]
    if std::any::TypeId::of::<B>() == std::any::TypeId::of::<burn::backend::cuda::Cuda>() {
        return crate::model::chunked_attention::CUDA_BLOCK_ELEMENTS;
    }
    crate::model::chunked_attention::BLOCK_ELEMENTS
}

/// `a` as a `T` when `A` and `T` are the same type (how backend-specific code is reached from
/// code generic over `B`).
pub(crate) fn same<A: 'static, T: 'static>(a: A) -> Option<T> {
    let a: Box<dyn std::any::Any> = Box::new(a);
    a.downcast::<T>().ok().map(|t| *t)
}

/// The backends compiled into this binary, for `--help` and error messages.
pub fn built_with() -> Vec<&'static str> {
    let mut v = vec!["cpu"];
    if cfg!(feature = "cuda") {
        v.push("cuda");
    }
    if cfg!(feature = "wgpu") {
        v.push("wgpu");
    }
    v
}

/// Run `job` on `spec`. A device this binary was not built with, or one that cannot be opened,
/// is an [`Error::Device`] that says how to get it; nothing of the job has run then.
pub fn dispatch<J: Job>(spec: DeviceSpec, job: J) -> Result<J::Output> {
    match resolve(spec)? {
        DeviceSpec::Cpu => {
            tracing::debug!("device: cpu (flex)");
            job.run::<Autodiff<Cpu>>(Default::default())
        }
        DeviceSpec::Cuda(i) => cuda::run(i, job),
        DeviceSpec::Wgpu(i) => wgpu::run(i, job),
        DeviceSpec::Auto => unreachable!("resolve() never returns Auto"),
    }
}

/// `Auto` → the first device that opens; any other spec is returned as it is.
fn resolve(spec: DeviceSpec) -> Result<DeviceSpec> {
    if spec != DeviceSpec::Auto {
        return Ok(spec);
    }
    if cuda::available(0) {
        return Ok(DeviceSpec::Cuda(0));
    }
    if wgpu::available(Some(0)) {
        return Ok(DeviceSpec::Wgpu(Some(0)));
    }
    tracing::info!("--device auto: no GPU found (backends built: {}); using the CPU", built_with().join(", "));
    Ok(DeviceSpec::Cpu)
}

/// Open `device` with a tiny computation. Backends report a missing driver or device by
/// panicking on first use; this turns that into a message, with the panic's own text muted.
#[allow(dead_code)] // unused when no GPU backend is built
fn probe<B: Backend>(device: &B::Device) -> std::result::Result<(), String> {
    let device = device.clone();
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
        let x = Tensor::<B, 1>::ones([4], &device);
        x.sum().into_scalar().elem::<f32>()
    }));
    std::panic::set_hook(hook);
    match result {
        Ok(v) if v == 4.0 => Ok(()),
        Ok(v) => Err(format!("a test sum gave {v} instead of 4")),
        Err(e) => Err(e
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "the backend panicked while opening the device".into())),
    }
}

#[cfg(feature = "cuda")]
mod cuda {
    use super::*;
    use burn::backend::cuda::{Cuda, CudaDevice};

    pub fn available(index: usize) -> bool {
        probe::<Cuda>(&CudaDevice::new(index)).is_ok()
    }

    pub fn run<J: Job>(index: usize, job: J) -> Result<J::Output> {
        let device = CudaDevice::new(index);
        probe::<Cuda>(&device).map_err(|reason| Error::Device {
            device: format!("cuda:{index}"),
            reason: format!("cannot open it ({reason}); check `nvidia-smi` and the CUDA driver, or use --device cpu"),
        })?;
        tracing::info!("device: cuda:{index}");
        job.run::<Autodiff<Cuda>>(device)
    }
}

#[cfg(not(feature = "cuda"))]
mod cuda {
    use super::*;

    pub fn available(_: usize) -> bool {
        false
    }

    pub fn run<J: Job>(index: usize, _: J) -> Result<J::Output> {
        Err(Error::Device {
            device: format!("cuda:{index}"),
            reason: "adfit was built without CUDA: cargo build --release --features cuda".into(),
        })
    }
}

#[cfg(feature = "wgpu")]
mod wgpu {
    use super::*;
    use burn::backend::wgpu::{Wgpu, WgpuDevice};

    fn device(index: Option<usize>) -> WgpuDevice {
        match index {
            Some(i) => WgpuDevice::DiscreteGpu(i),
            None => WgpuDevice::DefaultDevice,
        }
    }

    pub fn available(index: Option<usize>) -> bool {
        probe::<Wgpu>(&device(index)).is_ok()
    }

    pub fn run<J: Job>(index: Option<usize>, job: J) -> Result<J::Output> {
        let d = device(index);
        let name = DeviceSpec::Wgpu(index).to_string();
        probe::<Wgpu>(&d).map_err(|reason| Error::Device {
            device: name.clone(),
            reason: format!(
                "cannot open it ({reason}); wgpu needs a Vulkan, Metal or DX12 driver \
                 (on Linux without a GPU: apt-get install mesa-vulkan-drivers libvulkan1), or use --device cpu"
            ),
        })?;
        tracing::info!("device: {name} ({d:?})");
        job.run::<Autodiff<Wgpu>>(d)
    }
}

#[cfg(not(feature = "wgpu"))]
mod wgpu {
    use super::*;

    pub fn available(_: Option<usize>) -> bool {
        false
    }

    pub fn run<J: Job>(index: Option<usize>, _: J) -> Result<J::Output> {
        Err(Error::Device {
            device: DeviceSpec::Wgpu(index).to_string(),
            reason: "adfit was built without wgpu: cargo build --release --features wgpu".into(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices_parse_and_print() {
        for (s, d) in [
            ("cpu", DeviceSpec::Cpu),
            ("cuda", DeviceSpec::Cuda(0)),
            ("CUDA:1", DeviceSpec::Cuda(1)),
            ("wgpu", DeviceSpec::Wgpu(None)),
            ("wgpu:0", DeviceSpec::Wgpu(Some(0))),
            ("auto", DeviceSpec::Auto),
        ] {
            assert_eq!(s.parse::<DeviceSpec>().unwrap(), d, "{s}");
            assert_eq!(d.to_string().parse::<DeviceSpec>().unwrap(), d);
        }
        for bad in ["gpu", "cuda:x", "cpu:1", ""] {
            let e = bad.parse::<DeviceSpec>().unwrap_err();
            assert!(e.contains("cpu, cuda"), "{bad}: {e}");
        }
    }

    struct Sum;
    impl Job for Sum {
        type Output = f32;
        fn run<B: AutodiffBackend>(self, device: B::Device) -> Result<f32> {
            Ok(Tensor::<B, 1>::ones([3], &device).sum().into_scalar().elem())
        }
    }

    #[test]
    fn training_attention_takes_the_block_wise_op_and_inference_keeps_the_fused_one() {
        fn applies<B: Backend>() -> bool {
            let x = || Tensor::<B, 4>::zeros([1, 1, 2, 2], &Default::default());
            chunked_attention(x(), x(), x(), 1.0, None, false).is_ok()
        }
        use burn::backend::autodiff::checkpoint::strategy::BalancedCheckpointing;
        assert!(applies::<Autodiff<Cpu>>());
        assert!(applies::<Autodiff<Cpu, BalancedCheckpointing>>());
        assert!(!applies::<Cpu>());
    }

    #[test]
    fn the_cpu_runs_a_job_and_a_missing_backend_says_how_to_get_it() {
        assert_eq!(dispatch(DeviceSpec::Cpu, Sum).unwrap(), 3.0);
        if !cfg!(feature = "cuda") {
            let e = dispatch(DeviceSpec::Cuda(0), Sum).unwrap_err().to_string();
            assert!(e.contains("cuda:0") && e.contains("--features cuda"), "{e}");
        }
        if !cfg!(feature = "wgpu") {
            let e = dispatch(DeviceSpec::Wgpu(None), Sum).unwrap_err().to_string();
            assert!(e.contains("--features wgpu"), "{e}");
        }
    }
}
