//! The CPU path: every fast CPU kernel against its plain-Rust reference on random odd-sized inputs (1x1, 7x13, sizes
//! that are not multiples of any pixel group or band), with every kernel this machine runs (AVX-512, AVX2, the gemm
//! crate); the whole CPU extraction against `extract_reference` and against the WGSL path on the test adapter.
//!
//! Tolerances: the convolutions sum up to a few thousand f32 products in a blocked order while the reference sums in
//! f64, so 1e-5 of the output's magnitude (times the square root of the terms' count, as for tests/kernels.rs)
//! bounds the rounding; the U-Net's data movement computes in the reference's order and must match to the bit.

mod common;
use common::*;
use strek::config::{ConvSpec, GroupStructure, PoolMode};
use strek::cpu::conv::{conv, conv1x1_to_map, Kernel, PackedConv};
use strek::cpu::hwc::{BufferPool, HwcMap};
use strek::cpu::{unet, CpuExtractor};
use strek::demo::scene;
use strek::model::descriptor::descriptor_reference;
use strek::model::detector::detector_reference;
use strek::model::extract_reference;
use strek::ops::conv::conv2d_reference;
use strek::ops::{unet as unet_ref, Map};
use strek::rng::Rng;
use strek::weights::ConvWeights;
use strek::{Device, Extract, GpuExtractor, GpuOptions, ModelConfig, Weights};

fn random_conv(rng: &mut Rng, c_in: usize, c_out: usize, k: usize) -> ConvWeights {
    let spec = ConvSpec { name: format!("test {c_in}->{c_out} {k}x{k}"), c_out, c_in, k, level: 0, group: GroupStructure::None };
    let std = (2.0 / (c_in * k * k) as f32).sqrt();
    ConvWeights { spec, weight: (0..c_out * c_in * k * k).map(|_| rng.normal() * std).collect(), bias: rng.vec(c_out, -0.1, 0.1) }
}

/// Tolerance of a convolution of `terms` products whose outputs reach `scale`.
fn conv_tolerance(want: &Map, terms: usize) -> f32 {
    1e-6 * max_abs(&want.data).max(1.0) * (terms as f32).sqrt()
}

#[test]
fn valid_convolutions_match_the_reference_with_every_kernel() {
    let mut rng = Rng::new(11);
    // (c_in, c_out, k): the detector's lifting, group and last layers, 8- and 4-channel maps (half vectors), a C4
    // model's 12 channels, the widest direct-kernel layer, a GEMM layer.
    let layers = [(1, 16, 5), (16, 16, 5), (16, 8, 5), (8, 8, 5), (4, 4, 3), (12, 12, 3), (16, 32, 3), (32, 48, 3)];
    // Output sizes 1x1 (input k x k), 7x13 and sizes that are no multiple of the 12/14-pixel groups or a band.
    for &(c_in, c_out, k) in &layers {
        let layer = random_conv(&mut rng, c_in, c_out, k);
        let packed = PackedConv::new(&layer);
        for &(ow, oh) in &[(1, 1), (7, 13), (13, 7), (37, 29), (301, 11)] {
            let x = random_map(&mut rng, c_in, oh + k - 1, ow + k - 1);
            let want = conv2d_reference(&x, &layer, 0, c_out != 8);
            for kernel in Kernel::available() {
                let mut pool = BufferPool::default();
                let input = HwcMap::from_map(&mut pool, &x, 0).unwrap();
                let got = conv(&mut pool, &input, &packed, false, c_out != 8, kernel).unwrap().to_map();
                let what = format!("{} on {ow}x{oh} with {kernel:?}", layer.spec.name);
                assert_close(&what, &got.data, &want.data, conv_tolerance(&want, c_in * k * k));
            }
        }
    }
}

#[test]
fn same_convolutions_match_the_reference_with_every_kernel() {
    let mut rng = Rng::new(12);
    // The descriptor's layers: first (1 channel), narrow, direct-kernel width, GEMM widths, the decoder's concat.
    let layers = [(1, 16, 3), (16, 16, 3), (16, 32, 3), (32, 64, 3), (64, 128, 3), (192, 128, 3), (20, 12, 5), (16, 8, 3)];
    for &(c_in, c_out, k) in &layers {
        let layer = random_conv(&mut rng, c_in, c_out, k);
        let packed = PackedConv::new(&layer);
        for &(w, h) in &[(1, 1), (7, 13), (13, 7), (33, 17), (131, 9)] {
            let x = random_map(&mut rng, c_in, h, w);
            let want = conv2d_reference(&x, &layer, k / 2, true);
            for kernel in Kernel::available() {
                let mut pool = BufferPool::default();
                let input = HwcMap::from_map(&mut pool, &x, k / 2).unwrap();
                let out = conv(&mut pool, &input, &packed, true, true, kernel).unwrap();
                assert_border_is_zero(&out);
                let what = format!("{} on {w}x{h} with {kernel:?}", layer.spec.name);
                assert_close(&what, &out.to_map().data, &want.data, conv_tolerance(&want, c_in * k * k));
            }
        }
    }
}

/// Every stored pixel outside the content is zero: the next same convolution reads it as padding.
fn assert_border_is_zero(m: &HwcMap) {
    let rows = m.h + 2 * m.pad;
    for y in 0..rows {
        for x in 0..m.pitch {
            let inside = y >= m.pad && y < m.h + m.pad && x >= m.pad && x < m.w + m.pad;
            let i = (y * m.pitch + x) * m.cs;
            let from = if inside { m.c } else { 0 };
            assert!(m.data[i + from..i + m.cs].iter().all(|&v| v == 0.0), "border or padding channel at ({x}, {y}) is not zero");
        }
    }
}

#[test]
fn reused_buffers_with_stale_contents_give_the_same_result() {
    let mut rng = Rng::new(13);
    let layer = random_conv(&mut rng, 16, 16, 3);
    let packed = PackedConv::new(&layer);
    let x = random_map(&mut rng, 16, 21, 19);
    let mut pool = BufferPool::default();
    // Fill the pool with garbage (finite) buffers of the sizes the conv will ask for.
    for _ in 0..4 {
        pool.give(vec![7.5; 100_000]);
    }
    let input = HwcMap::from_map(&mut pool, &x, 1).unwrap();
    let out = conv(&mut pool, &input, &packed, true, true, Kernel::best()).unwrap();
    assert_border_is_zero(&out);
    let want = conv2d_reference(&x, &layer, 1, true);
    assert_close("conv on reused buffers", &out.to_map().data, &want.data, conv_tolerance(&want, 144));
}

#[test]
fn head_matches_the_reference() {
    let mut rng = Rng::new(14);
    for &(c_in, c_out) in &[(16, 16), (128, 128), (36, 20)] {
        let layer = random_conv(&mut rng, c_in, c_out, 1);
        let packed = PackedConv::new(&layer);
        for &(w, h) in &[(1, 1), (7, 13), (45, 31)] {
            let x = random_map(&mut rng, c_in, h, w);
            let mut pool = BufferPool::default();
            let input = HwcMap::from_map(&mut pool, &x, 1).unwrap();
            let got = conv1x1_to_map(&mut pool, &input, &packed).unwrap();
            let want = conv2d_reference(&x, &layer, 0, false);
            assert_eq!((got.c, got.h, got.w), (want.c, want.h, want.w));
            assert_close(&format!("head {c_in}->{c_out} on {w}x{h}"), &got.data, &want.data, conv_tolerance(&want, c_in));
        }
    }
}

#[test]
fn unet_ops_match_the_reference_bit_for_bit() {
    let mut rng = Rng::new(15);
    for &(w, h) in &[(1, 1), (2, 2), (3, 2), (7, 13), (13, 7), (33, 17)] {
        for c in [16, 12] {
            let x = random_map(&mut rng, c, h, w);
            let mut pool = BufferPool::default();
            let input = HwcMap::from_map(&mut pool, &x, 1).unwrap();
            for mode in [PoolMode::Mean2x2, PoolMode::BilinearHalf] {
                let pooled = unet::pool(&mut pool, &input, mode).unwrap();
                assert_border_is_zero(&pooled);
                assert_eq!(pooled.to_map(), unet_ref::pool_reference(&x, mode), "{mode:?} pool {w}x{h}x{c}");
            }
        }
        // upsample from the pooled size (and from 1x1) to this size, concat with a skip
        for (iw, ih) in [(w / 2, h / 2), (1, 1)] {
            if iw == 0 || ih == 0 {
                continue;
            }
            let y = random_map(&mut rng, 32, ih, iw);
            let skip = random_map(&mut rng, 20, h, w);
            let mut pool = BufferPool::default();
            let (yh, sh) = (HwcMap::from_map(&mut pool, &y, 1).unwrap(), HwcMap::from_map(&mut pool, &skip, 1).unwrap());
            let cat = unet::upsample_concat(&mut pool, &yh, &sh).unwrap();
            assert_border_is_zero(&cat);
            assert_eq!(cat.to_map(), unet_ref::upsample_concat_reference(&y, &skip), "upsample_concat {iw}x{ih} -> {w}x{h}");
        }
        let mut x = random_map(&mut rng, 128, h, w);
        for c in 0..128 {
            // pixel 0 is a zero vector: the norm's 1e-12 floor
            x.data[c * w * h] = 0.0;
        }
        let want = unet_ref::l2norm_reference(&x);
        unet::l2norm(&mut x);
        assert_eq!(x, want, "l2norm {w}x{h}");
    }
}

#[test]
fn detector_and_descriptor_match_their_references() {
    let config = ModelConfig::default_s_trek();
    let weights = Weights::random(&config, 3);
    let mut rng = Rng::new(16);
    let cpu = CpuExtractor::new(&weights, Default::default()).unwrap();
    for &(w, h) in &[(29, 29), (31, 47), (67, 41)] {
        let image = random_map(&mut rng, 1, h, w);
        let (_, want_score, want_orientation) = detector_reference(&weights.detector(), &image);
        let want_map = descriptor_reference(&weights.descriptor(), &config, &image);
        for kernel in Kernel::available() {
            let mut pool = BufferPool::default();
            let (score, orientation) = cpu.detector().run(&mut pool, &image, kernel).unwrap();
            let tol = 1e-5 * max_abs(&want_score.data).max(1.0);
            assert_close(&format!("score {w}x{h} {kernel:?}"), &score.data, &want_score.data, tol);
            // orientations agree except where two group channels nearly tie (the argmax flips): compare as angles
            let off = orientation.data.iter().zip(&want_orientation.data).filter(|(a, b)| angle_diff(**a, **b) > 1e-3).count();
            assert!(off * 100 <= want_orientation.data.len(), "{w}x{h} {kernel:?}: {off} orientations differ");
            let map = cpu.descriptor().run(&mut pool, &image, kernel).unwrap();
            assert_close(&format!("descriptor map {w}x{h} {kernel:?}"), &map.data, &want_map.data, 1e-5);
        }
    }
}

#[test]
fn cpu_extraction_matches_the_reference_pipeline() {
    for (w, h, config) in [(61, 47, ModelConfig::default_s_trek()), (97, 83, two_level_config()), (130, 131, two_level_config()), (97, 83, group_descriptor_config()), (53, 41, upsampling_config())] {
        let weights = Weights::random(&config, 21);
        let image = scene(w, h, 4);
        let want = extract_reference(&weights, &image, 200);
        assert!(want.len() > 20, "the scene gives keypoints");
        for kernel in Kernel::available() {
            let mut cpu = CpuExtractor::new(&weights, strek::Config { max_keypoints: Some(200), ..Default::default() }).unwrap().with_kernel(kernel).unwrap();
            let got = cpu.extract(&image).unwrap();
            assert_same_features(&format!("{w}x{h} {kernel:?}"), &got, &want);
            for i in 0..got.len() {
                let norm: f32 = got.descriptor(i).iter().map(|v| v * v).sum();
                assert!((norm - 1.0).abs() < 1e-4);
            }
        }
    }
}

#[test]
fn cpu_and_gpu_paths_give_the_same_features() {
    let gpu = gpu();
    for (w, h, config) in [(61, 47, ModelConfig::default_s_trek()), (97, 83, two_level_config()), (97, 83, group_descriptor_config()), (53, 41, upsampling_config())] {
        let weights = Weights::random(&config, 5);
        let image = scene(w, h, 7);
        let options = strek::Config { max_keypoints: Some(150), ..Default::default() };
        let on_gpu = GpuExtractor::new(gpu, &weights, options.clone()).unwrap().extract(&image).unwrap();
        let on_cpu = CpuExtractor::new(&weights, options).unwrap().extract(&image).unwrap();
        assert!(on_gpu.len() > 20);
        assert_same_features(&format!("{w}x{h} cpu vs gpu"), &on_cpu, &on_gpu);
    }
}

#[test]
fn batches_reuse_buffers_and_runs_are_bit_identical() {
    let weights = Weights::random(&two_level_config(), 8);
    let images = [scene(97, 83, 1), scene(64, 50, 2), scene(97, 83, 3), scene(20, 20, 4)];
    let mut cpu = CpuExtractor::new(&weights, Default::default()).unwrap();
    let batch = cpu.extract_batch(&images).unwrap();
    assert_eq!(batch.len(), images.len());
    assert!(batch[3].is_empty(), "an image smaller than the receptive field has no keypoints");
    let pooled = cpu.pooled_bytes();
    for (image, batched) in images.iter().zip(&batch) {
        assert_eq!(&cpu.extract(image).unwrap(), batched);
    }
    assert_eq!(cpu.extract_batch(&images).unwrap(), batch, "a second run is bit-identical");
    assert_eq!(cpu.pooled_bytes(), pooled, "images of sizes seen before allocate nothing new");
    let mut fresh = CpuExtractor::new(&weights, Default::default()).unwrap();
    assert_eq!(fresh.extract(&images[2]).unwrap(), batch[2], "a new extractor gives the same bits");
    let stages: Vec<_> = cpu.stage_times().iter().map(|s| s.0).collect();
    assert_eq!(stages, strek::extract::STAGES);
    assert!(cpu.describe().starts_with("CPU: "));
    assert!(cpu.extract(&strek::Image::gray8(0, 0, vec![])).is_err(), "an empty image is an error");
}

#[test]
fn open_gives_the_cpu_path_for_device_cpu() {
    let weights = Weights::random(&ModelConfig::default_s_trek(), 2);
    let mut extractor = strek::Session::open(Device::Cpu, &GpuOptions::default()).unwrap().extractor(&weights, Default::default()).unwrap();
    assert!(extractor.describe().starts_with("CPU: "), "{}", extractor.describe());
    let image = scene(64, 48, 1);
    let direct = CpuExtractor::new(&weights, Default::default()).unwrap().extract(&image).unwrap();
    assert_eq!(extractor.extract(&image).unwrap(), direct);
}

#[test]
fn a_memory_budget_shrinks_large_images_and_keeps_original_pixels() {
    let weights = Weights::random(&ModelConfig::default_s_trek(), 2);
    let image = scene(640, 480, 3);
    let budget = 20 << 20;
    let options = strek::Config { max_keypoints: Some(200), max_memory: Some(budget), ..Default::default() };
    let mut cpu = CpuExtractor::new(&weights, options).unwrap();
    let size = cpu.working_size((640, 480));
    assert!(size.0 < 640 && size.1 < 480 && (size.0 as f64 / size.1 as f64 - 640.0 / 480.0).abs() < 0.02, "{size:?}");
    let features = cpu.extract(&image).unwrap();
    assert_eq!(features.image_size, [640, 480]);
    assert!(features.len() > 20, "{} keypoints", features.len());
    assert!(cpu.pooled_bytes() as u64 <= budget, "the pool holds {} bytes, over the budget of {budget}", cpu.pooled_bytes());
    // asked to refuse instead, the extractor gives the budget error
    let refusing = strek::Config { max_memory: Some(budget), oversize: strek::Oversize::Refuse, ..Default::default() };
    let e = CpuExtractor::new(&weights, refusing).unwrap().extract(&image).unwrap_err();
    assert!(matches!(e, strek::Error::MemoryBudget { .. }), "{e}");
    // the same as extracting the shrunk image without a budget and mapping the features back
    let free = strek::Config { max_keypoints: Some(200), max_memory: Some(u64::MAX), ..Default::default() };
    let mut direct = CpuExtractor::new(&weights, free).unwrap().extract(&image.resized(size.0, size.1)).unwrap();
    direct.rescale_to([640, 480]);
    assert_eq!(features, direct);
}

#[test]
fn a_budget_too_small_for_any_size_is_an_error_naming_it() {
    let weights = Weights::random(&ModelConfig::default_s_trek(), 2);
    let options = strek::Config { max_memory: Some(100 << 10), ..Default::default() };
    let mut cpu = CpuExtractor::new(&weights, options).unwrap();
    let e = cpu.extract(&scene(320, 240, 1)).unwrap_err();
    assert!(matches!(e, strek::Error::MemoryBudget { .. }), "{e}");
    assert!(e.to_string().contains("--max-memory"), "{e}");
    // and the extractor still works for an image that fits
    let mut roomy = CpuExtractor::new(&weights, strek::Config { max_memory: Some(64 << 20), ..Default::default() }).unwrap();
    assert!(!roomy.extract(&scene(96, 72, 1)).unwrap().is_empty());
    assert!(strek::cpu::default_memory_budget().is_some_and(|b| b > 0), "Linux tells the available memory");
}
