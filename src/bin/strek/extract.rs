//! `strek extract`: features of image files, one output file per image.

use crate::Common;
use std::path::PathBuf;
use std::process::ExitCode;
use strek::{backend, Config, Image};

/// Extract keypoints and descriptors from images; writes OUT/<stem>.npz (or .json) per image.
#[derive(clap::Args)]
pub struct Args {
    /// Image files.
    #[arg(required = true)]
    images: Vec<PathBuf>,
    /// Output folder.
    #[arg(short, long)]
    out: PathBuf,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Npz)]
    format: Format,
    /// Keep at most this many keypoints per image [default: from the weights' config].
    #[arg(long)]
    max_keypoints: Option<usize>,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum Format {
    Npz,
    Json,
}

pub fn run(common: &Common, args: &Args) -> strek::Result<ExitCode> {
    let weights = common.weights()?;
    let mut extractor =
        backend::open(common.device, &common.gpu_options(), &weights, Config { max_keypoints: args.max_keypoints })?;
    eprintln!("{}", extractor.describe());
    let mut failed = 0;
    for path in &args.images {
        let stem = path.file_stem().unwrap_or_default().to_string_lossy().to_string();
        let written = Image::open(path).and_then(|image| extractor.extract(&image)).and_then(|features| {
            let file = match args.format {
                Format::Npz => args.out.join(format!("{stem}.npz")),
                Format::Json => args.out.join(format!("{stem}.json")),
            };
            match args.format {
                Format::Npz => features.write_npz(&file)?,
                Format::Json => features.write_json(&file)?,
            }
            Ok((features.len(), file))
        });
        match written {
            Ok((n, file)) => println!("{}: {n} keypoints -> {}", path.display(), file.display()),
            Err(e) => {
                eprintln!("error: {e}");
                failed += 1;
            }
        }
    }
    if failed > 0 {
        eprintln!("{failed} of {} images failed", args.images.len());
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}
