//! Frame-to-frame tracking: each frame's features are matched to the previous frame's (mutual nearest neighbours,
//! on the GPU when the matcher runs there), the matches verified by a fundamental-matrix RANSAC, and every
//! keypoint either continues the track of the keypoint it matched or starts a new one.
//!
//! ```no_run
//! # fn frames() -> Vec<strek::Features> { Vec::new() }
//! use strek::Matcher;
//! use strek::track::{Options, Tracker};
//! let mut tracker = Tracker::new(Matcher::Cpu, Options::default());
//! for features in frames() {
//!     let step = tracker.push(&features)?;
//!     println!("{} tracks continued, {} started", step.continued, step.started);
//! }
//! # Ok::<(), strek::Error>(())
//! ```

use crate::geometry::fundamental::{self, Ransac};
use crate::error::Result;
use crate::features::Features;
use crate::matcher::Matcher;

#[derive(Clone, Debug)]
pub struct Options {
    /// Ratio test of the matcher (1 disables it).
    pub ratio: f32,
    /// Keep only matches consistent with a fundamental matrix (RANSAC); without it every mutual match continues a
    /// track.
    pub verify: bool,
    pub ransac: Ransac,
    /// A frame pair with fewer verified matches continues no track (the frames are taken as unrelated).
    pub min_inliers: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options { ratio: 1.0, verify: true, ransac: Ransac::epipolar(), min_inliers: 15 }
    }
}

/// What one frame did to the tracks.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Step {
    /// The track of each keypoint of the frame, in the frame's keypoint order.
    pub track_ids: Vec<u64>,
    /// For each keypoint, the keypoint of the previous frame that it continues, if any.
    pub previous: Vec<Option<usize>>,
    /// Mutual matches with the previous frame.
    pub matches: usize,
    /// Tracks continued from the previous frame (the matches kept by the verification).
    pub continued: usize,
    pub started: usize,
}

/// The tracking state: the last frame's features and track ids.
pub struct Tracker {
    matcher: Matcher,
    options: Options,
    previous: Option<(Features, Vec<u64>)>,
    next_track: u64,
    frames: u64,
}

impl Tracker {
    pub fn new(matcher: Matcher, options: Options) -> Self {
        Tracker { matcher, options, previous: None, next_track: 0, frames: 0 }
    }

    pub fn matcher(&self) -> &Matcher {
        &self.matcher
    }

    /// Adds the next frame's features.
    pub fn push(&mut self, features: &Features) -> Result<Step> {
        let mut step = Step { previous: vec![None; features.len()], ..Default::default() };
        if let Some((previous, _)) = &self.previous {
            let matches = self.matcher.mutual_nearest(previous, features, self.options.ratio)?;
            step.matches = matches.len();
            let kept = if self.options.verify { self.verified(previous, features, &matches) } else { matches };
            if kept.len() >= self.options.min_inliers {
                for (i, j) in kept {
                    step.previous[j] = Some(i);
                }
            }
        }
        let previous_ids = self.previous.as_ref().map(|(_, ids)| ids.as_slice()).unwrap_or(&[]);
        step.track_ids = step
            .previous
            .iter()
            .map(|p| match p {
                Some(i) => {
                    step.continued += 1;
                    previous_ids[*i]
                }
                None => {
                    step.started += 1;
                    self.next_track += 1;
                    self.next_track - 1
                }
            })
            .collect();
        self.previous = Some((features.clone(), step.track_ids.clone()));
        self.frames += 1;
        Ok(step)
    }

    /// The matches that a fundamental matrix explains (none when there are too few to estimate one).
    fn verified(&self, a: &Features, b: &Features, matches: &[(usize, usize)]) -> Vec<(usize, usize)> {
        let point = |f: &Features, i: usize| [f.keypoints[i][0] as f64, f.keypoints[i][1] as f64];
        let from: Vec<[f64; 2]> = matches.iter().map(|&(i, _)| point(a, i)).collect();
        let to: Vec<[f64; 2]> = matches.iter().map(|&(_, j)| point(b, j)).collect();
        let ransac = Ransac { seed: self.options.ransac.seed.wrapping_add(self.frames), ..self.options.ransac };
        match fundamental::estimate(&from, &to, &ransac) {
            Some(e) => matches.iter().zip(&e.inliers).filter(|(_, keep)| **keep).map(|(m, _)| *m).collect(),
            None => Vec::new(),
        }
    }
}

/// Track statistics gathered while tracking, without keeping the tracks.
#[derive(Clone, Debug, Default)]
pub struct TrackStats {
    /// Length (frames) of every track, by id.
    lengths: Vec<u32>,
}

impl TrackStats {
    pub fn add(&mut self, step: &Step) {
        for &id in &step.track_ids {
            let id = id as usize;
            if id >= self.lengths.len() {
                self.lengths.resize(id + 1, 0);
            }
            self.lengths[id] += 1;
        }
    }

    /// Tracks seen in at least `min_length` frames.
    pub fn count(&self, min_length: u32) -> usize {
        self.lengths.iter().filter(|l| **l >= min_length).count()
    }

    /// Mean length of the tracks of at least `min_length` frames (0 when there are none).
    pub fn mean_length(&self, min_length: u32) -> f64 {
        let long: Vec<u32> = self.lengths.iter().copied().filter(|l| *l >= min_length).collect();
        if long.is_empty() {
            0.0
        } else {
            long.iter().map(|l| *l as f64).sum::<f64>() / long.len() as f64
        }
    }

    pub fn longest(&self) -> u32 {
        self.lengths.iter().copied().max().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Features at the given positions with one-hot descriptors (so that keypoint k of any frame matches
    /// keypoint k of any other).
    fn frame(points: &[[f64; 2]], order: &[usize]) -> Features {
        let n = points.len();
        let mut f = Features::empty([640, 480], n);
        for &k in order {
            f.keypoints.push([points[k][0] as f32, points[k][1] as f32]);
            f.scores.push(1.0);
            f.orientations.push(0.0);
            f.scales.push(1.0);
            f.descriptors.extend((0..n).map(|d| if d == k { 1.0 } else { 0.0 }));
        }
        f
    }

    #[test]
    fn tracks_continue_through_frames_and_restart_after_a_break() {
        let s = fundamental::tests::scene(60, 0.0, 0.0, 5);
        let a = frame(&s.from, &(0..60).collect::<Vec<_>>());
        let reversed: Vec<usize> = (0..60).rev().collect();
        let b = frame(&s.to, &reversed);
        let mut tracker = Tracker::new(Matcher::Cpu, Options::default());
        let first = tracker.push(&a).unwrap();
        assert_eq!((first.started, first.continued), (60, 0));
        let second = tracker.push(&b).unwrap();
        assert_eq!((second.matches, second.continued, second.started), (60, 60, 0));
        // keypoint 0 of the second frame is keypoint 59 of the first
        assert_eq!(second.track_ids[0], first.track_ids[59]);
        assert_eq!(second.previous[0], Some(59));
        // an unrelated frame (too few matches) breaks every track
        let mut other = Features::empty([640, 480], 60);
        for k in 0..5 {
            other.keypoints.push([s.from[k][0] as f32, s.from[k][1] as f32]);
            other.scores.push(1.0);
            other.orientations.push(0.0);
            other.scales.push(1.0);
            other.descriptors.extend((0..60).map(|d| if d == k { 1.0 } else { 0.0 }));
        }
        let third = tracker.push(&other).unwrap();
        assert_eq!((third.continued, third.started), (0, 5));
        assert!(third.track_ids.iter().all(|id| *id >= 60));
        let mut stats = TrackStats::default();
        for step in [&first, &second, &third] {
            stats.add(step);
        }
        assert_eq!((stats.count(2), stats.longest()), (60, 2));
        assert!((stats.mean_length(2) - 2.0).abs() < 1e-12);
    }

    #[test]
    fn verification_drops_matches_off_the_epipolar_geometry() {
        let s = fundamental::tests::scene(80, 0.2, 0.0, 9);
        let mut moved = s.to.clone();
        for p in moved.iter_mut().take(10) {
            p[0] = 640.0 - p[0];
            p[1] = 480.0 - p[1];
        }
        let order: Vec<usize> = (0..80).collect();
        let mut tracker = Tracker::new(Matcher::Cpu, Options::default());
        tracker.push(&frame(&s.from, &order)).unwrap();
        let step = tracker.push(&frame(&moved, &order)).unwrap();
        assert_eq!(step.matches, 80);
        assert!(step.continued >= 68 && step.continued <= 71, "{}", step.continued);
        assert!(step.previous[..10].iter().filter(|p| p.is_some()).count() <= 1);
    }
}
