//! The GPU context: adapter choice, device with the adapter's own limits, pipeline cache, and the few buffer and
//! dispatch helpers every op uses. The whole wgpu flow (instance, adapter, device, module, pipeline, bind group,
//! dispatch, copy, map, read) is in this file.

use crate::error::{Error, Result};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// A WGSL source file of `shaders/`.
#[derive(Clone, Copy, Debug)]
pub struct Shader {
    pub name: &'static str,
    pub source: &'static str,
}

/// How to pick an adapter. Environment variables fill what is not set: `STREK_BACKEND` (vulkan, metal, dx12, gl),
/// `STREK_ADAPTER` (a substring of the adapter name).
#[derive(Clone, Debug, Default)]
pub struct GpuOptions {
    pub backend: Option<String>,
    pub adapter: Option<String>,
    pub prefer_software: bool,
    /// Caps the largest buffer (and storage binding) below the adapter's own limit, to stay within a memory share
    /// or to see how strek behaves on a smaller device.
    pub max_buffer_bytes: Option<u64>,
}

#[derive(Clone, Debug)]
pub struct AdapterSummary {
    pub name: String,
    pub backend: String,
    pub device_type: String,
    pub driver: String,
    pub is_software: bool,
}

impl std::fmt::Display for AdapterSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({}, {}{})", self.name, self.backend, self.device_type, if self.is_software { ", software" } else { "" })?;
        if !self.driver.is_empty() {
            write!(f, ", driver {}", self.driver)?;
        }
        Ok(())
    }
}

/// Cheap to clone: every field is a shared handle.
#[derive(Clone)]
pub struct Gpu {
    pub device: wgpu::Device,
    pub queue: wgpu::Queue,
    pub adapter: AdapterSummary,
    pub limits: wgpu::Limits,
    pub features: wgpu::Features,
    modules: Arc<Mutex<HashMap<&'static str, wgpu::ShaderModule>>>,
    /// By shader, entry point and override constants (as text: `K=5,C_IN=16,...`).
    pipelines: Arc<Mutex<HashMap<(&'static str, &'static str, String), Arc<wgpu::ComputePipeline>>>>,
    lost: Arc<Mutex<Option<String>>>,
    errors: Arc<Mutex<Option<String>>>,
}

/// Features used when present, never required.
const OPTIONAL_FEATURES: wgpu::Features = wgpu::Features::TIMESTAMP_QUERY
    .union(wgpu::Features::SHADER_F16)
    .union(wgpu::Features::SUBGROUP);

fn parse_backends(name: &str) -> Result<wgpu::Backends> {
    Ok(match name.to_ascii_lowercase().as_str() {
        "vulkan" | "vk" => wgpu::Backends::VULKAN,
        "metal" => wgpu::Backends::METAL,
        "dx12" | "d3d12" => wgpu::Backends::DX12,
        "gl" | "gles" | "opengl" => wgpu::Backends::GL,
        "all" | "auto" => wgpu::Backends::all(),
        other => return Err(Error::Invalid(format!("unknown backend {other:?}: use vulkan, metal, dx12, gl or auto"))),
    })
}

fn summarize(info: &wgpu::AdapterInfo) -> AdapterSummary {
    AdapterSummary {
        name: info.name.clone(),
        backend: format!("{:?}", info.backend),
        device_type: format!("{:?}", info.device_type),
        driver: format!("{} {}", info.driver, info.driver_info).trim().to_string(),
        is_software: info.device_type == wgpu::DeviceType::Cpu,
    }
}

impl Gpu {
    /// Lists the adapters this machine offers (for `strek info`).
    pub fn adapters(options: &GpuOptions) -> Result<Vec<AdapterSummary>> {
        let (instance, backends) = Self::instance(options)?;
        let adapters = pollster::block_on(instance.enumerate_adapters(backends));
        Ok(adapters.iter().map(|a| summarize(&a.get_info())).collect())
    }

    fn instance(options: &GpuOptions) -> Result<(wgpu::Instance, wgpu::Backends)> {
        let backend = options.backend.clone().or_else(|| std::env::var("STREK_BACKEND").ok());
        let backends = match backend {
            Some(b) => parse_backends(&b)?,
            None => wgpu::Backends::all(),
        };
        let mut desc = wgpu::InstanceDescriptor::new_without_display_handle();
        desc.backends = backends;
        Ok((wgpu::Instance::new(desc), backends))
    }

    /// Picks an adapter: a named one if asked, else hardware before software (or the reverse with
    /// `prefer_software`), Vulkan/Metal/DX12 before GL.
    pub fn new(options: &GpuOptions) -> Result<Self> {
        let (instance, backends) = Self::instance(options)?;
        let mut adapters = pollster::block_on(instance.enumerate_adapters(backends));
        let wanted = options.adapter.clone().or_else(|| std::env::var("STREK_ADAPTER").ok());
        if let Some(name) = &wanted {
            let needle = name.to_ascii_lowercase();
            adapters.retain(|a| a.get_info().name.to_ascii_lowercase().contains(&needle));
        }
        let rank = |a: &wgpu::Adapter| {
            let info = a.get_info();
            let software = info.device_type == wgpu::DeviceType::Cpu;
            let kind = match info.device_type {
                wgpu::DeviceType::DiscreteGpu => 0,
                wgpu::DeviceType::IntegratedGpu => 1,
                wgpu::DeviceType::VirtualGpu | wgpu::DeviceType::Other => 2,
                wgpu::DeviceType::Cpu => 3,
            };
            let kind = if options.prefer_software && software { -1 } else { kind };
            (kind, (info.backend == wgpu::Backend::Gl) as i32)
        };
        adapters.sort_by_key(rank);
        let adapter = adapters.into_iter().next().ok_or_else(|| {
            Error::NoAdapter(match &wanted {
                Some(n) => format!(" whose name contains {n:?}"),
                None => String::new(),
            })
        })?;
        let summary = summarize(&adapter.get_info());
        let features = adapter.features() & OPTIONAL_FEATURES;
        let mut limits = adapter.limits();
        if let Some(cap) = options.max_buffer_bytes {
            let cap = cap.max(1 << 16);
            limits.max_buffer_size = limits.max_buffer_size.min(cap);
            limits.max_storage_buffer_binding_size = limits.max_storage_buffer_binding_size.min(cap);
        }
        let desc = wgpu::DeviceDescriptor {
            label: Some("strek"),
            required_features: features,
            required_limits: limits.clone(),
            experimental_features: wgpu::ExperimentalFeatures::disabled(),
            memory_hints: wgpu::MemoryHints::Performance,
            trace: wgpu::Trace::Off,
        };
        let (device, queue) = pollster::block_on(adapter.request_device(&desc))
            .map_err(|e| Error::DeviceRequest { adapter: summary.to_string(), reason: e.to_string() })?;
        Ok(Self::assemble(device, queue, summary, true))
    }

    /// Wraps a device and queue that the host application already owns. The host's uncaptured-error handler and
    /// device-lost callback stay as they are: strek's own work runs inside error scopes (`scoped`) instead.
    pub fn from_device(device: wgpu::Device, queue: wgpu::Queue, adapter_info: &wgpu::AdapterInfo) -> Self {
        Self::assemble(device, queue, summarize(adapter_info), false)
    }

    /// `owned`: strek opened the device, so its handlers are strek's to set.
    fn assemble(device: wgpu::Device, queue: wgpu::Queue, adapter: AdapterSummary, owned: bool) -> Self {
        let lost = Arc::new(Mutex::new(None));
        let errors = Arc::new(Mutex::new(None));
        if owned {
            let flag = lost.clone();
            device.set_device_lost_callback(move |reason, message| {
                *flag.lock().unwrap() = Some(format!("{reason:?}: {message}"));
            });
            // wgpu's default handler panics on a validation or out-of-memory error outside a scope; keep the first
            // one and report it as an error at the next wait instead.
            let sink = errors.clone();
            device.on_uncaptured_error(Arc::new(move |e: wgpu::Error| {
                sink.lock().unwrap().get_or_insert_with(|| e.to_string());
            }));
        }
        let limits = device.limits();
        let features = device.features();
        Gpu {
            device,
            queue,
            adapter,
            limits,
            features,
            modules: Default::default(),
            pipelines: Default::default(),
            lost,
            errors,
        }
    }

    /// Runs strek's GPU work (creating buffers and pipelines, recording, submitting) inside error scopes, so that
    /// its validation, out-of-memory and internal errors come back as this call's error, and never reach the
    /// handlers of a host application that shares the device.
    pub fn scoped<T>(&self, work: impl FnOnce() -> Result<T>) -> Result<T> {
        use wgpu::ErrorFilter::{Internal, OutOfMemory, Validation};
        let scopes = [OutOfMemory, Internal, Validation].map(|filter| self.device.push_error_scope(filter));
        let result = work();
        // scopes pop in reverse order of their pushes; running out of memory is reported before the validation
        // errors it causes (a buffer that could not be made is invalid where it is bound)
        let mut caught: Vec<wgpu::Error> = scopes.into_iter().rev().filter_map(|scope| pollster::block_on(scope.pop())).collect();
        match caught.pop() {
            Some(e) => Err(Error::Gpu(e.to_string())),
            None => result,
        }
    }

    /// The compute pipeline of one entry point, compiled once and cached.
    pub fn pipeline(&self, shader: Shader, entry: &'static str) -> Arc<wgpu::ComputePipeline> {
        self.pipeline_specialized(shader, entry, &[])
    }

    /// The pipeline of an entry point with values for the shader's override constants (one per layer shape).
    pub fn pipeline_specialized(&self, shader: Shader, entry: &'static str, constants: &[(&str, f64)]) -> Arc<wgpu::ComputePipeline> {
        let key = constants.iter().map(|(name, value)| format!("{name}={value}")).collect::<Vec<_>>().join(",");
        let mut pipelines = self.pipelines.lock().unwrap();
        if let Some(p) = pipelines.get(&(shader.name, entry, key.clone())) {
            return p.clone();
        }
        let mut modules = self.modules.lock().unwrap();
        let module = modules.entry(shader.name).or_insert_with(|| {
            self.device.create_shader_module(wgpu::ShaderModuleDescriptor {
                label: Some(shader.name),
                source: wgpu::ShaderSource::Wgsl(shader.source.into()),
            })
        });
        let pipeline = Arc::new(self.device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: Some(entry),
            layout: None,
            module,
            entry_point: Some(entry),
            compilation_options: wgpu::PipelineCompilationOptions { constants, ..Default::default() },
            cache: None,
        }));
        pipelines.insert((shader.name, entry, key), pipeline.clone());
        pipeline
    }

    /// Fails with a clear error when a buffer would exceed what the adapter can bind.
    pub fn check_size(&self, what: &'static str, bytes: u64, width: u32, height: u32) -> Result<()> {
        let limit = (self.limits.max_storage_buffer_binding_size as u64).min(self.limits.max_buffer_size);
        if bytes > limit {
            return Err(Error::TooLarge { width, height, what, bytes, limit });
        }
        Ok(())
    }

    /// A storage buffer (zeroed) of at least 4 bytes.
    pub fn storage(&self, label: &str, bytes: u64) -> wgpu::Buffer {
        self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size: bytes.max(4).next_multiple_of(4),
            usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        })
    }

    /// A storage buffer holding `data`.
    pub fn storage_with(&self, label: &str, data: &[u8]) -> wgpu::Buffer {
        let buffer = self.storage(label, data.len() as u64);
        self.queue.write_buffer(&buffer, 0, &pad4(data));
        buffer
    }

    pub fn uniform<T: bytemuck::Pod>(&self, label: &str, value: &T) -> wgpu::Buffer {
        let buffer = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size: std::mem::size_of::<T>().next_multiple_of(16) as u64,
            usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        self.queue.write_buffer(&buffer, 0, &pad4(bytemuck::bytes_of(value)));
        buffer
    }

    pub fn staging(&self, label: &str, bytes: u64) -> wgpu::Buffer {
        self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size: bytes.max(4).next_multiple_of(4),
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        })
    }

    /// One dispatch: pipeline, bind group from `(binding, buffer)` pairs, and the workgroup count.
    pub fn dispatch(
        &self,
        shader: Shader,
        entry: &'static str,
        bindings: &[(u32, &wgpu::Buffer)],
        workgroups: [u32; 3],
    ) -> Dispatch {
        self.dispatch_specialized(shader, entry, &[], bindings, workgroups)
    }

    /// `dispatch` of a pipeline specialised by override constants.
    pub fn dispatch_specialized(
        &self,
        shader: Shader,
        entry: &'static str,
        constants: &[(&str, f64)],
        bindings: &[(u32, &wgpu::Buffer)],
        workgroups: [u32; 3],
    ) -> Dispatch {
        let entries: Vec<wgpu::BindGroupEntry> = bindings
            .iter()
            .map(|(binding, buffer)| wgpu::BindGroupEntry { binding: *binding, resource: buffer.as_entire_binding() })
            .collect();
        let pipeline = self.pipeline_specialized(shader, entry, constants);
        self.bind(pipeline, entry, &entries, workgroups)
    }

    /// `dispatch` with any kind of resource (texture views too).
    pub fn dispatch_entries(
        &self,
        shader: Shader,
        entry: &'static str,
        entries: &[wgpu::BindGroupEntry],
        workgroups: [u32; 3],
    ) -> Dispatch {
        self.bind(self.pipeline(shader, entry), entry, entries, workgroups)
    }

    fn bind(&self, pipeline: Arc<wgpu::ComputePipeline>, entry: &'static str, entries: &[wgpu::BindGroupEntry], workgroups: [u32; 3]) -> Dispatch {
        let bind_group = self.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some(entry),
            layout: &pipeline.get_bind_group_layout(0),
            entries,
        });
        Dispatch { pipeline, bind_group, workgroups, entry }
    }

    /// Submits the encoder and waits; reports a lost device as an error.
    pub fn submit_and_wait(&self, encoder: wgpu::CommandEncoder) -> Result<()> {
        let index = self.queue.submit([encoder.finish()]);
        self.wait(Some(index))
    }

    /// Waits for a submission (or all work); an error recorded earlier (out of memory, validation, a lost device)
    /// is reported in preference to the wait's own failure, which is usually its consequence.
    pub fn wait(&self, index: Option<wgpu::SubmissionIndex>) -> Result<()> {
        let waited = self.device.poll(wgpu::PollType::Wait { submission_index: index, timeout: None });
        self.check_lost()?;
        waited.map(drop).map_err(|e| Error::Gpu(format!("waiting for the GPU: {e}")))
    }

    /// Reports a lost device, or the first validation or out-of-memory error since the last check.
    pub fn check_lost(&self) -> Result<()> {
        if let Some(reason) = self.lost.lock().unwrap().clone() {
            return Err(Error::DeviceLost(reason));
        }
        match self.errors.lock().unwrap().take() {
            Some(message) => Err(Error::Gpu(message)),
            None => Ok(()),
        }
    }

    /// Maps staging buffers after a submission and copies out their first `len` bytes each. Every buffer that was
    /// mapped is unmapped again, also when another one fails: a buffer left mapped could not be written by the next
    /// submission, and the extractor that owns it would be broken for good.
    pub fn read_staging(&self, buffers: &[(&wgpu::Buffer, u64)]) -> Result<Vec<Vec<u8>>> {
        let range = |len: u64| 0..len.max(4).next_multiple_of(4);
        let status: Arc<Mutex<Vec<Option<std::result::Result<(), wgpu::BufferAsyncError>>>>> =
            Arc::new(Mutex::new(vec![None; buffers.len()]));
        for (i, (buffer, len)) in buffers.iter().enumerate() {
            let status = status.clone();
            buffer.map_async(wgpu::MapMode::Read, range(*len), move |r| status.lock().unwrap()[i] = Some(r));
        }
        let waited = self.wait(None);
        // the callbacks run in whichever thread polls the device: when threads share it, another one's poll may run
        // ours a little after our wait returned, so wait for them all (the vector stays in place for them)
        let settled = || status.lock().unwrap().iter().all(Option::is_some);
        let start = std::time::Instant::now();
        while waited.is_ok() && !settled() && start.elapsed() < std::time::Duration::from_secs(60) {
            let _ = self.device.poll(wgpu::PollType::Poll);
            std::thread::yield_now();
        }
        let status = status.lock().unwrap().clone();
        // mapped, or still pending (unmapping cancels it); a buffer whose mapping failed is not touched
        let mapped: Vec<bool> = status.iter().map(|r| !matches!(r, Some(Err(_)))).collect();
        let unmap_all = || buffers.iter().zip(&mapped).filter(|(_, m)| **m).for_each(|((b, _), _)| b.unmap());
        if let Err(e) = waited {
            unmap_all();
            return Err(e);
        }
        if let Some(e) = status.iter().find_map(|r| r.as_ref().and_then(|r| r.as_ref().err())) {
            unmap_all();
            return Err(Error::Gpu(format!("reading results back: {e}")));
        }
        let copy = |(buffer, len): &(&wgpu::Buffer, u64)| -> Result<Vec<u8>> {
            let view = buffer.get_mapped_range(range(*len)).map_err(|e| Error::Gpu(format!("mapping results: {e:?}")))?;
            Ok(view[..*len as usize].to_vec())
        };
        let out = buffers.iter().map(copy).collect();
        unmap_all();
        out
    }

    /// Copies a storage buffer to the host (tests and debugging; the extractor never reads dense maps).
    pub fn read_buffer(&self, buffer: &wgpu::Buffer, bytes: u64) -> Result<Vec<u8>> {
        let staging = self.staging("read_buffer", bytes);
        let mut encoder = self.device.create_command_encoder(&Default::default());
        encoder.copy_buffer_to_buffer(buffer, 0, &staging, 0, bytes.max(4).next_multiple_of(4));
        self.queue.submit([encoder.finish()]);
        Ok(self.read_staging(&[(&staging, bytes)])?.remove(0))
    }

    pub fn read_f32(&self, buffer: &wgpu::Buffer, len: usize) -> Result<Vec<f32>> {
        let bytes = self.read_buffer(buffer, 4 * len as u64)?;
        Ok(bytemuck::pod_collect_to_vec(&bytes))
    }

    /// Runs dispatches in one compute pass and waits (tests of single ops).
    pub fn run(&self, dispatches: &[Dispatch]) -> Result<()> {
        let index = self.scoped(|| {
            let mut encoder = self.device.create_command_encoder(&Default::default());
            {
                let mut pass = encoder.begin_compute_pass(&Default::default());
                for d in dispatches {
                    d.record(&mut pass);
                }
            }
            Ok(self.queue.submit([encoder.finish()]))
        })?;
        self.wait(Some(index))
    }
}

/// A recorded dispatch; plans hold lists of them and replay them for every image of their size.
pub struct Dispatch {
    pipeline: Arc<wgpu::ComputePipeline>,
    bind_group: wgpu::BindGroup,
    workgroups: [u32; 3],
    pub entry: &'static str,
}

impl Dispatch {
    pub fn record(&self, pass: &mut wgpu::ComputePass<'_>) {
        pass.set_pipeline(&self.pipeline);
        pass.set_bind_group(0, &self.bind_group, &[]);
        pass.dispatch_workgroups(self.workgroups[0], self.workgroups[1], self.workgroups[2]);
    }
}

/// Workgroups covering `n` invocations of a 1-D kernel of `size` lanes, spread over x and y so that no dimension
/// exceeds the 65535 limit; kernels rebuild the index as `gid.x + gid.y * 65535 * size`.
pub fn groups_1d(n: u32, size: u32) -> [u32; 3] {
    let groups = n.div_ceil(size).max(1);
    if groups <= 65535 {
        [groups, 1, 1]
    } else {
        [65535, groups.div_ceil(65535), 1]
    }
}

/// Workgroups of `tile` x `tile` lanes covering a `w` x `h` image, `depth` deep.
pub fn groups_2d(w: u32, h: u32, tile: u32, depth: u32) -> [u32; 3] {
    [w.div_ceil(tile).max(1), h.div_ceil(tile).max(1), depth.max(1)]
}

fn pad4(data: &[u8]) -> std::borrow::Cow<'_, [u8]> {
    if data.len() % 4 == 0 && !data.is_empty() {
        data.into()
    } else {
        let mut v = data.to_vec();
        v.resize(data.len().max(4).next_multiple_of(4), 0);
        v.into()
    }
}
