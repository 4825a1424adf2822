//! The GPU matcher against the plain-Rust reference: nearest neighbours in both directions and mutual matches, on
//! odd counts (1, 7, 1000 x 1300), odd dimensions, exact ties and near-ties.
//!
//! The GPU sums each dot product in vec4 steps, the reference one product at a time, so similarities differ by
//! rounding (a few 1e-7). Indices must be equal except where the reference's best and second-best similarities are
//! within `TIE` of each other (a near-tie): there either index is right, provided its similarity is the best within
//! `TIE`. Exact ties (identical descriptors) go to the lower index on both sides and are checked exactly.

mod common;
use common::gpu;
use strek::cpu::matching as cpu_matching;
use strek::ops::matching::{mutual_from_nearest, mutual_nearest_reference, nearest_reference, GpuMatcher, Nearest};
use strek::rng::Rng;
use strek::Features;

const TIE: f32 = 1e-5;

fn random_features(rng: &mut Rng, n: usize, dim: usize) -> Features {
    let mut f = Features::empty([640, 480], dim);
    for i in 0..n {
        f.keypoints.push([i as f32, 0.0]);
        f.scores.push(1.0);
        f.orientations.push(0.0);
        f.scales.push(1.0);
        let mut d: Vec<f32> = (0..dim).map(|_| rng.normal()).collect();
        let norm = d.iter().map(|v| v * v).sum::<f32>().sqrt();
        d.iter_mut().for_each(|v| *v /= norm);
        f.descriptors.extend(d);
    }
    f
}

/// 1300 descriptors: noisy copies of the first 900 of `a` (1000 x 128; so most rows have a clear mutual match), then
/// 400 unrelated ones.
fn with_noisy_copies(rng: &mut Rng, a: &Features) -> Features {
    let mut b = random_features(rng, 1300, 128);
    for i in 0..900 {
        let mut d: Vec<f32> = a.descriptor(i).iter().map(|v| v + 0.05 * rng.normal() / 11.3).collect();
        let norm = d.iter().map(|v| v * v).sum::<f32>().sqrt();
        d.iter_mut().for_each(|v| *v /= norm);
        b.descriptors[i * 128..(i + 1) * 128].copy_from_slice(&d);
    }
    b
}

/// Rows of `got` whose index differs from the reference, after checking that each is a near-tie.
fn check_nearest(what: &str, got: &[Nearest], want: &[Nearest], a: &Features, b: &Features) -> Vec<usize> {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    let mut differing = Vec::new();
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!((g.best - w.best).abs() <= TIE, "{what} row {i}: best similarity {} vs {}", g.best, w.best);
        if w.second.is_finite() {
            assert!((g.second - w.second).abs() <= TIE, "{what} row {i}: second similarity {} vs {}", g.second, w.second);
        } else {
            assert_eq!(g.second, f32::NEG_INFINITY, "{what} row {i}: a single candidate has no second");
        }
        if g.index != w.index {
            assert!(w.best - w.second <= TIE, "{what} row {i}: index {} vs {} without a near-tie", g.index, w.index);
            let s: f32 = a.descriptor(i).iter().zip(b.descriptor(g.index)).map(|(x, y)| x * y).sum();
            assert!(w.best - s <= TIE, "{what} row {i}: the GPU's pick is not among the best");
            differing.push(i);
        }
    }
    differing
}

fn compare(a: &Features, b: &Features, ratio: f32) {
    let what = format!("{}x{} dim {} ratio {ratio}", a.len(), b.len(), a.dim);
    let got = GpuMatcher::new(gpu()).run(a, b, ratio).unwrap();
    let (ab, ba) = (nearest_reference(a, b), nearest_reference(b, a));
    let diff_ab = check_nearest(&format!("{what} a->b"), &got.a_to_b, &ab, a, b);
    let diff_ba = check_nearest(&format!("{what} b->a"), &got.b_to_a, &ba, b, a);
    // The GPU's mutual check must be exactly what its own nearest neighbours imply ...
    assert_eq!(got.matches, mutual_from_nearest(&got.a_to_b, &got.b_to_a, ratio), "{what}: mutual check");
    // ... and equal to the reference's matches except on rows touched by a near-tie (or a ratio at the threshold).
    let want = mutual_nearest_reference(a, b, ratio);
    let touched = |&(i, j): &(usize, usize)| diff_ab.contains(&i) || diff_ba.contains(&j) || near_ratio(&ab[i], ratio);
    let got_clear: Vec<_> = got.matches.iter().filter(|m| !touched(m)).collect();
    let want_clear: Vec<_> = want.iter().filter(|m| !touched(m)).collect();
    assert_eq!(got_clear, want_clear, "{what}: mutual matches");
    assert!(got.matches.len().abs_diff(want.len()) <= diff_ab.len() + diff_ba.len() + 2, "{what}: match counts");
}

fn near_ratio(n: &Nearest, ratio: f32) -> bool {
    let d = |s: f32| (2.0 - 2.0 * s).max(0.0).sqrt();
    ratio < 1.0 && (d(n.best) - ratio * d(n.second)).abs() <= 1e-4
}

#[test]
fn gpu_matches_reference_on_odd_counts_and_dimensions() {
    let mut rng = Rng::new(11);
    // (64, 2240, 128) and (64, 70, 4080) take over sixty tiles of the reference set, several chunks;
    // (64, 600, 4080) six hundred tiles, more than the usual 8 per chunk
    let cases = [(1, 1, 128), (1, 7, 128), (7, 1, 128), (7, 7, 3), (33, 65, 130), (100, 37, 256), (64, 2240, 128), (64, 70, 4080), (64, 600, 4080)];
    for &(na, nb, dim) in &cases {
        let a = random_features(&mut rng, na, dim);
        let b = random_features(&mut rng, nb, dim);
        compare(&a, &b, 1.0);
        compare(&a, &b, 0.8);
    }
}

#[test]
fn gpu_matches_reference_on_thousands() {
    let mut rng = Rng::new(12);
    let a = random_features(&mut rng, 1000, 128);
    let b = with_noisy_copies(&mut rng, &a);
    compare(&a, &b, 1.0);
    compare(&a, &b, 0.9);
    let matches = GpuMatcher::new(gpu()).mutual_nearest(&a, &b, 1.0).unwrap();
    assert!(matches.iter().filter(|(i, j)| i == j).count() >= 880, "noisy copies must match themselves");
}

#[test]
fn exact_ties_go_to_the_lower_index() {
    let mut rng = Rng::new(13);
    let a = random_features(&mut rng, 5, 128);
    // b holds every descriptor of a twice: rows 2i and 2i+1 are identical, so the GPU's sums are identical too
    let mut b = Features::empty([640, 480], 128);
    for i in 0..5 {
        for _ in 0..2 {
            b.keypoints.push([0.0, 0.0]);
            b.scores.push(1.0);
            b.orientations.push(0.0);
            b.scales.push(1.0);
            b.descriptors.extend_from_slice(a.descriptor(i));
        }
    }
    let got = GpuMatcher::new(gpu()).run(&a, &b, 1.0).unwrap();
    for (i, n) in got.a_to_b.iter().enumerate() {
        assert_eq!(n.index, 2 * i, "row {i} must pick the first of two identical descriptors");
        assert_eq!(n.best, n.second, "an exact tie has equal best and second");
    }
    assert_eq!(got.matches, (0..5).map(|i| (i, 2 * i)).collect::<Vec<_>>());
    assert_eq!(got.matches, mutual_nearest_reference(&a, &b, 1.0));
    // the ratio test rejects every exact tie
    assert!(GpuMatcher::new(gpu()).mutual_nearest(&a, &b, 0.99).unwrap().is_empty());
}

#[test]
fn empty_sets_and_mismatched_dimensions() {
    let mut rng = Rng::new(14);
    let a = random_features(&mut rng, 5, 128);
    let empty = Features::empty([10, 10], 128);
    let m = GpuMatcher::new(gpu());
    assert!(m.mutual_nearest(&a, &empty, 1.0).unwrap().is_empty());
    assert!(m.mutual_nearest(&empty, &a, 1.0).unwrap().is_empty());
    let other = random_features(&mut rng, 5, 64);
    let err = m.mutual_nearest(&a, &other, 1.0).unwrap_err().to_string();
    assert!(err.contains("128") && err.contains("64"), "{err}");
}

#[test]
fn exact_ties_across_chunks_go_to_the_lower_index() {
    let mut rng = Rng::new(15);
    let a = random_features(&mut rng, 5, 128);
    // rows i and 300 + i of b are copies of a's row i; at dimension 128 a chunk holds 248 rows (8 tiles of 31)
    let mut b = random_features(&mut rng, 600, 128);
    for i in 0..5 {
        for row in [i, 300 + i] {
            b.descriptors[row * 128..(row + 1) * 128].copy_from_slice(a.descriptor(i));
        }
    }
    let got = GpuMatcher::new(gpu()).run(&a, &b, 1.0).unwrap();
    for (i, n) in got.a_to_b.iter().enumerate() {
        assert_eq!((n.index, n.best), (i, n.second), "row {i}");
    }
    assert_eq!(got.matches, mutual_nearest_reference(&a, &b, 1.0));
}

// The CPU matcher (`cpu::matching`) sums in the reference's order, so it must agree bit for bit: indices,
// similarities and matches, near-ties and exact ties included.

fn assert_cpu_equals_reference(a: &Features, b: &Features) {
    let what = format!("{}x{} dim {}", a.len(), b.len(), a.dim);
    let (ab, ba) = cpu_matching::nearest_both(a, b);
    let bits = |n: &[Nearest]| n.iter().map(|n| (n.index, n.best.to_bits(), n.second.to_bits())).collect::<Vec<_>>();
    assert_eq!(bits(&ab), bits(&nearest_reference(a, b)), "{what}: a->b");
    assert_eq!(bits(&ba), bits(&nearest_reference(b, a)), "{what}: b->a");
    for ratio in [1.0, 0.9, 0.8] {
        assert_eq!(cpu_matching::mutual_nearest(a, b, ratio), mutual_nearest_reference(a, b, ratio), "{what} ratio {ratio}");
    }
}

#[test]
fn cpu_matcher_equals_reference_on_odd_counts_and_dimensions() {
    let mut rng = Rng::new(21);
    // sizes around the tile (4 rows x 32 columns) and the parallel chunk (256 rows); dimensions 1 to 4096
    let cases = [(1, 1, 128), (1, 7, 128), (7, 1, 128), (7, 7, 3), (1, 1, 1), (33, 65, 130), (100, 37, 256), (257, 31, 128), (513, 33, 64), (5, 70, 300), (9, 40, 4096)];
    for &(na, nb, dim) in &cases {
        let a = random_features(&mut rng, na, dim);
        let b = random_features(&mut rng, nb, dim);
        assert_cpu_equals_reference(&a, &b);
    }
}

#[test]
fn cpu_matcher_equals_reference_on_thousands_with_near_copies() {
    let mut rng = Rng::new(22);
    let a = random_features(&mut rng, 1000, 128);
    let b = with_noisy_copies(&mut rng, &a);
    assert_cpu_equals_reference(&a, &b);
    assert!(cpu_matching::mutual_nearest(&a, &b, 1.0).iter().filter(|(i, j)| i == j).count() >= 880);
}

#[test]
fn cpu_matcher_ties_go_to_the_lower_index_across_lanes_and_chunks() {
    let mut rng = Rng::new(23);
    // a's rows 0..5 appear in b at columns i, 16 + i (another lane), 33 + i (another tile) and 700 + i; a itself
    // repeats row 0 at rows 300 and 600 (other parallel chunks), so columns tie across chunks too
    let mut a = random_features(&mut rng, 700, 128);
    let mut b = random_features(&mut rng, 800, 128);
    for i in 0..5 {
        for col in [i, 16 + i, 33 + i, 700 + i] {
            b.descriptors[col * 128..(col + 1) * 128].copy_from_slice(&a.descriptors[i * 128..(i + 1) * 128]);
        }
    }
    for row in [300, 600] {
        a.descriptors.copy_within(0..128, row * 128);
    }
    assert_cpu_equals_reference(&a, &b);
    let (ab, ba) = cpu_matching::nearest_both(&a, &b);
    for (i, n) in ab.iter().enumerate().take(5) {
        assert_eq!((n.index, n.best), (i, n.second), "row {i}: the first of the identical columns, an exact tie");
    }
    assert_eq!(ba[0].index, 0, "column 0 ties rows 0, 300 and 600: the lowest row wins");
}

#[test]
fn cpu_matcher_handles_nan_empty_and_mismatched_sets() {
    let mut rng = Rng::new(24);
    let mut a = random_features(&mut rng, 9, 16);
    let b = random_features(&mut rng, 40, 16);
    // a NaN descriptor never wins and never becomes a second; a row of NaN has no nearest neighbour
    a.descriptors[3 * 16] = f32::NAN;
    a.descriptors[5 * 16..6 * 16].fill(f32::NAN);
    assert_cpu_equals_reference(&a, &b);
    assert_eq!(cpu_matching::nearest_both(&a, &b).0[5].index, usize::MAX);
    let empty = Features::empty([10, 10], 16);
    assert_eq!(cpu_matching::nearest_both(&a, &empty), (vec![], vec![]));
    assert!(cpu_matching::mutual_nearest(&empty, &b, 1.0).is_empty());
    let other = random_features(&mut rng, 5, 8);
    assert!(cpu_matching::mutual_nearest(&a, &other, 1.0).is_empty());
    let err = strek::Matcher::Cpu.mutual_nearest(&a, &other, 1.0).unwrap_err().to_string();
    assert!(err.contains("16") && err.contains("8"), "{err}");
}

/// A GPU session matches on the device it extracts on (`strek eval`, `match`, `colmap` and `track` take their
/// matcher from the session): no second device is opened.
#[test]
fn a_gpu_session_matches_on_its_own_device() {
    let options = strek::gpu::GpuOptions { prefer_software: true, ..Default::default() };
    let session = strek::Session::open(strek::Device::Gpu, &options).unwrap();
    let session_device = &session.gpu().expect("a GPU session").device;
    for choice in [strek::Device::Auto, strek::Device::Gpu] {
        match session.matcher(choice).unwrap() {
            strek::Matcher::Gpu(m) => assert!(m.gpu().device == *session_device, "{choice:?}: the matcher's device is another"),
            strek::Matcher::Cpu => panic!("{choice:?}: a GPU session matched on the CPU"),
        }
    }
}

/// The matcher keeps its buffers between calls: across sets of changing sizes (more capacities than it keeps, and
/// smaller sets after larger ones, whose rows stay in the buffers), it gives what a fresh matcher gives.
#[test]
fn matcher_buffers_are_reused_across_sizes() {
    let mut rng = Rng::new(77);
    let reused = GpuMatcher::new(gpu());
    for &(na, nb) in &[(1000, 999), (5, 9), (300, 17), (9, 5), (2, 3), (64, 700), (33, 1), (1000, 999), (300, 17)] {
        let a = random_features(&mut rng, na, 128);
        let b = random_features(&mut rng, nb, 128);
        let fresh = GpuMatcher::new(gpu()).run(&a, &b, 0.9).unwrap();
        let got = reused.run(&a, &b, 0.9).unwrap();
        let indices = |n: &[Nearest]| n.iter().map(|n| (n.index, n.best, n.second)).collect::<Vec<_>>();
        assert_eq!(indices(&got.a_to_b), indices(&fresh.a_to_b), "{na} x {nb}: a -> b");
        assert_eq!(indices(&got.b_to_a), indices(&fresh.b_to_a), "{na} x {nb}: b -> a");
        assert_eq!(got.matches, fresh.matches, "{na} x {nb}: matches");
    }
}

/// Descriptors of the shipped model on two real frames (TUM fr3 office, a second apart, shrunk to 320 x 240): the
/// CPU matcher equals the reference bit for bit and the GPU matcher up to near-ties. Real descriptors are not
/// uniform on the sphere: many are close to each other, which random sets do not test. Skipped (with a message)
/// where the shared data is missing.
#[test]
fn matchers_equal_the_reference_on_real_descriptors() {
    let frames = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data/eval/sequences/tum-fr3-office");
    let names = ["1341847980.722988.png", "1341847981.726650.png"];
    if !names.iter().all(|n| frames.join(n).exists()) {
        eprintln!("skipped: {} not found", frames.display());
        return;
    }
    let weights = strek::Weights::load(&std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(strek::DEFAULT_WEIGHTS)).unwrap();
    let mut extractor = strek::CpuExtractor::new(&weights, strek::Config::default()).unwrap();
    let [a, b] = names.map(|n| {
        let image = strek::Image::open(&frames.join(n)).unwrap().resized(320, 240);
        strek::Extract::extract(&mut extractor, &image).unwrap()
    });
    assert!(a.len() >= 500 && b.len() >= 500, "{} and {} keypoints", a.len(), b.len());
    assert_cpu_equals_reference(&a, &b);
    compare(&a, &b, 1.0);
    compare(&a, &b, 0.8);
    assert!(mutual_nearest_reference(&a, &b, 1.0).len() >= 100, "two frames a second apart share a view");
}
