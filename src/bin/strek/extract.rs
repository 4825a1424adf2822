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
use strek::{Config, Extract, Features, Image};

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
    /// Only this share of the images, I/N with 0 <= I < N: the images at positions I, I + N, I + 2N ... of the
    /// sorted input list, so that N processes (a Slurm array) split one folder between them.
    #[arg(long, value_parser = parse_shard, value_name = "I/N")]
    shard: Option<(usize, usize)>,
}

fn parse_shard(s: &str) -> Result<(usize, usize), String> {
    let parsed = s.split_once('/').and_then(|(i, n)| Some((i.trim().parse().ok()?, n.trim().parse().ok()?)));
    match parsed {
        Some((i, n)) if i < n => Ok((i, n)),
        _ => Err(format!("{s:?} is not a shard I/N with 0 <= I < N (for example 0/4)")),
    }
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
    if let Some((shard, shards)) = args.shard {
        jobs = jobs.into_iter().skip(shard).step_by(shards).collect();
    }
    let total = jobs.len();
    if !args.overwrite {
        jobs.retain(|(_, out)| !out.exists());
    }
    let skipped = total - jobs.len();
    let weights = common.weights()?;
    let mut extractor = common.session()?.extractor(&weights, Config { max_keypoints: args.max_keypoints, ..Default::default() })?;
    eprintln!("{}", extractor.describe());
    let mut tally = Tally { bar: progress_bar(jobs.len()), done: 0, failed: 0 };
    let batch = args.batch.max(1);
    std::thread::scope(|scope| {
        let decoded = spawn_decoders(scope, &jobs, decode_threads(args), 2 * batch, common.decode_limits());
        let mut pending: Vec<(usize, Image)> = Vec::new();
        let mut flush = |pending: &mut Vec<(usize, Image)>, tally: &mut Tally| {
            for (i, result) in extract_pending(extractor.as_mut(), &jobs, pending, &tally.bar) {
                let (input, output) = &jobs[i];
                tally.record(match result {
                    Ok(features) => write(&features, args.format, output).map_err(|e| e.to_string()),
                    Err(e) => Err(format!("{}: {e}", input.display())),
                });
            }
        };
        for (i, image) in decoded {
            match image {
                Ok(image) => pending.push((i, image)),
                Err(e) => tally.record(Err(e.to_string())),
            }
            if pending.len() >= batch {
                flush(&mut pending, &mut tally);
            }
        }
        flush(&mut pending, &mut tally);
    });
    tally.bar.finish_and_clear();
    let (done, failed) = (tally.done, tally.failed);
    eprintln!("{done} written, {skipped} skipped (output exists; --overwrite replaces), {failed} failed, to {}", args.out.display());
    Ok(if failed > 0 { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}

/// Outputs written and inputs failed, on a progress bar.
struct Tally {
    bar: ProgressBar,
    done: usize,
    failed: usize,
}

impl Tally {
    fn record(&mut self, result: Result<(), String>) {
        match result {
            Ok(()) => self.done += 1,
            Err(e) => {
                self.bar.suspend(|| eprintln!("error: {e}"));
                self.failed += 1;
            }
        }
        self.bar.inc(1);
    }
}

fn progress_bar(len: usize) -> ProgressBar {
    let bar = ProgressBar::new(len as u64);
    bar.set_style(ProgressStyle::with_template("{bar:40} {pos}/{len} images, {per_sec}, eta {eta} {msg}").expect("valid template"));
    bar
}

/// Decoding threads: the flag, else all cores but the one that extracts.
fn decode_threads(args: &Args) -> usize {
    args.decode_threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get().saturating_sub(1))).max(1)
}

/// Threads that decode the jobs' images in any order, each sent with its job's index.
fn spawn_decoders<'scope>(
    scope: &'scope std::thread::Scope<'scope, '_>,
    jobs: &'scope [(PathBuf, PathBuf)],
    threads: usize,
    queue: usize,
    limits: strek::image_io::DecodeLimits,
) -> mpsc::Receiver<(usize, strek::Result<Image>)> {
    let (sender, receiver) = mpsc::sync_channel(queue);
    let next = std::sync::Arc::new(AtomicUsize::new(0));
    for _ in 0..threads {
        let (sender, next) = (sender.clone(), next.clone());
        scope.spawn(move || loop {
            let i = next.fetch_add(1, Ordering::Relaxed);
            if i >= jobs.len() || sender.send((i, Image::open_with(&jobs[i].0, &limits))).is_err() {
                break;
            }
        });
    }
    receiver
}

/// Extracts the pending images as one batch, noting those shrunk to the adapter's limits; a failed batch is
/// retried image by image, so that one bad image fails alone.
fn extract_pending(
    extractor: &mut dyn Extract,
    jobs: &[(PathBuf, PathBuf)],
    pending: &mut Vec<(usize, Image)>,
    bar: &ProgressBar,
) -> Vec<(usize, strek::Result<Features>)> {
    let (indices, images): (Vec<usize>, Vec<Image>) = pending.drain(..).unzip();
    for (&i, image) in indices.iter().zip(&images) {
        let size = (image.width, image.height);
        if let Some(fitted) = extractor.working_size(size).ok().filter(|&f| f != size) {
            let path = jobs[i].0.display();
            let note = format!("note: {path} ({}x{}) is over the device's memory limits (GPU buffers, or the CPU path's --max-memory): extracted at {}x{}, keypoints in the original pixels", size.0, size.1, fitted.0, fitted.1);
            bar.suspend(|| eprintln!("{note}"));
        }
    }
    if images.is_empty() {
        return Vec::new();
    }
    let results: Vec<strek::Result<Features>> = match extractor.extract_batch(&images) {
        Ok(features) => features.into_iter().map(Ok).collect(),
        Err(e) if images.len() == 1 => vec![Err(e)],
        Err(_) => images.iter().map(|image| extractor.extract(image)).collect(),
    };
    indices.into_iter().zip(results).collect()
}

fn write(features: &Features, format: Format, path: &Path) -> strek::Result<()> {
    match format {
        Format::Npz => features.write_npz(path),
        Format::Json => features.write_json(path),
    }
}
