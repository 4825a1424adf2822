//! strek: S-TREK rotation-equivariant local features (keypoints with orientation and scale, 128-D descriptors) on
//! any GPU through wgpu and hand-written WGSL, or on the CPU.
//!
//! ```
//! use strek::{Device, GpuOptions, Session, Weights};
//! // the shipped weights; Device::Auto runs on a hardware GPU when there is one, else on the CPU
//! let weights = Weights::load(std::path::Path::new(strek::DEFAULT_WEIGHTS))?;
//! let session = Session::open(Device::Auto, &GpuOptions::default())?;
//! let mut extractor = session.extractor(&weights, Default::default())?;
//! let image = strek::demo::scene(320, 240, 1); // a photo: strek::Image::open(path)?
//! let features = extractor.extract(&image)?;
//! assert!(features.len() > 100 && features.dim == 128);
//! let [x, y] = features.keypoints[0]; // the best keypoint, in pixels of the image
//! println!("({x:.1}, {y:.1}) angle {:.2} rad, scale {}", features.orientations[0], features.scales[0]);
//! assert!((features.descriptor(0).iter().map(|v| v * v).sum::<f32>() - 1.0).abs() < 1e-4);
//! // matching runs on the same device
//! let matches = session.matcher(Device::Auto)?.mutual_nearest(&features, &features, 1.0)?;
//! assert_eq!(matches.len(), features.len());
//! # Ok::<(), strek::Error>(())
//! ```
//!
//! The GPU engine itself, on an adapter of your choice (`Gpu::from_device` wraps a device your application owns,
//! `GpuExtractor::extract_texture` reads a texture it rendered; see examples/embed.rs):
//!
//! ```no_run
//! use strek::{Gpu, GpuExtractor, GpuOptions, Image, Weights};
//! let gpu = Gpu::new(&GpuOptions::default())?;
//! let weights = Weights::load(std::path::Path::new("weights/strek.safetensors"))?;
//! let mut extractor = GpuExtractor::new(&gpu, &weights, Default::default())?;
//! let features = extractor.extract(&Image::open(std::path::Path::new("photo.jpg"))?)?;
//! println!("{} keypoints", features.len());
//! # Ok::<(), strek::Error>(())
//! ```

#[cfg(feature = "colmap")]
pub mod colmap;
pub mod config;
pub mod cpu;
pub mod demo;
pub mod error;
pub mod eval;
pub mod extract;
pub mod features;
pub mod geometry;
pub mod gpu;
pub mod gpu_extractor;
pub mod image_io;
pub mod matcher;
pub mod model;
pub mod ops;
pub mod rng;
pub mod session;
pub mod solve;
pub mod track;
pub mod weights;

pub use config::ModelConfig;
pub use cpu::CpuExtractor;
pub use error::{Error, Result};
pub use extract::{Config, Extract, Oversize};
pub use features::Features;
pub use gpu::{Gpu, GpuOptions};
pub use gpu_extractor::GpuExtractor;
pub use image_io::Image;
pub use matcher::Matcher;
pub use session::{Device, Session};
pub use weights::Weights;

/// Where the shipped weights live, relative to the repository root.
pub const DEFAULT_WEIGHTS: &str = "weights/strek.safetensors";
