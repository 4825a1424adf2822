//! The model configuration stored in a weights file (`strek.config`, see docs/model.md).

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ModelConfig {
    pub group_order: usize,
    pub input: InputNorm,
    pub detector: DetectorConfig,
    pub descriptor: DescriptorConfig,
    pub inference: InferenceConfig,
    #[serde(default)]
    pub provenance: serde_json::Value,
}

#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq)]
pub struct InputNorm {
    pub mean: f32,
    pub std: f32,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct DetectorConfig {
    pub kernel: usize,
    /// Regular fields per layer output; channels = fields * group_order.
    pub fields: Vec<usize>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct DescriptorConfig {
    pub kind: String,
    pub kernel: usize,
    pub encoder: Vec<usize>,
    pub decoder: Vec<usize>,
    pub dim: usize,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct InferenceConfig {
    pub scales: Vec<f32>,
    pub min_level_side: u32,
    pub nms_radius: u32,
    pub score_threshold: f32,
    pub border: u32,
    pub max_keypoints: usize,
}

/// One convolution of the model: its tensor name prefix and shape.
#[derive(Clone, Debug, PartialEq)]
pub struct ConvSpec {
    pub name: String,
    pub c_out: usize,
    pub c_in: usize,
    pub k: usize,
    /// Resolution level: the layer runs on an image 2^level times smaller than the input.
    pub level: usize,
    /// Equivariant layers carry the 90-degree structure the loader checks.
    pub group: GroupStructure,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum GroupStructure {
    None,
    Lift,
    Group,
}

impl ModelConfig {
    /// The default architecture of docs/model.md.
    pub fn default_s_trek() -> Self {
        ModelConfig {
            group_order: 8,
            input: InputNorm { mean: 0.5, std: 0.25 },
            detector: DetectorConfig { kernel: 5, fields: vec![2, 2, 2, 2, 2, 2, 1] },
            descriptor: DescriptorConfig {
                kind: "unet".into(),
                kernel: 3,
                encoder: vec![16, 32, 64, 128],
                decoder: vec![128],
                dim: 128,
            },
            inference: InferenceConfig {
                scales: vec![1.0, 0.707, 0.5, 0.354, 0.25],
                min_level_side: 128,
                nms_radius: 1,
                score_threshold: -1e30,
                border: 0,
                max_keypoints: 1000,
            },
            provenance: serde_json::Value::Null,
        }
    }

    pub fn from_json(text: &str) -> Result<Self> {
        let config: ModelConfig =
            serde_json::from_str(text).map_err(|e| Error::Config(format!("not a valid strek.config: {e}")))?;
        config.validate()?;
        Ok(config)
    }

    pub fn validate(&self) -> Result<()> {
        let n = self.group_order;
        let fail = |m: String| Err(Error::Config(m));
        if n == 0 || n % 4 != 0 || n > 32 {
            return fail(format!("group_order {n} must be a multiple of 4 between 4 and 32"));
        }
        if !(self.input.std > 0.0) {
            return fail("input.std must be positive".into());
        }
        let d = &self.detector;
        if d.kernel % 2 == 0 || d.kernel == 0 {
            return fail(format!("detector.kernel {} must be odd", d.kernel));
        }
        if d.fields.is_empty() || d.fields.iter().any(|&f| f == 0) || *d.fields.last().unwrap() != 1 {
            return fail("detector.fields must be non-empty, positive, and end with 1 field".into());
        }
        let e = &self.descriptor;
        if e.kind != "unet" {
            return fail(format!("descriptor.kind {:?} is not supported (only \"unet\")", e.kind));
        }
        if e.kernel % 2 == 0 || e.encoder.is_empty() || e.decoder.len() >= e.encoder.len() {
            return fail("descriptor needs an odd kernel, at least one encoder level and fewer decoder than encoder levels".into());
        }
        if e.encoder.iter().chain(&e.decoder).chain([&e.dim]).any(|&c| c == 0 || c % 4 != 0) {
            return fail("descriptor channel counts must be positive multiples of 4".into());
        }
        let inf = &self.inference;
        if inf.scales.is_empty() || inf.scales.len() > 8 || inf.scales[0] != 1.0 {
            return fail("inference.scales must start with 1.0 and hold at most 8 levels".into());
        }
        if inf.scales.windows(2).any(|w| !(w[1] < w[0] && w[1] > 0.0)) {
            return fail("inference.scales must be decreasing and positive".into());
        }
        if inf.max_keypoints == 0 {
            return fail("inference.max_keypoints must be positive".into());
        }
        Ok(())
    }

    /// Receptive field of the detector: L*(k-1)+1.
    pub fn receptive_field(&self) -> usize {
        self.detector.fields.len() * (self.detector.kernel - 1) + 1
    }

    /// Offset between a heatmap pixel and the input pixel it is centred on.
    pub fn heatmap_margin(&self) -> usize {
        (self.receptive_field() - 1) / 2
    }

    /// Output stride of the descriptor map.
    pub fn descriptor_stride(&self) -> usize {
        1 << (self.descriptor.encoder.len() - 1 - self.descriptor.decoder.len())
    }

    pub fn detector_convs(&self) -> Vec<ConvSpec> {
        let n = self.group_order;
        let mut c_in = 1;
        let mut specs = Vec::new();
        for (i, &f) in self.detector.fields.iter().enumerate() {
            let group = if i == 0 { GroupStructure::Lift } else { GroupStructure::Group };
            specs.push(ConvSpec { name: format!("detector.{i}"), c_out: f * n, c_in, k: self.detector.kernel, level: 0, group });
            c_in = f * n;
        }
        specs
    }

    /// Descriptor convolutions in execution order.
    pub fn descriptor_convs(&self) -> Vec<ConvSpec> {
        let e = &self.descriptor;
        let k = e.kernel;
        let conv = |name: String, c_out, c_in, k, level| ConvSpec { name, c_out, c_in, k, level, group: GroupStructure::None };
        let mut specs = Vec::new();
        let mut c_in = 1;
        for (l, &c) in e.encoder.iter().enumerate() {
            specs.push(conv(format!("descriptor.enc{l}a"), c, c_in, k, l));
            specs.push(conv(format!("descriptor.enc{l}b"), c, c, k, l));
            c_in = c;
        }
        for (m, &d) in e.decoder.iter().enumerate() {
            let skip = e.encoder[e.encoder.len() - 2 - m];
            specs.push(conv(format!("descriptor.dec{m}"), d, c_in + skip, k, e.encoder.len() - 2 - m));
            c_in = d;
        }
        specs.push(conv("descriptor.head".into(), e.dim, c_in, 1, e.encoder.len() - 1 - e.decoder.len()));
        specs
    }

    /// Multiply-adds per input pixel of the detector at one scale.
    pub fn detector_macs_per_pixel(&self) -> usize {
        self.detector_convs().iter().map(|c| c.c_out * c.c_in * c.k * c.k).sum()
    }

    /// Multiply-adds per input pixel of the descriptor network.
    pub fn descriptor_macs_per_pixel(&self) -> f64 {
        let macs = |c: &ConvSpec| (c.c_out * c.c_in * c.k * c.k) as f64 / (1u64 << (2 * c.level)) as f64;
        self.descriptor_convs().iter().map(macs).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_budgets_match_the_design() {
        let c = ModelConfig::default_s_trek();
        c.validate().unwrap();
        assert_eq!(c.receptive_field(), 29);
        assert_eq!(c.detector_macs_per_pixel(), 400 + 5 * 6400 + 3200);
        assert!(c.detector_macs_per_pixel() <= 40_000);
        assert!(c.descriptor_macs_per_pixel() <= 60_000.0);
        assert_eq!(c.descriptor_stride(), 4);
    }

    #[test]
    fn json_round_trip_and_rejections() {
        let c = ModelConfig::default_s_trek();
        let text = serde_json::to_string(&c).unwrap();
        assert_eq!(ModelConfig::from_json(&text).unwrap(), c);
        let mut bad = c.clone();
        bad.group_order = 6;
        assert!(bad.validate().is_err());
        assert!(ModelConfig::from_json("{\"group_order\": 8}").is_err());
    }
}
