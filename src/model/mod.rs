//! The model as plans of dispatches: the detector over a pyramid, the descriptor U-Net, and the plain-Rust
//! reference of the whole extraction, the oracle of the end-to-end tests.

pub mod descriptor;
pub mod detector;

use crate::config::ModelConfig;
use crate::features::Features;
use crate::image_io::Image;
use crate::ops::nms_topk::{nms_topk_reference, LevelGeom, NmsSettings};
use crate::ops::preprocess::{resize_reference, to_gray_reference};
use crate::ops::sample::{sample_reference, Sampling};
use crate::weights::Weights;

/// One pyramid level: its image size and its heatmap's place in the pooled score buffer.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Level {
    pub w: u32,
    pub h: u32,
    pub geom: LevelGeom,
}

impl Level {
    pub fn pixels(&self) -> u64 {
        self.w as u64 * self.h as u64
    }
}

/// Where each level starts (in pixels) when the levels are stored one after another (the GPU's pyramid buffer,
/// and, times the channel count, the detector's activations); the last entry is the total.
pub fn level_offsets(levels: &[Level]) -> Vec<u64> {
    let mut offsets = vec![0];
    for level in levels {
        offsets.push(offsets.last().unwrap() + level.pixels());
    }
    offsets
}

/// Levels of an image: sizes `round(W*s) x round(H*s)`; levels with a short side under `min_level_side` are skipped
/// (level 0 is always kept), and so are levels smaller than the receptive field (no heatmap).
pub fn pyramid(config: &ModelConfig, w: u32, h: u32) -> Vec<Level> {
    let r = config.receptive_field() as u32;
    let margin = config.heatmap_margin() as u32;
    let mut levels = Vec::new();
    let mut offset = 0;
    for (i, &s) in config.inference.scales.iter().enumerate() {
        let (lw, lh) = if i == 0 { (w, h) } else { ((w as f32 * s).round() as u32, (h as f32 * s).round() as u32) };
        if (i > 0 && lw.min(lh) < config.inference.min_level_side) || lw < r || lh < r {
            continue;
        }
        let (hw, hh) = (lw - r + 1, lh - r + 1);
        let geom = LevelGeom { hw, hh, offset, margin, sx: w as f32 / lw as f32, sy: h as f32 / lh as f32 };
        offset += hw * hh;
        levels.push(Level { w: lw, h: lh, geom });
    }
    levels
}

pub fn nms_settings(config: &ModelConfig, max_keypoints: usize) -> NmsSettings {
    let inf = &config.inference;
    NmsSettings {
        radius: inf.nms_radius,
        border: inf.border,
        threshold: inf.score_threshold,
        max_keypoints: max_keypoints as u32,
    }
}

/// Reference of the whole extraction (slow; tests use small images).
pub fn extract_reference(weights: &Weights, image: &Image, max_keypoints: usize) -> Features {
    let config = &weights.config;
    let levels = pyramid(config, image.width, image.height);
    let mut features = Features::empty([image.width, image.height], config.descriptor.dim);
    if levels.is_empty() {
        return features;
    }
    let gray = to_gray_reference(image, config.input);
    let detector = weights.detector();
    let maps: Vec<_> = levels
        .iter()
        .map(|level| {
            let input = if level.w == image.width && level.h == image.height {
                gray.clone()
            } else {
                resize_reference(&gray, level.w as usize, level.h as usize)
            };
            let (_, score, orientation) = detector::detector_reference(&detector, &input);
            (score, orientation)
        })
        .collect();
    let pooled: Vec<_> = levels.iter().zip(&maps).map(|(l, (s, o))| (l.geom, s, o)).collect();
    let records = nms_topk_reference(&pooled, &nms_settings(config, max_keypoints));
    let map = descriptor::descriptor_reference(&weights.descriptor(), config, &gray);
    let sampling = Sampling::new(config, (image.width, image.height), (map.w as u32, map.h as u32));
    let descriptors = sample_reference(&map, sampling, &records);
    features.push_records(&records, &descriptors);
    features
}
