//! Consecutive extractions keep host and device memory flat. The only test of its binary, so that no other test
//! allocates in this process or on this device while it reads memory.

use strek::demo::scene;
use strek::{GpuExtractor, ModelConfig, Weights};

#[test]
fn repeated_extractions_keep_host_and_device_memory_flat() {
    let gpu = &strek::Gpu::new(&Default::default()).expect("an adapter");
    let weights = Weights::random(&ModelConfig::default_s_trek(), 2);
    let mut extractor = GpuExtractor::new(gpu, &weights, strek::Config { max_keypoints: Some(50), ..Default::default() }).unwrap();
    let images = [scene(48, 40, 1), scene(40, 48, 2), scene(45, 45, 3)];
    let device = || gpu.device.generate_allocator_report().map(|r| r.total_allocated_bytes);
    let readings = strek::eval::bench::soak(&mut extractor, &images, 150, 4, device, |_| {}).unwrap();
    assert_eq!(readings.len(), 4, "{readings:?}");
    let (first, last) = (&readings[0], &readings[3]);
    assert_eq!((first.extractions, last.extractions), (3, 150));
    // plans are reused, so the device allocates nothing after the first pass
    assert!(first.device_bytes.is_some(), "the Vulkan adapter reports its allocations");
    assert_eq!(first.device_bytes, last.device_bytes, "{readings:?}");
    // the host may move by allocator noise, not by a leak (147 extractions x even 30 KiB would be 4.3 MiB)
    let grown = last.host_bytes.unwrap().saturating_sub(first.host_bytes.unwrap());
    assert!(grown < 3 << 20, "resident memory grew by {grown} bytes over 147 extractions: {readings:?}");
}
