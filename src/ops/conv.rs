//! Dense convolution with fused bias and ReLU (shaders/conv.wgsl): the detector's lifting and group convolutions
//! (expanded filters, valid padding) and the descriptor's convolutions (zero same padding). The kernel's register
//! tile and staging depth are chosen per layer (`Tiling`) and compiled in as override constants.

use super::Map;
use crate::gpu::{Dispatch, Gpu, Shader};
use super::Precision;
use crate::config::ConvSpec;
use crate::weights::ConvWeights;

/// conv.wgsl with the storage types of its input, output and filters and its way of reading filters
/// (shaders/conv_filters_*.wgsl) prepended: for each storage variant, one shader that reads filters from workgroup
/// memory and one that broadcasts them across subgroups (`GpuConv::shader` picks).
macro_rules! conv_variants {
    ($shared:ident, $subgroup:ident, $name:literal, $types:literal) => {
        pub const $shared: Shader = Shader {
            name: $name,
            source: concat!($types, include_str!("../../shaders/conv_filters_shared.wgsl"), include_str!("../../shaders/conv.wgsl")),
        };
        pub const $subgroup: Shader = Shader {
            name: concat!($name, " subgroup"),
            source: concat!($types, include_str!("../../shaders/conv_filters_subgroup.wgsl"), include_str!("../../shaders/conv.wgsl")),
        };
    };
}

conv_variants!(SHADER, SHADER_SUBGROUP, "conv", "alias IN_T = f32;\nalias OUT_T = f32;\nalias W_T = f32;\n");
// f16 filters and output, f32 input (the first layer reads the f32 gray image)
conv_variants!(
    SHADER_F32_TO_F16,
    SHADER_F32_TO_F16_SUBGROUP,
    "conv f32 to f16",
    "enable f16;\nalias IN_T = f32;\nalias OUT_T = f16;\nalias W_T = f16;\n"
);
conv_variants!(SHADER_F16, SHADER_F16_SUBGROUP, "conv f16", "enable f16;\nalias IN_T = f16;\nalias OUT_T = f16;\nalias W_T = f16;\n");

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

/// Workgroup memory for the staged input tiles and filter taps, in bytes: at most 32 KiB, and 32 B below the
/// adapter's limit (downlevel GL adapters allow 16,352 B).
fn workgroup_floats(limit_bytes: u32) -> u32 {
    (limit_bytes.min(32768) - 32) / 4
}

/// Maps one dispatch can cover (conv.wgsl's MAX_PARTS); the pyramid has at most `config::MAX_LEVELS`.
pub const MAX_PARTS: usize = 8;
/// A workgroup is WG_X x WG_Y invocations (conv.wgsl), covering WG_X * PX x WG_Y pixels.
const WG_X: u32 = 8;
const WG_Y: u32 = 8;
/// Pixels per invocation along x (conv.wgsl's PX).
const PX: u32 = 4;
/// Group channels the fused orientation pooling holds in one invocation (4 vec4s; `ModelConfig::validate`).
pub const MAX_POOLED: usize = 16;

/// The kernel's shape for one layer: 4 pixels x `4 * ocv` output channels per invocation (`ocv` 1 to 4), `chunk`
/// input channels staged in workgroup memory at a time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tiling {
    pub ocv: u32,
    pub chunk: u32,
}

impl Tiling {
    /// The deepest staging that fits `budget` floats of workgroup memory and divides `c_in`: per input channel,
    /// its input tile with halo and its filter taps (`k * k * ocv` vec4s).
    fn new(c_in: usize, k: usize, ocv: u32, budget: u32) -> Self {
        let k = k as u32;
        // conv.wgsl's TW: a tile row padded to whole vec4s
        let row = (WG_X * PX + k - 1).next_multiple_of(4);
        let per_channel = row * (WG_Y + k - 1) + 4 * k * k * ocv;
        let chunk = (1..=c_in as u32).rev().find(|&c| c_in as u32 % c == 0 && c * per_channel <= budget).unwrap_or(1);
        Tiling { ocv, chunk }
    }

    /// The tiling of a layer on an adapter with `workgroup_bytes` of workgroup memory; `pooled`: the detector's
    /// last layer, fused with orientation pooling.
    pub fn for_layer(spec: &ConvSpec, pooled: bool, workgroup_bytes: u32) -> Self {
        let budget = workgroup_floats(workgroup_bytes);
        match pooled {
            true => Self::pooled(spec.c_in, spec.c_out, spec.k, budget),
            false => Self::conv(spec.c_in, spec.c_out, spec.k, budget),
        }
    }

    /// The override constants of conv.wgsl for this tiling of `spec`.
    pub fn constants(self, spec: &ConvSpec, pad: u32, relu: bool) -> Vec<(&'static str, f64)> {
        vec![
            ("K", spec.k as f64),
            ("C_IN", spec.c_in as f64),
            ("CHUNK", self.chunk as f64),
            ("PAD", pad as f64),
            ("RELU", relu as u32 as f64),
            ("OCV", self.ocv as f64),
        ]
    }

    /// A plain convolution: up to 16 output channels per invocation.
    fn conv(c_in: usize, c_out: usize, k: usize, budget: u32) -> Self {
        let vec4s = (c_out / 4) as u32;
        Self::new(c_in, k, [4, 2, 1].into_iter().find(|d| vec4s % d == 0).unwrap_or(1), budget)
    }

    /// The fused orientation pooling: all `c_out` (at most `MAX_POOLED`) group channels of a pixel in one
    /// invocation.
    fn pooled(c_in: usize, c_out: usize, k: usize, budget: u32) -> Self {
        assert!(c_out <= MAX_POOLED, "fused pooling of {c_out} channels: at most {MAX_POOLED}");
        Self::new(c_in, k, (c_out / 4) as u32, budget)
    }

    /// Output pixels of one workgroup: (width, height).
    fn footprint(self) -> (u32, u32) {
        (WG_X * PX, WG_Y)
    }
}

/// Weights packed for a tiling: `[c_out / (4 ocv)][c_in][k][k][ocv]` x 4 output channels, then the bias.
pub fn pack_filters(conv: &ConvWeights, tiling: Tiling) -> Vec<f32> {
    let s = &conv.spec;
    let kk = s.k * s.k;
    let per_block = 4 * tiling.ocv as usize;
    let mut packed = vec![0f32; s.c_out * s.c_in * kk];
    for o in 0..s.c_out {
        let (block, j, lane) = (o / per_block, (o % per_block) / 4, o % 4);
        for c in 0..s.c_in {
            for t in 0..kk {
                packed[((((block * s.c_in + c) * kk + t) * tiling.ocv as usize + j) * 4) + lane] =
                    conv.weight[(o * s.c_in + c) * kk + t];
            }
        }
    }
    packed.extend_from_slice(&conv.bias);
    packed
}

/// One map of a dispatch: the input's size and where input and output start in their buffers (floats).
#[derive(Clone, Copy, Debug)]
pub struct Part {
    pub in_size: (u32, u32),
    pub in_offset: u32,
    pub out_offset: u32,
}

#[repr(C)]
#[derive(Clone, Copy, Default, bytemuck::Pod, bytemuck::Zeroable)]
struct PartParams {
    in_w: u32,
    in_h: u32,
    out_w: u32,
    out_h: u32,
    in_offset: u32,
    out_offset: u32,
    first_group: u32,
    groups_x: u32,
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct ConvParams {
    parts: u32,
    groups: u32,
    c_out: u32,
    _pad: u32,
    part: [PartParams; MAX_PARTS],
}

/// Weights and bias of one layer, uploaded once, packed for the layer's tiling, stored in `precision` (which is
/// also the precision of its output map).
pub struct GpuConv {
    pub spec: ConvSpec,
    pub tiling: Tiling,
    pub precision: Precision,
    /// The packed weights, then the bias as c_out/4 vec4s: one storage binding for both, so that the fused
    /// orientation pooling stays within the 4 storage buffers per stage of downlevel adapters (GL).
    filters: wgpu::Buffer,
}

impl GpuConv {
    /// An f32 layer (`upload_in` for f16).
    pub fn upload(gpu: &Gpu, conv: &ConvWeights) -> Self {
        Self::upload_in(gpu, conv, Precision::F32)
    }

    pub fn upload_in(gpu: &Gpu, conv: &ConvWeights, precision: Precision) -> Self {
        let s = &conv.spec;
        Self::upload_tiled(gpu, conv, Tiling::for_layer(s, false, gpu.limits.max_compute_workgroup_storage_size), precision)
    }

    /// For `conv_orientation_pool`: every group channel of a pixel in one invocation.
    pub fn upload_for_pooling(gpu: &Gpu, conv: &ConvWeights, precision: Precision) -> Self {
        let s = &conv.spec;
        Self::upload_tiled(gpu, conv, Tiling::for_layer(s, true, gpu.limits.max_compute_workgroup_storage_size), precision)
    }

    fn upload_tiled(gpu: &Gpu, conv: &ConvWeights, tiling: Tiling, precision: Precision) -> Self {
        let filters = pack_filters(conv, tiling);
        let bytes = match precision {
            Precision::F32 => bytemuck::cast_slice(&filters).to_vec(),
            Precision::F16 => bytemuck::cast_slice(&filters.iter().map(|&v| half::f16::from_f32(v)).collect::<Vec<_>>()).to_vec(),
        };
        GpuConv { spec: conv.spec.clone(), tiling, precision, filters: gpu.storage_with(&conv.spec.name, &bytes) }
    }

    /// The variant of conv.wgsl reading an `input` map: its filters and output are in the layer's precision. On a
    /// CPU adapter with subgroup operations (lavapipe) the filters are broadcast across each subgroup, which makes
    /// fewer of its costly per-lane loads; a hardware GPU reads a uniform address of workgroup memory as one
    /// broadcast load per vec4, where the subgroup variant would spend 4 shuffles per vec4 instead
    /// (docs/kernel-notes.md, version 3).
    fn shader(&self, gpu: &Gpu, input: Precision) -> Shader {
        let subgroups = gpu.adapter.is_software && gpu.features.contains(wgpu::Features::SUBGROUP);
        match (input, self.precision, subgroups) {
            (Precision::F32, Precision::F32, false) => SHADER,
            (Precision::F32, Precision::F16, false) => SHADER_F32_TO_F16,
            (Precision::F16, Precision::F16, false) => SHADER_F16,
            (Precision::F32, Precision::F32, true) => SHADER_SUBGROUP,
            (Precision::F32, Precision::F16, true) => SHADER_F32_TO_F16_SUBGROUP,
            (Precision::F16, Precision::F16, true) => SHADER_F16_SUBGROUP,
            (Precision::F16, Precision::F32, _) => panic!("an f32 layer reads f32 maps"),
        }
    }

    /// Output size of an input map, with `pad` zeros on every side.
    pub fn out_size(&self, (w, h): (u32, u32), pad: u32) -> (u32, u32) {
        let k = self.spec.k;
        (out_len(w as usize, k, pad as usize) as u32, out_len(h as usize, k, pad as usize) as u32)
    }

    /// One convolution of an `in_w` x `in_h` map in `input` (stored in the layer's precision) into `output`.
    pub fn dispatch(&self, gpu: &Gpu, input: &wgpu::Buffer, output: &wgpu::Buffer, size: (u32, u32), pad: u32, relu: bool) -> Dispatch {
        let part = Part { in_size: size, in_offset: 0, out_offset: 0 };
        self.dispatch_parts(gpu, (input, self.precision), output, &[part], pad, relu)
    }

    /// One convolution of every part (maps at offsets of `input`, stored in the given precision, written at
    /// offsets of `output`), one dispatch.
    pub fn dispatch_parts(&self, gpu: &Gpu, (input, stored): (&wgpu::Buffer, Precision), output: &wgpu::Buffer, parts: &[Part], pad: u32, relu: bool) -> Dispatch {
        let (params, workgroups) = self.params(parts, pad);
        let p = gpu.uniform("conv params", &params);
        let constants = self.constants(pad, relu);
        gpu.dispatch_specialized(self.shader(gpu, stored), "conv2d", &constants, &[(0, &p), (1, input), (2, &self.filters), (4, output)], workgroups)
    }

    /// The fused last layer and orientation pooling (`orientation_pool`): valid padding, no ReLU; the input in the
    /// layer's precision, score and orientation (f32) written from each part's `out_offset`.
    pub fn dispatch_pooled(&self, gpu: &Gpu, input: &wgpu::Buffer, parts: &[Part], score: &wgpu::Buffer, orientation: &wgpu::Buffer) -> Dispatch {
        assert_eq!(self.tiling.ocv as usize * 4, self.spec.c_out, "uploaded with upload_for_pooling");
        let (params, workgroups) = self.params(parts, 0);
        let p = gpu.uniform("pool params", &params);
        let constants = self.constants(0, false);
        let bindings = [(0, &p), (1, input), (2, &self.filters), (5, score), (6, orientation)];
        gpu.dispatch_specialized(self.shader(gpu, self.precision), "conv_orientation_pool", &constants, &bindings, workgroups)
    }

    fn constants(&self, pad: u32, relu: bool) -> Vec<(&'static str, f64)> {
        self.tiling.constants(&self.spec, pad, relu)
    }

    /// The parameter block (parts numbered workgroup after workgroup) and the workgroup grid: tiles over x and y
    /// (65,535 at most per dimension), channel blocks over z.
    fn params(&self, parts: &[Part], pad: u32) -> (ConvParams, [u32; 3]) {
        assert!(!parts.is_empty() && parts.len() <= MAX_PARTS, "{} parts: 1 to {MAX_PARTS} per dispatch", parts.len());
        let (tile_w, tile_h) = self.tiling.footprint();
        let mut params = ConvParams { parts: parts.len() as u32, groups: 0, c_out: self.spec.c_out as u32, _pad: 0, part: Default::default() };
        for (slot, part) in params.part.iter_mut().zip(parts) {
            let (out_w, out_h) = self.out_size(part.in_size, pad);
            let groups_x = out_w.div_ceil(tile_w);
            *slot = PartParams {
                in_w: part.in_size.0,
                in_h: part.in_size.1,
                out_w,
                out_h,
                in_offset: part.in_offset,
                out_offset: part.out_offset,
                first_group: params.groups,
                groups_x,
            };
            params.groups += groups_x * out_h.div_ceil(tile_h);
        }
        let blocks = self.spec.c_out as u32 / (4 * self.tiling.ocv);
        let groups = params.groups.max(1);
        (params, [groups.min(65535), groups.div_ceil(65535), blocks])
    }
}
