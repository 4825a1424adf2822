//! The GPU extractor: images in, keypoints and descriptors out. Plans (buffers, bind groups, dispatches) are built
//! once per image size and reused; a batch goes to the GPU in one submission and only the selected keypoints and
//! their descriptors come back.

use crate::config::ModelConfig;
use crate::error::{Error, Result};
use crate::extract::{check_sizes, has_features, Config, Extract, Oversize, STAGES};
use crate::features::{Features, KeypointRecord};
use crate::gpu::{Dispatch, Gpu};
use crate::image_io::Image;
use crate::model::descriptor::{DescriptorGpu, DescriptorPlan};
use crate::model::detector::DetectorGpu;
use crate::model::{level_offsets, nms_settings, pyramid};
use crate::ops::nms_topk::NmsTopk;
use crate::ops::preprocess;
use crate::ops::Precision;
use crate::ops::sample::{sample_descriptors, Sampling};
use crate::weights::Weights;
use std::collections::HashMap;
use std::time::Instant;

/// Stage indices into `STAGES`; each GPU stage runs as one compute pass over every image of a batch.
const GRAY: usize = 0;
const PYRAMID: usize = 1;
const DETECTOR: usize = 2;
const NMS_TOPK: usize = 3;
const DESCRIPTOR: usize = 4;
const SAMPLING: usize = 5;

pub struct GpuExtractor {
    gpu: Gpu,
    precision: Precision,
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
    /// Dispatches per image of the last batch.
    dispatches: f64,
}

/// A begin and an end timestamp per GPU stage, resolved and read back with the keypoints.
struct StageTimer {
    queries: wgpu::QuerySet,
    resolved: wgpu::Buffer,
    staging: wgpu::Buffer,
}

impl StageTimer {
    const COUNT: u32 = 2 * STAGES.len() as u32;

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
    /// The conversion to gray by input format (channels, bits); the GRAY stage's dispatch.
    to_gray: HashMap<(u32, u32), Dispatch>,
    /// Dispatches of the later stages (`STAGES`); the GRAY entry stays empty.
    stages: [Vec<Dispatch>; STAGES.len()],
    keypoints: wgpu::Buffer,
    descriptors: wgpu::Buffer,
    staging: wgpu::Buffer,
    count: u32,
    _buffers: Vec<wgpu::Buffer>,
    _descriptor: DescriptorPlan,
}

/// One image of a batch: its input's index, its size and which of that size's plans runs it.
#[derive(Clone, Copy)]
struct Job {
    input: usize,
    size: (u32, u32),
    slot: usize,
}

impl GpuExtractor {
    pub fn new(gpu: &Gpu, weights: &Weights, options: Config) -> Result<Self> {
        let config = weights.config.clone();
        let max_keypoints = options.max_keypoints(&config)?;
        let precision = options.precision;
        if precision == Precision::F16 && !gpu.features.contains(wgpu::Features::SHADER_F16) {
            return Err(Error::Invalid(format!("f16 storage needs an adapter with SHADER_F16; {} has none", gpu.adapter)));
        }
        Ok(GpuExtractor {
            gpu: gpu.clone(),
            detector: DetectorGpu::upload(gpu, &weights.detector(), precision),
            descriptor: DescriptorGpu::upload(gpu, &weights.descriptor(), &config, precision),
            precision,
            config,
            max_keypoints,
            oversize: options.oversize,
            plans: HashMap::new(),
            timer: StageTimer::new(gpu),
            stage_times: Vec::new(),
            dispatches: 0.0,
        })
    }

    /// Seconds per stage of the last batch: "upload" and "readback" on the host clock (writing the inputs; mapping
    /// and copying the results after the GPU finished), the `STAGES` from timestamp queries where the adapter has
    /// them (else absent).
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
        check_sizes(images.iter().map(|i| (i.width, i.height)))?;
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
        if !matches!(refusal, Error::TooLarge { .. }) || self.oversize == Oversize::Refuse {
            return Err(refusal);
        }
        // the buffers grow with the scale (pixels, and pyramid levels as the short side passes their threshold):
        // bisect for the largest scale that fits
        let size = |s: f64| (((w as f64 * s) as u32).max(1), ((h as f64 * s) as u32).max(1));
        let (mut fits, mut over) = (0.0, 1.0);
        for _ in 0..40 {
            let mid = 0.5 * (fits + over);
            if self.check_fits(size(mid)).is_ok() {
                fits = mid;
            } else {
                over = mid;
            }
        }
        match self.check_fits(size(fits)) {
            Ok(()) => Ok(size(fits)),
            Err(_) => Err(refusal),
        }
    }

    fn check_fits(&self, (w, h): (u32, u32)) -> Result<()> {
        let gpu = &self.gpu;
        let levels = pyramid(&self.config, w, h);
        gpu.check_size("input", 8 * w as u64 * h as u64, w, h)?;
        gpu.check_size("pyramid", 4 * level_offsets(&levels).last().unwrap(), w, h)?;
        gpu.check_size("detector activation", self.detector.scratch_bytes(&levels), w, h)?;
        gpu.check_size("descriptor activation", self.descriptor.largest_buffer(w, h), w, h)
    }

    /// Extracts from a texture the host application rendered, without a round trip through the CPU. The texture
    /// needs `TEXTURE_BINDING` usage and a linear float-filterable colour format (Rgba8Unorm, Bgra8Unorm, ...).
    pub fn extract_texture(&mut self, texture: &wgpu::Texture) -> Result<Features> {
        let input = Input::Texture(texture);
        check_sizes([input.size()])?;
        Ok(self.run(&[input])?.remove(0))
    }

    /// One submission for all inputs; strek's GPU work runs inside error scopes (`Gpu::scoped`).
    fn run(&mut self, inputs: &[Input]) -> Result<Vec<Features>> {
        let dim = self.config.descriptor.dim;
        let mut results: Vec<Features> = inputs.iter().map(|i| Features::empty(i.size().into(), dim)).collect();
        let gpu = self.gpu.clone();
        let jobs = gpu.scoped(|| self.schedule(inputs))?;
        if jobs.is_empty() {
            return Ok(results);
        }
        let recorded: usize = jobs.iter().map(|j| 1 + self.plan(j).stages.iter().map(Vec::len).sum::<usize>()).sum();
        self.dispatches = recorded as f64 / jobs.len() as f64;
        let upload_start = Instant::now();
        let (index, upload) = gpu.scoped(|| {
            let textures = self.upload(&jobs, inputs)?;
            let upload = upload_start.elapsed().as_secs_f64();
            let encoder = self.encode(&jobs, inputs, &textures);
            Ok((gpu.queue.submit([encoder.finish()]), upload))
        })?;
        // wait for the GPU first, so that "readback" is the host's share (mapping and copying) alone
        gpu.wait(Some(index))?;
        let readback_start = Instant::now();
        let mut staging: Vec<(&wgpu::Buffer, u64)> = jobs.iter().map(|j| self.plan(j).readback()).collect();
        if let Some(t) = &self.timer {
            staging.push((&t.staging, 8 * StageTimer::COUNT as u64));
        }
        let mut bytes = gpu.read_staging(&staging)?;
        self.stage_times = vec![("upload", upload)];
        if self.timer.is_some() {
            let ticks = bytes.pop().expect("the timestamps were read");
            self.stage_times.extend(stage_seconds(&gpu, &ticks));
        }
        for (job, data) in jobs.iter().zip(bytes) {
            let (records, descriptors) = self.plan(job).decode(&data);
            results[job.input].push_records(&records, &descriptors);
        }
        self.stage_times.push(("readback", readback_start.elapsed().as_secs_f64()));
        Ok(results)
    }

    /// The jobs of a batch, with a plan for each (built on first use of a size); inputs too small for the model
    /// have no job and give empty features.
    fn schedule(&mut self, inputs: &[Input]) -> Result<Vec<Job>> {
        let mut jobs = Vec::new();
        let mut used: HashMap<(u32, u32), usize> = HashMap::new();
        for (index, input) in inputs.iter().enumerate() {
            let size = input.size();
            if !has_features(&self.config, size.0, size.1) {
                continue;
            }
            let slot = used.entry(size).or_insert(0);
            jobs.push(Job { input: index, size, slot: *slot });
            *slot += 1;
        }
        for (&size, &count) in &used {
            while self.plans.get(&size).map_or(0, Vec::len) < count {
                let plan = self.build_plan(size)?;
                self.plans.entry(size).or_default().push(plan);
            }
        }
        Ok(jobs)
    }

    fn plan(&self, job: &Job) -> &Plan {
        &self.plans[&job.size][job.slot]
    }

    /// Writes the images into their plans' input buffers (their conversion to gray is built once per format);
    /// returns the conversion dispatch of each texture input.
    fn upload(&mut self, jobs: &[Job], inputs: &[Input]) -> Result<HashMap<usize, Dispatch>> {
        let gpu = &self.gpu;
        let mut textures = HashMap::new();
        for job in jobs {
            let plan = &mut self.plans.get_mut(&job.size).expect("scheduled")[job.slot];
            match inputs[job.input] {
                Input::Image(image) => {
                    gpu.queue.write_buffer(&plan.raw, 0, &image.packed_words());
                    let format = (image.channels, image.bits());
                    if !plan.to_gray.contains_key(&format) {
                        let d = preprocess::to_gray(gpu, image, self.config.input, &plan.raw, &plan.gray);
                        plan.to_gray.insert(format, d);
                    }
                }
                Input::Texture(texture) => {
                    textures.insert(job.input, preprocess::texture_to_gray(gpu, texture, self.config.input, &plan.gray)?);
                }
            }
        }
        Ok(textures)
    }

    /// One pass per stage over all jobs (stages of one job depend on each other, jobs do not), so that
    /// timestamps at the passes' ends time the stages; then the copies of the results to the staging buffers.
    fn encode(&self, jobs: &[Job], inputs: &[Input], textures: &HashMap<usize, Dispatch>) -> wgpu::CommandEncoder {
        let mut encoder = self.gpu.device.create_command_encoder(&Default::default());
        for (stage, name) in STAGES.iter().enumerate() {
            let timestamp_writes = self.timer.as_ref().map(|t| t.writes(stage));
            let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor { label: Some(name), timestamp_writes });
            for job in jobs {
                let plan = self.plan(job);
                if stage == GRAY {
                    match inputs[job.input] {
                        Input::Image(image) => plan.to_gray[&(image.channels, image.bits())].record(&mut pass),
                        Input::Texture(_) => textures[&job.input].record(&mut pass),
                    }
                }
                plan.stages[stage].iter().for_each(|d| d.record(&mut pass));
            }
        }
        if let Some(t) = &self.timer {
            encoder.resolve_query_set(&t.queries, 0..StageTimer::COUNT, &t.resolved, 0);
            encoder.copy_buffer_to_buffer(&t.resolved, 0, &t.staging, 0, 8 * StageTimer::COUNT as u64);
        }
        for job in jobs {
            self.plan(job).copy_results(&mut encoder);
        }
        encoder
    }

    fn build_plan(&self, (w, h): (u32, u32)) -> Result<Plan> {
        let gpu = &self.gpu;
        let levels = pyramid(&self.config, w, h);
        let pixels = w as u64 * h as u64;
        let heat: u64 = levels.iter().map(|l| l.geom.hw as u64 * l.geom.hh as u64).sum();
        self.check_fits((w, h))?;
        let raw = gpu.storage("raw image", 8 * pixels);
        // level 0 is the gray image; the other levels follow it in the same buffer, so that one dispatch per layer
        // reads them all
        let offsets = level_offsets(&levels);
        let gray = gpu.storage("gray pyramid", 4 * offsets.last().unwrap());
        let ping = gpu.storage("detector ping", self.detector.scratch_bytes(&levels));
        let pong = gpu.storage("detector pong", self.detector.scratch_bytes(&levels));
        let scores = gpu.storage("scores", 4 * heat);
        let orientations = gpu.storage("orientations", 4 * heat);
        let mut buffers = vec![ping.clone(), pong.clone(), scores.clone(), orientations.clone()];
        let mut stages: [Vec<Dispatch>; STAGES.len()] = Default::default();
        for (level, &offset) in levels.iter().zip(&offsets) {
            if offset == 0 {
                continue; // level 0: the image itself
            }
            let tmp = gpu.storage("pyramid tmp", 4 * level.w as u64 * h as u64);
            stages[PYRAMID].extend(preprocess::resize_into(gpu, &gray, &tmp, (&gray, offset as u32), (w, h), (level.w, level.h)));
            buffers.push(tmp);
        }
        stages[DETECTOR] = self.detector.encode(gpu, &gray, &levels, (&ping, &pong), (&scores, &orientations));
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
            Sampling::new(&self.config, (w, h), descriptor.map_size),
            &descriptors,
        ));
        let staging = gpu.staging("readback", KeypointRecord::BYTES * select.count as u64 + descriptors.size());
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
    fn keypoint_bytes(&self) -> u64 {
        KeypointRecord::BYTES * self.count as u64
    }

    /// The staging buffer and how many of its bytes hold results: the keypoint records, then the descriptors.
    fn readback(&self) -> (&wgpu::Buffer, u64) {
        (&self.staging, self.keypoint_bytes() + self.descriptors.size())
    }

    fn copy_results(&self, encoder: &mut wgpu::CommandEncoder) {
        encoder.copy_buffer_to_buffer(&self.keypoints, 0, &self.staging, 0, self.keypoint_bytes());
        encoder.copy_buffer_to_buffer(&self.descriptors, 0, &self.staging, self.keypoint_bytes(), self.descriptors.size());
    }

    fn decode(&self, data: &[u8]) -> (Vec<KeypointRecord>, Vec<f32>) {
        let (records, descriptors) = data.split_at(self.keypoint_bytes() as usize);
        (bytemuck::pod_collect_to_vec(records), bytemuck::pod_collect_to_vec(descriptors))
    }
}

/// Seconds of each stage from its pass's begin and end timestamps.
fn stage_seconds(gpu: &Gpu, bytes: &[u8]) -> Vec<(&'static str, f64)> {
    let ticks: Vec<u64> = bytemuck::pod_collect_to_vec(bytes);
    let period = gpu.queue.get_timestamp_period() as f64 * 1e-9;
    STAGES.iter().enumerate().map(|(s, &name)| (name, ticks[2 * s + 1].saturating_sub(ticks[2 * s]) as f64 * period)).collect()
}

impl Extract for GpuExtractor {
    fn extract_batch(&mut self, images: &[Image]) -> Result<Vec<Features>> {
        GpuExtractor::extract_batch(self, images)
    }

    fn working_size(&self, size: (u32, u32)) -> Result<(u32, u32)> {
        GpuExtractor::working_size(self, size)
    }

    fn describe(&self) -> String {
        format!("GPU: {}{}", self.gpu.adapter, self.precision.note())
    }

    fn stage_times(&self) -> Vec<(&'static str, f64)> {
        GpuExtractor::stage_times(self).to_vec()
    }

    fn dispatches_per_image(&self) -> Option<f64> {
        Some(self.dispatches)
    }
}
