//! Where extraction runs. Everything that consumes features (CLI, evaluation, benchmarks, COLMAP export) works
//! through `Extract`, so the GPU engine and a CPU path are interchangeable.

use crate::cpu::CpuExtractor;
use crate::error::{Error, Result};
use crate::extractor::{Config, Extractor};
use crate::features::Features;
use crate::gpu::{Gpu, GpuOptions};
use crate::image_io::Image;
use crate::weights::Weights;

/// Something that turns images into features.
pub trait Extract {
    /// Features of every image, in order; images smaller than the detector's receptive field give none.
    fn extract_batch(&mut self, images: &[Image]) -> Result<Vec<Features>>;

    fn extract(&mut self, image: &Image) -> Result<Features> {
        Ok(self.extract_batch(std::slice::from_ref(image))?.remove(0))
    }

    /// The size an image of `size` is extracted at (a GPU shrinks images over its buffer limits).
    fn working_size(&self, size: (u32, u32)) -> Result<(u32, u32)> {
        Ok(size)
    }

    /// What runs the extraction, for reports (`GPU: <adapter>` or `CPU: <threads>`).
    fn describe(&self) -> String;

    /// Seconds spent in each stage (upload, pyramid, detector, nms_topk, descriptor, sampling, readback, ...) by the
    /// last call, where the backend can measure them; empty where it cannot.
    fn stage_times(&self) -> Vec<(&'static str, f64)> {
        Vec::new()
    }
}

impl Extract for Extractor {
    fn extract_batch(&mut self, images: &[Image]) -> Result<Vec<Features>> {
        Extractor::extract_batch(self, images)
    }

    fn working_size(&self, size: (u32, u32)) -> Result<(u32, u32)> {
        Extractor::working_size(self, size)
    }

    fn describe(&self) -> String {
        format!("GPU: {}", self.gpu().adapter)
    }

    fn stage_times(&self) -> Vec<(&'static str, f64)> {
        Extractor::stage_times(self).to_vec()
    }
}

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

/// Opens an extractor on the requested device.
pub fn open(device: Device, gpu_options: &GpuOptions, weights: &Weights, config: Config) -> Result<Box<dyn Extract>> {
    let device = match device {
        Device::Auto => resolve_auto(gpu_options)?.0,
        other => other,
    };
    match device {
        Device::Cpu => Ok(Box::new(CpuExtractor::new(weights, config)?)),
        Device::Auto | Device::Gpu => {
            let gpu = Gpu::new(gpu_options)?;
            Ok(Box::new(Extractor::new(&gpu, weights, config)?))
        }
    }
}
