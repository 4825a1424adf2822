//! The direct convolution micro-kernel for narrow layers (at most 32 output channels: the whole detector and the
//! descriptor's first level), where a GEMM crate spends more time packing than multiplying. Written once over a
//! small vector trait and compiled for AVX-512 and for AVX2 + FMA; other machines use the GEMM path.
//!
//! A register tile holds PX consecutive output positions of one or two output rows times NV vectors of output
//! channels. For each input row and each of its k*cs inputs under the tile, the weight vectors of the filter rows
//! that meet it are loaded once and every position's input is broadcast into one FMA per output row and vector. With
//! one output row and NV = 1 (16 channels in AVX-512) that is a load per FMA, more than the load ports sustain; two
//! rows share each broadcast between filter rows dy and dy-1, which brings it to about 2/3 of a load per FMA
//! (measured on 16->16 5x5: 152 -> 173 GFLOP/s on one core, docs/cpu-notes.md).

/// Where a convolution reads and writes, in pixels of the channels-last layout (see `hwc`).
#[derive(Clone, Copy, Debug)]
pub struct ConvGeom {
    pub k: usize,
    pub pitch: usize,
    pub in_cs: usize,
    pub out_cs: usize,
    /// Output position p reads input pixels from `p + in_base` and writes pixel `p + out_base`.
    pub in_base: usize,
    pub out_base: usize,
    pub relu: bool,
}

/// A vector of f32 lanes. Methods are always inlined into a function compiled with the matching target features.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))] // the direct kernels are x86-only; elsewhere the GEMM path runs
trait Lanes: Copy {
    const N: usize;
    unsafe fn zero() -> Self;
    unsafe fn load(p: *const f32) -> Self;
    unsafe fn splat(p: *const f32) -> Self;
    unsafe fn fma(a: Self, b: Self, acc: Self) -> Self;
    unsafe fn relu(a: Self) -> Self;
    unsafe fn store(p: *mut f32, a: Self);
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{direct_rows, ConvGeom, Lanes};
    use std::arch::x86_64::*;
    use std::ops::Range;

    impl Lanes for __m512 {
        const N: usize = 16;
        #[inline(always)]
        unsafe fn zero() -> Self {
            _mm512_setzero_ps()
        }
        #[inline(always)]
        unsafe fn load(p: *const f32) -> Self {
            _mm512_loadu_ps(p)
        }
        #[inline(always)]
        unsafe fn splat(p: *const f32) -> Self {
            _mm512_set1_ps(*p)
        }
        #[inline(always)]
        unsafe fn fma(a: Self, b: Self, acc: Self) -> Self {
            _mm512_fmadd_ps(a, b, acc)
        }
        #[inline(always)]
        unsafe fn relu(a: Self) -> Self {
            _mm512_max_ps(a, _mm512_setzero_ps())
        }
        #[inline(always)]
        unsafe fn store(p: *mut f32, a: Self) {
            _mm512_storeu_ps(p, a)
        }
    }

    impl Lanes for __m256 {
        const N: usize = 8;
        #[inline(always)]
        unsafe fn zero() -> Self {
            _mm256_setzero_ps()
        }
        #[inline(always)]
        unsafe fn load(p: *const f32) -> Self {
            _mm256_loadu_ps(p)
        }
        #[inline(always)]
        unsafe fn splat(p: *const f32) -> Self {
            _mm256_broadcast_ss(&*p)
        }
        #[inline(always)]
        unsafe fn fma(a: Self, b: Self, acc: Self) -> Self {
            _mm256_fmadd_ps(a, b, acc)
        }
        #[inline(always)]
        unsafe fn relu(a: Self) -> Self {
            _mm256_max_ps(a, _mm256_setzero_ps())
        }
        #[inline(always)]
        unsafe fn store(p: *mut f32, a: Self) {
            _mm256_storeu_ps(p, a)
        }
    }

    /// Output rows `rows` of a layer with `g.out_cs` of 16 or 32.
    ///
    /// # Safety
    /// The CPU has AVX-512F; `input`, `w`, `bias` and `out` hold every float that `direct_rows` documents for
    /// these rows (the caller, `conv::run_bands`, asserts it).
    #[target_feature(enable = "avx512f")]
    pub unsafe fn direct_avx512(g: &ConvGeom, input: *const f32, w: *const f32, bias: *const f32, out: *mut f32, rows: Range<usize>) {
        // (NV, PX of one row, PX of two rows, CS): 14 or 28 accumulators with NV = 1, 12 or 24 with NV = 2
        match (g.in_cs, g.out_cs) {
            (1, 16) => direct_rows::<__m512, 1, 14, 14, 1>(g, input, w, bias, out, rows),
            (16, 16) => direct_rows::<__m512, 1, 14, 14, 16>(g, input, w, bias, out, rows),
            (_, 16) => direct_rows::<__m512, 1, 14, 14, 0>(g, input, w, bias, out, rows),
            (16, 32) => direct_rows::<__m512, 2, 12, 6, 16>(g, input, w, bias, out, rows),
            (32, 32) => direct_rows::<__m512, 2, 12, 6, 32>(g, input, w, bias, out, rows),
            (_, 32) => direct_rows::<__m512, 2, 12, 6, 0>(g, input, w, bias, out, rows),
            (_, n) => unreachable!("direct kernel for {n} output channels"),
        }
    }

    /// As `direct_avx512` with 8-lane vectors. With 16 registers a two-row tile would hold 8 accumulators and need
    /// as many loads per FMA as one row of 12 (NV = 2 already shares each broadcast), so rows run one at a time.
    ///
    /// # Safety
    /// The CPU has AVX2 and FMA; the buffers as for `direct_avx512`.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn direct_avx2(g: &ConvGeom, input: *const f32, w: *const f32, bias: *const f32, out: *mut f32, rows: Range<usize>) {
        match (g.in_cs, g.out_cs) {
            (16, 8) => direct_rows::<__m256, 1, 12, 0, 16>(g, input, w, bias, out, rows),
            (_, 8) => direct_rows::<__m256, 1, 12, 0, 0>(g, input, w, bias, out, rows),
            (1, 16) => direct_rows::<__m256, 2, 6, 0, 1>(g, input, w, bias, out, rows),
            (16, 16) => direct_rows::<__m256, 2, 6, 0, 16>(g, input, w, bias, out, rows),
            (_, 16) => direct_rows::<__m256, 2, 6, 0, 0>(g, input, w, bias, out, rows),
            (16, 32) => direct_rows::<__m256, 4, 3, 0, 16>(g, input, w, bias, out, rows),
            (32, 32) => direct_rows::<__m256, 4, 3, 0, 32>(g, input, w, bias, out, rows),
            (_, 32) => direct_rows::<__m256, 4, 3, 0, 0>(g, input, w, bias, out, rows),
            (_, n) => unreachable!("direct kernel for {n} output channels"),
        }
    }

    /// Output rows `rows` of a layer with 8 output channels (out_cs 8), from `PackedConv`'s paired weights: a
    /// vector holds one position's 8 channels in output row r (low half) and in row r + 1 (high half). Input row
    /// r + t meets row r at filter row t and row r + 1 at filter row t - 1, so one broadcast input times one paired
    /// weight vector serves both rows and no lane is wasted (a 16-channel kernel would leave half of them zero).
    ///
    /// # Safety
    /// The CPU has AVX-512F; `paired` is `PackedConv::paired` of the layer; the buffers as for `direct_avx512`.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn paired_avx512(g: &ConvGeom, input: *const f32, paired: *const f32, bias: *const f32, out: *mut f32, rows: Range<usize>) {
        match g.in_cs {
            16 => paired_rows::<28, 16>(g, input, paired, bias, out, rows),
            _ => paired_rows::<28, 0>(g, input, paired, bias, out, rows),
        }
    }

    #[inline(always)]
    unsafe fn paired_rows<const PX: usize, const CS: usize>(
        g: &ConvGeom,
        input: *const f32,
        paired: *const f32,
        bias: *const f32,
        out: *mut f32,
        rows: Range<usize>,
    ) {
        debug_assert_eq!(g.out_cs, 8);
        let in_cs = if CS == 0 { g.in_cs } else { CS };
        let (k, pitch) = (g.k, g.pitch);
        let kc = k * in_cs;
        let mut both = [0f32; 16];
        both[..8].copy_from_slice(std::slice::from_raw_parts(bias, 8));
        both[8..].copy_from_slice(std::slice::from_raw_parts(bias, 8));
        let b = _mm512_loadu_ps(both.as_ptr());
        let mut r = rows.start;
        while r < rows.end {
            // A last single row runs the same tiles without input row r + k; its high halves are never stored.
            let two = r + 1 < rows.end;
            let mut x = 0;
            while x < pitch {
                let p = r * pitch + x;
                let mut acc = [b; PX];
                for t in 0..k + two as usize {
                    let src = input.add((p + g.in_base + t * pitch) * in_cs);
                    let w = paired.add(t * kc * 16);
                    for j in 0..kc {
                        let wv = _mm512_loadu_ps(w.add(j * 16));
                        for (px, a) in acc.iter_mut().enumerate() {
                            *a = _mm512_fmadd_ps(_mm512_set1_ps(*src.add(px * in_cs + j)), wv, *a);
                        }
                    }
                }
                let dst = out.add((p + g.out_base) * 8);
                for (px, &a) in acc.iter().enumerate().take(PX.min(pitch - x)) {
                    let v = if g.relu { _mm512_max_ps(a, _mm512_setzero_ps()) } else { a };
                    _mm512_mask_storeu_ps(dst.add(px * 8), 0x00ff, v);
                    if two {
                        // lanes 8..16 land on row r + 1's 8 channels
                        _mm512_mask_storeu_ps(dst.add((px + pitch) * 8 - 8), 0xff00, v);
                    }
                }
                x += PX;
            }
            r += 1 + two as usize;
        }
    }
}

#[cfg(target_arch = "x86_64")]
pub use x86::{direct_avx2, direct_avx512, paired_avx512};

/// Largest pixel group of any instance: a partial last group of a row reads this many positions past it.
pub const MAX_PX: usize = 14;

/// For output rows `rows` (positions `r * pitch .. (r + 1) * pitch`, the last columns garbage as `hwc` explains):
/// `out[(p + out_base) * out_cs + o] = act(bias[o] + S)` with
/// `S = sum over dy < k, j < k * in_cs of in[(p + in_base + dy * pitch) * in_cs + j] * w[(dy * k * in_cs + j) * out_cs + o]`,
/// weights packed `[dy][dx][c][o]`. Pairs of rows run as two-row tiles of PX2 positions (PX2 = 0: never), single
/// rows as tiles of PX1. `CS` is `in_cs` known at compile time (0: read it from `g`): the position offsets then
/// fold into the instructions' displacements instead of taking integer ops beside the FMAs.
#[inline(always)]
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
unsafe fn direct_rows<V: Lanes, const NV: usize, const PX1: usize, const PX2: usize, const CS: usize>(
    g: &ConvGeom,
    input: *const f32,
    weights: *const f32,
    bias: *const f32,
    out: *mut f32,
    rows: std::ops::Range<usize>,
) {
    debug_assert_eq!(g.out_cs, NV * V::N);
    debug_assert!(CS == 0 || CS == g.in_cs);
    let mut r = rows.start;
    while r < rows.end {
        if PX2 > 0 && g.k > 1 && r + 2 <= rows.end {
            row_tiles::<V, NV, PX2, CS, true>(g, input, weights, bias, out, r);
            r += 2;
        } else {
            row_tiles::<V, NV, PX1, CS, false>(g, input, weights, bias, out, r);
            r += 1;
        }
    }
}

/// Output row `r` (and `r + 1` when `TWO`), PX positions at a time.
#[inline(always)]
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
unsafe fn row_tiles<V: Lanes, const NV: usize, const PX: usize, const CS: usize, const TWO: bool>(
    g: &ConvGeom,
    input: *const f32,
    weights: *const f32,
    bias: *const f32,
    out: *mut f32,
    r: usize,
) {
    let in_cs = if CS == 0 { g.in_cs } else { CS };
    let (k, pitch, out_cs) = (g.k, g.pitch, g.out_cs);
    let filter_row = k * in_cs * out_cs;
    let mut b = [V::zero(); NV];
    for (v, bv) in b.iter_mut().enumerate() {
        *bv = V::load(bias.add(v * V::N));
    }
    let mut x = 0;
    while x < pitch {
        let p = r * pitch + x;
        let mut acc = [[b; PX]; 2];
        // Input row r + t meets output row r at filter row t and output row r + 1 at filter row t - 1.
        for t in 0..k + TWO as usize {
            let src = input.add((p + g.in_base + t * pitch) * in_cs);
            let (w0, w1) = (weights.add(t.min(k - 1) * filter_row), weights.add(t.saturating_sub(1) * filter_row));
            match (t < k, TWO && t > 0) {
                (true, true) => step::<V, NV, PX, CS, true, true>(g, src, w0, w1, &mut acc),
                (true, false) => step::<V, NV, PX, CS, true, false>(g, src, w0, w1, &mut acc),
                _ => step::<V, NV, PX, CS, false, true>(g, src, w0, w1, &mut acc),
            }
        }
        let n = PX.min(pitch - x);
        for (row, tile) in acc.iter().enumerate().take(1 + TWO as usize) {
            let dst = out.add((p + row * pitch + g.out_base) * out_cs);
            for (px, a) in tile.iter().enumerate().take(n) {
                for (v, &value) in a.iter().enumerate() {
                    let value = if g.relu { V::relu(value) } else { value };
                    V::store(dst.add(px * out_cs + v * V::N), value);
                }
            }
        }
        x += PX;
    }
}

/// One input row under the tile: its k * in_cs inputs per position against filter row `w0` (output row 0, when
/// `A`) and `w1` (output row 1, when `B`).
#[inline(always)]
#[allow(clippy::needless_range_loop)] // px and v index both row tiles at once
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
unsafe fn step<V: Lanes, const NV: usize, const PX: usize, const CS: usize, const A: bool, const B: bool>(
    g: &ConvGeom,
    src: *const f32,
    w0: *const f32,
    w1: *const f32,
    acc: &mut [[[V; NV]; PX]; 2],
) {
    let in_cs = if CS == 0 { g.in_cs } else { CS };
    let out_cs = g.out_cs;
    for j in 0..g.k * in_cs {
        let (mut wa, mut wb) = ([V::zero(); NV], [V::zero(); NV]);
        for v in 0..NV {
            if A {
                wa[v] = V::load(w0.add(j * out_cs + v * V::N));
            }
            if B {
                wb[v] = V::load(w1.add(j * out_cs + v * V::N));
            }
        }
        for px in 0..PX {
            let x = V::splat(src.add(px * in_cs + j));
            for v in 0..NV {
                if A {
                    acc[0][px][v] = V::fma(x, wa[v], acc[0][px][v]);
                }
                if B {
                    acc[1][px][v] = V::fma(x, wb[v], acc[1][px][v]);
                }
            }
        }
    }
}
