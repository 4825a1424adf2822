//! `strek track` driven as a user would, on frames cut from a generated scene (a camera sliding over it), with a
//! random model.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn strek() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_strek"));
    c.env("XDG_RUNTIME_DIR", std::env::temp_dir());
    c
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("strek-track-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn text(out: &Output) -> String {
    format!("{}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// `count` frames of `w x h` cut from one generated scene, the window moving by `step` px per frame, as
/// DIR/<i>.png (zero-padded); returns a random model's weights file.
fn frames(dir: &Path, count: u32, (w, h): (u32, u32), step: (u32, u32)) -> PathBuf {
    let (sw, sh) = (w + step.0 * count, h + step.1 * count);
    let scene = strek::demo::scene(sw, sh, 8);
    let strek::image_io::Samples::U8(data) = scene.samples else { unreachable!() };
    let big = image::GrayImage::from_raw(sw, sh, data).unwrap();
    for i in 0..count {
        image::imageops::crop_imm(&big, i * step.0, i * step.1, w, h).to_image().save(dir.join(format!("{i:04}.png"))).unwrap();
    }
    let weights = dir.join("weights.safetensors");
    std::fs::write(&weights, strek::Weights::random(&strek::ModelConfig::default_s_trek(), 2).to_bytes()).unwrap();
    weights
}

#[test]
fn tracks_follow_the_moving_scene_and_bad_frames_are_skipped() {
    let dir = temp_dir("slide");
    let video = dir.join("frames");
    std::fs::create_dir_all(&video).unwrap();
    let weights = frames(&video, 5, (160, 120), (5, 3));
    std::fs::write(video.join("0002b.png"), b"").unwrap();
    let csv = dir.join("tracks.csv");
    let out = strek().arg("track").arg(&video).arg("-o").arg(&csv).arg("--weights").arg(&weights).args(["--device", "cpu"]).output().unwrap();
    let log = text(&out);
    assert!(!out.status.success(), "a skipped frame makes the exit code a failure:\n{log}");
    assert!(log.contains("0002b.png") && log.contains("frames: 5 tracked, 1 skipped"), "{log}");
    assert!(log.contains("frames/s") && log.contains("device: CPU"), "{log}");

    let content = std::fs::read_to_string(&csv).unwrap();
    let mut lines = content.lines();
    assert_eq!(lines.next(), Some("frame,name,track,x,y,orientation,scale,score"));
    // track id -> (frame, x, y) observations
    let mut tracks: HashMap<u64, Vec<(usize, f32, f32)>> = HashMap::new();
    let mut rows = 0;
    for line in lines {
        let f: Vec<&str> = line.split(',').collect();
        assert_eq!(f.len(), 8, "{line}");
        let (frame, track, x, y) = (f[0].parse().unwrap(), f[2].parse().unwrap(), f[3].parse().unwrap(), f[4].parse().unwrap());
        tracks.entry(track).or_default().push((frame, x, y));
        rows += 1;
    }
    assert!(rows > 100, "{rows} keypoints written");
    let long: Vec<&Vec<(usize, f32, f32)>> = tracks.values().filter(|t| t.len() >= 3).collect();
    assert!(long.len() >= 20, "{} tracks over 3+ frames", long.len());
    // frame indices are input positions (the broken file took index 3), so steps of the slide are counted by name
    let slide = |frame: usize| if frame > 3 { frame - 1 } else { frame } as f32;
    let mut steps = 0;
    let mut consistent = 0;
    for t in tracks.values() {
        for w in t.windows(2) {
            let ((f1, x1, y1), (f2, x2, y2)) = (w[0], w[1]);
            let k = slide(f2) - slide(f1);
            assert!(k >= 1.0, "a track runs forward through consecutive frames");
            steps += 1;
            consistent += ((x2 - x1 + 5.0 * k).abs() <= 1.5 && (y2 - y1 + 3.0 * k).abs() <= 1.5) as usize;
        }
    }
    // the epipolar check cannot reject a wrong match displaced along its epipolar line, here the motion's direction
    assert!(consistent as f64 >= 0.8 * steps as f64, "{consistent} of {steps} track steps follow the motion");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn a_video_file_is_refused_with_the_way_to_split_it() {
    let out = strek().args(["track", "clip.mp4"]).output().unwrap();
    assert!(!out.status.success());
    assert!(text(&out).contains("ffmpeg"), "{}", text(&out));
}
