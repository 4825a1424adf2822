// Descriptor sampling: bilinear interpolation of the descriptor map at each keypoint (level-0 coordinates mapped
// to the map's stride, clamped to the map), then L2 renormalisation (docs/model.md). One invocation per keypoint.
// Reference: src/ops/sample.rs.

struct SampleParams {
    map_w: u32,
    map_h: u32,
    dim: u32,
    count: u32,
    stride: f32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
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

@compute @workgroup_size(64, 1, 1)
fn sample_descriptors(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.x;
    if (i >= p.count) {
        return;
    }
    let kp = keypoints[i];
    let u = clamp((kp.x + 0.5) / p.stride - 0.5, 0.0, f32(p.map_w - 1u));
    let v = clamp((kp.y + 0.5) / p.stride - 0.5, 0.0, f32(p.map_h - 1u));
    let x0 = u32(floor(u));
    let y0 = u32(floor(v));
    let x1 = min(x0 + 1u, p.map_w - 1u);
    let y1 = min(y0 + 1u, p.map_h - 1u);
    let fx = u - f32(x0);
    let fy = v - f32(y0);
    let plane = p.map_w * p.map_h;
    var sum = 0.0;
    for (var c = 0u; c < p.dim; c++) {
        let b = c * plane;
        let top = map[b + y0 * p.map_w + x0] * (1.0 - fx) + map[b + y0 * p.map_w + x1] * fx;
        let bottom = map[b + y1 * p.map_w + x0] * (1.0 - fx) + map[b + y1 * p.map_w + x1] * fx;
        let d = top * (1.0 - fy) + bottom * fy;
        descriptors[i * p.dim + c] = d;
        sum += d * d;
    }
    let inv = 1.0 / max(sqrt(sum), 1e-12);
    for (var c = 0u; c < p.dim; c++) {
        descriptors[i * p.dim + c] *= inv;
    }
}
