//! Helper of tools/onnx/compare.py (the CPU path next to ONNX Runtime) and of docs/cpu-notes.md.
//!
//! `cargo run --release --example cpu_timing -- weights OUT.safetensors [SEED]` writes a random model with the exact
//! structure of a trained one (for machines without weights/strek.safetensors).
//! `cargo run --release --example cpu_timing -- time [--weights PATH] WxH [WxH ...] [--iters N]` times the CPU
//! extraction of the demo scene at each size and prints one JSON line per size: median seconds of the whole call
//! and of each stage, and the model's multiply-adds at that size.

use std::path::PathBuf;
use strek::model::pyramid;
use strek::{CpuExtractor, Extract, ModelConfig, Weights};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("weights") => {
            let out = PathBuf::from(args.get(1).expect("weights OUT.safetensors [SEED]"));
            let seed = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(1);
            let weights = Weights::random(&ModelConfig::default_s_trek(), seed);
            std::fs::write(&out, weights.to_bytes()).expect("writing the weights");
            println!("{}: random model, seed {seed}", out.display());
        }
        Some("time") => time(&args[1..]),
        _ => {
            eprintln!("usage: cpu_timing weights OUT.safetensors [SEED] | time [--weights PATH] WxH.. [--iters N]");
            std::process::exit(2);
        }
    }
}

fn time(args: &[String]) {
    let mut weights = None;
    let mut iters = 5;
    let mut sizes = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--weights" => weights = Some(Weights::load(it.next().expect("--weights PATH").as_ref()).expect("weights")),
            "--iters" => iters = it.next().and_then(|n| n.parse().ok()).expect("--iters N"),
            size => {
                let (w, h) = size.split_once('x').expect("sizes as WxH");
                sizes.push((w.parse::<u32>().expect("width"), h.parse::<u32>().expect("height")));
            }
        }
    }
    let weights = weights.unwrap_or_else(|| Weights::random(&ModelConfig::default_s_trek(), 1));
    let mut cpu = CpuExtractor::new(&weights, Default::default()).expect("extractor");
    for (w, h) in sizes {
        let image = strek::demo::scene(w, h, 1);
        cpu.extract(&image).expect("warm-up");
        let mut totals = Vec::new();
        let mut stages: Vec<Vec<f64>> = Vec::new();
        for _ in 0..iters {
            let start = std::time::Instant::now();
            let features = cpu.extract(&image).expect("extraction");
            totals.push(start.elapsed().as_secs_f64());
            std::hint::black_box(features);
            for (i, (_, t)) in cpu.stage_times().into_iter().enumerate() {
                if stages.len() <= i {
                    stages.push(Vec::new());
                }
                stages[i].push(t);
            }
        }
        let config = &weights.config;
        let level_pixels: f64 = pyramid(config, w, h).iter().map(|l| l.w as f64 * l.h as f64).sum();
        let detector_macs = config.detector_macs_per_pixel() as f64 * level_pixels;
        let descriptor_macs = config.descriptor_macs_per_pixel() * w as f64 * h as f64;
        let stage_json: Vec<String> = cpu
            .stage_times()
            .iter()
            .zip(&mut stages)
            .map(|((name, _), t)| format!("\"{name}\": {:.6}", median(t)))
            .collect();
        println!(
            "{{\"size\": [{w}, {h}], \"device\": \"{}\", \"iters\": {iters}, \"total\": {:.6}, \"stages\": {{{}}}, \"detector_macs\": {detector_macs:.0}, \"descriptor_macs\": {descriptor_macs:.0}, \"pooled_bytes\": {}}}",
            cpu.describe(),
            median(&mut totals),
            stage_json.join(", "),
            cpu.pooled_bytes()
        );
    }
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}
