//! `disk.partition-table`: the target platform takes MBR disks only; the table must be whole
//! (no overlaps, nothing past the end, an intact extended chain) and address the disk.

use super::{CheckError, CheckResult};
use crate::disk::{PartitionTable, ProblemCode, TableKind};
use crate::guest::Disk;

pub const ID: &str = "disk.partition-table";

/// What to do about each kind of partition-table problem.
fn table_hint(code: ProblemCode) -> &'static str {
    match code {
        ProblemCode::Gpt | ProblemCode::HybridMbr => {
            "the target platform accepts only MBR disks: convert the system disk from GPT to MBR \
             (a GPT disk normally boots by UEFI too, see boot.firmware), then export again; if \
             it must stay GPT, open a ticket with the platform as its guide says"
        }
        ProblemCode::NoSignature | ProblemCode::NotAnMbr | ProblemCode::EmptyTable => {
            "the image holds no partition table: export the whole system disk, not a single \
             volume (in disk2vhd, export the disk with its System Reserved and C: volumes)"
        }
        ProblemCode::Ldm => {
            "this is a Windows dynamic disk (LDM), which migration tools cannot read: convert it \
             to a basic disk in Disk Management (or with a partition tool) and export again"
        }
        ProblemCode::Overlap | ProblemCode::PastEnd | ProblemCode::ExtendedChain => {
            "the partition table is damaged, or the image is truncated: compare the image's \
             size with the source disk and export it again"
        }
        ProblemCode::GptHeader => {
            "the GPT header is damaged; the disk must be MBR anyway: convert it to MBR and \
             export again"
        }
        ProblemCode::TooLargeForMbr | ProblemCode::BeyondMbrLimit => {
            "an MBR disk can address at most 2 TiB with 512-byte sectors: shrink the system \
             disk (and its partitions) below 2 TiB before exporting"
        }
        ProblemCode::MultipleActive => {
            "mark only the partition holding bootmgr as active (diskpart: select partition N, \
             active)"
        }
    }
}

/// Check the partition table.
pub fn run(disk: &Disk) -> Result<CheckResult, CheckError> {
    let t = match disk.table() {
        Ok(t) => t,
        Err(e) => {
            return Ok(CheckResult::fail(
                ID,
                format!("the partition table could not be read: {e}"),
                "the image is damaged or truncated: export it again",
            ))
        }
    };
    let mut result = if t.problems.is_empty() && t.kind == TableKind::Mbr {
        CheckResult::pass(ID, describe_mbr(t))
    } else {
        let serious: Vec<_> = t
            .problems
            .iter()
            .filter(|p| p.code != ProblemCode::MultipleActive)
            .collect();
        let lead = serious.first().copied().or(t.problems.first());
        let message = t
            .problems
            .iter()
            .map(|p| p.message.as_str())
            .collect::<Vec<_>>()
            .join("; ");
        match lead {
            Some(p) if !serious.is_empty() => CheckResult::fail(ID, message, table_hint(p.code)),
            Some(p) => CheckResult::warn(
                ID,
                format!("{}; {message}", describe_mbr(t)),
                table_hint(p.code),
            ),
            // A non-MBR kind always comes with a problem; be explicit if it did not.
            None => CheckResult::fail(
                ID,
                format!("{} partition table, not MBR", t.kind),
                table_hint(ProblemCode::Gpt),
            ),
        }
    };
    for p in &t.partitions {
        result.evidence.push(format!(
            "partition {}: {} (type {}), start {} bytes, size {} bytes{}",
            p.index,
            p.type_name,
            p.mbr_type
                .map(|b| format!("0x{b:02X}"))
                .or_else(|| p.gpt_type.clone())
                .unwrap_or_default(),
            p.start,
            p.size,
            if p.bootable { ", active" } else { "" }
        ));
    }
    Ok(result)
}

fn describe_mbr(t: &PartitionTable) -> String {
    let data = t.data_partitions();
    let active: Vec<String> = data
        .iter()
        .filter(|p| p.bootable)
        .map(|p| p.index.to_string())
        .collect();
    format!(
        "MBR partition table, {} partition{}{}{}",
        data.len(),
        if data.len() == 1 { "" } else { "s" },
        if active.is_empty() {
            ", none active".to_string()
        } else {
            format!(", active: {}", active.join(","))
        },
        t.disk_signature
            .map(|s| format!(", disk signature {s:08X}"))
            .unwrap_or_default()
    )
}
