//! Small dense numerics shared by the geometric estimators (homography, fundamental and essential matrices).

use crate::rng::Rng;

/// RANSAC settings of every estimator; the constructors name each one's protocol.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Ransac {
    /// A correspondence is an inlier when its error is at most this many pixels: the transfer distance for a
    /// homography, the Sampson distance for epipolar geometry.
    pub threshold: f64,
    /// Probability that at least one drawn sample is outlier-free; sets the adaptive iteration count.
    pub confidence: f64,
    pub max_iterations: usize,
    /// Seed of the sample draws, so that a run is reproducible.
    pub seed: u64,
}

impl Ransac {
    /// The evaluation protocol's homography estimation: 3 px.
    pub fn homography() -> Self {
        Ransac { threshold: 3.0, confidence: 0.999, max_iterations: 10_000, seed: 0 }
    }

    /// Fundamental or essential matrix between frames (COLMAP, tracking): 2 px Sampson distance.
    pub fn epipolar() -> Self {
        Ransac { threshold: 2.0, ..Self::homography() }
    }
}

/// What `Ransac::run` found: the model, one inlier flag per correspondence, the minimal samples drawn.
#[derive(Clone, Debug, PartialEq)]
pub struct Consensus<M> {
    pub model: M,
    pub inliers: Vec<bool>,
    pub iterations: usize,
}

impl<M> Consensus<M> {
    pub fn inlier_count(&self) -> usize {
        count(&self.inliers)
    }
}

/// How RANSAC scores a hypothesis: the correspondences whose error is within the threshold.
pub trait Score<M> {
    /// Correspondences scored.
    fn len(&self) -> usize;
    /// The support of `model` when it is larger than `to_beat`; `None` otherwise, and allowed to stop scoring as
    /// soon as the correspondences left can no longer lift the support above `to_beat` (where most of RANSAC's time
    /// goes when the best support is already high).
    fn support_beyond(&self, model: &M, threshold: f64, to_beat: Option<usize>) -> Option<usize>;
    /// One flag per correspondence: its error is within the threshold.
    fn inliers(&self, model: &M, threshold: f64) -> Vec<bool>;
}

/// A scorer from a per-correspondence error.
pub struct ErrorFn<F> {
    pub n: usize,
    pub error: F,
}

impl<M, F: Fn(&M, usize) -> f64> Score<M> for ErrorFn<F> {
    fn len(&self) -> usize {
        self.n
    }

    fn support_beyond(&self, model: &M, threshold: f64, to_beat: Option<usize>) -> Option<usize> {
        let within = |i: usize| ((self.error)(model, i) <= threshold) as usize;
        let Some(to_beat) = to_beat else { return Some((0..self.n).map(within).sum()) };
        let mut support = 0;
        for i in 0..self.n {
            support += within(i);
            if support + (self.n - 1 - i) <= to_beat {
                return None;
            }
        }
        Some(support)
    }

    fn inliers(&self, model: &M, threshold: f64) -> Vec<bool> {
        (0..self.n).map(|i| (self.error)(model, i) <= threshold).collect()
    }
}

impl Ransac {
    /// RANSAC over `n` correspondences: minimal samples of `K` distinct indices drawn from the seed, `fit` on each
    /// (`None`: degenerate; the draw still counts), a hypothesis' support the correspondences whose `error` is at
    /// most the threshold, the number of iterations shrinking as better hypotheses appear; then `fit` on all inliers
    /// until the inlier set is stable, a refit that loses support not kept. `None` with fewer than `K`
    /// correspondences or when no sample fits.
    pub fn run<M, const K: usize>(
        &self,
        n: usize,
        fit: impl Fn(&[usize]) -> Option<M>,
        error: impl Fn(&M, usize) -> f64,
    ) -> Option<Consensus<M>> {
        self.run_scored::<M, _, K>(fit, &ErrorFn { n, error })
    }

    /// `run` with the hypotheses scored by `score` (which may score many correspondences at once) and `fit`
    /// giving any number of models a sample (a minimal solver may have several solutions: each is scored; a refit
    /// takes the first).
    pub fn run_scored<M, I: IntoIterator<Item = M>, const K: usize>(&self, fit: impl Fn(&[usize]) -> I, score: &impl Score<M>) -> Option<Consensus<M>> {
        let n = score.len();
        if n < K {
            return None;
        }
        let mut rng = Rng::new(self.seed);
        let mut best: Option<(usize, M)> = None;
        let mut needed = self.max_iterations as f64;
        let mut iterations = 0;
        while (iterations as f64) < needed.min(self.max_iterations as f64) {
            iterations += 1;
            for model in fit(&draw_distinct::<K>(&mut rng, n)) {
                let to_beat = best.as_ref().map(|(c, _)| *c);
                if let Some(support) = score.support_beyond(&model, self.threshold, to_beat) {
                    best = Some((support, model));
                    needed = iterations_needed(support as f64 / n as f64, K as i32, self.confidence);
                }
            }
        }
        let (_, mut model) = best?;
        let mut inliers = score.inliers(&model, self.threshold);
        for _ in 0..10 {
            let chosen: Vec<usize> = (0..n).filter(|&i| inliers[i]).collect();
            let Some(refit) = fit(&chosen).into_iter().next() else { break };
            let refit_inliers = score.inliers(&refit, self.threshold);
            if count(&refit_inliers) < chosen.len() {
                break;
            }
            let stable = refit_inliers == inliers;
            model = refit;
            inliers = refit_inliers;
            if stable {
                break;
            }
        }
        Some(Consensus { model, inliers, iterations })
    }
}

/// How many flags are set.
pub fn count(flags: &[bool]) -> usize {
    flags.iter().filter(|f| **f).count()
}

/// `K` distinct indices below `n` (n >= K).
fn draw_distinct<const K: usize>(rng: &mut Rng, n: usize) -> [usize; K] {
    let mut s = [usize::MAX; K];
    let mut k = 0;
    while k < K {
        let i = rng.below(n);
        if !s[..k].contains(&i) {
            s[k] = i;
            k += 1;
        }
    }
    s
}

/// RANSAC iterations needed to draw one all-inlier sample of `sample` points with probability `confidence` when a
/// share `inlier_ratio` of the correspondences are inliers. `ln_1p` keeps it right when `inlier_ratio^sample` is
/// below the f64 resolution of 1, where `ln(1 - p)` would be 0 and the count collapse to 1.
pub fn iterations_needed(inlier_ratio: f64, sample: i32, confidence: f64) -> f64 {
    let all_inliers = inlier_ratio.clamp(0.0, 1.0).powi(sample);
    if all_inliers >= 1.0 {
        return 1.0;
    }
    if all_inliers <= 0.0 {
        return f64::INFINITY;
    }
    ((1.0 - confidence).ln() / (-all_inliers).ln_1p()).ceil().max(1.0)
}

/// Eigenvalues and eigenvectors (as columns) of a symmetric N x N matrix by cyclic Jacobi rotations: exact to
/// rounding and a few microseconds at these sizes (9 and 3).
pub fn symmetric_eigen<const N: usize>(mut a: [[f64; N]; N]) -> ([f64; N], [[f64; N]; N]) {
    let mut v = [[0.0; N]; N];
    for (i, row) in v.iter_mut().enumerate() {
        row[i] = 1.0;
    }
    for _sweep in 0..100 {
        let off: f64 = (0..N).flat_map(|i| (0..N).filter(move |&j| j != i).map(move |j| (i, j))).map(|(i, j)| a[i][j] * a[i][j]).sum();
        let diag: f64 = (0..N).map(|i| a[i][i] * a[i][i]).sum();
        if off <= 1e-30 * diag.max(1e-300) {
            break;
        }
        for p in 0..N {
            for q in p + 1..N {
                if a[p][q].abs() < 1e-300 {
                    continue;
                }
                let theta = (a[q][q] - a[p][p]) / (2.0 * a[p][q]);
                let t = if theta == 0.0 { 1.0 } else { theta.signum() / (theta.abs() + (theta * theta + 1.0).sqrt()) };
                let c = 1.0 / (t * t + 1.0).sqrt();
                let s = t * c;
                for row in a.iter_mut() {
                    let (akp, akq) = (row[p], row[q]);
                    row[p] = c * akp - s * akq;
                    row[q] = s * akp + c * akq;
                }
                for k in 0..N {
                    let (apk, aqk) = (a[p][k], a[q][k]);
                    a[p][k] = c * apk - s * aqk;
                    a[q][k] = s * apk + c * aqk;
                }
                for row in v.iter_mut() {
                    let (vkp, vkq) = (row[p], row[q]);
                    row[p] = c * vkp - s * vkq;
                    row[q] = s * vkp + c * vkq;
                }
            }
        }
    }
    (std::array::from_fn(|i| a[i][i]), v)
}

