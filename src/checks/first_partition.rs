//! `disk.first-partition`: the first partition, and the Windows partition, open as NTFS
//! offline (what `mount /dev/nbd0p1` checks in the guide), are not hibernated, and hold a
//! readable SYSTEM hive.

use super::image_format::human_size;
use super::{CheckError, CheckResult};
use crate::fs::{is_not_found, FsKind, Volume};
use crate::guest::{Disk, WINDOWS_CONFIG_DIR};

pub const ID: &str = "disk.first-partition";

/// What the volumes showed: notes for the message, warnings and failures with their hints.
#[derive(Default)]
struct Findings {
    notes: Vec<String>,
    warns: Vec<(String, &'static str)>,
    fails: Vec<(String, &'static str)>,
}

/// Check that the first partition (and the Windows partition) open as NTFS.
pub fn run(disk: &Disk) -> Result<CheckResult, CheckError> {
    let Some(first) = super::table(disk)?.first_partition() else {
        return Ok(CheckResult::fail(
            ID,
            "the disk has no partition",
            "export the whole system disk with its partitions",
        ));
    };
    let where_ = format!(
        "partition {} ({}, {} at {})",
        first.index,
        first.type_name,
        human_size(first.size),
        human_size(first.start)
    );
    let part = disk
        .first()
        .ok_or_else(|| CheckError::Skip("the first partition was not probed".into()))?;
    let kind = match &part.kind {
        Ok(k) => k,
        Err(e) => {
            return Ok(CheckResult::fail(
                ID,
                format!("{where_} cannot be read: {e}"),
                "the image is damaged or truncated: export it again",
            ))
        }
    };
    if let Some(r) = refuse_kind(&where_, kind) {
        return Ok(r);
    }
    let vol = match &part.volume {
        Some(Ok(v)) => v,
        Some(Err(e)) => {
            return Ok(CheckResult::fail(
                ID,
                format!("{where_} has an NTFS boot sector but does not open: {e}"),
                "the file system is damaged: run `chkdsk /f` on the source volume and export \
                 again (export with \"Use Volume Shadow Copy\" so the copy is consistent)",
            ))
        }
        None => {
            return Err(CheckError::Skip(
                "the first partition was not opened".into(),
            ))
        }
    };
    let mut f = Findings::default();
    f.notes.push(format!(
        "{where_} opens as NTFS {}{}",
        vol.version(),
        vol.label()
            .filter(|l| !l.is_empty())
            .map(|l| format!(", label \"{l}\""))
            .unwrap_or_default()
    ));
    volume_state(vol, &mut f);
    match disk.windows() {
        None => f.fails.push((
            format!(
                "no NTFS partition holds \\{}",
                WINDOWS_CONFIG_DIR.replace('/', "\\")
            ),
            "this does not look like a Windows system disk: export the disk that holds C:\\Windows",
        )),
        Some(w) => {
            if w.partition_index() != Some(first.index) {
                f.notes.push(format!(
                    "Windows is on partition {} (NTFS {}, {})",
                    w.partition_index().unwrap_or(0),
                    w.version(),
                    human_size(w.len())
                ));
                volume_state(w, &mut f);
            }
            system_hive_state(w, &mut f);
        }
    }
    Ok(verdict(f))
}

/// The failure for a first partition that is not a plain NTFS volume.
fn refuse_kind(where_: &str, kind: &FsKind) -> Option<CheckResult> {
    Some(match kind {
        FsKind::Ntfs => return None,
        FsKind::BitLocker => CheckResult::fail(
            ID,
            format!("{where_} is encrypted with BitLocker"),
            "turn BitLocker off (`manage-bde -off C:`, or Control Panel > BitLocker) and \
             wait until decryption has finished, then export again",
        ),
        FsKind::Zeros { backup_ntfs: true } | FsKind::Unknown { backup_ntfs: true } => {
            CheckResult::fail(
                ID,
                format!(
                    "{where_}: the NTFS boot sector is damaged ({}) but the backup boot sector \
                     at the partition's end is intact",
                    kind.describe()
                ),
                "repair the source volume (`chkdsk /f`, or restore the boot sector from its \
                 backup with `ntfsfix`/TestDisk) and export again",
            )
        }
        other => CheckResult::fail(
            ID,
            format!("{where_} is {}, not NTFS", other.describe()),
            "the first partition must be the Windows NTFS volume (the guide checks it with \
             `mount /dev/nbd0p1`): export the Windows system disk, with System Reserved or \
             C: first",
        ),
    })
}

/// `\Windows\System32\config\SYSTEM` exists and starts with the regf signature.
fn system_hive_state(w: &Volume, f: &mut Findings) {
    const SYSTEM: &str = "Windows/System32/config/SYSTEM";
    match w.stat(SYSTEM) {
        Ok(st) if !st.is_dir => match w.read_head(SYSTEM, 4) {
            Ok(h) if h == b"regf" => f.notes.push(format!(
                "\\Windows\\System32\\config\\SYSTEM is readable ({})",
                human_size(st.size)
            )),
            Ok(_) => f.fails.push((
                "\\Windows\\System32\\config\\SYSTEM is not a registry hive (no regf \
                 signature)"
                    .into(),
                "the SYSTEM hive is damaged: export again from a consistent snapshot",
            )),
            Err(e) => f.fails.push((
                format!("\\Windows\\System32\\config\\SYSTEM cannot be read: {e}"),
                "the file system is damaged: run `chkdsk /f` and export again",
            )),
        },
        Err(e) if !is_not_found(&e) => f.fails.push((
            format!("\\Windows\\System32\\config\\SYSTEM cannot be read: {e}"),
            "the file system is damaged: run `chkdsk /f` and export again",
        )),
        _ => f.fails.push((
            "\\Windows\\System32\\config\\SYSTEM is missing".into(),
            "the Windows installation is incomplete: export the system disk again",
        )),
    }
}

/// Fail on any failure, else warn on any warning, else pass; the notes say what was seen.
fn verdict(f: Findings) -> CheckResult {
    let base = f.notes.join("; ");
    let join = |v: &[(String, &str)]| {
        v.iter()
            .map(|(m, _)| m.as_str())
            .collect::<Vec<_>>()
            .join("; ")
    };
    if let Some((_, hint)) = f.fails.first() {
        CheckResult::fail(ID, format!("{} ({base})", join(&f.fails)), *hint)
    } else if let Some((_, hint)) = f.warns.first() {
        CheckResult::warn(ID, format!("{base}; {}", join(&f.warns)), *hint)
    } else {
        CheckResult::pass(ID, base)
    }
}

/// Dirty flag (warning) and hibernation (failure) of one volume.
fn volume_state(vol: &Volume, f: &mut Findings) {
    let which = match vol.partition_index() {
        Some(0) | None => "the volume".to_string(),
        Some(i) => format!("partition {i}"),
    };
    if vol.is_dirty() {
        f.warns.push((
            format!("{which} is marked dirty (not cleanly unmounted, or errors were found)"),
            "run `chkdsk /f` on the source volume (or export from a Volume Shadow Copy) and \
             export again",
        ));
    }
    match vol.hibernation() {
        Ok(Some(h)) => f.fails.push((
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
        Err(e) => f.warns.push((
            format!("{which}: hiberfil.sys could not be checked: {e}"),
            "check the volume with `chkdsk` on the source",
        )),
    }
}
