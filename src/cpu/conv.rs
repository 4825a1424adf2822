//! Convolutions on the CPU: implicit GEMMs over channels-last maps (see `hwc`), split into bands of output
//! positions that rayon runs in parallel. Narrow layers (at most 32 output channels) use the direct micro-kernel of
//! `simd`; wider ones, and machines without AVX2, use the `gemm` crate on the same layout with the same packed
//! weights.

use crate::error::Result;
use super::hwc::{channel_stride, BufferPool, HwcMap};
use super::simd::{ConvGeom, MAX_PX};
use crate::config::ConvSpec;
use crate::ops::Map;
use crate::weights::ConvWeights;
use rayon::prelude::*;

/// Which inner loop runs the narrow layers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kernel {
    /// Direct micro-kernel with 16-lane vectors.
    Avx512,
    /// Direct micro-kernel with 8-lane vectors.
    Avx2,
    /// The `gemm` crate for every layer (any architecture).
    Gemm,
}

impl Kernel {
    /// The fastest this machine runs.
    pub fn best() -> Kernel {
        Self::available()[0]
    }

    /// Every kernel this machine can run, fastest first.
    pub fn available() -> Vec<Kernel> {
        let mut kernels = Vec::new();
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx512f") {
                kernels.push(Kernel::Avx512);
            }
            if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
                kernels.push(Kernel::Avx2);
            }
        }
        kernels.push(Kernel::Gemm);
        kernels
    }

    /// Whether this CPU has the instructions the kernel needs (running it elsewhere would be undefined behaviour, so
    /// `conv` checks).
    pub fn is_available(self) -> bool {
        Self::available().contains(&self)
    }

    pub fn name(self) -> &'static str {
        match self {
            Kernel::Avx512 => "AVX-512",
            Kernel::Avx2 => "AVX2",
            Kernel::Gemm => "gemm crate",
        }
    }
}

/// A layer's weights packed once: `[dy][dx][c < in_cs][o < out_cs]`, zeros in the padding channels, so that the
/// inputs of one filter row are one contiguous run of the input map.
pub struct PackedConv {
    pub spec: ConvSpec,
    pub in_cs: usize,
    pub out_cs: usize,
    weights: Vec<f32>,
    bias: Vec<f32>,
    /// Layers of 8 output channels (out_cs 8) also as two-row vectors for the AVX-512 kernel:
    /// `[t < k + 1][j < k * in_cs][filter row t's 8 outputs, filter row t-1's 8 outputs]`, zeros where the row does not
    /// exist (`simd::paired_avx512`).
    paired: Vec<f32>,
}

impl PackedConv {
    pub fn new(conv: &ConvWeights) -> Self {
        let s = &conv.spec;
        let (in_cs, out_cs) = (channel_stride(s.c_in), channel_stride(s.c_out));
        let mut weights = vec![0f32; s.k * s.k * in_cs * out_cs];
        for o in 0..s.c_out {
            for c in 0..s.c_in {
                for dy in 0..s.k {
                    for dx in 0..s.k {
                        weights[((dy * s.k + dx) * in_cs + c) * out_cs + o] = conv.weight[((o * s.c_in + c) * s.k + dy) * s.k + dx];
                    }
                }
            }
        }
        let mut bias = vec![0f32; out_cs];
        bias[..s.c_out].copy_from_slice(&conv.bias);
        let mut paired = Vec::new();
        if out_cs == 8 {
            let row = s.k * in_cs * 8; // one filter row of `weights`
            paired = vec![0f32; (s.k + 1) * row * 2];
            for t in 0..=s.k {
                for j in 0..s.k * in_cs {
                    let at = (t * s.k * in_cs + j) * 16;
                    if t < s.k {
                        paired[at..at + 8].copy_from_slice(&weights[t * row + j * 8..][..8]);
                    }
                    if t > 0 {
                        paired[at + 8..at + 16].copy_from_slice(&weights[(t - 1) * row + j * 8..][..8]);
                    }
                }
            }
        }
        PackedConv { spec: s.clone(), in_cs, out_cs, weights, bias, paired }
    }

    /// Multiply-adds of one output pixel as the model counts them (padding channels excluded).
    pub fn macs_per_pixel(&self) -> usize {
        self.spec.c_out * self.spec.c_in * self.spec.k * self.spec.k
    }
}

/// Wider layers go to the GEMM crate, which blocks for the caches; the direct kernel keeps all weights in L1.
const DIRECT_MAX_OUT: usize = 32;

/// Output rows per parallel task: enough positions to amortise a task, few enough to balance the threads; even, so
/// that the direct kernel's two-row tiles never straddle two tasks.
fn band_rows(rows: usize, pitch: usize) -> usize {
    let threads = rayon::current_num_threads().max(1);
    let positions = (rows * pitch).div_ceil(8 * threads).clamp(1024, 16384);
    positions.div_ceil(pitch).next_multiple_of(2)
}

/// A raw pointer that may cross threads: every band writes its own disjoint range of the output.
#[derive(Clone, Copy)]
struct Shared(*mut f32);
unsafe impl Send for Shared {}
unsafe impl Sync for Shared {}

impl Shared {
    /// Through a method, so that closures capture the `Send` wrapper and not the bare pointer field.
    fn ptr(self) -> *mut f32 {
        self.0
    }
}

/// One convolution with bias and optional ReLU. `same` = false: valid padding on a map without border (the detector;
/// the output keeps the input's pitch and shrinks by k-1). `same` = true: zero padding k/2 on a map whose border is
/// k/2 (the descriptor; the output has the same size, pitch and border).
pub fn conv(pool: &mut BufferPool, x: &HwcMap, layer: &PackedConv, same: bool, relu: bool, kernel: Kernel) -> Result<HwcMap> {
    let s = &layer.spec;
    assert_eq!(x.c, s.c_in, "{}: input has {} channels, the layer takes {}", s.name, x.c, s.c_in);
    assert_eq!(x.cs, layer.in_cs, "{}: input channel stride", s.name);
    let k = s.k;
    let (w, h, pad) = if same {
        assert_eq!(x.pad, k / 2, "{}: a same convolution needs a border of k/2", s.name);
        (x.w, x.h, x.pad)
    } else {
        assert_eq!(x.pad, 0, "{}: a valid convolution reads a map without border", s.name);
        assert!(x.w >= k && x.h >= k, "{}: input {}x{} is smaller than the kernel", s.name, x.w, x.h);
        (x.w - k + 1, x.h - k + 1, 0)
    };
    let mut out = HwcMap::take(pool, s.c_out, w, h, x.pitch, pad)?;
    let geom = ConvGeom {
        k,
        pitch: x.pitch,
        in_cs: layer.in_cs,
        out_cs: layer.out_cs,
        in_base: 0,
        out_base: pad * (x.pitch + 1),
        relu,
    };
    run_bands(&geom, h, &x.data, layer, &mut out.data, kernel);
    if same {
        out.zero_border();
    }
    Ok(out)
}

/// Output rows `0..rows` in parallel bands of rows.
fn run_bands(g: &ConvGeom, rows: usize, input: &[f32], layer: &PackedConv, out: &mut [f32], kernel: Kernel) {
    let total = rows * g.pitch;
    // The last position reads (k-1) rows and k-1+MAX_PX pixels further; writes stay inside `out`.
    assert!(input.len() >= (total + g.in_base + (g.k - 1) * (g.pitch + 1) + MAX_PX) * g.in_cs, "input too short");
    assert!(out.len() >= (total + g.out_base) * g.out_cs, "output too short");
    assert!(kernel.is_available(), "the {} kernel needs instructions this CPU lacks", kernel.name());
    let kernel = if g.out_cs > DIRECT_MAX_OUT { Kernel::Gemm } else { kernel };
    let band = band_rows(rows, g.pitch);
    let dst = Shared(out.as_mut_ptr());
    (0..rows.div_ceil(band)).into_par_iter().for_each(|b| {
        let band = b * band..((b + 1) * band).min(rows);
        // SAFETY: the asserts above bound every read and write; bands write disjoint output rows.
        unsafe {
            match kernel {
                #[cfg(target_arch = "x86_64")]
                Kernel::Avx512 if g.out_cs == 8 => super::simd::paired_avx512(g, input.as_ptr(), layer.paired.as_ptr(), layer.bias.as_ptr(), dst.ptr(), band),
                #[cfg(target_arch = "x86_64")]
                Kernel::Avx512 => super::simd::direct_avx512(g, input.as_ptr(), layer.weights.as_ptr(), layer.bias.as_ptr(), dst.ptr(), band),
                #[cfg(target_arch = "x86_64")]
                Kernel::Avx2 => super::simd::direct_avx2(g, input.as_ptr(), layer.weights.as_ptr(), layer.bias.as_ptr(), dst.ptr(), band),
                _ => gemm_band(g, input.as_ptr(), layer, dst.ptr(), band.start * g.pitch, band.end * g.pitch),
            }
        }
    });
}

/// The same band as one GEMM per filter row: `dst[p][o] += sum_j in[(p + dy * pitch) * in_cs + j] * w[dy][j][o]`,
/// the input read in place with row stride `in_cs`.
unsafe fn gemm_band(g: &ConvGeom, input: *const f32, layer: &PackedConv, out: *mut f32, p0: usize, p1: usize) {
    let m = p1 - p0;
    let kc = g.k * g.in_cs;
    let dst = out.add((p0 + g.out_base) * g.out_cs);
    let block = std::slice::from_raw_parts_mut(dst, m * g.out_cs);
    for px in block.chunks_exact_mut(g.out_cs) {
        px.copy_from_slice(&layer.bias);
    }
    for dy in 0..g.k {
        let lhs = input.add((p0 + g.in_base + dy * g.pitch) * g.in_cs);
        let rhs = layer.weights.as_ptr().add(dy * kc * g.out_cs);
        gemm::gemm(
            m,
            g.out_cs,
            kc,
            dst,
            1,
            g.out_cs as isize,
            true,
            lhs,
            1,
            g.in_cs as isize,
            rhs,
            1,
            g.out_cs as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
    if g.relu {
        block.iter_mut().for_each(|v| *v = v.max(0.0));
    }
}

/// A 1x1 convolution (the descriptor head, no ReLU) written channel-major, the layout sampling reads. Each task
/// runs one GEMM over a band of whole stored rows (border and garbage columns included, as in `conv`) into a
/// channel-major scratch block, then copies the content columns out with the bias added: one GEMM per map row would
/// be too small to amortise the GEMM's packing of the weights.
pub fn conv1x1_to_map(pool: &mut BufferPool, x: &HwcMap, layer: &PackedConv) -> Result<Map> {
    let s = &layer.spec;
    assert_eq!(s.k, 1, "{}: not a 1x1 convolution", s.name);
    assert_eq!((x.c, x.cs), (s.c_in, layer.in_cs), "{}: input channels", s.name);
    let (w, h, c_out, pitch) = (x.w, x.h, s.c_out, x.pitch);
    let plane = w * h;
    let mut data = pool.take(c_out * plane)?;
    let dst = Shared(data.as_mut_ptr());
    let rows_per_task = (2048 / pitch).max(1);
    (0..h.div_ceil(rows_per_task)).into_par_iter().for_each(|t| {
        let rows = t * rows_per_task..((t + 1) * rows_per_task).min(h);
        let m = rows.len() * pitch;
        let mut block = vec![0f32; c_out * m];
        // SAFETY: the GEMM reads the stored rows `rows` of `x` (pixel index p + pad * (pitch + 1) for virtual
        // position p, inside the map) and writes `block`; the copy writes rows `rows` of every plane, this task's only.
        unsafe {
            gemm::gemm(
                m,
                c_out,
                layer.in_cs,
                block.as_mut_ptr(),
                m as isize,
                1,
                false,
                x.data.as_ptr().add((rows.start * pitch + x.pad * (pitch + 1)) * x.cs),
                1,
                x.cs as isize,
                layer.weights.as_ptr(),
                1,
                layer.out_cs as isize,
                1.0,
                1.0,
                false,
                false,
                false,
                gemm::Parallelism::None,
            );
            for (o, channel) in block.chunks_exact(m).enumerate() {
                for (i, y) in rows.clone().enumerate() {
                    let out = std::slice::from_raw_parts_mut(dst.ptr().add(o * plane + y * w), w);
                    for (v, &b) in out.iter_mut().zip(&channel[i * pitch..i * pitch + w]) {
                        *v = b + layer.bias[o];
                    }
                }
            }
        }
    });
    Ok(Map { c: c_out, h, w, data })
}
