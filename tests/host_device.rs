//! strek on a device the host application owns (`Gpu::from_device`): the host's error handler keeps receiving the
//! host's own errors, and strek's errors come back to strek's caller instead of reaching the host's handler.

use std::sync::{Arc, Mutex};
use strek::{Gpu, GpuExtractor, ModelConfig, Weights};

/// A buffer description that wgpu's validation refuses (mapped reading cannot be combined with storage use).
fn invalid_buffer() -> wgpu::BufferDescriptor<'static> {
    wgpu::BufferDescriptor {
        label: Some("invalid on purpose"),
        size: 16,
        usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::STORAGE,
        mapped_at_creation: false,
    }
}

#[test]
fn the_hosts_handlers_stay_the_hosts_and_strek_errors_stay_streks() {
    let instance = wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle());
    let adapter = pollster::block_on(instance.request_adapter(&Default::default())).expect("an adapter (CI: lavapipe)");
    let (device, queue) = pollster::block_on(adapter.request_device(&Default::default())).expect("a device");
    let host_errors = Arc::new(Mutex::new(Vec::<String>::new()));
    let sink = host_errors.clone();
    device.on_uncaptured_error(Arc::new(move |e: wgpu::Error| sink.lock().unwrap().push(e.to_string())));
    let host_lost = Arc::new(Mutex::new(false));
    let flag = host_lost.clone();
    device.set_device_lost_callback(move |_, _| *flag.lock().unwrap() = true);

    let gpu = Gpu::from_device(device.clone(), queue.clone(), &adapter.get_info());
    let weights = Weights::random(&ModelConfig::default_s_trek(), 3);
    let mut extractor = GpuExtractor::new(&gpu, &weights, strek::Config { max_keypoints: Some(50), ..Default::default() }).unwrap();
    let features = extractor.extract(&strek::demo::scene(96, 72, 1)).unwrap();
    assert!(!features.is_empty());
    assert!(host_errors.lock().unwrap().is_empty(), "strek's work raised errors: {:?}", host_errors.lock().unwrap());

    // the host's own mistake reaches the host's handler, not strek
    let _ = device.create_buffer(&invalid_buffer());
    let _ = device.poll(wgpu::PollType::Wait { submission_index: None, timeout: None });
    assert_eq!(host_errors.lock().unwrap().len(), 1, "the host's handler did not receive the host's error");
    assert!(gpu.check_lost().is_ok(), "strek took the host's error for its own");

    // an error inside strek's work is strek's result, and the host's handler does not see it
    let inside = gpu.scoped(|| {
        let _ = device.create_buffer(&invalid_buffer());
        Ok(())
    });
    assert!(matches!(inside, Err(strek::Error::Gpu(_))), "{inside:?}");
    assert_eq!(host_errors.lock().unwrap().len(), 1, "strek's error reached the host's handler");

    // strek still works after both, and the host's device-lost callback was left in place
    assert_eq!(extractor.extract(&strek::demo::scene(96, 72, 1)).unwrap(), features);
    drop(extractor);
    drop(gpu);
    device.destroy();
    let _ = device.poll(wgpu::PollType::Wait { submission_index: None, timeout: None });
    assert!(*host_lost.lock().unwrap(), "the host's device-lost callback was replaced");
}
