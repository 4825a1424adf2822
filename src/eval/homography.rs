//! Homography estimation from point correspondences: the normalised direct linear transform, RANSAC with an
//! adaptive number of iterations, and a least-squares refit on the inliers.

use crate::geometry::Homography;
use crate::solve::symmetric_eigen;

pub use crate::solve::Ransac;

#[derive(Clone, Debug, PartialEq)]
pub struct Estimate {
    pub homography: Homography,
    /// One flag per correspondence.
    pub inliers: Vec<bool>,
    /// Minimal samples drawn.
    pub iterations: usize,
}

impl Estimate {
    pub fn inlier_count(&self) -> usize {
        crate::solve::count(&self.inliers)
    }
}

pub use crate::solve::iterations_needed;

/// Robust homography from correspondences `(x, y) -> (x', y')`: RANSAC on minimal samples of 4, the number of
/// iterations shrinking as better hypotheses appear, then DLT refits on the inliers until the inlier set is stable.
/// `None` with fewer than 4 correspondences or when no sample gives a homography.
pub fn estimate(from: &[[f64; 2]], to: &[[f64; 2]], settings: &Ransac) -> Option<Estimate> {
    if to.len() != from.len() {
        return None;
    }
    let fit = |chosen: &[usize]| {
        let (a, b): (Vec<[f64; 2]>, Vec<[f64; 2]>) = chosen.iter().map(|&i| (from[i], to[i])).unzip();
        // a minimal sample with three (nearly) collinear points gives no homography
        if chosen.len() == 4 && (has_collinear_triple(&a) || has_collinear_triple(&b)) {
            return None;
        }
        dlt(&a, &b)
    };
    let error = |h: &Homography, i: usize| reprojection_error(h, from[i], to[i]);
    let found = settings.run::<_, 4>(from.len(), fit, error)?;
    Some(Estimate { homography: found.model, inliers: found.inliers, iterations: found.iterations })
}

/// Flags the correspondences whose forward reprojection error is at most `threshold`.
pub fn inliers(h: &Homography, from: &[[f64; 2]], to: &[[f64; 2]], threshold: f64) -> Vec<bool> {
    from.iter().zip(to).map(|(p, q)| reprojection_error(h, *p, *q) <= threshold).collect()
}

/// Distance between `h(p)` and `q`; infinite when `p` maps to infinity.
pub fn reprojection_error(h: &Homography, p: [f64; 2], q: [f64; 2]) -> f64 {
    match h.apply(p[0], p[1]) {
        Some((x, y)) => ((x - q[0]).powi(2) + (y - q[1]).powi(2)).sqrt(),
        None => f64::INFINITY,
    }
}

/// A minimal sample with three (nearly) collinear points gives no homography.
fn has_collinear_triple(p: &[[f64; 2]]) -> bool {
    let scale = p.iter().flat_map(|q| q.iter()).fold(1.0f64, |m, v| m.max(v.abs()));
    for i in 0..p.len() {
        for j in i + 1..p.len() {
            for k in j + 1..p.len() {
                let cross = (p[j][0] - p[i][0]) * (p[k][1] - p[i][1]) - (p[j][1] - p[i][1]) * (p[k][0] - p[i][0]);
                if cross.abs() <= 1e-9 * scale * scale {
                    return true;
                }
            }
        }
    }
    false
}

/// Normalised direct linear transform (Hartley): both point sets moved to their centroid and scaled to a mean
/// distance of sqrt(2), the 2n x 9 system solved in the least-squares sense (smallest eigenvector of A^T A), and
/// the normalisation undone. Needs at least 4 correspondences; `None` when they are degenerate.
pub fn dlt(from: &[[f64; 2]], to: &[[f64; 2]]) -> Option<Homography> {
    if from.len() < 4 || from.len() != to.len() {
        return None;
    }
    let (tf, tt) = (normalization(from)?, normalization(to)?);
    let mut ata = [[0.0f64; 9]; 9];
    for (p, q) in from.iter().zip(to) {
        let (x, y) = tf.apply(p[0], p[1])?;
        let (u, v) = tt.apply(q[0], q[1])?;
        let rows = [[0.0, 0.0, 0.0, -x, -y, -1.0, v * x, v * y, v], [x, y, 1.0, 0.0, 0.0, 0.0, -u * x, -u * y, -u]];
        for r in &rows {
            for i in 0..9 {
                for j in 0..9 {
                    ata[i][j] += r[i] * r[j];
                }
            }
        }
    }
    let (values, vectors) = symmetric_eigen(ata);
    let smallest = (0..9).min_by(|&a, &b| values[a].total_cmp(&values[b]))?;
    let h: Vec<f64> = (0..9).map(|i| vectors[i][smallest]).collect();
    let hn = Homography([[h[0], h[1], h[2]], [h[3], h[4], h[5]], [h[6], h[7], h[8]]]);
    let full = multiply(&multiply(&tt.inverse()?, &hn), &tf);
    let scale = full.0[2][2];
    if !scale.is_finite() || scale.abs() < 1e-12 {
        return None;
    }
    let m = full.0.map(|row| row.map(|v| v / scale));
    m.iter().flatten().all(|v| v.is_finite()).then_some(Homography(m))
}

/// The similarity that moves the centroid to the origin and the mean distance to it to sqrt(2).
fn normalization(p: &[[f64; 2]]) -> Option<Homography> {
    let n = p.len() as f64;
    let (cx, cy) = (p.iter().map(|q| q[0]).sum::<f64>() / n, p.iter().map(|q| q[1]).sum::<f64>() / n);
    let mean = p.iter().map(|q| ((q[0] - cx).powi(2) + (q[1] - cy).powi(2)).sqrt()).sum::<f64>() / n;
    if !(mean > 1e-12) { // also catches NaN
        return None;
    }
    let s = std::f64::consts::SQRT_2 / mean;
    Some(Homography([[s, 0.0, -s * cx], [0.0, s, -s * cy], [0.0, 0.0, 1.0]]))
}

pub fn multiply(a: &Homography, b: &Homography) -> Homography {
    let mut m = [[0.0; 3]; 3];
    for (i, row) in m.iter_mut().enumerate() {
        for (j, v) in row.iter_mut().enumerate() {
            *v = (0..3).map(|k| a.0[i][k] * b.0[k][j]).sum();
        }
    }
    Homography(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eigen_of_a_diagonal_plus_rotation() {
        let mut m = [[0.0; 9]; 9];
        for i in 0..9 {
            m[i][i] = (i + 1) as f64;
        }
        m[0][1] = 0.5;
        m[1][0] = 0.5;
        let (values, vectors) = symmetric_eigen(m);
        for k in 0..9 {
            // A v = lambda v
            for i in 0..9 {
                let av: f64 = (0..9).map(|j| m[i][j] * vectors[j][k]).sum();
                assert!((av - values[k] * vectors[i][k]).abs() < 1e-10);
            }
        }
    }
}
