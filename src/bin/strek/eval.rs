//! `strek eval`: the matching table (rep@3, mma, hacc, matches) on HPatches-format sets, with a rotation sweep.

use crate::Common;
use std::path::PathBuf;
use std::process::ExitCode;
use strek::eval::dataset::DataSet;
use strek::eval::metrics::Protocol;
use strek::eval::{self, Method, Options, Source};
use strek::{Config, Device};

/// Evaluate on HPatches-format sets: repeatability, matching accuracy, homography accuracy, rotation sweep.
#[derive(clap::Args)]
pub struct Args {
    /// Sets: folders of sequences (<seq>/1.<ext> .. K.<ext>, H_1_k), or one sequence folder.
    #[arg(required = true)]
    roots: Vec<PathBuf>,
    /// Keypoints per image (the best by score).
    #[arg(long = "k", default_value_t = 1000)]
    k: usize,
    /// Rotation sweep: image 1 of each sequence against itself rotated by these angles (degrees, counter-clockwise,
    /// comma-separated, e.g. 30,45,90,135,180); 0 is shown but left out of the mean.
    #[arg(long, value_delimiter = ',', allow_hyphen_values = true)]
    rotate: Vec<f64>,
    /// Add Gaussian noise of this standard deviation (0-1 range, e.g. 0.05) to the second image of every pair
    /// (images 2..K and the rotated copies; seeded by image name). Noisy images are named `<image>_noise<STD>`, also
    /// in --export-images and --features.
    #[arg(long, value_name = "STD", value_parser = parse_noise)]
    noise: Option<f64>,
    /// Shrink images so that their longer side is at most this many pixels (0: full size).
    #[arg(long, default_value_t = 1200)]
    max_side: u32,
    /// Evaluate features written by another program: [NAME=]DIR holding DIR/<set>/<sequence>/<image>.npz
    /// (repeatable). Without --engine, the engine itself is then not run.
    #[arg(long, value_name = "[NAME=]DIR")]
    features: Vec<String>,
    /// Also run the engine when --features is given.
    #[arg(long)]
    engine: bool,
    /// Name of the engine's column.
    #[arg(long, default_value = "strek")]
    name: String,
    /// Write every per-pair number here (JSON).
    #[arg(long)]
    json: Option<PathBuf>,
    /// Ratio test for the matcher (e.g. 0.9); 1 disables it, as the protocol does.
    #[arg(long, default_value_t = 1.0)]
    ratio: f32,
    /// Only these sequences (comma-separated names).
    #[arg(long, value_delimiter = ',')]
    sequences: Vec<String>,
    /// Where matching runs: auto (with the extraction's device), gpu or cpu.
    #[arg(long, default_value = "auto")]
    matcher: Device,
    /// Write the evaluated images (downscaled, rotated) as DIR/<set>/<sequence>/<image>.png, for other programs.
    #[arg(long)]
    export_images: Option<PathBuf>,
    /// Only write the images of --export-images; evaluate nothing (needs no weights).
    #[arg(long, requires = "export_images")]
    export_only: bool,
    /// Write the engine's features as DIR/<set>/<sequence>/<image>.npz (what --features reads).
    #[arg(long)]
    save_features: Option<PathBuf>,
    /// Match among all top-k keypoints, not only those visible in the other image (how the reference figures of
    /// shared/data/README were computed; lowers mma and hacc where images overlap partly).
    #[arg(long)]
    match_all_keypoints: bool,
    /// Seed of RANSAC's sample draws.
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

pub fn run(common: &Common, args: &Args) -> strek::Result<ExitCode> {
    if args.k == 0 {
        return Err(strek::Error::Invalid("--k must be at least 1".into()));
    }
    let sets = args.roots.iter().map(|r| DataSet::open(r)).collect::<strek::Result<Vec<_>>>()?;
    let session = common.session()?;
    let mut methods = Vec::new();
    let export_only = args.export_only;
    if (args.features.is_empty() && !export_only) || (args.engine && !export_only) {
        let weights = common.weights()?;
        let extractor = session.extractor(&weights, Config { max_keypoints: Some(args.k), ..Default::default() })?;
        eprintln!("engine: {}; weights: {}", extractor.describe(), weights.source);
        methods.push(Method { name: args.name.clone(), source: Source::Engine(extractor) });
    }
    for spec in &args.features {
        let (name, dir) = match spec.split_once('=') {
            Some((n, d)) if !n.is_empty() && !n.contains('/') => (n.to_string(), PathBuf::from(d)),
            _ => {
                let dir = PathBuf::from(spec);
                let name = dir.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_else(|| spec.clone());
                (name, dir)
            }
        };
        if !dir.is_dir() {
            return Err(strek::Error::Invalid(format!("--features {}: not a folder", dir.display())));
        }
        methods.push(Method { name, source: Source::Files(dir) });
    }
    let matcher = session.matcher(args.matcher)?;
    eprintln!("matching: {}", matcher.describe());
    let options = Options {
        protocol: Protocol {
            top_k: args.k,
            ratio: args.ratio,
            ransac: strek::geometry::homography::Ransac { seed: args.seed, ..strek::geometry::homography::Ransac::homography() },
            match_all: args.match_all_keypoints,
        },
        max_side: (args.max_side > 0).then_some(args.max_side),
        angles: args.rotate.clone(),
        sequences: args.sequences.clone(),
        export_images: args.export_images.clone(),
        save_features: args.save_features.clone(),
        noise: args.noise,
    };
    if export_only {
        eval::evaluate(&sets, &mut [], &matcher, &options, |_| {})?;
        eprintln!("images written under {}", args.export_images.as_ref().unwrap().display());
        return Ok(ExitCode::SUCCESS);
    }
    let report = eval::evaluate(&sets, &mut methods, &matcher, &options, |line| eprintln!("{line}"))?;
    print!("{}", report.tables());
    if let Some(path) = &args.json {
        report.write_json(path)?;
        eprintln!("per-pair numbers: {}", path.display());
    }
    Ok(ExitCode::SUCCESS)
}

fn parse_noise(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(std) if std.is_finite() && std >= 0.0 && std <= 1.0 => Ok(std),
        _ => Err(format!("{text:?} is not a standard deviation between 0 and 1")),
    }
}
