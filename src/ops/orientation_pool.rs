//! The detector's last layer fused with orientation pooling (shaders/orientation_pool.wgsl).

use super::conv::{out_len, GpuConv};
use super::Map;
use crate::gpu::{groups_2d, Dispatch, Gpu, Shader};
use std::f32::consts::TAU;

pub const SHADER: Shader =
    Shader { name: "orientation_pool", source: include_str!("../../shaders/orientation_pool.wgsl") };

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct PoolParams {
    in_w: u32,
    in_h: u32,
    out_w: u32,
    out_h: u32,
    c_in: u32,
    n: u32,
    k: u32,
    out_offset: u32,
}

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

/// GPU: the last layer (`conv`, valid padding, N output channels) and pooling, writing at `out_offset` of the
/// score and orientation buffers.
pub fn conv_orientation_pool(
    gpu: &Gpu,
    conv: &GpuConv,
    input: &wgpu::Buffer,
    (in_w, in_h): (u32, u32),
    score: &wgpu::Buffer,
    orientation: &wgpu::Buffer,
    out_offset: u32,
) -> Dispatch {
    let s = &conv.spec;
    let out_w = out_len(in_w as usize, s.k, 0) as u32;
    let out_h = out_len(in_h as usize, s.k, 0) as u32;
    let params = PoolParams { in_w, in_h, out_w, out_h, c_in: s.c_in as u32, n: s.c_out as u32, k: s.k as u32, out_offset };
    let p = gpu.uniform("pool params", &params);
    let bindings = [(0, &p), (1, input), (2, conv.filters()), (4, score), (5, orientation)];
    gpu.dispatch(SHADER, "conv_orientation_pool", &bindings, groups_2d(out_w, out_h, 8, 1))
}
