//! One error type for the library; every message says what went wrong and, where there is one, what to do.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("no GPU adapter found{0}. On Linux without a GPU install Mesa's software Vulkan driver (lavapipe): `apt-get install -y mesa-vulkan-drivers`; or run on the CPU with `--device cpu`")]
    NoAdapter(String),
    #[error("could not open a device on adapter {adapter}: {reason}")]
    DeviceRequest { adapter: String, reason: String },
    #[error("GPU error: {0}")]
    Gpu(String),
    #[error("the GPU device was lost: {0}")]
    DeviceLost(String),
    #[error("weights {path}: {reason}")]
    Weights { path: String, reason: String },
    #[error("weights config: {0}")]
    Config(String),
    #[error("image {path}: {reason}")]
    Image { path: PathBuf, reason: String },
    #[error("image of {width}x{height} needs a {what} buffer of {bytes} bytes, over this adapter's limit of {limit}; downscale it or let strek do it (Oversize::Downscale, the default)")]
    TooLarge { width: u32, height: u32, what: &'static str, bytes: u64, limit: u64 },
    #[error("the CPU path's memory budget of {budget_mib} MiB is too small for this image ({held_mib} MiB held, {needed_mib} MiB more asked); raise it with --max-memory (Config::max_memory) or shrink the image")]
    MemoryBudget { budget_mib: u64, held_mib: u64, needed_mib: u64 },
    #[error("the system refused {bytes} bytes of memory ({held_mib} MiB held by the CPU path); set a smaller --max-memory so that large images are shrunk to fit")]
    HostMemory { bytes: u64, held_mib: u64 },
    #[error("invalid argument: {0}")]
    Invalid(String),
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io { path: path.into(), source }
    }
}
