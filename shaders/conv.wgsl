// Dense 2-D cross-correlation with fused bias and ReLU: the lifting and group convolutions of the detector (valid
// padding, filters already expanded by the trainer) and the descriptor's convolutions (zero "same" padding).
// One invocation computes 4 output channels of one pixel; the weights are packed [c_out/4][c_in][k][k] x vec4 so
// that every lane of a workgroup reads the same weight (a broadcast) while the input reads are coalesced along x.
// Reference: src/ops/conv.rs.

struct ConvParams {
    in_w: u32,
    in_h: u32,
    out_w: u32,
    out_h: u32,
    c_in: u32,
    c_out: u32,
    k: u32,
    pad: u32,
    relu: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> p: ConvParams;
@group(0) @binding(1) var<storage, read> input: array<f32>;
// the packed weights, then the bias (c_out / 4 vec4s) from bias_base: one binding for both (GpuConv)
@group(0) @binding(2) var<storage, read> weights: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read_write> output: array<f32>;

@compute @workgroup_size(8, 8, 1)
fn conv2d(@builtin(global_invocation_id) gid: vec3<u32>) {
    let x = gid.x;
    let y = gid.y;
    let block = gid.z;
    if (x >= p.out_w || y >= p.out_h) {
        return;
    }
    let bias_base = (p.c_out / 4u) * p.c_in * p.k * p.k;
    var acc = weights[bias_base + block];
    let plane = p.in_w * p.in_h;
    for (var ci = 0u; ci < p.c_in; ci++) {
        let wbase = (block * p.c_in + ci) * p.k * p.k;
        for (var ky = 0u; ky < p.k; ky++) {
            let iy = i32(y + ky) - i32(p.pad);
            if (iy < 0 || iy >= i32(p.in_h)) {
                continue;
            }
            let row = ci * plane + u32(iy) * p.in_w;
            for (var kx = 0u; kx < p.k; kx++) {
                let ix = i32(x + kx) - i32(p.pad);
                if (ix < 0 || ix >= i32(p.in_w)) {
                    continue;
                }
                acc += weights[wbase + ky * p.k + kx] * input[row + u32(ix)];
            }
        }
    }
    if (p.relu != 0u) {
        acc = max(acc, vec4<f32>(0.0));
    }
    let out_plane = p.out_w * p.out_h;
    let o = (block * 4u) * out_plane + y * p.out_w + x;
    output[o] = acc.x;
    output[o + out_plane] = acc.y;
    output[o + 2u * out_plane] = acc.z;
    output[o + 3u * out_plane] = acc.w;
}
