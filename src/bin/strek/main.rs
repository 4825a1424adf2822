//! The `strek` command: a thin shell over the library. One module per subcommand.

mod bench;
mod colmap;
mod demo;
mod eval;
mod extract;
mod info;
mod match_cmd;
mod track;

use clap::{Parser, Subcommand};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use strek::{Device, GpuOptions, Weights};

#[derive(Parser)]
#[command(name = "strek", version, about = "Rotation-equivariant S-TREK local features on any GPU")]
struct Cli {
    #[command(subcommand)]
    command: Command,
    #[command(flatten)]
    common: Common,
}

/// Flags every subcommand takes.
#[derive(clap::Args, Clone)]
pub struct Common {
    /// Where to run: auto (a hardware GPU when present, else the CPU), gpu (any adapter, software ones too) or cpu.
    #[arg(long, global = true, default_value = "auto")]
    device: Device,
    /// GPU backend: vulkan, metal, dx12, gl or auto (also STREK_BACKEND).
    #[arg(long, global = true)]
    backend: Option<String>,
    /// Use the adapter whose name contains this text (also STREK_ADAPTER).
    #[arg(long, global = true)]
    adapter: Option<String>,
    /// Prefer a software adapter (Mesa lavapipe/llvmpipe) over hardware ones.
    #[arg(long, global = true)]
    prefer_software: bool,
    /// Cap every GPU buffer at this many MiB (below the adapter's own limit); larger images are shrunk to fit.
    #[arg(long, global = true, value_name = "MIB")]
    max_buffer_mib: Option<u64>,
    /// CPU path: the most memory (MiB) one image may take; larger images are shrunk to fit [default: the machine's
    /// available memory and address-space limit, less a tenth].
    #[arg(long, global = true, value_name = "MIB")]
    max_memory: Option<u64>,
    /// GPU: store activations and filters in f16 (arithmetic stays f32; scores, orientations and descriptors
    /// f32). Needs an adapter with SHADER_F16.
    #[arg(long, global = true)]
    f16: bool,
    /// Weights file [default: weights/strek.safetensors of the working directory or of the source tree].
    #[arg(long, global = true)]
    weights: Option<PathBuf>,
    /// Refuse image files whose header claims more pixels than this (decompression bombs are named and skipped).
    #[arg(long, global = true, value_name = "MP", default_value_t = strek::image_io::DecodeLimits::default().max_pixels as f64 / 1e6)]
    max_megapixels: f64,
    /// Pyramid scales instead of the weights' own (comma-separated, the first 1, none above 2): levels above 1
    /// upsample the image and localise keypoints more finely at more detector work, e.g.
    /// 1,2,1.414,0.707,0.5,0.354,0.25 (BENCHMARKS.md, "Upsampled pyramid levels").
    #[arg(long, global = true, value_delimiter = ',', value_name = "LIST")]
    scales: Option<Vec<f32>>,
}

impl Common {
    pub fn gpu_options(&self) -> GpuOptions {
        GpuOptions {
            backend: self.backend.clone(),
            adapter: self.adapter.clone(),
            prefer_software: self.prefer_software,
            max_buffer_bytes: self.max_buffer_mib.map(|m| m << 20),
        }
    }

    /// The session every subcommand runs in: extraction and matching on one device.
    pub fn session(&self) -> strek::Result<strek::Session> {
        let precision = if self.f16 { strek::ops::Precision::F16 } else { strek::ops::Precision::F32 };
        Ok(strek::Session::open(self.device, &self.gpu_options())?
            .with_max_memory(self.max_memory.map(|m| m << 20))
            .with_precision(precision))
    }

    /// The weights' extractor and a matcher (`--matcher`) in one session, announced on stderr.
    pub fn extractor_and_matcher(&self, matcher: Device, max_keypoints: Option<usize>) -> strek::Result<(Box<dyn strek::Extract>, strek::Matcher)> {
        let weights = self.weights()?;
        let session = self.session()?;
        let matcher = session.matcher(matcher)?;
        let extractor = session.extractor(&weights, strek::Config { max_keypoints, ..Default::default() })?;
        eprintln!("extraction: {}; matching: {}; weights: {}", extractor.describe(), matcher.describe(), weights.source);
        Ok((extractor, matcher))
    }

    pub fn decode_limits(&self) -> strek::image_io::DecodeLimits {
        strek::image_io::DecodeLimits { max_pixels: (self.max_megapixels.max(0.0) * 1e6) as u64 }
    }

    /// The weights file: the flag, else weights/ of the working directory, else of the source tree.
    pub fn weights_path(&self) -> Option<PathBuf> {
        if let Some(p) = &self.weights {
            return Some(p.clone());
        }
        [PathBuf::from(strek::DEFAULT_WEIGHTS), Path::new(env!("CARGO_MANIFEST_DIR")).join(strek::DEFAULT_WEIGHTS)]
            .into_iter()
            .find(|p| p.exists())
    }

    /// The weights, which must exist.
    pub fn weights(&self) -> strek::Result<Weights> {
        let path = self.weights_path().ok_or_else(|| strek::Error::Weights {
            path: strek::DEFAULT_WEIGHTS.into(),
            reason: "not found; pass --weights PATH (weights come from tools/train)".into(),
        })?;
        self.adjusted(Weights::load(&path)?)
    }

    /// Weights with this command line's changes to their inference settings (`--scales`).
    pub fn adjusted(&self, weights: Weights) -> strek::Result<Weights> {
        match &self.scales {
            Some(scales) => weights.with_scales(scales),
            None => Ok(weights),
        }
    }
}

#[derive(Subcommand)]
enum Command {
    /// Extract keypoints and descriptors from images; writes OUT/<stem>.npz (or .json) per image.
    Extract(extract::Args),
    /// Show the adapters, the chosen one's backend, limits and features, and the model's cost.
    Info,
    /// Run on a built-in generated scene and its rotated copy: match, print repeatability, write a PNG.
    Demo(demo::Args),
    /// Evaluate on HPatches-format sets: repeatability, matching and homography accuracy, rotation sweep.
    Eval(eval::Args),
    /// Match two images: keypoints, matches, RANSAC inliers and the homography, drawn side by side.
    Match(match_cmd::Args),
    /// Measure extraction speed: per-stage times, wall time, images/s, keypoints/s, GFLOP/s, memory.
    Bench(bench::Args),
    /// Write a COLMAP database (features, GPU matches, verified geometry) for a folder of images.
    Colmap(colmap::Args),
    /// Track keypoints through a video's frames (matched frame to frame); writes tracks, reports frames/s.
    Track(track::Args),
}

fn main() -> ExitCode {
    quiet_window_system_probe();
    let cli = Cli::parse();
    let result = match &cli.command {
        Command::Extract(args) => extract::run(&cli.common, args),
        Command::Info => info::run(&cli.common),
        Command::Demo(args) => demo::run(&cli.common, args),
        Command::Eval(args) => eval::run(&cli.common, args),
        Command::Match(args) => match_cmd::run(&cli.common, args),
        Command::Bench(args) => bench::run(&cli.common, args),
        Command::Colmap(args) => colmap::run(&cli.common, args),
        Command::Track(args) => track::run(&cli.common, args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Mesa's Vulkan and GL drivers probe the window system while wgpu lists adapters, and on a headless machine print
/// "error: XDG_RUNTIME_DIR is invalid or not set" for each, though strek opens no window. A private runtime folder
/// (what a desktop session would provide) keeps those lines off the user's terminal. Done first in `main`, while the
/// process has one thread, as changing the environment requires; an existing, usable setting is kept.
fn quiet_window_system_probe() {
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let usable = std::env::var_os("XDG_RUNTIME_DIR").is_some_and(|d| Path::new(&d).is_dir());
        if usable {
            return;
        }
        let uid = std::fs::metadata("/proc/self").map(|m| m.uid()).unwrap_or(0);
        let dir = std::env::temp_dir().join(format!("strek-runtime-{uid}"));
        let made = std::fs::create_dir_all(&dir).and_then(|_| std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)));
        if made.is_ok() {
            std::env::set_var("XDG_RUNTIME_DIR", &dir);
        }
    }
}
