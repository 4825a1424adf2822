//! Images as the engine takes them: 8- or 16-bit samples, 1 to 4 channels, tightly packed, oriented as a viewer
//! shows them (EXIF applied).

use crate::error::{Error, Result};
use std::path::{Path, PathBuf};

#[derive(Clone, Debug, PartialEq)]
pub enum Samples {
    U8(Vec<u8>),
    U16(Vec<u16>),
}

#[derive(Clone, Debug, PartialEq)]
pub struct Image {
    pub width: u32,
    pub height: u32,
    /// 1 gray, 2 gray + alpha, 3 RGB, 4 RGBA.
    pub channels: u32,
    pub samples: Samples,
}

/// What a file may ask the decoder for. A few megabytes of PNG can claim 60000 x 60000 pixels (a decompression
/// bomb): decoding it would take gigabytes before anything could check them.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DecodeLimits {
    /// Pixels (width x height) the header may claim.
    pub max_pixels: u64,
}

impl Default for DecodeLimits {
    /// 250 megapixels: a 20000 x 12500 photo, whose 8-bit RGB pixels take 750 MB.
    fn default() -> Self {
        DecodeLimits { max_pixels: 250_000_000 }
    }
}

impl Image {
    pub fn gray8(width: u32, height: u32, data: Vec<u8>) -> Self {
        assert_eq!(data.len(), (width * height) as usize, "gray image data does not match its size");
        Image { width, height, channels: 1, samples: Samples::U8(data) }
    }

    /// Reads an image file, applying its EXIF orientation, within the default `DecodeLimits`.
    pub fn open(path: &Path) -> Result<Self> {
        Self::open_with(path, &DecodeLimits::default())
    }

    /// Reads an image file within `limits`: the size its header claims is checked before any pixel is decoded.
    pub fn open_with(path: &Path, limits: &DecodeLimits) -> Result<Self> {
        let fail = |reason: String| Error::Image { path: path.to_path_buf(), reason };
        let bytes = std::fs::read(path).map_err(|e| fail(format!("cannot open ({e})")))?;
        if bytes.is_empty() {
            return Err(fail("the file is empty (0 bytes)".into()));
        }
        let mut reader = image::ImageReader::new(std::io::Cursor::new(&bytes[..]));
        // the extension's format unless the content says otherwise
        if let Ok(format) = image::ImageFormat::from_path(path) {
            reader.set_format(format);
        }
        let reader = reader
            .with_guessed_format()
            .map_err(|e| fail(format!("cannot read ({e})")))?;
        match reader.format() {
            None => return Err(fail("not a recognised image format (PNG, JPEG, PNM, TIFF, BMP, WebP)".into())),
            Some(image::ImageFormat::Jpeg) if !jpeg_is_complete(&bytes) => {
                return Err(fail(format!(
                    "truncated JPEG: the {} bytes end before the end-of-image marker (the decoder would invent the rest)",
                    bytes.len()
                )))
            }
            Some(_) => {}
        }
        let mut decoder = reader.into_decoder().map_err(|e| fail(format!("cannot decode ({e})")))?;
        use image::ImageDecoder;
        let (w, h) = decoder.dimensions();
        if w as u64 * h as u64 > limits.max_pixels {
            return Err(fail(format!(
                "its header claims {w} x {h} pixels ({:.0} megapixels), over the decoding limit of {:.0} megapixels \
                 (--max-megapixels raises it)",
                w as f64 * h as f64 / 1e6,
                limits.max_pixels as f64 / 1e6
            )));
        }
        let orientation = decoder.orientation().unwrap_or(image::metadata::Orientation::NoTransforms);
        let mut img = image::DynamicImage::from_decoder(decoder).map_err(|e| fail(format!("cannot decode ({e})")))?;
        img.apply_orientation(orientation);
        let image = Self::from_dynamic(img);
        if image.width == 0 || image.height == 0 {
            return Err(fail("the image is empty (0 pixels)".into()));
        }
        Ok(image)
    }

    pub fn from_dynamic(img: image::DynamicImage) -> Self {
        use image::DynamicImage as D;
        let (width, height) = (img.width(), img.height());
        let (channels, samples) = match img {
            D::ImageLuma8(b) => (1, Samples::U8(b.into_raw())),
            D::ImageLumaA8(b) => (2, Samples::U8(b.into_raw())),
            D::ImageRgb8(b) => (3, Samples::U8(b.into_raw())),
            D::ImageRgba8(b) => (4, Samples::U8(b.into_raw())),
            D::ImageLuma16(b) => (1, Samples::U16(b.into_raw())),
            D::ImageLumaA16(b) => (2, Samples::U16(b.into_raw())),
            D::ImageRgb16(b) => (3, Samples::U16(b.into_raw())),
            D::ImageRgb32F(b) => (3, Samples::U16(b.into_raw().into_iter().map(unit_to_u16).collect())),
            D::ImageRgba32F(b) => (4, Samples::U16(b.into_raw().into_iter().map(unit_to_u16).collect())),
            other => (4, Samples::U16(other.to_rgba16().into_raw())),
        };
        Image { width, height, channels, samples }
    }

    pub fn bits(&self) -> u32 {
        match self.samples {
            Samples::U8(_) => 8,
            Samples::U16(_) => 16,
        }
    }

    /// The i-th sample as a float in the sample's own range.
    pub fn sample(&self, i: usize) -> f32 {
        match &self.samples {
            Samples::U8(v) => v[i] as f32,
            Samples::U16(v) => v[i] as f32,
        }
    }

    /// The image resampled to `width` x `height` with the antialiasing triangle filter (pixel centres map as
    /// x' = (x + 0.5) * width / self.width - 0.5).
    pub fn resized(&self, width: u32, height: u32) -> Image {
        Image::from_dynamic(self.to_dynamic().resize_exact(width, height, image::imageops::FilterType::Triangle))
    }

    /// The image crate's view of the image (for resizing and writing).
    pub fn to_dynamic(&self) -> image::DynamicImage {
        use image::{DynamicImage as D, ImageBuffer};
        let (w, h) = (self.width, self.height);
        let bad = "sample count matches the image size";
        match (&self.samples, self.channels) {
            (Samples::U8(v), 1) => D::ImageLuma8(ImageBuffer::from_raw(w, h, v.clone()).expect(bad)),
            (Samples::U8(v), 2) => D::ImageLumaA8(ImageBuffer::from_raw(w, h, v.clone()).expect(bad)),
            (Samples::U8(v), 3) => D::ImageRgb8(ImageBuffer::from_raw(w, h, v.clone()).expect(bad)),
            (Samples::U8(v), _) => D::ImageRgba8(ImageBuffer::from_raw(w, h, v.clone()).expect(bad)),
            (Samples::U16(v), 1) => D::ImageLuma16(ImageBuffer::from_raw(w, h, v.clone()).expect(bad)),
            (Samples::U16(v), 2) => D::ImageLumaA16(ImageBuffer::from_raw(w, h, v.clone()).expect(bad)),
            (Samples::U16(v), 3) => D::ImageRgb16(ImageBuffer::from_raw(w, h, v.clone()).expect(bad)),
            (Samples::U16(v), _) => D::ImageRgba16(ImageBuffer::from_raw(w, h, v.clone()).expect(bad)),
        }
    }

    /// Samples packed little-endian into 32-bit words, as the preprocessing kernel reads them.
    pub fn packed_words(&self) -> Vec<u8> {
        let mut bytes = match &self.samples {
            Samples::U8(v) => v.clone(),
            Samples::U16(v) => bytemuck::cast_slice::<u16, u8>(v).to_vec(),
        };
        bytes.resize(bytes.len().max(4).next_multiple_of(4), 0);
        bytes
    }
}

/// A float sample (0 black, 1 white) as a 16-bit one: clamped to [0, 1], and NaN (no value) black, so that every
/// extraction path sees the same numbers.
fn unit_to_u16(v: f32) -> u16 {
    if v.is_nan() {
        0
    } else {
        (v.clamp(0.0, 1.0) * 65535.0).round() as u16
    }
}

/// Whether a JPEG's data reaches its end-of-image marker (FF D9) after its last scan (FF DA). The decoder fills a
/// file cut short with grey and reports nothing; within a scan a literal FF byte is always followed by 00 or a
/// restart marker, so FF D9 after the last scan header is the real end.
fn jpeg_is_complete(bytes: &[u8]) -> bool {
    let last_scan = bytes.windows(2).rposition(|w| w == [0xFF, 0xDA]);
    let Some(scan) = last_scan else { return false };
    bytes[scan..].windows(2).any(|w| w == [0xFF, 0xD9])
}

/// An image file found by `list_images`: its name relative to the folder listed (`/` separated) and its path.
#[derive(Clone, Debug)]
pub struct ImageFile {
    pub name: String,
    pub path: PathBuf,
}

/// The images of a folder (directly inside it, or below it with `recursive`), sorted by name, named relative to it.
pub fn list_images(dir: &Path, recursive: bool) -> Result<Vec<ImageFile>> {
    fn walk(root: &Path, dir: &Path, recursive: bool, out: &mut Vec<ImageFile>) -> Result<()> {
        for entry in std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
            let path = entry.map_err(|e| Error::io(dir, e))?.path();
            if path.is_dir() {
                if recursive {
                    walk(root, &path, recursive, out)?;
                }
            } else if is_image(&path) {
                let relative = path.strip_prefix(root).unwrap_or(&path);
                let name = relative.components().map(|c| c.as_os_str().to_string_lossy()).collect::<Vec<_>>().join("/");
                out.push(ImageFile { name, path });
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    walk(dir, dir, recursive, &mut out)?;
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// File extensions read as images.
pub const IMAGE_EXTENSIONS: &[&str] = &["png", "jpg", "jpeg", "ppm", "pgm", "pnm", "tif", "tiff", "bmp", "webp"];

pub fn is_image(path: &Path) -> bool {
    path.extension().and_then(|e| e.to_str()).is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
}
