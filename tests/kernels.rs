//! Every GPU kernel against its plain-Rust reference on random, odd-sized inputs (1x1, 7x13, 1023x769 and sizes
//! that are not multiples of the 8x8 workgroup).
//!
//! Tolerances: float kernels sum at most a few hundred f32 products in a fixed order while the references sum in
//! f64 (convolutions) or in f32 in the same order (the rest); the observed differences are rounding, of order
//! 1e-7 relative per term, so 1e-5 of the output's magnitude bounds them with margin. Selection (NMS, top-k) does
//! no arithmetic on scores and must match exactly.

mod common;
use common::*;
use strek::config::{ConvSpec, GroupStructure, InputNorm};
use strek::image_io::{Image, Samples};
use strek::ops::conv::{conv2d_reference, out_len, GpuConv, Part};
use strek::features::KeypointRecord;
use strek::ops::nms_topk::{nms_topk_reference, LevelGeom, NmsSettings, NmsTopk};
use strek::ops::orientation_pool::{conv_orientation_pool, orientation_pool_reference};
use strek::ops::sample::{sample_descriptors, sample_reference, Sampling};
use strek::config::PoolMode;
use strek::ops::{preprocess, unet, Map, Precision};

const F32_IO: (Precision, Precision) = (Precision::F32, Precision::F32);
use strek::rng::Rng;
use strek::weights::{ConvWeights, Weights};
use strek::ModelConfig;

const SIZES: &[(usize, usize)] = &[(1, 1), (7, 13), (13, 7), (33, 17), (1023, 769)];

fn random_image(rng: &mut Rng, w: u32, h: u32, channels: u32, bits: u32) -> Image {
    let n = (w * h * channels) as usize;
    let samples = if bits == 8 {
        Samples::U8((0..n).map(|_| rng.below(256) as u8).collect())
    } else {
        Samples::U16((0..n).map(|_| rng.below(65536) as u16).collect())
    };
    Image { width: w, height: h, channels, samples }
}

#[test]
fn to_gray_matches_reference_for_every_pixel_format() {
    let gpu = gpu();
    let mut rng = Rng::new(1);
    let norm = InputNorm { mean: 0.45, std: 0.27 };
    for &(w, h) in SIZES {
        for (channels, bits) in [(1, 8), (2, 8), (3, 8), (4, 8), (1, 16), (3, 16), (4, 16)] {
            let image = random_image(&mut rng, w as u32, h as u32, channels, bits);
            let raw = gpu.storage_with("raw", &image.packed_words());
            let gray = gpu.storage("gray", 4 * (w * h) as u64);
            gpu.run(&[preprocess::to_gray(gpu, &image, norm, &raw, &gray)]).unwrap();
            let want = preprocess::to_gray_reference(&image, norm);
            assert_close(&format!("to_gray {w}x{h} c{channels} {bits}-bit"), &download(&gray, 1, h, w).data, &want.data, 1e-5);
        }
    }
}

#[test]
fn resize_matches_reference() {
    let gpu = gpu();
    let mut rng = Rng::new(2);
    for &((w, h), (ow, oh)) in &[((1, 1), (1, 1)), ((7, 13), (5, 9)), ((13, 7), (7, 4)), ((64, 48), (32, 24)), ((1023, 769), (723, 544)), ((1023, 769), (256, 192))] {
        let src = random_map(&mut rng, 1, h, w);
        let (input, tmp, out) = (upload(&src), gpu.storage("tmp", 4 * (ow * h) as u64), gpu.storage("out", 4 * (ow * oh) as u64));
        gpu.run(&preprocess::resize(gpu, &input, &tmp, &out, (w as u32, h as u32), (ow as u32, oh as u32))).unwrap();
        let want = preprocess::resize_reference(&src, ow, oh);
        assert_close(&format!("resize {w}x{h} -> {ow}x{oh}"), &download(&out, 1, oh, ow).data, &want.data, 1e-5);
    }
}

fn random_conv(rng: &mut Rng, c_out: usize, c_in: usize, k: usize) -> ConvWeights {
    let spec = ConvSpec { name: "test".into(), c_out, c_in, k, level: 0, group: GroupStructure::None };
    let weight = rng.vec(c_out * c_in * k * k, -0.3, 0.3);
    let bias = rng.vec(c_out, -0.5, 0.5);
    ConvWeights { spec, weight, bias }
}

#[test]
fn conv2d_matches_reference() {
    let mut rng = Rng::new(3);
    // (w, h, c_in, c_out, k, pad, relu)
    let cases = [
        (1, 1, 1, 8, 3, 1, true),
        (1, 1, 4, 4, 1, 0, false),
        (37, 9, 48, 16, 1, 0, true),
        (70, 3, 12, 8, 1, 0, false),
        (7, 13, 16, 16, 5, 0, true),
        (13, 7, 3, 12, 3, 1, false),
        (33, 17, 8, 8, 5, 2, true),
        (1023, 769, 1, 8, 5, 0, true),
    ];
    for (w, h, c_in, c_out, k, pad, relu) in cases {
        let x = random_map(&mut rng, c_in, h, w);
        let conv = random_conv(&mut rng, c_out, c_in, k);
        let (ow, oh) = (out_len(w, k, pad), out_len(h, k, pad));
        let want = conv2d_reference(&x, &conv, pad, relu);
        let tol = 1e-5 * max_abs(&want.data).max(1.0);
        for (variant, gpu) in conv_variants() {
            let layer = GpuConv::upload(&gpu, &conv);
            let out = gpu.storage("conv out", 4 * (c_out * ow * oh) as u64);
            gpu.run(&[layer.dispatch(&gpu, &upload(&x), &out, (w as u32, h as u32), pad as u32, relu)]).unwrap();
            let got = download(&out, c_out, oh, ow);
            assert_close(&format!("conv {w}x{h} {c_in}->{c_out} k{k} pad{pad} ({variant})"), &got.data, &want.data, tol);
        }
    }
}

#[test]
fn fused_last_layer_with_orientation_pooling_matches_reference() {
    let mut rng = Rng::new(4);
    for n in [4, 8, 16] {
        let mut config = ModelConfig::default_s_trek();
        config.group_order = n;
        let last = Weights::random(&config, n as u64).detector().pop().unwrap();
        for &(w, h) in &[(5, 5), (11, 17), (64, 61)] {
            let x = random_map(&mut rng, last.spec.c_in, h, w);
            let (ow, oh) = (w - 4, h - 4);
            let logits = conv2d_reference(&x, &last, 0, false);
            let (want_score, want_orientation) = orientation_pool_reference(&logits);
            for (variant, gpu) in conv_variants() {
                let layer = GpuConv::upload_for_pooling(&gpu, &last, Precision::F32);
                let offset = 3; // the maps are written at an offset in the pooled buffers
                let score = gpu.storage("score", 4 * (offset + ow * oh) as u64);
                let orientation = gpu.storage("orientation", 4 * (offset + ow * oh) as u64);
                let part = Part { in_size: (w as u32, h as u32), in_offset: 0, out_offset: offset as u32 };
                gpu.run(&[conv_orientation_pool(&gpu, &layer, &upload(&x), &[part], &score, &orientation)]).unwrap();
                let got_score = &gpu.read_f32(&score, offset + ow * oh).unwrap()[offset..];
                let got_orientation = &gpu.read_f32(&orientation, offset + ow * oh).unwrap()[offset..];
                let tol = 1e-5 * max_abs(&want_score.data).max(1.0);
                assert_close(&format!("score C{n} {w}x{h} ({variant})"), got_score, &want_score.data, tol);
                // the parabola divides by a curvature that can be small: compare where the argmax is clear
                let plane = ow * oh;
                for p in 0..plane {
                    let mut v: Vec<f32> = (0..n).map(|r| logits.data[r * plane + p]).collect();
                    v.sort_by(|a, b| b.total_cmp(a));
                    if v[0] - v[1] > 1e-3 * v[0].abs().max(1.0) {
                        let d = angle_diff(got_orientation[p], want_orientation.data[p]);
                        assert!(
                            d < 1e-3,
                            "orientation C{n} {w}x{h} at {p} ({variant}): gpu {} reference {}",
                            got_orientation[p],
                            want_orientation.data[p]
                        );
                    }
                }
            }
        }
    }
}

fn run_nms(levels: &[(LevelGeom, Map, Map)], s: &NmsSettings) -> Vec<KeypointRecord> {
    let gpu = gpu();
    let scores: Vec<f32> = levels.iter().flat_map(|(_, m, _)| m.data.clone()).collect();
    let orientations: Vec<f32> = levels.iter().flat_map(|(_, _, o)| o.data.clone()).collect();
    let sb = gpu.storage_with("scores", bytemuck::cast_slice(&scores));
    let ob = gpu.storage_with("orientations", bytemuck::cast_slice(&orientations));
    let geoms: Vec<LevelGeom> = levels.iter().map(|l| l.0).collect();
    let select = NmsTopk::build(gpu, &geoms, s, &sb, &ob);
    gpu.run(&select.dispatches).unwrap();
    let bytes = gpu.read_buffer(&select.keypoints, KeypointRecord::BYTES * select.count as u64).unwrap();
    let records: Vec<KeypointRecord> = bytemuck::pod_collect_to_vec(&bytes);
    records.into_iter().filter(|r| r.valid > 0.5).collect()
}

#[test]
fn nms_topk_matches_reference_exactly() {
    let mut rng = Rng::new(5);
    for (sizes, radius, border, threshold, k, quantum) in [
        (vec![(1, 1)], 1, 0, -1e30, 10, 0.0),
        (vec![(7, 13), (5, 9)], 1, 0, -1e30, 1000, 0.0),
        (vec![(13, 7)], 2, 1, 0.0, 5, 0.25), // coarse scores: many ties, broken by index
        (vec![(200, 150), (141, 106), (100, 75)], 1, 2, -0.5, 500, 0.0),
        (vec![(1023, 769)], 1, 0, -1e30, 2048, 0.0),
        (vec![(64, 48)], 3, 0, -1e30, 7, 0.5),
        (vec![(40, 30), (28, 21)], 1, 0, -1e30, 50, 10.0), // a flat heatmap: every score ties
    ] {
        let mut offset = 0;
        let levels: Vec<(LevelGeom, Map, Map)> = sizes
            .iter()
            .enumerate()
            .map(|(l, &(w, h))| {
                let mut score = random_map(&mut rng, 1, h, w);
                if quantum > 0.0 {
                    score.data.iter_mut().for_each(|v| *v = (*v / quantum).round() * quantum);
                }
                let orientation = Map::new(1, h, w, rng.vec(w * h, 0.0, std::f32::consts::TAU));
                let s = 1.0 + l as f32 * 0.414;
                let geom = LevelGeom { hw: w as u32, hh: h as u32, offset, margin: 14, sx: s, sy: s * 1.01 };
                offset += (w * h) as u32;
                (geom, score, orientation)
            })
            .collect();
        let settings = NmsSettings { radius, border, threshold, max_keypoints: k };
        let got = run_nms(&levels, &settings);
        let refs: Vec<(LevelGeom, &Map, &Map)> = levels.iter().map(|(g, s, o)| (*g, s, o)).collect();
        let want = nms_topk_reference(&refs, &settings);
        assert_eq!(got.len(), want.len(), "keypoint count for levels {sizes:?}");
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            // the sub-pixel offset divides, and WGSL's division may be a few ulp off the correctly rounded one
            let position_only = |r: &KeypointRecord| KeypointRecord { x: 0.0, y: 0.0, ..*r };
            assert_eq!(position_only(g), position_only(w), "keypoint {i} for levels {sizes:?}");
            assert!((g.x - w.x).abs() < 1e-4 && (g.y - w.y).abs() < 1e-4, "keypoint {i} for levels {sizes:?}: {g:?} vs {w:?}");
        }
        assert!(want.len() <= k as usize);
        assert!(want.windows(2).all(|p| p[0].score >= p[1].score));
    }
}

#[test]
fn unet_ops_match_reference() {
    let gpu = gpu();
    let mut rng = Rng::new(6);
    for &(w, h) in &[(1, 1), (2, 2), (7, 13), (13, 7), (67, 45)] {
        let c = 5;
        let x = random_map(&mut rng, c, h, w);
        for mode in [PoolMode::Mean2x2, PoolMode::BilinearHalf] {
            let (pw, ph) = (mode.halve(w as u32) as usize, mode.halve(h as u32) as usize);
            let pooled = gpu.storage("pooled", 4 * (c * pw * ph).max(1) as u64);
            gpu.run(&[unet::pool(gpu, &upload(&x), &pooled, (w as u32, h as u32), c as u32, mode, F32_IO)]).unwrap();
            let want = unet::pool_reference(&x, mode);
            assert_eq!((want.w, want.h), (pw, ph));
            assert_close(&format!("{mode:?} pool {w}x{h}"), &download(&pooled, c, ph, pw).data, &want.data, 1e-6);
        }

        let small = random_map(&mut rng, 4, (h / 2).max(1), (w / 2).max(1));
        let skip = random_map(&mut rng, 3, h, w);
        let cat = gpu.storage("cat", 4 * (7 * w * h) as u64);
        let d = unet::upsample_concat(gpu, &upload(&small), &upload(&skip), &cat, (small.w as u32, small.h as u32), (w as u32, h as u32), 4, 3, F32_IO);
        gpu.run(&[d]).unwrap();
        let want = unet::upsample_concat_reference(&small, &skip);
        assert_close(&format!("upsample_concat {w}x{h}"), &download(&cat, 7, h, w).data, &want.data, 1e-6);

        let normed = gpu.storage("normed", 4 * (c * w * h) as u64);
        gpu.run(&[unet::l2norm(gpu, &upload(&x), &normed, (w as u32, h as u32), c as u32, F32_IO)]).unwrap();
        let want = unet::l2norm_reference(&x);
        assert_close(&format!("l2norm {w}x{h}"), &download(&normed, c, h, w).data, &want.data, 1e-6);
    }
}

#[test]
fn descriptor_sampling_matches_reference() {
    let gpu = gpu();
    let mut rng = Rng::new(7);
    // version 1 (stride 4, no alignment) and version 2 (odd image sizes, aligned over 8 or 4 group channels)
    let cases = [(1, 1, 4, 3, 0), (9, 7, 16, 65, 0), (33, 17, 128, 1000, 0), (1, 1, 8, 3, 8), (9, 7, 16, 65, 8), (33, 17, 128, 1000, 8), (5, 3, 12, 77, 4)];
    for &(w, h, dim, count, group_order) in &cases {
        let map = random_map(&mut rng, dim, h, w);
        let (iw, ih) = (4 * w as u32 - 1, 4 * h as u32 - 3);
        let sampling = Sampling { scale: [w as f32 / iw as f32, h as f32 / ih as f32], group_order };
        let keypoints: Vec<KeypointRecord> = (0..count)
            .map(|i| KeypointRecord {
                // some fall outside the map on purpose: sampling clamps
                x: rng.range(-10.0, iw as f32 + 10.0),
                y: rng.range(-10.0, ih as f32 + 10.0),
                // orientations in [0, 2pi) as the detector gives them, some exactly on bins
                orientation: if i % 5 == 0 { (i % 8) as f32 * std::f32::consts::FRAC_PI_4 } else { rng.range(0.0, std::f32::consts::TAU) },
                valid: 1.0,
                ..Default::default()
            })
            .collect();
        let kb = gpu.storage_with("keypoints", bytemuck::cast_slice(&keypoints));
        let out = gpu.storage("descriptors", 4 * (count * dim) as u64);
        let d = sample_descriptors(gpu, &kb, count as u32, &upload(&map), (w as u32, h as u32), dim as u32, sampling, &out);
        gpu.run(&[d]).unwrap();
        let want = sample_reference(&map, sampling, &keypoints);
        assert_close(&format!("sample {w}x{h} D{dim} N{group_order}"), &gpu.read_f32(&out, count * dim).unwrap(), &want, 1e-5);
    }
}

#[test]
fn parabola_refinement_finds_the_vertex_and_is_symmetric() {
    use strek::ops::nms_topk::{parabola_offset, refine_reference};
    // samples of -(x - 0.3)^2 at -1, 0, 1: the vertex is recovered exactly
    let f = |x: f32| -(x - 0.3) * (x - 0.3);
    assert!((parabola_offset(Some(f(-1.0)), f(0.0), Some(f(1.0))) - 0.3).abs() < 1e-6);
    let mut rng = Rng::new(12);
    for _ in 0..10_000 {
        let (a, c) = (rng.range(-2.0, 1.0), rng.range(-2.0, 1.0));
        let b = a.max(c) + rng.range(0.0, 1.0);
        let t = parabola_offset(Some(a), b, Some(c));
        assert_eq!(parabola_offset(Some(c), b, Some(a)), -t, "a mirror negates the offset exactly");
        assert!(t.abs() <= 0.5);
    }
    assert_eq!(parabola_offset(None, 1.0, Some(0.0)), 0.0, "no neighbour, no refinement");
    assert_eq!(parabola_offset(Some(1.0), 1.0, Some(1.0)), 0.0, "flat: no curvature");
    assert_eq!(parabola_offset(Some(1.0), 1.0, Some(0.0)), -0.5, "a tie clamps to half a pixel");
    // on a map: x and y refined independently, the edge left alone
    let (w, h) = (5, 4);
    let map: Vec<f32> = (0..w * h).map(|i| -(((i % w) as f32 - 2.2).powi(2) + ((i / w) as f32 - 0.8).powi(2))).collect();
    let (x, y) = refine_reference(&map, w, h, 2, 1);
    assert!((x - 2.2).abs() < 1e-5 && (y - 0.8).abs() < 1e-5, "({x}, {y})");
    assert_eq!(refine_reference(&map, w, h, 0, 0).0, 0.0);
}

/// f16 storage (adapters with SHADER_F16; lavapipe has it): a map rounded to f16, as the GPU stores it.
fn to_f16(map: &Map) -> Map {
    Map::new(map.c, map.h, map.w, map.data.iter().map(|&v| half::f16::from_f32(v).to_f32()).collect())
}

fn upload_f16(map: &Map) -> wgpu::Buffer {
    let halves: Vec<half::f16> = map.data.iter().map(|&v| half::f16::from_f32(v)).collect();
    gpu().storage_with("f16 input", bytemuck::cast_slice(&halves))
}

fn download_f16(buffer: &wgpu::Buffer, c: usize, h: usize, w: usize) -> Map {
    let bytes = gpu().read_buffer(buffer, 2 * (c * h * w) as u64).unwrap();
    let halves: Vec<half::f16> = bytemuck::pod_collect_to_vec(&bytes);
    Map::new(c, h, w, halves.iter().map(|v| v.to_f32()).collect())
}

fn has_f16() -> bool {
    let supported = gpu().features.contains(wgpu::Features::SHADER_F16);
    if !supported {
        eprintln!("skipped: {} has no SHADER_F16", gpu().adapter);
    }
    supported
}

/// Convolutions with f16 storage against the reference on the same f16-rounded inputs and filters: what remains is
/// f32 accumulation and one rounding of each output to f16 (relative 2^-11), so 1e-3 of the magnitude bounds it.
/// Both variants: f32 input (the first layer reads the gray image) and f16 input.
#[test]
fn f16_convolutions_match_reference_on_rounded_inputs() {
    if !has_f16() {
        return;
    }
    let mut rng = Rng::new(31);
    for (w, h, c_in, c_out, k, pad, relu) in [(1, 1, 1, 8, 3, 1, true), (7, 13, 16, 16, 5, 0, true), (33, 17, 24, 12, 3, 1, false), (70, 41, 1, 16, 5, 0, true)] {
        let x = to_f16(&random_map(&mut rng, c_in, h, w));
        let mut conv = random_conv(&mut rng, c_out, c_in, k);
        conv.weight.iter_mut().chain(conv.bias.iter_mut()).for_each(|v| *v = half::f16::from_f32(*v).to_f32());
        let want = conv2d_reference(&x, &conv, pad, relu);
        let (ow, oh) = (out_len(w, k, pad), out_len(h, k, pad));
        let tol = 1e-3 * max_abs(&want.data).max(1.0);
        for (variant, gpu) in conv_variants() {
            let layer = GpuConv::upload_in(&gpu, &conv, Precision::F16);
            for (input, stored) in [(upload(&x), Precision::F32), (upload_f16(&x), Precision::F16)] {
                let out = gpu.storage("conv out", 2 * (c_out * ow * oh) as u64);
                let part = Part { in_size: (w as u32, h as u32), in_offset: 0, out_offset: 0 };
                gpu.run(&[layer.dispatch_parts(&gpu, (&input, stored), &out, &[part], pad as u32, relu)]).unwrap();
                let got = download_f16(&out, c_out, oh, ow);
                assert_close(&format!("f16 conv {w}x{h} {c_in}->{c_out} k{k}, {stored:?} input ({variant})"), &got.data, &want.data, tol);
            }
        }
    }
}

#[test]
fn f16_unet_ops_match_reference_on_rounded_inputs() {
    if !has_f16() {
        return;
    }
    let gpu = gpu();
    let mut rng = Rng::new(32);
    let f16_io = (Precision::F16, Precision::F16);
    for &(w, h) in &[(1, 1), (7, 13), (67, 45)] {
        let c = 5;
        let x = to_f16(&random_map(&mut rng, c, h, w));
        for mode in [PoolMode::Mean2x2, PoolMode::BilinearHalf] {
            let (pw, ph) = (mode.halve(w as u32) as usize, mode.halve(h as u32) as usize);
            let pooled = gpu.storage("pooled", 2 * (c * pw * ph).max(2) as u64);
            gpu.run(&[unet::pool(gpu, &upload_f16(&x), &pooled, (w as u32, h as u32), c as u32, mode, f16_io)]).unwrap();
            let want = unet::pool_reference(&x, mode);
            assert_close(&format!("f16 {mode:?} pool {w}x{h}"), &download_f16(&pooled, c, ph, pw).data, &want.data, 1e-3 * max_abs(&want.data).max(1.0));
        }
        let small = to_f16(&random_map(&mut rng, 4, (h / 2).max(1), (w / 2).max(1)));
        let skip = to_f16(&random_map(&mut rng, 3, h, w));
        let cat = gpu.storage("cat", 2 * (7 * w * h).max(2) as u64);
        let d = unet::upsample_concat(gpu, &upload_f16(&small), &upload_f16(&skip), &cat, (small.w as u32, small.h as u32), (w as u32, h as u32), 4, 3, f16_io);
        gpu.run(&[d]).unwrap();
        let want = unet::upsample_concat_reference(&small, &skip);
        assert_close(&format!("f16 upsample_concat {w}x{h}"), &download_f16(&cat, 7, h, w).data, &want.data, 1e-3 * max_abs(&want.data).max(1.0));
        // the L2 norm reads f16 and writes the f32 map that sampling reads
        let normed = gpu.storage("normed", 4 * (c * w * h) as u64);
        gpu.run(&[unet::l2norm(gpu, &upload_f16(&x), &normed, (w as u32, h as u32), c as u32, (Precision::F16, Precision::F32))]).unwrap();
        let want = unet::l2norm_reference(&x);
        assert_close(&format!("f16 l2norm {w}x{h}"), &download(&normed, c, h, w).data, &want.data, 1e-5);
    }
}
