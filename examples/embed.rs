//! Embedding strek in an application that already renders with wgpu: the application owns the device, renders a
//! scene into a texture (here twice, the second time turned by a quarter), and hands the textures to strek, which
//! extracts on the same device without a round trip through the CPU.
//!
//! `cargo run --release --no-default-features --example embed`: the library alone, as an application embeds it
//! (uses weights/strek.safetensors when present, else a random equivariant model). Exits non-zero if the keypoints
//! of the two frames do not correspond.

use strek::geometry::Homography;
use strek::eval::metrics::repeatability;
use strek::{GpuExtractor, Gpu, ModelConfig, Weights};

const SIZE: u32 = 192;

const SCENE: &str = r#"
struct View { rotation: mat2x2<f32>, centre: vec2<f32> }
@group(0) @binding(0) var<uniform> view: View;

@vertex
fn vs(@builtin(vertex_index) i: u32) -> @builtin(position) vec4<f32> {
    let p = vec2<f32>(f32((i << 1u) & 2u), f32(i & 2u));
    return vec4<f32>(p * 2.0 - 1.0, 0.0, 1.0);
}

fn box_at(q: vec2<f32>, c: vec2<f32>, half: vec2<f32>, a: f32) -> f32 {
    let d = q - c;
    let u = vec2<f32>(d.x * cos(a) + d.y * sin(a), -d.x * sin(a) + d.y * cos(a));
    let e = abs(u) - half;
    return 1.0 - smoothstep(-0.7, 0.7, max(e.x, e.y));
}

@fragment
fn fs(@builtin(position) pos: vec4<f32>) -> @location(0) vec4<f32> {
    // the scene is drawn in its own coordinates: the view turns it about the centre of the frame
    let q = view.rotation * (pos.xy - 0.5 - view.centre) + view.centre;
    var v = 0.35 + 0.1 * sin(q.x * 0.05) * cos(q.y * 0.07);
    v = mix(v, 0.9, box_at(q, vec2<f32>(60.0, 50.0), vec2<f32>(22.0, 12.0), 0.3));
    v = mix(v, 0.1, box_at(q, vec2<f32>(130.0, 70.0), vec2<f32>(15.0, 25.0), -0.5));
    v = mix(v, 0.7, box_at(q, vec2<f32>(90.0, 140.0), vec2<f32>(30.0, 9.0), 1.1));
    v = mix(v, 0.2, 1.0 - smoothstep(14.0, 15.0, length(q - vec2<f32>(150.0, 150.0))));
    v = mix(v, 0.95, 1.0 - smoothstep(7.0, 8.0, length(q - vec2<f32>(40.0, 120.0))));
    return vec4<f32>(v, v, v, 1.0);
}
"#;

fn main() {
    // The application's own device, queue and render pipeline.
    let instance = wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle());
    let adapter = pollster::block_on(instance.request_adapter(&Default::default())).expect("an adapter");
    let (device, queue) = pollster::block_on(adapter.request_device(&Default::default())).expect("a device");
    let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
        label: Some("scene"),
        source: wgpu::ShaderSource::Wgsl(SCENE.into()),
    });
    let pipeline = device.create_render_pipeline(&wgpu::RenderPipelineDescriptor {
        label: Some("scene"),
        layout: None,
        vertex: wgpu::VertexState { module: &module, entry_point: Some("vs"), compilation_options: Default::default(), buffers: &[] },
        fragment: Some(wgpu::FragmentState {
            module: &module,
            entry_point: Some("fs"),
            compilation_options: Default::default(),
            targets: &[Some(wgpu::TextureFormat::Rgba8Unorm.into())],
        }),
        primitive: Default::default(),
        depth_stencil: None,
        multisample: Default::default(),
        multiview_mask: None,
        cache: None,
    });
    let render = |quarter_turn: bool| -> wgpu::Texture {
        let texture = device.create_texture(&wgpu::TextureDescriptor {
            label: Some("frame"),
            size: wgpu::Extent3d { width: SIZE, height: SIZE, depth_or_array_layers: 1 },
            mip_level_count: 1,
            sample_count: 1,
            dimension: wgpu::TextureDimension::D2,
            format: wgpu::TextureFormat::Rgba8Unorm,
            usage: wgpu::TextureUsages::RENDER_ATTACHMENT | wgpu::TextureUsages::TEXTURE_BINDING,
            view_formats: &[],
        });
        // columns of the matrix taking frame coordinates back to scene coordinates; a counter-clockwise quarter
        // turn of the picture (y down) maps scene (dx, dy) to frame (dy, -dx), so the inverse is (-dy, dx)
        let m: [f32; 4] = if quarter_turn { [0.0, 1.0, -1.0, 0.0] } else { [1.0, 0.0, 0.0, 1.0] };
        let c = (SIZE as f32 - 1.0) / 2.0;
        let uniform: [f32; 6] = [m[0], m[1], m[2], m[3], c, c];
        let buffer = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("view"),
            size: 32,
            usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        queue.write_buffer(&buffer, 0, bytemuck::cast_slice(&uniform));
        let bind_group = device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: None,
            layout: &pipeline.get_bind_group_layout(0),
            entries: &[wgpu::BindGroupEntry { binding: 0, resource: buffer.as_entire_binding() }],
        });
        let view = texture.create_view(&Default::default());
        let mut encoder = device.create_command_encoder(&Default::default());
        {
            let mut pass = encoder.begin_render_pass(&wgpu::RenderPassDescriptor {
                label: Some("scene"),
                color_attachments: &[Some(wgpu::RenderPassColorAttachment {
                    view: &view,
                    depth_slice: None,
                    resolve_target: None,
                    ops: wgpu::Operations { load: wgpu::LoadOp::Clear(wgpu::Color::BLACK), store: wgpu::StoreOp::Store },
                })],
                depth_stencil_attachment: None,
                timestamp_writes: None,
                occlusion_query_set: None,
                multiview_mask: None,
            });
            pass.set_pipeline(&pipeline);
            pass.set_bind_group(0, &bind_group, &[]);
            pass.draw(0..3, 0..1);
        }
        queue.submit([encoder.finish()]);
        texture
    };
    let upright = render(false);
    let turned = render(true);

    // strek on the application's device.
    let gpu = Gpu::from_device(device.clone(), queue.clone(), &adapter.get_info());
    let weights = Weights::load(std::path::Path::new(strek::DEFAULT_WEIGHTS))
        .unwrap_or_else(|_| Weights::random(&ModelConfig::default_s_trek(), 1));
    let mut extractor = GpuExtractor::new(&gpu, &weights, strek::Config { max_keypoints: Some(300), ..Default::default() }).expect("extractor");
    let a = extractor.extract_texture(&upright).expect("extraction from the first frame");
    let b = extractor.extract_texture(&turned).expect("extraction from the second frame");
    let c = (SIZE as f64 - 1.0) / 2.0;
    // frame 1 to frame 2: a counter-clockwise quarter turn about the centre
    let h = Homography([[0.0, 1.0, 0.0], [-1.0, 0.0, 2.0 * c], [0.0, 0.0, 1.0]]);
    let rep = repeatability(&a, &b, &h, 1.0).unwrap_or(0.0);
    println!("adapter: {}", gpu.adapter);
    println!("weights: {}", weights.source);
    println!("frames {SIZE}x{SIZE}: {} and {} keypoints, repeatability@1px under the quarter turn {rep:.3}", a.len(), b.len());
    if a.is_empty() || rep < 0.9 {
        eprintln!("the keypoints of the turned frame do not follow the turn");
        std::process::exit(1);
    }
}
