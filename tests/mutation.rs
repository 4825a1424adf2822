//! Every reader of outside data, fed seeded mutations of valid inputs (truncations, bit flips, bytes set to 0x00 or
//! 0xFF, which make dimensions zero or huge, and for text, characters replaced by digits, signs, `nan` and `inf`):
//! no panic, and every failure an error that names the file. The counts are README's ("Bad input").

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use strek::geometry::Homography;
use strek::image_io::{DecodeLimits, Image};
use strek::rng::Rng;
use strek::{ModelConfig, Weights};

/// Mutated inputs tried per image format, for weights files, homography files and camera strings.
const IMAGE_MUTATIONS: usize = 600;
const WEIGHTS_MUTATIONS: usize = 3000;
const TEXT_MUTATIONS: usize = 3000;

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("strek-mutation-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// One seeded mutation of `bytes`.
fn mutate(rng: &mut Rng, bytes: &[u8]) -> Vec<u8> {
    let mut out = bytes.to_vec();
    match rng.below(4) {
        0 => out.truncate(rng.below(bytes.len())),
        1 => {
            for _ in 0..1 + rng.below(8) {
                let i = rng.below(out.len());
                out[i] ^= 1 << rng.below(8);
            }
        }
        2 => {
            // within the first 64 bytes, where headers keep dimensions, counts and lengths
            let at = rng.below(64.min(out.len()));
            let value = if rng.below(2) == 0 { 0x00 } else { 0xFF };
            for b in out.iter_mut().skip(at).take(1 + rng.below(4)) {
                *b = value;
            }
        }
        _ => {
            let at = rng.below(out.len());
            let end = (at + 1 + rng.below(32)).min(out.len());
            out.drain(at..end);
        }
    }
    out
}

/// One seeded mutation of a text: a character replaced by a digit, a sign, a separator, `nan`, `inf` or `1e308`.
fn mutate_text(rng: &mut Rng, text: &str) -> String {
    const REPLACEMENTS: [&str; 10] = ["0", "9", "-", ".", ",", " ", "nan", "inf", "1e308", ""];
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::new();
    let at = rng.below(chars.len());
    for (i, c) in chars.iter().enumerate() {
        if i == at {
            out.push_str(REPLACEMENTS[rng.below(REPLACEMENTS.len())]);
        } else {
            out.push(*c);
        }
    }
    out
}

/// Runs `read` without letting a panic through; a panic fails the test with the input that caused it.
fn no_panic<T>(what: &str, read: impl FnOnce() -> T) -> T {
    match catch_unwind(AssertUnwindSafe(read)) {
        Ok(value) => value,
        Err(_) => panic!("the reader panicked on {what}"),
    }
}

fn encoded(image: &image::DynamicImage, format: image::ImageFormat) -> Vec<u8> {
    let mut bytes = std::io::Cursor::new(Vec::new());
    image.write_to(&mut bytes, format).unwrap();
    bytes.into_inner()
}

#[test]
fn mutated_image_files_give_images_or_errors_that_name_the_file() {
    let dir = temp_dir("images");
    let strek::image_io::Samples::U8(gray) = strek::demo::scene(48, 40, 3).samples else { unreachable!() };
    let gray = image::GrayImage::from_raw(48, 40, gray).unwrap();
    let rgb = image::DynamicImage::ImageLuma8(gray.clone()).to_rgb8();
    let deep = image::DynamicImage::ImageLuma8(gray.clone()).to_luma16();
    use image::ImageFormat as F;
    let files: Vec<(&str, Vec<u8>)> = vec![
        ("png", encoded(&image::DynamicImage::ImageLuma16(deep.clone()), F::Png)),
        ("jpg", encoded(&image::DynamicImage::ImageRgb8(rgb.clone()), F::Jpeg)),
        ("tif", encoded(&image::DynamicImage::ImageLuma16(deep), F::Tiff)),
        ("pgm", encoded(&image::DynamicImage::ImageLuma8(gray.clone()), F::Pnm)),
        ("webp", encoded(&image::DynamicImage::ImageRgb8(rgb.clone()), F::WebP)),
        ("bmp", encoded(&image::DynamicImage::ImageRgb8(rgb), F::Bmp)),
    ];
    // a small limit keeps a header that claims a huge size from costing memory; it is checked before decoding
    let limits = DecodeLimits { max_pixels: 4_000_000 };
    let mut rng = Rng::new(11);
    for (ext, valid) in &files {
        let path = dir.join(format!("valid.{ext}"));
        std::fs::write(&path, valid).unwrap();
        let image = Image::open_with(&path, &limits).unwrap_or_else(|e| panic!("the valid {ext} file: {e}"));
        assert_eq!((image.width, image.height), (48, 40));
        let (mut decoded, mut refused) = (0, 0);
        for k in 0..IMAGE_MUTATIONS {
            let path = dir.join(format!("m{k}.{ext}"));
            std::fs::write(&path, mutate(&mut rng, valid)).unwrap();
            match no_panic(&format!("mutation {k} of the {ext} file"), || Image::open_with(&path, &limits)) {
                Ok(image) => {
                    assert!(image.width > 0 && image.height > 0);
                    decoded += 1;
                }
                Err(e) => {
                    assert!(e.to_string().contains(&format!("m{k}.{ext}")), "the error does not name the file: {e}");
                    refused += 1;
                }
            }
            std::fs::remove_file(&path).unwrap();
        }
        eprintln!("{ext}: {decoded} mutations decoded, {refused} refused");
        assert!(refused > 0, "no mutation of the {ext} file was refused: the mutations do not reach the decoder");
    }
    std::fs::remove_dir_all(dir).unwrap();
}

/// A small model, so that thousands of loads take a second.
fn small_config() -> ModelConfig {
    let mut c = ModelConfig::default_s_trek();
    c.group_order = 4;
    c.detector.fields = vec![1, 1];
    c.descriptor.encoder = vec![4, 8];
    c.descriptor.decoder = vec![4];
    c.descriptor.dim = 8;
    c
}

#[test]
fn mutated_weights_files_load_or_give_errors_that_name_the_file() {
    let valid = Weights::random(&small_config(), 5).to_bytes();
    Weights::from_bytes(&valid, "valid.safetensors").unwrap();
    let mut rng = Rng::new(12);
    let mut refused = 0;
    for k in 0..WEIGHTS_MUTATIONS {
        let source = format!("mutation-{k}.safetensors");
        let bytes = mutate(&mut rng, &valid);
        match no_panic(&source, || Weights::from_bytes(&bytes, &source)) {
            // a flip in the tensor data can keep a valid file (loading checks shapes, finiteness and structure)
            Ok(_) => {}
            Err(e) => {
                assert!(e.to_string().contains(&source), "the error does not name the file: {e}");
                refused += 1;
            }
        }
    }
    eprintln!("weights: {refused} of {WEIGHTS_MUTATIONS} mutations refused");
    assert!(refused > WEIGHTS_MUTATIONS / 2, "only {refused} mutations refused");
}

#[test]
fn non_finite_weights_are_refused_naming_the_tensor() {
    let weights = Weights::random(&small_config(), 6);
    for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
        let mut w = weights.clone();
        w.tensors.get_mut("descriptor.head.weight").unwrap().data[3] = bad;
        let e = Weights::from_bytes(&w.to_bytes(), "bad.safetensors").unwrap_err().to_string();
        assert!(e.contains("bad.safetensors") && e.contains("descriptor.head"), "{e}");
    }
}

#[test]
fn mutated_homography_files_parse_to_finite_matrices_or_are_refused() {
    let valid = "0.794 0.0101 -11.2\n-0.0215 0.8 43.1\n1.3e-05 -2.7e-06 1.0\n";
    assert!(Homography::parse(valid).is_some());
    let mut rng = Rng::new(13);
    let mut refused = 0;
    for k in 0..TEXT_MUTATIONS {
        let text = mutate_text(&mut rng, valid);
        match no_panic(&format!("homography mutation {k}: {text:?}"), || Homography::parse(&text)) {
            Some(h) => assert!(h.0.iter().flatten().all(|v| v.is_finite()), "{text:?} gave {h:?}"),
            None => refused += 1,
        }
    }
    eprintln!("homography files: {refused} of {TEXT_MUTATIONS} mutations refused");
    assert!(refused > 0);
    for text in ["nan 0 0 0 1 0 0 0 1", "inf 0 0 0 1 0 0 0 1", "1 0 0 0 1 0 0 0"] {
        assert!(Homography::parse(text).is_none(), "{text:?}");
    }
}

#[test]
fn a_bad_homography_file_is_an_error_that_names_it() {
    let dir = temp_dir("hfile");
    let seq = dir.join("seq");
    std::fs::create_dir_all(&seq).unwrap();
    let scene = strek::demo::scene(48, 40, 1);
    strek::eval::dataset::write_png(&scene, &seq.join("1.png")).unwrap();
    strek::eval::dataset::write_png(&scene, &seq.join("2.png")).unwrap();
    std::fs::write(seq.join("H_1_2"), "1 0 0 0 nan 0 0 0 1").unwrap();
    let e = strek::eval::dataset::DataSet::open(&dir).err().expect("a non-finite homography is refused").to_string();
    assert!(e.contains("H_1_2"), "{e}");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn mutated_camera_strings_parse_to_finite_positive_focals_or_are_refused() {
    use strek::colmap::Camera;
    let valid = "pinhole:535.4,539.2,320.1,247.6";
    assert!(valid.parse::<Camera>().is_ok());
    let mut rng = Rng::new(14);
    let mut refused = 0;
    for k in 0..TEXT_MUTATIONS {
        let text = mutate_text(&mut rng, valid);
        match no_panic(&format!("camera mutation {k}: {text:?}"), || text.parse::<Camera>()) {
            Ok(Camera::Pinhole { fx, fy, cx, cy }) => {
                assert!(fx > 0.0 && fy > 0.0 && [fx, fy, cx, cy].iter().all(|v| v.is_finite()), "{text:?}")
            }
            Ok(Camera::Guess) => unreachable!("no mutation of a pinhole string reads \"auto\""),
            Err(e) => {
                assert!(e.to_string().contains("pinhole"), "{e}");
                refused += 1;
            }
        }
    }
    eprintln!("camera strings: {refused} of {TEXT_MUTATIONS} mutations refused");
    for text in ["pinhole:inf,1,0,0", "pinhole:1,1,nan,0", "pinhole:0,1,0,0", "pinhole:1,1,0"] {
        assert!(text.parse::<Camera>().is_err(), "{text:?}");
    }
}

#[test]
fn float_images_with_nan_and_inf_decode_to_defined_samples() {
    let dir = temp_dir("float");
    let mut pixels = image::Rgb32FImage::from_pixel(8, 6, image::Rgb([0.5, 0.5, 0.5]));
    pixels.put_pixel(1, 1, image::Rgb([f32::NAN; 3]));
    pixels.put_pixel(2, 1, image::Rgb([f32::INFINITY; 3]));
    pixels.put_pixel(3, 1, image::Rgb([f32::NEG_INFINITY; 3]));
    pixels.put_pixel(4, 1, image::Rgb([7.0; 3]));
    let path = dir.join("float.tif");
    image::DynamicImage::ImageRgb32F(pixels).save(&path).unwrap();
    let image = Image::open_with(&path, &DecodeLimits::default()).unwrap();
    // float samples become 16-bit ones clamped to [0, 1]; NaN becomes 0: every path then sees the same numbers
    let at = |x: usize| image.sample(((8 + x) * image.channels as usize) as usize);
    assert_eq!([at(0), at(1), at(2), at(3), at(4)], [32768.0, 0.0, 65535.0, 0.0, 65535.0]);
    std::fs::remove_dir_all(dir).unwrap();
}
