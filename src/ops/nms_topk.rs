//! Non-maximum suppression, top-k selection over all pyramid levels, and the gather of keypoint records
//! (shaders/nms_topk.wgsl).

use super::Map;
use crate::features::KeypointRecord;
use crate::gpu::{groups_1d, groups_2d, Dispatch, Gpu, Shader};
use crate::config::MAX_LEVELS;
use bytemuck::Zeroable;

pub const SHADER: Shader = Shader { name: "nms_topk", source: include_str!("../../shaders/nms_topk.wgsl") };

/// Geometry of one pyramid level's heatmap inside the pooled score and orientation buffers.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LevelGeom {
    /// Heatmap size.
    pub hw: u32,
    pub hh: u32,
    /// First pixel of this level in the pooled buffers.
    pub offset: u32,
    /// Heatmap pixel (0, 0) is centred on level pixel (margin, margin).
    pub margin: u32,
    /// Level-0 pixels per level pixel along x and y.
    pub sx: f32,
    pub sy: f32,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct NmsSettings {
    pub radius: u32,
    pub border: u32,
    pub threshold: f32,
    pub max_keypoints: u32,
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct NmsParams {
    hw: u32,
    hh: u32,
    radius: u32,
    border: u32,
    threshold: f32,
    block: u32,
    blocks_w: u32,
    blocks_h: u32,
    slot_offset: u32,
    level_offset: u32,
    _pad: [u32; 2],
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct SortParams {
    n: u32,
    k: u32,
    j: u32,
    start: u32,
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct LevelInfo {
    offset: u32,
    hw: u32,
    hh: u32,
    margin: u32,
    sx: f32,
    sy: f32,
    _pad: [u32; 2],
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct GatherParams {
    count: u32,
    levels: u32,
    _pad: [u32; 2],
}

fn is_keypoint(score: &[f32], hw: usize, hh: usize, x: usize, y: usize, s: &NmsSettings) -> bool {
    let index = y * hw + x;
    let v = score[index];
    let b = s.border as usize;
    if !(v >= s.threshold) || x < b || y < b || x + b >= hw || y + b >= hh {
        return false;
    }
    let r = s.radius as isize;
    for dy in -r..=r {
        for dx in -r..=r {
            let (nx, ny) = (x as isize + dx, y as isize + dy);
            if (dx == 0 && dy == 0) || nx < 0 || ny < 0 || nx >= hw as isize || ny >= hh as isize {
                continue;
            }
            let other = ny as usize * hw + nx as usize;
            if score[other] > v || (score[other] == v && other < index) {
                return false;
            }
        }
    }
    true
}

/// Sub-pixel offset of a maximum `b` between its neighbours `a` (before) and `c` (after) along one axis: the vertex
/// of the parabola through the three, `0.5 (a - c) / ((a + c) - 2b)`, clamped to half a pixel; 0 where a neighbour
/// is missing (the heatmap's edge) or the three are collinear. Written so that swapping `a` and `c` negates the
/// result exactly (`a + c` commutes, `a - c` flips sign): a flip or quarter turn of the image moves refined
/// keypoints exactly as it moves pixels.
pub fn parabola_offset(a: Option<f32>, b: f32, c: Option<f32>) -> f32 {
    let (Some(a), Some(c)) = (a, c) else { return 0.0 };
    let curvature = (a + c) - 2.0 * b;
    if !(curvature < 0.0) {
        return 0.0;
    }
    (0.5 * (a - c) / curvature).clamp(-0.5, 0.5)
}

/// The refined position of heatmap pixel (x, y) of a `hw` x `hh` score map: a parabola along each axis.
pub fn refine_reference(score: &[f32], hw: usize, hh: usize, x: usize, y: usize) -> (f32, f32) {
    let at = |x: usize, y: usize| score[y * hw + x];
    let b = at(x, y);
    let dx = parabola_offset((x > 0).then(|| at(x - 1, y)), b, (x + 1 < hw).then(|| at(x + 1, y)));
    let dy = parabola_offset((y > 0).then(|| at(x, y - 1)), b, (y + 1 < hh).then(|| at(x, y + 1)));
    (x as f32 + dx, y as f32 + dy)
}

/// Reference: NMS on every level, pooled top-k by (score desc, level, index), refined to sub-pixel positions on
/// their level (`refine_reference`), mapped to level-0 coordinates.
pub fn nms_topk_reference(levels: &[(LevelGeom, &Map, &Map)], s: &NmsSettings) -> Vec<KeypointRecord> {
    let mut found: Vec<(f32, u32, usize)> = Vec::new(); // (score, global index, level)
    for (l, (geom, score, _)) in levels.iter().enumerate() {
        let (hw, hh) = (geom.hw as usize, geom.hh as usize);
        for y in 0..hh {
            for x in 0..hw {
                if is_keypoint(&score.data, hw, hh, x, y, s) {
                    found.push((score.data[y * hw + x], geom.offset + (y * hw + x) as u32, l));
                }
            }
        }
    }
    found.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    found.truncate(s.max_keypoints as usize);
    found
        .into_iter()
        .map(|(score, index, l)| {
            let (geom, score_map, orientation) = &levels[l];
            let local = (index - geom.offset) as usize;
            let (hw, hh) = (geom.hw as usize, geom.hh as usize);
            let (hx, hy) = refine_reference(&score_map.data, hw, hh, local % hw, local / hw);
            let (x, y) = (hx + geom.margin as f32, hy + geom.margin as f32);
            KeypointRecord {
                x: (x + 0.5) * geom.sx - 0.5,
                y: (y + 0.5) * geom.sy - 0.5,
                score,
                orientation: orientation.data[local],
                scale: (geom.sx * geom.sy).sqrt(),
                level: l as f32,
                valid: 1.0,
                _pad: 0.0,
            }
        })
        .collect()
}

/// The GPU selection for a fixed set of level geometries: buffers and dispatches, built once per image size.
pub struct NmsTopk {
    pub dispatches: Vec<Dispatch>,
    pub keypoints: wgpu::Buffer,
    pub count: u32,
}

impl NmsTopk {
    pub fn build(
        gpu: &Gpu,
        levels: &[LevelGeom],
        s: &NmsSettings,
        scores: &wgpu::Buffer,
        orientations: &wgpu::Buffer,
    ) -> Self {
        let block = s.radius + 1;
        let mut dispatches = Vec::new();
        let mut slots = 0u32;
        let mut level_slots = Vec::new();
        for g in levels {
            let (bw, bh) = (g.hw.div_ceil(block), g.hh.div_ceil(block));
            level_slots.push((slots, bw, bh));
            slots += bw * bh;
        }
        let n = slots.max(s.max_keypoints).max(512).next_power_of_two();
        let candidates = gpu.storage("candidates", 8 * n as u64);
        for (g, &(slot_offset, blocks_w, blocks_h)) in levels.iter().zip(&level_slots) {
            let params = NmsParams {
                hw: g.hw,
                hh: g.hh,
                radius: s.radius,
                border: s.border,
                threshold: s.threshold,
                block,
                blocks_w,
                blocks_h,
                slot_offset,
                level_offset: g.offset,
                _pad: [0; 2],
            };
            let p = gpu.uniform("nms params", &params);
            let bindings = [(0, &p), (1, scores), (2, &candidates)];
            dispatches.push(gpu.dispatch(SHADER, "nms", &bindings, groups_2d(blocks_w, blocks_h, 8, 1)));
        }
        let sort = |k: u32, j: u32, start: u32| gpu.uniform("sort params", &SortParams { n, k, j, start });
        let clear = sort(0, 0, slots);
        dispatches.push(gpu.dispatch(SHADER, "clear_candidates", &[(2, &candidates), (3, &clear)], groups_1d(n - slots, 256)));
        let local = |k: u32| {
            let p = sort(k, 0, 0);
            gpu.dispatch(SHADER, "sort_local", &[(2, &candidates), (3, &p)], groups_1d(n / 512, 1))
        };
        dispatches.push(local(0));
        let mut k = 1024;
        while k <= n {
            let mut j = k / 2;
            while j >= 512 {
                let p = sort(k, j, 0);
                dispatches.push(gpu.dispatch(SHADER, "sort_global", &[(2, &candidates), (3, &p)], groups_1d(n / 2, 256)));
                j /= 2;
            }
            dispatches.push(local(k));
            k *= 2;
        }
        // a uniform array (the config allows at most MAX_LEVELS), so that the gather binds four storage buffers,
        // the limit of downlevel adapters (GL)
        let mut infos = [LevelInfo::zeroed(); MAX_LEVELS];
        for (info, g) in infos.iter_mut().zip(levels) {
            *info = LevelInfo { offset: g.offset, hw: g.hw, hh: g.hh, margin: g.margin, sx: g.sx, sy: g.sy, _pad: [0; 2] };
        }
        let level_buffer = gpu.uniform("levels", &infos);
        let count = s.max_keypoints;
        let keypoints = gpu.storage("keypoints", KeypointRecord::BYTES * count as u64);
        let gp = gpu.uniform("gather params", &GatherParams { count, levels: levels.len() as u32, _pad: [0; 2] });
        let bindings =
            [(1, scores), (2, &candidates), (4, &gp), (5, orientations), (6, &level_buffer), (7, &keypoints)];
        dispatches.push(gpu.dispatch(SHADER, "gather", &bindings, groups_1d(count, 64)));
        NmsTopk { dispatches, keypoints, count }
    }
}
