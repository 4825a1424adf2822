//! The descriptor U-Net on the CPU (docs/model.md, Descriptor), in the order of `model::descriptor_reference`.

use super::conv::{conv, conv1x1_to_map, Kernel, PackedConv};
use super::hwc::{BufferPool, HwcMap};
use super::unet::{avgpool2, l2norm, upsample_concat};
use crate::config::ModelConfig;
use crate::ops::Map;
use crate::weights::ConvWeights;

pub struct CpuDescriptor {
    pub layers: Vec<PackedConv>,
    encoder: usize,
    decoder: usize,
}

impl CpuDescriptor {
    pub fn new(layers: &[ConvWeights], config: &ModelConfig) -> Self {
        CpuDescriptor {
            layers: layers.iter().map(PackedConv::new).collect(),
            encoder: config.descriptor.encoder.len(),
            decoder: config.descriptor.decoder.len(),
        }
    }

    /// The L2-normalised descriptor map (channel-major, output stride `2^(E-1-D)`) of the level-0 normalised gray
    /// image; its storage comes from `pool`.
    pub fn run(&self, pool: &mut BufferPool, image: &Map, kernel: Kernel) -> Map {
        let pad = self.layers[0].spec.k / 2;
        let mut layers = self.layers.iter();
        let mut same = |pool: &mut BufferPool, x: HwcMap| {
            let y = conv(pool, &x, layers.next().expect("layer count checked by the loader"), true, true, kernel);
            x.recycle(pool);
            y
        };
        // Only the encoder levels the decoder reads are kept.
        let first_skip = self.encoder - 1 - self.decoder;
        let mut skips: Vec<Option<HwcMap>> = (0..self.encoder).map(|_| None).collect();
        let mut x = HwcMap::from_map(pool, image, pad);
        for level in 0..self.encoder {
            if level > 0 {
                let pooled = avgpool2(pool, &x);
                if level > first_skip {
                    skips[level - 1] = Some(x);
                } else {
                    x.recycle(pool);
                }
                x = pooled;
            }
            x = same(pool, x);
            x = same(pool, x);
        }
        for m in 0..self.decoder {
            let skip = skips[self.encoder - 2 - m].take().expect("skip kept");
            let cat = upsample_concat(pool, &x, &skip);
            x.recycle(pool);
            skip.recycle(pool);
            x = same(pool, cat);
        }
        let mut map = conv1x1_to_map(pool, &x, layers.next().expect("head"));
        x.recycle(pool);
        l2norm(&mut map);
        map
    }
}
