//! `strek colmap`: a COLMAP database from a folder of images (strek features, matches, verified geometry), ready for
//! COLMAP's or pycolmap's mapper.

use crate::Common;
use std::path::PathBuf;
use std::process::ExitCode;
use strek::colmap::{self, Camera, Options, Pairs};
use strek::geometry::fundamental;
use strek::Device;

/// Write a COLMAP database (cameras, images, keypoints, descriptors, matches, verified two-view geometries) for the
/// images of a folder; then run COLMAP's mapper on it, e.g.
/// `colmap mapper --database_path database.db --image_path DIR --output_path sparse`.
#[derive(clap::Args)]
pub struct Args {
    /// Folder of images; their paths relative to it are their names in the database (give COLMAP the same folder
    /// as its image path).
    dir: PathBuf,
    /// The database to write (must not exist unless --overwrite).
    #[arg(short, long, default_value = "database.db")]
    out: PathBuf,
    /// Which pairs to match: exhaustive, or sequential:N (each image with the next N by name; for video frames).
    #[arg(long, default_value = "exhaustive")]
    pairs: Pairs,
    /// Camera model: auto (COLMAP's guess, SIMPLE_RADIAL with focal length 1.2 x the longer side, refined by the
    /// mapper) or pinhole:fx,fy,cx,cy (known intrinsics, in strek's and OpenCV's pixel convention with the centre
    /// of pixel (0,0) at (0,0); 0.5 is added to cx and cy for COLMAP). One camera per image size.
    #[arg(long, default_value = "auto")]
    camera: Camera,
    /// Keypoints per image [default: from the weights' config].
    #[arg(long)]
    max_keypoints: Option<usize>,
    /// Ratio test of the mutual-nearest-neighbour matcher (e.g. 0.9); 1 disables it.
    #[arg(long, default_value_t = 1.0)]
    ratio: f32,
    /// Verification: largest Sampson distance (px) of an inlier of the fundamental-matrix RANSAC.
    #[arg(long, default_value_t = 2.0)]
    max_error: f64,
    /// Verification: pairs with fewer inliers are stored as failed (COLMAP's default is 15).
    #[arg(long, default_value_t = 15)]
    min_inliers: usize,
    /// Verification: seed of RANSAC's sample draws (pair k of the pair list draws from seed + k).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Descend into subfolders.
    #[arg(short, long)]
    recursive: bool,
    /// Replace the database if it exists.
    #[arg(long)]
    overwrite: bool,
    /// Where matching runs: auto (with the extraction's device), gpu or cpu.
    #[arg(long, default_value = "auto")]
    matcher: Device,
    /// Images per extraction call.
    #[arg(long, default_value_t = 8)]
    batch: usize,
}

pub fn run(common: &Common, args: &Args) -> strek::Result<ExitCode> {
    if !args.dir.is_dir() {
        return Err(strek::Error::Invalid(format!("{} is not a folder of images", args.dir.display())));
    }
    let inputs = strek::image_io::list_images(&args.dir, args.recursive)?;
    if inputs.is_empty() {
        return Err(strek::Error::Invalid(format!("no images ({}) in {}", strek::image_io::IMAGE_EXTENSIONS.join(", "), args.dir.display())));
    }
    if args.out.exists() {
        if !args.overwrite {
            return Err(strek::Error::Invalid(format!("{} exists; pass --overwrite to replace it", args.out.display())));
        }
        std::fs::remove_file(&args.out).map_err(|e| strek::Error::io(&args.out, e))?;
    }
    let (mut extractor, matcher) = common.extractor_and_matcher(args.matcher, args.max_keypoints)?;
    let options = Options {
        pairs: args.pairs,
        camera: args.camera,
        ratio: args.ratio,
        ransac: fundamental::Ransac { threshold: args.max_error, seed: args.seed, ..fundamental::Ransac::epipolar() },
        min_inliers: args.min_inliers,
        batch: args.batch,
        decode: common.decode_limits(),
    };
    let s = colmap::build(&inputs, extractor.as_mut(), &matcher, &options, &args.out, &mut |line| eprintln!("{line}"))?;
    println!("images: {} written, {} skipped; cameras: {}", s.images, s.skipped.len(), s.cameras);
    println!("keypoints: {} ({:.0} per image)", s.keypoints, s.keypoints as f64 / s.images.max(1) as f64);
    println!(
        "pairs: {} matched ({} matches), {} verified ({} calibrated), {} inlier matches",
        s.pairs, s.matches, s.verified_pairs, s.calibrated_pairs, s.inlier_matches
    );
    println!(
        "time: extraction {:.2} s ({:.2} images/s), matching {:.2} s, verification {:.2} s",
        s.extract_seconds,
        s.images as f64 / s.extract_seconds.max(1e-9),
        s.match_seconds,
        s.verify_seconds
    );
    println!("database: {}", args.out.display());
    Ok(if s.skipped.is_empty() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}
