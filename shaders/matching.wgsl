// Descriptor matching on the GPU: for every descriptor of a query set, the nearest (largest dot product) and the
// second-nearest similarity over a reference set; then the mutual check and the optional ratio test.
//
// Descriptors are rows of `dim4` vec4 (the host pads the dimension to a multiple of 4 with zeros). The reference
// set is cut into chunks of `tiles_per_chunk` tiles of `tile_rows` rows; workgroup (x, y) takes 64 query rows (one
// per lane) against chunk y, staging each tile in workgroup memory (16,320 B: within the 16,352 of downlevel GL adapters). A second kernel
// merges the chunks' partial results in chunk order. Chunks give a large GPU many workgroups even for a thousand
// queries, and keep each workgroup's barrier loop short: with one loop over all tiles, Mesa lavapipe 22.3 missed
// one tile's rows (deterministically, from about sixty tiles on; the cause was not found), and tests/matching.rs
// checks sets of many tiles against the reference.
//
// Ties go to the lower reference index, as in the plain-Rust reference (src/ops/matching.rs): rows are visited in
// increasing order, chunks merged in increasing order, and only a strictly larger similarity replaces the best.

struct NearestParams {
    n_query: u32,
    n_ref: u32,
    dim4: u32,
    tile_rows: u32,
    tiles_per_chunk: u32,
    n_chunks: u32,
    _pad0: u32,
    _pad1: u32,
}

struct MutualParams {
    n_a: u32,
    n_b: u32,
    ratio: f32,
    _pad: u32,
}

// Best reference index (NONE when nothing was seen), its similarity, the second-best similarity.
struct Nearest {
    index: u32,
    best: f32,
    second: f32,
    _pad: f32,
}

@group(0) @binding(0) var<uniform> np: NearestParams;
@group(0) @binding(1) var<storage, read> query: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> reference: array<vec4<f32>>;
// [n_chunks][n_query] partial results, then (after merge_chunks) the first n_query hold the final ones.
@group(0) @binding(3) var<storage, read_write> partial: array<Nearest>;

@group(0) @binding(4) var<uniform> mp: MutualParams;
@group(0) @binding(5) var<storage, read> a_to_b: array<Nearest>;
@group(0) @binding(6) var<storage, read> b_to_a: array<Nearest>;
@group(0) @binding(7) var<storage, read_write> matches: array<u32>;

const NONE: u32 = 0xffffffffu;
// Below every similarity of unit vectors; stands for "none yet" (the host reads it back as -inf).
const LOWEST: f32 = -3.0e38;

var<workgroup> tile: array<vec4<f32>, 1020>; // 16,320 B, within GL's 16,352; TILE_VEC4 in src/ops/matching.rs

@compute @workgroup_size(64, 1, 1)
fn nearest_in_chunk(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
) {
    let i = wg.x * 64u + li;
    let chunk = wg.y;
    // Lanes past the end still take part in the loads and barriers.
    let in_range = i < np.n_query;
    var best_index = NONE;
    var best = LOWEST;
    var second = LOWEST;
    let row_len = np.dim4;
    let chunk_start = chunk * np.tiles_per_chunk * np.tile_rows;
    let chunk_end = min(chunk_start + np.tiles_per_chunk * np.tile_rows, np.n_ref);
    for (var start = chunk_start; start < chunk_end; start += np.tile_rows) {
        let rows = min(np.tile_rows, chunk_end - start);
        let count = rows * row_len;
        for (var k = li; k < count; k += 64u) {
            tile[k] = reference[start * row_len + k];
        }
        workgroupBarrier();
        if (in_range) {
            for (var r = 0u; r < rows; r++) {
                var s = 0.0;
                for (var d = 0u; d < row_len; d++) {
                    s += dot(query[i * row_len + d], tile[r * row_len + d]);
                }
                if (s > best) {
                    second = best;
                    best = s;
                    best_index = start + r;
                } else if (s > second) {
                    second = s;
                }
            }
        }
        workgroupBarrier();
    }
    if (in_range) {
        partial[chunk * np.n_query + i] = Nearest(best_index, best, second, 0.0);
    }
}

// Folds the chunks' results into the first n_query records, in chunk order.
@compute @workgroup_size(64, 1, 1)
fn merge_chunks(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.x + gid.y * 65535u * 64u;
    if (i >= np.n_query) {
        return;
    }
    var n = partial[i];
    for (var c = 1u; c < np.n_chunks; c++) {
        let m = partial[c * np.n_query + i];
        if (m.best > n.best) {
            n.second = max(n.best, m.second);
            n.best = m.best;
            n.index = m.index;
        } else {
            n.second = max(n.second, m.best);
        }
    }
    partial[i] = n;
}

fn distance(similarity: f32) -> f32 {
    return sqrt(max(2.0 - 2.0 * similarity, 0.0));
}

// matches[i] = j when a_i and b_j are each other's nearest neighbour (and pass the ratio test), else NONE.
@compute @workgroup_size(64, 1, 1)
fn mutual_check(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.x + gid.y * 65535u * 64u;
    if (i >= mp.n_a) {
        return;
    }
    let n = a_to_b[i];
    var result = NONE;
    if (n.index != NONE && b_to_a[n.index].index == i) {
        let passes = mp.ratio >= 1.0 || mp.n_b < 2u || distance(n.best) < mp.ratio * distance(n.second);
        if (passes) {
            result = n.index;
        }
    }
    matches[i] = result;
}
