//! Descriptor matching (shaders/matching.wgsl): mutual nearest neighbours over L2-normalised descriptors, with an
//! optional ratio test, and the plain-Rust reference of both it and the CPU matcher (`cpu::matching`).

use crate::error::{Error, Result};
use crate::features::Features;
use crate::gpu::{groups_1d, Gpu, Shader};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

pub const SHADER: Shader = Shader { name: "matching", source: include_str!("../../shaders/matching.wgsl") };

/// vec4 elements of the kernel's workgroup tile: 16,320 bytes, under the 16,352 that downlevel adapters (GL) allow
/// (WebGPU's minimum is 16,384).
const TILE_VEC4: usize = 1020;
/// Tiles per chunk of the reference set (more when the set is so large that chunks would pass `MAX_CHUNKS`).
const TILES_PER_CHUNK: usize = 8;
const MAX_CHUNKS: usize = 64;

/// Nearest neighbour of one descriptor in the other set: its index, the similarity (dot product) to it, and the
/// second-best similarity (`-inf` when the other set has a single descriptor; equal to `best` on an exact tie).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Nearest {
    pub index: usize,
    pub best: f32,
    pub second: f32,
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Reference: for every descriptor of `a`, its nearest neighbour in `b` (largest dot product; ties to the lower
/// index). Empty when either set is empty or the dimensions differ.
pub fn nearest_reference(a: &Features, b: &Features) -> Vec<Nearest> {
    if a.is_empty() || b.is_empty() || a.dim != b.dim {
        return Vec::new();
    }
    (0..a.len())
        .map(|i| {
            let q = a.descriptor(i);
            let mut n = Nearest { index: usize::MAX, best: f32::NEG_INFINITY, second: f32::NEG_INFINITY };
            for j in 0..b.len() {
                let s = dot(q, b.descriptor(j));
                if s > n.best {
                    n = Nearest { index: j, best: s, second: n.best };
                } else if s > n.second {
                    n.second = s;
                }
            }
            n
        })
        .collect()
}

/// Euclidean distance between unit vectors of dot product `s`.
fn distance(s: f32) -> f32 {
    (2.0 - 2.0 * s).max(0.0).sqrt()
}

/// The matches given both directions' nearest neighbours: pairs (i, j) that are each other's nearest, and with
/// `ratio < 1` whose nearest distance is below `ratio` times the second-nearest.
pub fn mutual_from_nearest(a_to_b: &[Nearest], b_to_a: &[Nearest], ratio: f32) -> Vec<(usize, usize)> {
    a_to_b
        .iter()
        .enumerate()
        .filter(|(i, n)| {
            let passes = ratio >= 1.0 || b_to_a.len() < 2 || distance(n.best) < ratio * distance(n.second);
            b_to_a.get(n.index).is_some_and(|m| m.index == *i) && passes
        })
        .map(|(i, n)| (i, n.index))
        .collect()
}

/// Reference (and CPU matcher): mutual nearest neighbours of `a` and `b`, with the ratio test when `ratio < 1`.
pub fn mutual_nearest_reference(a: &Features, b: &Features, ratio: f32) -> Vec<(usize, usize)> {
    mutual_from_nearest(&nearest_reference(a, b), &nearest_reference(b, a), ratio)
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct NearestParams {
    n_query: u32,
    n_ref: u32,
    dim4: u32,
    tile_rows: u32,
    tiles_per_chunk: u32,
    n_chunks: u32,
    _pad: [u32; 2],
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct MutualParams {
    n_a: u32,
    n_b: u32,
    ratio: f32,
    _pad: u32,
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct NearestRecord {
    index: u32,
    best: f32,
    second: f32,
    _pad: f32,
}

const NONE: u32 = u32::MAX;

/// The GPU matcher. Its buffers are kept by capacity (the rows of both sets rounded up to a power of two, and the
/// descriptor width) and reused by later calls, as the extractor keeps its plans per image size.
pub struct GpuMatcher {
    gpu: Gpu,
    buffers: Mutex<HashMap<(u32, u32, usize), Arc<MatchBuffers>>>,
}

/// Capacities kept at once; more are dropped (and made again when needed).
const KEPT_CAPACITIES: usize = 4;

/// The buffers of one capacity.
struct MatchBuffers {
    desc_a: wgpu::Buffer,
    desc_b: wgpu::Buffer,
    near_ab: wgpu::Buffer,
    near_ba: wgpu::Buffer,
    out: wgpu::Buffer,
    staging: wgpu::Buffer,
}

impl MatchBuffers {
    fn new(gpu: &Gpu, (cap_a, cap_b, dim4): (u32, u32, usize)) -> Self {
        let (cap_a, cap_b) = (cap_a as u64, cap_b as u64);
        let rows = |n: u64| 16 * dim4 as u64 * n;
        // nearest records of every query row in each reference chunk (at most MAX_CHUNKS)
        let records = |n_query: u64| 16 * MAX_CHUNKS as u64 * n_query;
        MatchBuffers {
            desc_a: gpu.storage("descriptors a", rows(cap_a)),
            desc_b: gpu.storage("descriptors b", rows(cap_b)),
            near_ab: gpu.storage("nearest a->b", records(cap_a)),
            near_ba: gpu.storage("nearest b->a", records(cap_b)),
            out: gpu.storage("matches", 4 * cap_a),
            staging: gpu.staging("matching readback", 16 * cap_a + 16 * cap_b + 4 * cap_a),
        }
    }
}

/// What the GPU computed for one pair of descriptor sets.
pub struct GpuMatches {
    pub a_to_b: Vec<Nearest>,
    pub b_to_a: Vec<Nearest>,
    pub matches: Vec<(usize, usize)>,
}

impl GpuMatcher {
    pub fn new(gpu: &Gpu) -> Self {
        GpuMatcher { gpu: gpu.clone(), buffers: Mutex::new(HashMap::new()) }
    }

    /// The GPU it runs on.
    pub fn gpu(&self) -> &Gpu {
        &self.gpu
    }

    /// The buffers for sets of `na` and `nb` rows; one call at a time holds the lock, so no two submissions
    /// share buffers.
    fn buffers(&self, cache: &mut HashMap<(u32, u32, usize), Arc<MatchBuffers>>, na: u32, nb: u32, dim4: usize) -> Arc<MatchBuffers> {
        let key = (na.next_power_of_two(), nb.next_power_of_two(), dim4);
        if !cache.contains_key(&key) && cache.len() >= KEPT_CAPACITIES {
            cache.clear();
        }
        cache.entry(key).or_insert_with(|| Arc::new(MatchBuffers::new(&self.gpu, key))).clone()
    }

    /// The adapter it runs on.
    pub fn adapter(&self) -> String {
        self.gpu.adapter.to_string()
    }

    pub fn mutual_nearest(&self, a: &Features, b: &Features, ratio: f32) -> Result<Vec<(usize, usize)>> {
        Ok(self.run(a, b, ratio)?.matches)
    }

    /// Both nearest-neighbour directions and the mutual matches, in one submission.
    pub fn run(&self, a: &Features, b: &Features, ratio: f32) -> Result<GpuMatches> {
        let Some(dim4) = self.check(a, b)? else {
            return Ok(GpuMatches { a_to_b: Vec::new(), b_to_a: Vec::new(), matches: Vec::new() });
        };
        let mut cache = self.buffers.lock().unwrap_or_else(|e| e.into_inner());
        let (buffers, lens) = self.gpu.scoped(|| {
            let buffers = self.buffers(&mut cache, a.len() as u32, b.len() as u32, dim4);
            let lens = self.submit(&buffers, a, b, dim4, ratio);
            Ok((buffers, lens))
        })?;
        let data = self.gpu.read_staging(&[(&buffers.staging, lens.iter().sum())])?.remove(0);
        Ok(decode(&data, lens))
    }

    /// The descriptors' vec4 count, `None` when a set is empty; an error for sets this matcher cannot take.
    fn check(&self, a: &Features, b: &Features) -> Result<Option<usize>> {
        if a.dim != b.dim {
            return Err(Error::Invalid(format!("descriptor dimensions differ: {} and {}", a.dim, b.dim)));
        }
        if a.is_empty() || b.is_empty() {
            return Ok(None);
        }
        let dim4 = a.dim.div_ceil(4);
        if dim4 == 0 || dim4 > TILE_VEC4 {
            return Err(Error::Invalid(format!("descriptor dimension {} is outside 1..={}", a.dim, 4 * TILE_VEC4)));
        }
        let (na, nb) = (a.len() as u64, b.len() as u64);
        let bytes = 16 * dim4 as u64 * na.max(nb);
        let limit = self.gpu.limits.max_storage_buffer_binding_size.min(self.gpu.limits.max_buffer_size);
        if bytes > limit {
            return Err(Error::Invalid(format!(
                "{na} x {nb} descriptors of dimension {} need a {bytes}-byte buffer, over this adapter's limit of {limit}; match fewer keypoints",
                a.dim
            )));
        }
        if na.max(nb).div_ceil(64) > 65535 {
            return Err(Error::Invalid(format!("{na} x {nb} descriptors: at most {} per set", 65535 * 64)));
        }
        Ok(Some(dim4))
    }

    /// Uploads both sets, records nearest (both directions), merge and mutual check, copies the results to the
    /// staging buffer and submits; returns the byte lengths of its three parts (a->b, b->a, match flags).
    fn submit(&self, buffers: &MatchBuffers, a: &Features, b: &Features, dim4: usize, ratio: f32) -> [u64; 3] {
        let gpu = &self.gpu;
        let (na, nb) = (a.len() as u32, b.len() as u32);
        let MatchBuffers { desc_a, desc_b, near_ab, near_ba, out, staging } = buffers;
        gpu.queue.write_buffer(desc_a, 0, bytemuck::cast_slice(&padded(a, dim4)));
        gpu.queue.write_buffer(desc_b, 0, bytemuck::cast_slice(&padded(b, dim4)));
        let tile_rows = TILE_VEC4 / dim4;
        let mut dispatches = Vec::new();
        let mut nearest = |query: &wgpu::Buffer, n_query: u32, refs: &wgpu::Buffer, n_ref: u32, result: &wgpu::Buffer| {
            let tiles = (n_ref as usize).div_ceil(tile_rows);
            let tiles_per_chunk = TILES_PER_CHUNK.max(tiles.div_ceil(MAX_CHUNKS));
            let n_chunks = tiles.div_ceil(tiles_per_chunk) as u32;
            let params = NearestParams {
                n_query,
                n_ref,
                dim4: dim4 as u32,
                tile_rows: tile_rows as u32,
                tiles_per_chunk: tiles_per_chunk as u32,
                n_chunks,
                _pad: [0; 2],
            };
            let p = gpu.uniform("nearest params", &params);
            let bindings = [(0, &p), (1, query), (2, refs), (3, result)];
            dispatches.push(gpu.dispatch(SHADER, "nearest_in_chunk", &bindings, [n_query.div_ceil(64), n_chunks, 1]));
            dispatches.push(gpu.dispatch(SHADER, "merge_chunks", &[(0, &p), (3, result)], groups_1d(n_query, 64)));
        };
        nearest(desc_a, na, desc_b, nb, near_ab);
        nearest(desc_b, nb, desc_a, na, near_ba);
        let mp = gpu.uniform("mutual params", &MutualParams { n_a: na, n_b: nb, ratio, _pad: 0 });
        dispatches.push(gpu.dispatch(SHADER, "mutual_check", &[(4, &mp), (5, near_ab), (6, near_ba), (7, out)], groups_1d(na, 64)));
        let lens = [16 * na as u64, 16 * nb as u64, 4 * na as u64];
        let mut encoder = gpu.device.create_command_encoder(&Default::default());
        {
            let mut pass = encoder.begin_compute_pass(&Default::default());
            dispatches.iter().for_each(|d| d.record(&mut pass));
        }
        encoder.copy_buffer_to_buffer(near_ab, 0, staging, 0, lens[0]);
        encoder.copy_buffer_to_buffer(near_ba, 0, staging, lens[0], lens[1]);
        encoder.copy_buffer_to_buffer(out, 0, staging, lens[0] + lens[1], lens[2]);
        gpu.queue.submit([encoder.finish()]);
        lens
    }
}

/// The read-back bytes of `GpuMatcher::submit` as nearest neighbours and matches.
fn decode(data: &[u8], lens: [u64; 3]) -> GpuMatches {
    let records = |bytes: &[u8]| -> Vec<Nearest> {
        bytemuck::pod_collect_to_vec::<u8, NearestRecord>(bytes)
            .into_iter()
            .map(|r| Nearest {
                index: if r.index == NONE { usize::MAX } else { r.index as usize },
                best: r.best,
                // the kernel starts from the most negative finite float; the reference from -inf
                second: if r.second <= -3.0e38 { f32::NEG_INFINITY } else { r.second },
            })
            .collect()
    };
    let (ab, rest) = data.split_at(lens[0] as usize);
    let (ba, flags) = rest.split_at(lens[1] as usize);
    let flags: Vec<u32> = bytemuck::pod_collect_to_vec(flags);
    let matches = flags.iter().enumerate().filter(|(_, j)| **j != NONE).map(|(i, j)| (i, *j as usize)).collect();
    GpuMatches { a_to_b: records(ab), b_to_a: records(ba), matches }
}

/// Descriptors as rows of `dim4` vec4, zero-padded.
fn padded(f: &Features, dim4: usize) -> Vec<f32> {
    let mut out = vec![0f32; f.len() * dim4 * 4];
    for i in 0..f.len() {
        out[i * dim4 * 4..i * dim4 * 4 + f.dim].copy_from_slice(f.descriptor(i));
    }
    out
}
