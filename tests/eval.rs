//! The evaluation harness: homography estimation on synthetic correspondences with known outlier ratios, the
//! metrics on constructed features, the data set layout, and the whole `strek eval` / `strek match` on a tiny set
//! generated here (engine features and their own npz files must give identical numbers).

use std::path::{Path, PathBuf};
use std::process::Command;
use strek::eval::dataset::{fit, DataSet};
use strek::geometry::homography::{dlt, estimate, iterations_needed, Ransac};
use strek::eval::metrics::{corner_error, evaluate_pair, repeatability, top_k, visible, Protocol};
use strek::eval::to_image_size;
use strek::geometry::{rotate_image, Homography};
use strek::Matcher;
use strek::rng::Rng;
use strek::Features;

fn truth() -> Homography {
    // a perspective view: rotation, scale, shear and a visible projective part
    Homography([[0.9, -0.25, 40.0], [0.3, 1.1, -12.0], [2e-4, -1e-4, 1.0]])
}

/// `n` correspondences of `h` on a 640x480 image, the first `outliers` of them replaced by random points, inliers
/// perturbed by Gaussian noise of `noise` px.
fn correspondences(h: &Homography, n: usize, outliers: usize, noise: f32, seed: u64) -> (Vec<[f64; 2]>, Vec<[f64; 2]>) {
    let mut rng = Rng::new(seed);
    let mut from = Vec::new();
    let mut to = Vec::new();
    for i in 0..n {
        let p = [rng.range(0.0, 640.0) as f64, rng.range(0.0, 480.0) as f64];
        let q = if i < outliers {
            [rng.range(0.0, 640.0) as f64, rng.range(0.0, 480.0) as f64]
        } else {
            let (x, y) = h.apply(p[0], p[1]).unwrap();
            [x + (noise * rng.normal()) as f64, y + (noise * rng.normal()) as f64]
        };
        from.push(p);
        to.push(q);
    }
    (from, to)
}

#[test]
fn dlt_is_exact_on_exact_correspondences() {
    let h = truth();
    for n in [4, 5, 50] {
        let (from, to) = correspondences(&h, n, 0, 0.0, n as u64);
        let est = dlt(&from, &to).unwrap();
        let err = corner_error(&est, &h, [640, 480]);
        assert!(err < 1e-6, "{n} points: corner error {err}");
    }
    // degenerate: all points on a line
    let from: Vec<[f64; 2]> = (0..6).map(|i| [i as f64, 2.0 * i as f64]).collect();
    assert!(dlt(&from, &from).map_or(true, |h| !h.0.iter().flatten().all(|v| v.is_finite()) || h.0[2][2] == 1.0));
    assert!(dlt(&from[..3], &from[..3]).is_none());
}

#[test]
fn ransac_recovers_the_homography_at_known_outlier_ratios() {
    let h = truth();
    let mut previous_iterations = 0;
    for (k, &ratio) in [0.0, 0.3, 0.6, 0.8].iter().enumerate() {
        let n = 400;
        let outliers = (ratio * n as f64) as usize;
        let (from, to) = correspondences(&h, n, outliers, 0.5, 100 + k as u64);
        let e = estimate(&from, &to, &Ransac::homography()).expect("an estimate");
        let err = corner_error(&e.model, &h, [640, 480]);
        assert!(err < 1.0, "outlier ratio {ratio}: corner error {err}");
        // every true inlier within 3 px is found; an outlier counts only where it happens to agree with h
        let true_inliers = n - outliers;
        let found = e.inliers[outliers..].iter().filter(|f| **f).count();
        assert!(found as f64 >= 0.99 * true_inliers as f64, "ratio {ratio}: {found} of {true_inliers} inliers");
        let false_positives = e.inliers[..outliers].iter().filter(|f| **f).count();
        assert!(false_positives <= outliers / 50 + 1, "ratio {ratio}: {false_positives} outliers taken as inliers");
        // the adaptive count grows with the outlier ratio and stays near the theory (p = 0.999, samples of 4)
        let needed = iterations_needed(true_inliers as f64 / n as f64, 4, 0.999);
        assert!(e.iterations as f64 <= needed * 3.0 + 5.0, "ratio {ratio}: {} iterations, theory {needed}", e.iterations);
        assert!(e.iterations >= previous_iterations, "ratio {ratio}: iterations must not shrink with more outliers");
        previous_iterations = e.iterations;
    }
}

#[test]
fn ransac_is_reproducible_and_refuses_too_few_points() {
    let (from, to) = correspondences(&truth(), 100, 50, 0.5, 7);
    let settings = Ransac::homography();
    assert_eq!(estimate(&from, &to, &settings), estimate(&from, &to, &settings));
    assert!(estimate(&from[..3], &to[..3], &settings).is_none());
    assert!(estimate(&[], &[], &settings).is_none());
}

#[test]
fn iteration_count_formula() {
    assert_eq!(iterations_needed(1.0, 4, 0.999), 1.0);
    assert!(iterations_needed(0.0, 4, 0.999).is_infinite());
    // 50 % inliers: log(0.001) / log(1 - 1/16) = 107.03, rounded up
    assert_eq!(iterations_needed(0.5, 4, 0.999), 108.0);
}

/// Features at the given points, each with a unit descriptor of its own (one-hot by index).
fn features_at(points: &[[f32; 2]], size: [u32; 2], dim: usize) -> Features {
    let mut f = Features::empty(size, dim);
    for (i, p) in points.iter().enumerate() {
        f.keypoints.push(*p);
        f.scores.push(1.0 - i as f32 * 1e-4);
        f.orientations.push(0.0);
        f.scales.push(1.0);
        let mut d = vec![0.0; dim];
        d[i % dim] = 1.0;
        f.descriptors.extend(d);
    }
    f
}

fn grid(n: usize, w: f32, h: f32) -> Vec<[f32; 2]> {
    let mut rng = Rng::new(5);
    (0..n).map(|_| [rng.range(20.0, w - 20.0), rng.range(20.0, h - 20.0)]).collect()
}

#[test]
fn metrics_of_a_perfect_and_of_a_shifted_detector() {
    let h = Homography([[1.0, 0.0, 10.0], [0.0, 1.0, 5.0], [0.0, 0.0, 1.0]]);
    let points = grid(64, 320.0, 240.0);
    let a = features_at(&points, [320, 240], 64);
    let warp = |dx: f32| -> Features {
        let moved: Vec<[f32; 2]> = points.iter().map(|p| [p[0] + 10.0 + dx, p[1] + 5.0]).collect();
        features_at(&moved, [320, 240], 64)
    };
    let protocol = Protocol::default();
    let perfect = evaluate_pair(&a, &warp(0.0), &h, &protocol, &Matcher::Cpu).unwrap();
    assert_eq!(perfect.repeatability, 1.0);
    assert_eq!(perfect.mma, [1.0, 1.0, 1.0]);
    assert_eq!(perfect.hacc, [1.0, 1.0, 1.0]);
    assert!(perfect.corner_error.unwrap() < 1e-3, "keypoints are f32");
    // 2 px off: repeatable at 3 px, matches correct at 3 and 5 px but not at 1 px, homography off by 2 px
    let off = evaluate_pair(&a, &warp(2.0), &h, &protocol, &Matcher::Cpu).unwrap();
    assert_eq!(off.repeatability, 1.0);
    assert_eq!(off.mma, [0.0, 1.0, 1.0]);
    assert_eq!(off.hacc, [0.0, 1.0, 1.0]);
    assert!((off.corner_error.unwrap() - 2.0).abs() < 1e-3);
    // 4 px off: nothing within 3 px
    let far = evaluate_pair(&a, &warp(4.0), &h, &protocol, &Matcher::Cpu).unwrap();
    assert_eq!(far.repeatability, 0.0);
    assert_eq!(far.mma, [0.0, 0.0, 1.0]);
    // the demo's entry point agrees
    assert_eq!(repeatability(&a, &warp(0.0), &h, 3.0), Some(1.0));
}

#[test]
fn invisible_keypoints_are_dropped_and_top_k_keeps_the_best() {
    // shift by 200 px: only keypoints with x < 120 stay inside a 320-wide image
    let h = Homography([[1.0, 0.0, 200.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]);
    let points = grid(100, 320.0, 240.0);
    let a = features_at(&points, [320, 240], 128);
    let inside = visible(&a, &h, [320, 240]);
    assert_eq!(inside, (0..100).filter(|&i| points[i][0] + 200.0 <= 319.5).collect::<Vec<_>>());
    // b holds the keypoints of a that land inside it, in a's order (so that descriptors agree)
    let mut b = features_at(&points.iter().map(|p| [p[0] + 200.0, p[1]]).collect::<Vec<_>>(), [320, 240], 128);
    b = strek::eval::metrics::subset(&b, &inside);
    let m = evaluate_pair(&a, &b, &h, &Protocol::default(), &Matcher::Cpu).unwrap();
    assert_eq!(m.visible[0], inside.len());
    assert_eq!(m.repeatability, 1.0, "only the visible keypoints count");
    assert_eq!(m.matches, inside.len());
    // top-k by score, whatever the order of the file
    let mut shuffled = a.clone();
    shuffled.scores.reverse();
    let best = top_k(&shuffled, 10);
    assert_eq!(best.keypoints, points[90..].iter().rev().copied().collect::<Vec<_>>());
}

#[test]
fn fit_shrinks_and_maps_pixel_centres() {
    let scene = strek::demo::scene(100, 80, 3);
    let (small, map) = fit(&scene, Some(50));
    assert_eq!((small.width, small.height), (50, 40));
    // pixel centres: the centre of the image maps to the centre, corner (-0.5, -0.5) to (-0.5, -0.5)
    let (x, y) = map.apply(49.5, 39.5).unwrap();
    assert!((x - 24.5).abs() < 1e-9 && (y - 19.5).abs() < 1e-9);
    let (x, y) = map.apply(-0.5, -0.5).unwrap();
    assert!((x + 0.5).abs() < 1e-9 && (y + 0.5).abs() < 1e-9);
    let (same, identity) = fit(&scene, Some(200));
    assert_eq!((same, identity), (scene.clone(), Homography::identity()));
}

#[test]
fn features_of_a_resized_copy_map_to_the_evaluated_image() {
    let f = features_at(&[[9.5, 4.5]], [20, 10], 4);
    let g = to_image_size(f.clone(), [40, 20]).unwrap();
    assert_eq!(g.keypoints[0], [19.5, 9.5]);
    assert_eq!(g.scales[0], 2.0);
    assert!(to_image_size(f, [40, 10]).unwrap_err().contains("20x10"));
}

// ---- the whole harness on a tiny generated set ----

fn strek() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_strek"));
    c.env("XDG_RUNTIME_DIR", std::env::temp_dir());
    c
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("strek-eval-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn save(image: &strek::Image, path: &Path) {
    strek::eval::dataset::write_png(image, path).unwrap();
}

fn write_h(h: &Homography, path: &Path) {
    let text: String = h.0.iter().map(|r| format!("{} {} {}\n", r[0], r[1], r[2])).collect();
    std::fs::write(path, text).unwrap();
}

/// Two sequences of generated scenes: `a` (image 2 a quarter turn of image 1), `b` (a half turn and 30 degrees).
fn tiny_set(root: &Path, w: u32, h: u32) {
    for (name, seed, angles) in [("a", 1, vec![90.0]), ("b", 2, vec![180.0, 30.0])] {
        let dir = root.join(name);
        let first = strek::demo::scene(w, h, seed);
        save(&first, &dir.join("1.png"));
        for (k, angle) in angles.iter().enumerate() {
            let (image, hom) = rotate_image(&first, *angle);
            save(&image, &dir.join(format!("{}.png", k + 2)));
            write_h(&hom, &dir.join(format!("H_1_{}", k + 2)));
        }
    }
    std::fs::create_dir_all(root.join("not-a-sequence")).unwrap();
}

#[test]
fn data_set_layout() {
    let root = temp_dir("layout");
    tiny_set(&root, 64, 48);
    let set = DataSet::open(&root).unwrap();
    assert_eq!(set.sequences.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(), ["a", "b"]);
    assert_eq!(set.pairs(), 3);
    // a sequence folder is a set of one
    assert_eq!(DataSet::open(&root.join("b")).unwrap().sequences.len(), 1);
    let err = DataSet::open(&root.join("not-a-sequence")).unwrap_err().to_string();
    assert!(err.contains("no sequence found"), "{err}");
    std::fs::remove_dir_all(root).unwrap();
}

fn weights_file(dir: &Path) -> PathBuf {
    let path = dir.join("random.safetensors");
    std::fs::write(&path, strek::Weights::random(&strek::ModelConfig::default_s_trek(), 3).to_bytes()).unwrap();
    path
}

fn json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// On the GPU engine (any adapter; lavapipe in CI) with the GPU matcher, and on the CPU path with the CPU matcher.
#[test]
fn eval_of_engine_features_equals_eval_of_their_npz_files() {
    for device in ["gpu", "cpu"] {
        engine_and_npz_agree(device);
    }
}

fn engine_and_npz_agree(device: &str) {
    let dir = temp_dir(&format!("identity-{device}"));
    let root = dir.join("tiny");
    tiny_set(&root, 96, 72);
    let weights = weights_file(&dir);
    let run = |extra: &[&str], json_out: &Path| {
        let out = strek()
            .args(["--device", device, "eval"])
            .arg(&root)
            .args(["--k", "200", "--rotate", "0,90,45", "--max-side", "80", "--weights"])
            .arg(&weights)
            .arg("--json")
            .arg(json_out)
            .args(extra)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
        stdout
    };
    let features = dir.join("features");
    let images = dir.join("images");
    let direct = run(
        &["--save-features", features.to_str().unwrap(), "--export-images", images.to_str().unwrap()],
        &dir.join("direct.json"),
    );
    assert!(direct.contains("tiny: 3 pairs in 2 sequences") && direct.contains("rotation sweep"), "{direct}");
    assert!(direct.contains("mean "), "the sweep has a mean row: {direct}");
    // the layout that --features reads and --export-images writes
    for name in ["a/1", "a/2", "a/1_rot90", "b/3", "b/1_rot45", "b/1_rot0"] {
        assert!(features.join("tiny").join(format!("{name}.npz")).is_file(), "{name}.npz");
        assert!(images.join("tiny").join(format!("{name}.png")).is_file(), "{name}.png");
    }
    let from_files = run(&["--features", &format!("strek={}", features.display())], &dir.join("files.json"));
    assert_eq!(direct, from_files, "{device}: the tables must be identical");
    let (a, b) = (json(&dir.join("direct.json")), json(&dir.join("files.json")));
    assert_eq!(a["datasets"], b["datasets"], "{device}: every per-pair number must be identical");
    let matcher = a["protocol"]["matcher"].as_str().unwrap();
    assert!(matcher.starts_with(if device == "gpu" { "GPU" } else { "CPU" }), "{matcher}");
    let pairs = a["datasets"][0]["pairs"].as_array().unwrap();
    assert_eq!(pairs.len(), 3 + 2 * 3, "3 pairs and 3 angles for each of 2 sequences");
    let rot0 = pairs.iter().find(|p| p["pair"] == "1-1_rot0").unwrap();
    assert_eq!(rot0["repeatability"], 1.0, "an image against itself");
    assert_eq!(rot0["mma"][0], 1.0);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn eval_reports_missing_feature_files_clearly() {
    let dir = temp_dir("missing");
    let root = dir.join("tiny");
    tiny_set(&root, 64, 48);
    std::fs::create_dir_all(dir.join("empty")).unwrap();
    let out = strek().arg("eval").arg(&root).arg("--features").arg(dir.join("empty")).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("tiny/a/1.npz") && stderr.contains("missing"), "{stderr}");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn match_draws_matches_and_prints_the_homography() {
    let dir = temp_dir("match");
    let first = strek::demo::scene(96, 72, 4);
    let (second, h) = rotate_image(&first, 90.0);
    save(&first, &dir.join("1.png"));
    save(&second, &dir.join("2.png"));
    write_h(&h, &dir.join("H"));
    let weights = weights_file(&dir);
    let png = dir.join("m.png");
    let out = strek()
        .arg("match")
        .arg(dir.join("1.png"))
        .arg(dir.join("2.png"))
        .arg("-o")
        .arg(&png)
        .arg("--weights")
        .arg(&weights)
        .arg("--homography")
        .arg(dir.join("H"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("mutual matches:") && stdout.contains("picture:"), "{stdout}");
    let picture = image::open(&png).unwrap();
    assert_eq!((picture.width(), picture.height()), (96 + strek::demo::GAP + 72, 96));
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn bench_prints_per_stage_times_in_a_ci_sized_run() {
    let dir = temp_dir("bench");
    let weights = weights_file(&dir);
    let json_out = dir.join("bench.json");
    let images = dir.join("images");
    let out = strek()
        .args(["--device", "gpu", "bench", "--sizes", "64x48,72x40", "--batch", "1,2", "--warmup", "1", "--reps", "2"])
        .args(["--k", "100", "--peak-gflops", "50", "--weights"])
        .arg(&weights)
        .arg("--json")
        .arg(&json_out)
        .arg("--save-images")
        .arg(&images)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let doc = json(&json_out);
    let adapter = doc["adapter"]["name"].as_str().unwrap();
    assert!(stdout.contains(adapter), "the table names the adapter: {stdout}");
    if doc["software_adapter"] == true {
        assert!(stdout.contains("SOFTWARE adapter"), "{stdout}");
    }
    let results = doc["results"].as_array().unwrap();
    assert_eq!(results.len(), 4, "2 sizes x 2 batch sizes");
    for r in results {
        assert_eq!(r["wall"]["samples"].as_array().unwrap().len(), 2);
        assert!(r["macs_per_image"]["detector"].as_f64().unwrap() > 0.0);
        let stages: Vec<&str> = r["stages"].as_array().unwrap().iter().map(|s| s[0].as_str().unwrap()).collect();
        assert!(stages.contains(&"upload") && stages.contains(&"readback"), "{stages:?}");
        if doc["timing"].as_str().unwrap().starts_with("GPU stages") {
            for s in ["pyramid", "detector", "nms_topk", "descriptor", "sampling"] {
                assert!(stages.contains(&s), "{s} missing from {stages:?}");
            }
        }
    }
    assert!(stdout.contains("det GFLOP/s") && stdout.contains("64x48"), "{stdout}");
    assert!(images.join("72x40").join("1.png").is_file());
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn noise_is_seeded_has_the_asked_spread_and_spares_alpha() {
    let grey = strek::Image { width: 200, height: 100, channels: 2, samples: strek::image_io::Samples::U8([128u8, 200].repeat(200 * 100)) };
    let a = strek::eval::with_noise(&grey, 0.05, 7);
    assert_eq!(a, strek::eval::with_noise(&grey, 0.05, 7), "the same seed gives the same noise");
    assert_ne!(a, strek::eval::with_noise(&grey, 0.05, 8));
    let strek::image_io::Samples::U8(v) = &a.samples else { panic!("the sample type is kept") };
    assert!(v.iter().skip(1).step_by(2).all(|&alpha| alpha == 200), "alpha is not noise");
    let gray: Vec<f64> = v.iter().step_by(2).map(|&x| x as f64 - 128.0).collect();
    let (mean, var) = (gray.iter().sum::<f64>() / gray.len() as f64, gray.iter().map(|d| d * d).sum::<f64>() / gray.len() as f64);
    assert!(mean.abs() < 0.5 && (var.sqrt() - 0.05 * 255.0).abs() < 0.3, "mean {mean}, std {}", var.sqrt());
    assert_eq!(strek::eval::with_noise(&grey, 0.0, 7), grey);
}

/// `--noise`: the second image of each pair gets noise and a name that says so; zero noise changes no number, strong
/// noise lowers matching.
#[test]
fn eval_noise_option_names_noisy_images_and_lowers_matching() {
    let dir = temp_dir("noise");
    let root = dir.join("tiny");
    tiny_set(&root, 96, 72);
    // the shipped model: a random one matches too little for noise to show
    let weights = Path::new(env!("CARGO_MANIFEST_DIR")).join(strek::DEFAULT_WEIGHTS);
    let run = |noise: Option<&str>, json_out: &Path| {
        let mut cmd = strek();
        cmd.args(["--device", "cpu", "eval"]).arg(&root).args(["--k", "200", "--rotate", "90", "--max-side", "80", "--weights"]);
        cmd.arg(&weights).arg("--json").arg(json_out).arg("--export-images").arg(dir.join(format!("images-{}", noise.unwrap_or("clean"))));
        if let Some(std) = noise {
            cmd.args(["--noise", std]);
        }
        let out = cmd.output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        json(json_out)
    };
    let mma = |report: &serde_json::Value| -> f64 {
        let pairs = report["datasets"][0]["pairs"].as_array().unwrap();
        pairs.iter().map(|p| p["mma"][1].as_f64().unwrap()).sum::<f64>() / pairs.len() as f64
    };
    let clean = run(None, &dir.join("clean.json"));
    let zero = run(Some("0"), &dir.join("zero.json"));
    let strong = run(Some("0.3"), &dir.join("strong.json"));
    assert_eq!(mma(&clean), mma(&zero), "zero noise changes nothing");
    assert!(mma(&strong) < mma(&clean) - 0.1, "noise of std 0.3 must hurt: {} vs {}", mma(&strong), mma(&clean));
    for name in ["a/1.png", "a/2_noise0.3.png", "a/1_rot90_noise0.3.png", "b/3_noise0.3.png"] {
        assert!(dir.join("images-0.3/tiny").join(name).is_file(), "{name}");
    }
    let out = strek().args(["eval"]).arg(&root).arg("--noise=-1").output().unwrap();
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("standard deviation"));
    std::fs::remove_dir_all(dir).unwrap();
}
