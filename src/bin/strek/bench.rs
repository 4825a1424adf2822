//! `strek bench`: the speed table (wall time, per-stage times, throughput, GFLOP/s, memory) over image and batch
//! sizes, as a table and as JSON, with the adapter and driver named in both.

use crate::Common;
use std::path::PathBuf;
use std::process::ExitCode;
use strek::eval::bench::{images, measure, soak, tables, Measurement, Settings, SoakReading};
use strek::{Config, Image, ModelConfig, Session, Weights};

/// Measure extraction speed: per-stage times, wall time, images/s, keypoints/s, GFLOP/s, memory.
#[derive(clap::Args)]
pub struct Args {
    /// Image sizes, WxH, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "640x480,1280x720,1920x1080,3840x2160")]
    sizes: Vec<String>,
    /// Batch sizes, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,8")]
    batch: Vec<usize>,
    /// Untimed runs first (plans, pipelines, caches).
    #[arg(long, default_value_t = 3)]
    warmup: usize,
    /// Timed runs; the table shows their median and 10th-90th percentiles.
    #[arg(long, default_value_t = 20)]
    reps: usize,
    /// Keypoints per image.
    #[arg(long = "k", default_value_t = 1000)]
    k: usize,
    /// Benchmark on this picture (resized to each size) instead of generated scenes.
    #[arg(long)]
    image: Option<PathBuf>,
    /// Peak GFLOP/s of the device, for the achieved share per stage.
    #[arg(long)]
    peak_gflops: Option<f64>,
    /// Write the results here (JSON).
    #[arg(long)]
    json: Option<PathBuf>,
    /// Instead of the speed table: this many consecutive single-image extractions cycling through --sizes, reading
    /// host and device memory ten times; exits 1 if memory grew after the first pass (a leak).
    #[arg(long, value_name = "N")]
    soak: Option<usize>,
    /// Write the benchmark images as DIR/<W>x<H>/<i>.png (for tools/gpu's PyTorch comparison).
    #[arg(long)]
    save_images: Option<PathBuf>,
}

fn parse_size(s: &str) -> strek::Result<(u32, u32)> {
    let bad = || strek::Error::Invalid(format!("size {s:?}: expected WxH, e.g. 640x480"));
    let (w, h) = s.trim().split_once(['x', 'X']).ok_or_else(bad)?;
    let (w, h) = (w.parse::<u32>().map_err(|_| bad())?, h.parse::<u32>().map_err(|_| bad())?);
    if w == 0 || h == 0 {
        return Err(bad());
    }
    Ok((w, h))
}

pub fn run(common: &Common, args: &Args) -> strek::Result<ExitCode> {
    let sizes = args.sizes.iter().map(|s| parse_size(s)).collect::<strek::Result<Vec<_>>>()?;
    if args.batch.iter().any(|&b| b == 0) || args.k == 0 {
        return Err(strek::Error::Invalid("--batch and --k must be at least 1".into()));
    }
    let weights = common.adjusted(match common.weights_path() {
        Some(p) => Weights::load(&p)?,
        None => {
            eprintln!("no weights found: timing a random model of the default architecture (same cost)");
            Weights::random(&ModelConfig::default_s_trek(), 1)
        }
    })?;
    let session = common.session()?;
    let base: Vec<Image> = match &args.image {
        Some(p) => vec![Image::open_with(p, &common.decode_limits())?],
        None => (0..args.batch.iter().copied().max().unwrap_or(1)).map(|i| strek::demo::scene(640, 480, 1 + i as u64)).collect(),
    };
    let config = Config { max_keypoints: Some(args.k), ..Default::default() };
    let about = About::of(&session);
    eprintln!("{}\n{}\nweights: {}", about.device, about.caution, weights.source);
    if let Some(count) = args.soak {
        let soak_images: Vec<Image> = sizes.iter().flat_map(|&(w, h)| images(&base, w, h, 1)).collect();
        return soak_run(&session, &weights, config, &soak_images, count, &about.device);
    }
    let settings = Settings { sizes, batches: args.batch.clone(), warmup: args.warmup, repetitions: args.reps };
    let rows = measure_rows(&session, &weights, &config, &base, &settings, args.save_images.as_deref())?;
    println!("strek bench on {}", about.device);
    println!("{}; {}", about.caution, about.timing);
    println!(
        "weights: {}; top {} keypoints; {} warm-up and {} timed runs per row; medians",
        weights.source, args.k, args.warmup, args.reps
    );
    print!("{}", tables(&rows, args.peak_gflops));
    if let Some(path) = &args.json {
        write_json(path, &session, &about, &weights, args, &rows)?;
        eprintln!("results: {}", path.display());
    }
    Ok(ExitCode::SUCCESS)
}

/// What the numbers are times of, for the table's head and the JSON.
struct About {
    device: String,
    caution: &'static str,
    timing: &'static str,
}

impl About {
    fn of(session: &Session) -> Self {
        let gpu = session.gpu();
        let caution = if session.is_software() {
            "SOFTWARE adapter: these times are the CPU's, not a GPU's"
        } else if gpu.is_none() {
            "CPU path"
        } else {
            "hardware adapter"
        };
        let timing = match gpu {
            Some(g) if g.features.contains(wgpu::Features::TIMESTAMP_QUERY) => {
                "GPU stages from timestamp queries; upload and readback on the host clock"
            }
            Some(_) => "no timestamp queries on this adapter: wall time only (plus host upload and readback)",
            None => "stages on the host clock",
        };
        About { device: session.describe(), caution, timing }
    }
}

/// One row per size and batch, each with a fresh extractor so that the memory reported is that row's.
fn measure_rows(
    session: &Session,
    weights: &Weights,
    config: &Config,
    base: &[Image],
    settings: &Settings,
    save_images: Option<&std::path::Path>,
) -> strek::Result<Vec<Measurement>> {
    let mut rows = Vec::new();
    let mut eta = Eta::new(settings, &weights.config);
    for &(w, h) in &settings.sizes {
        for &batch in &settings.batches {
            eprintln!("{w}x{h} batch {batch}: {} runs ...", settings.warmup + settings.repetitions.max(1));
            let row_start = std::time::Instant::now();
            let batch_images = images(base, w, h, batch);
            if let Some(dir) = save_images {
                for (i, image) in batch_images.iter().enumerate() {
                    strek::eval::dataset::write_png(image, &dir.join(format!("{w}x{h}")).join(format!("{i}.png")))?;
                }
            }
            session.wait_idle()?;
            let mut extractor = session.extractor(weights, config.clone())?;
            let row = measure(extractor.as_mut(), &weights.config, &batch_images, settings, || session.device_bytes())?;
            eprintln!("{w}x{h} batch {batch}: {:.1} ms", 1e3 * row.wall.median);
            eta.row_done(w, h, batch, row_start.elapsed().as_secs_f64());
            rows.push(row);
        }
    }
    Ok(rows)
}

fn write_json(path: &std::path::Path, session: &Session, about: &About, weights: &Weights, args: &Args, rows: &[Measurement]) -> strek::Result<()> {
    let adapter = session.gpu().map(|g| {
        serde_json::json!({
            "name": g.adapter.name, "backend": g.adapter.backend, "device_type": g.adapter.device_type,
            "driver": g.adapter.driver, "software": g.adapter.is_software,
        })
    });
    let doc = serde_json::json!({
        "device": about.device,
        "adapter": adapter,
        "software_adapter": session.is_software(),
        "precision": session.gpu().map_or("f32", |_| session.precision().name()),
        "note": about.caution,
        "timing": about.timing,
        "weights": weights.source,
        "top_k": args.k,
        "warmup": args.warmup,
        "repetitions": args.reps,
        "peak_gflops": args.peak_gflops,
        "results": rows,
    });
    strek::features::write_atomically(path, serde_json::to_string_pretty(&doc).expect("serialises").as_bytes())
}

/// `--soak N`: memory over N consecutive extractions.
fn soak_run(
    session: &Session,
    weights: &Weights,
    config: Config,
    images: &[Image],
    count: usize,
    describe: &str,
) -> strek::Result<ExitCode> {
    if count < images.len() {
        return Err(strek::Error::Invalid(format!("--soak needs at least one extraction per size ({})", images.len())));
    }
    let mut extractor = session.extractor(weights, config)?;
    let device = || session.device_bytes();
    let mib = |b: Option<u64>| b.map_or("-".to_string(), |b| format!("{:.1}", b as f64 / (1 << 20) as f64));
    println!("strek bench --soak {count} on {describe}: {} sizes in turn, batch 1", images.len());
    println!("{:>12} {:>10} {:>10} {:>14} {:>16}", "extractions", "seconds", "images/s", "host RSS MiB", "device MiB");
    let show = |r: &SoakReading| {
        let rate = r.extractions as f64 / r.seconds;
        println!("{:>12} {:>10.1} {:>10.1} {:>14} {:>16}", r.extractions, r.seconds, rate, mib(r.host_bytes), mib(r.device_bytes));
    };
    let readings = soak(extractor.as_mut(), images, count, 10, device, show)?;
    let (first, last) = (&readings[0], &readings[readings.len() - 1]);
    let growth = |a: Option<u64>, b: Option<u64>| a.zip(b).map(|(a, b)| b as i64 - a as i64);
    let host = growth(first.host_bytes, last.host_bytes);
    let device = growth(first.device_bytes, last.device_bytes);
    let text = |g: Option<i64>| g.map_or("unknown".to_string(), |g| format!("{:+.2} MiB", g as f64 / (1 << 20) as f64));
    println!("from extraction {} to {}: host {}, device {}", first.extractions, last.extractions, text(host), text(device));
    // a leak of even 1 KiB per extraction shows over a few thousand; allocator noise stays under a few MiB
    let leaked = device.is_some_and(|g| g != 0) || host.is_some_and(|g| g > 16 << 20);
    if leaked {
        println!("memory grew: a leak");
    }
    Ok(if leaked { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}

/// How long the rest of a benchmark will take, from the first row's rate per multiply-add (the CPU path's default
/// sizes take many minutes: a user should know before waiting).
struct Eta {
    /// Multiply-adds of each row still to run, in order.
    remaining: Vec<f64>,
    told: bool,
}

impl Eta {
    fn new(settings: &Settings, config: &strek::ModelConfig) -> Self {
        let runs = (settings.warmup + settings.repetitions.max(1)) as f64;
        let mut remaining = Vec::new();
        for &(w, h) in &settings.sizes {
            for &batch in &settings.batches {
                let macs = strek::eval::bench::Macs::of(config, w, h);
                remaining.push(runs * batch as f64 * (macs.detector + macs.descriptor));
            }
        }
        remaining.reverse();
        Eta { remaining, told: false }
    }

    fn row_done(&mut self, w: u32, h: u32, batch: usize, seconds: f64) {
        let Some(done) = self.remaining.pop() else { return };
        let left = seconds / done * self.remaining.iter().sum::<f64>();
        if !self.told && left > 30.0 {
            eprintln!(
                "about {} left for the other rows (at the rate of {w}x{h} batch {batch}); --sizes, --batch and --reps shorten it",
                duration(left)
            );
            self.told = true;
        }
    }
}

fn duration(seconds: f64) -> String {
    if seconds < 120.0 {
        format!("{seconds:.0} s")
    } else {
        format!("{:.0} min", seconds / 60.0)
    }
}
