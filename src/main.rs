//! The `strek` command: a thin shell over the library.

use clap::{Parser, Subcommand, ValueEnum};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use strek::{Config, Extractor, Gpu, GpuOptions, Image, ModelConfig, Weights};

#[derive(Parser)]
#[command(name = "strek", version, about = "Rotation-equivariant S-TREK local features on any GPU")]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// GPU backend: vulkan, metal, dx12, gl or auto (also STREK_BACKEND).
    #[arg(long, global = true)]
    backend: Option<String>,
    /// Use the adapter whose name contains this text (also STREK_ADAPTER).
    #[arg(long, global = true)]
    adapter: Option<String>,
    /// Prefer a software adapter (Mesa lavapipe/llvmpipe) over hardware ones.
    #[arg(long, global = true)]
    prefer_software: bool,
    /// Weights file [default: weights/strek.safetensors of the repository].
    #[arg(long, global = true)]
    weights: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Command {
    /// Extract keypoints and descriptors from images; writes OUT/<stem>.npz (or .json) per image.
    Extract {
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
    },
    /// Show the adapters, the chosen one's backend, limits and features, and the model's cost.
    Info,
    /// Run on a built-in generated scene and its rotated copy: match, print repeatability, write a PNG.
    Demo {
        /// Output picture.
        #[arg(short, long, default_value = "strek-demo.png")]
        out: PathBuf,
        /// Rotation of the copy, degrees counter-clockwise.
        #[arg(long, default_value_t = 90.0)]
        angle: f64,
        /// Scene width and height.
        #[arg(long, default_value_t = 256)]
        width: u32,
        #[arg(long, default_value_t = 192)]
        height: u32,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    Npz,
    Json,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn gpu_options(cli: &Cli) -> GpuOptions {
    GpuOptions { backend: cli.backend.clone(), adapter: cli.adapter.clone(), prefer_software: cli.prefer_software }
}

/// The weights file: the flag, else weights/ of the working directory, else of the source tree this was built from.
fn weights_path(cli: &Cli) -> Option<PathBuf> {
    if let Some(p) = &cli.weights {
        return Some(p.clone());
    }
    [PathBuf::from(strek::DEFAULT_WEIGHTS), Path::new(env!("CARGO_MANIFEST_DIR")).join(strek::DEFAULT_WEIGHTS)]
        .into_iter()
        .find(|p| p.exists())
}

fn run(cli: Cli) -> strek::Result<ExitCode> {
    match &cli.command {
        Command::Info => info(&cli),
        Command::Extract { images, out, format, max_keypoints } => {
            let path = weights_path(&cli).ok_or_else(|| strek::Error::Weights {
                path: strek::DEFAULT_WEIGHTS.into(),
                reason: "not found; pass --weights PATH".into(),
            })?;
            let weights = Weights::load(&path)?;
            let gpu = Gpu::new(&gpu_options(&cli))?;
            eprintln!("adapter: {}", gpu.adapter);
            let mut extractor = Extractor::new(&gpu, &weights, Config { max_keypoints: *max_keypoints })?;
            let mut failed = 0;
            for path in images {
                let result = Image::open(path).and_then(|image| extractor.extract(&image));
                match result {
                    Ok(features) => {
                        let stem = path.file_stem().unwrap_or_default().to_string_lossy().to_string();
                        let (file, written) = match format {
                            Format::Npz => (out.join(format!("{stem}.npz")), features.write_npz(&out.join(format!("{stem}.npz")))),
                            Format::Json => (out.join(format!("{stem}.json")), features.write_json(&out.join(format!("{stem}.json")))),
                        };
                        written?;
                        println!("{}: {} keypoints -> {}", path.display(), features.len(), file.display());
                    }
                    Err(e) => {
                        eprintln!("error: {e}");
                        failed += 1;
                    }
                }
            }
            if failed > 0 {
                eprintln!("{failed} of {} images failed", images.len());
                return Ok(ExitCode::FAILURE);
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Demo { out, angle, width, height } => {
            let weights = match weights_path(&cli) {
                Some(p) => Weights::load(&p)?,
                None => {
                    eprintln!("no weights found: the demo runs a random equivariant model (structure only, not trained)");
                    Weights::random(&ModelConfig::default_s_trek(), 1)
                }
            };
            let gpu = Gpu::new(&gpu_options(&cli))?;
            eprintln!("adapter: {}", gpu.adapter);
            eprintln!("weights: {}", weights.source);
            let mut extractor = Extractor::new(&gpu, &weights, Config::default())?;
            let start = std::time::Instant::now();
            let report = strek::demo::run(|images| extractor.extract_batch(images), *width, *height, *angle)?;
            let elapsed = start.elapsed();
            report.picture.save(out).map_err(|e| strek::Error::Invalid(format!("writing {}: {e}", out.display())))?;
            println!("scene {width}x{height} and its copy rotated by {angle} degrees ({:.2} s for both)", elapsed.as_secs_f64());
            println!("keypoints: {} and {}", report.keypoints[0], report.keypoints[1]);
            println!("repeatability@3px: {:.3}", report.repeatability);
            println!("mutual nearest-neighbour matches: {} ({} correct within 3 px)", report.matches, report.correct_matches);
            println!("picture: {}", out.display());
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn info(cli: &Cli) -> strek::Result<ExitCode> {
    let options = gpu_options(cli);
    for a in Gpu::adapters(&options)? {
        println!("adapter: {a}");
    }
    let gpu = Gpu::new(&options)?;
    println!("chosen: {}", gpu.adapter);
    let l = &gpu.limits;
    println!(
        "limits: storage binding {} MiB, buffer {} MiB, workgroup storage {} KiB, invocations {}",
        l.max_storage_buffer_binding_size >> 20,
        l.max_buffer_size >> 20,
        l.max_compute_workgroup_storage_size >> 10,
        l.max_compute_invocations_per_workgroup
    );
    println!("optional features: {:?}", gpu.features);
    let config = match weights_path(cli) {
        Some(p) => {
            let w = Weights::load(&p)?;
            println!("weights: {}", w.source);
            w.config
        }
        None => ModelConfig::default_s_trek(),
    };
    println!(
        "model: C{} detector {} MAC/px per level, receptive field {}; descriptor {:.0} MAC/px, {}-D",
        config.group_order,
        config.detector_macs_per_pixel(),
        config.receptive_field(),
        config.descriptor_macs_per_pixel(),
        config.descriptor.dim
    );
    Ok(ExitCode::SUCCESS)
}
