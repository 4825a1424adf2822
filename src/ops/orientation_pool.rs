//! The detector's last layer fused with orientation pooling (the `conv_orientation_pool` entry point of
//! shaders/conv.wgsl, which shares the convolution's register tiling and staging).

use super::conv::{GpuConv, Part};
use super::Map;
use crate::gpu::{Dispatch, Gpu};
use std::f32::consts::TAU;

/// Score logit and orientation of one pixel's N group channels (docs/model.md, Detector).
pub fn pool_reference(v: &[f32]) -> (f32, f32) {
    let n = v.len();
    let mut r = 0;
    for i in 1..n {
        if v[i] > v[r] {
            r = i;
        }
    }
    let (a, b, c) = (v[(r + n - 1) % n], v[r], v[(r + 1) % n]);
    let d = a - 2.0 * b + c;
    let t = if d < 0.0 { (0.5 * (a - c) / d).clamp(-0.5, 0.5) } else { 0.0 };
    let mut theta = (r as f32 + t) * TAU / n as f32;
    if theta < 0.0 {
        theta += TAU;
    }
    if theta >= TAU {
        theta -= TAU;
    }
    (b, theta)
}

/// Reference: an N-channel map to (score, orientation) maps.
pub fn orientation_pool_reference(group_logits: &Map) -> (Map, Map) {
    let (n, h, w) = (group_logits.c, group_logits.h, group_logits.w);
    let mut score = Map::zeros(1, h, w);
    let mut orientation = Map::zeros(1, h, w);
    let mut v = vec![0f32; n];
    for p in 0..h * w {
        for (r, value) in v.iter_mut().enumerate() {
            *value = group_logits.data[r * h * w + p];
        }
        let (s, theta) = pool_reference(&v);
        score.data[p] = s;
        orientation.data[p] = theta;
    }
    (score, orientation)
}

/// GPU: the last layer (`conv`, uploaded with `GpuConv::upload_for_pooling`: valid padding, N output channels)
/// and pooling, one dispatch over every part (level), each writing its maps at its `out_offset` of the score and
/// orientation buffers. The kernel is conv.wgsl's `conv_orientation_pool`, which shares the convolution's tiling.
pub fn conv_orientation_pool(gpu: &Gpu, conv: &GpuConv, input: &wgpu::Buffer, parts: &[Part], score: &wgpu::Buffer, orientation: &wgpu::Buffer) -> Dispatch {
    conv.dispatch_pooled(gpu, input, parts, score, orientation)
}
