//! Epipolar geometry of two views of a 3D scene: the fundamental matrix by the normalised eight-point algorithm
//! (Hartley) with rank 2 enforced, RANSAC on the Sampson distance with an adaptive number of iterations, a
//! least-squares refit on the inliers, and the essential matrix of calibrated cameras.
//!
//! A homography is right only for a plane or a pure rotation; the frames of a moving camera in a room need this.

use super::{apply, multiply, normalization, transpose, Mat3};
use crate::solve::{symmetric_eigen, Consensus, Score};

pub use crate::solve::Ransac;

/// A fundamental matrix with its inliers: `x2^T F x1 = 0` for homogeneous pixel coordinates `x1` of the first
/// image and `x2` of the second.
pub type Estimate = Consensus<Mat3>;

/// The eight-point algorithm's minimum (and its least-squares fit on more).
const SAMPLE: usize = 8;
/// RANSAC's minimal sample: seven correspondences give one to three fundamental matrices.
pub const MINIMAL: usize = 7;

/// Robust fundamental matrix from correspondences `from[i] <-> to[i]`: RANSAC on samples of 7 (the seven-point
/// algorithm, up to three matrices a sample, as COLMAP's), the number of iterations shrinking as better hypotheses
/// appear, then eight-point least-squares refits on all inliers until the inlier set is stable. `None` with fewer
/// than 8 correspondences or when no sample gives a matrix.
pub fn estimate(from: &[[f64; 2]], to: &[[f64; 2]], settings: &Ransac) -> Option<Estimate> {
    robust(from, to, settings, &|f| f)
}

/// Robust essential matrix of cameras with calibration matrices `k1`, `k2`: as `estimate`, every hypothesis (and
/// refit) projected onto essential matrices before it is scored, so that the inliers are those of a calibrated
/// geometry. Returns the estimate (its `fundamental` the one that the essential matrix implies,
/// `K2^-T E K1^-1`) and E.
pub fn estimate_essential(from: &[[f64; 2]], to: &[[f64; 2]], k1: &Mat3, k2: &Mat3, settings: &Ransac) -> Option<(Estimate, Mat3)> {
    let (k1_inv, k2_inv) = (inverse_calibration(k1), inverse_calibration(k2));
    let implied = |f: Mat3| multiply(&multiply(&transpose(&k2_inv), &essential_from_fundamental(&f, k1, k2)), &k1_inv);
    let estimate = robust(from, to, settings, &implied)?;
    let e = essential_from_fundamental(&estimate.model, k1, k2);
    Some((estimate, e))
}

/// K^-1 of a calibration matrix [[fx, s, cx], [0, fy, cy], [0, 0, 1]].
pub fn inverse_calibration(k: &Mat3) -> Mat3 {
    let (fx, s, cx, fy, cy) = (k[0][0], k[0][1], k[0][2], k[1][1], k[1][2]);
    [[1.0 / fx, -s / (fx * fy), (s * cy - cx * fy) / (fx * fy)], [0.0, 1.0 / fy, -cy / fy], [0.0, 0.0, 1.0]]
}

/// RANSAC with the seven-point algorithm on minimal samples and the eight-point one on refits, every matrix passed
/// through `project` (the identity, or the projection onto essential matrices) before it is scored. The points are
/// normalised once (Hartley's normalisation of each image's points) rather than per sample.
fn robust(from: &[[f64; 2]], to: &[[f64; 2]], settings: &Ransac, project: &dyn Fn(Mat3) -> Mat3) -> Option<Estimate> {
    if to.len() != from.len() || from.len() < SAMPLE {
        return None;
    }
    let (t1, t2) = (normalization(from)?, normalization(to)?);
    let (nf, nt): (Vec<[f64; 2]>, Vec<[f64; 2]>) = (from.iter().map(|p| moved(&t1, p)).collect(), to.iter().map(|q| moved(&t2, q)).collect());
    let fit = |chosen: &[usize]| -> Solutions {
        if chosen.len() == MINIMAL {
            let a: [[f64; 2]; MINIMAL] = std::array::from_fn(|k| nf[chosen[k]]);
            let b: [[f64; 2]; MINIMAL] = std::array::from_fn(|k| nt[chosen[k]]);
            return seven_point_normalized(&a, &b, &t1, &t2, true).map(project);
        }
        let (a, b): (Vec<[f64; 2]>, Vec<[f64; 2]>) = chosen.iter().map(|&i| (from[i], to[i])).unzip();
        eight_point(&a, &b).map(project).into_iter().collect()
    };
    let found = settings.run_scored::<_, _, MINIMAL>(fit, &Sampson::new(from, to))?;
    Some(Consensus { model: unit_norm(found.model), ..found })
}

/// Up to three values without an allocation: the roots of a cubic, the fundamental matrices of a minimal sample.
#[derive(Clone, Copy, Debug, Default)]
pub struct UpTo3<T> {
    items: [T; 3],
    len: usize,
}

/// The fundamental matrices of one seven-point sample.
pub type Solutions = UpTo3<Mat3>;

impl<T: Copy + Default> UpTo3<T> {
    fn of(items: &[T]) -> Self {
        items.iter().copied().collect()
    }

    fn push(&mut self, item: T) {
        self.items[self.len] = item;
        self.len += 1;
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn map(mut self, g: impl Fn(T) -> T) -> Self {
        for item in &mut self.items[..self.len] {
            *item = g(*item);
        }
        self
    }
}

impl<T> IntoIterator for UpTo3<T> {
    type Item = T;
    type IntoIter = std::iter::Take<std::array::IntoIter<T, 3>>;
    fn into_iter(self) -> Self::IntoIter {
        self.items.into_iter().take(self.len)
    }
}

impl<T: Copy + Default> FromIterator<T> for UpTo3<T> {
    fn from_iter<I: IntoIterator<Item = T>>(iter: I) -> Self {
        let mut s = UpTo3::default();
        iter.into_iter().take(3).for_each(|item| s.push(item));
        s
    }
}

/// Flags the correspondences whose Sampson distance is at most `threshold`.
pub fn inliers(f: &Mat3, from: &[[f64; 2]], to: &[[f64; 2]], threshold: f64) -> Vec<bool> {
    Points::new(from, to).flags(f, threshold)
}

/// Correspondences laid out for scoring many at once (one array per coordinate), so that the Sampson distances of a
/// block compile to vector instructions: in f32 while RANSAC compares hypotheses (16 lanes; the rounding moves a
/// distance by about 1e-4 px), in f64 for the inlier flags that are kept.
struct Sampson {
    exact: Points<f64>,
    fast: Points<f32>,
}

struct Points<T> {
    px: Vec<T>,
    py: Vec<T>,
    qx: Vec<T>,
    qy: Vec<T>,
}

/// The two float types the scoring runs in.
trait Real: Copy + Default + PartialOrd + std::ops::Add<Output = Self> + std::ops::Mul<Output = Self> {
    fn of(v: f64) -> Self;
    /// `a * b + c`: fused in f32 (one instruction where the scoring is compiled for AVX-512, and the same rounding
    /// on every CPU), two operations in f64, whose inlier flags are the ones kept.
    fn mul_add(a: Self, b: Self, c: Self) -> Self;
}

impl Real for f32 {
    fn of(v: f64) -> Self {
        v as f32
    }

    #[inline(always)]
    fn mul_add(a: Self, b: Self, c: Self) -> Self {
        a.mul_add(b, c)
    }
}

impl Real for f64 {
    fn of(v: f64) -> Self {
        v
    }

    #[inline(always)]
    fn mul_add(a: Self, b: Self, c: Self) -> Self {
        a * b + c
    }
}

/// Correspondences scored between two checks of the early exit.
const BLOCK: usize = 64;

impl<T: Real> Points<T> {
    fn new(from: &[[f64; 2]], to: &[[f64; 2]]) -> Self {
        let column = |p: &[[f64; 2]], k: usize| p.iter().map(|v| T::of(v[k])).collect();
        Points { px: column(from, 0), py: column(from, 1), qx: column(to, 0), qy: column(to, 1) }
    }

    /// How many of correspondences `range` have a Sampson distance within `threshold`.
    #[inline(always)]
    fn within(&self, f: &[[T; 3]; 3], threshold: T, range: std::ops::Range<usize>) -> usize {
        let (px, py, qx, qy) = (&self.px[range.clone()], &self.py[range.clone()], &self.qx[range.clone()], &self.qy[range]);
        let threshold2 = threshold * threshold;
        // a 32-bit count, so that the lanes of the count match those of f32 (16 per vector)
        let mut count = 0u32;
        for i in 0..px.len() {
            // sampson_distance <= threshold, squared (no square root or division in the loop)
            let fma = T::mul_add;
            let fp = [
                fma(f[0][0], px[i], fma(f[0][1], py[i], f[0][2])),
                fma(f[1][0], px[i], fma(f[1][1], py[i], f[1][2])),
                fma(f[2][0], px[i], fma(f[2][1], py[i], f[2][2])),
            ];
            let ftq = [fma(f[0][0], qx[i], fma(f[1][0], qy[i], f[2][0])), fma(f[0][1], qx[i], fma(f[1][1], qy[i], f[2][1]))];
            let residual = fma(qx[i], fp[0], fma(qy[i], fp[1], fp[2]));
            let gradient = fma(fp[0], fp[0], fma(fp[1], fp[1], fma(ftq[0], ftq[0], ftq[1] * ftq[1])));
            count += ((gradient > T::default()) & (residual * residual <= threshold2 * gradient)) as u32;
        }
        count as usize
    }

    /// One flag per correspondence: its Sampson distance is within `threshold`.
    fn flags(&self, f: &[[T; 3]; 3], threshold: T) -> Vec<bool> {
        (0..self.px.len()).map(|i| self.within(f, threshold, i..i + 1) == 1).collect()
    }

    #[inline(always)]
    fn support_blocks(&self, f: &[[T; 3]; 3], threshold: T, to_beat: Option<usize>) -> Option<usize> {
        let n = self.px.len();
        let mut support = 0;
        for start in (0..n).step_by(BLOCK) {
            let end = (start + BLOCK).min(n);
            support += self.within(f, threshold, start..end);
            if to_beat.is_some_and(|b| support + (n - end) <= b) {
                return None;
            }
        }
        Some(support)
    }
}

impl Sampson {
    fn new(from: &[[f64; 2]], to: &[[f64; 2]]) -> Self {
        Sampson { exact: Points::new(from, to), fast: Points::new(from, to) }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn support_blocks_avx512(p: &Points<f32>, f: &[[f32; 3]; 3], threshold: f32, to_beat: Option<usize>) -> Option<usize> {
    p.support_blocks(f, threshold, to_beat)
}

impl Score<Mat3> for Sampson {
    fn len(&self) -> usize {
        self.exact.px.len()
    }

    fn support_beyond(&self, f: &Mat3, threshold: f64, to_beat: Option<usize>) -> Option<usize> {
        let (f, threshold) = (f.map(|row| row.map(|v| v as f32)), threshold as f32);
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU has AVX-512F.
            return unsafe { support_blocks_avx512(&self.fast, &f, threshold, to_beat) };
        }
        self.fast.support_blocks(&f, threshold, to_beat)
    }

    fn inliers(&self, f: &Mat3, threshold: f64) -> Vec<bool> {
        self.exact.flags(f, threshold)
    }
}

/// Sampson distance of `p <-> q` (pixels): `|q^T F p| / sqrt((Fp)_x^2 + (Fp)_y^2 + (F^T q)_x^2 + (F^T q)_y^2)`,
/// the first-order approximation of the smallest total displacement of both points that satisfies the constraint.
pub fn sampson_distance(f: &Mat3, p: [f64; 2], q: [f64; 2]) -> f64 {
    let fp = apply(f, [p[0], p[1], 1.0]);
    let ftq = apply(&transpose(f), [q[0], q[1], 1.0]);
    let residual = q[0] * fp[0] + q[1] * fp[1] + fp[2];
    let gradient = fp[0] * fp[0] + fp[1] * fp[1] + ftq[0] * ftq[0] + ftq[1] * ftq[1];
    if gradient <= 0.0 {
        return f64::INFINITY;
    }
    residual.abs() / gradient.sqrt()
}

/// Seven-point algorithm (Hartley & Zisserman, 11.1.2): both point sets normalised as for the eight-point
/// algorithm, the 7 x 9 system `q^T F p = 0` has a two-dimensional null space F1, F2; the matrices
/// `F2 + l (F1 - F2)` of determinant zero (rank 2, so no projection is needed) are the real roots of a cubic in l.
/// One to three matrices of unit Frobenius norm; none when the sample is degenerate.
pub fn seven_point(from: &[[f64; 2]], to: &[[f64; 2]]) -> Solutions {
    if from.len() != MINIMAL || to.len() != MINIMAL {
        return Solutions::default();
    }
    let (Some(t1), Some(t2)) = (normalization(from), normalization(to)) else { return Solutions::default() };
    let a: [[f64; 2]; MINIMAL] = std::array::from_fn(|k| moved(&t1, &from[k]));
    let b: [[f64; 2]; MINIMAL] = std::array::from_fn(|k| moved(&t2, &to[k]));
    seven_point_normalized(&a, &b, &t1, &t2, false).map(unit_norm)
}

/// `seven_point` on points already moved by the normalisations `t1`, `t2` (similarities), which the result undoes;
/// the matrices are not scaled. With `oriented_only`, a matrix that fails the oriented constraint on the sample is
/// dropped before it is denormalised (the test gives the same answer in both frames: `F x` and `e' x x'` are lines
/// of the second image, and both move by `T2^-T`, the second with the positive factor `det T2`).
fn seven_point_normalized(from: &[[f64; 2]; MINIMAL], to: &[[f64; 2]; MINIMAL], t1: &Mat3, t2: &Mat3, oriented_only: bool) -> Solutions {
    let mut a = [[0.0; 9]; MINIMAL];
    for ((&[x, y], &[u, v]), row) in from.iter().zip(to).zip(a.iter_mut()) {
        *row = [u * x, u * y, u, v * x, v * y, v, x, y, 1.0];
    }
    let mut out = Solutions::default();
    let Some([f1, f2]) = null_space_2(a) else { return out };
    let g: [f64; 9] = std::array::from_fn(|i| f1[i] - f2[i]);
    let at = |l: f64| -> Mat3 { std::array::from_fn(|i| std::array::from_fn(|j| f2[3 * i + j] + l * g[3 * i + j])) };
    // det(F2 + l G) = c0 + c1 l + c2 l^2 + c3 l^3, from its values at l = 0, 1, -1 and its leading term det(G)
    let (c0, c3) = (determinant(&at(0.0)), determinant(&std::array::from_fn(|i| std::array::from_fn(|j| g[3 * i + j]))));
    let (plus, minus) = (determinant(&at(1.0)), determinant(&at(-1.0)));
    let (c2, c1) = ((plus + minus) / 2.0 - c0, (plus - minus) / 2.0 - c3);
    // not scaled to unit norm: the Sampson test does not depend on the scale, and most hypotheses are discarded
    for l in real_cubic_roots(c3, c2, c1, c0) {
        let normalized = at(l);
        if oriented_only && !oriented(&normalized, from, to) {
            continue;
        }
        let f = denormalized(&normalized, t1, t2);
        if f.iter().flatten().all(|v| v.is_finite()) && f.iter().flatten().any(|v| *v != 0.0) {
            out.push(f);
        }
    }
    out
}

/// The oriented epipolar constraint (Chum, Werner & Matas 2004): with the epipole e' of the second image
/// (`F^T e' = 0`), the epipolar line `F x` of every correspondence seen in front of both cameras is `e' x x'` up to
/// a scale of one and the same sign for all of them. A seven-point matrix whose sample's signs disagree cannot be the
/// geometry of that sample (some of its points would lie behind a camera), so RANSAC drops it without scoring: on
/// pairs with little shared view that is most hypotheses. The sign of F cancels (negating F negates every product
/// alike, e' being a cross product of two of its columns); a product of exactly zero (a point at the epipole)
/// constrains nothing.
pub fn oriented(f: &Mat3, from: &[[f64; 2]], to: &[[f64; 2]]) -> bool {
    let column = |j: usize| [f[0][j], f[1][j], f[2][j]];
    let candidates = [cross(column(0), column(1)), cross(column(0), column(2)), cross(column(1), column(2))];
    let norm = |v: &[f64; 3]| v[0] * v[0] + v[1] * v[1] + v[2] * v[2];
    let epipole = candidates.into_iter().fold([0.0; 3], |best, v| if norm(&v) > norm(&best) { v } else { best });
    // (e' x x') . (F x) = -x'^T [e']x F x: one matrix for all points, whose common sign cancels
    let m = transpose(&[0, 1, 2].map(|j| cross(epipole, column(j))));
    let products = from.iter().zip(to).map(|(p, q)| {
        let line = apply(&m, [p[0], p[1], 1.0]);
        q[0] * line[0] + q[1] * line[1] + line[2]
    });
    // no product of either sign (zeros constrain nothing)
    let (positive, negative) = products.fold((false, false), |(p, n), v| (p | (v > 0.0), n | (v < 0.0)));
    !(positive && negative)
}

fn cross(a: [f64; 3], b: [f64; 3]) -> [f64; 3] {
    [a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0]]
}

/// A point moved by a normalisation (a similarity without rotation, as `normalization` makes).
fn moved(t: &Mat3, p: &[f64; 2]) -> [f64; 2] {
    [t[0][0] * p[0] + t[0][2], t[1][1] * p[1] + t[1][2]]
}

/// `f` scaled to unit Frobenius norm.
fn unit_norm(f: Mat3) -> Mat3 {
    let norm = f.iter().flatten().map(|v| v * v).sum::<f64>().sqrt();
    f.map(|row| row.map(|v| v / norm))
}

/// `T2^T F T1` for similarities `T = [[s, 0, tx], [0, s, ty], [0, 0, 1]]`, written out.
fn denormalized(f: &Mat3, t1: &Mat3, t2: &Mat3) -> Mat3 {
    let (s1, x1, y1) = (t1[0][0], t1[0][2], t1[1][2]);
    let (s2, x2, y2) = (t2[0][0], t2[0][2], t2[1][2]);
    // rows of F T1
    let r: Mat3 = std::array::from_fn(|i| [f[i][0] * s1, f[i][1] * s1, f[i][0] * x1 + f[i][1] * y1 + f[i][2]]);
    [
        [s2 * r[0][0], s2 * r[0][1], s2 * r[0][2]],
        [s2 * r[1][0], s2 * r[1][1], s2 * r[1][2]],
        std::array::from_fn(|j| x2 * r[0][j] + y2 * r[1][j] + r[2][j]),
    ]
}

/// Two vectors spanning the null space of a 7 x 9 matrix of rank 7, by Gaussian elimination with partial
/// pivoting; `None` when a pivot vanishes (a degenerate sample: RANSAC draws another). The rows are made of
/// normalised coordinates, so their entries are of order 1 (the last is 1) and the pivot test is absolute.
fn null_space_2(mut a: [[f64; 9]; MINIMAL]) -> Option<[[f64; 9]; 2]> {
    for k in 0..MINIMAL {
        let (mut pivot, mut largest) = (k, a[k][k].abs());
        for (r, row) in a.iter().enumerate().skip(k + 1) {
            if row[k].abs() > largest {
                (pivot, largest) = (r, row[k].abs());
            }
        }
        if !(largest > 1e-10) {
            return None;
        }
        a.swap(k, pivot);
        let (inverse, row) = (1.0 / a[k][k], a[k]);
        for r in a.iter_mut().skip(k + 1) {
            // whole rows (the entries left of k are zero on both sides): fixed-length loops that vectorise
            let factor = r[k] * inverse;
            for c in 0..9 {
                r[c] -= factor * row[c];
            }
        }
    }
    // the two free unknowns (the last two) set to (1, 0) and (0, 1), the others by back substitution: both
    // solutions in one pass, so that their two chains of dependent operations overlap
    let (mut x, mut y) = ([0.0; 9], [0.0; 9]);
    (x[7], y[8]) = (1.0, 1.0);
    for k in (0..MINIMAL).rev() {
        let (mut sx, mut sy) = (a[k][7], a[k][8]);
        for c in k + 1..MINIMAL {
            sx += a[k][c] * x[c];
            sy += a[k][c] * y[c];
        }
        (x[k], y[k]) = (-sx / a[k][k], -sy / a[k][k]);
    }
    Some([x, y])
}

/// The real roots of `a x^3 + b x^2 + c x + d` (a quadratic or linear one when the leading terms vanish).
fn real_cubic_roots(a: f64, b: f64, c: f64, d: f64) -> UpTo3<f64> {
    let size = a.abs().max(b.abs()).max(c.abs()).max(d.abs());
    if !(size > 0.0) || ![a, b, c, d].iter().all(|v| v.is_finite()) {
        return UpTo3::default();
    }
    if a.abs() <= 1e-12 * size {
        // quadratic b x^2 + c x + d
        if b.abs() <= 1e-12 * size {
            return if c != 0.0 { UpTo3::of(&[-d / c]) } else { UpTo3::default() };
        }
        let disc = c * c - 4.0 * b * d;
        if disc < 0.0 {
            return UpTo3::default();
        }
        let q = -0.5 * (c + c.signum() * disc.sqrt());
        return if q != 0.0 { UpTo3::of(&[q / b, d / q]) } else { UpTo3::of(&[0.0]) };
    }
    // x = t - b / 3a turns it into t^3 + p t + q
    let (b, c, d) = (b / a, c / a, d / a);
    let p = c - b * b / 3.0;
    let q = 2.0 * b * b * b / 27.0 - b * c / 3.0 + d;
    let shift = -b / 3.0;
    let disc = q * q / 4.0 + p * p * p / 27.0;
    if disc > 0.0 {
        let s = disc.sqrt();
        UpTo3::of(&[(-q / 2.0 + s).cbrt() + (-q / 2.0 - s).cbrt() + shift])
    } else if p == 0.0 {
        UpTo3::of(&[shift])
    } else {
        // three real roots (two equal when disc is 0): the trigonometric form
        let r = (-p / 3.0).sqrt();
        let phi = (3.0 * q / (2.0 * p * r)).clamp(-1.0, 1.0).acos() / 3.0;
        // cos(phi - 2 pi k / 3) for k = 0, 1, 2 from one sine and cosine
        let (sin, cos) = phi.sin_cos();
        let (half, turned) = (-0.5 * cos, 0.75f64.sqrt() * sin);
        UpTo3::of(&[cos, half + turned, half - turned].map(|c| 2.0 * r * c + shift))
    }
}

fn determinant(m: &Mat3) -> f64 {
    m[0][0] * (m[1][1] * m[2][2] - m[1][2] * m[2][1]) - m[0][1] * (m[1][0] * m[2][2] - m[1][2] * m[2][0])
        + m[0][2] * (m[1][0] * m[2][1] - m[1][1] * m[2][0])
}

/// Normalised eight-point algorithm: both point sets moved to their centroid and scaled to a mean distance of
/// sqrt(2), the n x 9 system `q^T F p = 0` solved in the least-squares sense (smallest eigenvector of A^T A), rank 2
/// enforced by removing the smallest singular value, and the normalisation undone. Needs at least 8
/// correspondences; `None` when they are degenerate. The result has unit Frobenius norm.
pub fn eight_point(from: &[[f64; 2]], to: &[[f64; 2]]) -> Option<Mat3> {
    if from.len() < SAMPLE || from.len() != to.len() {
        return None;
    }
    let (t1, t2) = (normalization(from)?, normalization(to)?);
    let rows = from.iter().zip(to).map(|(p, q)| {
        let [x, y, _] = apply(&t1, [p[0], p[1], 1.0]);
        let [u, v, _] = apply(&t2, [q[0], q[1], 1.0]);
        [u * x, u * y, u, v * x, v * y, v, x, y, 1.0]
    });
    let h = if from.len() == SAMPLE {
        // A minimal sample (RANSAC's inner loop): the null vector by elimination, far cheaper than an eigensolver.
        let mut a = [[0.0; 9]; SAMPLE];
        rows.zip(a.iter_mut()).for_each(|(r, a)| *a = r);
        null_vector(a)?
    } else {
        let mut ata = [[0.0f64; 9]; 9];
        for row in rows {
            for i in 0..9 {
                for j in i..9 {
                    ata[i][j] += row[i] * row[j];
                }
            }
        }
        for i in 0..9 {
            for j in 0..i {
                ata[i][j] = ata[j][i];
            }
        }
        let (values, vectors) = symmetric_eigen(ata);
        let smallest = (0..9).min_by(|&a, &b| values[a].total_cmp(&values[b]))?;
        std::array::from_fn(|i| vectors[i][smallest])
    };
    let fn_ = [[h[0], h[1], h[2]], [h[3], h[4], h[5]], [h[6], h[7], h[8]]];
    let f = multiply(&multiply(&transpose(&t2), &rank2(&fn_)), &t1);
    let norm = f.iter().flatten().map(|v| v * v).sum::<f64>().sqrt();
    if !(norm > 1e-300) || !norm.is_finite() {
        return None;
    }
    Some(f.map(|row| row.map(|v| v / norm)))
}

/// The vector `h` with `A h = 0` for an 8 x 9 matrix of rank 8, by Gaussian elimination with complete pivoting;
/// `None` when the rank is lower (a degenerate sample).
fn null_vector(mut a: [[f64; 9]; SAMPLE]) -> Option<[f64; 9]> {
    let mut columns: [usize; 9] = std::array::from_fn(|i| i);
    let scale = a.iter().flatten().fold(0.0f64, |m, v| m.max(v.abs()));
    for k in 0..SAMPLE {
        let (mut pr, mut pc, mut best) = (k, k, 0.0);
        for (r, row) in a.iter().enumerate().skip(k) {
            for (c, v) in row.iter().enumerate().skip(k) {
                if v.abs() > best {
                    (pr, pc, best) = (r, c, v.abs());
                }
            }
        }
        if !(best > 1e-10 * scale) {
            return None;
        }
        a.swap(k, pr);
        for row in a.iter_mut() {
            row.swap(k, pc);
        }
        columns.swap(k, pc);
        for r in k + 1..SAMPLE {
            let factor = a[r][k] / a[k][k];
            for c in k..9 {
                a[r][c] -= factor * a[k][c];
            }
        }
    }
    // upper triangular in the first 8 columns: the last (free) unknown set to 1, the others by back substitution
    let mut x = [0.0; 9];
    x[8] = 1.0;
    for k in (0..SAMPLE).rev() {
        let sum: f64 = (k + 1..9).map(|c| a[k][c] * x[c]).sum();
        x[k] = -sum / a[k][k];
    }
    let mut h = [0.0; 9];
    for (i, &c) in columns.iter().enumerate() {
        h[c] = x[i];
    }
    Some(h)
}

/// The closest rank-2 matrix (Frobenius): `M (I - v v^T)` with `v` the right singular vector of the smallest
/// singular value, i.e. the eigenvector of `M^T M` with the smallest eigenvalue.
fn rank2(m: &Mat3) -> Mat3 {
    let (values, vectors) = symmetric_eigen(multiply(&transpose(m), m));
    let k = (0..3).min_by(|&a, &b| values[a].total_cmp(&values[b])).unwrap_or(2);
    let v = [vectors[0][k], vectors[1][k], vectors[2][k]];
    let projector: Mat3 = std::array::from_fn(|i| std::array::from_fn(|j| f64::from(i == j) - v[i] * v[j]));
    multiply(m, &projector)
}

/// The essential matrix of cameras with calibration matrices `k1`, `k2` from their fundamental matrix:
/// `K2^T F K1`, projected onto essential matrices (two equal singular values, the third zero) and scaled to unit
/// Frobenius norm.
pub fn essential_from_fundamental(f: &Mat3, k1: &Mat3, k2: &Mat3) -> Mat3 {
    let e = multiply(&multiply(&transpose(k2), f), k1);
    // E = s1 u1 v1^T + s2 u2 v2^T with u_i = E v_i / s_i; replacing both s_i by their mean (then by 1/sqrt(2) for
    // unit norm) gives E (v1 v1^T / s1 + v2 v2^T / s2) / sqrt(2).
    let (values, vectors) = symmetric_eigen(multiply(&transpose(&e), &e));
    let mut order = [0, 1, 2];
    order.sort_by(|&a, &b| values[b].total_cmp(&values[a]));
    let mut m = [[0.0; 3]; 3];
    for &k in &order[..2] {
        let s = values[k].max(0.0).sqrt();
        if s <= 1e-300 {
            return [[0.0; 3]; 3];
        }
        let v = [vectors[0][k], vectors[1][k], vectors[2][k]];
        for i in 0..3 {
            for j in 0..3 {
                m[i][j] += v[i] * v[j] / (s * std::f64::consts::SQRT_2);
            }
        }
    }
    multiply(&e, &m)
}

/// The calibration matrix of a pinhole camera.
pub fn calibration(fx: f64, fy: f64, cx: f64, cy: f64) -> Mat3 {
    [[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]]
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::rng::Rng;
    use crate::solve::iterations_needed;

    /// Rotation about the axis (unit) by `angle` radians (Rodrigues).
    pub fn rotation(axis: [f64; 3], angle: f64) -> Mat3 {
        let (s, c) = angle.sin_cos();
        let [x, y, z] = axis;
        [
            [c + x * x * (1.0 - c), x * y * (1.0 - c) - z * s, x * z * (1.0 - c) + y * s],
            [y * x * (1.0 - c) + z * s, c + y * y * (1.0 - c), y * z * (1.0 - c) - x * s],
            [z * x * (1.0 - c) - y * s, z * y * (1.0 - c) + x * s, c + z * z * (1.0 - c)],
        ]
    }

    pub struct Scene {
        pub k: Mat3,
        pub r: Mat3,
        pub t: [f64; 3],
        pub from: Vec<[f64; 2]>,
        pub to: Vec<[f64; 2]>,
        /// Which correspondences are true (the others are random).
        pub truth: Vec<bool>,
    }

    impl Scene {
        /// The true fundamental matrix, `K^-T [t]x R K^-1`.
        pub fn fundamental(&self) -> Mat3 {
            let k_inv = inverse_calibration(&self.k);
            multiply(&multiply(&transpose(&k_inv), &multiply(&skew(self.t), &self.r)), &k_inv)
        }
    }

    /// Points in a box 3 to 8 units in front of camera 1, seen by camera 2 = [R | t]; pixel noise of `noise`
    /// standard deviation; a share `outliers` of the second points replaced by random pixels.
    pub fn scene(n: usize, noise: f64, outliers: f64, seed: u64) -> Scene {
        let mut rng = Rng::new(seed);
        let k = calibration(535.4, 539.2, 320.1, 247.6);
        let r = rotation([0.0, 0.6, 0.8], 0.15);
        let t = [0.4, -0.05, 0.1];
        let project = |p: [f64; 3]| [k[0][0] * p[0] / p[2] + k[0][2], k[1][1] * p[1] / p[2] + k[1][2]];
        let (mut from, mut to, mut truth) = (Vec::new(), Vec::new(), Vec::new());
        while from.len() < n {
            let z = rng.range(3.0, 8.0) as f64;
            let p = [rng.range(-0.6, 0.6) as f64 * z, rng.range(-0.45, 0.45) as f64 * z, z];
            let q = apply(&r, p);
            let q = [q[0] + t[0], q[1] + t[1], q[2] + t[2]];
            let (a, b) = (project(p), project(q));
            if !(0.0..640.0).contains(&b[0]) || !(0.0..480.0).contains(&b[1]) {
                continue;
            }
            let jitter = |rng: &mut Rng| noise * rng.normal() as f64;
            from.push([a[0] + jitter(&mut rng), a[1] + jitter(&mut rng)]);
            if (rng.uniform() as f64) < outliers {
                to.push([rng.range(0.0, 640.0) as f64, rng.range(0.0, 480.0) as f64]);
                truth.push(false);
            } else {
                to.push([b[0] + jitter(&mut rng), b[1] + jitter(&mut rng)]);
                truth.push(true);
            }
        }
        Scene { k, r, t, from, to, truth }
    }

    fn skew(t: [f64; 3]) -> Mat3 {
        [[0.0, -t[2], t[1]], [t[2], 0.0, -t[0]], [-t[1], t[0], 0.0]]
    }

    /// The two matrices are equal up to scale and sign (both normalised first).
    fn same_up_to_scale(a: &Mat3, b: &Mat3, tolerance: f64) -> bool {
        let norm = |m: &Mat3| m.iter().flatten().map(|v| v * v).sum::<f64>().sqrt();
        let (na, nb) = (norm(a), norm(b));
        let diff = |sign: f64| (0..9).map(|i| (a[i / 3][i % 3] / na - sign * b[i / 3][i % 3] / nb).abs()).fold(0.0, f64::max);
        diff(1.0).min(diff(-1.0)) < tolerance
    }

    #[test]
    fn eight_point_is_exact_on_noise_free_points_and_has_rank_two() {
        let s = scene(40, 0.0, 0.0, 1);
        let f = eight_point(&s.from, &s.to).unwrap();
        assert!(determinant(&f).abs() < 1e-12, "det {}", determinant(&f));
        for (p, q) in s.from.iter().zip(&s.to) {
            assert!(sampson_distance(&f, *p, *q) < 1e-6, "{}", sampson_distance(&f, *p, *q));
        }
        // the true fundamental matrix: K^-T [t]x R K^-1
        let truth = s.fundamental();
        assert!(same_up_to_scale(&f, &truth, 1e-6));
        let e = essential_from_fundamental(&f, &s.k, &s.k);
        assert!(same_up_to_scale(&e, &multiply(&skew(s.t), &s.r), 1e-6));
    }

    #[test]
    fn seven_point_finds_the_true_matrix_among_its_solutions_each_of_rank_two() {
        for seed in 0..20 {
            let s = scene(40, 0.0, 0.0, 100 + seed);
            let solutions = seven_point(&s.from[..7], &s.to[..7]);
            assert!((1..=3).contains(&solutions.len()), "seed {seed}: {} solutions", solutions.len());
            for f in solutions {
                assert!(determinant(&f).abs() < 1e-9, "seed {seed}: det {}", determinant(&f));
            }
            // the one that also explains the other 33 points (to 1e-3 px: a minimal sample extrapolates its rounding)
            // is the true one
            let truth = s.fundamental();
            let explains_all = |f: &Mat3| s.from.iter().zip(&s.to).all(|(p, q)| sampson_distance(f, *p, *q) < 1e-3);
            let worst = |f: &Mat3| s.from.iter().zip(&s.to).map(|(p, q)| sampson_distance(f, *p, *q)).fold(0.0, f64::max);
            let found: Vec<Mat3> = solutions.into_iter().filter(explains_all).collect();
            assert_eq!(found.len(), 1, "seed {seed}: worst errors {:?}", solutions.into_iter().map(|f| worst(&f)).collect::<Vec<_>>());
            assert!(same_up_to_scale(&found[0], &truth, 1e-5), "seed {seed}");
        }
        // a degenerate sample (all points the same) gives nothing
        let same = vec![[10.0, 20.0]; 7];
        assert!(seven_point(&same, &same).is_empty());
    }

    #[test]
    fn the_true_matrix_is_oriented_and_a_point_behind_a_camera_is_not() {
        let s = scene(40, 0.0, 0.0, 7);
        let truth = s.fundamental();
        for start in 0..30 {
            assert!(oriented(&truth, &s.from[start..start + 7], &s.to[start..start + 7]), "points {start}..");
            // either sign of F
            let negated = truth.map(|row| row.map(|v| -v));
            assert!(oriented(&negated, &s.from[start..start + 7], &s.to[start..start + 7]));
        }
        // a point in front of the first camera and behind the second projects onto its epipolar line, so it
        // satisfies x'^T F x = 0 exactly, but with the opposite orientation
        let project = |p: [f64; 3]| [s.k[0][0] * p[0] / p[2] + s.k[0][2], s.k[1][1] * p[1] / p[2] + s.k[1][2]];
        let in_second = |p: [f64; 3]| {
            let q = apply(&s.r, p);
            [q[0] + s.t[0], q[1] + s.t[1], q[2] + s.t[2]]
        };
        let in_first = (-40..=40)
            .flat_map(|x| [-1.0, 1.0].map(|y| [x as f64, y, 0.05]))
            .find(|&p| in_second(p)[2] < -0.01)
            .expect("a point between the cameras' planes");
        let (p, q) = (project(in_first), project(in_second(in_first)));
        assert!(sampson_distance(&truth, p, q) < 1e-6);
        let (mut from, mut to) = (s.from[..7].to_vec(), s.to[..7].to_vec());
        (from[3], to[3]) = (p, q);
        assert!(!oriented(&truth, &from, &to));
    }

    #[test]
    fn the_oriented_test_in_the_normalised_frame_keeps_what_the_pixel_test_keeps() {
        // half outliers, so that samples give matrices of both kinds
        let s = scene(200, 0.5, 0.5, 13);
        let (t1, t2) = (normalization(&s.from).unwrap(), normalization(&s.to).unwrap());
        let (mut kept, mut dropped) = (0, 0);
        for start in (0..190).step_by(3) {
            let (from, to) = (&s.from[start..start + 7], &s.to[start..start + 7]);
            let a: [[f64; 2]; MINIMAL] = std::array::from_fn(|k| moved(&t1, &from[k]));
            let b: [[f64; 2]; MINIMAL] = std::array::from_fn(|k| moved(&t2, &to[k]));
            let all = seven_point_normalized(&a, &b, &t1, &t2, false);
            let filtered = seven_point_normalized(&a, &b, &t1, &t2, true);
            let in_pixels: Vec<Mat3> = all.into_iter().filter(|f| oriented(f, from, to)).collect();
            assert_eq!(filtered.into_iter().collect::<Vec<_>>(), in_pixels, "sample {start}..");
            kept += in_pixels.len();
            dropped += all.len() - in_pixels.len();
        }
        assert!(kept > 0 && dropped > 0, "kept {kept}, dropped {dropped}");
    }

    #[test]
    fn ransac_keeps_a_oriented_geometry_among_outliers() {
        let s = scene(300, 0.5, 0.6, 11);
        let estimate = estimate(&s.from, &s.to, &Ransac::epipolar()).expect("a model");
        let truth = s.truth.iter().filter(|t| **t).count();
        let found: Vec<usize> = (0..300).filter(|&i| estimate.inliers[i] && s.truth[i]).collect();
        assert!(found.len() >= truth * 95 / 100);
        let (from, to): (Vec<[f64; 2]>, Vec<[f64; 2]>) = found.iter().map(|&i| (s.from[i], s.to[i])).unzip();
        assert!(oriented(&estimate.model, &from, &to));
    }

    #[test]
    fn cubic_roots_are_real_roots() {
        let roots = |a: f64, b: f64, c: f64, d: f64| {
            let mut r: Vec<f64> = real_cubic_roots(a, b, c, d).into_iter().collect();
            r.sort_by(f64::total_cmp);
            r
        };
        let close = |got: Vec<f64>, want: &[f64]| got.len() == want.len() && got.iter().zip(want).all(|(g, w)| (g - w).abs() < 1e-9);
        assert!(close(roots(1.0, -6.0, 11.0, -6.0), &[1.0, 2.0, 3.0]), "{:?}", roots(1.0, -6.0, 11.0, -6.0));
        assert!(close(roots(2.0, 0.0, 2.0, -4.0), &[1.0]));
        assert!(close(roots(0.0, 1.0, -3.0, 2.0), &[1.0, 2.0]));
        assert!(close(roots(0.0, 0.0, 2.0, -1.0), &[0.5]));
        assert!(roots(0.0, 1.0, 0.0, 1.0).is_empty());
        assert!(roots(f64::NAN, 1.0, 1.0, 1.0).is_empty());
    }

    #[test]
    fn a_minimal_sample_gives_the_same_matrix_as_the_least_squares_solution() {
        let s = scene(8, 0.0, 0.0, 2);
        let minimal = eight_point(&s.from, &s.to).unwrap();
        let more = scene(30, 0.0, 0.0, 2);
        let least_squares = eight_point(&more.from, &more.to).unwrap();
        assert!(same_up_to_scale(&minimal, &least_squares, 1e-6));
    }

    #[test]
    fn ransac_separates_inliers_from_outliers_under_noise() {
        let s = scene(400, 0.5, 0.4, 7);
        let estimate = estimate(&s.from, &s.to, &Ransac::epipolar()).unwrap();
        let true_inliers = s.truth.iter().filter(|t| **t).count();
        let found = estimate.inliers.iter().zip(&s.truth).filter(|(e, t)| **e && **t).count();
        let false_positives = estimate.inliers.iter().zip(&s.truth).filter(|(e, t)| **e && !**t).count();
        assert!(found as f64 >= 0.97 * true_inliers as f64, "{found} of {true_inliers}");
        // a random point lies within 2 px of a random epipolar line with a probability of about 1%
        assert!(false_positives <= 12, "{false_positives} outliers accepted");
        let mean: f64 = (0..s.from.len()).filter(|&i| s.truth[i]).map(|i| sampson_distance(&estimate.model, s.from[i], s.to[i])).sum::<f64>()
            / true_inliers as f64;
        assert!(mean < 0.8, "mean Sampson distance of the true inliers {mean}");
        assert!(estimate.iterations < 10_000);
    }

    #[test]
    fn essential_ransac_finds_the_calibrated_geometry() {
        let s = scene(300, 0.5, 0.3, 13);
        let (estimate, e) = estimate_essential(&s.from, &s.to, &s.k, &s.k, &Ransac::epipolar()).unwrap();
        let truth = s.truth.iter().filter(|t| **t).count();
        let found = estimate.inliers.iter().zip(&s.truth).filter(|(e, t)| **e && **t).count();
        assert!(found as f64 >= 0.95 * truth as f64, "{found} of {truth}");
        assert!(same_up_to_scale(&e, &multiply(&skew(s.t), &s.r), 0.02));
        let k_inv = inverse_calibration(&s.k);
        let identity = multiply(&s.k, &k_inv);
        assert!((0..9).all(|i| (identity[i / 3][i % 3] - f64::from(i % 4 == 0)).abs() < 1e-12));
    }

    #[test]
    fn a_poor_first_hypothesis_does_not_stop_the_search() {
        assert!(iterations_needed(1.0 / 300.0, SAMPLE as i32, 0.999) > 1e15);
        assert_eq!(iterations_needed(1.0, SAMPLE as i32, 0.999), 1.0);
        assert!((iterations_needed(0.5, SAMPLE as i32, 0.99) - 1177.0).abs() <= 1.0);
    }

    #[test]
    fn too_few_or_degenerate_points_give_none() {
        let s = scene(7, 0.0, 0.0, 3);
        assert!(estimate(&s.from, &s.to, &Ransac::epipolar()).is_none());
        let same = vec![[10.0, 10.0]; 12];
        assert!(eight_point(&same, &same).is_none());
    }

    #[test]
    fn symmetric_eigen_satisfies_the_definition() {
        let m = [[4.0, 1.0, 0.5], [1.0, 3.0, 0.2], [0.5, 0.2, 1.0]];
        let (values, vectors) = symmetric_eigen(m);
        for k in 0..3 {
            for i in 0..3 {
                let mv: f64 = (0..3).map(|j| m[i][j] * vectors[j][k]).sum();
                assert!((mv - values[k] * vectors[i][k]).abs() < 1e-12);
            }
        }
    }
}
