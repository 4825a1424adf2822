//! Texture input (a frame the host application rendered) gives the same features as image input.

mod common;
use common::*;
use strek::demo::scene;
use strek::image_io::{Image, Samples};
use strek::{GpuExtractor, ModelConfig, Weights};

fn rgba_texture(image: &Image, format: wgpu::TextureFormat) -> wgpu::Texture {
    let gpu = gpu();
    let Samples::U8(gray) = &image.samples else { unreachable!() };
    let rgba: Vec<u8> = gray.iter().flat_map(|&g| [g, g, g, 255]).collect();
    let texture = gpu.device.create_texture(&wgpu::TextureDescriptor {
        label: Some("frame"),
        size: wgpu::Extent3d { width: image.width, height: image.height, depth_or_array_layers: 1 },
        mip_level_count: 1,
        sample_count: 1,
        dimension: wgpu::TextureDimension::D2,
        format,
        usage: wgpu::TextureUsages::TEXTURE_BINDING | wgpu::TextureUsages::COPY_DST,
        view_formats: &[],
    });
    gpu.queue.write_texture(
        texture.as_image_copy(),
        &rgba,
        wgpu::TexelCopyBufferLayout { offset: 0, bytes_per_row: Some(4 * image.width), rows_per_image: None },
        texture.size(),
    );
    texture
}

#[test]
fn texture_input_gives_the_features_of_image_input() {
    let weights = Weights::random(&ModelConfig::default_s_trek(), 4);
    let mut extractor = GpuExtractor::new(gpu(), &weights, strek::Config { max_keypoints: Some(300), ..Default::default() }).unwrap();
    let image = scene(97, 75, 6);
    let from_image = extractor.extract(&image).unwrap();
    let from_texture = extractor.extract_texture(&rgba_texture(&image, wgpu::TextureFormat::Rgba8Unorm)).unwrap();
    assert_eq!(from_texture.len(), from_image.len());
    // gray is computed as 0.299*(R/255)+... instead of (0.299*R+...)/255: rounding-level differences only
    let mut same = 0;
    for i in 0..from_image.len() {
        if from_texture.keypoints.iter().any(|p| (p[0] - from_image.keypoints[i][0]).abs() < 1e-3 && (p[1] - from_image.keypoints[i][1]).abs() < 1e-3) {
            same += 1;
        }
    }
    assert!(same as f32 >= 0.97 * from_image.len() as f32, "{same} of {} keypoints agree", from_image.len());
    assert_close("scores", &from_texture.scores[..10], &from_image.scores[..10], 1e-3);
}

#[test]
fn srgb_textures_are_refused_with_a_clear_error() {
    let weights = Weights::random(&ModelConfig::default_s_trek(), 4);
    let mut extractor = GpuExtractor::new(gpu(), &weights, Default::default()).unwrap();
    let texture = rgba_texture(&scene(64, 48, 1), wgpu::TextureFormat::Rgba8UnormSrgb);
    let err = extractor.extract_texture(&texture).unwrap_err().to_string();
    assert!(err.contains("Rgba8UnormSrgb") && err.contains("not sRGB"), "{err}");
}
