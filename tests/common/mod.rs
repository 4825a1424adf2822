//! Helpers shared by the GPU tests: one GPU per test binary, random inputs, comparisons with stated tolerances.
#![allow(dead_code)]

use std::sync::OnceLock;
use strek::ops::Map;
use strek::rng::Rng;
use strek::{Features, Gpu, GpuOptions, ModelConfig};

/// The adapter the tests run on. No adapter is a failure, not a skip: CI installs Mesa's lavapipe.
pub fn gpu() -> &'static Gpu {
    static GPU: OnceLock<Gpu> = OnceLock::new();
    GPU.get_or_init(|| {
        let gpu = Gpu::new(&GpuOptions::default()).expect("the GPU tests need an adapter (CI uses Mesa lavapipe)");
        eprintln!("GPU tests on {}", gpu.adapter);
        gpu
    })
}

/// The test device once for each way the convolutions read their filters (src/ops/conv.rs): from workgroup memory
/// (hardware GPUs, adapters without subgroup operations) and, where the adapter has subgroup operations, broadcast
/// across subgroups (the variant CPU adapters get). Both must match the reference.
pub fn conv_variants() -> Vec<(&'static str, Gpu)> {
    let gpu = gpu();
    let mut shared = gpu.clone();
    shared.features.remove(wgpu::Features::SUBGROUP);
    let mut variants = vec![("filters from workgroup memory", shared)];
    if gpu.features.contains(wgpu::Features::SUBGROUP) {
        let mut broadcast = gpu.clone();
        broadcast.adapter.is_software = true;
        variants.push(("filters broadcast across subgroups", broadcast));
    } else {
        eprintln!("{} has no subgroup operations: the subgroup variant of the convolutions is not tested", gpu.adapter);
    }
    variants
}

pub fn random_map(rng: &mut Rng, c: usize, h: usize, w: usize) -> Map {
    Map::new(c, h, w, rng.vec(c * h * w, -1.0, 1.0))
}

pub fn upload(map: &Map) -> wgpu::Buffer {
    gpu().storage_with("test input", bytemuck::cast_slice(&map.data))
}

pub fn download(buffer: &wgpu::Buffer, c: usize, h: usize, w: usize) -> Map {
    Map::new(c, h, w, gpu().read_f32(buffer, c * h * w).unwrap())
}

/// Largest absolute difference; panics with the place of the worst one when it exceeds `tol`.
pub fn assert_close(what: &str, got: &[f32], want: &[f32], tol: f32) {
    assert_eq!(got.len(), want.len(), "{what}: lengths differ");
    let mut worst = (0.0f32, 0usize);
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let d = (g - w).abs();
        if !(d <= worst.0) {
            worst = (d, i);
        }
    }
    assert!(worst.0 <= tol, "{what}: |gpu - reference| = {} at {} (gpu {}, reference {}), tolerance {tol}",
        worst.0, worst.1, got[worst.1], want[worst.1]);
}

pub fn max_abs(v: &[f32]) -> f32 {
    v.iter().fold(0.0, |m, x| m.max(x.abs()))
}

/// Counter-clockwise quarter turn (as displayed) of every channel of a map.
pub fn rot90_map(m: &Map) -> Map {
    let mut out = Map::zeros(m.c, m.w, m.h);
    for c in 0..m.c {
        for y in 0..m.h {
            for x in 0..m.w {
                // pixel (x, y) moves to (y, w-1-x)
                out.data[(c * m.w + (m.w - 1 - x)) * m.h + y] = m.at(c, y, x);
            }
        }
    }
    out
}

/// Difference of two angles on the circle.
pub fn angle_diff(a: f32, b: f32) -> f32 {
    let d = (a - b).rem_euclid(std::f32::consts::TAU);
    d.min(std::f32::consts::TAU - d)
}

/// The default model with a pyramid that keeps two levels on test-sized images.
pub fn two_level_config() -> ModelConfig {
    let mut config = ModelConfig::default_s_trek();
    config.inference.min_level_side = 40;
    config
}

/// A config whose pyramid also upsamples (docs/model.md): the image itself, then levels at 2 and 1.414 (odd
/// sizes on odd images: round(W*s)), then one level below it.
pub fn upsampling_config() -> ModelConfig {
    let mut config = ModelConfig::default_s_trek();
    config.inference.scales = vec![1.0, 2.0, 1.414, 0.707];
    config.inference.min_level_side = 24;
    config.validate().unwrap();
    config
}

/// The two-level config with the version-2 descriptor of docs/model.md (the group U-Net at its default widths).
pub fn group_descriptor_config() -> ModelConfig {
    let mut config = two_level_config();
    config.descriptor = strek::config::DescriptorConfig {
        kind: strek::config::DescriptorKind::GroupUnet,
        kernel: 3,
        encoder: vec![3, 6, 12, 24],
        decoder: vec![16],
        head: Some(16),
        dim: 128,
    };
    config.validate().expect("the version-2 defaults are valid");
    config
}

/// Keypoints that the two share (same position within 1e-3 px), with their scores (1e-4 relative), orientations
/// (1e-2 rad), scales (equal) and descriptors (cosine > 0.9999) compared; returns how many were shared.
pub fn shared_keypoints(got: &Features, want: &Features) -> usize {
    let mut shared = 0;
    for i in 0..want.len() {
        let Some(j) = (0..got.len()).find(|&j| {
            (got.keypoints[j][0] - want.keypoints[i][0]).abs() < 1e-3 && (got.keypoints[j][1] - want.keypoints[i][1]).abs() < 1e-3
        }) else {
            continue;
        };
        shared += 1;
        assert!((got.scores[j] - want.scores[i]).abs() <= 1e-4 * want.scores[i].abs().max(1.0), "score of keypoint {i}");
        assert!(angle_diff(got.orientations[j], want.orientations[i]) < 1e-2, "orientation of keypoint {i}");
        assert_eq!(got.scales[j], want.scales[i]);
        let dot: f32 = got.descriptor(j).iter().zip(want.descriptor(i)).map(|(a, b)| a * b).sum();
        assert!(dot > 0.9999, "descriptor of keypoint {i}: cosine {dot}");
    }
    shared
}

/// Same count and size, >= 97 % shared keypoints (rounding may reorder near-equal scores at the top-k cut), sorted.
pub fn assert_same_features(what: &str, got: &Features, want: &Features) {
    assert_eq!(got.len(), want.len(), "{what}: keypoint count");
    assert_eq!(got.image_size, want.image_size);
    let shared = shared_keypoints(got, want);
    assert!(shared as f32 >= 0.97 * want.len() as f32, "{what}: {shared} of {} keypoints shared", want.len());
    assert!(got.scores.windows(2).all(|p| p[0] >= p[1]), "{what}: sorted by score");
}
