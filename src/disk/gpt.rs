//! GPT: the primary header at LBA 1, else the backup in the last sector, and the entry array.
//!
//! Headers are decoded with the `gpt` crate, but only after our own checks of the fields it
//! would assert on or allocate from (entry size, entry count, where the array lies).

use std::sync::Arc;

use super::{gpt_type_name, problem, upper, EntryKind, Partition, Problem, ProblemCode};
use super::{GPT_EFI_SYSTEM, MAX_GPT_ENTRIES, SECTOR};
use crate::error::{Error, Result};
use crate::image::{BlockDevice, DeviceReader};

/// A GPT that was read: header facts plus entries.
pub(super) struct GptFound {
    pub disk_guid: String,
    pub partitions: Vec<Partition>,
}

/// Note a problem with the `which` GPT header at `lba`.
fn bad_header(problems: &mut Vec<Problem>, which: &str, lba: u64, msg: String) {
    problem(
        problems,
        ProblemCode::GptHeader,
        format!("the {which} GPT header at sector {lba} {msg}"),
    );
}

/// Read and check a GPT header at `lba` (1 for the primary, the last LBA for the backup):
/// `Ok(None)` when there is no "EFI PART" signature or it is unusable (a problem says why).
fn read_header(
    dev: &Arc<dyn BlockDevice>,
    lba: u64,
    which: &str,
    problems: &mut Vec<Problem>,
) -> Result<Option<gpt::header::Header>> {
    use gpt::disk::LogicalBlockSize;
    use gpt::header::HeaderError;
    let size = dev.size();
    if lba == 0 || (lba + 1) * SECTOR > size {
        return Ok(None);
    }
    // A window whose LBA 1 is `lba` of the disk: the crate reads its header at LBA 1.
    let mut win = DeviceReader::window(dev.clone(), (lba - 1) * SECTOR, 2 * SECTOR);
    let h = match gpt::header::read_header_from_arbitrary_device(&mut win, LogicalBlockSize::Lb512)
    {
        Ok(h) => h,
        Err(HeaderError::InvalidGptSignature) => return Ok(None),
        Err(HeaderError::InvalidCRC32Checksum) => {
            problem(
                problems,
                ProblemCode::GptHeader,
                format!("the {which} GPT header at sector {lba} has a bad CRC32"),
            );
            return Ok(None);
        }
        Err(HeaderError::Io(e)) => return Err(Error::io(dev.name(), e)),
        Err(e) => {
            problem(
                problems,
                ProblemCode::GptHeader,
                format!("the {which} GPT header at sector {lba} cannot be read: {e:?}"),
            );
            return Ok(None);
        }
    };
    let bad = |problems: &mut Vec<Problem>, msg: String| bad_header(problems, which, lba, msg);
    if h.part_size != 128 {
        bad(
            problems,
            format!(
                "has entries of {} bytes (only 128 is supported)",
                h.part_size
            ),
        );
        return Ok(None);
    }
    if h.num_parts > MAX_GPT_ENTRIES {
        bad(
            problems,
            format!(
                "claims {} entries (more than {MAX_GPT_ENTRIES})",
                h.num_parts
            ),
        );
        return Ok(None);
    }
    let arr_end = h
        .part_start
        .checked_mul(SECTOR)
        .and_then(|s| s.checked_add(h.num_parts as u64 * 128));
    match arr_end {
        Some(e) if e <= size => {}
        _ => {
            bad(
                problems,
                format!(
                    "places its entry array at sector {}, past the end of the disk",
                    h.part_start
                ),
            );
            return Ok(None);
        }
    }
    if h.current_lba != lba {
        bad(
            problems,
            format!("says it lies at sector {}", h.current_lba),
        );
    }
    Ok(Some(h))
}

/// Read and check a GPT header at `lba` and its entry array. `Ok(None)` when there is no
/// usable header.
fn read_gpt_at(
    dev: &Arc<dyn BlockDevice>,
    lba: u64,
    which: &str,
    problems: &mut Vec<Problem>,
) -> Result<Option<GptFound>> {
    use gpt::disk::LogicalBlockSize;
    let Some(h) = read_header(dev, lba, which, problems)? else {
        return Ok(None);
    };
    let bad = |problems: &mut Vec<Problem>, msg: String| bad_header(problems, which, lba, msg);
    let mut r = DeviceReader::new(dev.clone());
    let entries = match gpt::partition::file_read_partitions(&mut r, &h, LogicalBlockSize::Lb512) {
        Ok(e) => e,
        Err(e) => {
            bad(problems, format!("has an unreadable entry array: {e}"));
            return Ok(None);
        }
    };
    let mut partitions = Vec::new();
    for (idx, p) in entries.iter() {
        let ty = upper(p.part_type_guid.guid);
        if ty == "00000000-0000-0000-0000-000000000000" {
            continue;
        }
        if p.last_lba < p.first_lba {
            bad(
                problems,
                format!(
                    "has entry {idx} ending (sector {}) before it starts (sector {})",
                    p.last_lba, p.first_lba
                ),
            );
            continue;
        }
        let sectors = p.last_lba - p.first_lba + 1;
        partitions.push(Partition {
            index: *idx,
            kind: EntryKind::Gpt,
            start: p.first_lba.saturating_mul(SECTOR),
            size: sectors.saturating_mul(SECTOR),
            mbr_type: None,
            type_name: gpt_type_name(&ty).to_string(),
            efi_system: ty == GPT_EFI_SYSTEM,
            gpt_type: Some(ty),
            gpt_guid: Some(upper(p.part_guid)),
            name: Some(p.name.clone()),
            bootable: p.flags & 4 != 0,
        });
    }
    Ok(Some(GptFound {
        disk_guid: upper(h.disk_guid),
        partitions,
    }))
}

/// Primary GPT, else the backup (with a problem), else `None`.
pub(super) fn read_gpt(
    dev: &Arc<dyn BlockDevice>,
    problems: &mut Vec<Problem>,
) -> Result<Option<GptFound>> {
    let primary = read_gpt_at(dev, 1, "primary", problems)?;
    let last = dev.size() / SECTOR;
    if last < 3 {
        return Ok(primary);
    }
    let mut backup_problems = Vec::new();
    let backup = read_gpt_at(dev, last - 1, "backup", &mut backup_problems)?;
    match (primary, backup) {
        (Some(p), Some(_)) => Ok(Some(p)),
        (Some(p), None) => {
            problems.extend(backup_problems);
            problem(
                problems,
                ProblemCode::GptHeader,
                format!(
                    "no valid backup GPT header in the last sector ({})",
                    last - 1
                ),
            );
            Ok(Some(p))
        }
        (None, Some(b)) => {
            problem(
                problems,
                ProblemCode::GptHeader,
                "the primary GPT header (sector 1) is missing or damaged; the backup header was used",
            );
            Ok(Some(b))
        }
        (None, None) => Ok(None),
    }
}
