//! Run every check on one image and collect the report.
//!
//! The checks come from [`super::CHECKS`], in its order, each on the same [`Disk`] context;
//! the policy then decides what each result counts for.

use serde::Serialize;

use super::layout::{allocation_bins, partition_boxes, Layout, ALLOCATION_BINS};
use super::os::OsSummary;
use super::{verdict_of, CheckResult, Needs, Policy, Verdict, CHECKS};
use crate::guest::Disk;
use crate::image::{self, Format, OpenOptions};

/// Options for `verify`.
#[derive(Debug, Clone, Default)]
pub struct VerifyOptions {
    pub open: OpenOptions,
    /// Which checks fail, warn or are off; `policy.strict` makes warnings fail.
    pub policy: Policy,
}

/// Everything `verify` found about one image. Field names are a stable interface (JSON).
#[derive(Debug, Clone, Serialize)]
pub struct ImageReport {
    pub image: String,
    pub format: Option<Format>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subformat: Option<String>,
    pub virtual_size: Option<u64>,
    pub verdict: Verdict,
    /// `--strict` (or a strict policy): warnings fail the run, and every report shows them as
    /// failures.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub strict: bool,
    pub checks: Vec<CheckResult>,
    /// Identity of the Windows installation found (product, version, host name, ...).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub os: Option<OsSummary>,
    /// Partitions and allocated regions, for drawing the disk to scale.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub layout: Option<Layout>,
    /// Why the image could not be read (verdict `error`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl ImageReport {
    /// Results of checks that fail the run: failures, and warnings when strict.
    pub fn failed(&self) -> impl Iterator<Item = &CheckResult> {
        self.checks.iter().filter(|c| c.fails_run(self.strict))
    }
}

/// What to do about an image that could not be opened, by kind of error.
pub fn hint_for_error(e: &crate::Error) -> &'static str {
    use crate::Error;
    match e {
        Error::Io { .. } => "check the path, that the file exists and that you may read it",
        Error::Corrupt { .. } | Error::OutOfRange { .. } => {
            "the file is damaged or incomplete (an interrupted export, copy or download?): \
             export or copy it again, and compare its checksum with the original"
        }
        Error::Unsupported { .. } => {
            "convert it with the exporting tool or `qemu-img convert` to a plain raw, VHD, \
             VMDK or qcow2 image"
        }
        Error::Refused { .. } => "do what the message says, then check the image again",
        Error::Other(_) => "see the message",
    }
}

/// Verify the image named by `spec` (a path or an NBD URI).
pub fn verify(spec: &str, opts: &VerifyOptions) -> ImageReport {
    let dev = match image::open_spec(spec, &opts.open) {
        Ok(d) => d,
        Err(e) => return unreadable(spec, &e, opts.policy.strict),
    };
    let disk = Disk::new(dev.clone());
    let strict = opts.policy.strict;
    let checks: Vec<CheckResult> = CHECKS
        .iter()
        .map(|c| opts.policy.apply(c.run_on(&disk)))
        .collect();
    let verdict = verdict_of(&checks, strict);
    let layout = allocation_bins(dev.as_ref(), ALLOCATION_BINS)
        .ok()
        .map(|allocation| Layout {
            partitions: partition_boxes(&disk),
            allocation,
        });
    ImageReport {
        image: spec.to_string(),
        format: Some(dev.format()),
        subformat: dev.subformat(),
        virtual_size: Some(dev.size()),
        verdict,
        strict,
        checks,
        os: OsSummary::of_disk(&disk),
        layout,
        error: None,
    }
}

/// The report for an image that could not be opened: `image.format` says why, every other
/// check is skipped.
fn unreadable(spec: &str, e: &crate::Error, strict: bool) -> ImageReport {
    let msg = e.to_string();
    let checks = CHECKS
        .iter()
        .map(|c| match c.needs {
            Needs::Image => CheckResult::fail(c.id, msg.clone(), hint_for_error(e)),
            _ => CheckResult::skip(c.id, "the image could not be read"),
        })
        .collect();
    ImageReport {
        image: spec.to_string(),
        format: None,
        subformat: None,
        virtual_size: None,
        verdict: Verdict::Error,
        strict,
        checks,
        os: None,
        layout: None,
        error: Some(msg),
    }
}
