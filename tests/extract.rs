//! End to end: the GPU extraction against the plain-Rust reference of the whole pipeline, batches against single
//! images, and run-to-run determinism.

mod common;
use common::*;
use strek::demo::scene;
use strek::model::extract_reference;
use strek::{GpuExtractor, ModelConfig, Weights};

#[test]
fn gpu_extraction_matches_the_reference_pipeline() {
    let gpu = gpu();
    for (w, h, config) in [(61, 47, ModelConfig::default_s_trek()), (97, 83, two_level_config()), (97, 83, group_descriptor_config())] {
        let weights = Weights::random(&config, 21);
        let image = scene(w, h, 4);
        let mut extractor = GpuExtractor::new(gpu, &weights, strek::Config { max_keypoints: Some(200), ..Default::default() }).unwrap();
        let got = extractor.extract(&image).unwrap();
        let want = extract_reference(&weights, &image, 200);
        assert!(want.len() > 20, "the scene gives keypoints");
        assert_eq!(got.image_size, [w, h]);
        assert_same_features(&format!("{w}x{h}"), &got, &want);
        for i in 0..got.len() {
            let norm: f32 = got.descriptor(i).iter().map(|v| v * v).sum();
            assert!((norm - 1.0).abs() < 1e-4);
        }
    }
}

#[test]
fn a_batch_equals_single_extractions_and_runs_are_bit_identical() {
    let gpu = gpu();
    let weights = Weights::random(&two_level_config(), 8);
    let images = [scene(97, 83, 1), scene(64, 50, 2), scene(97, 83, 3), scene(20, 20, 4)];
    let mut extractor = GpuExtractor::new(gpu, &weights, Default::default()).unwrap();
    let batch = extractor.extract_batch(&images).unwrap();
    assert_eq!(batch.len(), images.len());
    for (image, batched) in images.iter().zip(&batch) {
        assert_eq!(&extractor.extract(image).unwrap(), batched);
    }
    assert!(batch[3].is_empty(), "an image smaller than the receptive field has no keypoints");
    assert_eq!(extractor.extract_batch(&images).unwrap(), batch, "a second run is bit-identical");
    let mut fresh = GpuExtractor::new(gpu, &weights, Default::default()).unwrap();
    assert_eq!(fresh.extract(&images[2]).unwrap(), batch[2], "a new extractor gives the same bits");
}
