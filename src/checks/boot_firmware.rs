//! `boot.firmware`: Windows must boot by BIOS from an active MBR partition, not by EFI.
//!
//! The verdict comes from the disk first (an EFI system partition means UEFI whatever the BCD
//! says), then from the BCD's default loader (winload.exe or winload.efi), then from the
//! active partition holding `\bootmgr`, which is what a BIOS reads first.

use super::{CheckError, CheckResult};
use crate::disk::TableKind;
use crate::guest::{Disk, FoundBcd};
use crate::windows::bcd::{BcdInfo, Firmware};

pub const ID: &str = "boot.firmware";

const EFI_HINT: &str = "the target platform boots only by BIOS (the guide refuses EFI): the \
                        installation must be converted to BIOS boot on an MBR disk (for example \
                        MBR conversion and `bcdboot C:\\Windows /f BIOS` on an active \
                        partition), or open a ticket with the platform as its guide says";

/// Check how Windows boots.
pub fn run(disk: &Disk) -> Result<CheckResult, CheckError> {
    let table = super::table(disk)?;
    let windows = disk.windows().is_some();
    if let Some(&esp) = table.efi_system_partitions.first() {
        let mut r = CheckResult::fail(
            ID,
            format!(
                "the disk has an EFI system partition (partition {esp}): Windows boots by UEFI"
            ),
            EFI_HINT,
        );
        if let Some(FoundBcd { info: Ok(b), .. }) = disk.bcd().filter(|_| windows) {
            r.evidence.push(b.evidence.clone());
        }
        return Ok(r.with_evidence(format!("partition {esp} is an EFI system partition")));
    }
    if !windows {
        return Err(CheckError::Skip(
            "no Windows installation was found on the disk".into(),
        ));
    }
    let Some(found) = disk.bcd() else {
        return Ok(CheckResult::fail(
            ID,
            "no BCD store (\\Boot\\BCD) was found on any NTFS partition: the disk cannot boot",
            "the boot files are missing: run `bcdboot C:\\Windows /s C: /f BIOS` (or on the \
             System Reserved partition) on the source and mark that partition active, then \
             export again",
        ));
    };
    let info = match &found.info {
        Ok(i) => i,
        Err(e) => {
            return Ok(CheckResult::fail(
                ID,
                format!(
                    "the BCD store {} on partition {} could not be read: {e}",
                    found.path, found.partition
                ),
                "rebuild the boot configuration on the source (`bcdboot C:\\Windows /f BIOS`) \
                 and export again",
            ))
        }
    };
    let where_ = format!("BCD {} on partition {}", found.path, found.partition);
    let r = match info.firmware {
        Firmware::Efi => CheckResult::fail(
            ID,
            format!(
                "Windows boots by EFI: the default loader is {} ({where_})",
                info.loader_path.as_deref().unwrap_or("an EFI application")
            ),
            EFI_HINT,
        ),
        Firmware::Unknown => CheckResult::warn(
            ID,
            format!(
                "the {where_} does not say how Windows boots: {}",
                info.evidence
            ),
            "check on the source with `bcdedit /enum {current}`: its path must end in \
             winload.exe (BIOS), not winload.efi",
        ),
        Firmware::Bios if matches!(table.kind, TableKind::Gpt | TableKind::HybridMbr) => {
            CheckResult::fail(
                ID,
                format!(
                    "the BCD names a BIOS loader ({}, {where_}) but the disk is GPT, and Windows \
                     boots from a GPT disk only by UEFI: the disk cannot boot as exported",
                    info.loader_path.as_deref().unwrap_or("winload.exe")
                ),
                EFI_HINT,
            )
        }
        Firmware::Bios => bios(disk, info, &where_),
    };
    Ok(r.with_evidence(info.evidence.clone()))
}

/// A BIOS boot: an active partition that holds `\bootmgr`.
fn bios(disk: &Disk, info: &BcdInfo, where_: &str) -> CheckResult {
    let loader = info.loader_path.as_deref().unwrap_or("winload.exe");
    let Some(active) = disk.active() else {
        return CheckResult::fail(
            ID,
            format!("Windows boots by BIOS ({loader}, {where_}) but no partition is active"),
            "mark the partition holding bootmgr active (diskpart: select partition N, active) \
             and export again",
        );
    };
    let index = active.entry.index;
    let bootmgr = active
        .ntfs()
        .and_then(|v| v.exists("bootmgr").ok())
        .unwrap_or(false);
    if !bootmgr {
        return CheckResult::fail(
            ID,
            format!(
                "Windows boots by BIOS ({loader}, {where_}) but the active partition {index} \
                 has no \\bootmgr"
            ),
            "make the partition with bootmgr active, or rebuild the boot files with `bcdboot \
             C:\\Windows /f BIOS`, and export again",
        );
    }
    CheckResult::pass(
        ID,
        format!("Windows boots by BIOS: {loader} ({where_}); bootmgr on active partition {index}"),
    )
}
