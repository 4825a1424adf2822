//! The descriptor U-Net's pooling, bilinear resizing (+ skip concatenation) and L2 normalisation
//! (shaders/unet.wgsl).

use super::{Map, Precision};
use crate::config::PoolMode;
use crate::gpu::{groups_2d, Dispatch, Gpu, Shader};

/// unet.wgsl with the storage types of its input (and skip) and output prepended.
macro_rules! unet_variant {
    ($name:literal, $types:literal) => {
        Shader { name: $name, source: concat!($types, include_str!("../../shaders/unet.wgsl")) }
    };
}

pub const SHADER: Shader = unet_variant!("unet", "alias IN_T = f32;\nalias OUT_T = f32;\n");
pub const SHADER_F16: Shader = unet_variant!("unet f16", "enable f16;\nalias IN_T = f16;\nalias OUT_T = f16;\n");
pub const SHADER_F16_TO_F32: Shader = unet_variant!("unet f16 to f32", "enable f16;\nalias IN_T = f16;\nalias OUT_T = f32;\n");

/// The variant reading `input` and writing `output` precision.
fn shader((input, output): (Precision, Precision)) -> Shader {
    match (input, output) {
        (Precision::F32, Precision::F32) => SHADER,
        (Precision::F16, Precision::F16) => SHADER_F16,
        (Precision::F16, Precision::F32) => SHADER_F16_TO_F32,
        (Precision::F32, Precision::F16) => panic!("no U-Net op narrows f32 to f16: the convolutions do"),
    }
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Shape {
    in_w: u32,
    in_h: u32,
    out_w: u32,
    out_h: u32,
    c: u32,
    c_skip: u32,
    _pad: [u32; 2],
}

/// Reference: 2x2 mean, stride 2, odd last row and column dropped.
pub fn avgpool2_reference(x: &Map) -> Map {
    let (oh, ow) = (x.h / 2, x.w / 2);
    let mut out = Map::zeros(x.c, oh, ow);
    for c in 0..x.c {
        for y in 0..oh {
            for xx in 0..ow {
                let sum = (x.at(c, 2 * y, 2 * xx) + x.at(c, 2 * y, 2 * xx + 1))
                    + (x.at(c, 2 * y + 1, 2 * xx) + x.at(c, 2 * y + 1, 2 * xx + 1));
                out.data[(c * oh + y) * ow + xx] = sum * 0.25;
            }
        }
    }
    out
}

/// Source coordinate of output index u: (i0, i1, fraction), as PyTorch's bilinear with align_corners = false.
pub fn bilinear_source(u: usize, n_in: usize, n_out: usize) -> (usize, usize, f32) {
    let c = ((u as f32 + 0.5) * (n_in as f32 / n_out as f32) - 0.5).max(0.0);
    let i0 = (c.floor() as usize).min(n_in - 1);
    let i1 = (i0 + 1).min(n_in - 1);
    (i0, i1, c - i0 as f32)
}

/// Reference of the descriptor's pooling by `mode`.
pub fn pool_reference(x: &Map, mode: PoolMode) -> Map {
    match mode {
        PoolMode::Mean2x2 => avgpool2_reference(x),
        PoolMode::BilinearHalf => {
            let (w, h) = (mode.halve(x.w as u32) as usize, mode.halve(x.h as u32) as usize);
            resize_concat_reference(x, None, w, h)
        }
    }
}

/// Reference: `concat([upsample_bilinear(y, size of skip), skip])`.
pub fn upsample_concat_reference(y: &Map, skip: &Map) -> Map {
    resize_concat_reference(y, Some(skip), skip.w, skip.h)
}

/// Reference: `y` resized bilinearly to `ow` x `oh` (align_corners = false), followed by the channels of `skip`.
fn resize_concat_reference(y: &Map, skip: Option<&Map>, ow: usize, oh: usize) -> Map {
    let skip_c = skip.map_or(0, |s| s.c);
    let mut out = Map::zeros(y.c + skip_c, oh, ow);
    for c in 0..y.c {
        for v in 0..oh {
            let (y0, y1, fy) = bilinear_source(v, y.h, oh);
            for u in 0..ow {
                let (x0, x1, fx) = bilinear_source(u, y.w, ow);
                let top = y.at(c, y0, x0) * (1.0 - fx) + y.at(c, y0, x1) * fx;
                let bottom = y.at(c, y1, x0) * (1.0 - fx) + y.at(c, y1, x1) * fx;
                out.data[(c * oh + v) * ow + u] = top * (1.0 - fy) + bottom * fy;
            }
        }
    }
    if let Some(skip) = skip {
        out.data[y.c * oh * ow..].copy_from_slice(&skip.data);
    }
    out
}

/// Reference: every pixel's channel vector divided by max(its norm, 1e-12).
pub fn l2norm_reference(x: &Map) -> Map {
    let plane = x.h * x.w;
    let mut out = x.clone();
    for p in 0..plane {
        let sum: f32 = (0..x.c).map(|c| x.data[c * plane + p] * x.data[c * plane + p]).sum();
        let inv = 1.0 / sum.sqrt().max(1e-12);
        for c in 0..x.c {
            out.data[c * plane + p] *= inv;
        }
    }
    out
}

fn shape(in_w: u32, in_h: u32, out_w: u32, out_h: u32, c: u32, c_skip: u32) -> Shape {
    Shape { in_w, in_h, out_w, out_h, c, c_skip, _pad: [0; 2] }
}

/// The descriptor's pooling by `mode` of a `c` x `h` x `w` map.
/// `io`: the storage precision of input and output (as for `upsample_concat` and `l2norm`).
pub fn pool(gpu: &Gpu, input: &wgpu::Buffer, output: &wgpu::Buffer, (w, h): (u32, u32), c: u32, mode: PoolMode, io: (Precision, Precision)) -> Dispatch {
    let (ow, oh) = (mode.halve(w), mode.halve(h));
    match mode {
        PoolMode::Mean2x2 => {
            let p = gpu.uniform("pool shape", &shape(w, h, ow, oh, c, 0));
            gpu.dispatch(shader(io), "avgpool2", &[(0, &p), (1, input), (2, output)], groups_2d(ow, oh, 8, c))
        }
        // Bilinear resizing is resize_concat without skip channels; the unused skip binding gets the input.
        PoolMode::BilinearHalf => upsample_concat(gpu, input, input, output, (w, h), (ow, oh), c, 0, io),
    }
}

/// `y` is `c` x `in`; `skip` is `c_skip` x `out`; `output` receives `c + c_skip` x `out`: `y` resized bilinearly,
/// then the skip.
pub fn upsample_concat(
    gpu: &Gpu,
    y: &wgpu::Buffer,
    skip: &wgpu::Buffer,
    output: &wgpu::Buffer,
    (in_w, in_h): (u32, u32),
    (out_w, out_h): (u32, u32),
    c: u32,
    c_skip: u32,
    io: (Precision, Precision),
) -> Dispatch {
    let p = gpu.uniform("upsample shape", &shape(in_w, in_h, out_w, out_h, c, c_skip));
    let bindings = [(0, &p), (1, y), (2, output), (3, skip)];
    gpu.dispatch(shader(io), "resize_concat", &bindings, groups_2d(out_w, out_h, 8, c + c_skip))
}

pub fn l2norm(gpu: &Gpu, input: &wgpu::Buffer, output: &wgpu::Buffer, (w, h): (u32, u32), c: u32, io: (Precision, Precision)) -> Dispatch {
    let p = gpu.uniform("l2norm shape", &shape(w, h, w, h, c, 0));
    gpu.dispatch(shader(io), "l2norm", &[(0, &p), (1, input), (2, output)], groups_2d(w, h, 8, 1))
}
