//! Every WGSL file validates with naga and translates to SPIR-V, MSL, HLSL and GLSL, so that the Vulkan, Metal,
//! DX12 and GL back ends' shader compilers are exercised without a GPU.

use naga::back::{glsl, hlsl, msl, spv};
use naga::valid::{Capabilities, ValidationFlags, Validator};
use strek::ops::conv::Tiling;
use strek::ops::ALL_SHADERS;

/// The module with its override constants set (the others at their defaults), as a pipeline would compile it.
fn parse_with(name: &str, source: &str, constants: &[(&str, f64)]) -> (naga::Module, naga::valid::ModuleInfo) {
    let module = naga::front::wgsl::parse_str(source).unwrap_or_else(|e| panic!("{name}: {}", e.emit_to_string(source)));
    // the f16 and subgroup variants are created only on adapters with SHADER_F16 or SUBGROUP
    let mut capabilities = Capabilities::empty();
    capabilities.set(Capabilities::SHADER_FLOAT16, is_f16(source));
    capabilities.set(Capabilities::SUBGROUP, uses_subgroups(source));
    let info = Validator::new(ValidationFlags::all(), capabilities)
        .validate(&module)
        .unwrap_or_else(|e| panic!("{name}: {}", e.emit_to_string(source)));
    let constants: naga::back::PipelineConstants = constants.iter().map(|(k, v)| (k.to_string(), *v)).collect();
    let (module, info) = naga::back::pipeline_constants::process_overrides(&module, &info, None, &constants)
        .unwrap_or_else(|e| panic!("{name} with {constants:?}: {e}"));
    (module.into_owned(), info.into_owned())
}

fn is_f16(source: &str) -> bool {
    source.starts_with("enable f16;")
}

fn uses_subgroups(source: &str) -> bool {
    source.contains("@builtin(subgroup_invocation_id)")
}

fn parse(name: &str, source: &str) -> (naga::Module, naga::valid::ModuleInfo) {
    parse_with(name, source, &[])
}

/// The override constants each shader is compiled with: for conv.wgsl, those of every layer of the default model
/// on a downlevel adapter (its tiling depends on the workgroup memory); the defaults for the others.
fn specialisations(shader: &strek::gpu::Shader) -> Vec<Vec<(&'static str, f64)>> {
    if !shader.name.starts_with(strek::ops::conv::SHADER.name) {
        return vec![vec![]];
    }
    let limit = wgpu::Limits::downlevel_defaults().max_compute_workgroup_storage_size;
    let weights = strek::weights::Weights::random(&strek::ModelConfig::default_s_trek(), 1);
    let detector = weights.detector();
    let last = detector.len() - 1;
    let mut out = Vec::new();
    for (i, layer) in detector.iter().enumerate() {
        out.push(Tiling::for_layer(&layer.spec, i == last, limit).constants(&layer.spec, 0, i != last));
    }
    for layer in weights.descriptor() {
        out.push(Tiling::for_layer(&layer.spec, false, limit).constants(&layer.spec, layer.spec.k as u32 / 2, true));
    }
    out
}

#[test]
fn every_shader_validates_and_translates_to_all_backends() {
    assert!(ALL_SHADERS.len() >= 6);
    for shader in ALL_SHADERS {
        let (module, info) = parse(shader.name, shader.source);
        assert!(!module.entry_points.is_empty(), "{} has no entry point", shader.name);
        spv::write_vec(&module, &info, &spv::Options::default(), None)
            .unwrap_or_else(|e| panic!("{} to SPIR-V: {e}", shader.name));
        msl::write_string(&module, &info, &msl::Options::default(), &msl::PipelineOptions::default())
            .unwrap_or_else(|e| panic!("{} to MSL: {e}", shader.name));
        let hlsl_options = hlsl::Options { fake_missing_bindings: true, ..Default::default() };
        let mut hlsl_out = String::new();
        hlsl::Writer::new(&mut hlsl_out, &hlsl_options, &hlsl::PipelineOptions::default())
            .write(&module, &info, None)
            .unwrap_or_else(|e| panic!("{} to HLSL: {e}", shader.name));
        // GL adapters have neither SHADER_F16 nor SUBGROUP in wgpu, so those variants never reach GLSL (naga has no
        // 16-bit floats there)
        let gl_entries = if is_f16(shader.source) || uses_subgroups(shader.source) { &[][..] } else { &module.entry_points[..] };
        for entry in gl_entries {
            let mut glsl_out = String::new();
            let options = glsl::Options { version: glsl::Version::new_gles(310), ..Default::default() };
            let pipeline = glsl::PipelineOptions {
                shader_stage: naga::ShaderStage::Compute,
                entry_point: entry.name.clone(),
                multiview: None,
            };
            glsl::Writer::new(&mut glsl_out, &module, &info, &options, &pipeline, Default::default())
                .and_then(|mut w| w.write())
                .unwrap_or_else(|e| panic!("{}::{} to GLSL: {e}", shader.name, entry.name));
        }
    }
}

#[test]
fn every_entry_point_is_a_compute_shader_with_a_workgroup_size() {
    for shader in ALL_SHADERS {
        let (module, _) = parse(shader.name, shader.source);
        for entry in &module.entry_points {
            assert_eq!(entry.stage, naga::ShaderStage::Compute, "{}::{}", shader.name, entry.name);
            assert!(entry.workgroup_size.iter().product::<u32>() <= 256, "{}::{} workgroup too large", shader.name, entry.name);
        }
    }
}

/// Every entry point fits wgpu's downlevel limits (the GL back end, `--backend gl`): at most 4 storage buffers per
/// stage and 16,352 bytes of workgroup memory; pipelines over them would fail to be created there.
#[test]
fn every_entry_point_fits_the_downlevel_limits() {
    let limits = wgpu::Limits::downlevel_defaults();
    for shader in ALL_SHADERS {
        for constants in specialisations(shader) {
        let (module, info) = parse_with(shader.name, shader.source, &constants);
        for (i, entry) in module.entry_points.iter().enumerate() {
            let function = info.get_entry_point(i);
            let used = module.global_variables.iter().filter(|(handle, _)| !function[*handle].is_empty());
            let (mut storage, mut workgroup_bytes) = (0, 0);
            for (_, global) in used {
                match global.space {
                    naga::AddressSpace::Storage { .. } => storage += 1,
                    naga::AddressSpace::WorkGroup => workgroup_bytes += module.types[global.ty].inner.size(module.to_ctx()),
                    _ => {}
                }
            }
            let name = format!("{}::{}", shader.name, entry.name);
            assert!(storage <= limits.max_storage_buffers_per_shader_stage, "{name}: {storage} storage buffers");
            assert!(workgroup_bytes <= limits.max_compute_workgroup_storage_size, "{name} {constants:?}: {workgroup_bytes} B of workgroup memory");
        }
        }
    }
}
