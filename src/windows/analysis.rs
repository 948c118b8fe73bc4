//! Every registry analysis at once, and the names the analyses are known by.
//!
//! Each analysis is its own file ([`super::os_identity`], [`super::virtio`],
//! [`super::cloudbase`], [`super::conflicts`], [`super::system_state`]); this module gathers
//! them for callers that want all of them (`inspect`, the registry benchmark, fuzzing).

use serde::Serialize;

pub use super::cloudbase::{cloudbase_init, CloudbaseStatus};
pub use super::conflicts::{
    conflicts, suite_of_application, suite_of_service, Conflict, ConflictKind, Suite,
};
use super::hive::Hive;
pub use super::os_identity::{os_identity, OsInfo, ServiceSummary};
pub use super::paths::{driver_file_path, windows_dir};
pub use super::software::is_win8_or_later;
pub use super::storage_filters::{storage_filters, ClassFilter, FilterProblem, StorageFilters};
pub use super::system_state::{extra_warnings, ExtraWarning, WarningKind};
pub use super::virtio::{
    virtio_storage, NetkvmStatus, VirtioBinding, VirtioDriver, VirtioState, VirtioStatus,
};
use crate::Result;

/// Every analysis of a SYSTEM/SOFTWARE pair, for `inspect`/`verify`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RegistryReport {
    pub os: OsInfo,
    pub virtio: VirtioStatus,
    pub cloudbase_init: CloudbaseStatus,
    pub conflicts: Vec<Conflict>,
    pub warnings: Vec<ExtraWarning>,
}

/// Runs [`os_identity`], [`virtio_storage`], [`cloudbase_init`], [`conflicts`] and
/// [`extra_warnings`].
pub fn analyse(
    system: &Hive,
    software: &Hive,
    file_exists: &dyn Fn(&str) -> bool,
) -> Result<RegistryReport> {
    Ok(RegistryReport {
        os: os_identity(system, software)?,
        virtio: virtio_storage(system, software, file_exists)?,
        cloudbase_init: cloudbase_init(system, software)?,
        conflicts: conflicts(system, software)?,
        warnings: extra_warnings(system, software)?,
    })
}
