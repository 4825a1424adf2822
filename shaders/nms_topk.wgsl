// Keypoint selection on the GPU in four dispatches, none of them a sort of the whole heatmap: non-maximum
// suppression of every pyramid level into candidate slots; a radix select of the k-th best candidate by one
// workgroup; the compaction of the candidates at or above it; and their ranking, which writes the top k as keypoint
// records in order. Only those records leave the GPU.
//
// NMS needs no atomics and is deterministic: a pixel is kept when it beats every other pixel within the radius
// (ties go to the lower linear index), so two kept pixels are more than `radius` apart and each block of
// (radius+1) x (radius+1) pixels holds at most one; every block owns one candidate slot.
// Candidate: vec2(orderable score bits, global pixel index); better is a higher score, then a lower index, so no
// two candidates tie and the selection is exact. The compaction's atomic counter orders the survivors arbitrarily;
// the ranking does not depend on that order, so the records are the same run to run.
// Reference: src/ops/nms_topk.rs.

struct Select {
    slots: u32,       // candidate slots of all levels
    k: u32,           // keypoints wanted
    levels: u32,
    radius: u32,
    border: u32,
    threshold: f32,
    _pad0: u32,
    _pad1: u32,
}

struct LevelInfo {
    offset: u32,      // first pixel of this level in the score and orientation buffers
    hw: u32,          // heatmap width and height
    hh: u32,
    margin: u32,
    sx: f32,
    sy: f32,
    slot_offset: u32, // first candidate slot of this level
    blocks_w: u32,    // blocks of (radius+1)^2 pixels per row
}

// The selection: the threshold key the select step finds (the k-th best candidate, or the lowest valid key when
// there are fewer than k), and the candidates at or above it that the compaction appends.
struct Selection {
    hi: u32,
    lo: u32,
    count: atomic<u32>,
    _pad: u32,
    items: array<vec2<u32>>,
}

// The same buffer, read by the ranking.
struct Selected {
    hi: u32,
    lo: u32,
    count: u32,
    _pad: u32,
    items: array<vec2<u32>>,
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

@group(0) @binding(0) var<uniform> sp: Select;
@group(0) @binding(1) var<storage, read> scores: array<f32>;
@group(0) @binding(2) var<storage, read_write> candidates: array<vec2<u32>>;
@group(0) @binding(3) var<uniform> levels: array<LevelInfo, 8>; // MAX_LEVELS in src/config.rs
@group(0) @binding(4) var<storage, read_write> selection: Selection;
@group(0) @binding(5) var<storage, read> orientations: array<f32>;
@group(0) @binding(6) var<storage, read> selected: Selected;
@group(0) @binding(7) var<storage, read_write> keypoints: array<Keypoint>;

const EMPTY: vec2<u32> = vec2<u32>(0u, 0xffffffffu);

// Maps a float to a u32 whose unsigned order is the float order (never 0 for a number: 0 marks an empty slot).
fn orderable(s: f32) -> u32 {
    let b = bitcast<u32>(s);
    return select(b | 0x80000000u, ~b, (b & 0x80000000u) != 0u);
}

// The candidate as one 64-bit key, larger is better: (score bits, bit-inverted index).
fn key(c: vec2<u32>) -> vec2<u32> {
    return vec2<u32>(c.x, ~c.y);
}

fn at_least(a: vec2<u32>, b: vec2<u32>) -> bool {
    return a.x > b.x || (a.x == b.x && a.y >= b.y);
}

fn level_of_slot(slot: u32) -> u32 {
    var level = 0u;
    for (var l = 1u; l < sp.levels; l++) {
        if (slot >= levels[l].slot_offset) {
            level = l;
        }
    }
    return level;
}

fn is_keypoint(info: LevelInfo, x: u32, y: u32) -> bool {
    let index = y * info.hw + x;
    let s = scores[info.offset + index];
    if (s < sp.threshold || x < sp.border || y < sp.border || x + sp.border >= info.hw || y + sp.border >= info.hh) {
        return false;
    }
    let r = i32(sp.radius);
    for (var dy = -r; dy <= r; dy++) {
        let ny = i32(y) + dy;
        if (ny < 0 || ny >= i32(info.hh)) {
            continue;
        }
        for (var dx = -r; dx <= r; dx++) {
            let nx = i32(x) + dx;
            if (nx < 0 || nx >= i32(info.hw) || (dx == 0 && dy == 0)) {
                continue;
            }
            let other = u32(ny) * info.hw + u32(nx);
            let t = scores[info.offset + other];
            if (t > s || (t == s && other < index)) {
                return false;
            }
        }
    }
    return true;
}

// One invocation per candidate slot of every level.
@compute @workgroup_size(64, 1, 1)
fn nms(@builtin(global_invocation_id) gid: vec3<u32>) {
    let slot = gid.x + gid.y * 65535u * 64u;
    if (slot >= sp.slots) {
        return;
    }
    let info = levels[level_of_slot(slot)];
    let b = slot - info.slot_offset;
    let block = sp.radius + 1u;
    let bx = (b % info.blocks_w) * block;
    let by = (b / info.blocks_w) * block;
    var found = EMPTY;
    for (var y = by; y < min(by + block, info.hh); y++) {
        for (var x = bx; x < min(bx + block, info.hw); x++) {
            if (is_keypoint(info, x, y)) {
                let index = info.offset + y * info.hw + x;
                found = vec2<u32>(orderable(scores[index]), index);
            }
        }
    }
    candidates[slot] = found;
}

var<workgroup> histogram: array<atomic<u32>, 256>;
var<workgroup> digit: u32;
var<workgroup> wanted: u32;
var<workgroup> done: bool;

// One workgroup: the k-th best key, eight bits at a time from the top (4 passes over the score word, then as many
// as needed over the index word), counting in a workgroup histogram. Stops early once the keys of the chosen
// bucket are exactly the ones still wanted. Also resets the compaction counter.
@compute @workgroup_size(256, 1, 1)
fn select_kth(@builtin(local_invocation_index) li: u32) {
    var prefix = vec2<u32>(0u, 0u);
    var mask = vec2<u32>(0u, 0u);
    if (li == 0u) {
        wanted = sp.k;
        done = false;
    }
    for (var round = 0u; round < 8u; round++) {
        atomicStore(&histogram[li], 0u);
        workgroupBarrier();
        if (workgroupUniformLoad(&done)) {
            break;
        }
        let word = round / 4u;
        let shift = 24u - 8u * (round % 4u);
        for (var s = li; s < sp.slots; s += 256u) {
            let c = candidates[s];
            if (c.x == 0u) {
                continue;
            }
            let kk = key(c);
            if ((kk.x & mask.x) == prefix.x && (kk.y & mask.y) == prefix.y) {
                atomicAdd(&histogram[(kk[word] >> shift) & 255u], 1u);
            }
        }
        workgroupBarrier();
        if (li == 0u) {
            // the bucket holding the wanted-th best key among those matching the prefix
            var above = 0u;
            var d = 256u;
            loop {
                if (d == 0u) {
                    break;
                }
                d -= 1u;
                let n = atomicLoad(&histogram[d]);
                if (above + n >= wanted) {
                    break;
                }
                above += n;
            }
            let n = atomicLoad(&histogram[d]);
            if (above + n < wanted) {
                // fewer valid candidates than k: all of them (the lowest valid key is (1, 0))
                digit = 256u;
                done = true;
            } else {
                digit = d;
                wanted -= above;
                done = n == wanted;
            }
        }
        let d = workgroupUniformLoad(&digit);
        if (d == 256u) {
            prefix = vec2<u32>(1u, 0u);
            break;
        }
        prefix[word] |= d << shift;
        mask[word] |= 255u << shift;
    }
    if (li == 0u) {
        selection.hi = prefix.x;
        selection.lo = prefix.y;
        atomicStore(&selection.count, 0u);
    }
}

// Every candidate at or above the threshold, in arbitrary order.
@compute @workgroup_size(64, 1, 1)
fn compact(@builtin(global_invocation_id) gid: vec3<u32>) {
    let slot = gid.x + gid.y * 65535u * 64u;
    if (slot >= sp.slots) {
        return;
    }
    let c = candidates[slot];
    if (c.x != 0u && at_least(key(c), vec2<u32>(selection.hi, selection.lo))) {
        let i = atomicAdd(&selection.count, 1u);
        if (i < sp.k) {
            selection.items[i] = c;
        }
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

var<workgroup> peers: array<vec2<u32>, 64>;

// Each selected candidate's rank is the number of selected candidates better than it (keys are unique, so the
// ranks are 0..count-1); it is written as keypoint record `rank`, in level-0 pixel coordinates, refined to a
// sub-pixel position on its level. Records from `count` to k are empty.
@compute @workgroup_size(64, 1, 1)
fn rank(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(local_invocation_index) li: u32) {
    let i = gid.x;
    let count = min(selected.count, sp.k);
    var c = EMPTY;
    if (i < count) {
        c = selected.items[i];
    }
    var better = 0u;
    for (var base = 0u; base < count; base += 64u) {
        workgroupBarrier();
        peers[li] = EMPTY;
        if (base + li < count) {
            peers[li] = key(selected.items[base + li]);
        }
        workgroupBarrier();
        for (var j = 0u; j < 64u; j++) {
            let p = peers[j];
            if (p.x != 0u && (p.x > c.x || (p.x == c.x && p.y > ~c.y))) {
                better += 1u;
            }
        }
    }
    if (i >= sp.k) {
        return;
    }
    var kp: Keypoint;
    if (i >= count) {
        keypoints[i] = kp;
        return;
    }
    var level = 0u;
    for (var l = 1u; l < sp.levels; l++) {
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
    keypoints[better] = kp;
}
