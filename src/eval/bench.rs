//! The speed table behind `strek bench`: end-to-end wall time and per-stage times of an extractor over image sizes
//! and batch sizes, with warm-up and repetitions, throughput, multiply-adds from the loaded model and the achieved
//! GFLOP/s per stage.

use crate::extract::Extract;
use crate::config::ModelConfig;
use crate::error::Result;
use crate::image_io::Image;
use crate::model::pyramid;
use serde::Serialize;
use std::collections::BTreeMap;
use std::time::Instant;

/// Multiply-adds of one image of `w` x `h` per stage: the detector over every pyramid level (valid convolutions,
/// so each layer's output shrinks by k-1) and the descriptor U-Net (each layer at its own resolution).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct Macs {
    pub detector: f64,
    pub descriptor: f64,
}

impl Macs {
    pub fn of(config: &ModelConfig, w: u32, h: u32) -> Macs {
        let mut detector = 0.0;
        for level in pyramid(config, w, h) {
            let (mut lw, mut lh) = (level.w as f64, level.h as f64);
            for conv in config.detector_convs() {
                lw -= (conv.k - 1) as f64;
                lh -= (conv.k - 1) as f64;
                detector += lw * lh * (conv.c_out * conv.c_in * conv.k * conv.k) as f64;
            }
        }
        let descriptor = config
            .descriptor_convs()
            .iter()
            .map(|conv| {
                let (lw, lh) = config.descriptor_level_size(w, h, conv.level);
                lw as f64 * lh as f64 * (conv.c_out * conv.c_in * conv.k * conv.k) as f64
            })
            .sum();
        Macs { detector, descriptor }
    }

    pub fn total(&self) -> f64 {
        self.detector + self.descriptor
    }
}

/// Median and spread of repeated measurements, in seconds.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Stats {
    pub median: f64,
    pub p10: f64,
    pub p90: f64,
    pub min: f64,
    pub max: f64,
    pub samples: Vec<f64>,
}

impl Stats {
    pub fn of(samples: &[f64]) -> Stats {
        if samples.is_empty() {
            return Stats::default();
        }
        let mut s = samples.to_vec();
        s.sort_by(f64::total_cmp);
        // nearest-rank quantile on the sorted samples
        let q = |p: f64| s[((p * (s.len() - 1) as f64).round() as usize).min(s.len() - 1)];
        let median = if s.len() % 2 == 1 { s[s.len() / 2] } else { 0.5 * (s[s.len() / 2 - 1] + s[s.len() / 2]) };
        Stats { median, p10: q(0.1), p90: q(0.9), min: s[0], max: s[s.len() - 1], samples: samples.to_vec() }
    }
}

/// One row of the table: an image size and a batch size.
#[derive(Clone, Debug, Serialize)]
pub struct Measurement {
    pub width: u32,
    pub height: u32,
    pub batch: usize,
    /// Wall time of one `extract_batch` call, end to end (upload to features on the host).
    pub wall: Stats,
    /// Per stage as the backend reports it (GPU: upload and readback on the host clock, the rest from timestamp
    /// queries); in execution order.
    pub stages: Vec<(String, Stats)>,
    pub keypoints_per_image: f64,
    pub images_per_second: f64,
    pub keypoints_per_second: f64,
    /// Multiply-adds per image.
    pub macs_per_image: Macs,
    /// Achieved GFLOP/s (2 FLOP per multiply-add) of the detector and descriptor stages, and end to end.
    pub gflops: BTreeMap<String, f64>,
    /// Device memory allocated after the runs (the plans stay allocated, so this is the peak), where known.
    pub peak_memory_bytes: Option<u64>,
    /// Compute dispatches per image (GPU).
    pub dispatches_per_image: Option<f64>,
}

#[derive(Clone, Debug)]
pub struct Settings {
    pub sizes: Vec<(u32, u32)>,
    pub batches: Vec<usize>,
    pub warmup: usize,
    pub repetitions: usize,
}

/// Benchmark images: the given picture, or generated scenes (one per batch slot), resized to `w` x `h`.
pub fn images(base: &[Image], w: u32, h: u32, batch: usize) -> Vec<Image> {
    (0..batch)
        .map(|i| {
            let src = &base[i % base.len()];
            if (src.width, src.height) == (w, h) {
                src.clone()
            } else {
                src.resized(w, h)
            }
        })
        .collect()
}

/// Measures one configuration with a fresh extractor from `open` (so that its memory is this configuration's).
/// `memory` reads the device memory allocated now, where the backend can tell.
pub fn measure(
    extractor: &mut dyn Extract,
    config: &ModelConfig,
    batch_images: &[Image],
    settings: &Settings,
    memory: impl Fn() -> Option<u64>,
) -> Result<Measurement> {
    let (w, h) = (batch_images[0].width, batch_images[0].height);
    for _ in 0..settings.warmup {
        extractor.extract_batch(batch_images)?;
    }
    let mut wall = Vec::new();
    let mut stages: Vec<(String, Vec<f64>)> = Vec::new();
    let mut keypoints = 0usize;
    for _ in 0..settings.repetitions.max(1) {
        let start = Instant::now();
        let features = extractor.extract_batch(batch_images)?;
        wall.push(start.elapsed().as_secs_f64());
        keypoints += features.iter().map(|f| f.len()).sum::<usize>();
        for (name, t) in extractor.stage_times() {
            match stages.iter_mut().find(|(n, _)| n == name) {
                Some((_, v)) => v.push(t),
                None => stages.push((name.to_string(), vec![t])),
            }
        }
    }
    let runs = settings.repetitions.max(1);
    let batch = batch_images.len();
    let wall = Stats::of(&wall);
    let stages: Vec<(String, Stats)> = stages.into_iter().map(|(n, v)| (n, Stats::of(&v))).collect();
    let macs = Macs::of(config, w, h);
    let mut gflops = BTreeMap::new();
    let rate = |macs: f64, seconds: f64| 2.0 * macs * batch as f64 / seconds / 1e9;
    for (name, m) in [("detector", macs.detector), ("descriptor", macs.descriptor)] {
        if let Some((_, s)) = stages.iter().find(|(n, _)| n == name).filter(|(_, s)| s.median > 0.0) {
            gflops.insert(name.to_string(), rate(m, s.median));
        }
    }
    gflops.insert("end_to_end".into(), rate(macs.total(), wall.median));
    let keypoints_per_image = keypoints as f64 / (runs * batch) as f64;
    Ok(Measurement {
        width: w,
        height: h,
        batch,
        images_per_second: batch as f64 / wall.median,
        keypoints_per_second: keypoints_per_image * batch as f64 / wall.median,
        wall,
        stages,
        keypoints_per_image,
        macs_per_image: macs,
        gflops,
        peak_memory_bytes: memory(),
        dispatches_per_image: extractor.dispatches_per_image(),
    })
}

/// Memory after some number of consecutive extractions (`soak`).
#[derive(Clone, Debug, Serialize)]
pub struct SoakReading {
    pub extractions: usize,
    pub seconds: f64,
    /// Resident set of this process (Linux; a software adapter's device memory is in it too).
    pub host_bytes: Option<u64>,
    /// Device memory allocated, where the backend can tell.
    pub device_bytes: Option<u64>,
}

/// Runs `count` consecutive single-image extractions cycling through `images` and reads memory `readings` times,
/// evenly spaced, the first after one pass over `images` (when every size has its plan): a leak shows as growth
/// between the first and the last reading.
pub fn soak(
    extractor: &mut dyn Extract,
    images: &[Image],
    count: usize,
    readings: usize,
    device_memory: impl Fn() -> Option<u64>,
    mut on_reading: impl FnMut(&SoakReading),
) -> Result<Vec<SoakReading>> {
    let first = images.len().min(count);
    let step = (count - first).div_ceil(readings.saturating_sub(1).max(1)).max(1);
    let start = Instant::now();
    let mut out = Vec::new();
    for i in 0..count {
        extractor.extract(&images[i % images.len()])?;
        let done = i + 1;
        if done == first || (done > first && ((done - first) % step == 0 || done == count)) {
            let reading = SoakReading {
                extractions: done,
                seconds: start.elapsed().as_secs_f64(),
                host_bytes: resident_bytes(),
                device_bytes: device_memory(),
            };
            on_reading(&reading);
            out.push(reading);
        }
    }
    Ok(out)
}

/// This process's resident set size, from /proc (None elsewhere).
pub fn resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kib: u64 = status.lines().find(|l| l.starts_with("VmRSS:"))?.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// The two tables: end to end, then median milliseconds per stage with the achieved GFLOP/s.
pub fn tables(rows: &[Measurement], peak_gflops: Option<f64>) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<10} {:>5}  {:>9} {:>19}  {:>9}  {:>12}  {:>9}  {:>8}  {:>9}  {:>10}",
        "size", "batch", "wall ms", "p10-p90 ms", "images/s", "keypoints/s", "GMAC/img", "GFLOP/s", "peak MiB", "dispatches"
    );
    for r in rows {
        let mem = r.peak_memory_bytes.map_or("-".to_string(), |b| format!("{:.0}", b as f64 / (1 << 20) as f64));
        let dispatches = r.dispatches_per_image.map_or("-".to_string(), |d| format!("{d:.0}/img"));
        let _ = writeln!(
            out,
            "{:<10} {:>5}  {:>9.1} {:>19}  {:>9.2}  {:>12.0}  {:>9.2}  {:>8.2}  {:>9}  {:>10}",
            format!("{}x{}", r.width, r.height),
            r.batch,
            1e3 * r.wall.median,
            format!("{:.1}-{:.1}", 1e3 * r.wall.p10, 1e3 * r.wall.p90),
            r.images_per_second,
            r.keypoints_per_second,
            r.macs_per_image.total() / 1e9,
            r.gflops["end_to_end"],
            mem,
            dispatches
        );
    }
    let names: Vec<&str> = {
        let mut n: Vec<&str> = Vec::new();
        for r in rows {
            for (s, _) in &r.stages {
                if !n.contains(&s.as_str()) {
                    n.push(s);
                }
            }
        }
        n
    };
    if names.is_empty() {
        out.push_str("\n(no per-stage times: the backend does not measure them)\n");
        return out;
    }
    out.push('\n');
    let _ = write!(out, "{:<10} {:>5} ", "stage ms", "batch");
    for n in &names {
        let _ = write!(out, " {n:>10}");
    }
    let _ = writeln!(out, "  {:>14} {:>14}", "det GFLOP/s", "desc GFLOP/s");
    for r in rows {
        let _ = write!(out, "{:<10} {:>5} ", format!("{}x{}", r.width, r.height), r.batch);
        for n in &names {
            match r.stages.iter().find(|(s, _)| s == n) {
                Some((_, s)) => {
                    let _ = write!(out, " {:>10.2}", 1e3 * s.median);
                }
                None => {
                    let _ = write!(out, " {:>10}", "-");
                }
            }
        }
        let rate = |name: &str| match (r.gflops.get(name), peak_gflops) {
            (Some(g), Some(p)) => format!("{g:.1} ({:.0}%)", 100.0 * g / p),
            (Some(g), None) => format!("{g:.2}"),
            (None, _) => "-".into(),
        };
        let _ = writeln!(out, "  {:>14} {:>14}", rate("detector"), rate("descriptor"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_and_macs() {
        let s = Stats::of(&[3.0, 1.0, 2.0, 10.0]);
        assert_eq!((s.median, s.min, s.max), (2.5, 1.0, 10.0));
        let c = ModelConfig::default_s_trek();
        // a 64x64 image has one pyramid level (the others are under 128 px); layer i outputs (64 - 4(i+1))^2
        let m = Macs::of(&c, 64, 64);
        let want: f64 = c
            .detector_convs()
            .iter()
            .enumerate()
            .map(|(i, s)| ((64 - 4 * (i + 1)) as f64).powi(2) * (s.c_out * s.c_in * s.k * s.k) as f64)
            .sum();
        assert_eq!(m.detector, want);
        // the descriptor's per-pixel cost from the config, times the pixels (64 is divisible by every level)
        assert!((m.descriptor - c.descriptor_macs_per_pixel() * 64.0 * 64.0).abs() < 1.0);
    }
}
