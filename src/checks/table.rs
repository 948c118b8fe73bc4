//! The one list of checks: ID, what each needs, the function that runs it, in run and report
//! order.
//!
//! Everything that enumerates checks derives from [`CHECKS`]: [`CHECK_IDS`] (computed at
//! compile time), the run order of `verify`, the IDs a policy may name, and the schema test
//! (tests/schema.rs compares docs/schema.json's list with [`CHECK_IDS`]). What a check needs
//! decides what happens when it is missing, the same way for every check: an image that does
//! not open skips all but `image.format`; an unreadable partition table skips the checks that
//! need it; no Windows skips the registry checks, and an unreadable hive fails them.

use super::{
    boot_firmware, cloudbase_init, conflicts, first_partition, image_format, partition_table,
    storage_filters, system_state, virtio, CheckError, CheckResult,
};
use crate::guest::Disk;

/// What a check needs to reach a verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Needs {
    /// The container only; when the image does not open, this check says why.
    Image,
    /// A readable image; the check reports an unreadable partition table itself.
    Disk,
    /// The partition table (skipped when it cannot be read).
    Table,
    /// Windows' SYSTEM and SOFTWARE hives (skipped without Windows, failed when a hive cannot
    /// be read).
    Registry,
}

/// One check.
#[derive(Clone, Copy)]
pub struct Check {
    /// Stable ID (an interface: never rename one).
    pub id: &'static str,
    pub needs: Needs,
    pub run: fn(&Disk) -> Result<CheckResult, CheckError>,
}

/// Every check, in the order they run and are reported.
pub const CHECKS: [Check; 9] = [
    check(image_format::ID, Needs::Image, image_format::run),
    check(partition_table::ID, Needs::Disk, partition_table::run),
    check(first_partition::ID, Needs::Table, first_partition::run),
    check(boot_firmware::ID, Needs::Table, boot_firmware::run),
    check(virtio::ID, Needs::Registry, virtio::run),
    check(storage_filters::ID, Needs::Registry, storage_filters::run),
    check(cloudbase_init::ID, Needs::Registry, cloudbase_init::run),
    check(conflicts::ID, Needs::Registry, conflicts::run),
    check(system_state::ID, Needs::Registry, system_state::run),
];

const fn check(
    id: &'static str,
    needs: Needs,
    run: fn(&Disk) -> Result<CheckResult, CheckError>,
) -> Check {
    Check { id, needs, run }
}

/// Stable check IDs, in the order they run and are reported.
pub const CHECK_IDS: [&str; CHECKS.len()] = ids();

const fn ids() -> [&'static str; CHECKS.len()] {
    let mut out = [""; CHECKS.len()];
    let mut i = 0;
    while i < CHECKS.len() {
        out[i] = CHECKS[i].id;
        i += 1;
    }
    out
}

impl Check {
    /// Run the check on `disk`: its needs first, then the check; errors become its result.
    pub fn run_on(&self, disk: &Disk) -> CheckResult {
        let ready = match self.needs {
            Needs::Image | Needs::Disk => Ok(()),
            Needs::Table => super::table(disk).map(drop),
            Needs::Registry => super::hives(disk).map(drop),
        };
        match ready.and_then(|()| (self.run)(disk)) {
            Ok(r) => r,
            Err(e) => self.result_of(e),
        }
    }

    /// The result a check gives for `e`.
    pub fn result_of(&self, e: CheckError) -> CheckResult {
        match e {
            CheckError::Skip(why) => CheckResult::skip(self.id, why),
            CheckError::Unreadable { message, hint } => CheckResult::fail(self.id, message, hint),
            CheckError::Read(e) => {
                let hint = match self.needs {
                    Needs::Registry => super::HIVE_HINT,
                    _ => super::verify::hint_for_error(&e),
                };
                CheckResult::fail(self.id, e.to_string(), hint)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_unique_and_dotted() {
        for (i, id) in CHECK_IDS.iter().enumerate() {
            assert!(id.contains('.'), "{id}");
            assert!(!CHECK_IDS[..i].contains(id), "{id} twice");
        }
        assert_eq!(CHECK_IDS[0], image_format::ID);
    }
}
