//! COLMAP databases from strek features: cameras, images, keypoints (with orientation and scale), descriptors,
//! mutual-nearest-neighbour matches (on the GPU when extraction runs there) and their verification by a
//! fundamental-matrix RANSAC, so that COLMAP's mapper (or pycolmap's) reconstructs from strek features alone.
//!
//! Conventions at the boundary: COLMAP puts the centre of the top-left pixel at (0.5, 0.5), strek at (0, 0), so
//! keypoints, principal points and the stored F are shifted by half a pixel. COLMAP's keypoint is the affine frame
//! `A = [[a11, a12], [a21, a22]]` whose columns are the keypoint's x and y axes in the image; its orientation is
//! `atan2(a21, a11)`, measured from +x towards +y (clockwise as displayed, y pointing down), so strek's
//! orientation (counter-clockwise as displayed) enters with its sign flipped, and the scale is strek's (1 at full
//! resolution, the pyramid factor above).

pub mod database;

use crate::extract::Extract;
use crate::error::{Error, Result};
use crate::features::Features;
use crate::image_io::{Image, ImageFile};
use crate::matcher::Matcher;
use database::{CameraRow, Configuration, Database, TwoViewRow};
use crate::geometry::{fundamental, Mat3};
use rayon::prelude::*;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Which image pairs are matched.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pairs {
    /// Every pair.
    Exhaustive,
    /// Each image with the next N (in name order): for video frames.
    Sequential(usize),
}

impl std::str::FromStr for Pairs {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        let bad = || Error::Invalid(format!("unknown pairing {s:?}: use exhaustive or sequential:N (N >= 1)"));
        match s.split_once(':') {
            None if s == "exhaustive" => Ok(Pairs::Exhaustive),
            Some(("sequential", n)) => n.parse().ok().filter(|n| *n >= 1).map(Pairs::Sequential).ok_or_else(bad),
            _ => Err(bad()),
        }
    }
}

impl Pairs {
    /// The pairs (i, j), i < j, of `n` images in order.
    pub fn list(&self, n: usize) -> Vec<(usize, usize)> {
        let reach = match *self {
            Pairs::Exhaustive => n,
            Pairs::Sequential(k) => k,
        };
        (0..n).flat_map(|i| (i + 1..n.min(i + 1 + reach)).map(move |j| (i, j))).collect()
    }
}

/// The camera model written for the images; parameters in strek's pixel convention (the centre of pixel (0, 0) at
/// (0, 0), as OpenCV and most calibration tools give them).
#[derive(Clone, Copy, Debug, PartialEq, Default)]
pub enum Camera {
    /// COLMAP's guess for an unknown camera: SIMPLE_RADIAL, focal length 1.2 x the longer side, principal point at
    /// the image centre, no distortion; the mapper refines them.
    #[default]
    Guess,
    /// Known intrinsics, no distortion (COLMAP's PINHOLE).
    Pinhole { fx: f64, fy: f64, cx: f64, cy: f64 },
}

impl std::str::FromStr for Camera {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        let bad = || Error::Invalid(format!("unknown camera {s:?}: use auto or pinhole:fx,fy,cx,cy"));
        match s.split_once(':') {
            None if s == "auto" => Ok(Camera::Guess),
            Some(("pinhole", values)) => {
                let v: Vec<f64> = values.split(',').map(|t| t.trim().parse().ok()).collect::<Option<_>>().ok_or_else(bad)?;
                match v[..] {
                    [fx, fy, cx, cy] if fx > 0.0 && fy > 0.0 && v.iter().all(|x| x.is_finite()) => {
                        Ok(Camera::Pinhole { fx, fy, cx, cy })
                    }
                    _ => Err(bad()),
                }
            }
            _ => Err(bad()),
        }
    }
}

/// COLMAP's camera model ids.
const SIMPLE_RADIAL: i32 = 2;
const PINHOLE: i32 = 1;

impl Camera {
    /// The database row for images of this size, in COLMAP's pixel convention.
    pub fn row(&self, width: u32, height: u32) -> CameraRow {
        match *self {
            Camera::Guess => CameraRow {
                model: SIMPLE_RADIAL,
                width,
                height,
                params: vec![1.2 * width.max(height) as f64, width as f64 / 2.0, height as f64 / 2.0, 0.0],
                prior_focal_length: false,
            },
            Camera::Pinhole { fx, fy, cx, cy } => {
                CameraRow { model: PINHOLE, width, height, params: vec![fx, fy, cx + 0.5, cy + 0.5], prior_focal_length: true }
            }
        }
    }

    /// The calibration matrix in COLMAP's pixel convention, where the intrinsics are known.
    pub fn calibration(&self) -> Option<Mat3> {
        match *self {
            Camera::Guess => None,
            Camera::Pinhole { fx, fy, cx, cy } => Some(fundamental::calibration(fx, fy, cx + 0.5, cy + 0.5)),
        }
    }
}

/// Keypoints as COLMAP's rows (x, y, a11, a12, a21, a22): positions shifted by half a pixel, the affine frame a
/// rotation by minus strek's orientation (see the module documentation) scaled by strek's scale.
pub fn keypoint_rows(features: &Features) -> Vec<[f32; 6]> {
    (0..features.len())
        .map(|i| {
            let [x, y] = features.keypoints[i];
            let (s, (sin, cos)) = (features.scales[i], features.orientations[i].sin_cos());
            [x + 0.5, y + 0.5, s * cos, s * sin, -s * sin, s * cos]
        })
        .collect()
}

/// Descriptors as bytes: each component of the unit vector mapped from [-1, 1] to [0, 255] by
/// `round((v + 1) * 127.5)`. The map is affine and the same for every component, so Euclidean distances keep their
/// order (to the rounding); it is not SIFT's layout, so re-matching them with COLMAP's SIFT matcher is not meant.
pub fn descriptor_bytes(features: &Features) -> Vec<u8> {
    features.descriptors.iter().map(|v| ((v.clamp(-1.0, 1.0) + 1.0) * 127.5).round() as u8).collect()
}

/// Settings of `build`.
#[derive(Clone, Debug)]
pub struct Options {
    pub pairs: Pairs,
    pub camera: Camera,
    /// Ratio test of the mutual-nearest-neighbour matcher (1 disables it).
    pub ratio: f32,
    /// Fundamental-matrix RANSAC of the verification.
    pub ransac: fundamental::Ransac,
    /// Pairs with fewer inliers are stored as failed (COLMAP's default is 15).
    pub min_inliers: usize,
    /// Images per extraction call.
    pub batch: usize,
    /// What an image file may ask the decoder for.
    pub decode: crate::image_io::DecodeLimits,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            pairs: Pairs::Exhaustive,
            camera: Camera::Guess,
            ratio: 1.0,
            ransac: fundamental::Ransac::epipolar(),
            min_inliers: 15,
            batch: 8,
            decode: Default::default(),
        }
    }
}

/// What `build` did.
#[derive(Clone, Debug, Default)]
pub struct Summary {
    pub images: usize,
    /// Inputs that could not be read or extracted, with the reason; they are not in the database.
    pub skipped: Vec<(PathBuf, String)>,
    pub cameras: usize,
    pub keypoints: usize,
    pub pairs: usize,
    pub matches: usize,
    pub verified_pairs: usize,
    pub calibrated_pairs: usize,
    pub inlier_matches: usize,
    pub extract_seconds: f64,
    pub match_seconds: f64,
    pub verify_seconds: f64,
    /// What extracted and what matched.
    pub extractor: String,
    pub matcher: String,
}

impl Summary {
    fn add_pair(&mut self, matches: usize, geometry: &TwoViewRow) {
        self.matches += matches;
        if geometry.config != Configuration::Degenerate {
            self.verified_pairs += 1;
            self.inlier_matches += geometry.inliers.len();
        }
        self.calibrated_pairs += (geometry.config == Configuration::Calibrated) as usize;
    }
}

/// Verifies the matches of one pair of images: a fundamental matrix by RANSAC (in COLMAP's pixel convention, as
/// stored), and with known intrinsics an essential matrix by its own RANSAC, kept (configuration "calibrated") when
/// it explains at least 95% of F's inliers, COLMAP's own rule.
pub fn verify(
    a: &[[f32; 6]],
    b: &[[f32; 6]],
    matches: &[(usize, usize)],
    calibration: Option<(&Mat3, &Mat3)>,
    ransac: &fundamental::Ransac,
    min_inliers: usize,
) -> TwoViewRow {
    let failed = TwoViewRow { config: Configuration::Degenerate, inliers: Vec::new(), fundamental: None, essential: None };
    if matches.len() < min_inliers.max(8) {
        return failed;
    }
    let point = |row: &[f32; 6]| [row[0] as f64, row[1] as f64];
    let from: Vec<[f64; 2]> = matches.iter().map(|&(i, _)| point(&a[i])).collect();
    let to: Vec<[f64; 2]> = matches.iter().map(|&(_, j)| point(&b[j])).collect();
    let Some(estimate) = fundamental::estimate(&from, &to, ransac) else { return failed };
    if estimate.inlier_count() < min_inliers {
        return failed;
    }
    let inliers_of = |flags: &[bool]| -> Vec<(u32, u32)> {
        matches.iter().zip(flags).filter(|(_, f)| **f).map(|(&(i, j), _)| (i as u32, j as u32)).collect()
    };
    if let Some((k1, k2)) = calibration {
        // E is searched among F's inliers (a calibrated geometry explains a subset of them) and its inliers then
        // counted over all matches. An E that is kept explains 95% of F's inliers, so among them it has a share of
        // well over 80%: the search may stop when a sample of such a set would have been drawn (about 30 samples),
        // where a pair whose F is chance would otherwise run to the limit again for an E that cannot be kept.
        let (from_f, to_f): (Vec<[f64; 2]>, Vec<[f64; 2]>) =
            from.iter().zip(&to).zip(&estimate.inliers).filter(|(_, f)| **f).map(|((p, q), _)| (*p, *q)).unzip();
        let enough = crate::solve::iterations_needed(0.8, fundamental::MINIMAL as i32, ransac.confidence);
        let ransac_e = fundamental::Ransac { max_iterations: ransac.max_iterations.min(enough as usize), ..*ransac };
        if let Some((calibrated, e)) = fundamental::estimate_essential(&from_f, &to_f, k1, k2, &ransac_e) {
            let flags = fundamental::inliers(&calibrated.model, &from, &to, ransac.threshold);
            let count = crate::solve::count(&flags);
            if count >= min_inliers && count as f64 >= 0.95 * estimate.inlier_count() as f64 {
                return TwoViewRow {
                    config: Configuration::Calibrated,
                    inliers: inliers_of(&flags),
                    fundamental: Some(calibrated.model),
                    essential: Some(e),
                };
            }
        }
    }
    TwoViewRow {
        config: Configuration::Uncalibrated,
        inliers: inliers_of(&estimate.inliers),
        fundamental: Some(estimate.model),
        essential: None,
    }
}

/// An image to put in the database: its name there (relative to the image folder that COLMAP will be given, `/`
/// separated) and its file.
/// Pairs matched, verified and written together: enough to keep every thread busy, few enough that their matches
/// take little memory.
const PAIRS_PER_BLOCK: usize = 256;

/// An extracted image: its id in the database, its features, and its keypoints in COLMAP's layout (what
/// verification works on).
type Extracted = (i64, Features, Vec<[f32; 6]>);

/// Mutual nearest neighbours of each pair: one GPU submission per pair on the GPU; pairs spread over CPU threads
/// otherwise.
fn match_pairs(pairs: &[(usize, usize)], images: &[Extracted], matcher: &Matcher, ratio: f32) -> Result<Vec<Vec<(usize, usize)>>> {
    let match_pair = |&(i, j): &(usize, usize)| matcher.mutual_nearest(&images[i].1, &images[j].1, ratio);
    if matcher.is_cpu() {
        pairs.par_iter().map(match_pair).collect()
    } else {
        pairs.iter().map(match_pair).collect()
    }
}

/// Verifies each pair on CPU threads (pair `first + k` of the whole list as `verify_pair` says).
fn verify_pairs(
    pairs: &[(usize, usize)],
    first: usize,
    matched: &[Vec<(usize, usize)>],
    images: &[Extracted],
    options: &Options,
) -> Vec<TwoViewRow> {
    pairs
        .par_iter()
        .zip(matched)
        .enumerate()
        .map(|(k, (&(i, j), matches))| verify_pair(&images[i].2, &images[j].2, matches, options, first + k))
        .collect()
}

/// The verification of pair number `index` of a run's pair list: its RANSAC draws from seed + index, so that a
/// run is reproducible however its pairs are split into blocks, threads or machines.
pub fn verify_pair(a: &[[f32; 6]], b: &[[f32; 6]], matches: &[(usize, usize)], options: &Options, index: usize) -> TwoViewRow {
    let ransac = fundamental::Ransac { seed: options.ransac.seed.wrapping_add(index as u64), ..options.ransac };
    let calibration = options.camera.calibration();
    verify(a, b, matches, calibration.as_ref().map(|k| (k, k)), &ransac, options.min_inliers)
}

/// A database filled image by image and pair by pair: by `build`, and by the Python package's scale-out, which
/// extracts and matches elsewhere and merges here. Images of one size share a camera.
pub struct Writer {
    db: Database,
    camera: Camera,
    cameras: Vec<([u32; 2], i64)>,
}

impl Writer {
    /// Starts the database at `out` (which must not exist; nothing is there until `finish`).
    pub fn create(out: &Path, camera: Camera) -> Result<Self> {
        Ok(Writer { db: Database::create(out)?, camera, cameras: Vec::new() })
    }

    /// Writes the image's camera (the first of its size), row, keypoints and descriptors; returns its id and its
    /// keypoints in COLMAP's layout (what verification works on).
    pub fn add_image(&mut self, name: &str, features: &Features) -> Result<(i64, Vec<[f32; 6]>)> {
        let size = features.image_size;
        let camera_id = match self.cameras.iter().find(|(s, _)| *s == size) {
            Some((_, id)) => *id,
            None => {
                let id = self.db.add_camera(&self.camera.row(size[0], size[1]))?;
                self.cameras.push((size, id));
                id
            }
        };
        let image_id = self.db.add_image(name, camera_id)?;
        let rows = keypoint_rows(features);
        self.db.add_keypoints(image_id, &rows)?;
        self.db.add_descriptors(image_id, features.dim, &descriptor_bytes(features))?;
        Ok((image_id, rows))
    }

    /// Writes a pair's matches and their verified geometry.
    pub fn add_pair(&self, image1: i64, image2: i64, matches: &[(usize, usize)], geometry: &TwoViewRow) -> Result<()> {
        let as_u32: Vec<(u32, u32)> = matches.iter().map(|&(a, b)| (a as u32, b as u32)).collect();
        self.db.add_matches(image1, image2, &as_u32)?;
        self.db.add_two_view_geometry(image1, image2, geometry)
    }

    /// Distinct image sizes so far, each a camera.
    pub fn cameras(&self) -> usize {
        self.cameras.len()
    }

    /// Commits the database and moves it into place.
    pub fn finish(self) -> Result<()> {
        self.db.finish()
    }
}

/// Extracts, matches, verifies and writes the database at `out` (which must not exist). Unreadable images are
/// reported through `log` and left out; everything else that fails stops the run without leaving a file.
pub fn build(
    inputs: &[ImageFile],
    extractor: &mut dyn Extract,
    matcher: &Matcher,
    options: &Options,
    out: &Path,
    log: &mut dyn FnMut(&str),
) -> Result<Summary> {
    let mut summary = Summary { extractor: extractor.describe(), matcher: matcher.describe(), ..Default::default() };
    let mut db = Writer::create(out, options.camera)?;
    let start = Instant::now();
    let images = extract_all(inputs, extractor, options, &mut db, &mut summary, log)?;
    summary.extract_seconds = start.elapsed().as_secs_f64();
    if summary.cameras > 1 && options.camera != Camera::Guess {
        log(&format!("warning: images of {} different sizes share the given intrinsics", summary.cameras));
    }
    match_and_verify(&images, matcher, options, &db, &mut summary)?;
    db.finish()?;
    Ok(summary)
}

/// Extracts the images a batch at a time (decoding in parallel on the CPU) and writes each one's camera, image
/// row, keypoints and descriptors; files that cannot be read are logged and skipped.
fn extract_all(
    inputs: &[ImageFile],
    extractor: &mut dyn Extract,
    options: &Options,
    db: &mut Writer,
    summary: &mut Summary,
    log: &mut dyn FnMut(&str),
) -> Result<Vec<Extracted>> {
    let mut images: Vec<Extracted> = Vec::new();
    for chunk in inputs.chunks(options.batch.max(1)) {
        let decoded: Vec<Result<Image>> = chunk.par_iter().map(|input| Image::open_with(&input.path, &options.decode)).collect();
        let (mut names, mut batch) = (Vec::new(), Vec::new());
        for (input, image) in chunk.iter().zip(decoded) {
            match image {
                Ok(image) => {
                    names.push(&input.name);
                    batch.push(image);
                }
                Err(e) => {
                    log(&format!("skipped: {e}"));
                    summary.skipped.push((input.path.clone(), e.to_string()));
                }
            }
        }
        if batch.is_empty() {
            continue;
        }
        let features = extractor.extract_batch(&batch)?;
        for (name, features) in names.into_iter().zip(features) {
            let (image_id, rows) = db.add_image(name, &features)?;
            summary.keypoints += features.len();
            images.push((image_id, features, rows));
        }
    }
    summary.images = images.len();
    summary.cameras = db.cameras();
    Ok(images)
}

/// Matching and verification, a block of pairs at a time, written before the next block: memory stays bounded
/// however many pairs there are.
fn match_and_verify(images: &[Extracted], matcher: &Matcher, options: &Options, db: &Writer, summary: &mut Summary) -> Result<()> {
    let pairs = options.pairs.list(images.len());
    for (b, block) in pairs.chunks(PAIRS_PER_BLOCK).enumerate() {
        let start = Instant::now();
        let matched = match_pairs(block, images, matcher, options.ratio)?;
        summary.match_seconds += start.elapsed().as_secs_f64();
        let start = Instant::now();
        let first = b * PAIRS_PER_BLOCK;
        let geometries = verify_pairs(block, first, &matched, images, options);
        summary.verify_seconds += start.elapsed().as_secs_f64();
        for ((&(i, j), matches), geometry) in block.iter().zip(&matched).zip(&geometries) {
            db.add_pair(images[i].0, images[j].0, matches, geometry)?;
            summary.add_pair(matches.len(), geometry);
        }
    }
    summary.pairs = pairs.len();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_parse_and_list() {
        assert_eq!("exhaustive".parse::<Pairs>().unwrap().list(3), vec![(0, 1), (0, 2), (1, 2)]);
        assert_eq!("sequential:1".parse::<Pairs>().unwrap().list(3), vec![(0, 1), (1, 2)]);
        assert_eq!("sequential:2".parse::<Pairs>().unwrap().list(4), vec![(0, 1), (0, 2), (1, 2), (1, 3), (2, 3)]);
        assert!("sequential:0".parse::<Pairs>().is_err());
        assert!("vocab".parse::<Pairs>().is_err());
    }

    #[test]
    fn cameras_parse_and_shift_to_colmap_pixels() {
        let c: Camera = "pinhole:535.4,539.2,320.1,247.6".parse().unwrap();
        assert_eq!(c.row(640, 480).params, vec![535.4, 539.2, 320.6, 248.1]);
        assert_eq!(Camera::Guess.row(640, 480).params, vec![768.0, 320.0, 240.0, 0.0]);
        assert!("pinhole:1,2,3".parse::<Camera>().is_err());
        assert!("opencv:1,2,3,4".parse::<Camera>().is_err());
    }

    #[test]
    fn keypoints_become_colmap_affine_frames() {
        let f = Features {
            image_size: [10, 10],
            keypoints: vec![[2.0, 3.0]],
            scores: vec![1.0],
            orientations: vec![std::f32::consts::FRAC_PI_2],
            scales: vec![2.0],
            descriptors: vec![-1.0, 0.0, 1.0],
            dim: 3,
        };
        let [x, y, a11, a12, a21, a22] = keypoint_rows(&f)[0];
        assert_eq!((x, y), (2.5, 3.5));
        // a quarter turn counter-clockwise as displayed: the keypoint's x axis points up the image (-y)
        assert!(a11.abs() < 1e-6 && (a21 + 2.0).abs() < 1e-6 && (a12 - 2.0).abs() < 1e-6 && a22.abs() < 1e-6);
        // COLMAP's scale and orientation of the frame
        assert!(((a11 * a11 + a21 * a21).sqrt() - 2.0).abs() < 1e-6);
        assert_eq!(descriptor_bytes(&f), vec![0, 128, 255]);
    }

    #[test]
    fn verification_keeps_the_inliers_and_knows_a_calibrated_pair() {
        let s = fundamental::tests::scene(300, 0.3, 0.3, 11);
        let rows = |p: &[[f64; 2]]| p.iter().map(|q| [q[0] as f32, q[1] as f32, 1.0, 0.0, 0.0, 1.0]).collect::<Vec<_>>();
        let (a, b) = (rows(&s.from), rows(&s.to));
        let matches: Vec<(usize, usize)> = (0..a.len()).map(|i| (i, i)).collect();
        let ransac = fundamental::Ransac::epipolar();
        let uncalibrated = verify(&a, &b, &matches, None, &ransac, 15);
        assert_eq!(uncalibrated.config, Configuration::Uncalibrated);
        let calibrated = verify(&a, &b, &matches, Some((&s.k, &s.k)), &ransac, 15);
        assert_eq!(calibrated.config, Configuration::Calibrated);
        for g in [&uncalibrated, &calibrated] {
            let correct = g.inliers.iter().filter(|(i, _)| s.truth[*i as usize]).count();
            let truth = s.truth.iter().filter(|t| **t).count();
            assert!(correct as f64 > 0.95 * truth as f64 && g.inliers.len() - correct < 10, "{correct} of {truth}, {}", g.inliers.len());
        }
        assert_eq!(verify(&a, &b, &matches[..10], None, &ransac, 15).config, Configuration::Degenerate);
    }
}
