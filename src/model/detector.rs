//! The equivariant detector: lifting and group convolutions (dense, expanded filters, valid padding, ReLU), the
//! last layer fused with orientation pooling.

use crate::config::{detector_walk, DetectorLayer};
use crate::gpu::{Dispatch, Gpu};
use crate::model::{level_offsets, Level};
use crate::ops::conv::{conv2d_reference, GpuConv, Part};
use crate::ops::Precision;
use crate::ops::orientation_pool::{conv_orientation_pool, orientation_pool_reference};
use crate::ops::Map;
use crate::weights::ConvWeights;

/// Reference: (group logits of the last layer, score, orientation) of one level's normalised gray image.
pub fn detector_reference(layers: &[ConvWeights], image: &Map) -> (Map, Map, Map) {
    let mut x = image.clone();
    for (role, layer) in detector_walk(layers) {
        x = conv2d_reference(&x, layer, 0, role == DetectorLayer::Hidden);
    }
    let (score, orientation) = orientation_pool_reference(&x);
    (x, score, orientation)
}

/// The detector's layers on the GPU.
pub struct DetectorGpu {
    layers: Vec<GpuConv>,
    precision: Precision,
}

impl DetectorGpu {
    /// The layers, their filters and activations stored in `precision`.
    pub fn upload(gpu: &Gpu, layers: &[ConvWeights], precision: Precision) -> Self {
        let upload = |(role, layer)| match role {
            DetectorLayer::Pooled => GpuConv::upload_for_pooling(gpu, layer, precision),
            _ => GpuConv::upload_in(gpu, layer, precision),
        };
        DetectorGpu { layers: detector_walk(layers).map(upload).collect(), precision }
    }

    fn widest(&self) -> u64 {
        self.layers.iter().map(|l| l.spec.c_out).max().unwrap_or(1) as u64
    }

    /// Bytes of each of the two ping-pong buffers for all levels.
    pub fn scratch_bytes(&self, levels: &[Level]) -> u64 {
        self.precision.bytes() * self.widest() * level_offsets(levels).last().unwrap()
    }

    /// One dispatch per layer over every level: `pyramid` holds the levels' normalised gray images (f32) one after another
    /// (`level_offsets`), the layers alternate between `ping` and `pong` (level l at `widest * offset[l]`), and the
    /// last layer writes score and orientation at each level's `geom.offset`.
    pub fn encode(
        &self,
        gpu: &Gpu,
        pyramid: &wgpu::Buffer,
        levels: &[Level],
        (ping, pong): (&wgpu::Buffer, &wgpu::Buffer),
        (scores, orientations): (&wgpu::Buffer, &wgpu::Buffer),
    ) -> Vec<Dispatch> {
        let pixels = level_offsets(levels);
        let scratch: Vec<u32> = pixels.iter().map(|&o| (o * self.widest()) as u32).collect();
        let mut parts: Vec<Part> = levels
            .iter()
            .zip(&pixels)
            .map(|(l, &offset)| Part { in_size: (l.w, l.h), in_offset: offset as u32, out_offset: 0 })
            .collect();
        let mut dispatches = Vec::new();
        let mut src = (pyramid, Precision::F32);
        for (i, (role, layer)) in detector_walk(&self.layers).enumerate() {
            if role == DetectorLayer::Pooled {
                parts.iter_mut().zip(levels).for_each(|(p, l)| p.out_offset = l.geom.offset);
                dispatches.push(conv_orientation_pool(gpu, layer, src.0, &parts, scores, orientations));
                break;
            }
            let dst = if i % 2 == 0 { ping } else { pong };
            parts.iter_mut().zip(&scratch).for_each(|(p, &o)| p.out_offset = o);
            dispatches.push(layer.dispatch_parts(gpu, src, dst, &parts, 0, true));
            for p in &mut parts {
                p.in_size = layer.out_size(p.in_size, 0);
                p.in_offset = p.out_offset;
            }
            src = (dst, self.precision);
        }
        dispatches
    }
}
