//! `strek match`: two images, their keypoints, mutual matches, RANSAC inliers and the estimated homography, drawn
//! side by side.

use crate::Common;
use std::path::PathBuf;
use std::process::ExitCode;
use strek::eval::dataset::fit;
use strek::geometry::homography::{self, Ransac};
use strek::eval::metrics::corner_error;
use strek::geometry::Homography;
use strek::{Device, Image};

/// Match two images: keypoints, mutual nearest-neighbour matches, RANSAC inliers and the homography, as a PNG.
#[derive(clap::Args)]
pub struct Args {
    image1: PathBuf,
    image2: PathBuf,
    /// Output picture: keypoints (yellow), inlier matches (green), other matches (red), image 1's border mapped by
    /// the estimated homography (blue).
    #[arg(short, long, default_value = "matches.png")]
    out: PathBuf,
    /// Keypoints per image [default: from the weights' config].
    #[arg(long)]
    max_keypoints: Option<usize>,
    /// Shrink images so that their longer side is at most this many pixels (0: full size).
    #[arg(long, default_value_t = 0)]
    max_side: u32,
    /// Ratio test (e.g. 0.9); 1 disables it.
    #[arg(long, default_value_t = 1.0)]
    ratio: f32,
    /// RANSAC inlier threshold in pixels.
    #[arg(long, default_value_t = 3.0)]
    threshold: f64,
    /// Ground-truth homography file (3x3 text, image 1 to image 2 in the files' pixels): reports the corner error.
    #[arg(long)]
    homography: Option<PathBuf>,
    /// Where matching runs: auto (with the extraction's device), gpu or cpu.
    #[arg(long, default_value = "auto")]
    matcher: Device,
}

pub fn run(common: &Common, args: &Args) -> strek::Result<ExitCode> {
    let (mut extractor, matcher) = common.extractor_and_matcher(args.matcher, args.max_keypoints)?;
    let max_side = (args.max_side > 0).then_some(args.max_side);
    let original_size = |i: &Image| [i.width, i.height];
    let image1 = Image::open_with(&args.image1, &common.decode_limits())?;
    let size1 = original_size(&image1);
    let (first, map1) = fit(&image1, max_side);
    let (second, map2) = fit(&Image::open_with(&args.image2, &common.decode_limits())?, max_side);
    let features = extractor.extract_batch(&[first.clone(), second.clone()])?;
    let (a, b) = (&features[0], &features[1]);
    let matches = matcher.mutual_nearest(a, b, args.ratio)?;
    let point = |f: &strek::Features, i: usize| [f.keypoints[i][0] as f64, f.keypoints[i][1] as f64];
    let from: Vec<[f64; 2]> = matches.iter().map(|&(i, _)| point(a, i)).collect();
    let to: Vec<[f64; 2]> = matches.iter().map(|&(_, j)| point(b, j)).collect();
    let estimate = homography::estimate(&from, &to, &Ransac { threshold: args.threshold, ..Ransac::homography() });
    let inliers = estimate.as_ref().map_or(vec![false; matches.len()], |e| e.inliers.clone());
    let mut picture = strek::demo::draw(&first, &second, a, b, &matches, &inliers);
    println!("keypoints: {} and {}", a.len(), b.len());
    println!("mutual matches: {} ({})", matches.len(), matcher.describe());
    match &estimate {
        Some(e) => {
            println!("RANSAC inliers ({} px): {} of {} after {} samples", args.threshold, e.inlier_count(), matches.len(), e.iterations);
            // report the homography in the files' pixels, whatever --max-side did
            let h = map2.inverse().expect("scaling").after(&e.model).after(&map1);
            let m = h.0.map(|row| row.map(|v| v / h.0[2][2]));
            println!("homography (image 1 to image 2):");
            for row in m {
                println!("  {:>14.6e} {:>14.6e} {:>14.6e}", row[0], row[1], row[2]);
            }
            draw_border(&mut picture, &e.model, [first.width, first.height], first.width + strek::demo::GAP);
            if let Some(path) = &args.homography {
                let text = std::fs::read_to_string(path).map_err(|e| strek::Error::io(path, e))?;
                let truth = Homography::parse(&text)
                    .ok_or_else(|| strek::Error::Invalid(format!("{}: expected 3 rows of 3 numbers", path.display())))?;
                println!("mean corner error against {}: {:.2} px", path.display(), corner_error(&Homography(m), &truth, size1));
            }
        }
        None => println!("no homography: fewer than 4 matches or no non-degenerate sample"),
    }
    picture.save(&args.out).map_err(|e| strek::Error::Invalid(format!("writing {}: {e}", args.out.display())))?;
    println!("picture: {}", args.out.display());
    Ok(ExitCode::SUCCESS)
}

/// Image 1's border mapped into image 2 (drawn at horizontal offset `dx`).
fn draw_border(picture: &mut image::RgbImage, h: &Homography, [w, hh]: [u32; 2], dx: u32) {
    let (w, hh) = (w as f64 - 0.5, hh as f64 - 0.5);
    let corners = [(-0.5, -0.5), (w, -0.5), (w, hh), (-0.5, hh)];
    let mapped: Vec<Option<(f64, f64)>> = corners.iter().map(|&(x, y)| h.apply(x, y)).collect();
    for k in 0..4 {
        // a wild estimate can map corners far away: such a segment is not drawn
        let near = |p: &(f64, f64)| p.0.abs() < 1e5 && p.1.abs() < 1e5;
        if let (Some(p), Some(q)) = (mapped[k].filter(near), mapped[(k + 1) % 4].filter(near)) {
            let (p, q) = ((p.0 as f32 + dx as f32, p.1 as f32), (q.0 as f32 + dx as f32, q.1 as f32));
            strek::demo::line(picture, p, q, [40, 120, 255]);
        }
    }
}
