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
use crate::extract::{check_sizes, has_features, Config, Extract, STAGES};
use crate::features::Features;
use crate::image_io::Image;
use crate::model::{nms_settings, pyramid};
use crate::ops::nms_topk::nms_topk_reference;
use crate::ops::preprocess::{resize_reference, to_gray_reference};
use crate::ops::sample::sample_reference;
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
    detector: CpuDetector,
    descriptor: CpuDescriptor,
    kernel: Kernel,
    pool: BufferPool,
    times: [f64; STAGES.len()],
}

impl CpuExtractor {
    pub fn new(weights: &Weights, options: Config) -> Result<Self> {
        let config = weights.config.clone();
        let max_keypoints = options.max_keypoints(&config)?;
        Ok(CpuExtractor {
            detector: CpuDetector::new(&weights.detector()),
            descriptor: CpuDescriptor::new(&weights.descriptor(), &config),
            config,
            max_keypoints,
            kernel: Kernel::best(),
            pool: BufferPool::default(),
            times: [0.0; STAGES.len()],
        })
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

    /// Bytes of buffers kept for the next image.
    pub fn pooled_bytes(&self) -> usize {
        self.pool.bytes()
    }

    fn extract_one(&mut self, image: &Image) -> Features {
        let config = &self.config;
        let mut features = Features::empty([image.width, image.height], config.descriptor.dim);
        if !has_features(config, image.width, image.height) {
            return features;
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
            .collect();
        clock.lap(2);
        let pooled: Vec<_> = levels.iter().zip(&maps).map(|(l, (s, o))| (l.geom, s, o)).collect();
        let records = nms_topk_reference(&pooled, &nms_settings(config, self.max_keypoints));
        for (score, orientation) in maps {
            pool.give(score.data);
            pool.give(orientation.data);
        }
        clock.lap(3);
        let map = self.descriptor.run(pool, &gray, self.kernel);
        clock.lap(4);
        let descriptors = sample_reference(&map, config.descriptor_stride() as f32, &records);
        pool.give(map.data);
        features.push_records(&records, &descriptors);
        clock.lap(5);
        features
    }
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
        Ok(images.iter().map(|image| self.extract_one(image)).collect())
    }

    fn describe(&self) -> String {
        describe(self.kernel)
    }

    fn stage_times(&self) -> Vec<(&'static str, f64)> {
        STAGES.iter().copied().zip(self.times).collect()
    }
}
