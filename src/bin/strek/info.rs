//! `strek info`: adapters, the chosen one, its limits and features, and the model's cost.

use crate::Common;
use std::process::ExitCode;
use strek::cpu::conv::Kernel;
use strek::session::resolve_auto;
use strek::config::DescriptorKind;
use strek::{Device, Gpu, ModelConfig, Weights};

pub fn run(common: &Common) -> strek::Result<ExitCode> {
    let options = common.gpu_options();
    for a in Gpu::adapters(&options)? {
        println!("adapter: {a}");
    }
    match Gpu::new(&options) {
        Ok(gpu) => {
            println!("chosen: {}", gpu.adapter);
            let l = &gpu.limits;
            println!(
                "limits: storage binding {} MiB, buffer {} MiB, workgroup storage {} KiB, invocations {}",
                l.max_storage_buffer_binding_size >> 20,
                l.max_buffer_size >> 20,
                l.max_compute_workgroup_storage_size >> 10,
                l.max_compute_invocations_per_workgroup
            );
            println!("optional features: {:?}", gpu.features);
        }
        Err(e) => println!("no GPU: {e}"),
    }
    match resolve_auto(&options)? {
        (Device::Cpu, why) => println!("--device auto: {} ({why})", strek::cpu::describe(Kernel::best())),
        (_, why) => println!("--device auto: GPU ({why})"),
    }
    let config = match common.weights_path() {
        Some(p) => {
            let w = common.adjusted(Weights::load(&p)?)?;
            println!("weights: {}", w.source);
            w.config
        }
        None => ModelConfig::default_s_trek(),
    };
    println!(
        "model: C{} detector {} MAC/px per level, receptive field {}; descriptor {} {:.0} MAC/px, {}-D",
        config.group_order,
        config.detector_macs_per_pixel(),
        config.receptive_field(),
        match config.descriptor.kind {
            DescriptorKind::Unet => "unet (version 1)",
            DescriptorKind::GroupUnet => "group_unet (version 2, rotation-invariant)",
        },
        config.descriptor_macs_per_pixel(),
        config.descriptor.dim
    );
    Ok(ExitCode::SUCCESS)
}

