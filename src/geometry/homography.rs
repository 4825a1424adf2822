//! Homography estimation from point correspondences: the normalised direct linear transform, RANSAC with an
//! adaptive number of iterations, and a least-squares refit on the inliers.

use super::{normalization, Homography};
use crate::solve::{symmetric_eigen, Consensus};

pub use crate::solve::{iterations_needed, Ransac};

/// Robust homography from correspondences `(x, y) -> (x', y')`: RANSAC on minimal samples of 4, the number of
/// iterations shrinking as better hypotheses appear, then DLT refits on the inliers until the inlier set is stable.
/// `None` with fewer than 4 correspondences or when no sample gives a homography.
pub fn estimate(from: &[[f64; 2]], to: &[[f64; 2]], settings: &Ransac) -> Option<Consensus<Homography>> {
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
    settings.run::<_, 4>(from.len(), fit, error)
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
    let (tf, tt) = (Homography(normalization(from)?), Homography(normalization(to)?));
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
    let full = tt.inverse()?.after(&hn).after(&tf);
    let scale = full.0[2][2];
    if !scale.is_finite() || scale.abs() < 1e-12 {
        return None;
    }
    let m = full.0.map(|row| row.map(|v| v / scale));
    m.iter().flatten().all(|v| v.is_finite()).then_some(Homography(m))
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
