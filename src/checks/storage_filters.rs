//! `drivers.storage-filters`: every upper and lower filter of the device classes the boot disk
//! goes through (System, SCSIAdapter, HDC, DiskDrive, Volume) names a service that can load.
//! A filter left behind by an uninstalled backup, snapshot, encryption or antivirus product,
//! whose service is gone or disabled, stops every device of its class: after import, an
//! INACCESSIBLE_BOOT_DEVICE. The analysis is [`crate::windows::storage_filters`]; the CD-ROM
//! class (the config drive) only warns.

use super::{CheckError, CheckResult};
use crate::guest::Disk;
use crate::windows::storage_filters::{storage_filters, ClassFilter};

pub const ID: &str = "drivers.storage-filters";

/// Check the storage class filters.
pub fn run(disk: &Disk) -> Result<CheckResult, CheckError> {
    let (system, software) = super::hives(disk)?;
    let win = disk
        .windows()
        .ok_or_else(|| CheckError::Skip("no Windows installation was found".into()))?;
    let exists = |p: &str| win.exists(p);
    let st = storage_filters(system, software, &exists)?;
    let (critical, other): (Vec<&ClassFilter>, Vec<&ClassFilter>) =
        st.broken().partition(|f| f.boot_critical);
    let mut r =
        if let Some(first) = critical.first() {
            CheckResult::fail(
                ID,
                format!(
                "{}: the disk stack cannot start, so Windows stops with INACCESSIBLE_BOOT_DEVICE",
                critical.iter().map(|f| describe(f)).collect::<Vec<_>>().join("; ")
            ),
                hint(first),
            )
        } else if let Some(first) = other.first() {
            CheckResult::warn(
                ID,
                format!(
                    "{}: CD-ROM drives will not start, so a config drive (where the platform \
                 provides Cloudbase-Init's metadata that way) cannot be read",
                    other
                        .iter()
                        .map(|f| describe(f))
                        .collect::<Vec<_>>()
                        .join("; ")
                ),
                hint(first),
            )
        } else if st.filters.is_empty() {
            CheckResult::pass(
                ID,
                format!(
                    "no storage class filters are set ({} classes examined in {})",
                    st.classes.len(),
                    st.control_set
                ),
            )
        } else {
            CheckResult::pass(
                ID,
                format!(
                    "every storage class filter names a service that loads: {}",
                    st.filters
                        .iter()
                        .map(|f| format!("{} {} {}", f.class_name, f.value, f.filter))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            )
        };
    for f in &st.filters {
        r.evidence.push(format!(
            "{} = {} ({}): {}",
            f.registry_path,
            f.filter,
            f.service_registry_path,
            match &f.problem {
                Some(p) => p.describe(&f.service_registry_path),
                None => "loads".into(),
            }
        ));
    }
    Ok(r)
}

/// "the DiskDrive class {GUID} UpperFilters names snapflt, but no service ... exists".
fn describe(f: &ClassFilter) -> String {
    format!(
        "the {} class {} {} names {}, but {}",
        f.class_name,
        f.class_guid,
        f.value,
        f.filter,
        f.problem
            .as_ref()
            .map(|p| p.describe(&f.service_registry_path))
            .unwrap_or_default()
    )
}

fn hint(f: &ClassFilter) -> String {
    format!(
        "on the source, remove {} from {} (HKLM\\SYSTEM\\CurrentControlSet\\Control\\Class\\{}, \
         keeping the other entries), or repair the product that installed it; then export again",
        f.filter, f.value, f.class_guid
    )
}
