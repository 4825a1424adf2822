//! The measurement behind docs/kernel-notes.md "Where the descriptor's time goes": each dispatch of the descriptor
//! plan of a W x H image run on its own on the GPU (`Gpu::run` waits for it), mean of 3 after one warm-up of the
//! whole plan, with the shipped weights and f32 storage. On a software adapter these are CPU times.
//!
//! `cargo run --release --example descriptor_dispatches -- W H`
use std::time::Instant;
use strek::config::Step;
use strek::gpu::{Gpu, GpuOptions};
use strek::model::descriptor::DescriptorGpu;
use strek::ops::Precision;
use strek::weights::Weights;

fn main() {
    let size: Vec<u32> = std::env::args().skip(1).map(|a| a.parse().expect("W H")).collect();
    let [w, h] = size[..] else { panic!("usage: descriptor_dispatches W H") };
    let gpu = Gpu::new(&GpuOptions::default()).unwrap();
    println!("adapter: {}", gpu.adapter);
    let weights = Weights::load(std::path::Path::new(strek::DEFAULT_WEIGHTS)).unwrap();
    let descriptor = DescriptorGpu::upload(&gpu, &weights.descriptor(), &weights.config, Precision::F32);
    let input = gpu.storage("gray", 4 * (w * h) as u64);
    let plan = descriptor.plan(&gpu, &input, (w, h));
    // the plan has one dispatch per step but the kept skips
    let steps = weights.config.descriptor_steps().into_iter().filter(|s| !matches!(s, Step::KeepSkip { .. }));
    gpu.run(&plan.dispatches).unwrap();
    let mut total = 0.0;
    for (dispatch, step) in plan.dispatches.iter().zip(steps) {
        let runs = 3;
        let start = Instant::now();
        for _ in 0..runs {
            gpu.run(std::slice::from_ref(dispatch)).unwrap();
        }
        let ms = start.elapsed().as_secs_f64() * 1e3 / runs as f64;
        total += ms;
        let name = match &step {
            Step::Conv(spec) | Step::Head(spec) => format!("{} {}->{} {}x{}", spec.name, spec.c_in, spec.c_out, spec.k, spec.k),
            other => format!("{other:?}"),
        };
        println!("{ms:9.1} ms  {name}");
    }
    println!("{total:9.1} ms  all");
}
