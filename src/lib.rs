//! strek: S-TREK rotation-equivariant local features (keypoints with orientation and scale, 128-D descriptors) on
//! any GPU through wgpu and hand-written WGSL.
//!
//! ```no_run
//! use strek::{Extractor, Gpu, GpuOptions, Image, Weights};
//! let gpu = Gpu::new(&GpuOptions::default())?;
//! let weights = Weights::load(std::path::Path::new("weights/strek.safetensors"))?;
//! let mut extractor = Extractor::new(&gpu, &weights, Default::default())?;
//! let features = extractor.extract(&Image::open(std::path::Path::new("photo.jpg"))?)?;
//! println!("{} keypoints", features.len());
//! # Ok::<(), strek::Error>(())
//! ```

pub mod backend;
pub mod colmap;
pub mod config;
pub mod cpu;
pub mod demo;
pub mod error;
pub mod eval;
pub mod extractor;
pub mod features;
pub mod geometry;
pub mod gpu;
pub mod image_io;
pub mod model;
pub mod ops;
pub mod rng;
pub mod solve;
pub mod track;
pub mod weights;

pub use backend::{Device, Extract};
pub use config::ModelConfig;
pub use cpu::CpuExtractor;
pub use error::{Error, Result};
pub use extractor::{Config, Extractor, Oversize};
pub use features::Features;
pub use gpu::{Gpu, GpuOptions};
pub use image_io::Image;
pub use weights::Weights;

/// Where the shipped weights live, relative to the repository root.
pub const DEFAULT_WEIGHTS: &str = "weights/strek.safetensors";
