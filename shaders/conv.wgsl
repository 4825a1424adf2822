// Dense 2-D cross-correlation with fused bias: the detector's lifting and group convolutions (valid padding, filters
// already expanded by the trainer, ReLU), its last layer fused with orientation pooling, and the descriptor's
// convolutions (zero "same" padding). Host code and references: src/ops/conv.rs, src/ops/orientation_pool.rs.
//
// Register tiling: each invocation accumulates PX = 4 neighbouring pixels of one row x 4*OCV output channels
// (OCV 1 to 4), so one input value read from workgroup memory feeds 4*OCV FMAs and one filter vec4 feeds 4 of them.
// A workgroup covers 32 x 8 output pixels (a square 16 x 16 has less halo but measured 1.3-1.7x slower on lavapipe,
// whose 8-lane SIMD rows then span two pixel rows); it is declared one-dimensional (64) because subgroup builtins
// need that, and invocation i takes row i / 8, column i % 8. CHUNK input channels are staged in workgroup memory at
// a time: their input tile plus halo, zero outside the map (so the inner loops carry no bounds checks), in rows
// padded to whole vec4s so that an invocation reads the PX + K - 1 <= 8 values of a tile row as two vec4s; and
// their filter taps, which `tap_filters` (shaders/conv_filters_shared.wgsl or conv_filters_subgroup.wgsl, prepended
// by the host) hands out. Shapes are override constants, so every loop has a constant trip count and unrolls; the
// host picks OCV and CHUNK per layer and adapter (src/ops/conv.rs, `Tiling`).
//
// Storage precision: the host prepends `alias IN_T`, `OUT_T` and `W_T` (input map, output map, filters), each f32
// or f16 (with `enable f16;`, where the adapter has SHADER_F16: src/ops/conv.rs). Arithmetic is f32 throughout:
// values are widened when staged and rounded once when stored.
//
// One dispatch covers several maps of one layer ("parts": the levels of the detector's pyramid): the workgroups are
// numbered part after part, and each part has its own size and its offsets into the input and output buffers.

override K: u32 = 3u;        // kernel size
override C_IN: u32 = 1u;     // input channels
override CHUNK: u32 = 1u;    // input channels staged at once; divides C_IN
override PAD: u32 = 0u;      // zero padding on every side
override RELU: bool = false;
override OCV: u32 = 1u;      // output vec4s per invocation: 1 to 4

const PX: u32 = 4u;          // pixels per invocation along x
const WG_X: u32 = 8u;        // the workgroup's WG_X x WG_Y invocations cover 32 x 8 pixels
const WG_Y: u32 = 8u;
const MAX_PARTS: u32 = 8u;
// Input tile plus halo of one channel (rows of TW, a multiple of 4), and the filter taps of one input channel for the
// block's 4*OCV outputs. CHUNK of each are staged together: CHUNK * (4 * TAPS + TILE) floats, within the 16,352 B of
// downlevel adapters.
override TW: u32 = (WG_X * PX + K + 2u) / 4u * 4u;
override TILE: u32 = TW * (WG_Y + K - 1u);
override TILE_VECS: u32 = CHUNK * TILE / 4u;
override TAP_VECS: u32 = CHUNK * TAPS;
override TAPS: u32 = K * K * OCV;

struct Part {
    in_w: u32,
    in_h: u32,
    out_w: u32,
    out_h: u32,
    in_offset: u32,   // floats before this part's input map
    out_offset: u32,  // floats before its output map (conv) or its score/orientation maps (pooling)
    first_group: u32, // index of its first workgroup
    groups_x: u32,    // its workgroups per row
}

struct ConvParams {
    parts: u32,
    groups: u32,      // workgroups of all parts
    c_out: u32,
    _pad: u32,
    part: array<Part, MAX_PARTS>,
}

@group(0) @binding(0) var<uniform> p: ConvParams;
@group(0) @binding(1) var<storage, read> input: array<IN_T>;
// the packed weights [c_out / (4 OCV)][C_IN][K][K][OCV] vec4, then the bias (c_out / 4 vec4s): one binding for
// both, so that the fused pooling stays within the 4 storage buffers per stage of downlevel adapters
@group(0) @binding(2) var<storage, read> weights: array<vec4<W_T>>;
@group(0) @binding(4) var<storage, read_write> output: array<OUT_T>;
@group(0) @binding(5) var<storage, read_write> score: array<f32>;
@group(0) @binding(6) var<storage, read_write> orientation: array<f32>;

var<workgroup> tile: array<vec4<f32>, TILE_VECS>;
var<workgroup> taps: array<vec4<f32>, TAP_VECS>;

// Where a workgroup's output tile lies: its part and the tile's top-left output pixel.
struct Place {
    part: Part,
    x0: u32,
    y0: u32,
}

fn place(wid: vec3<u32>) -> Place {
    let t = wid.x + wid.y * 65535u;
    var i = 0u;
    for (var j = 1u; j < p.parts; j++) {
        if (t >= p.part[j].first_group) {
            i = j;
        }
    }
    let q = p.part[i];
    let local = t - q.first_group;
    return Place(q, (local % q.groups_x) * WG_X * PX, (local / q.groups_x) * WG_Y);
}

// The register tile: pixels 0..3 of a row, each with output vecs a, b, c, d (channels 0-3, 4-7, 8-11, 12-15 of the
// block; those beyond OCV unused). Named fields rather than an indexed array, so that no compiler (lavapipe's
// included) places them in memory.
struct Acc {
    a0: vec4<f32>,
    a1: vec4<f32>,
    a2: vec4<f32>,
    a3: vec4<f32>,
    b0: vec4<f32>,
    b1: vec4<f32>,
    b2: vec4<f32>,
    b3: vec4<f32>,
    c0: vec4<f32>,
    c1: vec4<f32>,
    c2: vec4<f32>,
    c3: vec4<f32>,
    d0: vec4<f32>,
    d1: vec4<f32>,
    d2: vec4<f32>,
    d3: vec4<f32>,
}

// The bias of the block's output vec4s `block * OCV ..`, then the convolution summed in. `lane`: the invocation's
// index in its subgroup (conv_filters_*.wgsl).
fn convolve(at: Place, block: u32, lid: vec3<u32>, li: u32, lane: u32) -> Acc {
    let bias_base = (p.c_out / 4u) * C_IN * K * K;
    let ba = vec4<f32>(weights[bias_base + block * OCV]);
    var bb = vec4<f32>(0.0);
    var bc = vec4<f32>(0.0);
    var bd = vec4<f32>(0.0);
    if (OCV >= 2u) {
        bb = vec4<f32>(weights[bias_base + block * OCV + 1u]);
    }
    if (OCV >= 3u) {
        bc = vec4<f32>(weights[bias_base + block * OCV + 2u]);
    }
    if (OCV == 4u) {
        bd = vec4<f32>(weights[bias_base + block * OCV + 3u]);
    }
    var acc = Acc(ba, ba, ba, ba, bb, bb, bb, bb, bc, bc, bc, bc, bd, bd, bd, bd);
    let q = at.part;
    let tw = TW;
    let th = WG_Y + K - 1u;
    let plane = q.in_w * q.in_h;
    // a 1x1 convolution without padding reads each input value in one invocation only (the one that owns its
    // pixel), so it reads its 4 pixels straight from the map instead of staging them; coordinates past the map's
    // edge are clamped (those pixels are not stored)
    let direct = K == 1u && PAD == 0u;
    let own_y = min(at.y0 + lid.y, q.in_h - 1u) * q.in_w;
    let own_x = at.x0 + lid.x * PX;
    let own = array(min(own_x, q.in_w - 1u), min(own_x + 1u, q.in_w - 1u), min(own_x + 2u, q.in_w - 1u), min(own_x + 3u, q.in_w - 1u));
    for (var c0 = 0u; c0 < C_IN; c0 += CHUNK) {
        workgroupBarrier();
        for (var i = li; i < CHUNK * tw * th && !direct; i += WG_X * WG_Y) {
            let c = i / (tw * th);
            let r = i % (tw * th);
            let iy = i32(at.y0 + r / tw) - i32(PAD);
            let ix = i32(at.x0 + r % tw) - i32(PAD);
            var v = 0.0;
            if (iy >= 0 && iy < i32(q.in_h) && ix >= 0 && ix < i32(q.in_w)) {
                v = f32(input[q.in_offset + (c0 + c) * plane + u32(iy) * q.in_w + u32(ix)]);
            }
            tile[i / 4u][i % 4u] = v;
        }
        // the filters of these channels are contiguous in the packing
        let first = (block * C_IN + c0) * TAPS;
        for (var i = li; i < CHUNK * TAPS; i += WG_X * WG_Y) {
            taps[i] = vec4<f32>(weights[first + i]);
        }
        workgroupBarrier();
        for (var c = 0u; c < CHUNK; c++) {
            for (var ky = 0u; ky < K; ky++) {
                let row = (c * th + lid.y + ky) * tw + lid.x * PX;
                var r: array<f32, 8>;
                if (!direct) {
                    let t0 = tile[row / 4u];
                    let t1 = tile[row / 4u + 1u];
                    r = array(t0.x, t0.y, t0.z, t0.w, t1.x, t1.y, t1.z, t1.w);
                }
                for (var kx = 0u; kx < K; kx++) {
                    let wbase = ((c * K + ky) * K + kx) * OCV;
                    var v0: vec4<f32>;
                    var v1: vec4<f32>;
                    var v2: vec4<f32>;
                    var v3: vec4<f32>;
                    if (direct) {
                        let base = q.in_offset + (c0 + c) * plane + own_y;
                        v0 = vec4<f32>(f32(input[base + own[0]]));
                        v1 = vec4<f32>(f32(input[base + own[1]]));
                        v2 = vec4<f32>(f32(input[base + own[2]]));
                        v3 = vec4<f32>(f32(input[base + own[3]]));
                    } else {
                        v0 = vec4<f32>(r[kx]);
                        v1 = vec4<f32>(r[kx + 1u]);
                        v2 = vec4<f32>(r[kx + 2u]);
                        v3 = vec4<f32>(r[kx + 3u]);
                    }
                    let f = tap_filters(wbase, lane);
                    let wa = f[0];
                    acc.a0 = fma(wa, v0, acc.a0);
                    acc.a1 = fma(wa, v1, acc.a1);
                    acc.a2 = fma(wa, v2, acc.a2);
                    acc.a3 = fma(wa, v3, acc.a3);
                    if (OCV >= 2u) {
                        let wb = f[1];
                        acc.b0 = fma(wb, v0, acc.b0);
                        acc.b1 = fma(wb, v1, acc.b1);
                        acc.b2 = fma(wb, v2, acc.b2);
                        acc.b3 = fma(wb, v3, acc.b3);
                    }
                    if (OCV >= 3u) {
                        let wc = f[2];
                        acc.c0 = fma(wc, v0, acc.c0);
                        acc.c1 = fma(wc, v1, acc.c1);
                        acc.c2 = fma(wc, v2, acc.c2);
                        acc.c3 = fma(wc, v3, acc.c3);
                    }
                    if (OCV == 4u) {
                        let wd = f[3];
                        acc.d0 = fma(wd, v0, acc.d0);
                        acc.d1 = fma(wd, v1, acc.d1);
                        acc.d2 = fma(wd, v2, acc.d2);
                        acc.d3 = fma(wd, v3, acc.d3);
                    }
                }
            }
        }
    }
    return acc;
}

// The output vec4s a, b, c, d of pixel px (after the accumulation: not in the inner loop).
fn pixel(acc: Acc, px: u32) -> array<vec4<f32>, 4> {
    switch px {
        case 0u: { return array(acc.a0, acc.b0, acc.c0, acc.d0); }
        case 1u: { return array(acc.a1, acc.b1, acc.c1, acc.d1); }
        case 2u: { return array(acc.a2, acc.b2, acc.c2, acc.d2); }
        default: { return array(acc.a3, acc.b3, acc.c3, acc.d3); }
    }
}

@compute @workgroup_size(64, 1, 1)
fn conv2d(inv: Invocation) {
    let wid = inv.wid;
    let li = inv.li;
    if (wid.x + wid.y * 65535u >= p.groups) {
        return; // the whole workgroup: barriers stay uniform
    }
    let lid = vec3<u32>(li % WG_X, li / WG_X, 0u);
    let at = place(wid);
    let block = wid.z;
    let acc = convolve(at, block, lid, li, subgroup_lane(inv));
    let q = at.part;
    let y = at.y0 + lid.y;
    for (var px = 0u; px < PX; px++) {
        let x = at.x0 + lid.x * PX + px;
        if (x < q.out_w && y < q.out_h) {
            let v = pixel(acc, px);
            for (var j = 0u; j < OCV; j++) {
                store(q, block * OCV + j, x, y, v[j]);
            }
        }
    }
}

fn store(q: Part, vec: u32, x: u32, y: u32, value: vec4<f32>) {
    var v = value;
    if (RELU) {
        v = max(v, vec4<f32>(0.0));
    }
    let out_plane = q.out_w * q.out_h;
    let o = q.out_offset + vec * 4u * out_plane + y * q.out_w + x;
    output[o] = OUT_T(v.x);
    output[o + out_plane] = OUT_T(v.y);
    output[o + 2u * out_plane] = OUT_T(v.z);
    output[o + 3u * out_plane] = OUT_T(v.w);
}

const TAU: f32 = 6.28318530717958647692;

// The detector's last layer (valid, no ReLU, N = 4 * OCV <= 16 group channels, all in one invocation's registers) and
// orientation pooling: the score logit is the max over the N channels, the orientation the argmax bin refined by a
// parabola through its cyclic neighbours (docs/model.md). Nothing of the N-channel map is written.
@compute @workgroup_size(64, 1, 1)
fn conv_orientation_pool(inv: Invocation) {
    let wid = inv.wid;
    let li = inv.li;
    if (wid.x + wid.y * 65535u >= p.groups) {
        return;
    }
    let lid = vec3<u32>(li % WG_X, li / WG_X, 0u);
    let at = place(wid);
    let acc = convolve(at, 0u, lid, li, subgroup_lane(inv));
    let q = at.part;
    let y = at.y0 + lid.y;
    let n = 4u * OCV;
    for (var px = 0u; px < PX; px++) {
        let x = at.x0 + lid.x * PX + px;
        if (x >= q.out_w || y >= q.out_h) {
            continue;
        }
        let group = pixel(acc, px);
        var best = group[0].x;
        var r = 0u;
        for (var i = 1u; i < n; i++) {
            let v = group[i / 4u][i % 4u];
            if (v > best) {
                best = v;
                r = i;
            }
        }
        let prev = (r + n - 1u) % n;
        let next = (r + 1u) % n;
        let a = group[prev / 4u][prev % 4u];
        let c = group[next / 4u][next % 4u];
        let d = a - 2.0 * best + c;
        var t = 0.0;
        if (d < 0.0) {
            t = clamp(0.5 * (a - c) / d, -0.5, 0.5);
        }
        var theta = (f32(r) + t) * TAU / f32(n);
        if (theta < 0.0) {
            theta += TAU;
        }
        if (theta >= TAU) {
            theta -= TAU;
        }
        let o = q.out_offset + y * q.out_w + x;
        score[o] = best;
        orientation[o] = theta;
    }
}
