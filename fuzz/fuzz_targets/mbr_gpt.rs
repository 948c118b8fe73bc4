#![no_main]
//! mbr_gpt: the input is a raw disk; analyse its partition table (MBR, EBR chain, GPT, LDM).
use std::sync::Arc;

use imgcheck::image::raw::RawImage;
use imgcheck::image::storage::MemStorage;
use imgcheck::image::BlockDevice;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let dev: Arc<dyn BlockDevice> =
        Arc::new(RawImage::new(Arc::new(MemStorage::new("fuzz.raw", data.to_vec()))));
    // The table, then every partition probed and opened, as verify does.
    let _ = imgcheck::guest::Disk::new(dev).scan();
});
