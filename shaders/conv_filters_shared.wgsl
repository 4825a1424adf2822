// conv.wgsl's reading of a tap's filter vec4s on hardware GPUs and on adapters without subgroup operations: every
// invocation reads all of them from workgroup memory (one address for the whole workgroup, a broadcast load).
// Prepended to conv.wgsl by src/ops/conv.rs.

struct Invocation {
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
}

fn subgroup_lane(inv: Invocation) -> u32 {
    return 0u;
}

// The filter vec4s 0..OCV-1 of the tap at `wbase` in `taps` (the rest zero).
fn tap_filters(wbase: u32, lane: u32) -> array<vec4<f32>, 4> {
    var f = array(taps[wbase], vec4<f32>(0.0), vec4<f32>(0.0), vec4<f32>(0.0));
    if (OCV >= 2u) {
        f[1] = taps[wbase + 1u];
    }
    if (OCV >= 3u) {
        f[2] = taps[wbase + 2u];
    }
    if (OCV == 4u) {
        f[3] = taps[wbase + 3u];
    }
    return f;
}
