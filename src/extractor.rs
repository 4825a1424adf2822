//! The extractor: images in, keypoints and descriptors out. Plans (buffers, bind groups, dispatches) are built
//! once per image size and reused; a batch goes to the GPU in one submission and only the selected keypoints and
//! their descriptors come back.

use crate::config::ModelConfig;
use crate::error::{Error, Result};
use crate::features::Features;
use crate::gpu::{Dispatch, Gpu};
use crate::image_io::Image;
use crate::model::descriptor::{DescriptorGpu, DescriptorPlan};
use crate::model::detector::DetectorGpu;
use crate::model::{nms_settings, pyramid, Level};
use crate::ops::nms_topk::{KeypointRecord, NmsTopk};
use crate::ops::preprocess;
use crate::ops::sample::sample_descriptors;
use crate::weights::Weights;
use std::collections::HashMap;
use std::time::Instant;

/// GPU stages of an extraction in execution order; each runs as one compute pass over every image of a batch.
pub const GPU_STAGES: [&str; 5] = ["pyramid", "detector", "nms_topk", "descriptor", "sampling"];
const PYRAMID: usize = 0;
const DETECTOR: usize = 1;
const NMS_TOPK: usize = 2;
const DESCRIPTOR: usize = 3;
const SAMPLING: usize = 4;

/// Options of an extractor; `None` takes the value of the weights' config.
#[derive(Clone, Debug, Default)]
pub struct Config {
    pub max_keypoints: Option<usize>,
    pub oversize: Oversize,
}

/// What happens to an image whose buffers would exceed the adapter's limits (`Extractor::working_size`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Oversize {
    /// Extract from the image shrunk (triangle filter, aspect kept) to the largest size whose buffers fit;
    /// keypoints and scales come back in the original image's pixels. The pyramid then starts at the shrunk size,
    /// so detail finer than the shrunk pixel is lost; we chose this over tiling because the pyramid's coarse levels
    /// and the descriptor need the whole image, and tiles would need overlaps of the receptive field at every level.
    #[default]
    Downscale,
    /// Fail with `Error::TooLarge`.
    Refuse,
}

pub struct Extractor {
    gpu: Gpu,
    config: ModelConfig,
    max_keypoints: usize,
    oversize: Oversize,
    detector: DetectorGpu,
    descriptor: DescriptorGpu,
    /// Plans by image size; a batch with several images of one size uses several.
    plans: HashMap<(u32, u32), Vec<Plan>>,
    /// Timestamp queries around each stage's pass, where the adapter has them.
    timer: Option<StageTimer>,
    /// Seconds per stage of the last batch: upload and readback on the host clock, GPU stages from timestamps.
    stage_times: Vec<(&'static str, f64)>,
}

/// A begin and an end timestamp per GPU stage, resolved and read back with the keypoints.
struct StageTimer {
    queries: wgpu::QuerySet,
    resolved: wgpu::Buffer,
    staging: wgpu::Buffer,
}

impl StageTimer {
    const COUNT: u32 = 2 * GPU_STAGES.len() as u32;

    fn new(gpu: &Gpu) -> Option<Self> {
        if !gpu.features.contains(wgpu::Features::TIMESTAMP_QUERY) {
            return None;
        }
        let queries = gpu.device.create_query_set(&wgpu::QuerySetDescriptor {
            label: Some("stage timestamps"),
            ty: wgpu::QueryType::Timestamp,
            count: Self::COUNT,
        });
        let resolved = gpu.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("resolved timestamps"),
            size: 8 * Self::COUNT as u64,
            usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
            mapped_at_creation: false,
        });
        Some(StageTimer { queries, resolved, staging: gpu.staging("timestamps readback", 8 * Self::COUNT as u64) })
    }

    fn writes(&self, stage: usize) -> wgpu::ComputePassTimestampWrites<'_> {
        wgpu::ComputePassTimestampWrites {
            query_set: &self.queries,
            beginning_of_pass_write_index: Some(2 * stage as u32),
            end_of_pass_write_index: Some(2 * stage as u32 + 1),
        }
    }
}

/// What an extraction starts from.
enum Input<'a> {
    Image(&'a Image),
    Texture(&'a wgpu::Texture),
}

impl Input<'_> {
    fn size(&self) -> (u32, u32) {
        match self {
            Input::Image(i) => (i.width, i.height),
            Input::Texture(t) => (t.width(), t.height()),
        }
    }
}

/// Everything needed to run one image of one size.
struct Plan {
    raw: wgpu::Buffer,
    gray: wgpu::Buffer,
    to_gray: HashMap<(u32, u32), Dispatch>,
    /// Dispatches by stage (`GPU_STAGES`); the input's conversion to gray precedes the pyramid stage.
    stages: [Vec<Dispatch>; GPU_STAGES.len()],
    keypoints: wgpu::Buffer,
    descriptors: wgpu::Buffer,
    staging: wgpu::Buffer,
    count: u32,
    _buffers: Vec<wgpu::Buffer>,
    _descriptor: DescriptorPlan,
}

impl Extractor {
    pub fn new(gpu: &Gpu, weights: &Weights, options: Config) -> Result<Self> {
        let config = weights.config.clone();
        let max_keypoints = options.max_keypoints.unwrap_or(config.inference.max_keypoints);
        if max_keypoints == 0 {
            return Err(Error::Invalid("max_keypoints must be at least 1".into()));
        }
        Ok(Extractor {
            gpu: gpu.clone(),
            detector: DetectorGpu::upload(gpu, &weights.detector()),
            descriptor: DescriptorGpu::upload(gpu, &weights.descriptor(), &config),
            config,
            max_keypoints,
            oversize: options.oversize,
            plans: HashMap::new(),
            timer: StageTimer::new(gpu),
            stage_times: Vec::new(),
        })
    }

    /// Seconds per stage of the last batch: "upload" and "readback" on the host clock (writing the inputs; mapping
    /// and copying the results after the GPU finished), the `GPU_STAGES` from timestamp queries where the adapter
    /// has them (else absent).
    pub fn stage_times(&self) -> &[(&'static str, f64)] {
        &self.stage_times
    }

    pub fn gpu(&self) -> &Gpu {
        &self.gpu
    }

    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    pub fn extract(&mut self, image: &Image) -> Result<Features> {
        Ok(self.extract_batch(std::slice::from_ref(image))?.remove(0))
    }

    /// Extracts every image with one submission to the GPU. Images over the adapter's limits are shrunk first or
    /// refused, as `Config::oversize` says.
    pub fn extract_batch(&mut self, images: &[Image]) -> Result<Vec<Features>> {
        let mut shrunk = Vec::with_capacity(images.len());
        for image in images {
            let size = self.working_size((image.width, image.height))?;
            shrunk.push((size != (image.width, image.height)).then(|| image.resized(size.0, size.1)));
        }
        let inputs: Vec<Input> =
            images.iter().zip(&shrunk).map(|(image, small)| Input::Image(small.as_ref().unwrap_or(image))).collect();
        let mut results = self.run(&inputs)?;
        for ((features, image), small) in results.iter_mut().zip(images).zip(&shrunk) {
            if small.is_some() {
                features.rescale_to([image.width, image.height]);
            }
        }
        Ok(results)
    }

    /// The size an image of `size` is extracted at: its own when every buffer fits the adapter's limits, else the
    /// largest size of the same aspect that fits (`Oversize::Downscale`) or `Error::TooLarge` (`Oversize::Refuse`).
    pub fn working_size(&self, (w, h): (u32, u32)) -> Result<(u32, u32)> {
        let refusal = match self.check_fits((w, h)) {
            Ok(()) => return Ok((w, h)),
            Err(e) => e,
        };
        let Error::TooLarge { bytes, limit, .. } = refusal else { return Err(refusal) };
        if self.oversize == Oversize::Refuse {
            return Err(refusal);
        }
        // buffers grow with the pixel count: start from the area ratio and shrink by 2 % until everything fits
        let mut s = (limit as f64 / bytes as f64).sqrt();
        loop {
            let size = (((w as f64 * s) as u32).max(1), ((h as f64 * s) as u32).max(1));
            if self.check_fits(size).is_ok() {
                return Ok(size);
            }
            if size == (1, 1) {
                return Err(refusal);
            }
            s *= 0.98;
        }
    }

    fn check_fits(&self, (w, h): (u32, u32)) -> Result<()> {
        let gpu = &self.gpu;
        gpu.check_size("input", 8 * w as u64 * h as u64, w, h)?;
        gpu.check_size("detector activation", 4 * self.detector.scratch_len(w, h), w, h)?;
        gpu.check_size("descriptor activation", self.descriptor.largest_buffer(w, h), w, h)
    }

    /// Extracts from a texture the host application rendered, without a round trip through the CPU. The texture
    /// needs `TEXTURE_BINDING` usage and a linear float-filterable colour format (Rgba8Unorm, Bgra8Unorm, ...).
    pub fn extract_texture(&mut self, texture: &wgpu::Texture) -> Result<Features> {
        Ok(self.run(&[Input::Texture(texture)])?.remove(0))
    }

    fn run(&mut self, inputs: &[Input]) -> Result<Vec<Features>> {
        let dim = self.config.descriptor.dim;
        let mut results: Vec<Features> = inputs.iter().map(|i| Features::empty(i.size().into(), dim)).collect();
        let mut jobs: Vec<(usize, (u32, u32), usize)> = Vec::new(); // (input, size, plan index)
        let mut used: HashMap<(u32, u32), usize> = HashMap::new();
        for (i, input) in inputs.iter().enumerate() {
            let size = input.size();
            if size.0 == 0 || size.1 == 0 {
                return Err(Error::Invalid(format!("image {i} is empty ({}x{})", size.0, size.1)));
            }
            if pyramid(&self.config, size.0, size.1).is_empty() {
                continue; // smaller than the receptive field: no keypoints
            }
            let slot = used.entry(size).or_insert(0);
            jobs.push((i, size, *slot));
            *slot += 1;
        }
        for (&size, &count) in &used {
            while self.plans.get(&size).map_or(0, Vec::len) < count {
                let plan = self.build_plan(size)?;
                self.plans.entry(size).or_default().push(plan);
            }
        }
        if jobs.is_empty() {
            return Ok(results);
        }
        let gpu = &self.gpu;
        let upload_start = Instant::now();
        // the first dispatch of each job turns its input into the plan's gray image
        let mut texture_dispatches = HashMap::new();
        for &(i, size, slot) in &jobs {
            let plan = &mut self.plans.get_mut(&size).unwrap()[slot];
            match inputs[i] {
                Input::Image(image) => {
                    gpu.queue.write_buffer(&plan.raw, 0, &image.packed_words());
                    let format = (image.channels, image.bits());
                    if !plan.to_gray.contains_key(&format) {
                        let d = preprocess::to_gray(gpu, image, self.config.input, &plan.raw, &plan.gray);
                        plan.to_gray.insert(format, d);
                    }
                }
                Input::Texture(texture) => {
                    let d = preprocess::texture_to_gray(gpu, texture, self.config.input, &plan.gray)?;
                    texture_dispatches.insert(i, d);
                }
            }
        }
        let upload = upload_start.elapsed().as_secs_f64();
        let mut encoder = gpu.device.create_command_encoder(&Default::default());
        // One pass per stage over all jobs (stages of one job depend on each other, jobs do not), so that
        // timestamps at the passes' ends time the stages.
        for (stage, name) in GPU_STAGES.iter().enumerate() {
            let timestamp_writes = self.timer.as_ref().map(|t| t.writes(stage));
            let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor { label: Some(name), timestamp_writes });
            for &(i, size, slot) in &jobs {
                let plan = &self.plans[&size][slot];
                if stage == PYRAMID {
                    match inputs[i] {
                        Input::Image(image) => plan.to_gray[&(image.channels, image.bits())].record(&mut pass),
                        Input::Texture(_) => texture_dispatches[&i].record(&mut pass),
                    }
                }
                plan.stages[stage].iter().for_each(|d| d.record(&mut pass));
            }
        }
        if let Some(t) = &self.timer {
            encoder.resolve_query_set(&t.queries, 0..StageTimer::COUNT, &t.resolved, 0);
            encoder.copy_buffer_to_buffer(&t.resolved, 0, &t.staging, 0, 8 * StageTimer::COUNT as u64);
        }
        for &(_, size, slot) in &jobs {
            let plan = &self.plans[&size][slot];
            let kp_bytes = 32 * plan.count as u64;
            encoder.copy_buffer_to_buffer(&plan.keypoints, 0, &plan.staging, 0, kp_bytes);
            encoder.copy_buffer_to_buffer(&plan.descriptors, 0, &plan.staging, kp_bytes, plan.descriptor_bytes(dim));
        }
        let index = gpu.queue.submit([encoder.finish()]);
        let mut staging: Vec<(&wgpu::Buffer, u64)> = jobs
            .iter()
            .map(|&(_, size, slot)| {
                let plan = &self.plans[&size][slot];
                (&plan.staging, 32 * plan.count as u64 + plan.descriptor_bytes(dim))
            })
            .collect();
        if let Some(t) = &self.timer {
            staging.push((&t.staging, 8 * StageTimer::COUNT as u64));
        }
        // wait for the GPU first, so that "readback" is the host's share (mapping and copying) alone
        gpu.wait(Some(index))?;
        let readback_start = Instant::now();
        let mut bytes = gpu.read_staging(&staging)?;
        self.stage_times = vec![("upload", upload)];
        if self.timer.is_some() {
            let ticks: Vec<u64> = bytemuck::pod_collect_to_vec(&bytes.pop().expect("the timestamps were read"));
            let period = gpu.queue.get_timestamp_period() as f64 * 1e-9;
            for (stage, name) in GPU_STAGES.iter().enumerate() {
                let (begin, end) = (ticks[2 * stage], ticks[2 * stage + 1]);
                self.stage_times.push((name, end.saturating_sub(begin) as f64 * period));
            }
        }
        for (&(i, size, slot), data) in jobs.iter().zip(bytes) {
            let count = self.plans[&size][slot].count as usize;
            let records: Vec<KeypointRecord> = bytemuck::pod_collect_to_vec(&data[..32 * count]);
            let descriptors: Vec<f32> = bytemuck::pod_collect_to_vec(&data[32 * count..]);
            results[i].push_records(&records, &descriptors);
        }
        self.stage_times.push(("readback", readback_start.elapsed().as_secs_f64()));
        Ok(results)
    }

    fn build_plan(&self, (w, h): (u32, u32)) -> Result<Plan> {
        let gpu = &self.gpu;
        let levels = pyramid(&self.config, w, h);
        let pixels = w as u64 * h as u64;
        let heat: u64 = levels.iter().map(|l| l.geom.hw as u64 * l.geom.hh as u64).sum();
        self.check_fits((w, h))?;
        let raw = gpu.storage("raw image", 8 * pixels);
        let gray = gpu.storage("gray", 4 * pixels);
        let ping = gpu.storage("detector ping", 4 * self.detector.scratch_len(w, h));
        let pong = gpu.storage("detector pong", 4 * self.detector.scratch_len(w, h));
        let scores = gpu.storage("scores", 4 * heat);
        let orientations = gpu.storage("orientations", 4 * heat);
        let mut buffers = vec![ping.clone(), pong.clone(), scores.clone(), orientations.clone()];
        let mut stages: [Vec<Dispatch>; GPU_STAGES.len()] = Default::default();
        for level in &levels {
            let input = if level.w == w && level.h == h {
                gray.clone()
            } else {
                let tmp = gpu.storage("pyramid tmp", 4 * level.w as u64 * h as u64);
                let image = gpu.storage("pyramid level", 4 * level.w as u64 * level.h as u64);
                stages[PYRAMID].extend(preprocess::resize(gpu, &gray, &tmp, &image, (w, h), (level.w, level.h)));
                buffers.extend([tmp, image.clone()]);
                image
            };
            let Level { w: lw, h: lh, geom } = *level;
            stages[DETECTOR].extend(self.detector.encode_level(gpu, &input, (lw, lh), &ping, &pong, &scores, &orientations, geom.offset));
        }
        let geoms: Vec<_> = levels.iter().map(|l| l.geom).collect();
        let select = NmsTopk::build(gpu, &geoms, &nms_settings(&self.config, self.max_keypoints), &scores, &orientations);
        stages[NMS_TOPK].extend(select.dispatches);
        let mut descriptor = self.descriptor.plan(gpu, &gray, (w, h));
        stages[DESCRIPTOR].append(&mut descriptor.dispatches);
        let dim = self.descriptor.dim as u32;
        let descriptors = gpu.storage("descriptors", 4 * (select.count * dim) as u64);
        stages[SAMPLING].push(sample_descriptors(
            gpu,
            &select.keypoints,
            select.count,
            &descriptor.map,
            descriptor.map_size,
            dim,
            self.descriptor.stride as f32,
            &descriptors,
        ));
        let staging = gpu.staging("readback", 32 * select.count as u64 + 4 * (select.count * dim) as u64);
        Ok(Plan {
            raw,
            gray,
            to_gray: HashMap::new(),
            stages,
            keypoints: select.keypoints,
            descriptors,
            staging,
            count: select.count,
            _buffers: buffers,
            _descriptor: descriptor,
        })
    }
}

impl Plan {
    fn descriptor_bytes(&self, dim: usize) -> u64 {
        4 * (self.count as usize * dim) as u64
    }
}
