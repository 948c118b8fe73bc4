//! Class filters on the boot path: each `UpperFilters`/`LowerFilters` entry of a device setup
//! class names a service that Windows loads into the stack of every device of that class. When
//! the service is missing, disabled (Start=4), a remnant key Windows cannot start, or its
//! driver file is gone, every device of the class fails to start. On the classes the boot disk
//! goes through that is an INACCESSIBLE_BOOT_DEVICE after import, the classic leftover of an
//! uninstalled backup, snapshot, encryption or antivirus product; virt-v2v does not look.
//!
//! The classes (GUIDs from Microsoft's "System-Defined Device Setup Classes Available to
//! Vendors", devguid.h): the boot path from the PCI bus to the volume:
//! - System `{4d36e97d-e325-11ce-bfc1-08002be10318}`: the PCI bus and ACPI devices the storage
//!   controller sits on (Xen PV drivers put `xenfilt` here; left behind it stops the bus);
//! - SCSIAdapter `{4d36e97b-e325-11ce-bfc1-08002be10318}`: SCSI, RAID, NVMe and Virtio storage
//!   controllers (viostor, vioscsi);
//! - HDC `{4d36e96a-e325-11ce-bfc1-08002be10318}`: IDE/ATA and AHCI controllers;
//! - DiskDrive `{4d36e967-e325-11ce-bfc1-08002be10318}`: disks (partmgr, backup and encryption
//!   filters);
//! - Volume `{71a27cdd-812a-11d0-bec7-08002be2092f}`: volumes (volsnap, fvevol, snapshot and
//!   backup filters).
//!
//! And one that is not on the boot path but matters to a cloud import: CDROM
//! `{4d36e965-e325-11ce-bfc1-08002be10318}`, the config drive Cloudbase-Init reads its metadata
//! from on platforms that provide one (a warning, not a failure).

use serde::Serialize;

use super::hive::{join, Hive};
use super::paths::driver_file_path;
use super::software;
use super::system::{self, ControlSet};
use crate::Result;

/// A device setup class whose filters are examined.
#[derive(Clone, Copy, Debug)]
pub struct StorageClass {
    /// Class GUID, lower case with braces, as the `Control\Class` key is named.
    pub guid: &'static str,
    /// Class name (the `Class` value).
    pub name: &'static str,
    /// On the boot path: a broken filter here stops the boot disk.
    pub boot_critical: bool,
}

/// The classes examined, in boot-path order.
pub const STORAGE_CLASSES: [StorageClass; 6] = [
    class("{4d36e97d-e325-11ce-bfc1-08002be10318}", "System", true),
    class(
        "{4d36e97b-e325-11ce-bfc1-08002be10318}",
        "SCSIAdapter",
        true,
    ),
    class("{4d36e96a-e325-11ce-bfc1-08002be10318}", "HDC", true),
    class("{4d36e967-e325-11ce-bfc1-08002be10318}", "DiskDrive", true),
    class("{71a27cdd-812a-11d0-bec7-08002be2092f}", "Volume", true),
    class("{4d36e965-e325-11ce-bfc1-08002be10318}", "CDROM", false),
];

const fn class(guid: &'static str, name: &'static str, boot_critical: bool) -> StorageClass {
    StorageClass {
        guid,
        name,
        boot_critical,
    }
}

/// Why a filter cannot load.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum FilterProblem {
    /// No `Services\<filter>` key.
    Missing,
    /// Start=4.
    Disabled,
    /// The key has none of Type, Start and ImagePath: a leftover Windows cannot start.
    Remnant,
    /// The file its ImagePath names is not on the Windows volume.
    MissingFile { path: String },
}

impl FilterProblem {
    pub fn describe(&self, service_path: &str) -> String {
        match self {
            FilterProblem::Missing => format!("no service {service_path} exists"),
            FilterProblem::Disabled => format!("{service_path}\\Start is 4 (disabled)"),
            FilterProblem::Remnant => format!(
                "{service_path} is a remnant key (no Type, Start or ImagePath) Windows cannot start"
            ),
            FilterProblem::MissingFile { path } => {
                format!("its driver file {path} is missing ({service_path})")
            }
        }
    }
}

/// One filter entry of one class.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ClassFilter {
    pub class_guid: String,
    pub class_name: String,
    pub boot_critical: bool,
    /// "UpperFilters" or "LowerFilters".
    pub value: String,
    /// The value's registry path (`ControlSet001\Control\Class\{...}\UpperFilters`).
    pub registry_path: String,
    /// The service the entry names.
    pub filter: String,
    /// Where the service is (or would be).
    pub service_registry_path: String,
    /// Why it cannot load; `None` when it can.
    pub problem: Option<FilterProblem>,
}

/// The filters of the examined classes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct StorageFilters {
    pub control_set: String,
    /// The classes that exist in the hive (by name).
    pub classes: Vec<String>,
    pub filters: Vec<ClassFilter>,
}

impl StorageFilters {
    /// The filters that cannot load.
    pub fn broken(&self) -> impl Iterator<Item = &ClassFilter> {
        self.filters.iter().filter(|f| f.problem.is_some())
    }
}

/// Every UpperFilters/LowerFilters entry of [`STORAGE_CLASSES`], and whether its service can
/// load. `file_exists` is asked for a driver file relative to the Windows volume root
/// ("Windows/System32/drivers/x.sys"); an error there (a damaged volume) is an error here, not
/// "missing".
pub fn storage_filters(
    system: &Hive,
    software: &Hive,
    file_exists: &dyn Fn(&str) -> Result<bool>,
) -> Result<StorageFilters> {
    let cs = system::require_control_set(system)?;
    let system_root = software::windows_version(software)?.and_then(|v| v.system_root);
    let mut out = StorageFilters {
        control_set: cs.name.clone(),
        classes: Vec::new(),
        filters: Vec::new(),
    };
    for c in STORAGE_CLASSES {
        let path = format!("{}\\Control\\Class\\{}", cs.name, c.guid);
        let Some(key) = system.key(&path)? else {
            continue;
        };
        out.classes.push(c.name.to_string());
        for value in ["UpperFilters", "LowerFilters"] {
            for filter in key.multi_sz(value).unwrap_or_default() {
                let filter = filter.trim().to_string();
                if filter.is_empty() {
                    continue;
                }
                let (service_registry_path, problem) =
                    filter_state(system, &cs, &filter, system_root.as_deref(), file_exists)?;
                out.filters.push(ClassFilter {
                    class_guid: key.name().to_string(),
                    class_name: c.name.to_string(),
                    boot_critical: c.boot_critical,
                    value: value.to_string(),
                    registry_path: key.value_path(value),
                    filter,
                    service_registry_path,
                    problem,
                });
            }
        }
    }
    Ok(out)
}

/// Where the filter's service is and why it cannot load, if it cannot.
fn filter_state(
    system: &Hive,
    cs: &ControlSet,
    filter: &str,
    system_root: Option<&str>,
    file_exists: &dyn Fn(&str) -> Result<bool>,
) -> Result<(String, Option<FilterProblem>)> {
    let Some(s) = system::service(system, cs, filter)? else {
        return Ok((
            join(&join(&cs.name, "Services"), filter),
            Some(FilterProblem::Missing),
        ));
    };
    let problem = if s.start == Some(4) {
        Some(FilterProblem::Disabled)
    } else if s.is_remnant() {
        Some(FilterProblem::Remnant)
    } else {
        let path = driver_file_path(s.image_path.as_deref(), &s.name, system_root);
        (!file_exists(&path)?).then_some(FilterProblem::MissingFile { path })
    };
    Ok((s.registry_path, problem))
}
