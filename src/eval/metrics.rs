//! The metrics of the evaluation protocol (design.md): repeatability, mean matching accuracy and homography
//! accuracy of one image pair with a known homography.

use crate::geometry::homography::{self, Ransac};
use crate::error::Result;
use crate::features::Features;
use crate::geometry::Homography;
use crate::matcher::Matcher;
use serde::Serialize;

/// Pixel thresholds of mma@t and hacc@t.
pub const THRESHOLDS: [f64; 3] = [1.0, 3.0, 5.0];
/// Threshold of rep@3.
pub const REPEATABILITY_THRESHOLD: f64 = 3.0;

/// Settings of one evaluation.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Protocol {
    /// Keypoints per image, the best by score.
    pub top_k: usize,
    /// Ratio test of the matcher; 1 disables it (the protocol's default).
    pub ratio: f32,
    pub ransac: Ransac,
    /// Match all top-k keypoints instead of only those visible in the other image (the protocol drops the
    /// invisible ones before every metric; matching all of them lowers mma and hacc where images overlap partly).
    pub match_all: bool,
}

impl Default for Protocol {
    fn default() -> Self {
        Protocol { top_k: 1000, ratio: 1.0, ransac: Ransac::homography(), match_all: false }
    }
}

/// Every number of one image pair.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PairMetrics {
    /// Keypoints after top-k, of image 1 and image k.
    pub keypoints: [usize; 2],
    /// Of those, the ones whose reprojection falls inside the other image.
    pub visible: [usize; 2],
    /// rep@3.
    pub repeatability: f64,
    /// Mutual-nearest-neighbour matches between the visible keypoints (all keypoints with `match_all`).
    pub matches: usize,
    /// mma@1, mma@3, mma@5.
    pub mma: [f64; 3],
    /// Mean distance of the four image corners mapped by the estimated and the true homography; null when no
    /// homography could be estimated.
    pub corner_error: Option<f64>,
    /// hacc@1, hacc@3, hacc@5: 1 when the corner error is within the threshold, else 0.
    pub hacc: [f64; 3],
    /// RANSAC inliers of the estimated homography.
    pub inliers: usize,
    /// The estimated homography, row-major.
    pub homography: Option<[[f64; 3]; 3]>,
}

/// Is a point inside an image of `size`, its pixels' full extent (centres at integers, so -0.5 .. w-0.5)?
pub fn inside(size: [u32; 2], x: f64, y: f64) -> bool {
    x >= -0.5 && y >= -0.5 && x <= size[0] as f64 - 0.5 && y <= size[1] as f64 - 0.5
}

/// Indices of the keypoints of `f` that `h` maps inside an image of `other_size`.
pub fn visible(f: &Features, h: &Homography, other_size: [u32; 2]) -> Vec<usize> {
    (0..f.len())
        .filter(|&i| {
            let p = f.keypoints[i];
            h.apply(p[0] as f64, p[1] as f64).is_some_and(|(x, y)| inside(other_size, x, y))
        })
        .collect()
}

/// The keypoints `indices` of `f` with their descriptors, in that order.
pub fn subset(f: &Features, indices: &[usize]) -> Features {
    let mut out = Features::empty(f.image_size, f.dim);
    for &i in indices {
        out.keypoints.push(f.keypoints[i]);
        out.scores.push(f.scores[i]);
        out.orientations.push(f.orientations[i]);
        out.scales.push(f.scales[i]);
        out.descriptors.extend_from_slice(f.descriptor(i));
    }
    out
}

/// The best `k` keypoints by score. Features files must be sorted by descending score; sorting again (stably)
/// keeps files from programs that do not sort working.
pub fn top_k(f: &Features, k: usize) -> Features {
    let mut order: Vec<usize> = (0..f.len()).collect();
    order.sort_by(|&a, &b| f.scores[b].total_cmp(&f.scores[a]));
    order.truncate(k);
    subset(f, &order)
}

/// Repeatability at `threshold` pixels (design.md): keypoints of `a` with a keypoint of `b` within the threshold
/// after warping by `h` (a to b), plus the same from b to a, over the keypoints of both that are visible in the
/// other image. `None` when `h` is singular or nothing is visible.
pub fn repeatability(a: &Features, b: &Features, h: &Homography, threshold: f64) -> Option<f64> {
    let inv = h.inverse()?;
    let va = subset(a, &visible(a, h, b.image_size));
    let vb = subset(b, &visible(b, &inv, a.image_size));
    repeatability_of_visible(&va, &vb, h, &inv, threshold)
}

/// Repeatability of keypoint sets already restricted to the visible ones; `inv` is the inverse of `h`.
fn repeatability_of_visible(a: &Features, b: &Features, h: &Homography, inv: &Homography, threshold: f64) -> Option<f64> {
    let hits = covered(a, b, h, threshold) + covered(b, a, inv, threshold);
    (a.len() + b.len() > 0).then(|| hits as f64 / (a.len() + b.len()) as f64)
}

/// Keypoints of `from` that `h` maps within `threshold` of a keypoint of `to`.
fn covered(from: &Features, to: &Features, h: &Homography, threshold: f64) -> usize {
    let t2 = threshold * threshold;
    from.keypoints
        .iter()
        .filter(|p| {
            h.apply(p[0] as f64, p[1] as f64).is_some_and(|(x, y)| {
                to.keypoints.iter().any(|q| (q[0] as f64 - x).powi(2) + (q[1] as f64 - y).powi(2) <= t2)
            })
        })
        .count()
}

/// Mean distance between the four corner pixels of an image of `size` mapped by `estimated` and by `truth`.
pub fn corner_error(estimated: &Homography, truth: &Homography, size: [u32; 2]) -> f64 {
    let (w, h) = (size[0] as f64 - 1.0, size[1] as f64 - 1.0);
    let corners = [(0.0, 0.0), (w, 0.0), (w, h), (0.0, h)];
    let total: f64 = corners
        .iter()
        .map(|&(x, y)| match (estimated.apply(x, y), truth.apply(x, y)) {
            (Some(p), Some(q)) => ((p.0 - q.0).powi(2) + (p.1 - q.1).powi(2)).sqrt(),
            _ => f64::INFINITY,
        })
        .sum();
    total / 4.0
}

/// Evaluates one pair: `a` from image 1, `b` from image k, `h` mapping image 1 to image k.
pub fn evaluate_pair(a: &Features, b: &Features, h: &Homography, protocol: &Protocol, matcher: &Matcher) -> Result<PairMetrics> {
    let a = top_k(a, protocol.top_k);
    let b = top_k(b, protocol.top_k);
    let inv = h.inverse().ok_or_else(|| crate::Error::Invalid("the ground-truth homography is singular".into()))?;
    let va = subset(&a, &visible(&a, h, b.image_size));
    let vb = subset(&b, &visible(&b, &inv, a.image_size));
    // nothing visible counts as 0: a method that finds nothing has failed on that pair
    let repeatability = repeatability_of_visible(&va, &vb, h, &inv, REPEATABILITY_THRESHOLD).unwrap_or(0.0);
    let (ma, mb) = if protocol.match_all { (&a, &b) } else { (&va, &vb) };
    let matches = matcher.mutual_nearest(ma, mb, protocol.ratio)?;
    let from: Vec<[f64; 2]> = matches.iter().map(|&(i, _)| point(ma, i)).collect();
    let to: Vec<[f64; 2]> = matches.iter().map(|&(_, j)| point(mb, j)).collect();
    let errors: Vec<f64> = from.iter().zip(&to).map(|(p, q)| homography::reprojection_error(h, *p, *q)).collect();
    let share = |t: f64| {
        if errors.is_empty() {
            0.0
        } else {
            errors.iter().filter(|e| **e <= t).count() as f64 / errors.len() as f64
        }
    };
    let estimate = homography::estimate(&from, &to, &protocol.ransac);
    let corner = estimate.as_ref().map(|e| corner_error(&e.model, h, a.image_size));
    Ok(PairMetrics {
        keypoints: [a.len(), b.len()],
        visible: [va.len(), vb.len()],
        repeatability,
        matches: matches.len(),
        mma: THRESHOLDS.map(share),
        hacc: THRESHOLDS.map(|t| corner.is_some_and(|c| c <= t) as u8 as f64),
        corner_error: corner.filter(|c| c.is_finite()),
        inliers: estimate.as_ref().map_or(0, |e| e.inlier_count()),
        homography: estimate.map(|e| e.model.0),
    })
}

fn point(f: &Features, i: usize) -> [f64; 2] {
    [f.keypoints[i][0] as f64, f.keypoints[i][1] as f64]
}

/// Means over pairs of the numbers of `PairMetrics`.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Means {
    pub pairs: usize,
    pub repeatability: f64,
    pub mma: [f64; 3],
    pub hacc: [f64; 3],
    pub matches: f64,
    pub keypoints: f64,
}

impl Means {
    pub fn of<'a>(metrics: impl IntoIterator<Item = &'a PairMetrics>) -> Means {
        let all: Vec<&PairMetrics> = metrics.into_iter().collect();
        let n = all.len();
        if n == 0 {
            return Means::default();
        }
        let mean = |f: &dyn Fn(&PairMetrics) -> f64| all.iter().map(|m| f(m)).sum::<f64>() / n as f64;
        Means {
            pairs: n,
            repeatability: mean(&|m| m.repeatability),
            mma: std::array::from_fn(|t| mean(&|m| m.mma[t])),
            hacc: std::array::from_fn(|t| mean(&|m| m.hacc[t])),
            matches: mean(&|m| m.matches as f64),
            keypoints: mean(&|m| (m.keypoints[0] + m.keypoints[1]) as f64 / 2.0),
        }
    }
}
