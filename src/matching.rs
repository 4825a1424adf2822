//! Descriptor matching: mutual nearest neighbours over L2-normalised descriptors (plain Rust; the reference for a
//! GPU matcher) and keypoint repeatability under a known homography.

use crate::features::Features;
use crate::geometry::Homography;

/// Pairs (i, j) where descriptor j of `b` is the nearest of all of `b` to descriptor i of `a` and vice versa
/// (largest dot product; ties to the lower index). With `ratio < 1`, also the ratio test on distances.
pub fn mutual_nearest(a: &Features, b: &Features, ratio: f32) -> Vec<(usize, usize)> {
    if a.is_empty() || b.is_empty() || a.dim != b.dim {
        return Vec::new();
    }
    let sim = |i: usize, j: usize| -> f32 { a.descriptor(i).iter().zip(b.descriptor(j)).map(|(x, y)| x * y).sum() };
    let mut best_b = vec![(usize::MAX, f32::NEG_INFINITY, f32::NEG_INFINITY); a.len()];
    let mut best_a = vec![(usize::MAX, f32::NEG_INFINITY); b.len()];
    for i in 0..a.len() {
        for j in 0..b.len() {
            let s = sim(i, j);
            let e = &mut best_b[i];
            if s > e.1 {
                *e = (j, s, e.1);
            } else if s > e.2 {
                e.2 = s;
            }
            if s > best_a[j].1 {
                best_a[j] = (i, s);
            }
        }
    }
    let dist = |s: f32| (2.0 - 2.0 * s).max(0.0).sqrt();
    (0..a.len())
        .filter_map(|i| {
            let (j, s1, s2) = best_b[i];
            let passes = ratio >= 1.0 || b.len() < 2 || dist(s1) < ratio * dist(s2);
            (best_a[j].0 == i && passes).then_some((i, j))
        })
        .collect()
}

/// Repeatability at `threshold` pixels (design.md): keypoints of `a` with a keypoint of `b` within the threshold
/// after warping by `h` (a to b), plus the same from b to a, over the keypoints visible in the other image.
pub fn repeatability(a: &Features, b: &Features, h: &Homography, threshold: f64) -> Option<f64> {
    let inv = h.inverse()?;
    let (hits_a, vis_a) = covered(a, b, h, threshold);
    let (hits_b, vis_b) = covered(b, a, &inv, threshold);
    (vis_a + vis_b > 0).then(|| (hits_a + hits_b) as f64 / (vis_a + vis_b) as f64)
}

/// (keypoints of `from` that land within `threshold` of a keypoint of `to`, keypoints of `from` visible in `to`).
fn covered(from: &Features, to: &Features, h: &Homography, threshold: f64) -> (usize, usize) {
    let [w, hgt] = to.image_size;
    let (mut hits, mut visible) = (0, 0);
    for p in &from.keypoints {
        let Some((x, y)) = h.apply(p[0] as f64, p[1] as f64) else { continue };
        if x < -0.5 || y < -0.5 || x > w as f64 - 0.5 || y > hgt as f64 - 0.5 {
            continue;
        }
        visible += 1;
        let t2 = threshold * threshold;
        if to.keypoints.iter().any(|q| (q[0] as f64 - x).powi(2) + (q[1] as f64 - y).powi(2) <= t2) {
            hits += 1;
        }
    }
    (hits, visible)
}
