//! The built-in demo: a procedurally generated scene, its rotated copy, features of both, mutual-nearest-neighbour
//! matches, repeatability, and a picture of it all with the numbers written in it (a 5x7 bitmap font of our own).
//! Needs no file from outside the repository.

use crate::features::Features;
use crate::geometry::{rotate_image, Homography};
use crate::image_io::{Image, Samples};
use crate::eval::metrics::repeatability;
use crate::ops::matching::mutual_nearest_reference;
use crate::rng::Rng;

/// A gray scene of overlapping shapes with texture: corners, blobs and edges at every orientation.
pub fn scene(width: u32, height: u32, seed: u64) -> Image {
    let mut rng = Rng::new(seed);
    let (w, h) = (width as f32, height as f32);
    let mut canvas: Vec<f32> = (0..width * height)
        .map(|i| 90.0 + 60.0 * ((i % width) as f32 / w) + 30.0 * ((i / width) as f32 / h))
        .collect();
    let shapes = 12 + (width * height / 4000) as usize;
    for _ in 0..shapes {
        let value = rng.range(0.0, 255.0);
        let (cx, cy) = (rng.range(0.0, w), rng.range(0.0, h));
        let size = rng.range(6.0, w.min(h) / 5.0);
        let kind = rng.below(3);
        let angle = rng.range(0.0, std::f32::consts::TAU);
        let aspect = rng.range(0.4, 1.0);
        let sides = 3 + rng.below(3);
        let inside = |x: f32, y: f32| -> bool {
            let (dx, dy) = (x - cx, y - cy);
            let (u, v) = (dx * angle.cos() + dy * angle.sin(), -dx * angle.sin() + dy * angle.cos());
            match kind {
                0 => u.abs() < size && v.abs() < size * aspect,
                1 => (u / size).powi(2) + (v / (size * aspect)).powi(2) < 1.0,
                _ => {
                    // a regular polygon
                    let a = v.atan2(u).rem_euclid(std::f32::consts::TAU / sides as f32) - std::f32::consts::PI / sides as f32;
                    (u * u + v * v).sqrt() * a.cos() < size * (std::f32::consts::PI / sides as f32).cos()
                }
            }
        };
        let r = (size * 1.5) as i32 + 2;
        for y in (cy as i32 - r).max(0)..(cy as i32 + r).min(height as i32) {
            for x in (cx as i32 - r).max(0)..(cx as i32 + r).min(width as i32) {
                // 2x2 supersampling for anti-aliased edges
                let cover = [(0.25, 0.25), (0.75, 0.25), (0.25, 0.75), (0.75, 0.75)]
                    .iter()
                    .filter(|(ox, oy)| inside(x as f32 + ox - 0.5, y as f32 + oy - 0.5))
                    .count() as f32
                    / 4.0;
                let p = &mut canvas[(y as u32 * width + x as u32) as usize];
                *p = *p * (1.0 - cover) + value * cover;
            }
        }
    }
    let data = canvas.iter().map(|v| (v + rng.normal() * 3.0).round().clamp(0.0, 255.0) as u8).collect();
    Image::gray8(width, height, data)
}

pub struct DemoReport {
    pub keypoints: [usize; 2],
    pub repeatability: f64,
    pub matches: usize,
    pub correct_matches: usize,
    pub picture: image::RgbImage,
}

/// Runs the demo with any extraction function (GPU or CPU).
pub fn run(
    mut extract: impl FnMut(&[Image]) -> crate::Result<Vec<Features>>,
    width: u32,
    height: u32,
    angle_degrees: f64,
) -> crate::Result<DemoReport> {
    let first = scene(width, height, 1);
    let (second, h) = rotate_image(&first, angle_degrees);
    let features = extract(&[first.clone(), second.clone()])?;
    let (a, b) = (&features[0], &features[1]);
    let matches = mutual_nearest_reference(a, b, 1.0);
    let correct: Vec<bool> = matches.iter().map(|&(i, j)| reprojection_error(a, b, &h, i, j) <= 3.0).collect();
    let mut picture = draw(&first, &second, a, b, &matches, &correct);
    let rep = repeatability(a, b, &h, 3.0).unwrap_or(0.0);
    let right = correct.iter().filter(|c| **c).count();
    let share = 100.0 * right as f64 / matches.len().max(1) as f64;
    caption(
        &mut picture,
        &[
            format!("STREK DEMO: THE SCENE (LEFT) TURNED BY {angle_degrees} DEGREES (RIGHT)"),
            format!("KEYPOINTS {} AND {}, REPEATABILITY (3 PX) {rep:.2}", a.len(), b.len()),
            format!("MATCHES {}, CORRECT {right} ({share:.0}%)", matches.len()),
            format!("LINES: THE {} STRONGEST, GREEN CORRECT, RED WRONG", SHOWN_MATCHES.min(matches.len())),
            format!("CIRCLES: SCALE, TICKS: ORIENTATION (STRONGEST {SHOWN_KEYPOINTS})"),
        ],
    );
    Ok(DemoReport { keypoints: [a.len(), b.len()], repeatability: rep, matches: matches.len(), correct_matches: right, picture })
}

fn reprojection_error(a: &Features, b: &Features, h: &Homography, i: usize, j: usize) -> f64 {
    let p = a.keypoints[i];
    let q = b.keypoints[j];
    match h.apply(p[0] as f64, p[1] as f64) {
        Some((x, y)) => ((x - q[0] as f64).powi(2) + (y - q[1] as f64).powi(2)).sqrt(),
        None => f64::INFINITY,
    }
}

/// Pixels between the two images of `draw`.
pub const GAP: u32 = 8;
/// Keypoints of each image drawn with their scale and orientation (the strongest); the others are dots.
const SHOWN_KEYPOINTS: usize = 120;
/// Matches drawn as lines (those of the strongest keypoints of the first image).
pub const SHOWN_MATCHES: usize = 60;
const KEYPOINT: [u8; 3] = [255, 200, 0];
const RIGHT: [u8; 3] = [0, 230, 0];
const WRONG: [u8; 3] = [240, 30, 30];

/// Both images side by side; the strongest keypoints as circles of their scale with a tick along their
/// orientation, the others as dots; the matches of the strongest keypoints as lines (green when `correct`, red
/// otherwise). Features are sorted by score, so index order is strength order.
pub fn draw(
    first: &Image,
    second: &Image,
    a: &Features,
    b: &Features,
    matches: &[(usize, usize)],
    correct: &[bool],
) -> image::RgbImage {
    let width = first.width + GAP + second.width;
    let height = first.height.max(second.height);
    let mut canvas = image::RgbImage::new(width, height);
    for (img, dx) in [(first, 0), (second, first.width + GAP)] {
        for y in 0..img.height {
            for x in 0..img.width {
                let v = gray_at(img, x, y);
                canvas.put_pixel(x + dx, y, image::Rgb([v, v, v]));
            }
        }
    }
    let offset_b = (first.width + GAP) as f32;
    for (f, dx) in [(a, 0.0), (b, offset_b)] {
        for i in (0..f.len()).rev() {
            let [x, y] = f.keypoints[i];
            if i >= SHOWN_KEYPOINTS {
                plot(&mut canvas, x + dx, y, KEYPOINT);
                continue;
            }
            let r = 3.0 * f.scales[i];
            circle(&mut canvas, x + dx, y, r, KEYPOINT);
            let t = f.orientations[i];
            // orientation as displayed: counter-clockwise from +x with y down
            line(&mut canvas, (x + dx, y), (x + dx + r * t.cos(), y - r * t.sin()), KEYPOINT);
        }
    }
    let mut shown: Vec<(&(usize, usize), &bool)> = matches.iter().zip(correct).collect();
    shown.sort_by_key(|((i, _), _)| *i);
    for (&(i, j), &ok) in shown.into_iter().take(SHOWN_MATCHES) {
        let (p, q) = (a.keypoints[i], b.keypoints[j]);
        line(&mut canvas, (p[0], p[1]), (q[0] + offset_b, q[1]), if ok { RIGHT } else { WRONG });
    }
    canvas
}

/// Writes lines of text in the top-left corner of the picture on a darkened band (capitals, digits and
/// `.:,%/()-=+`; other characters are blanks), twice the font size on pictures at least 640 pixels wide.
pub fn caption(canvas: &mut image::RgbImage, lines: &[String]) {
    let scale = if canvas.width() >= 640 { 2 } else { 1 };
    let (cell_w, cell_h) = (6 * scale, 9 * scale);
    let longest = lines.iter().map(|l| l.chars().count()).max().unwrap_or(0) as u32;
    let (band_w, band_h) = ((longest * cell_w + 2 * scale).min(canvas.width()), (lines.len() as u32 * cell_h + scale).min(canvas.height()));
    for y in 0..band_h {
        for x in 0..band_w {
            let p = canvas.get_pixel_mut(x, y);
            p.0 = p.0.map(|v| v / 3);
        }
    }
    for (row, text) in lines.iter().enumerate() {
        for (col, ch) in text.chars().enumerate() {
            let Some(glyph) = glyph(ch.to_ascii_uppercase()) else { continue };
            for (gy, bits) in glyph.split(' ').enumerate() {
                for (gx, bit) in bits.bytes().enumerate() {
                    if bit != b'#' {
                        continue;
                    }
                    for (sx, sy) in (0..scale).flat_map(|sx| (0..scale).map(move |sy| (sx, sy))) {
                        let x = scale + col as u32 * cell_w + gx as u32 * scale + sx;
                        let y = scale + row as u32 * cell_h + gy as u32 * scale + sy;
                        if x < canvas.width() && y < canvas.height() {
                            canvas.put_pixel(x, y, image::Rgb([255, 255, 255]));
                        }
                    }
                }
            }
        }
    }
}

/// A 5x7 glyph as seven rows of `#` (ink) and `.`.
fn glyph(ch: char) -> Option<&'static str> {
    FONT.iter().find(|(c, _)| *c == ch).map(|(_, rows)| *rows)
}

const FONT: &[(char, &str)] = &[
    ('0', ".###. #...# #..## #.#.# ##..# #...# .###."),
    ('1', "..#.. .##.. ..#.. ..#.. ..#.. ..#.. .###."),
    ('2', ".###. #...# ....# ...#. ..#.. .#... #####"),
    ('3', "####. ....# ....# .###. ....# ....# ####."),
    ('4', "...#. ..##. .#.#. #..#. ##### ...#. ...#."),
    ('5', "##### #.... ####. ....# ....# #...# .###."),
    ('6', "..##. .#... #.... ####. #...# #...# .###."),
    ('7', "##### ....# ...#. ..#.. .#... .#... .#..."),
    ('8', ".###. #...# #...# .###. #...# #...# .###."),
    ('9', ".###. #...# #...# .#### ....# ...#. .##.."),
    ('A', ".###. #...# #...# ##### #...# #...# #...#"),
    ('B', "####. #...# #...# ####. #...# #...# ####."),
    ('C', ".###. #...# #.... #.... #.... #...# .###."),
    ('D', "####. #...# #...# #...# #...# #...# ####."),
    ('E', "##### #.... #.... ####. #.... #.... #####"),
    ('F', "##### #.... #.... ####. #.... #.... #...."),
    ('G', ".###. #...# #.... #.### #...# #...# .####"),
    ('H', "#...# #...# #...# ##### #...# #...# #...#"),
    ('I', ".###. ..#.. ..#.. ..#.. ..#.. ..#.. .###."),
    ('J', "..### ...#. ...#. ...#. ...#. #..#. .##.."),
    ('K', "#...# #..#. #.#.. ##... #.#.. #..#. #...#"),
    ('L', "#.... #.... #.... #.... #.... #.... #####"),
    ('M', "#...# ##.## #.#.# #.#.# #...# #...# #...#"),
    ('N', "#...# #...# ##..# #.#.# #..## #...# #...#"),
    ('O', ".###. #...# #...# #...# #...# #...# .###."),
    ('P', "####. #...# #...# ####. #.... #.... #...."),
    ('Q', ".###. #...# #...# #...# #.#.# #..#. .##.#"),
    ('R', "####. #...# #...# ####. #.#.. #..#. #...#"),
    ('S', ".#### #.... #.... .###. ....# ....# ####."),
    ('T', "##### ..#.. ..#.. ..#.. ..#.. ..#.. ..#.."),
    ('U', "#...# #...# #...# #...# #...# #...# .###."),
    ('V', "#...# #...# #...# #...# #...# .#.#. ..#.."),
    ('W', "#...# #...# #...# #.#.# #.#.# #.#.# .#.#."),
    ('X', "#...# #...# .#.#. ..#.. .#.#. #...# #...#"),
    ('Y', "#...# #...# .#.#. ..#.. ..#.. ..#.. ..#.."),
    ('Z', "##### ....# ...#. ..#.. .#... #.... #####"),
    ('.', "..... ..... ..... ..... ..... .##.. .##.."),
    (':', "..... .##.. .##.. ..... .##.. .##.. ....."),
    (',', "..... ..... ..... ..... .##.. ..#.. .#..."),
    ('%', "##..# ##..# ...#. ..#.. .#... #..## #..##"),
    ('/', "....# ....# ...#. ..#.. .#... #.... #...."),
    ('(', "...#. ..#.. .#... .#... .#... ..#.. ...#."),
    (')', ".#... ..#.. ...#. ...#. ...#. ..#.. .#..."),
    ('-', "..... ..... ..... ##### ..... ..... ....."),
    ('=', "..... ..... ##### ..... ##### ..... ....."),
    ('+', "..... ..#.. ..#.. ##### ..#.. ..#.. ....."),
];

fn gray_at(img: &Image, x: u32, y: u32) -> u8 {
    let i = ((y * img.width + x) * img.channels) as usize;
    let v = if img.channels >= 3 {
        0.299 * img.sample(i) + 0.587 * img.sample(i + 1) + 0.114 * img.sample(i + 2)
    } else {
        img.sample(i)
    };
    match img.samples {
        Samples::U8(_) => v as u8,
        Samples::U16(_) => (v / 257.0) as u8,
    }
}

pub fn line(canvas: &mut image::RgbImage, (x0, y0): (f32, f32), (x1, y1): (f32, f32), colour: [u8; 3]) {
    let steps = (x1 - x0).abs().max((y1 - y0).abs()).ceil().max(1.0) as usize;
    for s in 0..=steps {
        let t = s as f32 / steps as f32;
        plot(canvas, x0 + (x1 - x0) * t, y0 + (y1 - y0) * t, colour);
    }
}

fn circle(canvas: &mut image::RgbImage, cx: f32, cy: f32, r: f32, colour: [u8; 3]) {
    let steps = (r * 8.0).max(12.0) as usize;
    for s in 0..steps {
        let a = s as f32 / steps as f32 * std::f32::consts::TAU;
        plot(canvas, cx + r * a.cos(), cy + r * a.sin(), colour);
    }
}

fn plot(canvas: &mut image::RgbImage, x: f32, y: f32, colour: [u8; 3]) {
    let (x, y) = (x.round(), y.round());
    if x >= 0.0 && y >= 0.0 && (x as u32) < canvas.width() && (y as u32) < canvas.height() {
        canvas.put_pixel(x as u32, y as u32, image::Rgb(colour));
    }
}
