//! The descriptor U-Net (docs/model.md, Descriptor): encoder of paired 3x3 convolutions with 2x2 average pooling,
//! decoder of bilinear upsampling + skip concatenation + convolution, a 1x1 head and L2 normalisation.

use crate::config::ModelConfig;
use crate::gpu::{Dispatch, Gpu};
use crate::ops::conv::{conv2d_reference, GpuConv};
use crate::ops::unet::{avgpool2, avgpool2_reference, l2norm, l2norm_reference, upsample_concat, upsample_concat_reference};
use crate::ops::Map;
use crate::weights::ConvWeights;

/// Reference: the L2-normalised descriptor map of the level-0 normalised gray image.
pub fn descriptor_reference(layers: &[ConvWeights], config: &ModelConfig, image: &Map) -> Map {
    let e = &config.descriptor;
    let same = |x: &Map, l: &ConvWeights, relu| conv2d_reference(x, l, l.spec.k / 2, relu);
    let mut it = layers.iter();
    let mut skips: Vec<Map> = Vec::new();
    let mut x = image.clone();
    for level in 0..e.encoder.len() {
        if level > 0 {
            x = avgpool2_reference(&x);
        }
        x = same(&x, it.next().unwrap(), true);
        x = same(&x, it.next().unwrap(), true);
        skips.push(x.clone());
    }
    for m in 0..e.decoder.len() {
        let skip = &skips[e.encoder.len() - 2 - m];
        x = same(&upsample_concat_reference(&x, skip), it.next().unwrap(), true);
    }
    l2norm_reference(&same(&x, it.next().unwrap(), false))
}

/// Size of the map at encoder level `l` of a `w` x `h` image.
pub fn level_size(w: u32, h: u32, l: usize) -> (u32, u32) {
    (w >> l, h >> l)
}

pub struct DescriptorGpu {
    layers: Vec<GpuConv>,
    encoder: Vec<usize>,
    decoder: Vec<usize>,
    pub dim: usize,
    pub stride: usize,
}

/// The descriptor's buffers and dispatches for one image size.
pub struct DescriptorPlan {
    pub dispatches: Vec<Dispatch>,
    pub map: wgpu::Buffer,
    pub map_size: (u32, u32),
    _buffers: Vec<wgpu::Buffer>,
}

impl DescriptorGpu {
    pub fn upload(gpu: &Gpu, layers: &[ConvWeights], config: &ModelConfig) -> Self {
        DescriptorGpu {
            layers: layers.iter().map(|l| GpuConv::upload(gpu, l)).collect(),
            encoder: config.descriptor.encoder.clone(),
            decoder: config.descriptor.decoder.clone(),
            dim: config.descriptor.dim,
            stride: config.descriptor_stride(),
        }
    }

    /// Largest buffer (bytes) the plan of a `w` x `h` image allocates.
    pub fn largest_buffer(&self, w: u32, h: u32) -> u64 {
        let bytes = |c: usize, l: usize| {
            let (lw, lh) = level_size(w, h, l);
            4 * c as u64 * lw as u64 * lh as u64
        };
        let mut largest = 0;
        for (l, &c) in self.encoder.iter().enumerate() {
            largest = largest.max(bytes(c, l));
        }
        let mut x_c = *self.encoder.last().unwrap();
        let mut level = self.encoder.len() - 1;
        for (m, &d) in self.decoder.iter().enumerate() {
            level = self.encoder.len() - 2 - m;
            largest = largest.max(bytes(x_c + self.encoder[level], level)).max(bytes(d, level));
            x_c = d;
        }
        largest.max(bytes(self.dim, level))
    }

    pub fn plan(&self, gpu: &Gpu, input: &wgpu::Buffer, (w, h): (u32, u32)) -> DescriptorPlan {
        let mut dispatches = Vec::new();
        let mut buffers = Vec::new();
        let mut alloc = |c: usize, (lw, lh): (u32, u32)| {
            let b = gpu.storage("descriptor map", 4 * c as u64 * lw as u64 * lh as u64);
            buffers.push(b.clone());
            b
        };
        let mut layers = self.layers.iter();
        let mut skips: Vec<(wgpu::Buffer, usize, (u32, u32))> = Vec::new();
        let mut x = input.clone();
        let mut x_c = 1usize;
        let mut size = (w, h);
        for (l, &c) in self.encoder.iter().enumerate() {
            if l > 0 {
                let pooled_size = level_size(w, h, l);
                let pooled = alloc(x_c, pooled_size);
                dispatches.push(avgpool2(gpu, &x, &pooled, size, x_c as u32));
                x = pooled;
                size = pooled_size;
            }
            for _ in 0..2 {
                let layer = layers.next().unwrap();
                let out = alloc(c, size);
                dispatches.push(layer.dispatch(gpu, &x, &out, size, layer.spec.k as u32 / 2, true));
                x = out;
            }
            x_c = c;
            skips.push((x.clone(), c, size));
        }
        for (m, &d) in self.decoder.iter().enumerate() {
            let (skip, skip_c, skip_size) = &skips[self.encoder.len() - 2 - m];
            let cat = alloc(x_c + skip_c, *skip_size);
            dispatches.push(upsample_concat(gpu, &x, skip, &cat, size, *skip_size, x_c as u32, *skip_c as u32));
            let layer = layers.next().unwrap();
            let out = alloc(d, *skip_size);
            dispatches.push(layer.dispatch(gpu, &cat, &out, *skip_size, layer.spec.k as u32 / 2, true));
            x = out;
            x_c = d;
            size = *skip_size;
        }
        let head = layers.next().unwrap();
        let raw = alloc(self.dim, size);
        dispatches.push(head.dispatch(gpu, &x, &raw, size, 0, false));
        let map = alloc(self.dim, size);
        dispatches.push(l2norm(gpu, &raw, &map, size, self.dim as u32));
        DescriptorPlan { dispatches, map, map_size: size, _buffers: buffers }
    }
}
