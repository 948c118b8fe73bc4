#![no_main]
//! ntfs: the input is an NTFS volume; open it and look up, list, stat and read a few paths.
use std::sync::Arc;

use imgcheck::fs::Volume;
use imgcheck::image::raw::RawImage;
use imgcheck::image::storage::MemStorage;
use imgcheck::image::BlockDevice;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let dev: Arc<dyn BlockDevice> =
        Arc::new(RawImage::new(Arc::new(MemStorage::new("fuzz.ntfs", data.to_vec()))));
    let Ok(vol) = Volume::open(&dev, 0, data.len() as u64) else {
        return;
    };
    let _ = vol.label();
    let _ = vol.is_dirty();
    let _ = vol.list("/");
    let _ = vol.list_opts("/", true);
    let _ = vol.list("Windows/System32");
    let _ = vol.stat("Windows/System32/config/SYSTEM");
    let _ = vol.exists("bootmgr");
    let _ = vol.read_capped("Windows/System32/config/SYSTEM", 1 << 20);
    let _ = vol.read_head("Boot/BCD", 4096);
    let _ = vol.hibernation();
});
