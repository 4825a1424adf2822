//! The descriptor U-Net (docs/model.md, Descriptor): encoder of paired 3x3 convolutions with pooling between
//! levels, decoder of bilinear upsampling + skip concatenation + convolution, a 1x1 head and L2 normalisation. Both
//! versions run the same steps (`ModelConfig::descriptor_steps`); version 2's convolutions are group convolutions
//! stored dense, so only its pooling differs here.

use crate::config::{ModelConfig, Step};
use crate::gpu::{Dispatch, Gpu};
use crate::ops::conv::{conv2d_reference, GpuConv, Part};
use crate::ops::Precision;
use crate::ops::unet::{l2norm, l2norm_reference, pool, pool_reference, upsample_concat, upsample_concat_reference};
use crate::ops::Map;
use crate::weights::ConvWeights;

/// Reference: the L2-normalised descriptor map of the level-0 normalised gray image.
pub fn descriptor_reference(layers: &[ConvWeights], config: &ModelConfig, image: &Map) -> Map {
    let mut layers = layers.iter();
    let mut skips: Vec<Option<Map>> = vec![None; config.descriptor.encoder.len()];
    let mut x = image.clone();
    for step in config.descriptor_steps() {
        x = match step {
            Step::Conv(_) | Step::Head(_) => {
                let layer = layers.next().expect("one layer per convolution step (checked by the loader)");
                conv2d_reference(&x, layer, layer.spec.k / 2, matches!(step, Step::Conv(_)))
            }
            Step::Pool { mode, .. } => pool_reference(&x, mode),
            Step::KeepSkip { level, .. } => {
                skips[level] = Some(x.clone());
                x
            }
            Step::UpsampleConcat { level, .. } => upsample_concat_reference(&x, skips[level].as_ref().expect("kept")),
            Step::L2Norm { .. } => l2norm_reference(&x),
        };
    }
    x
}

pub struct DescriptorGpu {
    layers: Vec<GpuConv>,
    /// Storage of the filters and of every map but the input and the L2-normalised output (f32).
    precision: Precision,
    steps: Vec<Step>,
    config: ModelConfig,
    pub dim: usize,
}

/// The descriptor's buffers and dispatches for one image size.
pub struct DescriptorPlan {
    pub dispatches: Vec<Dispatch>,
    pub map: wgpu::Buffer,
    pub map_size: (u32, u32),
    _buffers: Vec<wgpu::Buffer>,
}

impl DescriptorGpu {
    pub fn upload(gpu: &Gpu, layers: &[ConvWeights], config: &ModelConfig, precision: Precision) -> Self {
        DescriptorGpu {
            layers: layers.iter().map(|l| GpuConv::upload_in(gpu, l, precision)).collect(),
            precision,
            steps: config.descriptor_steps(),
            config: config.clone(),
            dim: config.descriptor.dim,
        }
    }

    /// Largest buffer (bytes) the plan of a `w` x `h` image allocates: one per step's output.
    pub fn largest_buffer(&self, w: u32, h: u32) -> u64 {
        let bytes = |s: &Step| {
            let (lw, lh) = self.config.descriptor_level_size(w, h, s.level());
            4 * s.channels() as u64 * lw as u64 * lh as u64
        };
        self.steps.iter().map(bytes).max().unwrap_or(0)
    }

    /// `input`: the f32 gray image; the plan's map is f32.
    pub fn plan(&self, gpu: &Gpu, input: &wgpu::Buffer, (w, h): (u32, u32)) -> DescriptorPlan {
        let mut dispatches = Vec::new();
        let mut buffers = Vec::new();
        let mut alloc = |c: usize, (lw, lh): (u32, u32), precision: Precision| {
            let b = gpu.storage("descriptor map", precision.bytes() * c as u64 * lw as u64 * lh as u64);
            buffers.push(b.clone());
            b
        };
        let mut layers = self.layers.iter();
        let levels = self.steps.iter().map(Step::level).max().unwrap_or(0) + 1;
        let mut skips: Vec<Option<wgpu::Buffer>> = vec![None; levels];
        let mut x = input.clone();
        let mut stored = Precision::F32;
        let mut size = (w, h);
        for step in &self.steps {
            let out_size = self.config.descriptor_level_size(w, h, step.level());
            let out_precision = if matches!(step, Step::L2Norm { .. }) { Precision::F32 } else { self.precision };
            let out = match step {
                Step::KeepSkip { level, .. } => {
                    skips[*level] = Some(x.clone());
                    continue;
                }
                _ => alloc(step.channels(), out_size, out_precision),
            };
            let io = (stored, out_precision);
            dispatches.push(match step {
                Step::Conv(_) | Step::Head(_) => {
                    let layer = layers.next().expect("one layer per convolution step");
                    let (pad, relu) = if matches!(step, Step::Conv(_)) { (layer.spec.k as u32 / 2, true) } else { (0, false) };
                    let part = Part { in_size: size, in_offset: 0, out_offset: 0 };
                    layer.dispatch_parts(gpu, (&x, stored), &out, &[part], pad, relu)
                }
                Step::Pool { c, mode, .. } => pool(gpu, &x, &out, size, *c as u32, *mode, io),
                Step::UpsampleConcat { level, c, skip_c } => {
                    let skip = skips[*level].as_ref().expect("kept");
                    upsample_concat(gpu, &x, skip, &out, size, out_size, *c as u32, *skip_c as u32, io)
                }
                Step::L2Norm { c, .. } => l2norm(gpu, &x, &out, size, *c as u32, io),
                Step::KeepSkip { .. } => unreachable!("handled above"),
            });
            x = out;
            stored = out_precision;
            size = out_size;
        }
        DescriptorPlan { dispatches, map: x, map_size: size, _buffers: buffers }
    }
}
