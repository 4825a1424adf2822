//! Parity with the trainer: the engine's reference and GPU paths on the golden input give the float64 outputs of
//! the PyTorch model that exported `weights/strek.safetensors` (tests/golden/README.md).

mod common;
use common::*;
use safetensors::{Dtype, SafeTensors};
use std::path::Path;
use strek::image_io::Image;
use strek::model::descriptor::{descriptor_reference, DescriptorGpu};
use strek::model::detector::detector_reference;
use strek::ops::preprocess::to_gray_reference;
use strek::ops::Map;
use strek::Weights;

struct Golden {
    image: Image,
    group_logits: Map,
    heatmap: Map,
    orientation: Map,
    descriptor_map: Map,
}

fn load_golden() -> (Weights, Golden) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let weights = Weights::load(&root.join(strek::DEFAULT_WEIGHTS)).expect("the shipped weights load");
    let bytes = std::fs::read(root.join("tests/golden/golden.safetensors")).expect("golden vectors present");
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
    };
    (weights, golden)
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
    let (weights, golden) = load_golden();
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
}

#[test]
fn gpu_matches_the_trainer() {
    let (weights, golden) = load_golden();
    let gpu = gpu();
    let gray = to_gray_reference(&golden.image, weights.config.input);
    let (w, h) = (gray.w as u32, gray.h as u32);
    let detector = strek::model::detector::DetectorGpu::upload(gpu, &weights.detector());
    let (hw, hh) = (golden.heatmap.w, golden.heatmap.h);
    let ping = gpu.storage("ping", 4 * detector.scratch_len(w, h));
    let pong = gpu.storage("pong", 4 * detector.scratch_len(w, h));
    let score = gpu.storage("score", 4 * (hw * hh) as u64);
    let orientation = gpu.storage("orientation", 4 * (hw * hh) as u64);
    let input = upload(&gray);
    gpu.run(&detector.encode_level(gpu, &input, (w, h), &ping, &pong, &score, &orientation, 0)).unwrap();
    let tol = 1e-5 * max_abs(&golden.group_logits.data).max(1e-3);
    assert_close("gpu heatmap", &download(&score, 1, hh, hw).data, &golden.heatmap.data, tol);
    assert_orientations("gpu", &download(&orientation, 1, hh, hw), &golden);
    let descriptor = DescriptorGpu::upload(gpu, &weights.descriptor(), &weights.config);
    let plan = descriptor.plan(gpu, &input, (w, h));
    gpu.run(&plan.dispatches).unwrap();
    let g = &golden.descriptor_map;
    assert_eq!(plan.map_size, (g.w as u32, g.h as u32));
    assert_close("gpu descriptor map", &download(&plan.map, g.c, g.h, g.w).data, &g.data, 1e-4);
}
