// Descriptor sampling: bilinear interpolation of the descriptor map at each keypoint (level-0 coordinates mapped
// by the sampling scale, clamped to the map), for the group descriptor aligned by the keypoint's orientation (each
// field's group axis shifted cyclically, interpolated between the two nearest bins), then L2 renormalisation
// (docs/model.md). One invocation per keypoint. Reference: src/ops/sample.rs.

struct SampleParams {
    map_w: u32,
    map_h: u32,
    dim: u32,
    count: u32,
    scale_x: f32,
    scale_y: f32,
    group_order: u32,  // 0: no alignment (version 1)
    _pad: u32,
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

@group(0) @binding(0) var<uniform> p: SampleParams;
@group(0) @binding(1) var<storage, read> keypoints: array<Keypoint>;
@group(0) @binding(2) var<storage, read> map: array<f32>;
@group(0) @binding(3) var<storage, read_write> descriptors: array<f32>;

const TAU: f32 = 6.28318530717958647692;

// The four taps of a keypoint and its fractions.
struct Taps {
    i00: u32,
    i01: u32,
    i10: u32,
    i11: u32,
    fx: f32,
    fy: f32,
}

fn bilinear(t: Taps, c: u32) -> f32 {
    let b = c * p.map_w * p.map_h;
    let top = map[b + t.i00] * (1.0 - t.fx) + map[b + t.i01] * t.fx;
    let bottom = map[b + t.i10] * (1.0 - t.fx) + map[b + t.i11] * t.fx;
    return top * (1.0 - t.fy) + bottom * t.fy;
}

@compute @workgroup_size(64, 1, 1)
fn sample_descriptors(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.x;
    if (i >= p.count) {
        return;
    }
    let kp = keypoints[i];
    let u = clamp((kp.x + 0.5) * p.scale_x - 0.5, 0.0, f32(p.map_w - 1u));
    let v = clamp((kp.y + 0.5) * p.scale_y - 0.5, 0.0, f32(p.map_h - 1u));
    let x0 = u32(floor(u));
    let y0 = u32(floor(v));
    let x1 = min(x0 + 1u, p.map_w - 1u);
    let y1 = min(y0 + 1u, p.map_h - 1u);
    let taps = Taps(y0 * p.map_w + x0, y0 * p.map_w + x1, y1 * p.map_w + x0, y1 * p.map_w + x1, u - f32(x0), v - f32(y0));
    let n = max(p.group_order, 1u);
    var shift = 0u;
    var f = 0.0;
    if (p.group_order > 0u) {
        var t = kp.orientation * (f32(n) / TAU);
        t -= f32(n) * floor(t / f32(n));
        let i0 = floor(t);
        f = t - i0;
        shift = u32(i0) % n;
    }
    var sum = 0.0;
    for (var c = 0u; c < p.dim; c++) {
        var d = 0.0;
        if (p.group_order > 0u) {
            let field = c - c % n;
            let a = bilinear(taps, field + (c % n + shift) % n);
            let b = bilinear(taps, field + (c % n + shift + 1u) % n);
            d = (1.0 - f) * a + f * b;
        } else {
            d = bilinear(taps, c);
        }
        descriptors[i * p.dim + c] = d;
        sum += d * d;
    }
    let inv = 1.0 / max(sqrt(sum), 1e-12);
    for (var c = 0u; c < p.dim; c++) {
        descriptors[i * p.dim + c] *= inv;
    }
}
