// The descriptor U-Net's non-convolution ops: 2x2 average pooling (version 1), bilinear resizing fused with the skip
// concatenation (upsampling in the decoder of both versions; with no skip channels, version 2's pooling to half
// size), and per-pixel L2 normalisation over channels (docs/model.md, Descriptor).
// Reference: src/ops/unet.rs. The host prepends `alias IN_T` (input and skip) and `OUT_T`, f32 or f16 (storage
// only; arithmetic is f32).

struct Shape {
    in_w: u32,
    in_h: u32,
    out_w: u32,
    out_h: u32,
    c: u32,        // channels of the input (pool, l2norm) or of the resized part (resize_concat)
    c_skip: u32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> s: Shape;
@group(0) @binding(1) var<storage, read> input: array<IN_T>;
@group(0) @binding(2) var<storage, read_write> output: array<OUT_T>;
@group(0) @binding(3) var<storage, read> skip: array<IN_T>;

@compute @workgroup_size(8, 8, 1)
fn avgpool2(@builtin(global_invocation_id) gid: vec3<u32>) {
    if (gid.x >= s.out_w || gid.y >= s.out_h) {
        return;
    }
    let base = gid.z * s.in_w * s.in_h + 2u * gid.y * s.in_w + 2u * gid.x;
    let sum = (f32(input[base]) + f32(input[base + 1u])) + (f32(input[base + s.in_w]) + f32(input[base + s.in_w + 1u]));
    output[(gid.z * s.out_h + gid.y) * s.out_w + gid.x] = OUT_T(sum * 0.25);
}

// Source coordinate of output pixel u (align_corners = false, clamped at 0) and its two taps.
fn source(u: u32, n_in: u32, n_out: u32) -> vec3<f32> {
    let c = max(0.0, (f32(u) + 0.5) * (f32(n_in) / f32(n_out)) - 0.5);
    let i0 = min(u32(floor(c)), n_in - 1u);
    let i1 = min(i0 + 1u, n_in - 1u);
    return vec3<f32>(f32(i0), f32(i1), c - f32(i0));
}

// output [c + c_skip, out_h, out_w] = concat(resize(input [c, in_h, in_w]), skip [c_skip, out_h, out_w]).
@compute @workgroup_size(8, 8, 1)
fn resize_concat(@builtin(global_invocation_id) gid: vec3<u32>) {
    if (gid.x >= s.out_w || gid.y >= s.out_h) {
        return;
    }
    let ch = gid.z;
    let plane = s.out_w * s.out_h;
    let o = ch * plane + gid.y * s.out_w + gid.x;
    if (ch >= s.c) {
        output[o] = OUT_T(skip[(ch - s.c) * plane + gid.y * s.out_w + gid.x]);
        return;
    }
    let sx = source(gid.x, s.in_w, s.out_w);
    let sy = source(gid.y, s.in_h, s.out_h);
    let base = ch * s.in_w * s.in_h;
    let r0 = base + u32(sy.x) * s.in_w;
    let r1 = base + u32(sy.y) * s.in_w;
    let top = f32(input[r0 + u32(sx.x)]) * (1.0 - sx.z) + f32(input[r0 + u32(sx.y)]) * sx.z;
    let bottom = f32(input[r1 + u32(sx.x)]) * (1.0 - sx.z) + f32(input[r1 + u32(sx.y)]) * sx.z;
    output[o] = OUT_T(top * (1.0 - sy.z) + bottom * sy.z);
}

@compute @workgroup_size(8, 8, 1)
fn l2norm(@builtin(global_invocation_id) gid: vec3<u32>) {
    if (gid.x >= s.in_w || gid.y >= s.in_h) {
        return;
    }
    let plane = s.in_w * s.in_h;
    let p = gid.y * s.in_w + gid.x;
    var sum = 0.0;
    for (var c = 0u; c < s.c; c++) {
        let v = f32(input[c * plane + p]);
        sum += v * v;
    }
    let inv = 1.0 / max(sqrt(sum), 1e-12);
    for (var c = 0u; c < s.c; c++) {
        output[c * plane + p] = OUT_T(f32(input[c * plane + p]) * inv);
    }
}
