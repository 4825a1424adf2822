//! Benchmarks of the CPU path (criterion; throughputs are FLOP/s, shown as "elem/s"):
//! - `peak/*`: this machine's FP32 peak, a tight loop of independent FMAs (12 accumulators, AVX-512 and AVX2),
//!   on one thread and on every thread of the rayon pool;
//! - `conv_1t/*`, `conv_nt/*`: each distinct convolution of the model at its size in a 640x480 extraction, on one
//!   thread and on the pool;
//! - `640x480/*`, `1280x720/*`: the whole extraction and each stage, achieved GFLOP/s = 2 * MACs / time with MACs
//!   from `eval::bench::Macs` (every layer at its own output size over the pyramid), as `strek bench` counts them.
//!
//! At the end a summary reads criterion's medians back, and measures each convolution's share of the peak
//! interleaved: on this shared 2-core machine the FMA loop alone swings between about 110 and 220 GFLOP/s from one
//! minute to the next, so 15 rounds each time the FMA loop and the layer back to back (same thread count), and the
//! share is the layer's best rate over the FMA loop's best rate (both the least disturbed of their 15 runs).
//!
//! `cargo bench --bench cpu` (all, a few minutes); `cargo bench --bench cpu -- conv_1t` (a part). Uses
//! weights/strek.safetensors when present, else a random model of the same structure (speed does not depend on it).

use criterion::{BenchmarkId, Criterion, Throughput};
use std::hint::black_box;
use std::time::Duration;
use strek::cpu::conv::{conv, conv1x1_to_map, Kernel, PackedConv};
use strek::cpu::hwc::{BufferPool, HwcMap};
use strek::config::PoolMode;
use strek::cpu::unet::{l2norm, pool as pool_map, upsample_concat};
use strek::model::{nms_settings, pyramid};
use strek::ops::nms_topk::nms_topk_reference;
use strek::ops::preprocess::{resize_reference, to_gray_reference};
use strek::ops::sample::{sample_reference, Sampling};
use strek::ops::Map;
use strek::rng::Rng;
use strek::{CpuExtractor, Extract, ModelConfig, Weights};

fn weights() -> Weights {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(strek::DEFAULT_WEIGHTS);
    Weights::load(&path).unwrap_or_else(|_| Weights::random(&ModelConfig::default_s_trek(), 1))
}

// ---- peak -------------------------------------------------------------------------------------------------------

const FMA_ITERS: u64 = 1 << 20;
const ACCUMULATORS: u64 = 12;

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn fma_loop_avx512(iters: u64) -> f32 {
    use std::arch::x86_64::*;
    let mut acc = [_mm512_set1_ps(1.0); ACCUMULATORS as usize];
    let (a, b) = (_mm512_set1_ps(0.999_999), _mm512_set1_ps(1e-7));
    for _ in 0..iters {
        for r in acc.iter_mut() {
            *r = _mm512_fmadd_ps(*r, a, b);
        }
    }
    acc.iter().map(|&r| _mm512_reduce_add_ps(r)).sum()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn fma_loop_avx2(iters: u64) -> f32 {
    use std::arch::x86_64::*;
    let mut acc = [_mm256_set1_ps(1.0); ACCUMULATORS as usize];
    let (a, b) = (_mm256_set1_ps(0.999_999), _mm256_set1_ps(1e-7));
    for _ in 0..iters {
        for r in acc.iter_mut() {
            *r = _mm256_fmadd_ps(*r, a, b);
        }
    }
    let mut sum = 0.0;
    for r in acc {
        let mut lanes = [0f32; 8];
        _mm256_storeu_ps(lanes.as_mut_ptr(), r);
        sum += lanes.iter().sum::<f32>();
    }
    sum
}

fn peak(c: &mut Criterion) {
    let threads = rayon::current_num_threads();
    let mut group = c.benchmark_group("peak");
    group.sample_size(20).warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(3));
    #[cfg(target_arch = "x86_64")]
    for (name, lanes, available, f) in [
        ("fma_avx512", 16, std::arch::is_x86_feature_detected!("avx512f"), fma_loop_avx512 as unsafe fn(u64) -> f32),
        ("fma_avx2", 8, std::arch::is_x86_feature_detected!("fma"), fma_loop_avx2 as unsafe fn(u64) -> f32),
    ] {
        if !available {
            continue;
        }
        for t in [1, threads] {
            group.throughput(Throughput::Elements(2 * lanes * ACCUMULATORS * FMA_ITERS * t as u64));
            group.bench_function(BenchmarkId::new(name, format!("{t}t")), |b| {
                b.iter(|| {
                    // SAFETY: the feature was detected above.
                    rayon::broadcast(|ctx| if ctx.index() < t { black_box(unsafe { f(black_box(FMA_ITERS)) }) } else { 0.0 })
                })
            });
        }
    }
    group.finish();
}

// ---- single convolutions ----------------------------------------------------------------------------------------

/// Each distinct convolution of the model at its input size in a 640x480 extraction: (name, layer, input size, how
/// many times a 640x480 extraction runs it: detector layers once per pyramid level, weighted by the level's pixels).
fn layers(weights: &Weights) -> Vec<(String, PackedConv, (usize, usize), f64)> {
    let det = weights.detector();
    let desc = weights.descriptor();
    let n = det.len();
    let levels: f64 = pyramid(&weights.config, 640, 480).iter().map(|l| l.w as f64 * l.h as f64).sum::<f64>() / (640.0 * 480.0);
    let mut out = vec![
        ("det_lift".to_string(), PackedConv::new(&det[0]), (640, 480), levels),
        ("det_group".to_string(), PackedConv::new(&det[1]), (636, 476), levels * (n - 2) as f64),
        ("det_last".to_string(), PackedConv::new(&det[n - 1]), (616, 456), levels),
    ];
    for d in &desc {
        let (w, h) = (640 >> d.spec.level, 480 >> d.spec.level);
        let name = d.spec.name.trim_start_matches("descriptor.").to_string();
        out.push((name, PackedConv::new(d), (w, h), 1.0));
    }
    out
}

fn conv_once(pool: &mut BufferPool, layer: &PackedConv, x: &HwcMap, kernel: Kernel) {
    if layer.spec.name.starts_with("detector") {
        let y = conv(pool, x, layer, false, true, kernel).unwrap();
        y.recycle(pool);
    } else if layer.spec.k == 1 {
        let y = conv1x1_to_map(pool, x, layer).unwrap();
        pool.give(y.data);
    } else {
        let y = conv(pool, x, layer, true, true, kernel).unwrap();
        y.recycle(pool);
    }
}

fn convs(c: &mut Criterion) {
    let weights = weights();
    let kernel = Kernel::best();
    let mut rng = Rng::new(1);
    let one = rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap();
    for (group_name, single) in [("conv_1t", true), ("conv_nt", false)] {
        let mut group = c.benchmark_group(group_name);
        group.sample_size(10).warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(2));
        for (name, layer, (w, h), _) in layers(&weights) {
            let mut pool = BufferPool::default();
            let pad = if layer.spec.name.starts_with("detector") { 0 } else { 1 };
            let x = Map::new(layer.spec.c_in, h, w, rng.vec(layer.spec.c_in * h * w, 0.0, 1.0));
            let x = HwcMap::from_map(&mut pool, &x, pad).unwrap();
            let out_pixels = if pad == 0 { (w + 1 - layer.spec.k) * (h + 1 - layer.spec.k) } else { w * h };
            group.throughput(Throughput::Elements(2 * (layer.macs_per_pixel() * out_pixels) as u64));
            group.bench_function(BenchmarkId::new(name, format!("{w}x{h}")), |b| {
                if single {
                    one.install(|| b.iter(|| conv_once(&mut pool, &layer, &x, kernel)))
                } else {
                    b.iter(|| conv_once(&mut pool, &layer, &x, kernel))
                }
            });
        }
        group.finish();
    }
}

// ---- stages -----------------------------------------------------------------------------------------------------

fn stages(c: &mut Criterion) {
    let weights = weights();
    let config = weights.config.clone();
    let kernel = Kernel::best();
    for (w, h) in [(640u32, 480u32), (1280, 720)] {
        let image = strek::demo::scene(w, h, 1);
        let levels = pyramid(&config, w, h);
        let macs = strek::eval::bench::Macs::of(&config, w, h);
        let (det_flop, desc_flop) = (2.0 * macs.detector, 2.0 * macs.descriptor);
        let mut cpu = CpuExtractor::new(&weights, Default::default()).unwrap();
        let mut group = c.benchmark_group(format!("{w}x{h}"));
        group.sample_size(10).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(if w > 640 { 12 } else { 6 }));

        group.throughput(Throughput::Elements((det_flop + desc_flop) as u64));
        group.bench_function("extract", |b| b.iter(|| cpu.extract(&image).unwrap()));

        let gray = to_gray_reference(&image, config.input);
        group.throughput(Throughput::Elements(image.width as u64 * image.height as u64));
        group.bench_function("gray", |b| b.iter(|| to_gray_reference(&image, config.input)));
        let resize_all = || levels[1..].iter().map(|l| resize_reference(&gray, l.w as usize, l.h as usize)).collect::<Vec<_>>();
        let resized = resize_all();
        group.bench_function("pyramid", |b| b.iter(resize_all));

        let mut pool = BufferPool::default();
        let inputs: Vec<&Map> = std::iter::once(&gray).chain(&resized).collect();
        group.throughput(Throughput::Elements(det_flop as u64));
        group.bench_function("detector", |b| {
            b.iter(|| {
                for input in &inputs {
                    let (s, o) = cpu.detector().run(&mut pool, input, kernel).unwrap();
                    pool.give(s.data);
                    pool.give(o.data);
                }
            })
        });
        let maps: Vec<_> = inputs.iter().map(|input| cpu.detector().run(&mut pool, input, kernel).unwrap()).collect();
        let pooled: Vec<_> = levels.iter().zip(&maps).map(|(l, (s, o))| (l.geom, s, o)).collect();
        let settings = nms_settings(&config, config.inference.max_keypoints);
        group.throughput(Throughput::Elements(levels.iter().map(|l| l.geom.hw as u64 * l.geom.hh as u64).sum()));
        group.bench_function("nms_topk", |b| b.iter(|| nms_topk_reference(&pooled, &settings)));
        let records = nms_topk_reference(&pooled, &settings);

        group.throughput(Throughput::Elements(desc_flop as u64));
        group.bench_function("descriptor", |b| {
            b.iter(|| {
                let map = cpu.descriptor().run(&mut pool, &gray, kernel).unwrap();
                pool.give(map.data);
            })
        });
        let map = cpu.descriptor().run(&mut pool, &gray, kernel).unwrap();
        group.throughput(Throughput::Elements(records.len() as u64));
        let sampling = Sampling::new(&config, (w, h), (map.w as u32, map.h as u32));
        group.bench_function("sampling", |b| b.iter(|| sample_reference(&map, sampling, &records)));
        group.finish();
        // the U-Net's data movement on its own, for the notes (no throughput: no multiply-adds)
        let mut group = c.benchmark_group(format!("{w}x{h}_unet"));
        group.sample_size(10).warm_up_time(Duration::from_millis(300)).measurement_time(Duration::from_secs(1));
        let x = HwcMap::from_map(&mut pool, &Map::new(16, h as usize, w as usize, vec![0.5; 16 * (w * h) as usize]), 1).unwrap();
        group.bench_function("avgpool2_16ch", |b| b.iter(|| pool_map(&mut pool, &x, PoolMode::Mean2x2).unwrap().recycle(&mut pool)));
        let small = HwcMap::from_map(&mut pool, &Map::new(128, h as usize / 8, w as usize / 8, vec![0.5; 128 * (w * h) as usize / 64]), 1).unwrap();
        let skip = HwcMap::from_map(&mut pool, &Map::new(64, h as usize / 4, w as usize / 4, vec![0.5; 64 * (w * h) as usize / 16]), 1).unwrap();
        group.bench_function("upsample_concat", |b| b.iter(|| upsample_concat(&mut pool, &small, &skip).unwrap().recycle(&mut pool)));
        let mut m = Map::new(128, h as usize / 4, w as usize / 4, vec![0.5; 128 * (w * h) as usize / 16]);
        group.bench_function("l2norm", |b| b.iter(|| l2norm(&mut m)));
        group.finish();
    }
}

// ---- summary ----------------------------------------------------------------------------------------------------

/// Median seconds of one benchmark from criterion's saved estimates.
fn median(id: &str) -> Option<f64> {
    let target = std::env::var_os("CARGO_TARGET_DIR").map(std::path::PathBuf::from).unwrap_or_else(|| {
        let exe = std::env::current_exe().unwrap();
        exe.ancestors().nth(3).unwrap().to_path_buf()
    });
    let text = std::fs::read_to_string(target.join("criterion").join(id).join("new/estimates.json")).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    Some(v["median"]["point_estimate"].as_f64()? * 1e-9)
}

fn summary() {
    let weights = weights();
    let threads = rayon::current_num_threads();
    let flops = |lanes: f64, t: usize| 2.0 * lanes * (ACCUMULATORS * FMA_ITERS) as f64 * t as f64;
    let peak_of = |t: usize| {
        median(&format!("peak/fma_avx512/{t}t"))
            .map(|s| flops(16.0, t) / s)
            .or_else(|| median(&format!("peak/fma_avx2/{t}t")).map(|s| flops(8.0, t) / s))
    };
    let (peak1, peakn) = (peak_of(1), peak_of(threads));
    println!("\nsummary ({}; medians of criterion samples)", Kernel::best().name());
    if let (Some(p1), Some(pn)) = (peak1, peakn) {
        println!("FP32 peak (FMA loop): {:.1} GFLOP/s on 1 thread, {:.1} GFLOP/s on {threads}", p1 / 1e9, pn / 1e9);
    }
    println!("criterion medians, and interleaved shares of the peak (best of 15 back-to-back rounds: layer GFLOP/s / FMA-loop GFLOP/s)");
    println!("| layer | size | MFLOP | 1t GFLOP/s (criterion) | 1t % of peak (interleaved) | {threads}t GFLOP/s (criterion) | {threads}t % of peak (interleaved) |");
    println!("|---|---|---|---|---|---|---|");
    let one = rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap();
    let mut rng = Rng::new(2);
    let (mut total_flop, mut total_1t, mut total_nt) = (0.0, 0.0, 0.0);
    for (name, layer, (w, h), count) in layers(&weights) {
        let valid = name.starts_with("det");
        let pixels = if valid { (w + 1 - layer.spec.k) * (h + 1 - layer.spec.k) } else { w * h };
        let flop = 2.0 * (layer.macs_per_pixel() * pixels) as f64;
        let gflops = |group: &str| match median(&format!("{group}/{name}/{w}x{h}")) {
            Some(s) => format!("{:.1}", flop / s / 1e9),
            None => "-".into(),
        };
        let mut pool = BufferPool::default();
        let x = Map::new(layer.spec.c_in, h, w, rng.vec(layer.spec.c_in * h * w, 0.0, 1.0));
        let x = HwcMap::from_map(&mut pool, &x, if valid { 0 } else { 1 }).unwrap();
        let share_1t = one.install(|| interleaved_share(&mut pool, &layer, &x, flop, 1));
        let share_nt = interleaved_share(&mut pool, &layer, &x, flop, threads);
        total_flop += count * flop;
        total_1t += count * flop / share_1t;
        total_nt += count * flop / share_nt;
        println!(
            "| {name} | {w}x{h} | {:.0} | {} | {:.0}% | {} | {:.0}% |",
            flop / 1e6,
            gflops("conv_1t"),
            100.0 * share_1t,
            gflops("conv_nt"),
            100.0 * share_nt
        );
    }
    // Over all convolutions of one 640x480 extraction (each layer as often as it runs): FLOP / sum of FLOP / share.
    println!(
        "| all convolutions of a 640x480 extraction | | {:.0} | | {:.0}% | | {:.0}% |",
        total_flop / 1e6,
        100.0 * total_flop / total_1t,
        100.0 * total_flop / total_nt
    );
    for size in ["640x480", "1280x720"] {
        let get = |s: &str| median(&format!("{size}/{s}"));
        if let Some(total) = get("extract") {
            let parts: Vec<String> = ["gray", "pyramid", "detector", "nms_topk", "descriptor", "sampling"]
                .iter()
                .filter_map(|s| get(s).map(|t| format!("{s} {:.1} ms", t * 1e3)))
                .collect();
            println!("{size}: extract {:.1} ms ({})", total * 1e3, parts.join(", "));
        }
    }
}

/// Best layer FLOP/s over best FMA-loop FLOP/s in 15 rounds that time the two back to back on `threads` threads of
/// the current pool.
fn interleaved_share(pool: &mut BufferPool, layer: &PackedConv, x: &HwcMap, flop: f64, threads: usize) -> f64 {
    let kernel = Kernel::best();
    #[cfg(target_arch = "x86_64")]
    let (lanes, fma): (f64, unsafe fn(u64) -> f32) = match kernel {
        Kernel::Avx512 => (16.0, fma_loop_avx512),
        Kernel::Avx2 => (8.0, fma_loop_avx2),
        Kernel::Gemm => return f64::NAN, // no FMA loop for this machine
    };
    #[cfg(not(target_arch = "x86_64"))]
    return f64::NAN;
    let iters = FMA_ITERS * 4;
    let peak_flop = 2.0 * lanes * (ACCUMULATORS * iters) as f64 * threads as f64;
    conv_once(pool, layer, x, kernel);
    let (mut best_peak, mut best_layer) = (0f64, 0f64);
    for _ in 0..15 {
        let start = std::time::Instant::now();
        // SAFETY: `Kernel::best` detected the features this loop needs.
        rayon::broadcast(|ctx| if ctx.index() < threads { black_box(unsafe { fma(black_box(iters)) }) } else { 0.0 });
        best_peak = best_peak.max(peak_flop / start.elapsed().as_secs_f64());
        let start = std::time::Instant::now();
        conv_once(pool, layer, x, kernel);
        best_layer = best_layer.max(flop / start.elapsed().as_secs_f64());
    }
    best_layer / best_peak
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    peak(&mut c);
    convs(&mut c);
    stages(&mut c);
    c.final_summary();
    summary();
}
