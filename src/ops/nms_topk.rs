//! Non-maximum suppression, top-k selection over all pyramid levels (a radix select, no sort), and the keypoint records
//! (shaders/nms_topk.wgsl).

use super::Map;
use crate::features::KeypointRecord;
use crate::gpu::{groups_1d, Dispatch, Gpu, Shader};
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
struct SelectParams {
    slots: u32,
    k: u32,
    levels: u32,
    radius: u32,
    border: u32,
    threshold: f32,
    _pad: [u32; 2],
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
    slot_offset: u32,
    blocks_w: u32,
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
    /// Four dispatches: NMS of every level, the select of the k-th best candidate, the compaction of those at or
    /// above it, and their ranking into keypoint records (shaders/nms_topk.wgsl).
    pub fn build(
        gpu: &Gpu,
        levels: &[LevelGeom],
        s: &NmsSettings,
        scores: &wgpu::Buffer,
        orientations: &wgpu::Buffer,
    ) -> Self {
        assert!(levels.len() <= MAX_LEVELS, "{} levels: at most {MAX_LEVELS}", levels.len());
        let block = s.radius + 1;
        // a uniform array (the config allows at most MAX_LEVELS), so that no entry point binds more than four
        // storage buffers, the limit of downlevel adapters (GL)
        let mut infos = [LevelInfo::zeroed(); MAX_LEVELS];
        let mut slots = 0u32;
        for (info, g) in infos.iter_mut().zip(levels) {
            let blocks_w = g.hw.div_ceil(block);
            *info = LevelInfo { offset: g.offset, hw: g.hw, hh: g.hh, margin: g.margin, sx: g.sx, sy: g.sy, slot_offset: slots, blocks_w };
            slots += blocks_w * g.hh.div_ceil(block);
        }
        let count = s.max_keypoints;
        let params = SelectParams {
            slots,
            k: count,
            levels: levels.len() as u32,
            radius: s.radius,
            border: s.border,
            threshold: s.threshold,
            _pad: [0; 2],
        };
        let p = gpu.uniform("select params", &params);
        let level_buffer = gpu.uniform("levels", &infos);
        let candidates = gpu.storage("candidates", 8 * slots as u64);
        let selection = gpu.storage("selection", 16 + 8 * count as u64);
        let keypoints = gpu.storage("keypoints", KeypointRecord::BYTES * count as u64);
        let dispatches = vec![
            gpu.dispatch(SHADER, "nms", &[(0, &p), (1, scores), (2, &candidates), (3, &level_buffer)], groups_1d(slots, 64)),
            gpu.dispatch(SHADER, "select_kth", &[(0, &p), (2, &candidates), (4, &selection)], [1, 1, 1]),
            gpu.dispatch(SHADER, "compact", &[(0, &p), (2, &candidates), (4, &selection)], groups_1d(slots, 64)),
            gpu.dispatch(
                SHADER,
                "rank",
                &[(0, &p), (1, scores), (3, &level_buffer), (5, orientations), (6, &selection), (7, &keypoints)],
                [count.div_ceil(64).max(1), 1, 1],
            ),
        ];
        NmsTopk { dispatches, keypoints, count }
    }
}
