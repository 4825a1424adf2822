//! Dense convolution with fused bias and ReLU (shaders/conv.wgsl): the detector's lifting and group convolutions
//! (expanded filters, valid padding) and the descriptor's convolutions (zero same padding).

use super::Map;
use crate::gpu::{groups_2d, Dispatch, Gpu, Shader};
use crate::weights::ConvWeights;

pub const SHADER: Shader = Shader { name: "conv", source: include_str!("../../shaders/conv.wgsl") };

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct ConvParams {
    in_w: u32,
    in_h: u32,
    out_w: u32,
    out_h: u32,
    c_in: u32,
    c_out: u32,
    k: u32,
    pad: u32,
    relu: u32,
    _pad: [u32; 3],
}

/// Output size of a convolution: `n + 2*pad - k + 1`, or 0 when the input is too small.
pub fn out_len(n: usize, k: usize, pad: usize) -> usize {
    (n + 2 * pad + 1).saturating_sub(k)
}

/// Reference: `y[o,p] = b[o] + sum W[o,c,dy,dx] x[c, p + (dy,dx) - pad]`, accumulated in f64.
pub fn conv2d_reference(x: &Map, conv: &ConvWeights, pad: usize, relu: bool) -> Map {
    let s = &conv.spec;
    assert_eq!(x.c, s.c_in, "{}: input has {} channels, the layer takes {}", s.name, x.c, s.c_in);
    let (oh, ow) = (out_len(x.h, s.k, pad), out_len(x.w, s.k, pad));
    let mut out = Map::zeros(s.c_out, oh, ow);
    for o in 0..s.c_out {
        for y in 0..oh {
            for xx in 0..ow {
                let mut acc = conv.bias[o] as f64;
                for c in 0..s.c_in {
                    for dy in 0..s.k {
                        let iy = (y + dy) as isize - pad as isize;
                        if iy < 0 || iy >= x.h as isize {
                            continue;
                        }
                        for dx in 0..s.k {
                            let ix = (xx + dx) as isize - pad as isize;
                            if ix < 0 || ix >= x.w as isize {
                                continue;
                            }
                            let w = conv.weight[((o * s.c_in + c) * s.k + dy) * s.k + dx] as f64;
                            acc += w * x.at(c, iy as usize, ix as usize) as f64;
                        }
                    }
                }
                let v = if relu { acc.max(0.0) } else { acc };
                out.data[(o * oh + y) * ow + xx] = v as f32;
            }
        }
    }
    out
}

/// Weights packed for the kernel: `[c_out/4][c_in][k][k]` x 4 output channels.
pub fn pack_weights(conv: &ConvWeights) -> Vec<f32> {
    let s = &conv.spec;
    let kk = s.k * s.k;
    let mut packed = vec![0f32; s.c_out * s.c_in * kk];
    for o in 0..s.c_out {
        for c in 0..s.c_in {
            for t in 0..kk {
                packed[(((o / 4) * s.c_in + c) * kk + t) * 4 + o % 4] = conv.weight[(o * s.c_in + c) * kk + t];
            }
        }
    }
    packed
}

/// Weights and bias of one layer, uploaded once.
pub struct GpuConv {
    pub spec: crate::config::ConvSpec,
    /// The packed weights, then the bias as c_out/4 vec4s: one storage binding for both, so that the fused
    /// orientation pooling stays within the 4 storage buffers per stage of downlevel adapters (GL).
    filters: wgpu::Buffer,
}

impl GpuConv {
    pub fn upload(gpu: &Gpu, conv: &ConvWeights) -> Self {
        let mut filters = pack_weights(conv);
        filters.extend_from_slice(&conv.bias);
        GpuConv { spec: conv.spec.clone(), filters: gpu.storage_with(&conv.spec.name, bytemuck::cast_slice(&filters)) }
    }

    /// Packed weights followed by the bias (see the shaders' `bias_base`).
    pub fn filters(&self) -> &wgpu::Buffer {
        &self.filters
    }

    /// One convolution of an `in_w` x `in_h` map in `input` into `output`.
    pub fn dispatch(
        &self,
        gpu: &Gpu,
        input: &wgpu::Buffer,
        output: &wgpu::Buffer,
        (in_w, in_h): (u32, u32),
        pad: u32,
        relu: bool,
    ) -> Dispatch {
        let s = &self.spec;
        let out_w = out_len(in_w as usize, s.k, pad as usize) as u32;
        let out_h = out_len(in_h as usize, s.k, pad as usize) as u32;
        let params = ConvParams {
            in_w,
            in_h,
            out_w,
            out_h,
            c_in: s.c_in as u32,
            c_out: s.c_out as u32,
            k: s.k as u32,
            pad,
            relu: relu as u32,
            _pad: [0; 3],
        };
        let p = gpu.uniform("conv params", &params);
        let bindings = [(0, &p), (1, input), (2, &self.filters), (4, output)];
        gpu.dispatch(SHADER, "conv2d", &bindings, groups_2d(out_w, out_h, 8, s.c_out as u32 / 4))
    }
}
