//! `strek track`: features frame by frame, consecutive frames matched and verified, tracks written as CSV, speed
//! reported.

use crate::Common;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;
use strek::image_io::{is_image, list_images};
use strek::geometry::fundamental::Ransac;
use strek::track::{Options, Step, TrackStats, Tracker};
use strek::{Device, Features, Image};

/// Track keypoints through a video's frames: extract frame by frame, match each frame to the previous one, verify
/// the matches (fundamental-matrix RANSAC), and write one CSV row per keypoint with its track id.
#[derive(clap::Args)]
pub struct Args {
    /// A folder of frames (sorted by name) or frame files in order. A video file must be split into frames first,
    /// e.g. `ffmpeg -i video.mp4 frames/%06d.png`.
    #[arg(required = true)]
    inputs: Vec<PathBuf>,
    /// Output CSV: frame,name,track,x,y,orientation,scale,score (one row per keypoint; a track id shared by
    /// keypoints of consecutive frames is one tracked point).
    #[arg(short, long, default_value = "tracks.csv")]
    out: PathBuf,
    /// Keypoints per frame [default: from the weights' config].
    #[arg(long)]
    max_keypoints: Option<usize>,
    /// Ratio test of the mutual-nearest-neighbour matcher (e.g. 0.9); 1 disables it.
    #[arg(long, default_value_t = 1.0)]
    ratio: f32,
    /// Keep every mutual match (no fundamental-matrix RANSAC).
    #[arg(long)]
    no_verify: bool,
    /// Verification: largest Sampson distance (px) of an inlier.
    #[arg(long, default_value_t = 2.0)]
    max_error: f64,
    /// A frame pair with fewer verified matches continues no track.
    #[arg(long, default_value_t = 15)]
    min_inliers: usize,
    /// Where matching runs: auto (with the extraction's device), gpu or cpu.
    #[arg(long, default_value = "auto")]
    matcher: Device,
}

const VIDEO_EXTENSIONS: &[&str] = &["mp4", "mov", "avi", "mkv", "webm", "m4v", "mpg", "mpeg"];

/// The frames, in order: a folder's images by name, files as given.
fn frames(inputs: &[PathBuf]) -> strek::Result<Vec<PathBuf>> {
    let mut frames = Vec::new();
    for input in inputs {
        let extension = input.extension().and_then(|e| e.to_str()).unwrap_or("").to_ascii_lowercase();
        if VIDEO_EXTENSIONS.contains(&extension.as_str()) {
            return Err(strek::Error::Invalid(format!(
                "{}: video files are not decoded here; split it into frames first, e.g. `ffmpeg -i {} frames/%06d.png`, and pass the folder",
                input.display(),
                input.display()
            )));
        }
        if input.is_dir() {
            frames.extend(list_images(input, false)?.into_iter().map(|i| i.path));
        } else if is_image(input) || input.exists() {
            frames.push(input.clone());
        } else {
            return Err(strek::Error::Invalid(format!("{}: no such file or folder", input.display())));
        }
    }
    if frames.is_empty() {
        return Err(strek::Error::Invalid("no frames found".into()));
    }
    Ok(frames)
}

pub fn run(common: &Common, args: &Args) -> strek::Result<ExitCode> {
    let paths = frames(&args.inputs)?;
    let (mut extractor, matcher) = common.extractor_and_matcher(args.matcher, args.max_keypoints)?;
    let options = Options {
        ratio: args.ratio,
        verify: !args.no_verify,
        ransac: Ransac { threshold: args.max_error, ..Ransac::epipolar() },
        min_inliers: args.min_inliers,
    };
    let mut tracker = Tracker::new(matcher, options);
    let file = std::fs::File::create(&args.out).map_err(|e| strek::Error::io(&args.out, e))?;
    let mut out = std::io::BufWriter::new(file);
    let write_error = |e: std::io::Error| strek::Error::io(&args.out, e);
    writeln!(out, "frame,name,track,x,y,orientation,scale,score").map_err(write_error)?;

    let mut run = Run::default();
    let start = Instant::now();
    std::thread::scope(|scope| -> strek::Result<()> {
        for (i, image) in spawn_decoder(scope, &paths, common.decode_limits()) {
            let image = match image {
                Ok(image) => image,
                Err(e) => {
                    eprintln!("skipped: {e}");
                    run.skipped += 1;
                    continue;
                }
            };
            let t = Instant::now();
            let features = extractor.extract(&image)?;
            let extracted = t.elapsed().as_secs_f64();
            let t = Instant::now();
            let step = tracker.push(&features)?;
            run.add(&step, extracted, t.elapsed().as_secs_f64());
            write_frame(&mut out, i, &csv_field(&paths[i]), &features, &step).map_err(write_error)?;
        }
        Ok(())
    })?;
    out.flush().map_err(write_error)?;
    run.print(start.elapsed().as_secs_f64());
    println!("device: {} (matching: {})", extractor.describe(), tracker.matcher().describe());
    let stats = &run.stats;
    let (count, mean, long, longest) = (stats.count(2), stats.mean_length(2), stats.count(5), stats.longest());
    println!("tracks: {count} over 2+ frames (mean length {mean:.2}), {long} over 5+, longest {longest} frames");
    println!("tracks file: {}", args.out.display());
    Ok(if run.skipped > 0 { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}

/// Frames are decoded one ahead on another thread while the current one is extracted and matched.
fn spawn_decoder<'scope>(
    scope: &'scope std::thread::Scope<'scope, '_>,
    paths: &'scope [PathBuf],
    limits: strek::image_io::DecodeLimits,
) -> std::sync::mpsc::Receiver<(usize, strek::Result<Image>)> {
    let (sender, receiver) = std::sync::mpsc::sync_channel(2);
    scope.spawn(move || {
        for (i, path) in paths.iter().enumerate() {
            if sender.send((i, Image::open_with(path, &limits))).is_err() {
                break;
            }
        }
    });
    receiver
}

/// One CSV row per keypoint of a frame, with its track.
fn write_frame(out: &mut impl Write, frame: usize, name: &str, features: &Features, step: &Step) -> std::io::Result<()> {
    for (k, id) in step.track_ids.iter().enumerate() {
        let [x, y] = features.keypoints[k];
        let (orientation, scale, score) = (features.orientations[k], features.scales[k], features.scores[k]);
        writeln!(out, "{frame},{name},{id},{x:.2},{y:.2},{orientation:.4},{scale:.3},{score:.5}")?;
    }
    Ok(())
}

/// Counts and times of a tracking run.
#[derive(Default)]
struct Run {
    frames: usize,
    skipped: usize,
    pairs: usize,
    matches: usize,
    continued: usize,
    extract_seconds: f64,
    match_seconds: f64,
    stats: TrackStats,
}

impl Run {
    fn add(&mut self, step: &Step, extract_seconds: f64, match_seconds: f64) {
        self.extract_seconds += extract_seconds;
        if self.frames > 0 {
            self.match_seconds += match_seconds;
            self.pairs += 1;
            self.matches += step.matches;
            self.continued += step.continued;
        }
        self.frames += 1;
        self.stats.add(step);
    }

    fn print(&self, wall: f64) {
        let per_pair = |v: usize| v as f64 / self.pairs.max(1) as f64;
        let frames = self.frames.max(1) as f64;
        println!("frames: {} tracked, {} skipped", self.frames, self.skipped);
        println!(
            "speed: {:.2} frames/s overall ({:.1} ms/frame: extraction {:.1} ms, matching and verification {:.1} ms)",
            self.frames as f64 / wall.max(1e-9),
            1e3 * wall / frames,
            1e3 * self.extract_seconds / frames,
            1e3 * self.match_seconds / self.pairs.max(1) as f64
        );
        println!("per frame pair: {:.0} mutual matches, {:.0} verified (tracks continued)", per_pair(self.matches), per_pair(self.continued));
    }
}

/// A file name for the CSV: quoted when it holds a comma or a quote.
fn csv_field(path: &Path) -> String {
    let name = path.file_name().unwrap_or(path.as_os_str()).to_string_lossy().to_string();
    if name.contains([',', '"', '\n']) {
        format!("\"{}\"", name.replace('"', "\"\""))
    } else {
        name
    }
}
