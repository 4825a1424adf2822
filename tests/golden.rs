//! Parity with the trainer: the engine's reference and GPU paths on the golden input give the float64 outputs of
//! the PyTorch model that exported each shipped weights file (tests/golden/README.md): the default
//! `weights/strek.safetensors` (descriptor version 1) and `weights/strek-v2.safetensors` (version 2, whose golden
//! file also pins the orientation-aligned sampling at fixed keypoints).

mod common;
use common::*;
use safetensors::{Dtype, SafeTensors};
use std::path::Path;
use strek::image_io::Image;
use strek::model::descriptor::{descriptor_reference, DescriptorGpu};
use strek::model::detector::detector_reference;
use strek::model::Level;
use strek::ops::nms_topk::LevelGeom;
use strek::features::KeypointRecord;
use strek::ops::preprocess::to_gray_reference;
use strek::ops::sample::{sample_descriptors, sample_reference, Sampling};
use strek::ops::Map;
use strek::Weights;

struct Golden {
    image: Image,
    group_logits: Map,
    heatmap: Map,
    orientation: Map,
    descriptor_map: Map,
    /// Version 2: level-0 keypoints (x, y, orientation) and their aligned descriptors [K, D].
    keypoints: Option<(Vec<KeypointRecord>, Vec<f32>)>,
}

/// Each shipped weights file and its golden vectors.
const GOLDEN: [(&str, &str); 2] = [
    (strek::DEFAULT_WEIGHTS, "tests/golden/golden.safetensors"),
    ("weights/strek-v2.safetensors", "tests/golden/golden-v2.safetensors"),
];

fn load_golden((weights, golden): (&str, &str)) -> (Weights, Golden) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let weights = Weights::load(&root.join(weights)).expect("the shipped weights load");
    let bytes = std::fs::read(root.join(golden)).expect("golden vectors present");
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let f64_map = |name: &str| {
        let t = st.tensor(name).unwrap();
        assert_eq!(t.dtype(), Dtype::F64, "{name}");
        let shape = t.shape().to_vec();
        let data: Vec<f32> = t.data().chunks_exact(8).map(|b| f64::from_le_bytes(b.try_into().unwrap()) as f32).collect();
        match shape.len() {
            2 => Map::new(1, shape[0], shape[1], data),
            _ => Map::new(shape[0], shape[1], shape[2], data),
        }
    };
    let image = st.tensor("image").unwrap();
    assert_eq!(image.dtype(), Dtype::U8);
    let (h, w) = (image.shape()[0] as u32, image.shape()[1] as u32);
    let golden = Golden {
        image: Image::gray8(w, h, image.data().to_vec()),
        group_logits: f64_map("group_logits"),
        heatmap: f64_map("heatmap"),
        orientation: f64_map("orientation"),
        descriptor_map: f64_map("descriptor_map"),
        keypoints: st.tensor("keypoints").ok().map(|_| {
            let k = f64_map("keypoints");
            let records = k.data.chunks_exact(3).map(|p| KeypointRecord { x: p[0], y: p[1], orientation: p[2], valid: 1.0, ..Default::default() });
            (records.collect(), f64_map("descriptors").data)
        }),
    };
    assert_eq!(golden.keypoints.is_some(), weights.config.descriptor.kind == strek::config::DescriptorKind::GroupUnet);
    (weights, golden)
}

fn sampling(weights: &Weights, golden: &Golden) -> Sampling {
    let (m, image) = (&golden.descriptor_map, &golden.image);
    Sampling::new(&weights.config, (image.width, image.height), (m.w as u32, m.h as u32))
}

/// Orientation where the two best bins are clearly apart (elsewhere rounding may pick the other bin).
fn assert_orientations(what: &str, got: &Map, golden: &Golden) {
    let n = golden.group_logits.c;
    let plane = got.h * got.w;
    let mut compared = 0;
    for p in 0..plane {
        let mut v: Vec<f32> = (0..n).map(|r| golden.group_logits.data[r * plane + p]).collect();
        v.sort_by(|a, b| b.total_cmp(a));
        if v[0] - v[1] < 1e-4 * v[0].abs().max(1e-3) {
            continue;
        }
        let d = (got.data[p] - golden.orientation.data[p]).rem_euclid(std::f32::consts::TAU);
        assert!(d.min(std::f32::consts::TAU - d) < 1e-3, "{what} orientation at {p}: {} vs {}", got.data[p], golden.orientation.data[p]);
        compared += 1;
    }
    assert!(compared * 10 >= plane * 9, "{what}: only {compared} of {plane} orientations comparable");
}

#[test]
fn reference_matches_the_trainer() {
    GOLDEN.into_iter().for_each(reference_matches)
}

#[test]
fn gpu_matches_the_trainer() {
    GOLDEN.into_iter().for_each(gpu_matches)
}

fn reference_matches(files: (&str, &str)) {
    let (weights, golden) = load_golden(files);
    assert_eq!(weights.config.group_order, golden.group_logits.c);
    let gray = to_gray_reference(&golden.image, weights.config.input);
    let (logits, heatmap, orientation) = detector_reference(&weights.detector(), &gray);
    let tol = 1e-5 * max_abs(&golden.group_logits.data).max(1e-3);
    assert_close("group logits", &logits.data, &golden.group_logits.data, tol);
    assert_close("heatmap", &heatmap.data, &golden.heatmap.data, tol);
    assert_orientations("reference", &orientation, &golden);
    let map = descriptor_reference(&weights.descriptor(), &weights.config, &gray);
    assert_eq!((map.c, map.h, map.w), (golden.descriptor_map.c, golden.descriptor_map.h, golden.descriptor_map.w));
    assert_close("descriptor map", &map.data, &golden.descriptor_map.data, 1e-4);
    if let Some((keypoints, descriptors)) = &golden.keypoints {
        let got = sample_reference(&map, sampling(&weights, &golden), keypoints);
        assert_close("aligned descriptors", &got, descriptors, 1e-4);
    }
}

fn gpu_matches(files: (&str, &str)) {
    let (weights, golden) = load_golden(files);
    let gpu = gpu();
    let gray = to_gray_reference(&golden.image, weights.config.input);
    let (w, h) = (gray.w as u32, gray.h as u32);
    let detector = strek::model::detector::DetectorGpu::upload(gpu, &weights.detector(), strek::ops::Precision::F32);
    let (hw, hh) = (golden.heatmap.w, golden.heatmap.h);
    let geom = LevelGeom { hw: hw as u32, hh: hh as u32, offset: 0, margin: 0, sx: 1.0, sy: 1.0 };
    let levels = [Level { w, h, geom }];
    let ping = gpu.storage("ping", detector.scratch_bytes(&levels));
    let pong = gpu.storage("pong", detector.scratch_bytes(&levels));
    let score = gpu.storage("score", 4 * (hw * hh) as u64);
    let orientation = gpu.storage("orientation", 4 * (hw * hh) as u64);
    let input = upload(&gray);
    gpu.run(&detector.encode(gpu, &input, &levels, (&ping, &pong), (&score, &orientation))).unwrap();
    let tol = 1e-5 * max_abs(&golden.group_logits.data).max(1e-3);
    assert_close("gpu heatmap", &download(&score, 1, hh, hw).data, &golden.heatmap.data, tol);
    assert_orientations("gpu", &download(&orientation, 1, hh, hw), &golden);
    let descriptor = DescriptorGpu::upload(gpu, &weights.descriptor(), &weights.config, strek::ops::Precision::F32);
    let plan = descriptor.plan(gpu, &input, (w, h));
    gpu.run(&plan.dispatches).unwrap();
    let g = &golden.descriptor_map;
    assert_eq!(plan.map_size, (g.w as u32, g.h as u32));
    assert_close("gpu descriptor map", &download(&plan.map, g.c, g.h, g.w).data, &g.data, 1e-4);
    if let Some((keypoints, descriptors)) = &golden.keypoints {
        let kb = gpu.storage_with("keypoints", bytemuck::cast_slice(keypoints));
        let out = gpu.storage("descriptors", 4 * descriptors.len() as u64);
        let count = keypoints.len() as u32;
        gpu.run(&[sample_descriptors(gpu, &kb, count, &plan.map, plan.map_size, g.c as u32, sampling(&weights, &golden), &out)]).unwrap();
        assert_close("gpu aligned descriptors", &gpu.read_f32(&out, descriptors.len()).unwrap(), descriptors, 1e-4);
    }
}
