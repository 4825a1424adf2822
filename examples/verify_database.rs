//! The measurement behind docs/cpu-notes.md "Verification": every pair of a COLMAP database that `strek colmap`
//! wrote is verified again from its stored keypoints and matches, on one thread, as `strek colmap` verifies it (the
//! same RANSAC, seeds and known camera); prints the median of the passes' times and the inlier matches.
//!
//! `cargo run --release --example verify_database -- DATABASE [fx,fy,cx,cy] [PASSES]`
use rusqlite::Connection;
use std::collections::HashMap;
use std::time::Instant;
use strek::colmap::database::image_ids;
use strek::colmap::{verify_pair, Camera, Options};

fn floats(blob: &[u8]) -> Vec<f32> {
    blob.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect()
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let db = Connection::open(args.first().expect("usage: verify_database DATABASE [fx,fy,cx,cy] [PASSES]")).unwrap();
    let camera = match args.get(1) {
        Some(k) => format!("pinhole:{k}").parse::<Camera>().unwrap(),
        None => Camera::Guess,
    };
    let passes: usize = args.get(2).map_or(5, |p| p.parse().unwrap());
    let mut keypoints: HashMap<i64, Vec<[f32; 6]>> = HashMap::new();
    let mut query = db.prepare("SELECT image_id, cols, data FROM keypoints").unwrap();
    let rows = query.query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?, r.get::<_, Vec<u8>>(2)?))).unwrap();
    for row in rows {
        let (id, cols, data) = row.unwrap();
        assert_eq!(cols, 6, "keypoints with an affine shape (6 columns), as strek writes them");
        keypoints.insert(id, floats(&data).chunks_exact(6).map(|c| std::array::from_fn(|k| c[k])).collect());
    }
    // the pair list in strek's order (pair index = its RANSAC seed offset): by image ids, which is pair id order
    let mut query = db.prepare("SELECT pair_id, data FROM matches WHERE rows > 0 ORDER BY pair_id").unwrap();
    let rows = query.query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, Vec<u8>>(1)?))).unwrap();
    let pairs: Vec<((i64, i64), Vec<(usize, usize)>)> = rows
        .map(|row| {
            let (pair, data) = row.unwrap();
            let m = data.chunks_exact(8).map(|b| (u32::from_le_bytes(b[..4].try_into().unwrap()) as usize, u32::from_le_bytes(b[4..].try_into().unwrap()) as usize));
            (image_ids(pair), m.collect())
        })
        .collect();
    let options = Options { camera, ..Options::default() };
    let mut times = Vec::new();
    let mut inliers = 0;
    for _ in 0..passes {
        let start = Instant::now();
        inliers = pairs
            .iter()
            .enumerate()
            .map(|(index, ((i, j), m))| verify_pair(&keypoints[i], &keypoints[j], m, &options, index).inliers.len())
            .sum::<usize>();
        times.push(start.elapsed().as_secs_f64());
    }
    times.sort_by(f64::total_cmp);
    let median = times[times.len() / 2];
    println!(
        "{} pairs, {inliers} inlier matches; one thread: median {:.3} s a pass ({:.2} ms a pair), passes {:?}",
        pairs.len(),
        median,
        1e3 * median / pairs.len() as f64,
        times.iter().map(|t| format!("{t:.3}")).collect::<Vec<_>>()
    );
}
