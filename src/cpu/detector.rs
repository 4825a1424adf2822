//! The detector on the CPU: the valid convolutions on one pyramid level, then orientation pooling of the last
//! layer's N group channels into the score and orientation maps.

use super::conv::{conv, Kernel, PackedConv};
use super::hwc::{BufferPool, HwcMap};
use crate::config::{detector_walk, DetectorLayer};
use crate::error::Result;
use crate::ops::orientation_pool::pool_reference;
use crate::ops::Map;
use crate::weights::ConvWeights;
use rayon::prelude::*;

pub struct CpuDetector {
    pub layers: Vec<PackedConv>,
}

impl CpuDetector {
    pub fn new(layers: &[ConvWeights]) -> Self {
        CpuDetector { layers: layers.iter().map(PackedConv::new).collect() }
    }

    /// (score, orientation) maps of one level's normalised gray image, each `(h - R + 1) x (w - R + 1)`; their
    /// storage comes from `pool` (give it back when done).
    pub fn run(&self, pool: &mut BufferPool, image: &Map, kernel: Kernel) -> Result<(Map, Map)> {
        let mut x = HwcMap::from_map(pool, image, 0)?;
        for (role, layer) in detector_walk(&self.layers) {
            let y = conv(pool, &x, layer, false, role == DetectorLayer::Hidden, kernel)?;
            x.recycle(pool);
            x = y;
        }
        let (w, h) = (x.w, x.h);
        let mut score = Map { c: 1, h, w, data: pool.take(w * h)? };
        let mut orientation = Map { c: 1, h, w, data: pool.take(w * h)? };
        score.data.par_chunks_mut(w).zip(orientation.data.par_chunks_mut(w)).enumerate().for_each(|(y, (s, o))| {
            for xx in 0..w {
                let i = x.at(y, xx);
                (s[xx], o[xx]) = pool_reference(&x.data[i..i + x.c]);
            }
        });
        x.recycle(pool);
        Ok((score, orientation))
    }
}
