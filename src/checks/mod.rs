//! One check per rule of the migration guide, each with a stable ID.
//!
//! The IDs are an interface (CI pipelines and policies refer to them): never rename one.
//! A check result always says what was found; a failed or warned check says what to do.
//!
//! Every check is one file here and one line in [`table::CHECKS`] (its ID, what it needs, the
//! function that runs it); the ID list, the run order, policy validation and the schema test
//! all come from that table, so adding a check is: its file here, its analysis under
//! `src/windows/` when it reads the registry, and its line in the table. A check takes the
//! [`Disk`] context and returns a [`CheckResult`], or a [`CheckError`] when what it needs is
//! absent (skipped) or unreadable (failed, naming what could not be read).

pub mod boot_firmware;
pub mod cloudbase_init;
pub mod conflicts;
pub mod first_partition;
pub mod image_format;
pub mod inspect;
pub mod layout;
pub mod os;
pub mod partition_table;
pub mod policy;
pub mod storage_filters;
pub mod system_state;
pub mod table;
pub mod verify;
pub mod virtio;

pub use policy::Policy;
pub use table::{Check, Needs, CHECKS, CHECK_IDS};
pub use verify::{verify, ImageReport, VerifyOptions};

use serde::Serialize;

use crate::guest::Disk;
use crate::windows::hive::Hive;

/// Why a check could not reach a verdict from the disk.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    /// What the check needs is not on this disk (no partition table, no Windows): the check is
    /// reported as skipped, with this reason.
    #[error("{0}")]
    Skip(String),
    /// What the check needs could not be read: the check fails with this message and hint.
    #[error("{message}")]
    Unreadable { message: String, hint: &'static str },
    /// Reading failed on the way (a damaged hive, volume or container): the check fails,
    /// naming the file, structure and offset the error names.
    #[error(transparent)]
    Read(#[from] crate::Error),
}

/// What to do when the registry in the image cannot be read.
pub const HIVE_HINT: &str = "the registry in the image is damaged or incomplete: export again \
                             from a consistent copy (disk2vhd with \"Use Volume Shadow Copy\", or \
                             with the machine shut down)";

/// The SYSTEM and SOFTWARE hives, or why a registry check cannot run: skipped without
/// Windows, failed when a hive cannot be read.
pub fn hives(disk: &Disk) -> Result<(&Hive, &Hive), CheckError> {
    let reg = disk.registry().ok_or_else(|| {
        CheckError::Skip(
            "no Windows installation was found on the disk (see disk.first-partition)".into(),
        )
    })?;
    reg.hives().map_err(|e| CheckError::Unreadable {
        message: e.to_string(),
        hint: HIVE_HINT,
    })
}

/// The partition table, or the reason a check that needs it is skipped.
pub fn table(disk: &Disk) -> Result<&crate::disk::PartitionTable, CheckError> {
    disk.table()
        .map_err(|_| CheckError::Skip("the partition table could not be read".into()))
}

/// Outcome of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Pass,
    Skip,
    Warn,
    Fail,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pass => "pass",
            Status::Warn => "warn",
            Status::Fail => "fail",
            Status::Skip => "skip",
        }
    }
}

/// Result of one check.
#[derive(Debug, Clone, Serialize)]
pub struct CheckResult {
    pub id: String,
    pub status: Status,
    /// What was found, in one sentence.
    pub message: String,
    /// What to do about it (present on every warn and fail).
    pub hint: Option<String>,
    /// Facts that decided the result (registry paths, partition entries, BCD elements).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub evidence: Vec<String>,
}

impl CheckResult {
    pub fn pass(id: &str, message: impl Into<String>) -> Self {
        CheckResult {
            id: id.to_string(),
            status: Status::Pass,
            message: message.into(),
            hint: None,
            evidence: Vec::new(),
        }
    }
    pub fn warn(id: &str, message: impl Into<String>, hint: impl Into<String>) -> Self {
        CheckResult {
            id: id.to_string(),
            status: Status::Warn,
            message: message.into(),
            hint: Some(hint.into()),
            evidence: Vec::new(),
        }
    }
    pub fn fail(id: &str, message: impl Into<String>, hint: impl Into<String>) -> Self {
        CheckResult {
            id: id.to_string(),
            status: Status::Fail,
            message: message.into(),
            hint: Some(hint.into()),
            evidence: Vec::new(),
        }
    }
    pub fn skip(id: &str, reason: impl Into<String>) -> Self {
        CheckResult {
            id: id.to_string(),
            status: Status::Skip,
            message: reason.into(),
            hint: None,
            evidence: Vec::new(),
        }
    }
    /// Whether this result fails the run: a failure, or a warning when `strict`.
    pub fn fails_run(&self, strict: bool) -> bool {
        self.status == Status::Fail || (strict && self.status == Status::Warn)
    }
    /// Add a piece of evidence.
    pub fn with_evidence(mut self, e: impl Into<String>) -> Self {
        self.evidence.push(e.into());
        self
    }
}

/// Overall verdict for one image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// No check failed.
    Pass,
    /// At least one check failed.
    Fail,
    /// The image could not be read.
    Error,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Pass => "pass",
            Verdict::Fail => "fail",
            Verdict::Error => "error",
        }
    }
}

/// Verdict from a list of results (warnings do not fail unless `strict`).
pub fn verdict_of(checks: &[CheckResult], strict: bool) -> Verdict {
    if checks.iter().any(|c| c.fails_run(strict)) {
        Verdict::Fail
    } else {
        Verdict::Pass
    }
}
