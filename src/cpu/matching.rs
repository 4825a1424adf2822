//! The CPU matcher: both directions' nearest and second-nearest neighbours in one pass over the similarity matrix,
//! computed block by block and never stored whole, bit-identical to `ops::matching::nearest_reference`.
//!
//! Why it is bit-identical: every similarity is one lane of a vector that accumulates `a[i][k] * b[j][k]` for
//! k = 0, 1, .. with a separate multiply and add, the reference's order and rounding (Rust never fuses them into an
//! FMA). The vectors run across columns (16 descriptors of `b`, stored k-major), so no horizontal sum reorders
//! anything. The fused multiply-add would be twice as fast on paper but would round differently and let near-ties
//! go another way than the reference and the tests say.
//!
//! Per tile of `ROWS` rows of `a` x `LANES` columns of `b` the products stay in registers; the tile then updates
//! the rows' nearest neighbours per lane (lane l sees columns l, l + LANES, ... in ascending order) and the columns'
//! nearest neighbours (rows in ascending order), both with the reference's rule: a strictly larger similarity takes
//! the lead, anything else larger than the second becomes the second. The lanes of a row are merged at the end (the
//! largest best, the lower index on a tie; the second the largest of all other candidates), which is exactly the
//! reference's result: its best is the first index of the largest similarity, its second the largest of the rest.
//! Large sets are split into row chunks on rayon's threads, their column results merged in chunk order the same way.

use crate::ops::matching::Nearest;
use crate::Features;
use rayon::prelude::*;

/// Columns of `b` per vector tile: one AVX-512 register, or two AVX2 ones.
const LANES: usize = 16;
/// Rows of `a` per tile: 4 rows x 2 vectors = 8 independent accumulators, enough to hide the add latency.
const ROWS: usize = 4;
const VECTORS: usize = 2;
const TILE_COLS: usize = LANES * VECTORS;
/// Rows per parallel chunk: below this many rows a set is matched on one thread.
const CHUNK_ROWS: usize = 256;

/// Nearest neighbours of every descriptor of `a` in `b` and of every descriptor of `b` in `a`, as
/// `(nearest_reference(a, b), nearest_reference(b, a))`. Empty when either set is empty or the dimensions differ.
pub fn nearest_both(a: &Features, b: &Features) -> (Vec<Nearest>, Vec<Nearest>) {
    if a.is_empty() || b.is_empty() || a.dim != b.dim {
        return (Vec::new(), Vec::new());
    }
    let panels = Panels::new(b);
    let chunks: Vec<(Vec<Nearest>, Candidates)> = (0..a.len())
        .step_by(CHUNK_ROWS)
        .collect::<Vec<_>>()
        .into_par_iter()
        .map(|start| scan(a, start..(start + CHUNK_ROWS).min(a.len()), &panels))
        .collect();
    let mut rows = Vec::with_capacity(a.len());
    let mut columns = Candidates::new(panels.padded_columns());
    for (chunk_rows, chunk_columns) in chunks {
        rows.extend(chunk_rows);
        columns.merge_later(&chunk_columns);
    }
    (rows, columns.into_nearest(b.len()))
}

/// Mutual nearest neighbours with the ratio test when `ratio < 1`: `mutual_nearest_reference`, faster.
pub fn mutual_nearest(a: &Features, b: &Features, ratio: f32) -> Vec<(usize, usize)> {
    let (ab, ba) = nearest_both(a, b);
    crate::ops::matching::mutual_from_nearest(&ab, &ba, ratio)
}

/// The descriptors of `b` regrouped for the tiles: panel p holds columns `p * LANES ..` as `dim` rows of `LANES`
/// floats (k-major), zero past the last descriptor.
struct Panels {
    data: Vec<f32>,
    dim: usize,
    columns: usize,
}

impl Panels {
    fn new(b: &Features) -> Self {
        let dim = b.dim;
        let count = b.len().div_ceil(TILE_COLS) * VECTORS;
        let mut data = vec![0.0; count * dim * LANES];
        for j in 0..b.len() {
            let panel = &mut data[(j / LANES) * dim * LANES..];
            for (k, v) in b.descriptor(j).iter().enumerate() {
                panel[k * LANES + j % LANES] = *v;
            }
        }
        Panels { data, dim, columns: b.len() }
    }

    fn padded_columns(&self) -> usize {
        self.columns.div_ceil(TILE_COLS) * TILE_COLS
    }

    /// Panel `p`, `dim x LANES`.
    fn panel(&self, p: usize) -> &[f32] {
        &self.data[p * self.dim * LANES..(p + 1) * self.dim * LANES]
    }
}

/// Running nearest neighbours of a set of slots (the lanes of a row, or the columns): best similarity, its index,
/// second-best similarity.
#[derive(Clone)]
struct Candidates {
    best: Vec<f32>,
    second: Vec<f32>,
    index: Vec<u32>,
}

const NONE: u32 = u32::MAX;

impl Candidates {
    fn new(n: usize) -> Self {
        Candidates { best: vec![f32::NEG_INFINITY; n], second: vec![f32::NEG_INFINITY; n], index: vec![NONE; n] }
    }

    /// Folds in `later`, whose candidates all come after this one's in the reference's order.
    fn merge_later(&mut self, later: &Candidates) {
        for s in 0..self.best.len() {
            if later.best[s] > self.best[s] {
                self.second[s] = self.best[s].max_candidate(later.second[s]);
                self.best[s] = later.best[s];
                self.index[s] = later.index[s];
            } else {
                self.second[s] = self.second[s].max_candidate(later.best[s]);
            }
        }
    }

    /// The candidates of the tile of columns starting at `col0`.
    fn tile(&mut self, col0: usize) -> (&mut [f32; TILE_COLS], &mut [f32; TILE_COLS], &mut [u32; TILE_COLS]) {
        let range = col0..col0 + TILE_COLS;
        let fixed = "a tile lies within the padded columns";
        (
            (&mut self.best[range.clone()]).try_into().expect(fixed),
            (&mut self.second[range.clone()]).try_into().expect(fixed),
            (&mut self.index[range]).try_into().expect(fixed),
        )
    }

    fn into_nearest(self, n: usize) -> Vec<Nearest> {
        (0..n).map(|s| nearest(self.best[s], self.second[s], self.index[s])).collect()
    }
}

fn nearest(best: f32, second: f32, index: u32) -> Nearest {
    Nearest { index: if index == NONE { usize::MAX } else { index as usize }, best, second }
}

/// `max` as the reference's `s > second` takes it: a NaN never replaces anything.
trait MaxCandidate {
    fn max_candidate(self, other: Self) -> Self;
}

impl MaxCandidate for f32 {
    #[inline(always)]
    fn max_candidate(self, other: f32) -> f32 {
        if other > self {
            other
        } else {
            self
        }
    }
}

/// Rows `rows` of `a` against every column: the rows' nearest neighbours, and the columns' candidates among these
/// rows. Picks the widest vector instructions the CPU has; the arithmetic (and so the result) is the same in each.
fn scan(a: &Features, rows: std::ops::Range<usize>, panels: &Panels) -> (Vec<Nearest>, Candidates) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU has AVX-512F.
            return unsafe { scan_avx512(a, rows, panels) };
        }
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU has AVX2.
            return unsafe { scan_avx2(a, rows, panels) };
        }
    }
    scan_portable(a, rows, panels)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn scan_avx512(a: &Features, rows: std::ops::Range<usize>, panels: &Panels) -> (Vec<Nearest>, Candidates) {
    scan_portable(a, rows, panels)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn scan_avx2(a: &Features, rows: std::ops::Range<usize>, panels: &Panels) -> (Vec<Nearest>, Candidates) {
    scan_portable(a, rows, panels)
}

/// Row state of one tile's rows: per row, per lane of the tile's width.
type RowLanes = [[f32; TILE_COLS]; ROWS];

#[inline(always)]
fn scan_portable(a: &Features, rows: std::ops::Range<usize>, panels: &Panels) -> (Vec<Nearest>, Candidates) {
    let dim = a.dim;
    let mut columns = Candidates::new(panels.padded_columns());
    let mut out = Vec::with_capacity(rows.len());
    let mut group = vec![0.0f32; ROWS * dim];
    for first in rows.clone().step_by(ROWS) {
        let count = ROWS.min(rows.end - first);
        // the rows of this group, zero past the end of the chunk
        group.fill(0.0);
        group[..count * dim].copy_from_slice(&a.descriptors[first * dim..(first + count) * dim]);
        let mut best: RowLanes = [[f32::NEG_INFINITY; TILE_COLS]; ROWS];
        let mut second: RowLanes = [[f32::NEG_INFINITY; TILE_COLS]; ROWS];
        let mut index = [[NONE; TILE_COLS]; ROWS];
        for tile in 0..panels.padded_columns() / TILE_COLS {
            let col0 = tile * TILE_COLS;
            let mut s = tile_similarities(&group, dim, panels, tile);
            // columns past the last descriptor (in the last tile) can never win
            for row in s.iter_mut().filter(|_| col0 + TILE_COLS > panels.columns) {
                for (l, v) in row.iter_mut().enumerate() {
                    if col0 + l >= panels.columns {
                        *v = f32::NEG_INFINITY;
                    }
                }
            }
            for r in 0..count {
                // per lane of the row the candidate is the column; per column it is the row
                update(&mut best[r], &mut second[r], &mut index[r], &s[r], |l| (col0 + l) as u32);
                let (b, c, i) = columns.tile(col0);
                update(b, c, i, &s[r], |_| (first + r) as u32);
            }
        }
        for r in 0..count {
            out.push(merge_lanes(&best[r], &second[r], &index[r]));
        }
    }
    (out, columns)
}

/// The tile's similarities: rows of `group` (ROWS x dim) times the columns of panels `tile * VECTORS ..`, each a
/// sequential sum over k of separately rounded products, as the reference.
#[inline(always)]
fn tile_similarities(group: &[f32], dim: usize, panels: &Panels, tile: usize) -> RowLanes {
    let p: [&[f32]; VECTORS] = std::array::from_fn(|v| panels.panel(tile * VECTORS + v));
    assert!(group.len() >= ROWS * dim && p.iter().all(|p| p.len() >= dim * LANES));
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512f") {
        // SAFETY: the CPU has AVX-512F; the assertion above covers every read.
        return unsafe { x86::tile_avx512(group.as_ptr(), dim, p[0].as_ptr(), p[1].as_ptr()) };
    }
    let mut acc: RowLanes = [[0.0; TILE_COLS]; ROWS];
    for k in 0..dim {
        for v in 0..VECTORS {
            let column = &p[v][k * LANES..(k + 1) * LANES];
            for r in 0..ROWS {
                let x = group[r * dim + k];
                for l in 0..LANES {
                    acc[r][v * LANES + l] += x * column[l];
                }
            }
        }
    }
    acc
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{RowLanes, LANES, ROWS, TILE_COLS};
    use std::arch::x86_64::*;

    /// `tile_similarities` with the 8 accumulators in registers: per k, two column vectors, four broadcasts, eight
    /// multiplies and eight adds (never fused: the reference rounds the product before the sum).
    ///
    /// # Safety
    /// The CPU has AVX-512F; `group` holds ROWS x dim floats, `p0` and `p1` dim x LANES each.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn tile_avx512(group: *const f32, dim: usize, p0: *const f32, p1: *const f32) -> RowLanes {
        let mut acc = [_mm512_setzero_ps(); 2 * ROWS];
        for k in 0..dim {
            let c = [_mm512_loadu_ps(p0.add(k * LANES)), _mm512_loadu_ps(p1.add(k * LANES))];
            for r in 0..ROWS {
                let x = _mm512_set1_ps(*group.add(r * dim + k));
                for v in 0..2 {
                    acc[2 * r + v] = _mm512_add_ps(acc[2 * r + v], _mm512_mul_ps(x, c[v]));
                }
            }
        }
        let mut out: RowLanes = [[0.0; TILE_COLS]; ROWS];
        for r in 0..ROWS {
            for v in 0..2 {
                _mm512_storeu_ps(out[r].as_mut_ptr().add(v * LANES), acc[2 * r + v]);
            }
        }
        out
    }
}

/// One row's similarities to a tile's columns into running candidates, slot by slot, with the reference's rule:
/// a strictly larger similarity takes the lead (`candidate(l)` its index), anything else larger than the second
/// becomes the second.
#[inline(always)]
fn update(
    best: &mut [f32; TILE_COLS],
    second: &mut [f32; TILE_COLS],
    index: &mut [u32; TILE_COLS],
    s: &[f32; TILE_COLS],
    candidate: impl Fn(usize) -> u32,
) {
    for l in 0..TILE_COLS {
        let lead = s[l] > best[l];
        second[l] = if lead { best[l] } else if s[l] > second[l] { s[l] } else { second[l] };
        best[l] = if lead { s[l] } else { best[l] };
        index[l] = if lead { candidate(l) } else { index[l] };
    }
}

/// A row's result from its lanes: the largest best (the lower column on a tie, lanes holding disjoint columns),
/// the second the largest of every other candidate: the chosen lane's second and the other lanes' bests.
fn merge_lanes(best: &[f32; TILE_COLS], second: &[f32; TILE_COLS], index: &[u32; TILE_COLS]) -> Nearest {
    let mut lead: Option<usize> = None;
    for l in 0..TILE_COLS {
        if index[l] == NONE {
            continue;
        }
        lead = match lead {
            Some(m) if !(best[l] > best[m] || (best[l] == best[m] && index[l] < index[m])) => Some(m),
            _ => Some(l),
        };
    }
    let Some(m) = lead else { return nearest(f32::NEG_INFINITY, f32::NEG_INFINITY, NONE) };
    let mut rest = second[m];
    for l in (0..TILE_COLS).filter(|&l| l != m) {
        rest = rest.max_candidate(best[l]);
    }
    nearest(best[m], rest, index[m])
}
