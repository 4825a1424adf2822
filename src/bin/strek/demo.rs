//! `strek demo`: the built-in generated scene and its rotated copy.

use crate::Common;
use std::path::PathBuf;
use std::process::ExitCode;
use strek::{Config, ModelConfig, Weights};

/// Run on a built-in generated scene and its rotated copy: match, print repeatability, write a PNG.
#[derive(clap::Args)]
pub struct Args {
    /// Output picture.
    #[arg(short, long, default_value = "strek-demo.png")]
    out: PathBuf,
    /// Rotation of the copy, degrees counter-clockwise (multiples of 90 are exact pixel permutations; other
    /// angles are resampled onto a larger canvas).
    #[arg(long, default_value_t = 30.0)]
    angle: f64,
    /// Scene width.
    #[arg(long, default_value_t = 400)]
    width: u32,
    /// Scene height.
    #[arg(long, default_value_t = 300)]
    height: u32,
}

pub fn run(common: &Common, args: &Args) -> strek::Result<ExitCode> {
    let weights = common.adjusted(match common.weights_path() {
        Some(p) => Weights::load(&p)?,
        None => {
            eprintln!("no weights found: the demo runs a random equivariant model (structure only, not trained)");
            Weights::random(&ModelConfig::default_s_trek(), 1)
        }
    })?;
    let mut extractor = common.session()?.extractor(&weights, Config::default())?;
    eprintln!("{}", extractor.describe());
    eprintln!("weights: {}", weights.source);
    let start = std::time::Instant::now();
    let report = strek::demo::run(|images| extractor.extract_batch(images), args.width, args.height, args.angle)?;
    let elapsed = start.elapsed();
    report
        .picture
        .save(&args.out)
        .map_err(|e| strek::Error::Invalid(format!("writing {}: {e}", args.out.display())))?;
    println!(
        "scene {}x{} and its copy rotated by {} degrees ({:.2} s for both)",
        args.width,
        args.height,
        args.angle,
        elapsed.as_secs_f64()
    );
    println!("keypoints: {} and {}", report.keypoints[0], report.keypoints[1]);
    println!("repeatability@3px: {:.3}", report.repeatability);
    println!("mutual nearest-neighbour matches: {} ({} correct within 3 px)", report.matches, report.correct_matches);
    println!("picture: {}", args.out.display());
    Ok(ExitCode::SUCCESS)
}
