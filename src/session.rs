//! Where strek runs, chosen once: a `Session` opened on a device hands out the extractor, the matcher and the
//! memory figures, all on that device, so features never travel between two GPUs.

use crate::cpu::{self, CpuExtractor};
use crate::error::{Error, Result};
use crate::extract::{Config, Extract};
use crate::gpu::{Gpu, GpuOptions};
use crate::gpu_extractor::GpuExtractor;
use crate::matcher::Matcher;
use crate::ops::matching::GpuMatcher;
use crate::ops::Precision;
use crate::weights::Weights;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Device {
    /// A hardware GPU when there is one, else the CPU path.
    #[default]
    Auto,
    Gpu,
    Cpu,
}

impl std::str::FromStr for Device {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "auto" => Ok(Device::Auto),
            "gpu" => Ok(Device::Gpu),
            "cpu" => Ok(Device::Cpu),
            other => Err(Error::Invalid(format!("unknown device {other:?}: use auto, gpu or cpu"))),
        }
    }
}

/// What `Device::Auto` runs on, and why (for `strek info` and reports): a hardware adapter if there is one, else the
/// CPU, which beats a software adapter (lavapipe, llvmpipe) by far. An explicit adapter name or
/// `--prefer-software` asks for the GPU path.
pub fn resolve_auto(gpu_options: &GpuOptions) -> Result<(Device, String)> {
    if gpu_options.adapter.is_some() || std::env::var_os("STREK_ADAPTER").is_some() {
        return Ok((Device::Gpu, "an adapter was named".into()));
    }
    if gpu_options.prefer_software {
        return Ok((Device::Gpu, "a software adapter was asked for".into()));
    }
    let adapters = Gpu::adapters(gpu_options)?;
    Ok(match adapters.iter().find(|a| !a.is_software) {
        Some(a) => (Device::Gpu, format!("hardware adapter {a}")),
        None if adapters.is_empty() => (Device::Cpu, "no GPU adapter".into()),
        None => (Device::Cpu, "only software adapters, slower than the CPU path".into()),
    })
}

/// One device (a GPU, or the CPU path) and everything that runs on it.
#[derive(Clone)]
pub struct Session {
    gpu: Option<Gpu>,
    /// How a GPU is chosen, for a CPU session's GPU matcher.
    options: GpuOptions,
    /// The CPU path's memory budget for extractors whose `Config` sets none.
    max_memory: Option<u64>,
    /// GPU storage precision for extractors whose `Config` asks for f32 (the default).
    precision: Precision,
}

impl Session {
    /// Opens the device: `Auto` resolves as `resolve_auto` says; `Gpu` takes the adapter `options` pick.
    pub fn open(device: Device, options: &GpuOptions) -> Result<Self> {
        let device = match device {
            Device::Auto => resolve_auto(options)?.0,
            other => other,
        };
        let gpu = match device {
            Device::Cpu => None,
            Device::Auto | Device::Gpu => Some(Gpu::new(options)?),
        };
        Ok(Session { gpu, options: options.clone(), max_memory: None, precision: Precision::F32 })
    }

    pub fn cpu() -> Self {
        Session { gpu: None, options: GpuOptions::default(), max_memory: None, precision: Precision::F32 }
    }

    /// A session on a GPU already open (one the host application owns: `Gpu::from_device`).
    pub fn on_gpu(gpu: Gpu) -> Self {
        Session { gpu: Some(gpu), options: GpuOptions::default(), max_memory: None, precision: Precision::F32 }
    }

    /// `Device::Gpu` or `Device::Cpu`: what the session runs on.
    pub fn device(&self) -> Device {
        if self.gpu.is_some() {
            Device::Gpu
        } else {
            Device::Cpu
        }
    }

    pub fn gpu(&self) -> Option<&Gpu> {
        self.gpu.as_ref()
    }

    /// Gives the CPU path's extractors this memory budget (bytes) unless their `Config` sets one.
    pub fn with_max_memory(mut self, bytes: Option<u64>) -> Self {
        self.max_memory = bytes;
        self
    }

    /// Gives the GPU extractors f16 storage (`Config::precision`); ignored by the CPU path.
    pub fn with_precision(mut self, precision: Precision) -> Self {
        self.precision = precision;
        self
    }

    /// An extractor with these weights on the session's device.
    pub fn extractor(&self, weights: &Weights, mut config: Config) -> Result<Box<dyn Extract + Send>> {
        config.max_memory = config.max_memory.or(self.max_memory);
        if config.precision == Precision::F32 {
            config.precision = self.precision;
        }
        Ok(match &self.gpu {
            Some(gpu) => Box::new(GpuExtractor::new(gpu, weights, config)?),
            None => Box::new(CpuExtractor::new(weights, config)?),
        })
    }

    /// A matcher: `Auto` matches where the session extracts, `Cpu` on the CPU, `Gpu` on the session's GPU (a
    /// CPU session opens one for matching only, as its options say: still the one GPU device of the session).
    pub fn matcher(&self, choice: Device) -> Result<Matcher> {
        match (choice, &self.gpu) {
            (Device::Cpu, _) | (Device::Auto, None) => Ok(Matcher::Cpu),
            (_, Some(gpu)) => Ok(Matcher::Gpu(GpuMatcher::new(gpu))),
            (Device::Gpu, None) => Ok(Matcher::Gpu(GpuMatcher::new(&Gpu::new(&self.options)?))),
        }
    }

    /// The GPU storage precision its extractors get by default.
    pub fn precision(&self) -> Precision {
        self.precision
    }

    /// "GPU: <adapter>" (with ", f16 storage" where asked) or "CPU: <threads>, <kernel>", for reports.
    pub fn describe(&self) -> String {
        match &self.gpu {
            Some(gpu) => format!("GPU: {}{}", gpu.adapter, self.precision.note()),
            None => cpu::describe(cpu::conv::Kernel::best()),
        }
    }

    /// Whether the session's GPU is a software adapter, whose times are the CPU's.
    pub fn is_software(&self) -> bool {
        self.gpu.as_ref().is_some_and(|g| g.adapter.is_software)
    }

    /// Bytes the device has allocated now, where it can tell (GPU allocator reports; the CPU path cannot).
    pub fn device_bytes(&self) -> Option<u64> {
        self.gpu.as_ref().and_then(|g| g.device.generate_allocator_report()).map(|r| r.total_allocated_bytes)
    }

    /// Waits until the device has finished all work (before a measurement); a no-op on the CPU.
    pub fn wait_idle(&self) -> Result<()> {
        self.gpu.as_ref().map_or(Ok(()), |g| g.wait(None))
    }
}
