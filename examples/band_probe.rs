//! The measurement behind BENCHMARKS.md's "row bands against shrinking" (issue 15): the CPU path's buffer-pool bytes
//! per image pixel and the time of the detector on one level, whole and in row bands of BAND heatmap rows (each with
//! the receptive field's halo; the heatmaps are compared bit for bit), and of the descriptor U-Net, whole. The
//! shipped weights, a random 1-channel image.
//!
//! `cargo run --release --example band_probe -- W H BAND [bands-only]` (run from the repository root;
//! `bands-only` skips the whole-level detector, for sizes whose whole level does not fit in memory).
use std::time::Instant;
use strek::cpu::conv::Kernel;
use strek::cpu::hwc::BufferPool;
use strek::cpu::CpuExtractor;
use strek::ops::Map;
use strek::Weights;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (w, h, band): (usize, usize, usize) = (args[1].parse().unwrap(), args[2].parse().unwrap(), args[3].parse().unwrap());
    let weights = Weights::load("weights/strek.safetensors".as_ref()).unwrap();
    let cpu = CpuExtractor::new(&weights, Default::default()).unwrap();
    let mut rng = strek::rng::Rng::new(1);
    let image = Map::new(1, h, w, (0..w * h).map(|_| rng.normal()).collect());
    let kernel = Kernel::best();
    let r = weights.config.receptive_field();
    let hh = h - r + 1;
    let whole = args.len() < 5;
    let mut s_whole = Map::zeros(1, 1, 1);
    if whole {
        let mut pool = BufferPool::default();
        let t = Instant::now();
        s_whole = cpu.detector().run(&mut pool, &image, kernel).unwrap().0;
        println!("detector whole {w}x{h}: {:.1} B/px, {:.2} s", pool.allocated() as f64 / (w * h) as f64, t.elapsed().as_secs_f64());
    }
    // bands of `band` heatmap rows
    let mut pool = BufferPool::default();
    let t = Instant::now();
    let mut rows = Vec::with_capacity(hh * (w - r + 1));
    let mut y0 = 0;
    while y0 < hh {
        let y1 = (y0 + band).min(hh);
        let slice = Map::new(1, y1 - y0 + r - 1, w, image.data[y0 * w..(y1 + r - 1) * w].to_vec());
        let (s, o) = cpu.detector().run(&mut pool, &slice, kernel).unwrap();
        rows.extend_from_slice(&s.data);
        pool.give(s.data);
        pool.give(o.data);
        y0 = y1;
    }
    let t_band = t.elapsed().as_secs_f64();
    let same = rows == s_whole.data;
    println!("detector bands of {band}: {:.1} B/px of the image (pool {:.0} MiB), {:.2} s, identical heatmap: {same}", pool.allocated() as f64 / (w * h) as f64, pool.allocated() as f64 / 1048576.0, t_band);
    let mut pool = BufferPool::default();
    let t = Instant::now();
    let map = cpu.descriptor().run(&mut pool, &image, kernel).unwrap();
    println!("descriptor whole: {:.1} B/px, {:.2} s (map {:.1} B/px)", pool.allocated() as f64 / (w * h) as f64, t.elapsed().as_secs_f64(), map.bytes() as f64 / (w * h) as f64);
}
