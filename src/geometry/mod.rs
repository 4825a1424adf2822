//! Two-view geometry on one matrix type (`Mat3`, row-major f64; glam's `DMat3` where an inverse is needed), with
//! pixel centres at integer coordinates and y down: homographies and image rotation here; estimation of
//! homographies (`homography`) and fundamental/essential matrices (`fundamental`) as users of `solve::Ransac`.

pub mod fundamental;
pub mod homography;

use crate::image_io::{Image, Samples};

/// A row-major 3x3 matrix.
pub type Mat3 = [[f64; 3]; 3];

pub fn multiply(a: &Mat3, b: &Mat3) -> Mat3 {
    std::array::from_fn(|i| std::array::from_fn(|j| (0..3).map(|k| a[i][k] * b[k][j]).sum()))
}

pub fn transpose(a: &Mat3) -> Mat3 {
    std::array::from_fn(|i| std::array::from_fn(|j| a[j][i]))
}

/// `m v` for a homogeneous vector.
pub fn apply(m: &Mat3, v: [f64; 3]) -> [f64; 3] {
    std::array::from_fn(|i| m[i][0] * v[0] + m[i][1] * v[1] + m[i][2] * v[2])
}

/// Hartley's normalisation: the similarity that moves the centroid to the origin and the mean distance to it to
/// sqrt(2). `None` when the points coincide (or are not finite).
pub fn normalization(p: &[[f64; 2]]) -> Option<Mat3> {
    let n = p.len() as f64;
    let (cx, cy) = (p.iter().map(|q| q[0]).sum::<f64>() / n, p.iter().map(|q| q[1]).sum::<f64>() / n);
    let mean = p.iter().map(|q| ((q[0] - cx).powi(2) + (q[1] - cy).powi(2)).sqrt()).sum::<f64>() / n;
    if !(mean > 1e-12) {
        return None;
    }
    let s = std::f64::consts::SQRT_2 / mean;
    Some([[s, 0.0, -s * cx], [0.0, s, -s * cy], [0.0, 0.0, 1.0]])
}

/// A 3x3 homography, row-major, mapping image-1 pixel coordinates to image-k pixel coordinates.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Homography(pub Mat3);

impl Homography {
    pub fn identity() -> Self {
        Homography([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    }

    pub fn apply(&self, x: f64, y: f64) -> Option<(f64, f64)> {
        let m = &self.0;
        let w = m[2][0] * x + m[2][1] * y + m[2][2];
        if w.abs() < 1e-12 {
            return None;
        }
        Some(((m[0][0] * x + m[0][1] * y + m[0][2]) / w, (m[1][0] * x + m[1][1] * y + m[1][2]) / w))
    }

    pub fn inverse(&self) -> Option<Self> {
        let m = glam::DMat3::from_cols_array_2d(&self.0).transpose();
        if m.determinant().abs() < 1e-15 {
            return None;
        }
        Some(Homography(m.inverse().transpose().to_cols_array_2d()))
    }

    /// `self` after `first`: maps as `first`, then `self`.
    pub fn after(&self, first: &Homography) -> Homography {
        Homography(multiply(&self.0, &first.0))
    }

    /// Reads the HPatches text format: 3 rows of 3 finite numbers.
    pub fn parse(text: &str) -> Option<Self> {
        let v: Vec<f64> = text.split_whitespace().map(|t| t.parse().ok().filter(|v: &f64| v.is_finite())).collect::<Option<_>>()?;
        (v.len() == 9).then(|| Homography([[v[0], v[1], v[2]], [v[3], v[4], v[5]], [v[6], v[7], v[8]]]))
    }
}

/// Rotates an image counter-clockwise (as displayed) by `degrees` about its centre onto a canvas that holds all of
/// it; returns the image and the homography from the original's pixels to the rotated one's. Multiples of 90
/// degrees are exact pixel permutations; other angles are resampled bilinearly, outside filled with black.
pub fn rotate_image(image: &Image, degrees: f64) -> (Image, Homography) {
    let (w, h) = (image.width as f64, image.height as f64);
    let a = degrees.to_radians();
    let (s, c) = (a.sin(), a.cos());
    let quarter = (degrees / 90.0).round();
    let exact = (degrees / 90.0 - quarter).abs() < 1e-12;
    let (nw, nh) = if exact && (quarter as i64).rem_euclid(2) == 1 {
        (image.height, image.width)
    } else if exact {
        (image.width, image.height)
    } else {
        ((w * c.abs() + h * s.abs()).ceil() as u32, (w * s.abs() + h * c.abs()).ceil() as u32)
    };
    let (cx, cy) = ((w - 1.0) / 2.0, (h - 1.0) / 2.0);
    let (ncx, ncy) = ((nw as f64 - 1.0) / 2.0, (nh as f64 - 1.0) / 2.0);
    // counter-clockwise as displayed with y down: (dx, dy) -> (dx cos + dy sin, -dx sin + dy cos)
    let (c, s) = if exact {
        let q = (quarter as i64).rem_euclid(4);
        ([1.0, 0.0, -1.0, 0.0][q as usize], [0.0, 1.0, 0.0, -1.0][q as usize])
    } else {
        (c, s)
    };
    let hmat = Homography([[c, s, ncx - c * cx - s * cy], [-s, c, ncy + s * cx - c * cy], [0.0, 0.0, 1.0]]);
    let inv = hmat.inverse().expect("rotations are invertible");
    let ch = image.channels as usize;
    let mut out = vec![0f32; nw as usize * nh as usize * ch];
    for y in 0..nh as usize {
        for x in 0..nw as usize {
            let (sx, sy) = inv.apply(x as f64, y as f64).unwrap();
            for k in 0..ch {
                out[(y * nw as usize + x) * ch + k] = if exact {
                    let (ix, iy) = (sx.round() as usize, sy.round() as usize);
                    image.sample((iy * image.width as usize + ix) * ch + k)
                } else {
                    bilinear(image, sx, sy, k)
                };
            }
        }
    }
    let samples = match image.samples {
        Samples::U8(_) => Samples::U8(out.iter().map(|v| v.round().clamp(0.0, 255.0) as u8).collect()),
        Samples::U16(_) => Samples::U16(out.iter().map(|v| v.round().clamp(0.0, 65535.0) as u16).collect()),
    };
    (Image { width: nw, height: nh, channels: image.channels, samples }, hmat)
}

fn bilinear(image: &Image, x: f64, y: f64, k: usize) -> f32 {
    let (w, h) = (image.width as i64, image.height as i64);
    if x < -0.5 || y < -0.5 || x > w as f64 - 0.5 || y > h as f64 - 0.5 {
        return 0.0;
    }
    let (x, y) = (x.clamp(0.0, (w - 1) as f64), y.clamp(0.0, (h - 1) as f64));
    let (x0, y0) = (x.floor() as i64, y.floor() as i64);
    let (x1, y1) = ((x0 + 1).min(w - 1), (y0 + 1).min(h - 1));
    let (fx, fy) = ((x - x0 as f64) as f32, (y - y0 as f64) as f32);
    let ch = image.channels as usize;
    let at = |xx: i64, yy: i64| image.sample(((yy * w + xx) as usize) * ch + k);
    let top = at(x0, y0) * (1.0 - fx) + at(x1, y0) * fx;
    let bottom = at(x0, y1) * (1.0 - fx) + at(x1, y1) * fx;
    top * (1.0 - fy) + bottom * fy
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quarter_turn_moves_pixels_counter_clockwise() {
        // 3x2 image: top-right pixel (2, 0) must land at the top-left (0, 0) after a CCW quarter turn.
        let img = Image::gray8(3, 2, vec![1, 2, 3, 4, 5, 6]);
        let (rot, hmat) = rotate_image(&img, 90.0);
        assert_eq!((rot.width, rot.height), (2, 3));
        assert_eq!(rot.samples, Samples::U8(vec![3, 6, 2, 5, 1, 4]));
        let (x, y) = hmat.apply(2.0, 0.0).unwrap();
        assert!((x - 0.0).abs() < 1e-9 && (y - 0.0).abs() < 1e-9);
    }
}
