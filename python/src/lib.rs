//! `strek._strek`: the engine for Python. Images come in as numpy arrays (or paths), features go out as numpy
//! arrays; extraction and matching run with the GIL released; every engine error is a `strek.StrekError` with the
//! engine's message. The pure-Python package `strek` (python/strek) wraps this module.

use numpy::ndarray::{Array1, Array2};
use numpy::{IntoPyArray, PyArray2, PyReadonlyArray2, PyReadonlyArrayDyn, PyUntypedArrayMethods};
use pyo3::create_exception;
use pyo3::exceptions::PyException;
use pyo3::prelude::*;
use pyo3::types::PyDict;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Mutex;
use strek::colmap::database::{Configuration, TwoViewRow};
use strek::colmap::{Camera, Options, Writer};
use strek::image_io::Samples;
use strek::{Config, Device, Extract, Features, GpuOptions, Image, Matcher, Session, Weights};

create_exception!(_strek, StrekError, PyException, "An error of the strek engine: bad input, weights or device.");

/// The shipped weights, inside the module (and so inside the wheel).
const SHIPPED_WEIGHTS: &[u8] = include_bytes!("../../weights/strek.safetensors");

fn engine_error(e: strek::Error) -> PyErr {
    StrekError::new_err(e.to_string())
}

fn invalid(message: String) -> PyErr {
    StrekError::new_err(message)
}

/// One device and an extractor and a matcher on it.
#[pyclass(name = "Session", module = "strek._strek")]
struct PySession {
    extractor: Mutex<Box<dyn Extract + Send>>,
    matcher: Matcher,
    description: String,
    dim: usize,
}

#[pymethods]
impl PySession {
    #[new]
    #[pyo3(signature = (device = "auto", weights = None, max_keypoints = None, max_memory = None, f16 = false, scales = None))]
    fn new(py: Python<'_>, device: &str, weights: Option<PathBuf>, max_keypoints: Option<usize>, max_memory: Option<u64>, f16: bool, scales: Option<Vec<f32>>) -> PyResult<Self> {
        let device: Device = device.parse().map_err(engine_error)?;
        py.detach(|| {
            let mut weights = match &weights {
                Some(path) => Weights::load(path)?,
                None => Weights::from_bytes(SHIPPED_WEIGHTS, "the shipped weights (strek.safetensors)")?,
            };
            if let Some(scales) = &scales {
                weights = weights.with_scales(scales)?;
            }
            let session = Session::open(device, &GpuOptions::default())?.with_max_memory(max_memory);
            let precision = if f16 { strek::ops::Precision::F16 } else { strek::ops::Precision::F32 };
            let config = Config { max_keypoints, precision, ..Default::default() };
            let extractor = session.extractor(&weights, config)?;
            let matcher = session.matcher(Device::Auto)?;
            Ok(PySession { description: extractor.describe(), extractor: Mutex::new(extractor), matcher, dim: weights.config.descriptor.dim })
        })
        .map_err(engine_error)
    }

    /// What extracts: the adapter, or the CPU path's threads and kernel.
    #[getter]
    fn device(&self) -> String {
        self.description.clone()
    }

    /// The descriptor dimension of the weights.
    #[getter]
    fn dim(&self) -> usize {
        self.dim
    }

    /// Features of one image (a numpy array or a path), as a dict of numpy arrays.
    fn extract<'py>(&self, py: Python<'py>, image: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyDict>> {
        let image = to_image(image)?;
        let features = py.detach(|| self.extractor.lock().expect("extractor lock").extract(&image)).map_err(engine_error)?;
        features_dict(py, features)
    }

    /// Features of several images in one submission.
    fn extract_batch<'py>(&self, py: Python<'py>, images: Vec<Bound<'py, PyAny>>) -> PyResult<Vec<Bound<'py, PyDict>>> {
        let images: Vec<Image> = images.iter().map(to_image).collect::<PyResult<_>>()?;
        let features = py.detach(|| self.extractor.lock().expect("extractor lock").extract_batch(&images)).map_err(engine_error)?;
        features.into_iter().map(|f| features_dict(py, f)).collect()
    }

    /// Mutual nearest neighbours of two descriptor sets (N x D and M x D float32), as a K x 2 int64 array of
    /// (row in desc1, row in desc2); `ratio` < 1 adds the ratio test.
    #[pyo3(signature = (desc1, desc2, ratio = None))]
    fn r#match<'py>(
        &self,
        py: Python<'py>,
        desc1: PyReadonlyArray2<'py, f32>,
        desc2: PyReadonlyArray2<'py, f32>,
        ratio: Option<f32>,
    ) -> PyResult<Bound<'py, PyArray2<i64>>> {
        let ratio = ratio.unwrap_or(1.0);
        if !(ratio > 0.0 && ratio <= 1.0) {
            return Err(invalid(format!("ratio must be in (0, 1], not {ratio}")));
        }
        let (a, b) = (descriptor_set(&desc1)?, descriptor_set(&desc2)?);
        if a.dim != b.dim && !a.is_empty() && !b.is_empty() {
            return Err(invalid(format!("descriptor dimensions differ: {} and {}", a.dim, b.dim)));
        }
        let matches = py.detach(|| self.matcher.mutual_nearest(&a, &b, ratio)).map_err(engine_error)?;
        Ok(pairs_array(&matches).into_pyarray(py))
    }

    fn __repr__(&self) -> String {
        format!("strek.Session({})", self.description)
    }
}

/// A numpy image (H x W, or H x W x C with C 1-4; uint8, uint16, or float in [0, 1]) or a path.
fn to_image(object: &Bound<'_, PyAny>) -> PyResult<Image> {
    if let Ok(a) = object.extract::<PyReadonlyArrayDyn<'_, u8>>() {
        let (width, height, channels) = image_shape(a.shape())?;
        return Ok(Image { width, height, channels, samples: Samples::U8(a.as_array().iter().copied().collect()) });
    }
    if let Ok(a) = object.extract::<PyReadonlyArrayDyn<'_, u16>>() {
        let (width, height, channels) = image_shape(a.shape())?;
        return Ok(Image { width, height, channels, samples: Samples::U16(a.as_array().iter().copied().collect()) });
    }
    let floats: Option<(Vec<usize>, Vec<f64>)> = if let Ok(a) = object.extract::<PyReadonlyArrayDyn<'_, f32>>() {
        Some((a.shape().to_vec(), a.as_array().iter().map(|&v| v as f64).collect()))
    } else if let Ok(a) = object.extract::<PyReadonlyArrayDyn<'_, f64>>() {
        Some((a.shape().to_vec(), a.as_array().iter().copied().collect()))
    } else {
        None
    };
    if let Some((shape, values)) = floats {
        let (width, height, channels) = image_shape(&shape)?;
        return Ok(Image { width, height, channels, samples: Samples::U16(unit_floats_to_u16(&values)?) });
    }
    if let Ok(path) = object.extract::<PathBuf>() {
        return Image::open(&path).map_err(engine_error);
    }
    let kind = object.get_type().name().map(|n| n.to_string()).unwrap_or_else(|_| "?".into());
    let dtype = object.getattr("dtype").map(|d| format!(" of dtype {d}")).unwrap_or_default();
    Err(invalid(format!(
        "an image must be a numpy array (uint8, uint16 or float in [0, 1]; H x W or H x W x 1-4) or a path, not {kind}{dtype}"
    )))
}

/// (width, height, channels) of an H x W or H x W x C array.
fn image_shape(shape: &[usize]) -> PyResult<(u32, u32, u32)> {
    let (h, w, c) = match *shape {
        [h, w] => (h, w, 1),
        [h, w, c] if (1..=4).contains(&c) => (h, w, c),
        _ => return Err(invalid(format!("an image array must be H x W or H x W x C with C in 1..4, not of shape {shape:?}"))),
    };
    let side = |n: usize| u32::try_from(n).map_err(|_| invalid(format!("image side {n} is too large")));
    Ok((side(w)?, side(h)?, c as u32))
}

/// Floats in [0, 1] as 16-bit samples (round(v * 65535)); NaN, infinities and values outside are errors.
fn unit_floats_to_u16(values: &[f64]) -> PyResult<Vec<u16>> {
    if let Some(bad) = values.iter().find(|v| !(0.0..=1.0).contains(*v)) {
        return Err(invalid(format!("float images must hold values in [0, 1]; found {bad}")));
    }
    Ok(values.iter().map(|v| (v * 65535.0).round() as u16).collect())
}

/// The features as a dict of numpy arrays, which take over their vectors.
fn features_dict(py: Python<'_>, f: Features) -> PyResult<Bound<'_, PyDict>> {
    let n = f.len();
    let d = PyDict::new(py);
    let keypoints = Array2::from_shape_vec((n, 2), f.keypoints.into_iter().flatten().collect()).expect("n x 2");
    d.set_item("keypoints", keypoints.into_pyarray(py))?;
    d.set_item("scores", Array1::from(f.scores).into_pyarray(py))?;
    d.set_item("orientations", Array1::from(f.orientations).into_pyarray(py))?;
    d.set_item("scales", Array1::from(f.scales).into_pyarray(py))?;
    d.set_item("descriptors", Array2::from_shape_vec((n, f.dim), f.descriptors).expect("n x dim").into_pyarray(py))?;
    d.set_item("image_size", (f.image_size[0], f.image_size[1]))?;
    Ok(d)
}

/// Features read back from an object with the attributes of `strek.Features` (or a dict with those keys).
fn features_from(object: &Bound<'_, PyAny>) -> PyResult<Features> {
    let field = |name: &str| -> PyResult<Bound<'_, PyAny>> {
        match object.cast::<PyDict>() {
            Ok(dict) => dict.get_item(name)?.ok_or_else(|| invalid(format!("features lack {name:?}"))),
            Err(_) => object.getattr(name),
        }
    };
    let keypoints: PyReadonlyArray2<'_, f32> = field("keypoints")?.extract()?;
    let descriptors: PyReadonlyArray2<'_, f32> = field("descriptors")?.extract()?;
    let vector = |name: &str| -> PyResult<Vec<f32>> { field(name)?.extract::<Vec<f32>>() };
    let (scores, orientations, scales) = (vector("scores")?, vector("orientations")?, vector("scales")?);
    let image_size: (u32, u32) = field("image_size")?.extract()?;
    let n = keypoints.shape()[0];
    if keypoints.shape()[1] != 2 || descriptors.shape()[0] != n || [scores.len(), orientations.len(), scales.len()] != [n; 3] {
        return Err(invalid(format!(
            "features of inconsistent shapes: keypoints {:?}, descriptors {:?}, {} scores, {} orientations, {} scales",
            keypoints.shape(),
            descriptors.shape(),
            scores.len(),
            orientations.len(),
            scales.len()
        )));
    }
    let keypoints: Vec<f32> = keypoints.as_array().iter().copied().collect();
    Ok(Features {
        image_size: [image_size.0, image_size.1],
        keypoints: keypoints.chunks_exact(2).map(|p| [p[0], p[1]]).collect(),
        scores,
        orientations,
        scales,
        descriptors: descriptors.as_array().iter().copied().collect(),
        dim: descriptors.shape()[1],
    })
}

/// Descriptors alone, as the matcher takes them.
fn descriptor_set(d: &PyReadonlyArray2<'_, f32>) -> PyResult<Features> {
    let (n, dim) = (d.shape()[0], d.shape()[1]);
    let mut f = Features::empty([0, 0], dim);
    f.keypoints = vec![[0.0; 2]; n];
    f.scores = vec![0.0; n];
    f.orientations = vec![0.0; n];
    f.scales = vec![1.0; n];
    f.descriptors = d.as_array().iter().copied().collect();
    if let Some(bad) = f.descriptors.iter().find(|v| !v.is_finite()) {
        return Err(invalid(format!("descriptors must be finite; found {bad}")));
    }
    Ok(f)
}

fn pairs_array(pairs: &[(usize, usize)]) -> Array2<i64> {
    Array2::from_shape_vec((pairs.len(), 2), pairs.iter().flat_map(|&(a, b)| [a as i64, b as i64]).collect()).expect("k x 2")
}

fn pairs_from(matches: &PyReadonlyArray2<'_, i64>, n1: usize, n2: usize) -> PyResult<Vec<(usize, usize)>> {
    if matches.shape()[1] != 2 && matches.shape()[0] != 0 {
        return Err(invalid(format!("matches must be K x 2, not {:?}", matches.shape())));
    }
    let flat: Vec<i64> = matches.as_array().iter().copied().collect();
    flat.chunks_exact(2)
        .map(|p| match (usize::try_from(p[0]), usize::try_from(p[1])) {
            (Ok(a), Ok(b)) if a < n1 && b < n2 => Ok((a, b)),
            _ => Err(invalid(format!("match ({}, {}) is outside the {n1} x {n2} keypoints", p[0], p[1]))),
        })
        .collect()
}

fn colmap_options(camera: &str, min_inliers: usize) -> PyResult<Options> {
    Ok(Options { camera: camera.parse::<Camera>().map_err(engine_error)?, min_inliers, ..Default::default() })
}

/// Verifies one pair's matches as `strek colmap` does (F, and E where `camera` gives intrinsics); `index` is the
/// pair's position in the run's pair list, which seeds its RANSAC. Returns a dict: config (COLMAP's two-view
/// configuration: 1 failed, 2 calibrated, 3 uncalibrated), inliers (K x 2), F and E (3 x 3 or None).
#[pyfunction]
#[pyo3(signature = (features1, features2, matches, index, camera = "auto", min_inliers = 15))]
fn verify_pair<'py>(
    py: Python<'py>,
    features1: &Bound<'py, PyAny>,
    features2: &Bound<'py, PyAny>,
    matches: PyReadonlyArray2<'py, i64>,
    index: usize,
    camera: &str,
    min_inliers: usize,
) -> PyResult<Bound<'py, PyDict>> {
    let (a, b) = (features_from(features1)?, features_from(features2)?);
    let matches = pairs_from(&matches, a.len(), b.len())?;
    let options = colmap_options(camera, min_inliers)?;
    let row = py.detach(|| {
        let (rows_a, rows_b) = (strek::colmap::keypoint_rows(&a), strek::colmap::keypoint_rows(&b));
        strek::colmap::verify_pair(&rows_a, &rows_b, &matches, &options, index)
    });
    let d = PyDict::new(py);
    d.set_item("config", row.config as i32)?;
    let inliers: Vec<(usize, usize)> = row.inliers.iter().map(|&(i, j)| (i as usize, j as usize)).collect();
    d.set_item("inliers", pairs_array(&inliers).into_pyarray(py))?;
    let matrix = |m: Option<strek::geometry::Mat3>| m.map(|m| Array2::from_shape_fn((3, 3), |(r, c)| m[r][c]).into_pyarray(py));
    d.set_item("F", matrix(row.fundamental))?;
    d.set_item("E", matrix(row.essential))?;
    Ok(d)
}

/// A COLMAP database written as `strek colmap` writes it, from features and verified matches made elsewhere.
#[pyclass(name = "ColmapWriter", module = "strek._strek")]
struct PyColmapWriter {
    /// `None` once finished.
    open: Mutex<Option<OpenDatabase>>,
}

/// The writer and each image's keypoint count by its id, against which pairs' indices are checked.
struct OpenDatabase {
    writer: Writer,
    keypoints: HashMap<i64, usize>,
}

#[pymethods]
impl PyColmapWriter {
    /// Starts the database at `path` (which must not exist; nothing appears there before `finish`).
    #[new]
    #[pyo3(signature = (path, camera = "auto"))]
    fn new(path: PathBuf, camera: &str) -> PyResult<Self> {
        let camera = camera.parse::<Camera>().map_err(engine_error)?;
        let writer = Writer::create(&path, camera).map_err(engine_error)?;
        Ok(PyColmapWriter { open: Mutex::new(Some(OpenDatabase { writer, keypoints: HashMap::new() })) })
    }

    /// Writes an image (its name relative to the image folder) and its features; returns its image id.
    fn add_image(&self, name: &str, features: &Bound<'_, PyAny>) -> PyResult<i64> {
        let features = features_from(features)?;
        self.with(|db| {
            let (id, _) = db.writer.add_image(name, &features).map_err(engine_error)?;
            db.keypoints.insert(id, features.len());
            Ok(id)
        })
    }

    /// Writes a pair's matches and the dict `verify_pair` returned for them.
    fn add_pair(&self, image1: i64, image2: i64, matches: PyReadonlyArray2<'_, i64>, geometry: &Bound<'_, PyDict>) -> PyResult<()> {
        self.with(|db| {
            let (Some(&n1), Some(&n2)) = (db.keypoints.get(&image1), db.keypoints.get(&image2)) else {
                return Err(invalid(format!("image ids {image1} and {image2}: add both images first")));
            };
            let matches = pairs_from(&matches, n1, n2)?;
            let row = two_view_row(geometry, n1, n2)?;
            db.writer.add_pair(image1, image2, &matches, &row).map_err(engine_error)
        })
    }

    /// Commits the database and moves it into place.
    fn finish(&self) -> PyResult<()> {
        let db = self.open.lock().expect("database lock").take().ok_or_else(|| invalid("the database is already finished".into()))?;
        db.writer.finish().map_err(engine_error)
    }
}

impl PyColmapWriter {
    fn with<T>(&self, f: impl FnOnce(&mut OpenDatabase) -> PyResult<T>) -> PyResult<T> {
        let mut guard = self.open.lock().expect("database lock");
        f(guard.as_mut().ok_or_else(|| invalid("the database is already finished".into()))?)
    }
}

fn two_view_row(geometry: &Bound<'_, PyDict>, n1: usize, n2: usize) -> PyResult<TwoViewRow> {
    let item = |name: &str| geometry.get_item(name)?.ok_or_else(|| invalid(format!("the geometry lacks {name:?}")));
    let config = match item("config")?.extract::<i32>()? {
        1 => Configuration::Degenerate,
        2 => Configuration::Calibrated,
        3 => Configuration::Uncalibrated,
        other => return Err(invalid(format!("unknown two-view configuration {other}"))),
    };
    let inliers: PyReadonlyArray2<'_, i64> = item("inliers")?.extract()?;
    let inliers = pairs_from(&inliers, n1, n2)?.into_iter().map(|(a, b)| (a as u32, b as u32)).collect();
    let matrix = |name: &str| -> PyResult<Option<strek::geometry::Mat3>> {
        let value = item(name)?;
        if value.is_none() {
            return Ok(None);
        }
        let m: PyReadonlyArray2<'_, f64> = value.extract()?;
        if m.shape() != [3, 3] {
            return Err(invalid(format!("{name} must be 3 x 3, not {:?}", m.shape())));
        }
        let a = m.as_array();
        Ok(Some(std::array::from_fn(|r| std::array::from_fn(|c| a[[r, c]]))))
    };
    Ok(TwoViewRow { config, inliers, fundamental: matrix("F")?, essential: matrix("E")? })
}

/// The pairs (i, j), i < j, of `n` images that `pairs` ("exhaustive" or "sequential:N") names, in `strek colmap`'s
/// order (which fixes each pair's RANSAC seed).
#[pyfunction]
fn pair_list(pairs: &str, n: usize) -> PyResult<Vec<(usize, usize)>> {
    Ok(pairs.parse::<strek::colmap::Pairs>().map_err(engine_error)?.list(n))
}

/// The image files of a folder as `strek extract` finds them: (name relative to the folder, `/`-separated; path),
/// sorted by name.
#[pyfunction]
#[pyo3(signature = (folder, recursive = false))]
fn list_images(folder: PathBuf, recursive: bool) -> PyResult<Vec<(String, PathBuf)>> {
    let files = strek::image_io::list_images(&folder, recursive).map_err(engine_error)?;
    Ok(files.into_iter().map(|f| (f.name, f.path)).collect())
}

#[pymodule]
fn _strek(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PySession>()?;
    m.add_class::<PyColmapWriter>()?;
    m.add_function(wrap_pyfunction!(verify_pair, m)?)?;
    m.add_function(wrap_pyfunction!(pair_list, m)?)?;
    m.add_function(wrap_pyfunction!(list_images, m)?)?;
    m.add("StrekError", m.py().get_type::<StrekError>())?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
