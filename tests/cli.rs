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

#[test]
fn demo_writes_its_picture_and_reports_repeatability() {
    let dir = temp_dir("demo");
    let png = dir.join("demo.png");
    let out = strek().args(["demo", "--width", "96", "--height", "72", "-o"]).arg(&png).output().unwrap();
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
    let scene = strek::demo::scene(80, 64, 5);
    let strek::image_io::Samples::U8(data) = scene.samples else { unreachable!() };
    image::GrayImage::from_raw(80, 64, data).unwrap().save(dir.join("scene.png")).unwrap();
    std::fs::write(dir.join("broken.png"), b"not a png").unwrap();
    let weights = dir.join("w.safetensors");
    std::fs::write(&weights, strek::Weights::random(&strek::ModelConfig::default_s_trek(), 2).to_bytes()).unwrap();
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
    assert!(stderr.contains("broken.png") && stderr.contains("1 of 2 images failed"), "{stderr}");
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
