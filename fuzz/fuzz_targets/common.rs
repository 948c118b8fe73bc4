//! Shared by the container targets: open a fuzzed buffer as an image, read a few ranges, map it.
#![allow(dead_code)]

use std::sync::Arc;

use imgcheck::image::resolve::Resolver;
use imgcheck::image::storage::MemStorage;
use imgcheck::image::{open_storage, BlockDevice, OpenContext, OpenOptions};

pub fn ctx() -> OpenContext {
    OpenContext::new(OpenOptions::default(), Resolver::none())
}

/// Open `data` as an image (format detected by content), as the CLI would.
pub fn open(name: &str, data: &[u8]) -> Option<Arc<dyn BlockDevice>> {
    open_storage(Arc::new(MemStorage::new(name, data.to_vec())), &ctx()).ok()
}

/// Exercise an opened device: metadata, a few reads (start, middle, end, across the end) and map.
pub fn exercise(dev: &dyn BlockDevice) {
    let size = dev.size();
    let _ = dev.warnings();
    let _ = dev.subformat();
    let _ = dev.actual_size();
    let mut buf = vec![0u8; 65536];
    for off in [0, size / 2, size.saturating_sub(4096), size.saturating_sub(1)] {
        let len = (size - off.min(size)).min(buf.len() as u64) as usize;
        let _ = dev.read_at(&mut buf[..len], off);
    }
    // Past the end must be an error, never a panic.
    let _ = dev.read_at(&mut buf[..512], size);
    let _ = dev.map(0, size.min(1 << 30));
    let _ = dev.map(size / 3, 1 << 20);
}
