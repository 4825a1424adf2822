//! Channels-last maps and the buffer pool of the CPU path.
//!
//! A convolution over a channels-last map with a row pitch is a GEMM whose left matrix needs no copy: for a fixed
//! filter row dy, the k*cs inputs of output position p (all taps dx, all channels) are the contiguous floats starting
//! at `(p + dy*pitch) * cs`. Positions run over whole stored rows, so the last columns of each row compute garbage
//! that no valid output reads (valid convolutions) or that lands in the zero border and is cleared again (same
//! convolutions).

use crate::error::{Error, Result};
use crate::ops::Map;

/// Pixels after the last stored row that kernels may read: the taps of the last row's garbage columns and the unused
/// lanes of a partial pixel group. Their values only reach garbage outputs, so they need only be finite.
pub const SLACK_PIXELS: usize = 64;

/// Channel stride of a map with `c` channels: one channel stays dense (the gray input); up to 8 channels (the
/// detector's last layer: one regular field of C8) take half a 16-float vector; wider maps are padded to whole
/// 16-float vectors. Padding channels hold zeros, so every kernel works on whole vectors.
pub fn channel_stride(c: usize) -> usize {
    match c {
        1 => 1,
        2..=8 => 8,
        _ => c.next_multiple_of(16),
    }
}

/// A channels-last map: channel `ch` of pixel (y, x) is `data[((y + pad) * pitch + x + pad) * cs + ch]`.
#[derive(Debug)]
pub struct HwcMap {
    /// Channels with meaning; `c..cs` hold zeros.
    pub c: usize,
    /// Floats per pixel.
    pub cs: usize,
    pub w: usize,
    pub h: usize,
    /// Pixels per stored row, at least `w + 2 * pad`.
    pub pitch: usize,
    /// Width of the zero border around the content (the descriptor's "same" convolutions); 0 in the detector.
    pub pad: usize,
    pub data: Vec<f32>,
}

impl HwcMap {
    /// Floats needed for `rows` stored rows plus the slack.
    pub fn len_for(rows: usize, pitch: usize, cs: usize) -> usize {
        (rows * pitch + SLACK_PIXELS) * cs
    }

    /// A map whose storage comes from `pool`, holding whatever it held before (callers write every pixel they read).
    pub fn take(pool: &mut BufferPool, c: usize, w: usize, h: usize, pitch: usize, pad: usize) -> Result<Self> {
        let cs = channel_stride(c);
        let data = pool.take(Self::len_for(h + 2 * pad, pitch, cs))?;
        Ok(HwcMap { c, cs, w, h, pitch, pad, data })
    }

    /// Index of pixel (y, x)'s first channel.
    pub fn at(&self, y: usize, x: usize) -> usize {
        ((y + self.pad) * self.pitch + x + self.pad) * self.cs
    }

    /// Copy of a channel-major map with a zero border of `pad` pixels.
    pub fn from_map(pool: &mut BufferPool, map: &Map, pad: usize) -> Result<Self> {
        let mut out = Self::take(pool, map.c, map.w, map.h, map.w + 2 * pad, pad)?;
        let plane = map.h * map.w;
        for y in 0..map.h {
            for x in 0..map.w {
                let i = out.at(y, x);
                for ch in 0..map.c {
                    out.data[i + ch] = map.data[ch * plane + y * map.w + x];
                }
                out.data[i + map.c..i + out.cs].fill(0.0);
            }
        }
        out.zero_border();
        Ok(out)
    }

    /// Channel-major copy of the content.
    pub fn to_map(&self) -> Map {
        let mut map = Map::zeros(self.c, self.h, self.w);
        let plane = self.h * self.w;
        for y in 0..self.h {
            for x in 0..self.w {
                let i = self.at(y, x);
                for ch in 0..self.c {
                    map.data[ch * plane + y * self.w + x] = self.data[i + ch];
                }
            }
        }
        map
    }

    /// Zeroes every stored pixel outside the content: the border rows, and the columns left and right of it.
    pub fn zero_border(&mut self) {
        let (pitch, cs, pad) = (self.pitch, self.cs, self.pad);
        let rows = self.h + 2 * pad;
        self.data[..pad * pitch * cs].fill(0.0);
        self.data[(self.h + pad) * pitch * cs..rows * pitch * cs].fill(0.0);
        for y in pad..self.h + pad {
            let row = &mut self.data[y * pitch * cs..(y + 1) * pitch * cs];
            row[..pad * cs].fill(0.0);
            row[(self.w + pad) * cs..].fill(0.0);
        }
    }

    pub fn recycle(self, pool: &mut BufferPool) {
        pool.give(self.data);
    }
}

/// Buffers kept between images: every image of one size asks for the same lengths in the same order, so after the
/// first image nothing is allocated. A request takes the smallest free buffer that is large enough; new buffers get
/// `HEADROOM` more capacity than asked, so that maps of nearly the same size share buffers (the detector's
/// 16 x W x H and the descriptor's 16 x (W+2) x (H+2); the descriptor's level 2 and the pyramid's level 1).
/// Measured at 3840x2160: 1.72 GB pooled, against 2.68 GB with exact capacities.
///
/// New buffers are made with `try_reserve_exact` within an optional limit (the CPU path's memory budget): a request
/// over it, or one the system refuses, is an error, never an abort.
#[derive(Default)]
pub struct BufferPool {
    free: Vec<Vec<f32>>,
    /// Bytes of every buffer made and not released (handed out or free).
    allocated: usize,
    limit: Option<usize>,
}

const HEADROOM: f64 = 1.0 / 16.0;

impl BufferPool {
    /// A pool whose buffers may total at most `limit` bytes.
    pub fn with_limit(limit: Option<usize>) -> Self {
        BufferPool { limit, ..Default::default() }
    }

    /// A buffer of exactly `len` floats; its old contents stay (fresh ones are zero).
    pub fn take(&mut self, len: usize) -> Result<Vec<f32>> {
        let best = (0..self.free.len()).filter(|&i| self.free[i].capacity() >= len).min_by_key(|&i| self.free[i].capacity());
        let mut buf = match best {
            Some(i) => self.free.swap_remove(i),
            None => self.allocate(len + (len as f64 * HEADROOM) as usize)?,
        };
        buf.resize(len, 0.0);
        Ok(buf)
    }

    /// A new, empty buffer of `capacity` floats; the free buffers (all too small) are dropped first if the new one
    /// would not fit the limit beside them.
    fn allocate(&mut self, capacity: usize) -> Result<Vec<f32>> {
        let bytes = 4 * capacity;
        let mib = |b: usize| (b >> 20) as u64;
        if self.limit.is_some_and(|limit| self.allocated + bytes > limit) {
            self.release();
        }
        if let Some(limit) = self.limit.filter(|&limit| self.allocated + bytes > limit) {
            return Err(Error::MemoryBudget { budget_mib: mib(limit), held_mib: mib(self.allocated), needed_mib: mib(bytes).max(1) });
        }
        let mut buf = Vec::new();
        buf.try_reserve_exact(capacity).map_err(|_| Error::HostMemory { bytes: bytes as u64, held_mib: mib(self.allocated) })?;
        self.allocated += 4 * buf.capacity();
        Ok(buf)
    }

    /// Drops the free buffers.
    pub fn release(&mut self) {
        for buf in self.free.drain(..) {
            self.allocated -= 4 * buf.capacity();
        }
    }

    /// Bytes of the buffers made and not released: the pool's high-water mark for the largest image so far.
    pub fn allocated(&self) -> usize {
        self.allocated
    }

    pub fn limit(&self) -> Option<usize> {
        self.limit
    }

    /// A zero-filled buffer of `len` floats.
    pub fn take_zeroed(&mut self, len: usize) -> Result<Vec<f32>> {
        let mut buf = self.take(len)?;
        buf.fill(0.0);
        Ok(buf)
    }

    pub fn give(&mut self, buf: Vec<f32>) {
        if buf.capacity() > 0 {
            self.free.push(buf);
        }
    }
}
