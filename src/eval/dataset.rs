//! Evaluation sets in the HPatches layout: a folder of sequences, each holding `1.<ext> .. K.<ext>` and the text
//! files `H_1_k` that map image 1's pixels to image k's. A folder that is itself a sequence is a set of one.

use crate::error::{Error, Result};
use crate::geometry::Homography;
use crate::image_io::{Image, IMAGE_EXTENSIONS};
use std::path::{Path, PathBuf};


#[derive(Clone, Debug)]
pub struct DataSet {
    /// The folder's name.
    pub name: String,
    pub root: PathBuf,
    pub sequences: Vec<Sequence>,
}

#[derive(Clone, Debug)]
pub struct Sequence {
    pub name: String,
    /// Images 1..K.
    pub images: Vec<PathBuf>,
    /// H_1_k for k = 2..K, in the original images' pixels.
    pub homographies: Vec<Homography>,
}

impl DataSet {
    /// Reads the layout (not the images). Sub-folders that are not sequences are skipped; a folder without any
    /// sequence is an error.
    pub fn open(root: &Path) -> Result<Self> {
        let name = root
            .canonicalize()
            .ok()
            .and_then(|p| p.file_name().map(|n| n.to_string_lossy().to_string()))
            .unwrap_or_else(|| root.display().to_string());
        if !root.is_dir() {
            return Err(Error::Invalid(format!("{}: not a folder of HPatches-format sequences", root.display())));
        }
        let mut sequences = Vec::new();
        if let Some(seq) = Sequence::open(root)? {
            sequences.push(seq);
        } else {
            let mut dirs: Vec<PathBuf> = std::fs::read_dir(root)
                .map_err(|e| Error::io(root, e))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.is_dir())
                .collect();
            dirs.sort();
            for dir in dirs {
                if let Some(seq) = Sequence::open(&dir)? {
                    sequences.push(seq);
                }
            }
        }
        if sequences.is_empty() {
            return Err(Error::Invalid(format!(
                "{}: no sequence found (a sequence is a folder with 1.<ext>, 2.<ext>, ... and H_1_2, ...)",
                root.display()
            )));
        }
        Ok(DataSet { name, root: root.to_path_buf(), sequences })
    }

    pub fn pairs(&self) -> usize {
        self.sequences.iter().map(|s| s.homographies.len()).sum()
    }
}

impl Sequence {
    /// `None` when the folder is not a sequence (no image 1 or no H_1_2).
    pub fn open(dir: &Path) -> Result<Option<Self>> {
        let find = |k: usize| IMAGE_EXTENSIONS.iter().map(|e| dir.join(format!("{k}.{e}"))).find(|p| p.is_file());
        let Some(first) = find(1) else { return Ok(None) };
        if !dir.join("H_1_2").is_file() {
            return Ok(None);
        }
        let mut images = vec![first];
        let mut homographies = Vec::new();
        for k in 2.. {
            let h_path = dir.join(format!("H_1_{k}"));
            let (Some(image), true) = (find(k), h_path.is_file()) else { break };
            let text = std::fs::read_to_string(&h_path).map_err(|e| Error::io(&h_path, e))?;
            let h = Homography::parse(&text)
                .ok_or_else(|| Error::Invalid(format!("{}: expected 3 rows of 3 finite numbers", h_path.display())))?;
            images.push(image);
            homographies.push(h);
        }
        let name = dir.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
        Ok(Some(Sequence { name, images, homographies }))
    }
}

/// Reads an image (EXIF applied) and shrinks it so that its longer side is at most `max_side`; returns the image
/// and the homography from the file's pixels to the returned image's.
pub fn load_image(path: &Path, max_side: Option<u32>) -> Result<(Image, Homography)> {
    let image = Image::open(path)?;
    Ok(fit(&image, max_side))
}

/// Shrinks an image (never enlarges) so that its longer side is at most `max_side`, with an antialiasing triangle
/// filter; returns it with the pixel map from the original (pixel centres: x' = (x + 0.5) * s - 0.5).
pub fn fit(image: &Image, max_side: Option<u32>) -> (Image, Homography) {
    let long = image.width.max(image.height);
    let Some(max_side) = max_side.filter(|&m| m > 0 && long > m) else {
        return (image.clone(), Homography::identity());
    };
    let s = max_side as f64 / long as f64;
    let w = ((image.width as f64 * s).round() as u32).max(1);
    let h = ((image.height as f64 * s).round() as u32).max(1);
    let resized = image.resized(w, h);
    let (sx, sy) = (w as f64 / image.width as f64, h as f64 / image.height as f64);
    let map = Homography([[sx, 0.0, 0.5 * sx - 0.5], [0.0, sy, 0.5 * sy - 0.5], [0.0, 0.0, 1.0]]);
    (resized, map)
}

/// Writes an image as PNG (8- or 16-bit, as it is).
pub fn write_png(image: &Image, path: &Path) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    }
    image
        .to_dynamic()
        .save_with_format(path, image::ImageFormat::Png)
        .map_err(|e| Error::Invalid(format!("writing {}: {e}", path.display())))
}
