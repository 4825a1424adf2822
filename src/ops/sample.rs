//! Descriptor sampling at keypoints (shaders/sample.wgsl): bilinear, aligned by the keypoint's orientation for the
//! group descriptor, L2-renormalised (docs/model.md, "Descriptor" and "Descriptor version 2").

use super::Map;
use crate::config::{DescriptorKind, ModelConfig};
use crate::features::KeypointRecord;
use crate::gpu::{groups_1d, Dispatch, Gpu, Shader};
use std::f32::consts::TAU;

pub const SHADER: Shader = Shader { name: "sample", source: include_str!("../../shaders/sample.wgsl") };

/// Where a level-0 keypoint falls on the descriptor map, `u = (x + 0.5) * scale[0] - 0.5` (the same for v with
/// `scale[1]`), and the group order its descriptor is aligned over (0: not aligned).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sampling {
    pub scale: [f32; 2],
    pub group_order: u32,
}

impl Sampling {
    /// Version 1 maps by the nominal stride (a power of two, so the scale is exact); version 2 by the map's size
    /// over the image's, since its pooling rounds odd sides up.
    pub fn new(config: &ModelConfig, (w, h): (u32, u32), (map_w, map_h): (u32, u32)) -> Self {
        match config.descriptor.kind {
            DescriptorKind::Unet => {
                let s = 1.0 / config.descriptor_stride() as f32;
                Sampling { scale: [s, s], group_order: 0 }
            }
            DescriptorKind::GroupUnet => Sampling {
                scale: [map_w as f32 / w as f32, map_h as f32 / h as f32],
                group_order: config.group_order as u32,
            },
        }
    }
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct SampleParams {
    map_w: u32,
    map_h: u32,
    dim: u32,
    count: u32,
    scale_x: f32,
    scale_y: f32,
    group_order: u32,
    _pad: u32,
}

/// Cyclic alignment of every field of `desc` (fields of `n` group channels) by `theta` radians:
/// `t = theta * n / 2pi` wrapped to [0, n), `i0 = floor(t)`, `f = t - i0`,
/// `out[d*n + j] = (1 - f) * desc[d*n + (j + i0) % n] + f * desc[d*n + (j + i0 + 1) % n]`.
/// A rotation of the image by 2pi/n moves group channel r to r + 1 and adds one bin to theta; the two cancel.
pub fn align_reference(desc: &mut [f32], theta: f32, n: usize) {
    let mut t = theta * (n as f32 / TAU);
    t -= n as f32 * (t / n as f32).floor();
    let i0 = t.floor();
    let f = t - i0;
    let i0 = i0 as usize % n;
    // the config allows group orders up to 32
    let mut field = [0f32; 32];
    let field = &mut field[..n];
    for chunk in desc.chunks_exact_mut(n) {
        field.copy_from_slice(chunk);
        for (j, out) in chunk.iter_mut().enumerate() {
            *out = (1.0 - f) * field[(j + i0) % n] + f * field[(j + i0 + 1) % n];
        }
    }
}

/// Reference: bilinear sample of `map` at each keypoint (clamped to the map), aligned when `sampling` says so,
/// L2-renormalised; row-major `[keypoints, dim]`.
pub fn sample_reference(map: &Map, sampling: Sampling, keypoints: &[KeypointRecord]) -> Vec<f32> {
    let mut out = Vec::with_capacity(keypoints.len() * map.c);
    for kp in keypoints {
        let u = ((kp.x + 0.5) * sampling.scale[0] - 0.5).clamp(0.0, (map.w - 1) as f32);
        let v = ((kp.y + 0.5) * sampling.scale[1] - 0.5).clamp(0.0, (map.h - 1) as f32);
        let (x0, y0) = (u.floor() as usize, v.floor() as usize);
        let (x1, y1) = ((x0 + 1).min(map.w - 1), (y0 + 1).min(map.h - 1));
        let (fx, fy) = (u - x0 as f32, v - y0 as f32);
        let start = out.len();
        for c in 0..map.c {
            let top = map.at(c, y0, x0) * (1.0 - fx) + map.at(c, y0, x1) * fx;
            let bottom = map.at(c, y1, x0) * (1.0 - fx) + map.at(c, y1, x1) * fx;
            out.push(top * (1.0 - fy) + bottom * fy);
        }
        if sampling.group_order > 0 {
            align_reference(&mut out[start..], kp.orientation, sampling.group_order as usize);
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
    sampling: Sampling,
    descriptors: &wgpu::Buffer,
) -> Dispatch {
    let [scale_x, scale_y] = sampling.scale;
    let params = SampleParams { map_w, map_h, dim, count, scale_x, scale_y, group_order: sampling.group_order, _pad: 0 };
    let p = gpu.uniform("sample params", &params);
    let bindings = [(0, &p), (1, keypoints), (2, map), (3, descriptors)];
    gpu.dispatch(SHADER, "sample_descriptors", &bindings, groups_1d(count, 64))
}
