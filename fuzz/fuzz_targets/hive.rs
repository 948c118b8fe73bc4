#![no_main]
//! hive: parse the input as a registry hive and run every analysis with it as SYSTEM and SOFTWARE.
use imgcheck::windows::analysis;
use imgcheck::windows::hive::Hive;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(h) = Hive::open("fuzz-hive", data, &[]) else {
        return;
    };
    let _ = h.root_name();
    let _ = h.subkeys(&h.root());
    let _ = h.key("Select");
    let _ = analysis::os_identity(&h, &h);
    let _ = analysis::virtio_storage(&h, &h, &|_p: &str| true);
    let _ = analysis::cloudbase_init(&h, &h);
    let _ = analysis::conflicts(&h, &h);
    let _ = analysis::extra_warnings(&h, &h);
});
