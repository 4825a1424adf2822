//! What both extraction paths share: the `Extract` trait that everything consuming features works through, the
//! options of an extractor, the names of its stages and the checks made before any work.

use crate::ops::Precision;
use crate::config::ModelConfig;
use crate::error::{Error, Result};
use crate::features::Features;
use crate::image_io::Image;
use crate::model::pyramid;

/// Stages of an extraction in execution order, as both paths name them in `stage_times` (the GPU path adds
/// "upload" before and "readback" after, on the host clock).
pub const STAGES: [&str; 6] = ["gray", "pyramid", "detector", "nms_topk", "descriptor", "sampling"];

/// Something that turns images into features: `GpuExtractor` or `CpuExtractor`, usually from `Session::extractor`.
pub trait Extract {
    /// Features of every image, in order; images too small for the model (`has_features`) give none.
    fn extract_batch(&mut self, images: &[Image]) -> Result<Vec<Features>>;

    fn extract(&mut self, image: &Image) -> Result<Features> {
        Ok(self.extract_batch(std::slice::from_ref(image))?.remove(0))
    }

    /// The size an image of `size` is extracted at (both paths shrink images over their limits).
    fn working_size(&self, size: (u32, u32)) -> Result<(u32, u32)> {
        Ok(size)
    }

    /// What runs the extraction, for reports (`GPU: <adapter>` or `CPU: <threads>`).
    fn describe(&self) -> String;

    /// Seconds spent in each stage by the last call, where the path can measure them; empty where it cannot.
    fn stage_times(&self) -> Vec<(&'static str, f64)> {
        Vec::new()
    }

    /// Compute dispatches per image in the last call (GPU); `None` where the path has none.
    fn dispatches_per_image(&self) -> Option<f64> {
        None
    }
}

/// Options of an extractor; `None` takes the value of the weights' config.
#[derive(Clone, Debug, Default)]
pub struct Config {
    pub max_keypoints: Option<usize>,
    pub oversize: Oversize,
    /// Bytes the CPU path may use for one image (images over it are shrunk to fit); `None`: the machine's
    /// available memory and address-space limit (`cpu::default_memory_budget`). The GPU path has the adapter's
    /// limits instead.
    pub max_memory: Option<u64>,
    /// GPU storage of activations and filters: f16 needs an adapter with SHADER_F16 (an error otherwise); the CPU
    /// path computes in f32 either way.
    pub precision: Precision,
}

impl Config {
    /// Keypoints kept per image: the option, else the model's default; zero is an error.
    pub fn max_keypoints(&self, model: &ModelConfig) -> Result<usize> {
        match self.max_keypoints.unwrap_or(model.inference.max_keypoints) {
            0 => Err(Error::Invalid("max_keypoints must be at least 1".into())),
            k => Ok(k),
        }
    }
}

/// What happens to an image over the device's limits: the adapter's buffer limits on the GPU
/// (`GpuExtractor::working_size`), the memory budget on the CPU path (`CpuExtractor::working_size`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Oversize {
    /// Extract from the image shrunk (triangle filter, aspect kept) to the largest size whose buffers fit;
    /// keypoints and scales come back in the original image's pixels. The pyramid then starts at the shrunk size,
    /// so detail finer than the shrunk pixel is lost; we chose this over tiling because the pyramid's coarse levels
    /// and the descriptor need the whole image, and tiles would need overlaps of the receptive field at every level.
    #[default]
    Downscale,
    /// Fail: `Error::TooLarge` on the GPU, `Error::MemoryBudget` on the CPU path.
    Refuse,
}

/// Empty images are an error (naming the image's place in the batch); every other size is extracted.
pub fn check_sizes(sizes: impl IntoIterator<Item = (u32, u32)>) -> Result<()> {
    for (i, (w, h)) in sizes.into_iter().enumerate() {
        if w == 0 || h == 0 {
            return Err(Error::Invalid(format!("image {i} is empty ({w}x{h})")));
        }
    }
    Ok(())
}

/// Whether an image of this size gives keypoints: it must hold the detector's receptive field (a pyramid level)
/// and every level of the descriptor's encoder. Smaller images give empty features on both paths.
pub fn has_features(config: &ModelConfig, w: u32, h: u32) -> bool {
    let smallest = 1 << (config.descriptor.encoder.len() - 1);
    w >= smallest && h >= smallest && !pyramid(config, w, h).is_empty()
}
