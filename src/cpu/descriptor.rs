//! The descriptor U-Net on the CPU (docs/model.md, Descriptor), in the order of `model::descriptor_reference`.

use super::conv::{conv, conv1x1_to_map, Kernel, PackedConv};
use super::hwc::{BufferPool, HwcMap};
use super::unet::{l2norm, pool as pool_map, upsample_concat};
use crate::config::{ModelConfig, Step};
use crate::error::Result;
use crate::ops::Map;
use crate::weights::ConvWeights;

pub struct CpuDescriptor {
    pub layers: Vec<PackedConv>,
    steps: Vec<Step>,
}

impl CpuDescriptor {
    pub fn new(layers: &[ConvWeights], config: &ModelConfig) -> Self {
        CpuDescriptor { layers: layers.iter().map(PackedConv::new).collect(), steps: config.descriptor_steps() }
    }

    /// The L2-normalised descriptor map (channel-major, at the stride of the last step) of the level-0 normalised
    /// gray image; its storage comes from `pool`.
    pub fn run(&self, pool: &mut BufferPool, image: &Map, kernel: Kernel) -> Result<Map> {
        let mut layers = self.layers.iter();
        let mut next_layer = || layers.next().expect("one layer per convolution step (checked by the loader)");
        let levels = self.steps.iter().map(Step::level).max().unwrap_or(0) + 1;
        let mut skips: Vec<Option<HwcMap>> = (0..levels).map(|_| None).collect();
        // the current map, and the level whose skip it also is (it moves there, not to the pool, when replaced)
        let mut x = HwcMap::from_map(pool, image, self.layers[0].spec.k / 2)?;
        let mut kept: Option<usize> = None;
        let mut map = None;
        for step in &self.steps {
            let y = match step {
                Step::Conv(_) => conv(pool, &x, next_layer(), true, true, kernel)?,
                Step::Pool { mode, .. } => pool_map(pool, &x, *mode)?,
                Step::KeepSkip { level, .. } => {
                    kept = Some(*level);
                    continue;
                }
                Step::UpsampleConcat { level, .. } => {
                    let skip = skips[*level].take().expect("kept");
                    let cat = upsample_concat(pool, &x, &skip)?;
                    skip.recycle(pool);
                    cat
                }
                Step::Head(_) => {
                    map = Some(conv1x1_to_map(pool, &x, next_layer())?);
                    continue;
                }
                Step::L2Norm { .. } => {
                    l2norm(map.as_mut().expect("the head precedes L2 normalisation"));
                    continue;
                }
            };
            let old = std::mem::replace(&mut x, y);
            match kept.take() {
                Some(level) => skips[level] = Some(old),
                None => old.recycle(pool),
            }
        }
        x.recycle(pool);
        Ok(map.expect("the descriptor ends in its head"))
    }
}
