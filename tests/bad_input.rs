//! Bad input gets a clear error, never a panic, and loses nothing.

mod common;
use common::*;
use std::path::{Path, PathBuf};
use strek::demo::scene;
use strek::image_io::Image;
use strek::{Error, Extractor, ModelConfig, Weights};

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("strek-bad-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn png_bytes(image: &Image) -> Vec<u8> {
    let strek::image_io::Samples::U8(data) = &image.samples else { unreachable!() };
    let buffer = image::GrayImage::from_raw(image.width, image.height, data.clone()).unwrap();
    let mut bytes = std::io::Cursor::new(Vec::new());
    buffer.write_to(&mut bytes, image::ImageFormat::Png).unwrap();
    bytes.into_inner()
}

#[test]
fn unreadable_truncated_empty_and_missing_image_files_give_clear_errors() {
    let dir = temp_dir("images");
    let good = png_bytes(&scene(64, 48, 1));
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("zero.png", vec![], "empty (0 bytes)"),
        ("text.png", b"this is not an image".to_vec(), "cannot decode"),
        ("noext", b"this is not an image".to_vec(), "not a recognised image format"),
        ("truncated.png", good[..good.len() / 2].to_vec(), "cannot decode"),
        ("corrupt.png", { let mut b = good.clone(); b[40..200].iter_mut().for_each(|v| *v ^= 0x5a); b }, "cannot decode"),
    ];
    for (name, bytes, expected) in cases {
        let path = dir.join(name);
        std::fs::write(&path, bytes).unwrap();
        let err = Image::open(&path).expect_err(name).to_string();
        assert!(err.contains(name) && err.contains(expected), "{name}: {err}");
    }
    let err = Image::open(Path::new("/nonexistent/x.png")).unwrap_err().to_string();
    assert!(err.contains("/nonexistent/x.png") && err.contains("cannot open"), "{err}");
    std::fs::write(dir.join("good.png"), &good).unwrap();
    assert_eq!(Image::open(&dir.join("good.png")).unwrap().width, 64);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn empty_and_tiny_images_give_an_error_or_no_keypoints() {
    let weights = Weights::random(&ModelConfig::default_s_trek(), 1);
    let mut extractor = Extractor::new(gpu(), &weights, Default::default()).unwrap();
    let empty = Image::gray8(0, 0, vec![]);
    assert!(matches!(extractor.extract(&empty), Err(Error::Invalid(_))));
    for (w, h) in [(1, 1), (28, 400), (400, 28), (1, 1000)] {
        let f = extractor.extract(&Image::gray8(w, h, vec![128; (w * h) as usize])).unwrap();
        assert!(f.is_empty(), "{w}x{h}");
        assert_eq!(f.image_size, [w, h]);
    }
    // the smallest image with a heatmap works
    let f = extractor.extract(&scene(29, 29, 2)).unwrap();
    assert!(f.len() <= 1);
}

#[test]
fn images_over_the_adapter_limits_are_refused_with_a_clear_error() {
    let weights = Weights::random(&ModelConfig::default_s_trek(), 1);
    let mut extractor = Extractor::new(gpu(), &weights, Default::default()).unwrap();
    let limit = gpu().limits.max_storage_buffer_binding_size as u64;
    // 16 detector channels of f32 must exceed the binding limit
    let side = ((limit / 64) as f64).sqrt() as u32 + 64;
    let huge = Image::gray8(side, side, vec![0; (side as usize) * (side as usize)]);
    let err = extractor.extract(&huge).unwrap_err();
    assert!(matches!(err, Error::TooLarge { .. }), "{err}");
    assert!(err.to_string().contains("downscale"), "{err}");
    // the extractor still works afterwards
    assert!(extractor.extract(&scene(64, 48, 1)).is_ok());
}

#[test]
fn bad_weights_files_are_refused_naming_the_problem() {
    let dir = temp_dir("weights");
    let config = ModelConfig::default_s_trek();
    let good = Weights::random(&config, 3);
    let err = Weights::load(&dir.join("missing.safetensors")).unwrap_err().to_string();
    assert!(err.contains("missing.safetensors") && err.contains("cannot read"), "{err}");

    let bytes = good.to_bytes();
    for (what, data) in [("empty", vec![]), ("truncated", bytes[..bytes.len() / 2].to_vec()), ("garbage", vec![7u8; 1000])] {
        let err = Weights::from_bytes(&data, what).unwrap_err().to_string();
        assert!(err.contains(what) && err.contains("safetensors"), "{what}: {err}");
    }

    let mut wrong_shape = good.clone();
    wrong_shape.tensors.get_mut("detector.3.weight").unwrap().shape = vec![16, 16, 25, 1];
    let err = Weights::from_bytes(&wrong_shape.to_bytes(), "w").unwrap_err().to_string();
    assert!(err.contains("detector.3.weight") && err.contains("shape"), "{err}");

    let mut missing = good.clone();
    missing.tensors.remove("descriptor.head.bias");
    let err = Weights::from_bytes(&missing.to_bytes(), "w").unwrap_err().to_string();
    assert!(err.contains("descriptor.head.bias") && err.contains("missing"), "{err}");

    let mut broken = good.clone();
    broken.tensors.get_mut("detector.2.weight").unwrap().data[5] += 0.5;
    let err = Weights::from_bytes(&broken.to_bytes(), "w").unwrap_err().to_string();
    assert!(err.contains("detector.2.weight") && err.contains("equivariant"), "{err}");

    let mut nan = good.clone();
    nan.tensors.get_mut("descriptor.enc0a.bias").unwrap().data[0] = f32::NAN;
    let err = Weights::from_bytes(&nan.to_bytes(), "w").unwrap_err().to_string();
    assert!(err.contains("descriptor.enc0a.bias") && err.contains("NaN"), "{err}");

    let mut other = good.clone();
    other.config.detector.fields = vec![2, 2, 1];
    let err = Weights::from_bytes(&other.to_bytes(), "w").unwrap_err().to_string();
    assert!(err.contains("detector.0.weight") || err.contains("shape"), "{err}");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn a_named_adapter_that_does_not_exist_gives_the_no_adapter_error() {
    let options = strek::GpuOptions { adapter: Some("no such adapter 123".into()), ..Default::default() };
    let err = strek::Gpu::new(&options).err().expect("no adapter matches");
    let text = err.to_string();
    assert!(matches!(err, Error::NoAdapter(_)) && text.contains("mesa-vulkan-drivers"), "{text}");
}
