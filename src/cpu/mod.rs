//! The CPU path: the same extraction as the GPU engine on machines without a hardware GPU, behind the same
//! `Extract` API.
//!
//! The hot ops have fast versions here: the convolutions (`conv`: implicit GEMMs over channels-last maps, a direct
//! AVX-512/AVX2 micro-kernel for the narrow layers and the `gemm` crate for the wide ones, threads via rayon) and the
//! U-Net's data movement in that layout (`unet`). Everything cheap reuses the plain-Rust references of `ops`, which
//! stay the oracle of both paths: gray conversion, pyramid resampling, orientation pooling, NMS + top-k and
//! descriptor sampling. Buffers come from a pool kept by the extractor, so images of one size allocate nothing
//! after the first.

pub mod conv;
pub mod descriptor;
pub mod detector;
pub mod hwc;
pub mod matching;
pub mod simd;
pub mod unet;

use crate::config::ModelConfig;
use crate::error::{Error, Result};
use crate::extract::{check_sizes, has_features, Config, Extract, Oversize, STAGES};
use crate::features::Features;
use crate::image_io::Image;
use crate::model::{nms_settings, pyramid};
use crate::ops::nms_topk::nms_topk_reference;
use crate::ops::preprocess::{resize_reference, to_gray_reference};
use crate::ops::sample::{sample_reference, Sampling};
use crate::weights::Weights;
use conv::Kernel;
use descriptor::CpuDescriptor;
use detector::CpuDetector;
use hwc::BufferPool;
use rayon::prelude::*;
use std::time::Instant;

pub struct CpuExtractor {
    config: ModelConfig,
    max_keypoints: usize,
    oversize: Oversize,
    detector: CpuDetector,
    descriptor: CpuDescriptor,
    kernel: Kernel,
    pool: BufferPool,
    /// Bytes an image may take (`Config::max_memory`, else `default_memory_budget`); `None`: no budget.
    budget: Option<u64>,
    /// The pool's bytes per pixel, learned from the largest image so far (the pool keeps what it made for it).
    pool_rate: f64,
    largest_pixels: u64,
    times: [f64; STAGES.len()],
}

/// The pool's bytes per image pixel before any image was extracted: the default model's measured 207 at 3840x2160
/// (docs/cpu-notes.md), with room for models a little wider; its largest buffers are the largest level's
/// activations, so an upsampled level multiplies it by that level's area.
fn first_pool_rate(config: &ModelConfig) -> f64 {
    let largest = config.inference.scales.iter().fold(1f64, |m, &s| m.max(s as f64 * s as f64));
    240.0 * largest
}

/// Bytes per image pixel outside the pool: the pyramid in f32 (the gray image is its level 1.0), the decoded image
/// (up to 8 for 16-bit RGBA) and its shrunk copy.
fn other_rate(config: &ModelConfig) -> f64 {
    4.0 * config.inference.scales.iter().map(|&s| s as f64 * s as f64).sum::<f64>() + 16.0
}

impl CpuExtractor {
    pub fn new(weights: &Weights, options: Config) -> Result<Self> {
        let config = weights.config.clone();
        let max_keypoints = options.max_keypoints(&config)?;
        let budget = options.max_memory.or_else(default_memory_budget);
        let pool_rate = first_pool_rate(&config);
        Ok(CpuExtractor {
            detector: CpuDetector::new(&weights.detector()),
            descriptor: CpuDescriptor::new(&weights.descriptor(), &config),
            config,
            max_keypoints,
            oversize: options.oversize,
            kernel: Kernel::best(),
            // a tenth of the budget stays for the gray image, the pyramid and the decoded image
            pool: BufferPool::with_limit(budget.map(|b| (b / 10 * 9) as usize)),
            budget,
            pool_rate,
            largest_pixels: 0,
            times: [0.0; STAGES.len()],
        })
    }

    /// The size an image of `size` is extracted at: its own when the estimate of its memory fits the budget, else
    /// the largest size of the same aspect that does.
    pub fn working_size(&self, (w, h): (u32, u32)) -> (u32, u32) {
        let Some(budget) = self.budget else { return (w, h) };
        let need = self.estimated_bytes((w, h));
        if need <= budget as f64 {
            return (w, h);
        }
        let s = (budget as f64 / need).sqrt();
        (((w as f64 * s) as u32).max(1), ((h as f64 * s) as u32).max(1))
    }

    /// Extracts an image within the memory budget: shrunk to the estimated working size, and 20 % smaller again
    /// each time the pool still runs over (the pool is emptied between tries). Features come back in the image's
    /// own pixels; an image that fits at no size, or any image over the budget with `Oversize::Refuse`, gives the
    /// budget error.
    fn extract_within_budget(&mut self, image: &Image) -> Result<Features> {
        let original = (image.width, image.height);
        let mut size = self.working_size(original);
        let refuse = self.oversize == Oversize::Refuse;
        if size != original && (refuse || !has_features(&self.config, size.0, size.1)) {
            return Err(self.too_small_budget(original));
        }
        loop {
            let shrunk = (size != original).then(|| image.resized(size.0, size.1));
            match self.extract_one(shrunk.as_ref().unwrap_or(image)) {
                Ok(mut features) => {
                    self.learn_rate(size);
                    if shrunk.is_some() {
                        features.rescale_to([original.0, original.1]);
                    }
                    return Ok(features);
                }
                Err(e @ (Error::MemoryBudget { .. } | Error::HostMemory { .. })) => {
                    self.pool = BufferPool::with_limit(self.pool.limit());
                    let next = ((size.0 as f64 * 0.8) as u32, (size.1 as f64 * 0.8) as u32);
                    if refuse || !has_features(&self.config, next.0, next.1) {
                        return Err(e);
                    }
                    size = next;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// The memory an image of `size` is estimated to take: the pool's learned rate and the rest.
    fn estimated_bytes(&self, (w, h): (u32, u32)) -> f64 {
        (self.pool_rate + other_rate(&self.config)) * w as f64 * h as f64
    }

    /// The error for an image that no size within the budget can extract.
    fn too_small_budget(&self, size: (u32, u32)) -> Error {
        let need = self.estimated_bytes(size);
        let mib = |b: f64| (b / (1u64 << 20) as f64).ceil() as u64;
        Error::MemoryBudget { budget_mib: mib(self.budget.unwrap_or(0) as f64), held_mib: 0, needed_mib: mib(need) }
    }

    fn learn_rate(&mut self, (w, h): (u32, u32)) {
        let pixels = w as u64 * h as u64;
        // small images' fixed costs (borders, slack) would overstate the rate of large ones
        if pixels > self.largest_pixels && pixels >= 1 << 20 {
            self.largest_pixels = pixels;
            self.pool_rate = self.pool.allocated() as f64 / pixels as f64;
        }
    }

    /// Runs the narrow layers with another kernel (tests and benchmarks compare them); one this CPU cannot run is
    /// an error.
    pub fn with_kernel(mut self, kernel: Kernel) -> Result<Self> {
        if !kernel.is_available() {
            return Err(Error::Invalid(format!("the {} kernel needs instructions this CPU lacks", kernel.name())));
        }
        self.kernel = kernel;
        Ok(self)
    }

    pub fn kernel(&self) -> Kernel {
        self.kernel
    }

    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    pub fn detector(&self) -> &CpuDetector {
        &self.detector
    }

    pub fn descriptor(&self) -> &CpuDescriptor {
        &self.descriptor
    }

    /// Bytes of the buffers the pool has made and not released: between images, all kept for the next one (the
    /// pool's high-water mark).
    pub fn pooled_bytes(&self) -> usize {
        self.pool.allocated()
    }

    fn extract_one(&mut self, image: &Image) -> Result<Features> {
        let config = &self.config;
        let mut features = Features::empty([image.width, image.height], config.descriptor.dim);
        if !has_features(config, image.width, image.height) {
            return Ok(features);
        }
        let levels = pyramid(config, image.width, image.height);
        let mut clock = Stopwatch::new(&mut self.times);
        let gray = to_gray_reference(image, config.input);
        clock.lap(0);
        // Level images (level 0 is the gray image itself); the reference resampler is cheap next to the detector.
        let resized: Vec<_> = levels[1..].par_iter().map(|l| resize_reference(&gray, l.w as usize, l.h as usize)).collect();
        clock.lap(1);
        let pool = &mut self.pool;
        let maps: Vec<_> = std::iter::once(&gray)
            .chain(&resized)
            .map(|input| self.detector.run(pool, input, self.kernel))
            .collect::<Result<_>>()?;
        clock.lap(2);
        let pooled: Vec<_> = levels.iter().zip(&maps).map(|(l, (s, o))| (l.geom, s, o)).collect();
        let records = nms_topk_reference(&pooled, &nms_settings(config, self.max_keypoints));
        for (score, orientation) in maps {
            pool.give(score.data);
            pool.give(orientation.data);
        }
        clock.lap(3);
        let map = self.descriptor.run(pool, &gray, self.kernel)?;
        clock.lap(4);
        let sampling = Sampling::new(config, (image.width, image.height), (map.w as u32, map.h as u32));
        let descriptors = sample_reference(&map, sampling, &records);
        pool.give(map.data);
        features.push_records(&records, &descriptors);
        clock.lap(5);
        Ok(features)
    }
}

/// The CPU path's default memory budget: what the machine has available (MemAvailable) and what the process may
/// still map (its address-space limit, `ulimit -v`, less what it maps now), whichever is smaller, less a tenth for
/// everything else; `None` where neither is known (not Linux).
pub fn default_memory_budget() -> Option<u64> {
    let field = |text: &str, key: &str| -> Option<u64> {
        let line = text.lines().find(|l| l.starts_with(key))?;
        line[key.len()..].split_whitespace().next()?.parse().ok()
    };
    let available = std::fs::read_to_string("/proc/meminfo").ok().and_then(|t| field(&t, "MemAvailable:")).map(|kb| kb << 10);
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap_or_default();
    let mapped = std::fs::read_to_string("/proc/self/status").ok().and_then(|t| field(&t, "VmSize:")).map(|kb| kb << 10);
    let address_space = field(&limits, "Max address space").zip(mapped).map(|(limit, used)| limit.saturating_sub(used));
    let budget = match (available, address_space) {
        (Some(a), Some(b)) => a.min(b),
        (a, b) => a.or(b)?,
    };
    Some(budget / 10 * 9)
}

/// "CPU: N threads, KERNEL", for reports: the threads of rayon's pool (every core, or RAYON_NUM_THREADS).
pub fn describe(kernel: Kernel) -> String {
    format!("CPU: {} threads, {}", rayon::current_num_threads(), kernel.name())
}

/// Adds the time since the last lap to a stage.
struct Stopwatch<'a> {
    times: &'a mut [f64],
    last: Instant,
}

impl<'a> Stopwatch<'a> {
    fn new(times: &'a mut [f64]) -> Self {
        Stopwatch { times, last: Instant::now() }
    }

    fn lap(&mut self, stage: usize) {
        let now = Instant::now();
        self.times[stage] += (now - self.last).as_secs_f64();
        self.last = now;
    }
}

impl Extract for CpuExtractor {
    fn extract_batch(&mut self, images: &[Image]) -> Result<Vec<Features>> {
        check_sizes(images.iter().map(|i| (i.width, i.height)))?;
        self.times = [0.0; STAGES.len()];
        images.iter().map(|image| self.extract_within_budget(image)).collect()
    }

    fn working_size(&self, size: (u32, u32)) -> Result<(u32, u32)> {
        Ok(CpuExtractor::working_size(self, size))
    }

    fn describe(&self) -> String {
        describe(self.kernel)
    }

    fn stage_times(&self) -> Vec<(&'static str, f64)> {
        STAGES.iter().copied().zip(self.times).collect()
    }
}
