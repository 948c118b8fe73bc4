#![no_main]
//! vhd: open the input as an image (format detected by content) and read and map it.
use libfuzzer_sys::fuzz_target;

#[path = "common.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    if let Some(dev) = common::open("fuzz.vhd", data) {
        common::exercise(dev.as_ref());
    }
});
