//! The equivariant detector: lifting and group convolutions (dense, expanded filters, valid padding, ReLU), the
//! last layer fused with orientation pooling.

use crate::config::{detector_walk, DetectorLayer};
use crate::gpu::{Dispatch, Gpu};
use crate::ops::conv::{conv2d_reference, GpuConv};
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
}

impl DetectorGpu {
    pub fn upload(gpu: &Gpu, layers: &[ConvWeights]) -> Self {
        DetectorGpu { layers: layers.iter().map(|l| GpuConv::upload(gpu, l)).collect() }
    }

    /// Floats needed by each of the two ping-pong buffers for a `w` x `h` level.
    pub fn scratch_len(&self, w: u32, h: u32) -> u64 {
        let widest = self.layers.iter().map(|l| l.spec.c_out).max().unwrap_or(1) as u64;
        widest * w as u64 * h as u64
    }

    /// Dispatches for one level: `input` (1 x w x h) through the layers, alternating `ping` and `pong`, the last
    /// layer writing score and orientation at `offset`.
    #[allow(clippy::too_many_arguments)]
    pub fn encode_level(
        &self,
        gpu: &Gpu,
        input: &wgpu::Buffer,
        (w, h): (u32, u32),
        ping: &wgpu::Buffer,
        pong: &wgpu::Buffer,
        scores: &wgpu::Buffer,
        orientations: &wgpu::Buffer,
        offset: u32,
    ) -> Vec<Dispatch> {
        let mut dispatches = Vec::new();
        let (mut cur_w, mut cur_h) = (w, h);
        let mut src = input;
        for (i, (role, layer)) in detector_walk(&self.layers).enumerate() {
            if role == DetectorLayer::Pooled {
                dispatches.push(conv_orientation_pool(gpu, layer, src, (cur_w, cur_h), scores, orientations, offset));
                break;
            }
            let dst = if i % 2 == 0 { ping } else { pong };
            dispatches.push(layer.dispatch(gpu, src, dst, (cur_w, cur_h), 0, true));
            cur_w -= layer.spec.k as u32 - 1;
            cur_h -= layer.spec.k as u32 - 1;
            src = dst;
        }
        dispatches
    }
}
