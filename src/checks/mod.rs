//! One check per rule of the migration guide, each with a stable ID.
//!
//! The IDs are an interface (CI pipelines and policies refer to them): never rename one.
//! A check result always says what was found; a failed or warned check says what to do.

pub mod disk;
pub mod image_format;
pub mod inspection;
pub mod policy;
pub mod registry;
pub mod verify;

pub use policy::Policy;
pub use verify::{verify, ImageReport, VerifyOptions};

use serde::Serialize;

/// Stable check IDs, in the order they run and are reported.
pub const CHECK_IDS: [&str; 8] = [
    ID_IMAGE_FORMAT,
    ID_PARTITION_TABLE,
    ID_FIRST_PARTITION,
    ID_BOOT_FIRMWARE,
    ID_DRIVERS_VIRTIO,
    ID_CLOUDBASE_INIT,
    ID_CONFLICTS,
    ID_SYSTEM_STATE,
];

pub const ID_IMAGE_FORMAT: &str = "image.format";
pub const ID_PARTITION_TABLE: &str = "disk.partition-table";
pub const ID_FIRST_PARTITION: &str = "disk.first-partition";
pub const ID_BOOT_FIRMWARE: &str = "boot.firmware";
pub const ID_DRIVERS_VIRTIO: &str = "drivers.virtio";
pub const ID_CLOUDBASE_INIT: &str = "software.cloudbase-init";
pub const ID_CONFLICTS: &str = "software.conflicts";
/// Warnings only: pending reboot, Fast Startup, static IPs, RealTimeIsUniversal, dirty hives.
pub const ID_SYSTEM_STATE: &str = "system.state";

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
    let failed = checks
        .iter()
        .any(|c| c.status == Status::Fail || (strict && c.status == Status::Warn));
    if failed {
        Verdict::Fail
    } else {
        Verdict::Pass
    }
}
