// The detector's last layer fused with orientation pooling: the convolution to one regular field (N channels, no
// ReLU) is computed in registers, then the score logit is the max over the N group channels and the orientation the
// argmax bin refined by a parabola through its cyclic neighbours (docs/model.md). Nothing of the N-channel map is
// written. Same weight packing as conv.wgsl. Reference: src/ops/orientation_pool.rs.

struct PoolParams {
    in_w: u32,
    in_h: u32,
    out_w: u32,
    out_h: u32,
    c_in: u32,
    n: u32,          // group order, at most 32
    k: u32,
    out_offset: u32, // where this level's maps start in the score and orientation buffers
}

@group(0) @binding(0) var<uniform> p: PoolParams;
@group(0) @binding(1) var<storage, read> input: array<f32>;
// the packed weights, then the bias (n / 4 vec4s): one binding for both, four storage buffers in all
@group(0) @binding(2) var<storage, read> weights: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read_write> score: array<f32>;
@group(0) @binding(5) var<storage, read_write> orientation: array<f32>;

const TAU: f32 = 6.28318530717958647692;

@compute @workgroup_size(8, 8, 1)
fn conv_orientation_pool(@builtin(global_invocation_id) gid: vec3<u32>) {
    let x = gid.x;
    let y = gid.y;
    if (x >= p.out_w || y >= p.out_h) {
        return;
    }
    var v: array<f32, 32>;
    let plane = p.in_w * p.in_h;
    for (var block = 0u; block < p.n / 4u; block++) {
        var acc = weights[(p.n / 4u) * p.c_in * p.k * p.k + block];
        for (var ci = 0u; ci < p.c_in; ci++) {
            let wbase = (block * p.c_in + ci) * p.k * p.k;
            for (var ky = 0u; ky < p.k; ky++) {
                let row = ci * plane + (y + ky) * p.in_w + x;
                for (var kx = 0u; kx < p.k; kx++) {
                    acc += weights[wbase + ky * p.k + kx] * input[row + kx];
                }
            }
        }
        v[block * 4u] = acc.x;
        v[block * 4u + 1u] = acc.y;
        v[block * 4u + 2u] = acc.z;
        v[block * 4u + 3u] = acc.w;
    }
    var best = v[0];
    var r = 0u;
    for (var i = 1u; i < p.n; i++) {
        if (v[i] > best) {
            best = v[i];
            r = i;
        }
    }
    let a = v[(r + p.n - 1u) % p.n];
    let c = v[(r + 1u) % p.n];
    let d = a - 2.0 * best + c;
    var t = 0.0;
    if (d < 0.0) {
        t = clamp(0.5 * (a - c) / d, -0.5, 0.5);
    }
    var theta = (f32(r) + t) * TAU / f32(p.n);
    if (theta < 0.0) {
        theta += TAU;
    }
    if (theta >= TAU) {
        theta -= TAU;
    }
    let o = p.out_offset + y * p.out_w + x;
    score[o] = best;
    orientation[o] = theta;
}
