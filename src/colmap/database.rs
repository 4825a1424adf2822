//! Writing a COLMAP database (SQLite): the tables and blob layouts that COLMAP's feature importer and mapper read.
//!
//! The schema is COLMAP 3.x's (cameras, images, keypoints, descriptors, matches, two_view_geometries); COLMAP 3.12
//! and later add their newer tables and columns (rigs, frames, descriptor types) when they open the file. Blobs are
//! little-endian and row-major: keypoints `rows x 6` f32, descriptors `rows x dim` u8, matches `rows x 2` u32,
//! camera parameters and the 3x3 matrices f64.

use crate::geometry::{transpose, Mat3};
use crate::error::{Error, Result};
use rusqlite::{params, Connection};
use std::path::{Path, PathBuf};

/// COLMAP's largest image id plus one: pair ids are `id1 * MAX_IMAGE_ID + id2` with `id1 < id2`.
pub const MAX_IMAGE_ID: i64 = 2_147_483_647;

/// COLMAP's id of the pair of two images, whatever their order.
pub fn pair_id(image1: i64, image2: i64) -> i64 {
    let (a, b) = if image1 < image2 { (image1, image2) } else { (image2, image1) };
    a * MAX_IMAGE_ID + b
}

/// The two image ids of a pair id, smaller first.
pub fn image_ids(pair_id: i64) -> (i64, i64) {
    (pair_id / MAX_IMAGE_ID, pair_id % MAX_IMAGE_ID)
}

/// COLMAP's `TwoViewGeometry::ConfigurationType` values that this writer uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Configuration {
    /// Verification failed: no inliers are stored.
    Degenerate = 1,
    /// Cameras with known intrinsics: E (and F) hold.
    Calibrated = 2,
    /// Unknown intrinsics: F holds.
    Uncalibrated = 3,
}

/// A camera row: COLMAP's model id and its parameters, in COLMAP's pixel convention (the centre of the top-left
/// pixel at (0.5, 0.5)).
#[derive(Clone, Debug, PartialEq)]
pub struct CameraRow {
    pub model: i32,
    pub width: u32,
    pub height: u32,
    pub params: Vec<f64>,
    /// Whether the focal length is known (COLMAP then trusts it from the start).
    pub prior_focal_length: bool,
}

/// The verified geometry of one image pair.
#[derive(Clone, Debug, PartialEq)]
pub struct TwoViewRow {
    pub config: Configuration,
    /// Inlier matches (index in the first image, index in the second).
    pub inliers: Vec<(u32, u32)>,
    pub fundamental: Option<Mat3>,
    pub essential: Option<Mat3>,
}

/// A database being written. Everything goes into one transaction in a temporary file beside the target, which
/// `finish` commits and renames into place: an interrupted run leaves no half-written database behind.
pub struct Database {
    /// Taken by `finish`.
    connection: Option<Connection>,
    temporary: PathBuf,
    path: PathBuf,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS cameras (
    camera_id INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL,
    model INTEGER NOT NULL,
    width INTEGER NOT NULL,
    height INTEGER NOT NULL,
    params BLOB,
    prior_focal_length INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS images (
    image_id INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL,
    name TEXT NOT NULL UNIQUE,
    camera_id INTEGER NOT NULL,
    CONSTRAINT image_id_check CHECK(image_id >= 0 and image_id < 2147483647),
    FOREIGN KEY(camera_id) REFERENCES cameras(camera_id));
CREATE UNIQUE INDEX IF NOT EXISTS index_name ON images(name);
CREATE TABLE IF NOT EXISTS keypoints (
    image_id INTEGER PRIMARY KEY NOT NULL,
    rows INTEGER NOT NULL,
    cols INTEGER NOT NULL,
    data BLOB,
    FOREIGN KEY(image_id) REFERENCES images(image_id) ON DELETE CASCADE);
CREATE TABLE IF NOT EXISTS descriptors (
    image_id INTEGER PRIMARY KEY NOT NULL,
    rows INTEGER NOT NULL,
    cols INTEGER NOT NULL,
    data BLOB,
    FOREIGN KEY(image_id) REFERENCES images(image_id) ON DELETE CASCADE);
CREATE TABLE IF NOT EXISTS matches (
    pair_id INTEGER PRIMARY KEY NOT NULL,
    rows INTEGER NOT NULL,
    cols INTEGER NOT NULL,
    data BLOB);
CREATE TABLE IF NOT EXISTS two_view_geometries (
    pair_id INTEGER PRIMARY KEY NOT NULL,
    rows INTEGER NOT NULL,
    cols INTEGER NOT NULL,
    data BLOB,
    config INTEGER NOT NULL,
    F BLOB,
    E BLOB,
    H BLOB,
    qvec BLOB,
    tvec BLOB);
";

fn sql_error(path: &Path, e: rusqlite::Error) -> Error {
    Error::io(path, std::io::Error::other(format!("SQLite: {e}")))
}

impl Database {
    /// Starts a new database at `path`; refuses to touch an existing file.
    pub fn create(path: &Path) -> Result<Self> {
        if path.exists() {
            return Err(Error::Invalid(format!("{} exists; remove it or choose another output", path.display())));
        }
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        }
        let mut name = path.file_name().unwrap_or_default().to_os_string();
        name.push(".tmp");
        let temporary = path.with_file_name(name);
        let _ = std::fs::remove_file(&temporary);
        let connection = Connection::open(&temporary).map_err(|e| sql_error(&temporary, e))?;
        connection.execute_batch(SCHEMA).map_err(|e| sql_error(&temporary, e))?;
        connection.execute_batch("BEGIN").map_err(|e| sql_error(&temporary, e))?;
        Ok(Database { connection: Some(connection), temporary, path: path.to_path_buf() })
    }

    fn fail(&self, e: rusqlite::Error) -> Error {
        sql_error(&self.temporary, e)
    }

    fn connection(&self) -> &Connection {
        self.connection.as_ref().expect("open until finish")
    }

    /// Adds a camera; returns its id.
    pub fn add_camera(&self, camera: &CameraRow) -> Result<i64> {
        self.connection()
            .execute(
                "INSERT INTO cameras (model, width, height, params, prior_focal_length) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![camera.model, camera.width, camera.height, f64_blob(&camera.params), camera.prior_focal_length as i32],
            )
            .map_err(|e| self.fail(e))?;
        Ok(self.connection().last_insert_rowid())
    }

    /// Adds an image (its path relative to the image folder, with `/` separators); returns its id.
    pub fn add_image(&self, name: &str, camera_id: i64) -> Result<i64> {
        self.connection()
            .execute("INSERT INTO images (name, camera_id) VALUES (?1, ?2)", params![name, camera_id])
            .map_err(|e| self.fail(e))?;
        Ok(self.connection().last_insert_rowid())
    }

    /// Keypoints as `rows x 6` floats (x, y, a11, a12, a21, a22), row-major.
    pub fn add_keypoints(&self, image_id: i64, rows: &[[f32; 6]]) -> Result<()> {
        let data: &[u8] = bytemuck::cast_slice(rows);
        self.connection()
            .execute("INSERT INTO keypoints (image_id, rows, cols, data) VALUES (?1, ?2, 6, ?3)", params![image_id, rows.len() as i64, data])
            .map_err(|e| self.fail(e))?;
        Ok(())
    }

    /// Descriptors as `rows x dim` bytes, row-major.
    pub fn add_descriptors(&self, image_id: i64, dim: usize, data: &[u8]) -> Result<()> {
        let rows = data.len().checked_div(dim).unwrap_or(0);
        self.connection()
            .execute(
                "INSERT INTO descriptors (image_id, rows, cols, data) VALUES (?1, ?2, ?3, ?4)",
                params![image_id, rows as i64, dim as i64, data],
            )
            .map_err(|e| self.fail(e))?;
        Ok(())
    }

    /// The putative matches of a pair: (keypoint index in `image1`, in `image2`).
    pub fn add_matches(&self, image1: i64, image2: i64, matches: &[(u32, u32)]) -> Result<()> {
        let data = match_blob(image1, image2, matches);
        self.connection()
            .execute(
                "INSERT INTO matches (pair_id, rows, cols, data) VALUES (?1, ?2, 2, ?3)",
                params![pair_id(image1, image2), matches.len() as i64, data],
            )
            .map_err(|e| self.fail(e))?;
        Ok(())
    }

    /// The verified geometry of a pair, inlier indices as in `add_matches`.
    pub fn add_two_view_geometry(&self, image1: i64, image2: i64, geometry: &TwoViewRow) -> Result<()> {
        let swap = image1 > image2;
        // F maps points of the first image to lines in the second; for the swapped pair it is transposed.
        let oriented = |m: &Option<Mat3>| m.map(|m| if swap { transpose(&m) } else { m });
        let matrix = |m: Option<Mat3>| m.map(|m| f64_blob(m.as_flattened()));
        self.connection()
            .execute(
                "INSERT INTO two_view_geometries (pair_id, rows, cols, data, config, F, E) VALUES (?1, ?2, 2, ?3, ?4, ?5, ?6)",
                params![
                    pair_id(image1, image2),
                    geometry.inliers.len() as i64,
                    match_blob(image1, image2, &geometry.inliers),
                    geometry.config as i32,
                    matrix(oriented(&geometry.fundamental)),
                    matrix(oriented(&geometry.essential)),
                ],
            )
            .map_err(|e| self.fail(e))?;
        Ok(())
    }

    /// Commits and moves the file into place.
    pub fn finish(mut self) -> Result<()> {
        let connection = self.connection.take().expect("open until finish");
        connection.execute_batch("COMMIT").map_err(|e| sql_error(&self.temporary, e))?;
        connection.close().map_err(|(_, e)| sql_error(&self.temporary, e))?;
        std::fs::rename(&self.temporary, &self.path).map_err(|e| Error::io(&self.path, e))
    }
}

impl Drop for Database {
    fn drop(&mut self) {
        // after `finish` the temporary file is gone and this does nothing
        drop(self.connection.take());
        let _ = std::fs::remove_file(&self.temporary);
    }
}

fn f64_blob(values: &[f64]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// Matches with the smaller image id's column first, as COLMAP expects.
fn match_blob(image1: i64, image2: i64, matches: &[(u32, u32)]) -> Vec<u8> {
    let swap = image1 > image2;
    matches.iter().flat_map(|&(a, b)| if swap { [b, a] } else { [a, b] }).flat_map(u32::to_le_bytes).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pair_ids_follow_colmap() {
        assert_eq!(pair_id(1, 2), 2_147_483_649);
        assert_eq!(pair_id(2, 1), 2_147_483_649);
        assert_eq!(image_ids(pair_id(17, 5)), (5, 17));
    }

    #[test]
    fn swapped_pairs_store_the_smaller_id_first() {
        assert_eq!(match_blob(3, 1, &[(7, 9)]), [9u32.to_le_bytes(), 7u32.to_le_bytes()].concat());
        assert_eq!(match_blob(1, 3, &[(7, 9)]), [7u32.to_le_bytes(), 9u32.to_le_bytes()].concat());
    }
}
