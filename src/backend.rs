//! Where extraction runs. Everything that consumes features (CLI, evaluation, benchmarks, COLMAP export) works
//! through `Extract`, so the GPU engine and a CPU path are interchangeable.

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

    /// What runs the extraction, for reports ("GPU: <adapter>" or "CPU: <threads>").
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

    fn describe(&self) -> String {
        format!("GPU: {}", self.gpu().adapter)
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

/// Opens an extractor on the requested device.
pub fn open(device: Device, gpu_options: &GpuOptions, weights: &Weights, config: Config) -> Result<Box<dyn Extract>> {
    match device {
        // The CPU path (its own issue) will take `Cpu`, and `Auto` when the only adapter is a software one.
        Device::Cpu => Err(Error::Invalid("the CPU path is not built yet; use --device gpu".into())),
        Device::Auto | Device::Gpu => {
            let gpu = Gpu::new(gpu_options)?;
            Ok(Box::new(Extractor::new(&gpu, weights, config)?))
        }
    }
}
