// Image preprocessing: raw 8/16-bit pixels to normalised gray, and the separable triangle-filter resampling that
// builds the pyramid (docs/model.md). Reference: src/ops/preprocess.rs.

struct GrayParams {
    width: u32,
    height: u32,
    channels: u32,   // 1 gray, 2 gray+alpha, 3 RGB, 4 RGBA
    bits: u32,       // 8 or 16
    mean: f32,
    std_dev: f32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> gp: GrayParams;
@group(0) @binding(1) var<storage, read> raw: array<u32>;
@group(0) @binding(2) var<storage, read_write> gray: array<f32>;

// The i-th sample of the tightly packed pixel data.
fn raw_sample(i: u32) -> f32 {
    if (gp.bits == 8u) {
        return f32((raw[i >> 2u] >> ((i & 3u) * 8u)) & 255u);
    }
    return f32((raw[i >> 1u] >> ((i & 1u) * 16u)) & 65535u);
}

@compute @workgroup_size(8, 8, 1)
fn to_gray(@builtin(global_invocation_id) gid: vec3<u32>) {
    if (gid.x >= gp.width || gid.y >= gp.height) {
        return;
    }
    let pixel = gid.y * gp.width + gid.x;
    let base = pixel * gp.channels;
    var g = raw_sample(base);
    if (gp.channels >= 3u) {
        g = 0.299 * raw_sample(base) + 0.587 * raw_sample(base + 1u) + 0.114 * raw_sample(base + 2u);
    }
    let full = select(65535.0, 255.0, gp.bits == 8u);
    gray[pixel] = (g / full - gp.mean) / gp.std_dev;
}

struct ResizeParams {
    in_w: u32,
    in_h: u32,
    out_w: u32,
    out_h: u32,
    axis: u32,       // 0: resample along x (in_h == out_h), 1: along y (in_w == out_w)
    ratio: f32,      // input length / output length along the axis
    radius: f32,     // max(1, ratio)
    out_offset: u32, // floats before the output map in dst (a pyramid level in the buffer of all levels)
}

@group(0) @binding(3) var<uniform> rp: ResizeParams;
@group(0) @binding(4) var<storage, read> src: array<f32>;
@group(0) @binding(5) var<storage, read_write> dst: array<f32>;

@compute @workgroup_size(8, 8, 1)
fn resize_axis(@builtin(global_invocation_id) gid: vec3<u32>) {
    if (gid.x >= rp.out_w || gid.y >= rp.out_h) {
        return;
    }
    var u = gid.x;
    var n = rp.in_w;
    if (rp.axis == 1u) {
        u = gid.y;
        n = rp.in_h;
    }
    let c = (f32(u) + 0.5) * rp.ratio - 0.5;
    let lo = i32(ceil(c - rp.radius));
    let hi = i32(floor(c + rp.radius));
    var acc = 0.0;
    var wsum = 0.0;
    for (var j = lo; j <= hi; j++) {
        let w = max(0.0, 1.0 - abs(f32(j) - c) / rp.radius);
        let t = u32(clamp(j, 0, i32(n) - 1));
        var index = gid.y * rp.in_w + t;
        if (rp.axis == 1u) {
            index = t * rp.in_w + gid.x;
        }
        acc += w * src[index];
        wsum += w;
    }
    dst[rp.out_offset + gid.y * rp.out_w + gid.x] = acc / wsum;
}

// A frame the host application rendered: any float-filterable colour texture (unorm or float formats; sRGB
// textures are refused on the host because sampling would linearise them). Same gray conversion as `to_gray`.
@group(0) @binding(6) var frame: texture_2d<f32>;

@compute @workgroup_size(8, 8, 1)
fn texture_to_gray(@builtin(global_invocation_id) gid: vec3<u32>) {
    if (gid.x >= gp.width || gid.y >= gp.height) {
        return;
    }
    let c = textureLoad(frame, vec2<i32>(gid.xy), 0);
    var g = c.r;
    if (gp.channels >= 3u) {
        g = 0.299 * c.r + 0.587 * c.g + 0.114 * c.b;
    }
    gray[gid.y * gp.width + gid.x] = (g - gp.mean) / gp.std_dev;
}
