//! Real-world image files: 16-bit, gray, RGBA and EXIF-rotated JPEGs load as a viewer shows them.

mod common;
use common::*;
use strek::demo::scene;
use strek::image_io::{Image, Samples};
use strek::{GpuExtractor, ModelConfig, Weights};

fn temp_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("strek-robust-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn gray_pixels(image: &Image) -> Vec<u8> {
    let Samples::U8(v) = &image.samples else { panic!("8-bit expected") };
    v.clone()
}

/// A JPEG with an EXIF APP1 segment whose orientation tag is `orientation` (6: the viewer turns it clockwise).
fn jpeg_with_orientation(pixels: &image::GrayImage, orientation: u16) -> Vec<u8> {
    let mut jpeg = std::io::Cursor::new(Vec::new());
    pixels.write_to(&mut jpeg, image::ImageFormat::Jpeg).unwrap();
    let jpeg = jpeg.into_inner();
    let mut tiff = b"II*\0".to_vec();
    tiff.extend(8u32.to_le_bytes()); // first IFD right after the header
    tiff.extend(1u16.to_le_bytes()); // one entry
    tiff.extend(0x0112u16.to_le_bytes()); // Orientation
    tiff.extend(3u16.to_le_bytes()); // SHORT
    tiff.extend(1u32.to_le_bytes());
    tiff.extend(orientation.to_le_bytes());
    tiff.extend([0, 0]);
    tiff.extend(0u32.to_le_bytes()); // no next IFD
    let mut app1 = b"Exif\0\0".to_vec();
    app1.extend(tiff);
    let mut out = jpeg[..2].to_vec(); // SOI
    out.extend([0xFF, 0xE1]);
    out.extend(((app1.len() + 2) as u16).to_be_bytes());
    out.extend(app1);
    out.extend(&jpeg[2..]);
    out
}

#[test]
fn exif_rotated_jpegs_are_oriented_as_a_viewer_shows_them() {
    let dir = temp_dir("exif");
    let img = scene(64, 40, 3);
    let pixels = image::GrayImage::from_raw(64, 40, gray_pixels(&img)).unwrap();
    std::fs::write(dir.join("plain.jpg"), jpeg_with_orientation(&pixels, 1)).unwrap();
    std::fs::write(dir.join("turned.jpg"), jpeg_with_orientation(&pixels, 6)).unwrap();
    let plain = Image::open(&dir.join("plain.jpg")).unwrap();
    let turned = Image::open(&dir.join("turned.jpg")).unwrap();
    assert_eq!((plain.width, plain.height), (64, 40));
    assert_eq!((turned.width, turned.height), (40, 64), "orientation 6 swaps the sides");
    // orientation 6: the stored top row becomes the right column
    let (p, t) = (gray_pixels(&plain), gray_pixels(&turned));
    for x in 0..64 {
        assert_eq!(t[x * 40 + 39], p[x], "stored pixel ({x}, 0) shows at (39, {x})");
    }
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn sixteen_bit_gray_and_rgba_files_give_the_features_of_the_8_bit_gray_file() {
    let dir = temp_dir("formats");
    let img = scene(90, 70, 5);
    let g = gray_pixels(&img);
    image::GrayImage::from_raw(90, 70, g.clone()).unwrap().save(dir.join("gray8.png")).unwrap();
    let g16: Vec<u16> = g.iter().map(|&v| v as u16 * 257).collect();
    image::ImageBuffer::<image::Luma<u16>, _>::from_raw(90, 70, g16).unwrap().save(dir.join("gray16.png")).unwrap();
    let rgba: Vec<u8> = g.iter().flat_map(|&v| [v, v, v, 128]).collect();
    image::RgbaImage::from_raw(90, 70, rgba).unwrap().save(dir.join("rgba.png")).unwrap();
    let weights = Weights::random(&ModelConfig::default_s_trek(), 2);
    let mut extractor = GpuExtractor::new(gpu(), &weights, strek::Config { max_keypoints: Some(100), ..Default::default() }).unwrap();
    let reference = extractor.extract(&Image::open(&dir.join("gray8.png")).unwrap()).unwrap();
    assert!(!reference.is_empty());
    for name in ["gray16.png", "rgba.png"] {
        let image = Image::open(&dir.join(name)).unwrap();
        let f = extractor.extract(&image).unwrap();
        // the same gray values up to rounding of the colour weights: the same keypoints (sub-pixel positions up to
        // that rounding too)
        let near = |p: &[f32; 2], q: &[f32; 2]| (p[0] - q[0]).abs() < 1e-3 && (p[1] - q[1]).abs() < 1e-3;
        let same = f.keypoints.iter().filter(|p| reference.keypoints.iter().any(|q| near(p, q))).count();
        assert!(same * 100 >= 97 * reference.len(), "{name}: {same} of {} keypoints agree", reference.len());
    }
    std::fs::remove_dir_all(dir).unwrap();
}
