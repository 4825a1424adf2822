//! What an evaluation produced: every per-pair number, the means per set, method and angle, as JSON and as the
//! tables `strek eval` prints.

use super::dataset::DataSet;
use super::metrics::{Means, PairMetrics, REPEATABILITY_THRESHOLD, THRESHOLDS};
use super::{Method, Options};
use crate::error::Result;
use crate::matcher::Matcher;
use serde::Serialize;
use std::fmt::Write;
use std::path::Path;

#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub protocol: ProtocolInfo,
    pub methods: Vec<MethodInfo>,
    pub datasets: Vec<DataSetReport>,
}

#[derive(Clone, Debug, Serialize)]
pub struct ProtocolInfo {
    pub top_k: usize,
    pub max_side: Option<u32>,
    pub ratio_test: Option<f32>,
    /// Matching among all top-k keypoints rather than the visible ones.
    pub match_all: bool,
    pub repeatability_threshold: f64,
    pub thresholds: [f64; 3],
    pub ransac_threshold: f64,
    pub ransac_confidence: f64,
    pub ransac_max_iterations: usize,
    pub rotation_angles: Vec<f64>,
    pub matcher: String,
}

#[derive(Clone, Debug, Serialize)]
pub struct MethodInfo {
    pub name: String,
    pub source: String,
}

#[derive(Clone, Debug, Serialize)]
pub struct PairRecord {
    pub method: String,
    pub sequence: String,
    /// `1-k`, or `1-1_rot<angle>` for the rotation sweep.
    pub pair: String,
    /// Rotation of the sweep in degrees; null for the set's own pairs.
    pub angle: Option<f64>,
    /// Evaluated sizes of both images [w, h].
    pub sizes: [[u32; 2]; 2],
    #[serde(flatten)]
    pub metrics: PairMetrics,
}

#[derive(Clone, Debug, Serialize)]
pub struct MethodMeans {
    pub method: String,
    /// Rotation angle; null for the set's own pairs, and for the mean over the non-zero angles of the sweep (with
    /// `sweep_mean` true).
    pub angle: Option<f64>,
    pub sweep_mean: bool,
    #[serde(flatten)]
    pub means: Means,
}

#[derive(Clone, Debug, Serialize)]
pub struct DataSetReport {
    pub name: String,
    pub root: String,
    pub sequences: usize,
    /// Means over the set's own pairs, one per method.
    pub means: Vec<MethodMeans>,
    /// Means of the rotation sweep per angle and method, then over the non-zero angles per method.
    pub rotation_means: Vec<MethodMeans>,
    pub pairs: Vec<PairRecord>,
}

impl Report {
    pub fn new(options: &Options, methods: &[Method], matcher: &Matcher) -> Self {
        let p = &options.protocol;
        Report {
            protocol: ProtocolInfo {
                top_k: p.top_k,
                max_side: options.max_side,
                ratio_test: (p.ratio < 1.0).then_some(p.ratio),
                match_all: p.match_all,
                repeatability_threshold: REPEATABILITY_THRESHOLD,
                thresholds: THRESHOLDS,
                ransac_threshold: p.ransac.threshold,
                ransac_confidence: p.ransac.confidence,
                ransac_max_iterations: p.ransac.max_iterations,
                rotation_angles: options.angles.clone(),
                matcher: matcher.describe(),
            },
            methods: methods.iter().map(|m| MethodInfo { name: m.name.clone(), source: m.describe() }).collect(),
            datasets: Vec::new(),
        }
    }

    pub fn write_json(&self, path: &Path) -> Result<()> {
        let text = serde_json::to_string_pretty(self).expect("the report serialises");
        crate::features::write_atomically(path, text.as_bytes())
    }

    /// The tables: per set, the set's pairs (one row per method), then the rotation sweep (one row per angle and
    /// method, and the mean over the non-zero angles).
    pub fn tables(&self) -> String {
        let mut out = String::new();
        let p = &self.protocol;
        let mut side = p.max_side.map_or("full size".to_string(), |s| format!("max side {s}"));
        if p.match_all {
            side.push_str(", matching all keypoints");
        }
        for set in &self.datasets {
            let pairs = set.means.first().map_or(0, |m| m.means.pairs);
            if pairs > 0 {
                let _ = writeln!(out, "{}: {} pairs in {} sequences, top {} keypoints, {side}", set.name, pairs, set.sequences, p.top_k);
                out.push_str(&table(&set.means, false));
                out.push('\n');
            }
            if !set.rotation_means.is_empty() {
                let _ = writeln!(
                    out,
                    "{}: rotation sweep, image 1 against itself rotated on an expanded canvas ({} sequences)",
                    set.name, set.sequences
                );
                out.push_str(&table(&set.rotation_means, true));
                out.push('\n');
            }
        }
        out
    }
}

fn table(rows: &[MethodMeans], with_angle: bool) -> String {
    let width = rows.iter().map(|r| r.method.len()).max().unwrap_or(6).max(6);
    let mut out = String::new();
    if with_angle {
        out.push_str("angle  ");
    }
    let _ = writeln!(
        out,
        "{:<width$}  rep@3  mma@1  mma@3  mma@5  hacc@1  hacc@3  hacc@5  matches  keypoints",
        "method"
    );
    for r in rows {
        if with_angle {
            let angle = match (r.angle, r.sweep_mean) {
                (Some(a), _) => format!("{a}"),
                (None, true) => "mean".into(),
                (None, false) => String::new(),
            };
            let _ = write!(out, "{angle:<5}  ");
        }
        let m = &r.means;
        let _ = writeln!(
            out,
            "{:<width$}  {:.3}  {:.3}  {:.3}  {:.3}  {:.3}   {:.3}   {:.3}   {:>7.1}  {:>9.1}",
            r.method, m.repeatability, m.mma[0], m.mma[1], m.mma[2], m.hacc[0], m.hacc[1], m.hacc[2], m.matches, m.keypoints
        );
    }
    out
}

impl DataSetReport {
    pub fn new(set: &DataSet, sequences: usize, pairs: Vec<PairRecord>, methods: &[Method], angles: &[f64]) -> Self {
        let names: Vec<&str> = methods.iter().map(|m| m.name.as_str()).collect();
        let means = names
            .iter()
            .map(|&m| {
                let own = pairs.iter().filter(|r| r.method == m && r.angle.is_none()).map(|r| &r.metrics);
                MethodMeans { method: m.into(), angle: None, sweep_mean: false, means: Means::of(own) }
            })
            .collect();
        let mut rotation_means = Vec::new();
        for &angle in angles {
            for &m in &names {
                let at = pairs.iter().filter(|r| r.method == m && r.angle == Some(angle)).map(|r| &r.metrics);
                rotation_means.push(MethodMeans { method: m.into(), angle: Some(angle), sweep_mean: false, means: Means::of(at) });
            }
        }
        if angles.iter().any(|&a| a != 0.0) {
            for &m in &names {
                // angle 0 is a sanity check, not a rotation: it stays out of the mean
                let swept = pairs.iter().filter(|r| r.method == m && r.angle.is_some_and(|a| a != 0.0)).map(|r| &r.metrics);
                rotation_means.push(MethodMeans { method: m.into(), angle: None, sweep_mean: true, means: Means::of(swept) });
            }
        }
        DataSetReport { name: set.name.clone(), root: set.root.display().to_string(), sequences, means, rotation_means, pairs }
    }
}
