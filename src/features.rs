//! Extracted features and their files: numpy `.npz` (the layout of design.md, read by `strek eval` and by any
//! other program) and JSON.

use crate::error::{Error, Result};
use std::io::Write;
use std::path::Path;

/// A selected keypoint as the GPU writes it and the references return it (the layout of nms_topk.wgsl's output).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct KeypointRecord {
    pub x: f32,
    pub y: f32,
    pub score: f32,
    pub orientation: f32,
    pub scale: f32,
    pub level: f32,
    pub valid: f32,
    pub _pad: f32,
}

impl KeypointRecord {
    /// Bytes per record in GPU buffers.
    pub const BYTES: u64 = std::mem::size_of::<Self>() as u64;
}

/// Keypoints sorted by descending score, with their descriptors (row-major `[len, dim]`, L2-normalised).
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Features {
    pub image_size: [u32; 2],
    pub keypoints: Vec<[f32; 2]>,
    pub scores: Vec<f32>,
    pub orientations: Vec<f32>,
    pub scales: Vec<f32>,
    pub descriptors: Vec<f32>,
    pub dim: usize,
}

impl Features {
    pub fn empty(image_size: [u32; 2], dim: usize) -> Self {
        Features { image_size, dim, ..Default::default() }
    }

    pub fn len(&self) -> usize {
        self.keypoints.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keypoints.is_empty()
    }

    pub fn descriptor(&self, i: usize) -> &[f32] {
        &self.descriptors[i * self.dim..(i + 1) * self.dim]
    }

    /// Appends the valid records (the GPU pads with invalid ones) and their descriptors.
    pub fn push_records(&mut self, records: &[KeypointRecord], descriptors: &[f32]) {
        for (i, r) in records.iter().enumerate().filter(|(_, r)| r.valid > 0.5) {
            self.keypoints.push([r.x, r.y]);
            self.scores.push(r.score);
            self.orientations.push(r.orientation);
            self.scales.push(r.scale);
            self.descriptors.extend_from_slice(&descriptors[i * self.dim..(i + 1) * self.dim]);
        }
    }

    /// Keeps the first `k` (the best, as features are sorted by score).
    /// Re-expresses features found in a resampled copy of an image (of `self.image_size`) in the pixels of the
    /// image itself (of `image_size`): pixel centres map as x = (x' + 0.5) * W / w - 0.5, scales by sqrt(sx * sy).
    pub fn rescale_to(&mut self, image_size: [u32; 2]) {
        let sx = image_size[0] as f64 / self.image_size[0] as f64;
        let sy = image_size[1] as f64 / self.image_size[1] as f64;
        for [x, y] in &mut self.keypoints {
            *x = ((*x as f64 + 0.5) * sx - 0.5) as f32;
            *y = ((*y as f64 + 0.5) * sy - 0.5) as f32;
        }
        let s = (sx * sy).sqrt() as f32;
        self.scales.iter_mut().for_each(|v| *v *= s);
        self.image_size = image_size;
    }

    pub fn truncate(&mut self, k: usize) {
        let k = k.min(self.len());
        self.keypoints.truncate(k);
        self.scores.truncate(k);
        self.orientations.truncate(k);
        self.scales.truncate(k);
        self.descriptors.truncate(k * self.dim);
    }

    /// Writes the npz file atomically (a temporary file renamed into place).
    pub fn write_npz(&self, path: &Path) -> Result<()> {
        write_atomically(path, &self.to_npz())
    }

    /// The npz file's bytes.
    pub fn to_npz(&self) -> Vec<u8> {
        let n = self.len();
        let kp: Vec<f32> = self.keypoints.iter().flatten().copied().collect();
        let size = [self.image_size[0] as i32, self.image_size[1] as i32];
        let entries = vec![
            ("keypoints.npy", npy_f32(&kp, &[n, 2])),
            ("scores.npy", npy_f32(&self.scores, &[n])),
            ("orientations.npy", npy_f32(&self.orientations, &[n])),
            ("scales.npy", npy_f32(&self.scales, &[n])),
            ("descriptors.npy", npy_f32(&self.descriptors, &[n, self.dim])),
            ("image_size.npy", npy(&bytemuck::cast_slice(&size).to_vec(), "<i4", &[2])),
        ];
        stored_zip(&entries)
    }

    /// Reads an npz file of the layout above (written by strek or any other program); a malformed file is an error
    /// that names it, never a panic.
    pub fn read_npz(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        Self::from_npz(&bytes, path)
    }

    /// `read_npz` of bytes already read; `path` names them in errors.
    pub fn from_npz(bytes: &[u8], path: &Path) -> Result<Self> {
        let fail = |reason: &str| Error::Invalid(format!("{}: {reason}", path.display()));
        let entries = read_stored_zip(bytes).ok_or_else(|| fail("not an uncompressed npz file"))?;
        let get = |name: &str| -> Result<(Vec<usize>, Vec<u8>, String)> {
            let data = entries.iter().find(|(n, _)| n == name).ok_or_else(|| fail(&format!("no {name}")))?;
            parse_npy(&data.1).ok_or_else(|| fail(&format!("{name} is not a readable npy array")))
        };
        let floats = |name: &str| -> Result<(Vec<usize>, Vec<f32>)> {
            let (shape, data, dtype) = get(name)?;
            let values = match dtype.as_str() {
                "<f4" => bytemuck::pod_collect_to_vec(&data),
                "<f2" => data.chunks_exact(2).map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32()).collect(),
                "<f8" => data.chunks_exact(8).map(|b| f64::from_le_bytes(b.try_into().unwrap()) as f32).collect(),
                other => return Err(fail(&format!("{name} has dtype {other}, expected float"))),
            };
            Ok((shape, values))
        };
        let (_, kp) = floats("keypoints.npy")?;
        let (dshape, descriptors) = floats("descriptors.npy")?;
        let (size_shape, size, dtype) = get("image_size.npy")?;
        let two = |item: usize| -> Option<[u64; 2]> {
            let value = |i: usize| size.get(i * item..(i + 1) * item).map(|b| b.iter().rev().fold(0u64, |v, &x| v << 8 | x as u64));
            (size_shape.iter().product::<usize>() == 2).then_some([value(0)?, value(1)?])
        };
        let size = match dtype.as_str() {
            "<i4" | "<u4" => two(4),
            "<i8" | "<u8" => two(8),
            _ => return Err(fail("image_size must be an integer array")),
        };
        let image_size = size
            .filter(|s| s.iter().all(|v| *v <= u32::MAX as u64))
            .map(|s| [s[0] as u32, s[1] as u32])
            .ok_or_else(|| fail("image_size must hold two sizes [width, height]"))?;
        let n = kp.len() / 2;
        let optional = |name: &str, default: f32| floats(name).map(|(_, v)| v).unwrap_or_else(|_| vec![default; n]);
        let features = Features {
            image_size,
            keypoints: kp.chunks_exact(2).map(|c| [c[0], c[1]]).collect(),
            scores: floats("scores.npy")?.1,
            orientations: optional("orientations.npy", 0.0),
            scales: optional("scales.npy", 1.0),
            dim: dshape.get(1).copied().unwrap_or(0),
            descriptors,
        };
        let counts = [features.scores.len(), features.orientations.len(), features.scales.len()];
        if counts.iter().any(|c| *c != n) || Some(features.descriptors.len()) != n.checked_mul(features.dim) {
            return Err(fail("arrays disagree on the number of keypoints"));
        }
        Ok(features)
    }

    pub fn write_json(&self, path: &Path) -> Result<()> {
        let keypoints: Vec<serde_json::Value> = (0..self.len())
            .map(|i| {
                serde_json::json!({
                    "x": self.keypoints[i][0], "y": self.keypoints[i][1], "score": self.scores[i],
                    "orientation": self.orientations[i], "scale": self.scales[i], "descriptor": self.descriptor(i),
                })
            })
            .collect();
        let doc = serde_json::json!({ "image_size": self.image_size, "dim": self.dim, "keypoints": keypoints });
        write_atomically(path, serde_json::to_string(&doc).expect("json serialises").as_bytes())
    }
}

/// Writes through a temporary file in the same folder and renames it, so no half-written file is ever visible.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    }
    let tmp = path.with_extension(format!("{}.tmp", path.extension().and_then(|e| e.to_str()).unwrap_or("")));
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        Error::io(path, e)
    })
}

fn npy_f32(data: &[f32], shape: &[usize]) -> Vec<u8> {
    npy(bytemuck::cast_slice(data), "<f4", shape)
}

fn npy(data: &[u8], dtype: &str, shape: &[usize]) -> Vec<u8> {
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    let shape_text = if shape.len() == 1 { format!("({},)", dims[0]) } else { format!("({})", dims.join(", ")) };
    let mut header = format!("{{'descr': '{dtype}', 'fortran_order': False, 'shape': {shape_text}, }}");
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend((header.len() as u16).to_le_bytes());
    out.extend(header.as_bytes());
    out.extend(data);
    out
}

fn parse_npy(bytes: &[u8]) -> Option<(Vec<usize>, Vec<u8>, String)> {
    if bytes.len() < 10 || &bytes[..6] != b"\x93NUMPY" {
        return None;
    }
    let (header_len, start) = match bytes[6] {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        _ => (u32::from_le_bytes(bytes.get(8..12)?.try_into().ok()?) as usize, 12),
    };
    let header = std::str::from_utf8(bytes.get(start..start + header_len)?).ok()?;
    let descr = header.split("'descr':").nth(1)?.split('\'').nth(1)?.to_string();
    if header.contains("'fortran_order': True") {
        return None;
    }
    let shape_text = header.split("'shape':").nth(1)?.split('(').nth(1)?.split(')').next()?;
    let shape: Vec<usize> = shape_text.split(',').map(str::trim).filter(|s| !s.is_empty()).map(|s| s.parse().ok()).collect::<Option<_>>()?;
    let data = bytes[start + header_len..].to_vec();
    let item = descr.get(2..)?.parse::<usize>().ok()?;
    let needed = shape.iter().try_fold(item, |n, d| n.checked_mul(*d))?;
    (data.len() >= needed).then_some((shape, data, descr))
}

/// A zip archive with stored (uncompressed) entries: what `np.savez` writes and `np.load` reads.
fn stored_zip(entries: &[(&str, Vec<u8>)]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut central = Vec::new();
    for (name, data) in entries {
        let crc = crc32fast::hash(data);
        let offset = out.len() as u32;
        let local = |sig: u32, central: bool| {
            let mut h = Vec::new();
            h.extend(sig.to_le_bytes());
            if central {
                h.extend(20u16.to_le_bytes());
            }
            h.extend([20u16, 0, 0, 0, 0x21].iter().flat_map(|v| v.to_le_bytes()));
            h.extend(crc.to_le_bytes());
            h.extend((data.len() as u32).to_le_bytes());
            h.extend((data.len() as u32).to_le_bytes());
            h.extend((name.len() as u16).to_le_bytes());
            h.extend(0u16.to_le_bytes());
            if central {
                h.extend([0u16, 0, 0].iter().flat_map(|v| v.to_le_bytes()));
                h.extend(0u32.to_le_bytes());
                h.extend(offset.to_le_bytes());
            }
            h.extend(name.as_bytes());
            h
        };
        out.extend(local(0x0403_4b50, false));
        out.extend(data);
        central.extend(local(0x0201_4b50, true));
    }
    let central_offset = out.len() as u32;
    let count = entries.len() as u16;
    out.extend(&central);
    out.extend(0x0605_4b50u32.to_le_bytes());
    out.extend([0u16, 0, count, count].iter().flat_map(|v| v.to_le_bytes()));
    out.extend((central.len() as u32).to_le_bytes());
    out.extend(central_offset.to_le_bytes());
    out.extend(0u16.to_le_bytes());
    out
}

/// Reads the entries of a zip whose entries are stored (numpy's default `np.savez`).
fn read_stored_zip(bytes: &[u8]) -> Option<Vec<(String, Vec<u8>)>> {
    let mut entries = Vec::new();
    let mut at = 0;
    let u16_at = |i: usize| Some(u16::from_le_bytes(bytes.get(i..i + 2)?.try_into().ok()?) as usize);
    let u32_at = |i: usize| Some(u32::from_le_bytes(bytes.get(i..i + 4)?.try_into().ok()?) as usize);
    while u32_at(at)? == 0x0403_4b50 {
        let method = u16_at(at + 8)?;
        let flags = u16_at(at + 6)?;
        let mut size = u32_at(at + 22)?;
        let name_len = u16_at(at + 26)?;
        let extra_len = u16_at(at + 28)?;
        let name = String::from_utf8(bytes.get(at + 30..at + 30 + name_len)?.to_vec()).ok()?;
        let start = at + 30 + name_len + extra_len;
        if method != 0 {
            return None;
        }
        if size == 0xFFFF_FFFF || flags & 8 != 0 {
            // zip64 or data descriptor: take the size from the extra field or give up
            let extra = bytes.get(at + 30 + name_len..start)?;
            if extra.len() >= 20 && u16::from_le_bytes([extra[0], extra[1]]) == 1 {
                size = u64::from_le_bytes(extra[4..12].try_into().ok()?) as usize;
            } else {
                return None;
            }
        }
        let end = start.checked_add(size)?;
        entries.push((name, bytes.get(start..end)?.to_vec()));
        at = end;
    }
    Some(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Features {
        let mut f = Features::empty([64, 48], 8);
        for i in 0..5 {
            f.keypoints.push([i as f32, 2.0 * i as f32]);
            f.scores.push(1.0 - i as f32 / 10.0);
            f.orientations.push(0.5 * i as f32);
            f.scales.push(1.0 + i as f32);
            f.descriptors.extend((0..8).map(|k| ((i * 8 + k) as f32).sin()));
        }
        f
    }

    /// A valid file with one array replaced.
    fn with_entry(name: &str, data: Vec<u8>) -> Vec<u8> {
        let f = sample();
        let kp: Vec<f32> = f.keypoints.iter().flatten().copied().collect();
        let mut entries = vec![
            ("keypoints.npy", npy_f32(&kp, &[5, 2])),
            ("scores.npy", npy_f32(&f.scores, &[5])),
            ("orientations.npy", npy_f32(&f.orientations, &[5])),
            ("scales.npy", npy_f32(&f.scales, &[5])),
            ("descriptors.npy", npy_f32(&f.descriptors, &[5, 8])),
            ("image_size.npy", npy(bytemuck::cast_slice(&[64i32, 48]), "<i4", &[2])),
        ];
        entries.iter_mut().filter(|(n, _)| *n == name).for_each(|e| e.1 = data.clone());
        stored_zip(&entries)
    }

    #[test]
    fn malformed_third_party_npz_files_are_errors_not_panics() {
        let path = Path::new("third-party.npz");
        let err = |bytes: &[u8]| Features::from_npz(bytes, path).expect_err("must be refused").to_string();
        // the cases a review found panicking: a one-element image_size, a dtype string under 2 characters, scales of
        // another length than the keypoints
        assert!(err(&with_entry("image_size.npy", npy(bytemuck::cast_slice(&[64i32]), "<i4", &[1]))).contains("image_size"));
        assert!(err(&with_entry("image_size.npy", npy(&[], "<i8", &[0]))).contains("image_size"));
        assert!(err(&with_entry("scores.npy", npy(&[0, 0, 0, 0], "f", &[1]))).contains("scores.npy"));
        assert!(err(&with_entry("scales.npy", npy_f32(&[1.0, 2.0], &[2]))).contains("disagree"));
        assert!(err(&with_entry("keypoints.npy", npy(&[1; 40], "<f4", &[usize::MAX, 3]))).contains("keypoints.npy"));
        assert_eq!(Features::from_npz(&with_entry("none", vec![]), path).unwrap(), sample());
    }

    #[test]
    fn truncated_and_mutated_npz_files_never_panic() {
        let good = sample().to_npz();
        let mut outcomes = [0usize; 2];
        let mut check = |bytes: &[u8]| outcomes[Features::from_npz(bytes, Path::new("m.npz")).is_ok() as usize] += 1;
        for len in 0..good.len() {
            check(&good[..len]);
        }
        let mut rng = crate::rng::Rng::new(16);
        for _ in 0..3000 {
            let mut bytes = good.clone();
            for _ in 0..1 + rng.below(4) {
                let i = rng.below(bytes.len());
                bytes[i] ^= 1 << rng.below(8);
            }
            check(&bytes);
        }
        // most mutations land in the data and still read; every header or length hit is an error
        assert!(outcomes[0] >= good.len() && outcomes[1] > 0, "{outcomes:?}");
    }

    #[test]
    fn npz_round_trip() {
        let f = Features {
            image_size: [640, 480],
            keypoints: vec![[1.5, 2.0], [3.0, 4.25]],
            scores: vec![0.9, 0.5],
            orientations: vec![0.1, 6.0],
            scales: vec![1.0, 2.0],
            descriptors: vec![0.6, 0.8, 1.0, 0.0],
            dim: 2,
        };
        let dir = std::env::temp_dir().join(format!("strek-npz-{}", std::process::id()));
        let path = dir.join("a.npz");
        f.write_npz(&path).unwrap();
        assert_eq!(Features::read_npz(&path).unwrap(), f);
        std::fs::remove_dir_all(dir).unwrap();
    }
}
