//! `strek colmap` driven as a user would, on frames cut from a generated scene (a camera sliding over it), with a
//! random model: the database must hold what COLMAP reads, in COLMAP's layout and conventions. The reconstruction
//! itself is checked with pycolmap's mapper on real frames by tools/colmap (see tools/test.sh).

use rusqlite::Connection;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use strek::colmap::database::{image_ids, pair_id};

fn strek() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_strek"));
    c.env("XDG_RUNTIME_DIR", std::env::temp_dir());
    c
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("strek-colmap-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// `count` frames of `w x h` cut from one generated scene, the window moving by `step` pixels per frame, as
/// DIR/frame_<i>.png. Returns the path of the weights to extract them with.
fn frames(dir: &Path, count: usize, (w, h): (u32, u32), step: (u32, u32)) -> PathBuf {
    let (sw, sh) = (w + step.0 * count as u32, h + step.1 * count as u32);
    let scene = strek::demo::scene(sw, sh, 3);
    let strek::image_io::Samples::U8(data) = scene.samples else { unreachable!() };
    let big = image::GrayImage::from_raw(sw, sh, data).unwrap();
    for i in 0..count as u32 {
        let crop = image::imageops::crop_imm(&big, i * step.0, i * step.1, w, h).to_image();
        crop.save(dir.join(format!("frame_{i}.png"))).unwrap();
    }
    // the shipped model: the motion checks below need keypoints that a trained detector localises (sub-pixel on
    // their level), which a random model's arbitrary score maps do not give
    Path::new(env!("CARGO_MANIFEST_DIR")).join(strek::DEFAULT_WEIGHTS)
}

fn run(args: &[&str], dir: &Path, db: &Path, weights: &Path) -> Output {
    strek().arg("colmap").arg(dir).arg("-o").arg(db).arg("--weights").arg(weights).args(args).output().unwrap()
}

fn text(out: &Output) -> String {
    format!("{}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

fn blob_u32(data: &[u8]) -> Vec<u32> {
    data.chunks_exact(4).map(|b| u32::from_le_bytes(b.try_into().unwrap())).collect()
}

fn blob_f32(data: &[u8]) -> Vec<f32> {
    data.chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect()
}

/// (pair id, matches) of a table of matches.
fn pairs(db: &Connection, table: &str) -> Vec<(i64, Vec<[u32; 2]>)> {
    let mut statement = db.prepare(&format!("SELECT pair_id, rows, cols, data FROM {table} ORDER BY pair_id")).unwrap();
    statement
        .query_map([], |r| {
            let (id, rows, cols, data): (i64, i64, i64, Option<Vec<u8>>) = (r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?);
            let values = blob_u32(&data.unwrap_or_default());
            assert_eq!(cols, 2);
            assert_eq!(values.len() as i64, rows * 2, "{table} pair {id}: blob size");
            Ok((id, values.chunks_exact(2).map(|c| [c[0], c[1]]).collect()))
        })
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

#[test]
fn the_database_holds_cameras_images_keypoints_descriptors_and_verified_matches() {
    let dir = temp_dir("db");
    let images = dir.join("frames");
    std::fs::create_dir_all(&images).unwrap();
    let weights = frames(&images, 4, (160, 128), (6, 4));
    std::fs::write(images.join("frame_9_broken.png"), b"not a png").unwrap();
    let db_path = dir.join("out").join("database.db");
    let out = run(&["--device", "cpu", "--pairs", "sequential:2", "--camera", "pinhole:200,210,79.5,63.5"], &images, &db_path, &weights);
    let log = text(&out);
    // the broken file is named and skipped (and makes the exit code a failure); the rest is written
    assert!(!out.status.success(), "{log}");
    assert!(log.contains("frame_9_broken.png") && log.contains("4 written, 1 skipped"), "{log}");
    assert!(!dir.join("out").join("database.db.tmp").exists());

    let db = Connection::open(&db_path).unwrap();
    let (model, width, height, params, prior): (i32, u32, u32, Vec<u8>, i32) = db
        .query_row("SELECT model, width, height, params, prior_focal_length FROM cameras", [], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
        })
        .unwrap();
    let params: Vec<f64> = params.chunks_exact(8).map(|b| f64::from_le_bytes(b.try_into().unwrap())).collect();
    assert_eq!((model, width, height, prior), (1, 160, 128, 1), "one PINHOLE camera, focal length known");
    assert_eq!(params, vec![200.0, 210.0, 80.0, 64.0], "principal point shifted to COLMAP's pixel centres");

    let names: Vec<(i64, String, i64)> =
        db.prepare("SELECT image_id, name, camera_id FROM images ORDER BY image_id").unwrap().query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?))).unwrap().map(Result::unwrap).collect();
    assert_eq!(names.iter().map(|n| n.1.as_str()).collect::<Vec<_>>(), ["frame_0.png", "frame_1.png", "frame_2.png", "frame_3.png"]);

    // keypoints: exactly the CPU extractor's, shifted by half a pixel, with the affine frame of scale and orientation
    let model_weights = strek::Weights::load(&weights).unwrap();
    let mut extractor = strek::CpuExtractor::new(&model_weights, strek::Config::default()).unwrap();
    let mut keypoints = Vec::new();
    for (id, name, _) in &names {
        let features = strek::Extract::extract(&mut extractor, &strek::Image::open(&images.join(name)).unwrap()).unwrap();
        let (rows, cols, data): (i64, i64, Vec<u8>) =
            db.query_row("SELECT rows, cols, data FROM keypoints WHERE image_id = ?1", [id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?))).unwrap();
        assert_eq!((rows as usize, cols), (features.len(), 6));
        assert!(rows > 20, "{name}: {rows} keypoints");
        let values = blob_f32(&data);
        for (k, row) in values.chunks_exact(6).enumerate() {
            assert_eq!(row[0], features.keypoints[k][0] + 0.5);
            assert_eq!(row[1], features.keypoints[k][1] + 0.5);
            let scale = (row[2] * row[2] + row[4] * row[4]).sqrt();
            assert!((scale - features.scales[k]).abs() < 1e-4);
            let colmap_angle = row[4].atan2(row[2]);
            let d = (colmap_angle + features.orientations[k]).rem_euclid(std::f32::consts::TAU);
            assert!(d < 1e-4 || d > std::f32::consts::TAU - 1e-4, "orientation enters with its sign flipped");
            assert_eq!((row[3], row[5]), (-row[4], row[2]), "a rotation times a scale");
        }
        let (rows, cols, data): (i64, i64, Vec<u8>) =
            db.query_row("SELECT rows, cols, data FROM descriptors WHERE image_id = ?1", [id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?))).unwrap();
        assert_eq!((rows as usize, cols as usize, data.len()), (features.len(), features.dim, features.len() * features.dim));
        assert_eq!(data, strek::colmap::descriptor_bytes(&features));
        keypoints.push(values);
    }

    // matches: sequential:2 over 4 images gives 5 pairs, each id pair ordered, indices inside the keypoint lists
    let matches = pairs(&db, "matches");
    let ids: Vec<(i64, i64)> = matches.iter().map(|(p, _)| image_ids(*p)).collect();
    assert_eq!(ids, vec![(1, 2), (1, 3), (2, 3), (2, 4), (3, 4)]);
    assert_eq!(pair_id(1, 2), 2_147_483_649);
    let geometries = pairs(&db, "two_view_geometries");
    assert_eq!(geometries.len(), matches.len());
    let mut verified = 0;
    for ((pid, all), (gid, inliers)) in matches.iter().zip(&geometries) {
        assert_eq!(pid, gid);
        let (a, b) = image_ids(*pid);
        let n = |id: i64| keypoints[id as usize - 1].len() as u32 / 6;
        assert!(all.iter().all(|m| m[0] < n(a) && m[1] < n(b)));
        assert!(inliers.iter().all(|m| all.contains(m)), "inliers are among the matches");
        let config: i32 = db.query_row("SELECT config FROM two_view_geometries WHERE pair_id = ?1", [pid], |r| r.get(0)).unwrap();
        if inliers.is_empty() {
            assert_eq!(config, 1, "a failed pair is stored as degenerate");
            continue;
        }
        assert!(config == 2 || config == 3, "config {config}");
        assert!(inliers.len() >= 15);
        verified += 1;
        // the window slid by (6, 4) px per frame, so the scene content moved by minus that
        let frames_apart = (b - a) as f32;
        let point = |id: i64, k: u32| {
            let row = &keypoints[id as usize - 1][k as usize * 6..k as usize * 6 + 2];
            (row[0], row[1])
        };
        let consistent = inliers
            .iter()
            .filter(|m| {
                let ((x1, y1), (x2, y2)) = (point(a, m[0]), point(b, m[1]));
                (x2 - x1 + 6.0 * frames_apart).abs() <= 1.5 && (y2 - y1 + 4.0 * frames_apart).abs() <= 1.5
            })
            .count();
        assert!(consistent as f64 >= 0.9 * inliers.len() as f64, "pair {a}-{b}: {consistent} of {} inliers follow the motion", inliers.len());
    }
    assert!(verified >= 3, "{verified} verified pairs");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn gpu_matching_gives_the_cpu_matches() {
    let dir = temp_dir("gpu");
    let images = dir.join("frames");
    std::fs::create_dir_all(&images).unwrap();
    let weights = frames(&images, 3, (128, 96), (4, 2));
    let (cpu, gpu) = (dir.join("cpu.db"), dir.join("gpu.db"));
    // extraction on the CPU both times, so that only the matcher differs
    let out = run(&["--device", "cpu", "--matcher", "cpu"], &images, &cpu, &weights);
    assert!(out.status.success(), "{}", text(&out));
    let out = run(&["--device", "cpu", "--matcher", "gpu"], &images, &gpu, &weights);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("matching: GPU"), "{}", text(&out));
    let (cpu, gpu) = (Connection::open(&cpu).unwrap(), Connection::open(&gpu).unwrap());
    let (a, b) = (pairs(&cpu, "matches"), pairs(&gpu, "matches"));
    assert_eq!(a.len(), 3);
    for ((pa, ma), (pb, mb)) in a.iter().zip(&b) {
        assert_eq!(pa, pb);
        // near-ties may flip between the two summation orders; anything more is a bug
        let common = ma.iter().filter(|m| mb.contains(m)).count();
        assert!(common as f64 >= 0.98 * ma.len().max(mb.len()) as f64, "{common} of {} / {}", ma.len(), mb.len());
    }
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn an_existing_database_is_kept_unless_overwrite() {
    let dir = temp_dir("overwrite");
    let images = dir.join("frames");
    std::fs::create_dir_all(&images).unwrap();
    let weights = frames(&images, 2, (96, 80), (4, 4));
    let db = dir.join("database.db");
    std::fs::write(&db, b"precious").unwrap();
    let out = run(&["--device", "cpu"], &images, &db, &weights);
    assert!(!out.status.success() && text(&out).contains("--overwrite"), "{}", text(&out));
    assert_eq!(std::fs::read(&db).unwrap(), b"precious");
    let out = run(&["--device", "cpu", "--overwrite", "--camera", "auto"], &images, &db, &weights);
    assert!(out.status.success(), "{}", text(&out));
    let connection = Connection::open(&db).unwrap();
    let (model, params): (i32, Vec<u8>) = connection.query_row("SELECT model, params FROM cameras", [], |r| Ok((r.get(0)?, r.get(1)?))).unwrap();
    let params: Vec<f64> = params.chunks_exact(8).map(|b| f64::from_le_bytes(b.try_into().unwrap())).collect();
    assert_eq!((model, params), (2, vec![1.2 * 96.0, 48.0, 40.0, 0.0]), "COLMAP's SIMPLE_RADIAL guess");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn bad_arguments_say_what_is_accepted() {
    let out = strek().args(["colmap", "/nonexistent-folder", "--pairs", "nearby"]).output().unwrap();
    assert!(!out.status.success());
    assert!(text(&out).contains("exhaustive or sequential:N"), "{}", text(&out));
    let out = strek().args(["colmap", "/nonexistent-folder", "--camera", "pinhole:1,2"]).output().unwrap();
    assert!(text(&out).contains("pinhole:fx,fy,cx,cy"), "{}", text(&out));
    let out = strek().args(["colmap", "/nonexistent-folder"]).output().unwrap();
    assert!(!out.status.success() && text(&out).contains("not a folder"), "{}", text(&out));
}
