#![no_main]
//! bcd: parse the input as a BCD hive and decide the boot configuration.
use imgcheck::windows::bcd::bcd_boot;
use imgcheck::windows::hive::Hive;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(h) = Hive::open("fuzz-BCD", data, &[]) {
        let _ = bcd_boot(&h);
    }
});
