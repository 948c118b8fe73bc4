//! `disk.partition-table` (MBR required) and `disk.first-partition` (the first partition, and
//! the Windows partition, open as NTFS offline: what `mount /dev/nbd0p1` checks in the guide).

use super::image_format::human_size;
use super::inspection::Inspection;
use super::{CheckResult, ID_FIRST_PARTITION, ID_PARTITION_TABLE};
use crate::disk::{PartitionTable, ProblemCode, TableKind};
use crate::fs::{FsKind, Volume};
use crate::guest::WINDOWS_CONFIG_DIR;

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
pub fn partition_table(insp: &Inspection) -> CheckResult {
    let t = match &insp.table {
        Ok(t) => t,
        Err(e) => {
            return CheckResult::fail(
                ID_PARTITION_TABLE,
                format!("the partition table could not be read: {e}"),
                "the image is damaged or truncated: export it again",
            )
        }
    };
    let mut result = if t.problems.is_empty() && t.kind == TableKind::Mbr {
        CheckResult::pass(ID_PARTITION_TABLE, describe_mbr(t))
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
            Some(p) if !serious.is_empty() => {
                CheckResult::fail(ID_PARTITION_TABLE, message, table_hint(p.code))
            }
            Some(p) => CheckResult::warn(
                ID_PARTITION_TABLE,
                format!("{}; {message}", describe_mbr(t)),
                table_hint(p.code),
            ),
            // A non-MBR kind always comes with a problem; be explicit if it did not.
            None => CheckResult::fail(
                ID_PARTITION_TABLE,
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
    result
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

/// Check that the first partition (and the Windows partition) open as NTFS.
pub fn first_partition(insp: &Inspection) -> CheckResult {
    let id = ID_FIRST_PARTITION;
    let Ok(table) = &insp.table else {
        return CheckResult::skip(id, "no partition table could be read");
    };
    let Some(first) = table.first_partition() else {
        return CheckResult::fail(
            id,
            "the disk has no partition",
            "export the whole system disk with its partitions",
        );
    };
    let where_ = format!(
        "partition {} ({}, {} at {})",
        first.index,
        first.type_name,
        human_size(first.size),
        human_size(first.start)
    );
    let kind = match &insp.first_kind {
        Some(Ok(k)) => k,
        Some(Err(e)) => {
            return CheckResult::fail(
                id,
                format!("{where_} cannot be read: {e}"),
                "the image is damaged or truncated: export it again",
            )
        }
        None => return CheckResult::skip(id, "the first partition was not probed"),
    };
    match kind {
        FsKind::Ntfs => {}
        FsKind::BitLocker => {
            return CheckResult::fail(
                id,
                format!("{where_} is encrypted with BitLocker"),
                "turn BitLocker off (`manage-bde -off C:`, or Control Panel > BitLocker) and \
                 wait until decryption has finished, then export again",
            )
        }
        FsKind::Zeros { backup_ntfs: true } | FsKind::Unknown { backup_ntfs: true } => {
            return CheckResult::fail(
                id,
                format!(
                    "{where_}: the NTFS boot sector is damaged ({}) but the backup boot sector \
                     at the partition's end is intact",
                    kind.describe()
                ),
                "repair the source volume (`chkdsk /f`, or restore the boot sector from its \
                 backup with `ntfsfix`/TestDisk) and export again",
            )
        }
        other => {
            return CheckResult::fail(
                id,
                format!("{where_} is {}, not NTFS", other.describe()),
                "the first partition must be the Windows NTFS volume (the guide checks it with \
                 `mount /dev/nbd0p1`): export the Windows system disk, with System Reserved or \
                 C: first",
            )
        }
    }
    let vol = match &insp.first_volume {
        Some(Ok(v)) => v,
        Some(Err(e)) => {
            return CheckResult::fail(
                id,
                format!("{where_} has an NTFS boot sector but does not open: {e}"),
                "the file system is damaged: run `chkdsk /f` on the source volume and export \
                 again (export with \"Use Volume Shadow Copy\" so the copy is consistent)",
            )
        }
        None => return CheckResult::skip(id, "the first partition was not opened"),
    };
    let mut notes = vec![format!(
        "{where_} opens as NTFS {}{}",
        vol.version(),
        vol.label()
            .filter(|l| !l.is_empty())
            .map(|l| format!(", label \"{l}\""))
            .unwrap_or_default()
    )];
    let mut warns: Vec<(String, &str)> = Vec::new();
    let mut fails: Vec<(String, &str)> = Vec::new();
    volume_state(vol, &mut warns, &mut fails);
    match &insp.windows {
        None => fails.push((
            format!(
                "no NTFS partition holds \\{}",
                WINDOWS_CONFIG_DIR.replace('/', "\\")
            ),
            "this does not look like a Windows system disk: export the disk that holds C:\\Windows",
        )),
        Some(w) => {
            if w.partition_index() != Some(first.index) {
                notes.push(format!(
                    "Windows is on partition {} (NTFS {}, {})",
                    w.partition_index().unwrap_or(0),
                    w.version(),
                    human_size(w.len())
                ));
                volume_state(w, &mut warns, &mut fails);
            }
            match w.stat("Windows/System32/config/SYSTEM") {
                Ok(st) if !st.is_dir => match w.read_head("Windows/System32/config/SYSTEM", 4) {
                    Ok(h) if h == b"regf" => notes.push(format!(
                        "\\Windows\\System32\\config\\SYSTEM is readable ({})",
                        human_size(st.size)
                    )),
                    Ok(_) => fails.push((
                        "\\Windows\\System32\\config\\SYSTEM is not a registry hive (no regf \
                         signature)"
                            .into(),
                        "the SYSTEM hive is damaged: export again from a consistent snapshot",
                    )),
                    Err(e) => fails.push((
                        format!("\\Windows\\System32\\config\\SYSTEM cannot be read: {e}"),
                        "the file system is damaged: run `chkdsk /f` and export again",
                    )),
                },
                _ => fails.push((
                    "\\Windows\\System32\\config\\SYSTEM is missing".into(),
                    "the Windows installation is incomplete: export the system disk again",
                )),
            }
        }
    }
    let base = notes.join("; ");
    if let Some((_, hint)) = fails.first() {
        let msg = fails
            .iter()
            .map(|(m, _)| m.as_str())
            .collect::<Vec<_>>()
            .join("; ");
        CheckResult::fail(id, format!("{msg} ({base})"), *hint)
    } else if let Some((_, hint)) = warns.first() {
        let msg = warns
            .iter()
            .map(|(m, _)| m.as_str())
            .collect::<Vec<_>>()
            .join("; ");
        CheckResult::warn(id, format!("{base}; {msg}"), *hint)
    } else {
        CheckResult::pass(id, base)
    }
}

/// Dirty flag (warning) and hibernation (failure) of one volume.
fn volume_state(
    vol: &Volume,
    warns: &mut Vec<(String, &'static str)>,
    fails: &mut Vec<(String, &'static str)>,
) {
    let which = match vol.partition_index() {
        Some(0) | None => "the volume".to_string(),
        Some(i) => format!("partition {i}"),
    };
    if vol.is_dirty() {
        warns.push((
            format!("{which} is marked dirty (not cleanly unmounted, or errors were found)"),
            "run `chkdsk /f` on the source volume (or export from a Volume Shadow Copy) and \
             export again",
        ));
    }
    match vol.hibernation() {
        Ok(Some(h)) => fails.push((
            format!(
                "{which}: Windows is hibernated or was shut down with Fast Startup (hiberfil.sys \
                 starts with \"{}\")",
                h.signature
            ),
            "boot the source, turn hibernation and Fast Startup off (`powercfg /h off`), shut \
             down fully and export again: a hibernated Windows resumes stale state or refuses \
             to boot on new hardware",
        )),
        Ok(None) => {}
        Err(e) => warns.push((
            format!("{which}: hiberfil.sys could not be checked: {e}"),
            "check the volume with `chkdsk` on the source",
        )),
    }
}
