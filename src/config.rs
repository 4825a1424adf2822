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

/// The descriptor's two versions (docs/model.md, "Descriptor" and "Descriptor version 2").
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum DescriptorKind {
    /// Version 1: a plain U-Net; widths in channels; 2x2 mean pooling; sampled without regard to orientation.
    Unet,
    /// Version 2: the U-Net of C_N lifting and group convolutions; widths in regular fields (N channels each);
    /// pooling by bilinear halving; sampled descriptors aligned by the keypoint's orientation.
    GroupUnet,
}

impl DescriptorKind {
    pub fn pool_mode(self) -> PoolMode {
        match self {
            DescriptorKind::Unet => PoolMode::Mean2x2,
            DescriptorKind::GroupUnet => PoolMode::BilinearHalf,
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct DescriptorConfig {
    pub kind: DescriptorKind,
    pub kernel: usize,
    pub encoder: Vec<usize>,
    pub decoder: Vec<usize>,
    /// Fields of the head (version 2 only): `head * group_order == dim`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub head: Option<usize>,
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

/// Pyramid levels a config may ask for (the GPU gather keeps their table in a uniform array of this size).
pub const MAX_LEVELS: usize = 8;

/// The largest pyramid scale: a level above 1 is the image upsampled (SIFT's doubling), which localises keypoints
/// on a finer grid; each doubling quadruples the detector's work, and nothing beyond 2 was measured.
pub const MAX_UPSCALE: f32 = 2.0;

/// The largest kernel a config may ask for: a GPU convolution reads the PX + K - 1 <= 8 input values of a tile row as
/// two vec4s (shaders/conv.wgsl).
pub const MAX_KERNEL: usize = 5;

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

/// The role of a detector layer (`detector_walk`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DetectorLayer {
    /// A valid convolution with ReLU.
    Hidden,
    /// The last: a valid convolution without ReLU whose N group channels orientation pooling turns into the score
    /// and the orientation.
    Pooled,
}

/// The detector's layers in order with their roles: the one place that says which layers have ReLU and which one
/// is pooled. Every implementation (reference, GPU plan, CPU path) walks its own layers through it.
pub fn detector_walk<L>(layers: &[L]) -> impl Iterator<Item = (DetectorLayer, &L)> {
    let last = layers.len().saturating_sub(1);
    layers.iter().enumerate().map(move |(i, l)| (if i == last { DetectorLayer::Pooled } else { DetectorLayer::Hidden }, l))
}

/// One step of the descriptor network (`ModelConfig::descriptor_steps`); `level` is the resolution of its output
/// (2^level times smaller than the input), `c` the channels of the map it reads.
#[derive(Clone, Debug, PartialEq)]
pub enum Step {
    /// A same-padded convolution with ReLU.
    Conv(ConvSpec),
    /// Halving to `level` by `mode`.
    Pool { level: usize, c: usize, mode: PoolMode },
    /// Keep the current map: a later `UpsampleConcat` to this level reads it.
    KeepSkip { level: usize, c: usize },
    /// Bilinear upsampling to the kept map of `level` and concatenation with it (upsampled channels first).
    UpsampleConcat { level: usize, c: usize, skip_c: usize },
    /// The 1x1 head, without ReLU.
    Head(ConvSpec),
    /// L2 normalisation of each pixel's `c` channels.
    L2Norm { level: usize, c: usize },
}

impl Step {
    pub fn level(&self) -> usize {
        match self {
            Step::Conv(s) | Step::Head(s) => s.level,
            Step::Pool { level, .. } | Step::KeepSkip { level, .. } | Step::UpsampleConcat { level, .. } | Step::L2Norm { level, .. } => *level,
        }
    }

    /// Channels of the step's output.
    pub fn channels(&self) -> usize {
        match self {
            Step::Conv(s) | Step::Head(s) => s.c_out,
            Step::Pool { c, .. } | Step::KeepSkip { c, .. } | Step::L2Norm { c, .. } => *c,
            Step::UpsampleConcat { c, skip_c, .. } => c + skip_c,
        }
    }
}

/// How the descriptor halves a map between encoder levels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PoolMode {
    /// 2x2 mean, stride 2, an odd last row or column dropped: `floor(w / 2)` (version 1).
    Mean2x2,
    /// Bilinear resize (align_corners = false) to `ceil(w / 2)`: the 2x2 mean for even sides, and for odd sides a
    /// grid that stays centred, so that quarter turns commute with it at every size (version 2).
    BilinearHalf,
}

impl PoolMode {
    pub fn halve(self, n: u32) -> u32 {
        match self {
            PoolMode::Mean2x2 => n / 2,
            PoolMode::BilinearHalf => n.div_ceil(2),
        }
    }
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
                kind: DescriptorKind::Unet,
                kernel: 3,
                encoder: vec![16, 32, 64, 128],
                decoder: vec![128],
                head: None,
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
        // the GPU's fused orientation pooling holds a pixel's N group channels in 4 vec4 registers
        if n == 0 || n % 4 != 0 || n > 16 {
            return fail(format!("group_order {n} must be 4, 8, 12 or 16"));
        }
        if !(self.input.std > 0.0) {
            return fail("input.std must be positive".into());
        }
        let d = &self.detector;
        if d.kernel % 2 == 0 || d.kernel > MAX_KERNEL {
            return fail(format!("detector.kernel {} must be odd and at most {MAX_KERNEL}", d.kernel));
        }
        if d.fields.is_empty() || d.fields.iter().any(|&f| f == 0) || *d.fields.last().unwrap() != 1 {
            return fail("detector.fields must be non-empty, positive, and end with 1 field".into());
        }
        let e = &self.descriptor;
        if e.kernel % 2 == 0 || e.kernel > MAX_KERNEL || e.encoder.is_empty() || e.decoder.len() >= e.encoder.len() {
            return fail(format!(
                "descriptor needs an odd kernel of at most {MAX_KERNEL}, at least one encoder level and fewer decoder than encoder levels"
            ));
        }
        match (e.kind, e.head) {
            (DescriptorKind::Unet, None) => {
                if e.encoder.iter().chain(&e.decoder).chain([&e.dim]).any(|&c| c == 0 || c % 4 != 0) {
                    return fail("descriptor channel counts must be positive multiples of 4".into());
                }
            }
            (DescriptorKind::Unet, Some(_)) => return fail("descriptor.head belongs to the group_unet kind only".into()),
            (DescriptorKind::GroupUnet, None) => return fail("a group_unet descriptor needs descriptor.head (fields)".into()),
            (DescriptorKind::GroupUnet, Some(head)) => {
                if e.encoder.iter().chain(&e.decoder).chain([&head]).any(|&f| f == 0) {
                    return fail("descriptor field counts must be positive".into());
                }
                if head * n != e.dim {
                    return fail(format!("descriptor.head {head} fields x group_order {n} must equal descriptor.dim {}", e.dim));
                }
            }
        }
        let inf = &self.inference;
        if inf.scales.is_empty() || inf.scales.len() > MAX_LEVELS || inf.scales[0] != 1.0 {
            return fail(format!("inference.scales must start with 1.0 and hold at most {} levels", MAX_LEVELS));
        }
        if inf.scales.iter().any(|&s| !(s > 0.0 && s <= MAX_UPSCALE)) {
            return fail(format!("inference.scales must lie in (0, {MAX_UPSCALE}]"));
        }
        if inf.scales.iter().enumerate().any(|(i, s)| inf.scales[..i].contains(s)) {
            return fail("inference.scales must not repeat a scale".into());
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

    /// Output stride of the descriptor map: 2^level of its last step.
    pub fn descriptor_stride(&self) -> usize {
        1 << self.descriptor_steps().last().expect("the descriptor ends in L2 normalisation").level()
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

    /// The descriptor network as the steps every implementation walks (the reference, the GPU plan, the CPU path,
    /// the buffer bound, the multiply-add count): per encoder level `l`, pooling from the level above (l > 0) and
    /// two convolutions, keeping the result when a decoder stage reads it; per decoder stage `m`, upsampling to
    /// level `E-2-m`, concatenation with that level's kept map and a convolution; the head; L2 normalisation.
    /// Version 2 counts widths in fields of `group_order` channels and gives each convolution its group structure.
    pub fn descriptor_steps(&self) -> Vec<Step> {
        let e = &self.descriptor;
        let (levels, decoders) = (e.encoder.len(), e.decoder.len());
        let mode = e.kind.pool_mode();
        let (n, head) = match e.kind {
            DescriptorKind::Unet => (1, e.dim),
            DescriptorKind::GroupUnet => (self.group_order, e.head.unwrap_or(0)),
        };
        let conv = |name: &str, c_out: usize, c_in: usize, k, level| {
            let group = match (e.kind, c_in) {
                (DescriptorKind::Unet, _) => GroupStructure::None,
                (DescriptorKind::GroupUnet, 1) => GroupStructure::Lift,
                (DescriptorKind::GroupUnet, _) => GroupStructure::Group,
            };
            ConvSpec { name: format!("descriptor.{name}"), c_out: c_out * n, c_in, k, level, group }
        };
        let skip_level = |m: usize| levels - 2 - m;
        let mut steps = Vec::new();
        let mut c = 1;
        for (l, &width) in e.encoder.iter().enumerate() {
            if l > 0 {
                steps.push(Step::Pool { level: l, c, mode });
            }
            steps.push(Step::Conv(conv(&format!("enc{l}a"), width, c, e.kernel, l)));
            c = width * n;
            steps.push(Step::Conv(conv(&format!("enc{l}b"), width, c, e.kernel, l)));
            if (0..decoders).any(|m| skip_level(m) == l) {
                steps.push(Step::KeepSkip { level: l, c });
            }
        }
        let mut level = levels - 1;
        for (m, &width) in e.decoder.iter().enumerate() {
            level = skip_level(m);
            let skip_c = e.encoder[level] * n;
            steps.push(Step::UpsampleConcat { level, c, skip_c });
            steps.push(Step::Conv(conv(&format!("dec{m}"), width, c + skip_c, e.kernel, level)));
            c = width * n;
        }
        steps.push(Step::Head(conv("head", head, c, 1, level)));
        steps.push(Step::L2Norm { level, c: e.dim });
        steps
    }

    /// Size of the descriptor's map at `level` for a `w` x `h` image: halved `level` times by the pooling of its kind.
    pub fn descriptor_level_size(&self, w: u32, h: u32, level: usize) -> (u32, u32) {
        let mode = self.descriptor.kind.pool_mode();
        (0..level).fold((w, h), |(w, h), _| (mode.halve(w), mode.halve(h)))
    }

    /// Descriptor convolutions (the head last) in execution order.
    pub fn descriptor_convs(&self) -> Vec<ConvSpec> {
        self.descriptor_steps()
            .into_iter()
            .filter_map(|s| match s {
                Step::Conv(spec) | Step::Head(spec) => Some(spec),
                _ => None,
            })
            .collect()
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
    fn scales_start_at_the_image_and_may_upsample_up_to_twice() {
        let with = |scales: &[f32]| {
            let mut c = ModelConfig::default_s_trek();
            c.inference.scales = scales.to_vec();
            c.validate().map_err(|e| e.to_string())
        };
        assert!(with(&[1.0, 2.0, 1.414, 0.707, 0.5, 0.354, 0.25]).is_ok());
        assert!(with(&[1.0]).is_ok());
        assert!(with(&[2.0, 1.0]).unwrap_err().contains("start with 1.0"));
        assert!(with(&[]).unwrap_err().contains("start with 1.0"));
        assert!(with(&[1.0; MAX_LEVELS + 1]).unwrap_err().contains("at most"));
        for bad in [2.5, 0.0, -0.5, f32::NAN, f32::INFINITY] {
            assert!(with(&[1.0, bad]).unwrap_err().contains("must lie in"), "{bad}");
        }
        assert!(with(&[1.0, 0.5, 0.5]).unwrap_err().contains("repeat"));
        assert!(with(&[1.0, 0.5, 1.0]).unwrap_err().contains("repeat"));
    }

    #[test]
    fn descriptor_steps_of_the_default_unet() {
        let c = ModelConfig::default_s_trek();
        let kinds: Vec<String> = c
            .descriptor_steps()
            .iter()
            .map(|s| match s {
                Step::Conv(spec) => spec.name.trim_start_matches("descriptor.").to_string(),
                Step::Head(_) => "head".into(),
                Step::Pool { level, c, .. } => format!("pool{level}:{c}"),
                Step::KeepSkip { level, c } => format!("keep{level}:{c}"),
                Step::UpsampleConcat { level, c, skip_c } => format!("up{level}:{c}+{skip_c}"),
                Step::L2Norm { level, c } => format!("l2norm{level}:{c}"),
            })
            .collect();
        let expected = "enc0a enc0b pool1:16 enc1a enc1b pool2:32 enc2a enc2b keep2:64 pool3:64 enc3a enc3b up2:128+64 dec0 head l2norm2:128";
        assert_eq!(kinds.join(" "), expected);
        let dec0 = &c.descriptor_convs()[8];
        assert_eq!((dec0.name.as_str(), dec0.c_in, dec0.c_out, dec0.level), ("descriptor.dec0", 192, 128, 2));
        // no decoder: the head reads the last encoder level, and nothing is kept
        let mut plain = c.clone();
        plain.descriptor.decoder.clear();
        let steps = plain.descriptor_steps();
        assert!(!steps.iter().any(|s| matches!(s, Step::KeepSkip { .. } | Step::UpsampleConcat { .. })));
        assert_eq!(plain.descriptor_stride(), 8);
        // two decoder stages read levels 2 and 1
        let mut deep = c.clone();
        deep.descriptor.decoder = vec![64, 32];
        let kept: Vec<usize> = deep.descriptor_steps().iter().filter_map(|s| if let Step::KeepSkip { level, .. } = s { Some(*level) } else { None }).collect();
        assert_eq!(kept, [1, 2]);
        assert_eq!(deep.descriptor_stride(), 2);
    }

    #[test]
    fn descriptor_steps_of_the_group_unet() {
        let mut c = ModelConfig::default_s_trek();
        let text = r#"{"kind": "group_unet", "kernel": 3, "encoder": [3, 6, 12, 24], "decoder": [16], "head": 16, "dim": 128}"#;
        c.descriptor = serde_json::from_str(text).unwrap();
        c.validate().unwrap();
        let convs = c.descriptor_convs();
        let shapes: Vec<_> = convs.iter().map(|s| (s.c_out, s.c_in, s.k, s.level, s.group)).collect();
        use GroupStructure::{Group, Lift};
        assert_eq!(shapes[0], (24, 1, 3, 0, Lift));
        assert_eq!(shapes[7], (192, 192, 3, 3, Group));
        assert_eq!(shapes[8], (128, 288, 3, 2, Group)); // dec0: 24 upsampled fields, then the 12 of the skip
        assert_eq!(shapes[9], (128, 128, 1, 2, Group));
        assert_eq!(c.descriptor_macs_per_pixel(), 50_488.0); // tools/train's count for the same topology
        assert!(c.descriptor_steps().iter().all(|s| !matches!(s, Step::Pool { mode: PoolMode::Mean2x2, .. })));
        // ceil halving: 47 -> 24 -> 12 (version 1: 47 -> 23 -> 11)
        assert_eq!(c.descriptor_level_size(61, 47, 2), (16, 12));
        assert_eq!(ModelConfig::default_s_trek().descriptor_level_size(61, 47, 2), (15, 11));
        let mut bad = c.clone();
        bad.descriptor.head = Some(15);
        assert!(bad.validate().is_err(), "head x N must be dim");
        bad.descriptor.head = None;
        assert!(bad.validate().is_err(), "group_unet needs a head");
        let mut plain = ModelConfig::default_s_trek();
        plain.descriptor.head = Some(16);
        assert!(plain.validate().is_err(), "unet has no head field");
        assert!(serde_json::from_str::<DescriptorConfig>(&text.replace("group_unet", "other")).is_err());
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

    #[test]
    fn kernels_beyond_what_the_gpu_convolution_reads_are_refused() {
        let mut c = ModelConfig::default_s_trek();
        c.detector.kernel = MAX_KERNEL + 2;
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains("detector.kernel 7") && err.contains("at most 5"), "{err}");
        let mut c = ModelConfig::default_s_trek();
        c.descriptor.kernel = MAX_KERNEL + 2;
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains("descriptor needs an odd kernel of at most 5"), "{err}");
    }
}
