//! `strek extract`: features of image files and folders, one output file per image. Images are decoded on CPU
//! threads while the GPU extracts the previous batch; outputs are written atomically; existing outputs are skipped
//! unless `--overwrite`; a bad file is reported and the run goes on.

use crate::Common;
use indicatif::{ProgressBar, ProgressStyle};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use strek::image_io::list_images;
use strek::{Config, Features, Image};

/// Extract keypoints and descriptors from images and folders; writes OUT/<relative path>.npz (or .json) per image.
#[derive(clap::Args)]
pub struct Args {
    /// Image files or folders (the images directly inside; all below with --recursive).
    #[arg(required = true)]
    inputs: Vec<PathBuf>,
    /// Output folder; for a folder input the relative paths below it are kept.
    #[arg(short, long)]
    out: PathBuf,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Npz)]
    format: Format,
    /// Keep at most this many keypoints per image [default: from the weights' config].
    #[arg(long)]
    max_keypoints: Option<usize>,
    /// Descend into subfolders of folder inputs.
    #[arg(short, long)]
    recursive: bool,
    /// Replace outputs that already exist (by default they are skipped).
    #[arg(long)]
    overwrite: bool,
    /// Images per GPU submission.
    #[arg(long, default_value_t = 8)]
    batch: usize,
    /// Threads decoding images [default: all cores but one].
    #[arg(long)]
    decode_threads: Option<usize>,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum Format {
    Npz,
    Json,
}

/// (input image, output file) pairs.
fn collect_jobs(args: &Args) -> strek::Result<Vec<(PathBuf, PathBuf)>> {
    let ext = match args.format {
        Format::Npz => "npz",
        Format::Json => "json",
    };
    let mut jobs = Vec::new();
    for input in &args.inputs {
        if input.is_dir() {
            for file in list_images(input, args.recursive)? {
                jobs.push((file.path, args.out.join(Path::new(&file.name).with_extension(ext))));
            }
        } else {
            let stem = input.file_stem().unwrap_or_default().to_string_lossy().to_string();
            jobs.push((input.clone(), args.out.join(format!("{stem}.{ext}"))));
        }
    }
    Ok(jobs)
}

pub fn run(common: &Common, args: &Args) -> strek::Result<ExitCode> {
    let mut jobs = collect_jobs(args)?;
    let total = jobs.len();
    if !args.overwrite {
        jobs.retain(|(_, out)| !out.exists());
    }
    let skipped = total - jobs.len();
    let weights = common.weights()?;
    let mut extractor = common.session()?.extractor(&weights, Config { max_keypoints: args.max_keypoints, ..Default::default() })?;
    eprintln!("{}", extractor.describe());
    let bar = ProgressBar::new(jobs.len() as u64);
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} images, {per_sec}, eta {eta} {msg}")
            .expect("valid template"),
    );
    let threads = args
        .decode_threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get().saturating_sub(1)))
        .max(1);
    let batch = args.batch.max(1);
    let next = AtomicUsize::new(0);
    let limits = common.decode_limits();
    let (sender, receiver) = mpsc::sync_channel::<(usize, strek::Result<Image>)>(2 * batch);
    let (mut done, mut failed, mut unreadable) = (0usize, 0usize, 0usize);
    std::thread::scope(|scope| {
        for _ in 0..threads {
            let sender = sender.clone();
            let (next, jobs) = (&next, &jobs);
            scope.spawn(move || loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= jobs.len() || sender.send((i, Image::open_with(&jobs[i].0, &limits))).is_err() {
                    break;
                }
            });
        }
        drop(sender);
        let mut pending: Vec<(usize, Image)> = Vec::new();
        let mut flush = |pending: &mut Vec<(usize, Image)>| {
            if pending.is_empty() {
                return;
            }
            let (indices, images): (Vec<usize>, Vec<Image>) = pending.drain(..).unzip();
            for (&i, image) in indices.iter().zip(&images) {
                let size = (image.width, image.height);
                if let Some(fitted) = extractor.working_size(size).ok().filter(|&f| f != size) {
                    let path = jobs[i].0.display();
                    let note = format!("note: {path} ({}x{}) is over the adapter's buffer limits: extracted at {}x{}, keypoints in the original pixels", size.0, size.1, fitted.0, fitted.1);
                    bar.suspend(|| eprintln!("{note}"));
                }
            }
            // a failed batch is retried image by image, so that one bad image fails alone
            let results: Vec<strek::Result<Features>> = match extractor.extract_batch(&images) {
                Ok(features) => features.into_iter().map(Ok).collect(),
                Err(e) if images.len() == 1 => vec![Err(e)],
                Err(_) => images.iter().map(|image| extractor.extract(image)).collect(),
            };
            for (i, result) in indices.into_iter().zip(results) {
                let (input, output) = &jobs[i];
                let written = match result {
                    Ok(features) => match args.format {
                        Format::Npz => features.write_npz(output),
                        Format::Json => features.write_json(output),
                    }
                    .map_err(|e| e.to_string()),
                    Err(e) => Err(format!("{}: {e}", input.display())),
                };
                match written {
                    Ok(()) => done += 1,
                    Err(e) => {
                        bar.suspend(|| eprintln!("error: {e}"));
                        failed += 1;
                    }
                }
                bar.inc(1);
            }
        };
        for (i, decoded) in receiver {
            match decoded {
                Ok(image) => pending.push((i, image)),
                Err(e) => {
                    bar.suspend(|| eprintln!("error: {e}"));
                    unreadable += 1;
                    bar.inc(1);
                }
            }
            if pending.len() >= batch {
                flush(&mut pending);
            }
        }
        flush(&mut pending);
    });
    bar.finish_and_clear();
    let failed = failed + unreadable;
    eprintln!("{done} written, {skipped} skipped (output exists; --overwrite replaces), {failed} failed, to {}", args.out.display());
    Ok(if failed > 0 { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}
