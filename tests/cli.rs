//! The `strek` binary driven as a user would.

use std::process::Command;

fn strek() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_strek"));
    c.env("XDG_RUNTIME_DIR", std::env::temp_dir());
    c
}

fn temp_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("strek-cli-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The demo scene of `w` x `h` (seed `seed`) as an 8-bit gray image.
fn scene_image(w: u32, h: u32, seed: u64) -> image::GrayImage {
    let scene = strek::demo::scene(w, h, seed);
    let strek::image_io::Samples::U8(data) = scene.samples else { unreachable!() };
    image::GrayImage::from_raw(w, h, data).unwrap()
}

/// A random model of the default architecture (seed `seed`) written to `dir/w.safetensors`; its path.
fn random_weights(dir: &std::path::Path, seed: u64) -> std::path::PathBuf {
    let path = dir.join("w.safetensors");
    std::fs::write(&path, strek::Weights::random(&strek::ModelConfig::default_s_trek(), seed).to_bytes()).unwrap();
    path
}

#[test]
fn demo_writes_its_picture_and_reports_repeatability() {
    let dir = temp_dir("demo");
    let png = dir.join("demo.png");
    let out = strek().args(["demo", "--angle", "90", "--width", "96", "--height", "72", "-o"]).arg(&png).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("repeatability@3px"), "{stdout}");
    let picture = image::open(&png).unwrap();
    assert_eq!((picture.width(), picture.height()), (96 + 8 + 72, 96));
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn extract_writes_npz_and_reports_bad_files_with_a_failing_exit_code() {
    let dir = temp_dir("extract");
    scene_image(80, 64, 5).save(dir.join("scene.png")).unwrap();
    std::fs::write(dir.join("broken.png"), b"not a png").unwrap();
    let weights = random_weights(&dir, 2);
    let out_dir = dir.join("out");
    let out = strek()
        .arg("extract")
        .arg(dir.join("scene.png"))
        .arg(dir.join("broken.png"))
        .arg("-o")
        .arg(&out_dir)
        .arg("--weights")
        .arg(&weights)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("broken.png") && stderr.contains("1 written") && stderr.contains("1 failed"), "{stderr}");
    let features = strek::Features::read_npz(&out_dir.join("scene.npz")).unwrap();
    assert_eq!(features.image_size, [80, 64]);
    assert!(!features.is_empty());
    assert!(!out_dir.join("broken.npz").exists());
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn extract_without_weights_says_where_they_should_be() {
    let out = strek().args(["extract", "x.png", "-o", "/tmp/none", "--weights", "/nonexistent.safetensors"]).output().unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("/nonexistent.safetensors") && stderr.contains("cannot read"), "{stderr}");
}

#[test]
fn a_folder_with_broken_files_gives_every_good_output_and_names_every_bad_file() {
    let dir = temp_dir("folder");
    let images = dir.join("images");
    std::fs::create_dir_all(images.join("sub")).unwrap();
    for i in 0..200 {
        let path = if i % 2 == 0 { images.join(format!("{i:03}.png")) } else { images.join("sub").join(format!("{i:03}.png")) };
        if i % 40 == 7 {
            std::fs::write(&path, if i % 80 == 7 { &b""[..] } else { &b"broken"[..] }).unwrap();
        } else {
            scene_image(40 + (i % 3) as u32, 36, i as u64).save(&path).unwrap();
        }
    }
    let weights = random_weights(&dir, 2);
    let out_dir = dir.join("out");
    let run = || {
        strek().arg("extract").arg(&images).arg("--recursive").arg("-o").arg(&out_dir).arg("--weights").arg(&weights).output().unwrap()
    };
    let out = run();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("195 written") && stderr.contains("5 failed"), "{stderr}");
    for i in (7..200).step_by(40) {
        assert!(stderr.contains(&format!("{i:03}.png")), "{i:03}.png named in {stderr}");
    }
    let count = |d: &std::path::Path| std::fs::read_dir(d).unwrap().filter(|e| e.as_ref().unwrap().path().extension().is_some_and(|x| x == "npz")).count();
    assert_eq!(count(&out_dir) + count(&out_dir.join("sub")), 195);
    // a second run skips what exists and retries only the broken files
    let again = run();
    let stderr = String::from_utf8_lossy(&again.stderr);
    assert!(stderr.contains("0 written") && stderr.contains("195 skipped") && stderr.contains("5 failed"), "{stderr}");
    std::fs::remove_dir_all(dir).unwrap();
}

/// Runs `strek ARGS` in a shell whose address space is capped at `kib`, so that the software adapter's memory
/// allocations (its device memory is host memory) fail.
fn strek_with_memory_cap(kib: u64, args: &str) -> std::process::Output {
    let command = format!("ulimit -v {kib}; exec {} {args}", env!("CARGO_BIN_EXE_strek"));
    Command::new("bash")
        .args(["-c", &command])
        .env("XDG_RUNTIME_DIR", std::env::temp_dir())
        .env("MALLOC_ARENA_MAX", "2")
        .output()
        .unwrap()
}

#[test]
fn device_out_of_memory_is_an_error_with_a_message_not_a_crash() {
    let dir = temp_dir("oom");
    let mut rng = strek::rng::Rng::new(4);
    let noise = |w: u32, h: u32, rng: &mut strek::rng::Rng| {
        image::GrayImage::from_fn(w, h, |_, _| image::Luma([rng.below(256) as u8]))
    };
    noise(64, 64, &mut rng).save(dir.join("small.png")).unwrap();
    noise(1800, 1400, &mut rng).save(dir.join("big.png")).unwrap();
    let weights = random_weights(&dir, 2);
    let run = |image: &str| {
        let args = format!(
            "--device gpu --weights {} extract {} -o {}",
            weights.display(),
            dir.join(image).display(),
            dir.join("out").display()
        );
        strek_with_memory_cap(1_100_000, &args)
    };
    // the cap leaves room for a small image: the failure below is the big image's device memory
    let small = run("small.png");
    assert!(small.status.success(), "{}", String::from_utf8_lossy(&small.stderr));
    let big = run("big.png");
    let stderr = String::from_utf8_lossy(&big.stderr);
    assert_eq!(big.status.code(), Some(1), "a clean failure, not a crash or panic: {stderr}");
    assert!(stderr.contains("big.png") && stderr.to_lowercase().contains("memory"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(dir.join("out/small.npz").exists() && !dir.join("out/big.npz").exists());
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn a_headless_machine_without_a_runtime_folder_gets_no_window_system_errors() {
    // Mesa's drivers print "XDG_RUNTIME_DIR is invalid or not set" while wgpu lists adapters, unless strek gives
    // them a runtime folder of its own
    let out = Command::new(env!("CARGO_BIN_EXE_strek")).env_remove("XDG_RUNTIME_DIR").arg("info").output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(!stderr.contains("XDG_RUNTIME_DIR"), "{stderr}");
}

/// The first bytes of a PNG whose header claims `width x height` 8-bit gray pixels (the pixel data is cut short:
/// the limit must refuse it from the header alone).
fn png_header_claiming(width: u32, height: u32) -> Vec<u8> {
    let ihdr: Vec<u8> = [b"IHDR".as_slice(), &width.to_be_bytes(), &height.to_be_bytes(), &[8, 0, 0, 0, 0]].concat();
    let crc = crc32fast::hash(&ihdr);
    [b"\x89PNG\r\n\x1a\n".as_slice(), &13u32.to_be_bytes(), &ihdr, &crc.to_be_bytes(), &[0, 0, 0, 8], b"IDAT", &[0x78, 0x9c, 0x63, 0x60]]
        .concat()
}

#[test]
fn a_decompression_bomb_is_named_and_skipped_and_the_good_images_are_written() {
    let dir = temp_dir("bomb");
    let images = dir.join("images");
    std::fs::create_dir_all(&images).unwrap();
    let gray = scene_image(80, 64, 7);
    gray.save(images.join("a.png")).unwrap();
    gray.save(images.join("c.png")).unwrap();
    std::fs::write(images.join("b_bomb.png"), png_header_claiming(60000, 60000)).unwrap();
    let weights = random_weights(&dir, 2);
    let out_dir = dir.join("out");
    let run = |extra: &[&str]| {
        strek().args(["--device", "cpu", "extract"]).arg(&images).arg("-o").arg(&out_dir).arg("--weights").arg(&weights).args(extra).output().unwrap()
    };
    let out = run(&[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("b_bomb.png") && stderr.contains("60000 x 60000") && stderr.contains("decoding limit"), "{stderr}");
    assert!(out_dir.join("a.npz").exists() && out_dir.join("c.npz").exists() && !out_dir.join("b_bomb.npz").exists());
    // a lower limit refuses the good images too, by the same rule
    let out = run(&["--overwrite", "--max-megapixels", "0.001"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("a.png") && stderr.contains("80 x 64"), "{stderr}");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn shards_split_a_folder_between_processes_without_overlap_or_gaps() {
    let dir = temp_dir("shard");
    let images = dir.join("images");
    std::fs::create_dir_all(&images).unwrap();
    for i in 0..7 {
        scene_image(48, 40, i).save(images.join(format!("img{i}.png"))).unwrap();
    }
    let weights = random_weights(&dir, 2);
    let mut seen = Vec::new();
    for shard in 0..3 {
        let out_dir = dir.join(format!("out{shard}"));
        let out = strek()
            .args(["--device", "cpu", "extract"])
            .arg(&images)
            .arg("-o")
            .arg(&out_dir)
            .arg("--weights")
            .arg(&weights)
            .args(["--shard", &format!("{shard}/3")])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let mut names: Vec<String> =
            std::fs::read_dir(&out_dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        names.sort();
        let expected: Vec<String> = (0..7).skip(shard).step_by(3).map(|i| format!("img{i}.npz")).collect();
        assert_eq!(names, expected);
        seen.extend(names);
    }
    assert_eq!(seen.len(), 7);
    for bad in ["3/3", "1", "a/2", "1/0"] {
        let out = strek().args(["extract", "x.png", "-o", "/tmp/none", "--shard", bad]).output().unwrap();
        assert!(!out.status.success());
        assert!(String::from_utf8_lossy(&out.stderr).contains("not a shard"), "{bad}");
    }
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn scales_upsample_the_pyramid_and_a_bad_list_is_a_clear_error() {
    let dir = temp_dir("scales");
    scene_image(90, 70, 6).save(dir.join("scene.png")).unwrap();
    let weights = random_weights(&dir, 3);
    let extract = |scales: &str, out: &str| {
        strek()
            .args(["--device", "cpu", "extract", "--scales", scales, "--weights"])
            .arg(&weights)
            .arg(dir.join("scene.png"))
            .arg("-o")
            .arg(dir.join(out))
            .output()
            .unwrap()
    };
    let out = extract("1,2", "up");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let features = strek::Features::read_npz(&dir.join("up/scene.npz")).unwrap();
    assert!(features.scales.contains(&0.5), "keypoints of the doubled level: {:?}", features.scales);
    assert!(features.keypoints.iter().all(|p| p[0] >= 0.0 && p[0] <= 89.0 && p[1] >= 0.0 && p[1] <= 69.0));
    for (bad, says) in [("1,3", "must lie in"), ("2,1", "start with 1.0"), ("1,0.5,0.5", "repeat"), ("1,x", "invalid")] {
        let out = extract(bad, "bad");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && stderr.contains(says), "--scales {bad}: {stderr}");
        assert!(!dir.join("bad").join("scene.npz").exists());
    }
    std::fs::remove_dir_all(dir).unwrap();
}
