//! Helpers shared by the GPU tests: one GPU per test binary, random inputs, comparisons with stated tolerances.
#![allow(dead_code)]

use std::sync::OnceLock;
use strek::ops::Map;
use strek::rng::Rng;
use strek::{Gpu, GpuOptions};

/// The adapter the tests run on. No adapter is a failure, not a skip: CI installs Mesa's lavapipe.
pub fn gpu() -> &'static Gpu {
    static GPU: OnceLock<Gpu> = OnceLock::new();
    GPU.get_or_init(|| {
        let gpu = Gpu::new(&GpuOptions::default()).expect("the GPU tests need an adapter (CI uses Mesa lavapipe)");
        eprintln!("GPU tests on {}", gpu.adapter);
        gpu
    })
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
