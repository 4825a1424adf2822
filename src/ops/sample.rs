//! Descriptor sampling at keypoints (shaders/sample.wgsl).

use crate::features::KeypointRecord;
use super::Map;
use crate::gpu::{groups_1d, Dispatch, Gpu, Shader};

pub const SHADER: Shader = Shader { name: "sample", source: include_str!("../../shaders/sample.wgsl") };

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct SampleParams {
    map_w: u32,
    map_h: u32,
    dim: u32,
    count: u32,
    stride: f32,
    _pad: [u32; 3],
}

/// Reference: bilinear sample of `map` (stride `stride` from level 0) at each keypoint, L2-renormalised;
/// row-major `[keypoints, dim]`.
pub fn sample_reference(map: &Map, stride: f32, keypoints: &[KeypointRecord]) -> Vec<f32> {
    let mut out = Vec::with_capacity(keypoints.len() * map.c);
    for kp in keypoints {
        let u = ((kp.x + 0.5) / stride - 0.5).clamp(0.0, (map.w - 1) as f32);
        let v = ((kp.y + 0.5) / stride - 0.5).clamp(0.0, (map.h - 1) as f32);
        let (x0, y0) = (u.floor() as usize, v.floor() as usize);
        let (x1, y1) = ((x0 + 1).min(map.w - 1), (y0 + 1).min(map.h - 1));
        let (fx, fy) = (u - x0 as f32, v - y0 as f32);
        let start = out.len();
        for c in 0..map.c {
            let top = map.at(c, y0, x0) * (1.0 - fx) + map.at(c, y0, x1) * fx;
            let bottom = map.at(c, y1, x0) * (1.0 - fx) + map.at(c, y1, x1) * fx;
            out.push(top * (1.0 - fy) + bottom * fy);
        }
        let norm = out[start..].iter().map(|d| d * d).sum::<f32>().sqrt().max(1e-12);
        out[start..].iter_mut().for_each(|d| *d /= norm);
    }
    out
}

pub fn sample_descriptors(
    gpu: &Gpu,
    keypoints: &wgpu::Buffer,
    count: u32,
    map: &wgpu::Buffer,
    (map_w, map_h): (u32, u32),
    dim: u32,
    stride: f32,
    descriptors: &wgpu::Buffer,
) -> Dispatch {
    let p = gpu.uniform("sample params", &SampleParams { map_w, map_h, dim, count, stride, _pad: [0; 3] });
    let bindings = [(0, &p), (1, keypoints), (2, map), (3, descriptors)];
    gpu.dispatch(SHADER, "sample_descriptors", &bindings, groups_1d(count, 64))
}
