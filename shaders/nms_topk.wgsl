// Keypoint selection on the GPU: non-maximum suppression per pyramid level, a bitonic sort of the candidates of all
// levels, and a gather of the top k into keypoint records. Only those records leave the GPU.
//
// NMS needs no atomics and is deterministic: a pixel is kept when it beats every other pixel within the radius
// (ties go to the lower linear index), so two kept pixels are more than `radius` apart and each block of
// (radius+1) x (radius+1) pixels holds at most one; every block owns one candidate slot.
// Candidate: vec2(orderable score bits, global pixel index); the sort puts higher scores first, then lower index.
// Reference: src/ops/nms_topk.rs.

struct NmsParams {
    hw: u32,            // heatmap width and height of this level
    hh: u32,
    radius: u32,
    border: u32,
    threshold: f32,
    block: u32,         // radius + 1
    blocks_w: u32,
    blocks_h: u32,
    slot_offset: u32,   // first candidate slot of this level
    level_offset: u32,  // first pixel of this level in the score and orientation buffers
    _pad0: u32,
    _pad1: u32,
}

struct SortParams {
    n: u32,   // candidate slots, a power of two >= 512
    k: u32,   // bitonic stage; 0 for the initial sort of each 512-block
    j: u32,   // distance of the global compare-exchange
    start: u32,
}

struct LevelInfo {
    offset: u32,
    hw: u32,
    hh: u32,
    margin: u32,
    sx: f32,
    sy: f32,
    _pad0: u32,
    _pad1: u32,
}

struct GatherParams {
    count: u32,
    levels: u32,
    _pad0: u32,
    _pad1: u32,
}

struct Keypoint {
    x: f32,
    y: f32,
    score: f32,
    orientation: f32,
    scale: f32,
    level: f32,
    valid: f32,
    _pad: f32,
}

@group(0) @binding(0) var<uniform> np: NmsParams;
@group(0) @binding(1) var<storage, read> scores: array<f32>;
@group(0) @binding(2) var<storage, read_write> candidates: array<vec2<u32>>;
@group(0) @binding(3) var<uniform> sp: SortParams;
@group(0) @binding(4) var<uniform> gp: GatherParams;
@group(0) @binding(5) var<storage, read> orientations: array<f32>;
@group(0) @binding(6) var<uniform> levels: array<LevelInfo, 8>; // MAX_LEVELS in src/config.rs
@group(0) @binding(7) var<storage, read_write> keypoints: array<Keypoint>;

const EMPTY: vec2<u32> = vec2<u32>(0u, 0xffffffffu);

// Maps a float to a u32 whose unsigned order is the float order.
fn orderable(s: f32) -> u32 {
    let b = bitcast<u32>(s);
    return select(b | 0x80000000u, ~b, (b & 0x80000000u) != 0u);
}

fn is_keypoint(x: u32, y: u32) -> bool {
    let index = y * np.hw + x;
    let s = scores[np.level_offset + index];
    if (s < np.threshold || x < np.border || y < np.border || x + np.border >= np.hw || y + np.border >= np.hh) {
        return false;
    }
    let r = i32(np.radius);
    for (var dy = -r; dy <= r; dy++) {
        let ny = i32(y) + dy;
        if (ny < 0 || ny >= i32(np.hh)) {
            continue;
        }
        for (var dx = -r; dx <= r; dx++) {
            let nx = i32(x) + dx;
            if (nx < 0 || nx >= i32(np.hw) || (dx == 0 && dy == 0)) {
                continue;
            }
            let other = u32(ny) * np.hw + u32(nx);
            let t = scores[np.level_offset + other];
            if (t > s || (t == s && other < index)) {
                return false;
            }
        }
    }
    return true;
}

@compute @workgroup_size(8, 8, 1)
fn nms(@builtin(global_invocation_id) gid: vec3<u32>) {
    if (gid.x >= np.blocks_w || gid.y >= np.blocks_h) {
        return;
    }
    var found = EMPTY;
    for (var by = 0u; by < np.block; by++) {
        for (var bx = 0u; bx < np.block; bx++) {
            let x = gid.x * np.block + bx;
            let y = gid.y * np.block + by;
            if (x < np.hw && y < np.hh && is_keypoint(x, y)) {
                let index = y * np.hw + x;
                found = vec2<u32>(orderable(scores[np.level_offset + index]), np.level_offset + index);
            }
        }
    }
    candidates[np.slot_offset + gid.y * np.blocks_w + gid.x] = found;
}

// Resets the slots [start, n) that no level owns.
@compute @workgroup_size(256, 1, 1)
fn clear_candidates(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = sp.start + gid.x + gid.y * 65535u * 256u;
    if (i < sp.n) {
        candidates[i] = EMPTY;
    }
}

fn before(a: vec2<u32>, b: vec2<u32>) -> bool {
    return a.x > b.x || (a.x == b.x && a.y < b.y);
}

var<workgroup> tile: array<vec2<u32>, 512>;

// Bitonic stages with distances below 512 inside workgroup memory: with k == 0 the full sort of each 512-block,
// otherwise the tail (j = 256 .. 1) of stage k.
@compute @workgroup_size(256, 1, 1)
fn sort_local(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) li: u32) {
    let base = (wg.x + wg.y * 65535u) * 512u;
    tile[li] = candidates[base + li];
    tile[li + 256u] = candidates[base + li + 256u];
    workgroupBarrier();
    var k = select(sp.k, 2u, sp.k == 0u);
    let k_last = select(sp.k, 512u, sp.k == 0u);
    loop {
        for (var j = min(k / 2u, 256u); j > 0u; j = j / 2u) {
            let i = 2u * li - (li & (j - 1u));
            let l = i + j;
            let up = ((base + i) & k) == 0u;
            let a = tile[i];
            let b = tile[l];
            if (select(before(a, b), before(b, a), up)) {
                tile[i] = b;
                tile[l] = a;
            }
            workgroupBarrier();
        }
        if (k >= k_last) {
            break;
        }
        k = k * 2u;
    }
    candidates[base + li] = tile[li];
    candidates[base + li + 256u] = tile[li + 256u];
}

// One compare-exchange step of stage k at distance j >= 512, in global memory.
@compute @workgroup_size(256, 1, 1)
fn sort_global(@builtin(global_invocation_id) gid: vec3<u32>) {
    let t = gid.x + gid.y * 65535u * 256u;
    if (t >= sp.n / 2u) {
        return;
    }
    let i = 2u * t - (t & (sp.j - 1u));
    let l = i + sp.j;
    let up = (i & sp.k) == 0u;
    let a = candidates[i];
    let b = candidates[l];
    if (select(before(a, b), before(b, a), up)) {
        candidates[i] = b;
        candidates[l] = a;
    }
}

// Sub-pixel offset of a maximum b between neighbours a and c along one axis (src/ops/nms_topk.rs,
// parabola_offset): the parabola's vertex, clamped to half a pixel; `has_both` false at the heatmap's edge.
// (a + c) - 2b and a - c keep it symmetric: swapping a and c negates it exactly.
fn parabola_offset(a: f32, b: f32, c: f32, has_both: bool) -> f32 {
    let curvature = (a + c) - 2.0 * b;
    if (!has_both || !(curvature < 0.0)) {
        return 0.0;
    }
    return clamp(0.5 * (a - c) / curvature, -0.5, 0.5);
}

// The first `count` sorted candidates as keypoints in level-0 pixel coordinates, refined to sub-pixel positions on
// their level.
@compute @workgroup_size(64, 1, 1)
fn gather(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.x;
    if (i >= gp.count) {
        return;
    }
    let c = candidates[i];
    var kp: Keypoint;
    if (c.y == EMPTY.y) {
        keypoints[i] = kp;
        return;
    }
    var level = 0u;
    for (var l = 1u; l < gp.levels; l++) {
        if (c.y >= levels[l].offset) {
            level = l;
        }
    }
    let info = levels[level];
    let local = c.y - info.offset;
    let hx = local % info.hw;
    let hy = local / info.hw;
    let b = scores[c.y];
    // neighbours' indices are clamped into the level so that no read leaves it; has_both discards them at edges
    let left = scores[c.y - min(hx, 1u)];
    let right = scores[c.y + min(info.hw - 1u - hx, 1u)];
    let up = scores[c.y - min(hy, 1u) * info.hw];
    let down = scores[c.y + min(info.hh - 1u - hy, 1u) * info.hw];
    let dx = parabola_offset(left, b, right, hx > 0u && hx + 1u < info.hw);
    let dy = parabola_offset(up, b, down, hy > 0u && hy + 1u < info.hh);
    let x = (f32(hx) + dx) + f32(info.margin);
    let y = (f32(hy) + dy) + f32(info.margin);
    kp.x = (x + 0.5) * info.sx - 0.5;
    kp.y = (y + 0.5) * info.sy - 0.5;
    kp.score = b;
    kp.orientation = orientations[c.y];
    kp.scale = sqrt(info.sx * info.sy); // the same for a level and its quarter-turned twin
    kp.level = f32(level);
    kp.valid = 1.0;
    keypoints[i] = kp;
}
