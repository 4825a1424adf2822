//! Where descriptor matching runs: the WGSL matcher on a GPU, or the CPU matcher (`cpu::matching`). Both give the
//! mutual nearest neighbours of `ops::matching`'s reference, with the optional ratio test.

use crate::error::{Error, Result};
use crate::features::Features;
use crate::ops::matching::GpuMatcher;

pub enum Matcher {
    Gpu(GpuMatcher),
    Cpu,
}

impl Matcher {
    pub fn mutual_nearest(&self, a: &Features, b: &Features, ratio: f32) -> Result<Vec<(usize, usize)>> {
        match self {
            Matcher::Gpu(m) => m.mutual_nearest(a, b, ratio),
            Matcher::Cpu => {
                if a.dim != b.dim && !a.is_empty() && !b.is_empty() {
                    return Err(Error::Invalid(format!("descriptor dimensions differ: {} and {}", a.dim, b.dim)));
                }
                Ok(crate::cpu::matching::mutual_nearest(a, b, ratio))
            }
        }
    }

    /// Whether pairs are best spread over CPU threads (the GPU matcher runs one submission at a time).
    pub fn is_cpu(&self) -> bool {
        matches!(self, Matcher::Cpu)
    }

    pub fn describe(&self) -> String {
        match self {
            Matcher::Gpu(m) => format!("GPU: {}", m.adapter()),
            Matcher::Cpu => "CPU".into(),
        }
    }
}
