//! Raw pixels to normalised gray, and pyramid resampling (shaders/preprocess.wgsl).

use super::Map;
use crate::config::InputNorm;
use crate::error::{Error, Result};
use crate::gpu::{groups_2d, Dispatch, Gpu, Shader};
use crate::image_io::Image;

pub const SHADER: Shader = Shader { name: "preprocess", source: include_str!("../../shaders/preprocess.wgsl") };

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct GrayParams {
    width: u32,
    height: u32,
    channels: u32,
    bits: u32,
    mean: f32,
    std: f32,
    _pad: [u32; 2],
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct ResizeParams {
    in_w: u32,
    in_h: u32,
    out_w: u32,
    out_h: u32,
    axis: u32,
    ratio: f32,
    radius: f32,
    out_offset: u32,
}

/// Reference: normalised gray `[1, h, w]` (docs/model.md, Input).
pub fn to_gray_reference(image: &Image, norm: InputNorm) -> Map {
    let (w, h, ch) = (image.width as usize, image.height as usize, image.channels as usize);
    let full = if image.bits() == 8 { 255.0f32 } else { 65535.0 };
    let data = (0..w * h)
        .map(|p| {
            let base = p * ch;
            let g = if ch >= 3 {
                0.299 * image.sample(base) + 0.587 * image.sample(base + 1) + 0.114 * image.sample(base + 2)
            } else {
                image.sample(base)
            };
            (g / full - norm.mean) / norm.std
        })
        .collect();
    Map::new(1, h, w, data)
}

/// Reference: resamples every channel of `src` to `out_w` x `out_h` with the separable triangle filter.
pub fn resize_reference(src: &Map, out_w: usize, out_h: usize) -> Map {
    let along_x = resize_axis_reference(src, out_w, src.h, 0);
    resize_axis_reference(&along_x, out_w, out_h, 1)
}

fn resize_axis_reference(src: &Map, out_w: usize, out_h: usize, axis: usize) -> Map {
    let (n, m) = if axis == 0 { (src.w, out_w) } else { (src.h, out_h) };
    let ratio = n as f32 / m as f32;
    let radius = ratio.max(1.0);
    let mut out = Map::zeros(src.c, out_h, out_w);
    for c in 0..src.c {
        for y in 0..out_h {
            for x in 0..out_w {
                let u = if axis == 0 { x } else { y };
                let centre = (u as f32 + 0.5) * ratio - 0.5;
                let (lo, hi) = ((centre - radius).ceil() as i32, (centre + radius).floor() as i32);
                let (mut acc, mut wsum) = (0f32, 0f32);
                for j in lo..=hi {
                    let w = (1.0 - (j as f32 - centre).abs() / radius).max(0.0);
                    let t = j.clamp(0, n as i32 - 1) as usize;
                    let v = if axis == 0 { src.at(c, y, t) } else { src.at(c, t, x) };
                    acc += w * v;
                    wsum += w;
                }
                out.data[(c * out_h + y) * out_w + x] = acc / wsum;
            }
        }
    }
    out
}

/// GPU: raw samples (`Image::packed_words`) to normalised gray.
pub fn to_gray(gpu: &Gpu, image: &Image, norm: InputNorm, raw: &wgpu::Buffer, gray: &wgpu::Buffer) -> Dispatch {
    let params = GrayParams {
        width: image.width,
        height: image.height,
        channels: image.channels,
        bits: image.bits(),
        mean: norm.mean,
        std: norm.std,
        _pad: [0; 2],
    };
    let p = gpu.uniform("gray params", &params);
    gpu.dispatch(SHADER, "to_gray", &[(0, &p), (1, raw), (2, gray)], groups_2d(image.width, image.height, 8, 1))
}

/// GPU: a host application's texture (float-filterable, not sRGB) to normalised gray.
pub fn texture_to_gray(gpu: &Gpu, texture: &wgpu::Texture, norm: InputNorm, gray: &wgpu::Buffer) -> Result<Dispatch> {
    let format = texture.format();
    let filterable = matches!(
        format.sample_type(None, Some(gpu.features)),
        Some(wgpu::TextureSampleType::Float { filterable: true })
    );
    if format.is_srgb() || !filterable || !texture.usage().contains(wgpu::TextureUsages::TEXTURE_BINDING) {
        return Err(Error::Invalid(format!(
            "texture format {format:?} with usage {:?}: extraction needs TEXTURE_BINDING usage and a linear              float-filterable colour format (for example Rgba8Unorm or Bgra8Unorm; not sRGB)",
            texture.usage()
        )));
    }
    let channels = match format.components() {
        1 | 2 => 1,
        _ => 4,
    };
    let params = GrayParams {
        width: texture.width(),
        height: texture.height(),
        channels,
        bits: 8,
        mean: norm.mean,
        std: norm.std,
        _pad: [0; 2],
    };
    let p = gpu.uniform("texture gray params", &params);
    let view = texture.create_view(&Default::default());
    let entries = [
        wgpu::BindGroupEntry { binding: 0, resource: p.as_entire_binding() },
        wgpu::BindGroupEntry { binding: 2, resource: gray.as_entire_binding() },
        wgpu::BindGroupEntry { binding: 6, resource: wgpu::BindingResource::TextureView(&view) },
    ];
    Ok(gpu.dispatch_entries(SHADER, "texture_to_gray", &entries, groups_2d(texture.width(), texture.height(), 8, 1)))
}

/// GPU: resamples a one-channel map from `(in_w, in_h)` to `(out_w, out_h)` through `tmp` (out_w x in_h).
pub fn resize(
    gpu: &Gpu,
    src: &wgpu::Buffer,
    tmp: &wgpu::Buffer,
    dst: &wgpu::Buffer,
    in_size: (u32, u32),
    out_size: (u32, u32),
) -> Vec<Dispatch> {
    resize_into(gpu, src, tmp, (dst, 0), in_size, out_size)
}

/// `resize` writing at a float offset of `dst` (a level of the pyramid buffer). The map read is the first
/// `in_w * in_h` floats of `src`.
pub fn resize_into(
    gpu: &Gpu,
    src: &wgpu::Buffer,
    tmp: &wgpu::Buffer,
    (dst, dst_offset): (&wgpu::Buffer, u32),
    (in_w, in_h): (u32, u32),
    (out_w, out_h): (u32, u32),
) -> Vec<Dispatch> {
    let pass = |axis: u32, input: &wgpu::Buffer, output: &wgpu::Buffer, iw: u32, ih: u32, ow: u32, oh: u32| {
        let ratio = if axis == 0 { iw as f32 / ow as f32 } else { ih as f32 / oh as f32 };
        let out_offset = if axis == 1 { dst_offset } else { 0 };
        let params = ResizeParams { in_w: iw, in_h: ih, out_w: ow, out_h: oh, axis, ratio, radius: ratio.max(1.0), out_offset };
        let p = gpu.uniform("resize params", &params);
        gpu.dispatch(SHADER, "resize_axis", &[(3, &p), (4, input), (5, output)], groups_2d(ow, oh, 8, 1))
    };
    vec![pass(0, src, tmp, in_w, in_h, out_w, in_h), pass(1, tmp, dst, out_w, in_h, out_w, out_h)]
}
