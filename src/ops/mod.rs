//! The kernels of the engine. Each op is one WGSL file in `shaders/` beside one module here holding its host code
//! (parameter block, dispatch) and its plain-Rust reference, the oracle of the tests.

pub mod conv;
pub mod matching;
pub mod nms_topk;
pub mod orientation_pool;
pub mod preprocess;
pub mod sample;
pub mod unet;

use crate::gpu::Shader;

/// Every shader of the engine with each storage-precision variant, for the validation test.
pub const ALL_SHADERS: &[Shader] = &[
    preprocess::SHADER,
    conv::SHADER,
    conv::SHADER_F32_TO_F16,
    conv::SHADER_F16,
    conv::SHADER_SUBGROUP,
    conv::SHADER_F32_TO_F16_SUBGROUP,
    conv::SHADER_F16_SUBGROUP,
    nms_topk::SHADER,
    unet::SHADER,
    unet::SHADER_F16,
    unet::SHADER_F16_TO_F32,
    sample::SHADER,
    matching::SHADER,
];

/// How the GPU stores activations and filters: f32, or f16 (adapters with SHADER_F16), with f32 arithmetic either
/// way. Keypoint scores, orientations and the final descriptor map stay f32.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Precision {
    #[default]
    F32,
    F16,
}

impl Precision {
    /// Bytes per stored value.
    pub fn bytes(self) -> u64 {
        match self {
            Precision::F32 => 4,
            Precision::F16 => 2,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Precision::F32 => "f32",
            Precision::F16 => "f16",
        }
    }

    /// What reports add after the adapter: nothing for the default.
    pub fn note(self) -> &'static str {
        match self {
            Precision::F32 => "",
            Precision::F16 => ", f16 storage",
        }
    }
}

/// A dense channel-major map `[c, h, w]` on the host.
#[derive(Clone, Debug, PartialEq)]
pub struct Map {
    pub c: usize,
    pub h: usize,
    pub w: usize,
    pub data: Vec<f32>,
}

impl Map {
    pub fn zeros(c: usize, h: usize, w: usize) -> Self {
        Map { c, h, w, data: vec![0.0; c * h * w] }
    }

    pub fn new(c: usize, h: usize, w: usize, data: Vec<f32>) -> Self {
        assert_eq!(data.len(), c * h * w, "map data does not match its shape");
        Map { c, h, w, data }
    }

    pub fn at(&self, c: usize, y: usize, x: usize) -> f32 {
        self.data[(c * self.h + y) * self.w + x]
    }

    pub fn bytes(&self) -> u64 {
        4 * self.data.len() as u64
    }
}
