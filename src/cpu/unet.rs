//! The descriptor U-Net's pooling, bilinear resizing (+ skip concatenation) and L2 normalisation on the CPU, in the layouts
//! of the CPU path (channels-last with a zero border; the final map channel-major). Each computes exactly what its
//! reference in `ops::unet` computes, in the same order of operations.

use super::hwc::{BufferPool, HwcMap};
use crate::config::PoolMode;
use crate::error::Result;
use crate::ops::unet::bilinear_source;
use crate::ops::Map;
use rayon::prelude::*;

/// The descriptor's pooling by `mode`; the output keeps the input's border width.
pub fn pool(pool: &mut BufferPool, x: &HwcMap, mode: PoolMode) -> Result<HwcMap> {
    match mode {
        PoolMode::Mean2x2 => avgpool2(pool, x),
        PoolMode::BilinearHalf => {
            let (w, h) = (mode.halve(x.w as u32) as usize, mode.halve(x.h as u32) as usize);
            resize_concat(pool, x, None, w, h, x.pad)
        }
    }
}

/// 2x2 mean, stride 2, odd last row and column dropped; the output keeps the input's border width.
fn avgpool2(pool: &mut BufferPool, x: &HwcMap) -> Result<HwcMap> {
    let (w, h, pad) = (x.w / 2, x.h / 2, x.pad);
    let mut out = HwcMap::take(pool, x.c, w, h, w + 2 * pad, pad)?;
    let (cs, src) = (x.cs, &x.data);
    let row_len = out.pitch * cs;
    let first = pad * row_len;
    out.data[first..first + h * row_len].par_chunks_mut(row_len).enumerate().for_each(|(y, row)| {
        for xx in 0..w {
            let (a, b) = (x.at(2 * y, 2 * xx), x.at(2 * y + 1, 2 * xx));
            let o = &mut row[(xx + pad) * cs..(xx + pad + 1) * cs];
            for (ch, value) in o.iter_mut().enumerate() {
                let sum = (src[a + ch] + src[a + cs + ch]) + (src[b + ch] + src[b + cs + ch]);
                *value = sum * 0.25;
            }
        }
    });
    out.zero_border();
    Ok(out)
}

/// `concat([upsample_bilinear(y, size of skip), skip])` over channels, with the skip's border width.
pub fn upsample_concat(pool: &mut BufferPool, y: &HwcMap, skip: &HwcMap) -> Result<HwcMap> {
    resize_concat(pool, y, Some(skip), skip.w, skip.h, skip.pad)
}

/// `y` resized bilinearly to `w` x `h` (align_corners = false), followed by the channels of `skip` if any.
fn resize_concat(pool: &mut BufferPool, y: &HwcMap, skip: Option<&HwcMap>, w: usize, h: usize, pad: usize) -> Result<HwcMap> {
    let skip_c = skip.map_or(0, |s| s.c);
    let mut out = HwcMap::take(pool, y.c + skip_c, w, h, w + 2 * pad, pad)?;
    let (cs, yc) = (out.cs, y.c);
    let columns: Vec<_> = (0..w).map(|u| bilinear_source(u, y.w, w)).collect();
    let row_len = out.pitch * cs;
    let first = pad * row_len;
    out.data[first..first + h * row_len].par_chunks_mut(row_len).enumerate().for_each(|(v, row)| {
        let (y0, y1, fy) = bilinear_source(v, y.h, h);
        for (u, &(x0, x1, fx)) in columns.iter().enumerate() {
            let o = &mut row[(u + pad) * cs..(u + pad + 1) * cs];
            let (a, b, c, d) = (y.at(y0, x0), y.at(y0, x1), y.at(y1, x0), y.at(y1, x1));
            for (ch, value) in o[..yc].iter_mut().enumerate() {
                let top = y.data[a + ch] * (1.0 - fx) + y.data[b + ch] * fx;
                let bottom = y.data[c + ch] * (1.0 - fx) + y.data[d + ch] * fx;
                *value = top * (1.0 - fy) + bottom * fy;
            }
            if let Some(skip) = skip {
                let s = skip.at(v, u);
                o[yc..yc + skip_c].copy_from_slice(&skip.data[s..s + skip_c]);
            }
            o[yc + skip_c..].fill(0.0);
        }
    });
    out.zero_border();
    Ok(out)
}

/// Every pixel's channel vector divided by max(its norm, 1e-12), in place, one row at a time so that the channel
/// planes are read contiguously.
pub fn l2norm(map: &mut Map) {
    let (c, w, plane) = (map.c, map.w, map.h * map.w);
    let data = map.data.as_mut_ptr() as usize;
    (0..map.h).into_par_iter().for_each(|y| {
        // SAFETY: task y touches only row y of each plane.
        let at = |ch: usize| unsafe { std::slice::from_raw_parts_mut((data as *mut f32).add(ch * plane + y * w), w) };
        let mut sums = vec![0f32; w];
        for ch in 0..c {
            for (s, v) in sums.iter_mut().zip(at(ch).iter()) {
                *s += v * v;
            }
        }
        for s in sums.iter_mut() {
            *s = 1.0 / s.sqrt().max(1e-12);
        }
        for ch in 0..c {
            for (v, inv) in at(ch).iter_mut().zip(&sums) {
                *v *= inv;
            }
        }
    });
}
