//! The benchmark harness behind `strek eval`: HPatches-format sets, the metrics of design.md (rep@3, mma@1/3/5,
//! hacc@1/3/5, mutual matches), a rotation sweep on an expanded canvas, and per-pair JSON.
//!
//! Features come from the engine (any `Extract`, GPU or CPU) or from npz files written by any other program in the
//! layout of design.md, and every method runs through the same metric code.
//!
//! Files that the harness reads and writes mirror the sets: `DIR/<set>/<sequence>/<image>.{png,npz}`, where
//! `<image>` is `1` .. `K` and `1_rot<angle>` for the rotation sweep. `--export-images DIR` writes the exact images
//! evaluated (downscaled, rotated), so another program can extract from them and its npz files come back through
//! `--features`.

pub mod bench;
pub mod dataset;
pub mod metrics;
pub mod report;

use crate::extract::Extract;
use crate::error::{Error, Result};
use crate::features::Features;
use crate::geometry::{rotate_image, Homography};
use crate::image_io::{Image, Samples};
use crate::rng::Rng;
use crate::matcher::Matcher;
use dataset::DataSet;
use metrics::{evaluate_pair, Protocol};
use report::{DataSetReport, PairRecord, Report};
use std::path::{Path, PathBuf};

/// Where a method's features come from.
pub enum Source {
    /// Extracted now.
    Engine(Box<dyn Extract>),
    /// Read from `DIR/<set>/<sequence>/<image>.npz`.
    Files(PathBuf),
}

/// One column of the tables: a name and a source of features.
pub struct Method {
    pub name: String,
    pub source: Source,
}

impl Method {
    pub fn describe(&self) -> String {
        match &self.source {
            Source::Engine(e) => format!("engine ({})", e.describe()),
            Source::Files(dir) => format!("features from {}", dir.display()),
        }
    }

    /// Features of one evaluated image, in that image's pixels.
    fn features(&mut self, key: &ImageKey, image: &Image) -> Result<Features> {
        match &mut self.source {
            Source::Engine(extractor) => extractor.extract(image),
            Source::Files(dir) => {
                let path = key.path(dir, "npz");
                if !path.is_file() {
                    return Err(Error::Invalid(format!(
                        "{}: missing; --features expects DIR/<set>/<sequence>/<image>.npz for every image evaluated \
                         (--export-images writes those images)",
                        path.display()
                    )));
                }
                let f = Features::read_npz(&path)?;
                to_image_size(f, [image.width, image.height]).map_err(|e| Error::Invalid(format!("{}: {e}", path.display())))
            }
        }
    }
}

/// Names one evaluated image: set, sequence, image name.
#[derive(Clone, Debug)]
pub struct ImageKey {
    pub set: String,
    pub sequence: String,
    pub image: String,
}

impl ImageKey {
    pub fn path(&self, dir: &Path, extension: &str) -> PathBuf {
        dir.join(&self.set).join(&self.sequence).join(format!("{}.{extension}", self.image))
    }
}

/// Name of image 1 rotated by `angle` degrees: `1_rot45`, `1_rot-30`, `1_rot22.5`.
pub fn rotated_name(angle: f64) -> String {
    format!("1_rot{angle}")
}

/// Name of an evaluated image with Gaussian noise of `std` added: `2_noise0.05`, `1_rot90_noise0.05`. Features
/// that another program computed on the clean image are never found under it.
pub fn noisy_name(name: &str, std: f64) -> String {
    format!("{name}_noise{std}")
}

/// `image` with independent Gaussian noise of standard deviation `std` (in units of the full sample range: 0.05 is
/// 5 % of 255) added to every sample but alpha, rounded and clamped to the sample type, as a sensor's stored
/// output would be. Seeded: the same image, std and seed give the same noise.
pub fn with_noise(image: &Image, std: f64, seed: u64) -> Image {
    let mut rng = Rng::new(seed);
    let channels = image.channels as usize;
    let colour = |i: usize| channels == 1 || channels == 3 || i % channels != channels - 1;
    let mut noisy = |v: f64, max: f64, i: usize| if colour(i) { (v + rng.normal() as f64 * std * max).round().clamp(0.0, max) } else { v };
    let samples = match &image.samples {
        Samples::U8(v) => Samples::U8(v.iter().enumerate().map(|(i, &x)| noisy(x as f64, 255.0, i) as u8).collect()),
        Samples::U16(v) => Samples::U16(v.iter().enumerate().map(|(i, &x)| noisy(x as f64, 65535.0, i) as u16).collect()),
    };
    Image { samples, ..image.clone() }
}

/// Seed of the noise of one evaluated image: from its set, sequence and name, so that every method and every run
/// sees the same noisy image.
fn noise_seed(key: &ImageKey) -> u64 {
    let text = format!("{}/{}/{}", key.set, key.sequence, key.image);
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ b as u64).wrapping_mul(0x100_0000_01b3))
}

/// Features computed on a resized copy of the evaluated image (same aspect ratio within 1 %) are mapped to its
/// pixels; any other size is an error.
pub fn to_image_size(mut f: Features, size: [u32; 2]) -> std::result::Result<Features, String> {
    if f.image_size == size {
        return Ok(f);
    }
    let [w, h] = f.image_size;
    if w == 0 || h == 0 {
        return Err("image_size is zero".into());
    }
    let (sx, sy) = (size[0] as f64 / w as f64, size[1] as f64 / h as f64);
    if (sx / sy - 1.0).abs() > 0.01 {
        return Err(format!("features are for a {w}x{h} image, the evaluated image is {}x{}", size[0], size[1]));
    }
    f.rescale_to(size);
    Ok(f)
}

#[derive(Clone, Debug, Default)]
pub struct Options {
    pub protocol: Protocol,
    /// Images are shrunk so that their longer side is at most this (homographies adjusted).
    pub max_side: Option<u32>,
    /// Rotation sweep angles in degrees (counter-clockwise); empty for none.
    pub angles: Vec<f64>,
    /// Sequences to evaluate (all when empty): names, exact.
    pub sequences: Vec<String>,
    /// Writes the evaluated images as PNG here.
    pub export_images: Option<PathBuf>,
    /// Writes the engine's features here as npz (the layout `--features` reads).
    pub save_features: Option<PathBuf>,
    /// Gaussian noise of this standard deviation (0-1 range) on the second image of every pair (image 2..K and the
    /// rotated copies); image 1 stays clean.
    pub noise: Option<f64>,
}

/// The images of one sequence as evaluated, with their names and ground truth (image 1 to each).
struct Prepared {
    keys: Vec<ImageKey>,
    images: Vec<Image>,
    /// (index of the second image, homography from image 1, rotation angle if a sweep pair).
    pairs: Vec<(usize, Homography, Option<f64>)>,
}

fn prepare(set: &DataSet, seq: &dataset::Sequence, options: &Options) -> Result<Prepared> {
    let key = |image: String| ImageKey { set: set.name.clone(), sequence: seq.name.clone(), image };
    let mut keys = Vec::new();
    let mut images = Vec::new();
    let mut maps = Vec::new();
    for (k, path) in seq.images.iter().enumerate() {
        let (image, map) = dataset::load_image(path, options.max_side)?;
        keys.push(key((k + 1).to_string()));
        images.push(image);
        maps.push(map);
    }
    let first_inv = maps[0].inverse().expect("a scaling is invertible");
    let mut pairs: Vec<(usize, Homography, Option<f64>)> = seq
        .homographies
        .iter()
        .enumerate()
        .map(|(i, h)| (i + 1, maps[i + 1].after(h).after(&first_inv), None))
        .collect();
    for &angle in &options.angles {
        let (rotated, h) = rotate_image(&images[0], angle);
        keys.push(key(rotated_name(angle)));
        images.push(rotated);
        pairs.push((images.len() - 1, h, Some(angle)));
    }
    if let Some(std) = options.noise {
        for (key, image) in keys.iter_mut().zip(images.iter_mut()).skip(1) {
            key.image = noisy_name(&key.image, std);
            *image = with_noise(image, std, noise_seed(key));
        }
    }
    Ok(Prepared { keys, images, pairs })
}

/// Runs every method on every set; `progress` receives one line per sequence and method.
pub fn evaluate(
    sets: &[DataSet],
    methods: &mut [Method],
    matcher: &Matcher,
    options: &Options,
    mut progress: impl FnMut(&str),
) -> Result<Report> {
    let mut report = Report::new(options, methods, matcher);
    for set in sets {
        let mut pairs = Vec::new();
        let sequences: Vec<_> = set
            .sequences
            .iter()
            .filter(|s| options.sequences.is_empty() || options.sequences.contains(&s.name))
            .collect();
        for seq in &sequences {
            let prepared = prepare(set, seq, options)?;
            if let Some(dir) = &options.export_images {
                for (key, image) in prepared.keys.iter().zip(&prepared.images) {
                    dataset::write_png(image, &key.path(dir, "png"))?;
                }
            }
            for method in methods.iter_mut() {
                let start = std::time::Instant::now();
                let mut features = Vec::with_capacity(prepared.images.len());
                for (key, image) in prepared.keys.iter().zip(&prepared.images) {
                    let f = method.features(key, image)?;
                    if let (Some(dir), Source::Engine(_)) = (&options.save_features, &method.source) {
                        f.write_npz(&key.path(dir, "npz"))?;
                    }
                    features.push(f);
                }
                let extracted = start.elapsed().as_secs_f64();
                for (k, h, angle) in &prepared.pairs {
                    let metrics = evaluate_pair(&features[0], &features[*k], h, &options.protocol, matcher)?;
                    pairs.push(PairRecord {
                        method: method.name.clone(),
                        sequence: seq.name.clone(),
                        pair: format!("1-{}", prepared.keys[*k].image),
                        angle: *angle,
                        sizes: [[prepared.images[0].width, prepared.images[0].height], [prepared.images[*k].width, prepared.images[*k].height]],
                        metrics,
                    });
                }
                progress(&format!(
                    "{}/{}: {} ({} images, {:.1} s extraction, {:.1} s total)",
                    set.name,
                    seq.name,
                    method.name,
                    prepared.images.len(),
                    extracted,
                    start.elapsed().as_secs_f64()
                ));
            }
        }
        report.datasets.push(DataSetReport::new(set, sequences.len(), pairs, methods, &options.angles));
    }
    Ok(report)
}
