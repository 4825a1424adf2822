//! Benchmarks of the host-side hot paths around the GPU (criterion):
//! - `readback/*`: turning the bytes read back from the GPU (keypoint records and descriptors of the top k) into
//!   `Features`, for a batch of 1 and of 8 images of 1000 keypoints;
//! - `matching/*`: mutual nearest neighbours of 1000 x 1000, 2000 x 2000 and 8000 x 8000 descriptors of 128
//!   dimensions: the CPU matcher (`cpu::matching`, all threads and one) beside the plain-Rust reference (the oracle;
//!   not run at 8000, where it takes seconds);
//! - `verification/*`: one pair's fundamental-matrix RANSAC (and the essential matrix with known intrinsics) on 300
//!   matches of a synthetic two-view scene with 30 % and 70 % outliers, as `strek colmap` verifies each pair;
//! - `ransac/*`: homography estimation on 1000 correspondences with 20 %, 50 % and 80 % outliers, and the
//!   normalised DLT on 1000 inliers;
//! - `evaluate_pair`: every metric of one pair of 1000 keypoints (visibility, repeatability, matching, RANSAC).
//!
//! `cargo bench --bench host` (about a minute); `cargo bench --bench host -- ransac` (a part).

use criterion::{BenchmarkId, Criterion, Throughput};
use std::hint::black_box;
use strek::geometry::homography::{dlt, estimate, Ransac};
use strek::eval::metrics::{evaluate_pair, Protocol};
use strek::geometry::Homography;
use strek::colmap::verify;
use strek::geometry::fundamental;
use strek::cpu::matching::mutual_nearest;
use strek::ops::matching::mutual_nearest_reference;
use strek::Matcher;
use strek::features::KeypointRecord;
use strek::rng::Rng;
use strek::Features;

const DIM: usize = 128;

fn unit(rng: &mut Rng, dim: usize) -> Vec<f32> {
    let mut d: Vec<f32> = (0..dim).map(|_| rng.normal()).collect();
    let norm = d.iter().map(|v| v * v).sum::<f32>().sqrt();
    d.iter_mut().for_each(|v| *v /= norm);
    d
}

/// `n` keypoints on a 640x480 image; descriptors random unit vectors.
fn features(rng: &mut Rng, n: usize) -> Features {
    let mut f = Features::empty([640, 480], DIM);
    for i in 0..n {
        f.keypoints.push([rng.range(0.0, 640.0), rng.range(0.0, 480.0)]);
        f.scores.push(1.0 - i as f32 / n as f32);
        f.orientations.push(rng.range(0.0, std::f32::consts::TAU));
        f.scales.push(1.0);
        f.descriptors.extend(unit(rng, DIM));
    }
    f
}

/// What the GPU hands back for one image: 32-byte records (the padding ones invalid) and the descriptors.
fn readback_bytes(rng: &mut Rng, count: usize, valid: usize) -> Vec<u8> {
    let records: Vec<KeypointRecord> = (0..count)
        .map(|i| KeypointRecord {
            x: rng.range(0.0, 640.0),
            y: rng.range(0.0, 480.0),
            score: 1.0 - i as f32 / count as f32,
            orientation: rng.range(0.0, std::f32::consts::TAU),
            scale: 1.0,
            level: 0.0,
            valid: if i < valid { 1.0 } else { 0.0 },
            _pad: 0.0,
        })
        .collect();
    let mut bytes = bytemuck::cast_slice::<KeypointRecord, u8>(&records).to_vec();
    let descriptors: Vec<f32> = (0..count).flat_map(|_| unit(rng, DIM)).collect();
    bytes.extend_from_slice(bytemuck::cast_slice(&descriptors));
    bytes
}

fn readback(c: &mut Criterion) {
    let mut rng = Rng::new(1);
    let mut group = c.benchmark_group("readback");
    for batch in [1usize, 8] {
        let data: Vec<Vec<u8>> = (0..batch).map(|_| readback_bytes(&mut rng, 1000, 950)).collect();
        group.throughput(Throughput::Elements(1000 * batch as u64));
        group.bench_with_input(BenchmarkId::new("to_features", batch), &data, |b, data| {
            b.iter(|| {
                data.iter()
                    .map(|bytes| {
                        let records: Vec<KeypointRecord> = bytemuck::pod_collect_to_vec(&bytes[..KeypointRecord::BYTES as usize * 1000]);
                        let descriptors: Vec<f32> = bytemuck::pod_collect_to_vec(&bytes[KeypointRecord::BYTES as usize * 1000..]);
                        let mut f = Features::empty([640, 480], DIM);
                        f.push_records(&records, &descriptors);
                        black_box(f)
                    })
                    .collect::<Vec<_>>()
            })
        });
    }
    group.finish();
}

fn matching(c: &mut Criterion) {
    let mut rng = Rng::new(2);
    let mut group = c.benchmark_group("matching");
    group.sample_size(10);
    let one_thread = rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap();
    for n in [1000usize, 2000, 8000] {
        let (a, b) = (features(&mut rng, n), features(&mut rng, n));
        // throughput in multiply-adds of the similarity matrix (the CPU matcher computes it once for both
        // directions, the reference twice)
        group.throughput(Throughput::Elements((n * n * DIM) as u64));
        let size = format!("{n}x{n}");
        group.bench_function(BenchmarkId::new("cpu_matcher", &size), |bench| bench.iter(|| black_box(mutual_nearest(&a, &b, 1.0))));
        group.bench_function(BenchmarkId::new("cpu_matcher_1thread", &size), |bench| {
            bench.iter(|| one_thread.install(|| black_box(mutual_nearest(&a, &b, 1.0))))
        });
        if n <= 2000 {
            group.bench_function(BenchmarkId::new("reference", &size), |bench| {
                bench.iter(|| black_box(mutual_nearest_reference(&a, &b, 1.0)))
            });
        }
    }
    group.finish();
}

/// Matches of a synthetic two-view scene (TUM's intrinsics, a small rotation and translation) in COLMAP's layout
/// of keypoint rows, a share `outliers` of them random.
fn two_view(rng: &mut Rng, n: usize, outliers: f32) -> (Vec<[f32; 6]>, Vec<[f32; 6]>, strek::geometry::Mat3) {
    let k = fundamental::calibration(535.4, 539.2, 320.1, 247.6);
    let (s, c) = 0.1f64.sin_cos();
    let project = |p: [f64; 3]| [(k[0][0] * p[0] / p[2] + k[0][2]) as f32, (k[1][1] * p[1] / p[2] + k[1][2]) as f32];
    let row = |p: [f32; 2]| [p[0], p[1], 1.0, 0.0, 0.0, 1.0];
    let (mut a, mut b) = (Vec::new(), Vec::new());
    while a.len() < n {
        let z = rng.range(3.0, 8.0) as f64;
        let p = [rng.range(-0.6, 0.6) as f64 * z, rng.range(-0.45, 0.45) as f64 * z, z];
        // rotation about the y axis, then a sideways step
        let q = [c * p[0] + s * p[2] + 0.4, p[1] - 0.05, -s * p[0] + c * p[2] + 0.1];
        let (pa, mut pb) = (project(p), project(q));
        if rng.uniform() < outliers {
            pb = [rng.range(0.0, 640.0), rng.range(0.0, 480.0)];
        }
        a.push(row([pa[0] + 0.5 * rng.normal(), pa[1] + 0.5 * rng.normal()]));
        b.push(row([pb[0] + 0.5 * rng.normal(), pb[1] + 0.5 * rng.normal()]));
    }
    (a, b, k)
}

fn verification(c: &mut Criterion) {
    let mut rng = Rng::new(5);
    let mut group = c.benchmark_group("verification");
    group.sample_size(10);
    for outliers in [0.3f32, 0.7] {
        let (a, b, k) = two_view(&mut rng, 300, outliers);
        let matches: Vec<(usize, usize)> = (0..a.len()).map(|i| (i, i)).collect();
        let ransac = fundamental::Ransac::epipolar();
        let name = format!("{}pct_outliers", (outliers * 100.0).round());
        group.bench_function(BenchmarkId::new("fundamental_300", &name), |bench| {
            bench.iter(|| black_box(verify(&a, &b, &matches, None, &ransac, 15)))
        });
        group.bench_function(BenchmarkId::new("fundamental_and_essential_300", &name), |bench| {
            bench.iter(|| black_box(verify(&a, &b, &matches, Some((&k, &k)), &ransac, 15)))
        });
    }
    group.finish();
}

fn truth() -> Homography {
    Homography([[0.9, -0.25, 40.0], [0.3, 1.1, -12.0], [2e-4, -1e-4, 1.0]])
}

fn correspondences(rng: &mut Rng, n: usize, outliers: usize) -> (Vec<[f64; 2]>, Vec<[f64; 2]>) {
    let h = truth();
    (0..n)
        .map(|i| {
            let p = [rng.range(0.0, 640.0) as f64, rng.range(0.0, 480.0) as f64];
            let q = if i < outliers {
                [rng.range(0.0, 640.0) as f64, rng.range(0.0, 480.0) as f64]
            } else {
                let (x, y) = h.apply(p[0], p[1]).unwrap();
                [x + 0.5 * rng.normal() as f64, y + 0.5 * rng.normal() as f64]
            };
            (p, q)
        })
        .unzip()
}

fn ransac(c: &mut Criterion) {
    let mut rng = Rng::new(3);
    let mut group = c.benchmark_group("ransac");
    for outliers in [200usize, 500, 800] {
        let (from, to) = correspondences(&mut rng, 1000, outliers);
        group.bench_function(BenchmarkId::new("estimate_1000", format!("{}pct_outliers", outliers / 10)), |b| {
            b.iter(|| black_box(estimate(&from, &to, &Ransac::homography())))
        });
    }
    let (from, to) = correspondences(&mut rng, 1000, 0);
    group.bench_function("dlt_1000", |b| b.iter(|| black_box(dlt(&from, &to))));
    group.finish();
}

fn pair(c: &mut Criterion) {
    let mut rng = Rng::new(4);
    let h = Homography([[0.95, 0.1, 20.0], [-0.1, 0.95, 30.0], [0.0, 0.0, 1.0]]);
    let a = features(&mut rng, 1000);
    // b: a's keypoints warped, with noisy descriptors, and the order shuffled by score
    let mut b = a.clone();
    for p in &mut b.keypoints {
        let (x, y) = h.apply(p[0] as f64, p[1] as f64).unwrap();
        *p = [x as f32 + rng.normal(), y as f32 + rng.normal()];
    }
    let mut group = c.benchmark_group("evaluate_pair");
    group.sample_size(10);
    group.bench_function("1000_keypoints_cpu_matcher", |bench| {
        bench.iter(|| black_box(evaluate_pair(&a, &b, &h, &Protocol::default(), &Matcher::Cpu).unwrap()))
    });
    group.finish();
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    readback(&mut c);
    matching(&mut c);
    ransac(&mut c);
    verification(&mut c);
    pair(&mut c);
    c.final_summary();
}
