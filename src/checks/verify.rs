//! Run every check on one image and collect the report.

use serde::Serialize;

use super::inspection::Inspection;
use super::registry::{self, WindowsFacts};
use super::{verdict_of, CheckResult, Policy, Verdict, CHECK_IDS, ID_IMAGE_FORMAT};
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
    pub checks: Vec<CheckResult>,
    /// Identity of the Windows installation found (product, version, host name, ...).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub os: Option<serde_json::Value>,
    /// Partitions and allocated regions, for drawing the disk to scale.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub layout: Option<Layout>,
    /// Why the image could not be read (verdict `error`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl ImageReport {
    /// Results of checks that failed.
    pub fn failed(&self) -> impl Iterator<Item = &CheckResult> {
        self.checks
            .iter()
            .filter(|c| c.status == super::Status::Fail)
    }
}

/// One partition as drawn in reports.
#[derive(Debug, Clone, Serialize)]
pub struct PartitionBox {
    /// Partition number (1-based, as Windows and Linux number them).
    pub index: u32,
    pub start: u64,
    pub size: u64,
    /// Type, e.g. "NTFS/exFAT (0x07)", "EFI system (0xEF)", a GPT type name.
    pub kind: String,
    pub bootable: bool,
}

/// The disk drawn to scale: partitions, and the fraction of each of [`ALLOCATION_BINS`] equal
/// slices of the disk that holds data.
#[derive(Debug, Clone, Serialize)]
pub struct Layout {
    pub partitions: Vec<PartitionBox>,
    pub allocation: Vec<f32>,
}

/// Number of slices the allocation map is summarised into.
pub const ALLOCATION_BINS: usize = 128;

/// Fraction of each of `bins` slices of the device that holds data (from the allocation map
/// only: no data is read).
pub fn allocation_bins(
    dev: &dyn crate::image::BlockDevice,
    bins: usize,
) -> crate::Result<Vec<f32>> {
    let size = dev.size();
    if size == 0 || bins == 0 {
        return Ok(Vec::new());
    }
    let mut out = vec![0f64; bins];
    let bin_len = size as f64 / bins as f64;
    let window = 1u64 << 34;
    let mut pos = 0;
    while pos < size {
        let len = window.min(size - pos);
        for e in dev.map(pos, len)? {
            if e.kind != crate::image::ExtentKind::Data {
                continue;
            }
            // Spread the extent over the bins it covers.
            let (mut a, b) = (e.offset as f64, (e.offset + e.length) as f64);
            while a < b {
                let i = ((a / bin_len) as usize).min(bins - 1);
                let bin_end = ((i + 1) as f64 * bin_len).min(b);
                let part = if bin_end > a { bin_end - a } else { b - a };
                out[i] += part;
                a += part;
            }
        }
        pos += len;
    }
    Ok(out
        .into_iter()
        .map(|v| (v / bin_len).clamp(0.0, 1.0) as f32)
        .collect())
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

/// The partitions that hold data, for drawing.
fn partition_boxes(insp: &Inspection) -> Vec<PartitionBox> {
    let Ok(t) = &insp.table else {
        return Vec::new();
    };
    t.data_partitions()
        .into_iter()
        .map(|p| PartitionBox {
            index: p.index,
            start: p.start,
            size: p.size,
            kind: match p.mbr_type {
                Some(b) => format!("{} (0x{b:02X})", p.type_name),
                None => p.type_name.clone(),
            },
            bootable: p.bootable,
        })
        .collect()
}

/// Verify the image named by `spec` (a path or an NBD URI).
pub fn verify(spec: &str, opts: &VerifyOptions) -> ImageReport {
    let dev = match image::open_spec(spec, &opts.open) {
        Ok(d) => d,
        Err(e) => {
            let msg = e.to_string();
            let mut checks = vec![CheckResult::fail(
                ID_IMAGE_FORMAT,
                msg.clone(),
                hint_for_error(&e),
            )];
            for id in &CHECK_IDS[1..] {
                checks.push(CheckResult::skip(id, "the image could not be read"));
            }
            return ImageReport {
                image: spec.to_string(),
                format: None,
                subformat: None,
                virtual_size: None,
                verdict: Verdict::Error,
                checks,
                os: None,
                layout: None,
                error: Some(msg),
            };
        }
    };
    let mut checks = vec![super::image_format::check(dev.as_ref())];
    let insp = Inspection::gather(dev.clone());
    checks.push(super::disk::partition_table(&insp));
    checks.push(super::disk::first_partition(&insp));
    let facts = WindowsFacts::gather(&insp);
    let facts = facts.as_ref();
    checks.push(registry::boot_firmware(&insp, facts));
    checks.push(registry::virtio(&insp, facts).0);
    checks.push(registry::cloudbase(&insp, facts));
    checks.push(registry::conflicts(&insp, facts));
    checks.push(registry::system_state(&insp, facts));
    debug_assert_eq!(checks.len(), CHECK_IDS.len());
    let os = registry::os_identity(facts)
        .map(|o| serde_json::to_value(registry::OsSummary::of(&o)).expect("serialises"));
    let checks: Vec<CheckResult> = checks.into_iter().map(|c| opts.policy.apply(c)).collect();
    let verdict = verdict_of(&checks, opts.policy.strict);
    let layout = allocation_bins(dev.as_ref(), ALLOCATION_BINS)
        .ok()
        .map(|allocation| Layout {
            partitions: partition_boxes(&insp),
            allocation,
        });
    ImageReport {
        image: spec.to_string(),
        format: Some(dev.format()),
        subformat: dev.subformat(),
        virtual_size: Some(dev.size()),
        verdict,
        checks,
        os,
        layout,
        error: None,
    }
}
