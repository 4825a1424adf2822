// conv.wgsl's reading of a tap's filter vec4s on CPU adapters with subgroup operations (lavapipe): lane j of each
// subgroup reads vec4 j (OCV <= 4, and every subgroup has at least 4 lanes) and broadcasts it to the others. Such an
// adapter runs a workgroup-memory read as one load per lane, so this makes OCV times fewer of them; a hardware GPU
// reads one address for the whole workgroup as a single broadcast load and keeps conv_filters_shared.wgsl
// (src/ops/conv.rs, docs/kernel-notes.md). Prepended to conv.wgsl by src/ops/conv.rs.

struct Invocation {
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
    @builtin(subgroup_invocation_id) lane: u32,
}

fn subgroup_lane(inv: Invocation) -> u32 {
    return inv.lane;
}

// The filter vec4s 0..OCV-1 of the tap at `wbase` in `taps` (the rest zero).
fn tap_filters(wbase: u32, lane: u32) -> array<vec4<f32>, 4> {
    let mine = taps[wbase + lane % OCV];
    var f = array(subgroupBroadcast(mine, 0u), vec4<f32>(0.0), vec4<f32>(0.0), vec4<f32>(0.0));
    if (OCV >= 2u) {
        f[1] = subgroupBroadcast(mine, 1u);
    }
    if (OCV >= 3u) {
        f[2] = subgroupBroadcast(mine, 2u);
    }
    if (OCV == 4u) {
        f[3] = subgroupBroadcast(mine, 3u);
    }
    return f;
}
