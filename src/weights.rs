//! Loading, checking and saving weights files (safetensors + `strek.config`, docs/model.md).

use crate::config::{ConvSpec, GroupStructure, ModelConfig};
use crate::error::{Error, Result};
use crate::rng::Rng;
use safetensors::{Dtype, SafeTensors};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

/// A dense f32 tensor.
#[derive(Clone, Debug, PartialEq)]
pub struct Tensor {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

/// The weights of one convolution: `[c_out, c_in, k, k]` and `[c_out]`.
#[derive(Clone, Debug, PartialEq)]
pub struct ConvWeights {
    pub spec: ConvSpec,
    pub weight: Vec<f32>,
    pub bias: Vec<f32>,
}

#[derive(Clone, Debug)]
pub struct Weights {
    pub config: ModelConfig,
    pub tensors: BTreeMap<String, Tensor>,
    /// Where the weights came from (a path, or "random seed N").
    pub source: String,
}

/// Relative tolerance of the 90-degree structure check: exported filters are sums of rotated samples of the same
/// basis, exact up to f32 rounding.
const STRUCTURE_TOLERANCE: f32 = 1e-4;

impl Weights {
    pub fn load(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|e| Error::Weights {
            path: path.display().to_string(),
            reason: format!("cannot read the file ({e}); weights come from tools/train (see weights/README.md)"),
        })?;
        Self::from_bytes(&bytes, &path.display().to_string())
    }

    pub fn from_bytes(bytes: &[u8], source: &str) -> Result<Self> {
        let fail = |reason: String| Error::Weights { path: source.to_string(), reason };
        let (_, metadata) = SafeTensors::read_metadata(bytes)
            .map_err(|e| fail(format!("not a valid safetensors file ({e:?})")))?;
        let meta = metadata.metadata().clone().unwrap_or_default();
        match meta.get("strek.format").map(String::as_str) {
            Some("1") => {}
            Some(v) => return Err(fail(format!("strek.format {v:?} is not supported (this build reads \"1\")"))),
            None => return Err(fail("metadata has no \"strek.format\"; not a strek weights file".into())),
        }
        let config_text = meta.get("strek.config").ok_or_else(|| fail("metadata has no \"strek.config\"".into()))?;
        let config = ModelConfig::from_json(config_text).map_err(|e| fail(e.to_string()))?;
        let st = SafeTensors::deserialize(bytes).map_err(|e| fail(format!("corrupt tensor data ({e:?})")))?;
        let mut tensors = BTreeMap::new();
        for (name, view) in st.tensors() {
            let data = match view.dtype() {
                Dtype::F32 => view.data().chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect(),
                Dtype::F16 => view
                    .data()
                    .chunks_exact(2)
                    .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
                    .collect(),
                other => return Err(fail(format!("tensor {name}: dtype {other:?}, expected F32 or F16"))),
            };
            tensors.insert(name, Tensor { shape: view.shape().to_vec(), data });
        }
        let weights = Weights { config, tensors, source: source.to_string() };
        weights.validate()?;
        Ok(weights)
    }

    /// The same weights with other pyramid scales (`inference.scales`, docs/model.md): levels above 1 upsample
    /// the image, which localises keypoints more finely at more detector work. The filters do not depend on the
    /// scales, so any valid list runs any weights.
    pub fn with_scales(mut self, scales: &[f32]) -> Result<Self> {
        self.config.inference.scales = scales.to_vec();
        self.config.validate()?;
        Ok(self)
    }

    /// Checks every tensor the config implies: presence, shape, finiteness and 90-degree structure.
    pub fn validate(&self) -> Result<()> {
        let fail = |reason: String| Error::Weights { path: self.source.clone(), reason };
        for spec in self.all_convs() {
            let w = self.tensor_checked(&format!("{}.weight", spec.name), &[spec.c_out, spec.c_in, spec.k, spec.k])?;
            let b = self.tensor_checked(&format!("{}.bias", spec.name), &[spec.c_out])?;
            if spec.group != GroupStructure::None {
                check_rot90_structure(&spec, &w.data, &b.data, self.config.group_order).map_err(fail)?;
            }
        }
        Ok(())
    }

    fn all_convs(&self) -> Vec<ConvSpec> {
        let mut all = self.config.detector_convs();
        all.extend(self.config.descriptor_convs());
        all
    }

    fn tensor_checked(&self, name: &str, shape: &[usize]) -> Result<&Tensor> {
        let fail = |reason: String| Error::Weights { path: self.source.clone(), reason };
        let t = self.tensors.get(name).ok_or_else(|| fail(format!("tensor {name} is missing")))?;
        if t.shape != shape {
            return Err(fail(format!("tensor {name} has shape {:?}, the config implies {:?}", t.shape, shape)));
        }
        if t.data.iter().any(|v| !v.is_finite()) {
            return Err(fail(format!("tensor {name} holds NaN or infinite values")));
        }
        Ok(t)
    }

    /// The weights of one convolution of the model, by spec.
    pub fn conv(&self, spec: &ConvSpec) -> ConvWeights {
        let get = |suffix: &str| self.tensors[&format!("{}.{suffix}", spec.name)].data.clone();
        ConvWeights { spec: spec.clone(), weight: get("weight"), bias: get("bias") }
    }

    pub fn detector(&self) -> Vec<ConvWeights> {
        self.config.detector_convs().iter().map(|s| self.conv(s)).collect()
    }

    pub fn descriptor(&self) -> Vec<ConvWeights> {
        self.config.descriptor_convs().iter().map(|s| self.conv(s)).collect()
    }

    /// A random model with the exact 90-degree structure of a trained one (for tests and the demo without weights).
    pub fn random(config: &ModelConfig, seed: u64) -> Self {
        let mut rng = Rng::new(seed);
        let mut tensors = BTreeMap::new();
        let n = config.group_order;
        let mut all = config.detector_convs();
        all.extend(config.descriptor_convs());
        for spec in &all {
            let std = (2.0 / (spec.c_in * spec.k * spec.k) as f32).sqrt();
            let kk = spec.k * spec.k;
            let mut w = vec![0f32; spec.c_out * spec.c_in * kk];
            let mut b = vec![0f32; spec.c_out];
            match spec.group {
                GroupStructure::None => {
                    w.iter_mut().for_each(|v| *v = rng.normal() * std);
                    b.iter_mut().for_each(|v| *v = rng.normal() * 0.1);
                }
                GroupStructure::Lift | GroupStructure::Group => {
                    let q = n / 4;
                    for o in 0..spec.c_out {
                        if o % n >= q {
                            continue; // filled below by rotation of the first quarter of each field
                        }
                        for c in 0..spec.c_in {
                            let base: Vec<f32> = (0..kk).map(|_| rng.normal() * std).collect();
                            let mut f = base;
                            for turn in 0..4 {
                                let oo = rotate_group_index(o, turn * q, n);
                                let cc = if spec.group == GroupStructure::Lift { c } else { rotate_group_index(c, turn * q, n) };
                                let at = (oo * spec.c_in + cc) * kk;
                                w[at..at + kk].copy_from_slice(&f);
                                f = rot90(&f, spec.k);
                            }
                        }
                    }
                    for field in 0..spec.c_out / n {
                        let v = rng.normal() * 0.1;
                        b[field * n..(field + 1) * n].iter_mut().for_each(|x| *x = v);
                    }
                }
            }
            tensors.insert(format!("{}.weight", spec.name), Tensor { shape: vec![spec.c_out, spec.c_in, spec.k, spec.k], data: w });
            tensors.insert(format!("{}.bias", spec.name), Tensor { shape: vec![spec.c_out], data: b });
        }
        Weights { config: config.clone(), tensors, source: format!("random model, seed {seed}") }
    }

    /// Serialises to the safetensors layout of docs/model.md.
    pub fn to_bytes(&self) -> Vec<u8> {
        let raw: Vec<(String, Vec<usize>, Vec<u8>)> = self
            .tensors
            .iter()
            .map(|(k, t)| (k.clone(), t.shape.clone(), bytemuck::cast_slice::<f32, u8>(&t.data).to_vec()))
            .collect();
        let views = raw.iter().map(|(k, s, d)| {
            (k.clone(), safetensors::tensor::TensorView::new(Dtype::F32, s.clone(), d).expect("shape matches data"))
        });
        let mut meta = HashMap::new();
        meta.insert("strek.format".to_string(), "1".to_string());
        meta.insert("strek.config".to_string(), serde_json::to_string(&self.config).expect("config serialises"));
        safetensors::serialize(views, Some(meta)).expect("tensors serialise")
    }
}

/// Counter-clockwise rotation by 90 degrees as displayed (y down) of a k x k filter: `out[i][j] = in[j][k-1-i]`.
pub fn rot90(f: &[f32], k: usize) -> Vec<f32> {
    let mut out = vec![0f32; k * k];
    for i in 0..k {
        for j in 0..k {
            out[i * k + j] = f[j * k + (k - 1 - i)];
        }
    }
    out
}

/// Shifts the group element of channel `c` (field-major, N channels per field) by `shift`.
pub fn rotate_group_index(c: usize, shift: usize, n: usize) -> usize {
    (c / n) * n + (c % n + shift) % n
}

/// Checks that rotating every filter by 90 degrees equals shifting its group channels by N/4 (docs/model.md), and
/// that biases are constant within a field.
fn check_rot90_structure(spec: &ConvSpec, w: &[f32], b: &[f32], n: usize) -> std::result::Result<(), String> {
    let kk = spec.k * spec.k;
    let scale = w.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-12);
    for o in 0..spec.c_out {
        for c in 0..spec.c_in {
            let rotated = rot90(&w[(o * spec.c_in + c) * kk..][..kk], spec.k);
            let oo = rotate_group_index(o, n / 4, n);
            let cc = if spec.group == GroupStructure::Lift { c } else { rotate_group_index(c, n / 4, n) };
            let target = &w[(oo * spec.c_in + cc) * kk..][..kk];
            let err = rotated.iter().zip(target).fold(0f32, |m, (a, b)| m.max((a - b).abs()));
            if err > STRUCTURE_TOLERANCE * scale {
                return Err(format!(
                    "tensor {}.weight is not rotation-equivariant: rot90 of filter [{o}, {c}] differs from filter [{oo}, {cc}] by {err:.3e} (max |w| {scale:.3e})",
                    spec.name
                ));
            }
        }
    }
    for o in 0..spec.c_out {
        if (b[o] - b[(o / n) * n]).abs() > STRUCTURE_TOLERANCE * scale.max(1.0) {
            return Err(format!("tensor {}.bias is not constant within field {}", spec.name, o / n));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rot90_four_times_is_identity_and_matches_numpy_convention() {
        let f: Vec<f32> = (0..9).map(|v| v as f32).collect();
        // np.rot90([[0,1,2],[3,4,5],[6,7,8]]) == [[2,5,8],[1,4,7],[0,3,6]]
        assert_eq!(rot90(&f, 3), vec![2., 5., 8., 1., 4., 7., 0., 3., 6.]);
        let mut g = f.clone();
        for _ in 0..4 {
            g = rot90(&g, 3);
        }
        assert_eq!(g, f);
    }

    #[test]
    fn random_model_round_trips_and_passes_its_own_checks() {
        let w = Weights::random(&ModelConfig::default_s_trek(), 7);
        w.validate().unwrap();
        let back = Weights::from_bytes(&w.to_bytes(), "memory").unwrap();
        assert_eq!(back.tensors, w.tensors);
        assert_eq!(back.config, w.config);
    }
}
