//! `image.format`: the container is one the target platform accepts, standalone, and sane.

use super::{CheckError, CheckResult};
use crate::guest::Disk;
use crate::image::BlockDevice;

pub const ID: &str = "image.format";

const MIB: u64 = 1024 * 1024;

/// Human size: "128 MiB", "40 GiB", "1.5 TiB", or bytes.
pub fn human_size(n: u64) -> String {
    const UNITS: [&str; 5] = ["bytes", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} bytes")
    } else if v.fract() == 0.0 {
        format!("{v:.0} {}", UNITS[u])
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// The check, from the table.
pub fn run(disk: &Disk) -> Result<CheckResult, CheckError> {
    Ok(check(disk.device().as_ref()))
}

/// Check the container itself.
pub fn check(dev: &dyn BlockDevice) -> CheckResult {
    let what = match dev.subformat() {
        Some(s) => format!("{} ({s})", dev.format()),
        None => dev.format().to_string(),
    };
    let size = dev.size();
    if size == 0 {
        return CheckResult::fail(
            ID,
            format!("{what} image with a virtual size of 0 bytes"),
            "the export is empty: export the system disk again",
        );
    }
    if let Some(parent) = dev.backing() {
        return CheckResult::fail(
            ID,
            format!("{what} image depends on a backing file or parent: {parent}"),
            "upload a standalone image: flatten it first, e.g. `imgcheck convert -O qcow2 \
             --allow-backing IMAGE flat.qcow2` (or `qemu-img convert`), then check flat.qcow2",
        )
        .with_evidence(format!("backing: {parent}"));
    }
    let warnings = dev.warnings();
    let base = format!("{what}, virtual size {} ({size} bytes)", human_size(size));
    if size % MIB != 0 {
        return CheckResult::warn(
            ID,
            format!("{base}: not a multiple of 1 MiB"),
            "some import services reject disks whose size is not a multiple of 1 MiB; round \
             it up with `qemu-img resize -f FORMAT IMAGE SIZE` (a size in whole MiB)",
        );
    }
    if !warnings.is_empty() {
        let mut r = CheckResult::warn(
            ID,
            format!("{base}; {}", warnings.join("; ")),
            "rename the file to match its content so upload tools that go by the extension \
             pick the right format",
        );
        r.evidence = warnings;
        return r;
    }
    CheckResult::pass(ID, base)
}
