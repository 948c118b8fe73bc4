//! The MBR: the four primary entries (decoded with `mbrman`) and the extended-partition chain
//! (walked by us, bounded and loop-safe, since a hostile chain can point anywhere).

use std::sync::Arc;

use super::mbr_type_name;
use super::{problem, read, EntryKind, Partition, Problem, ProblemCode, MAX_LOGICAL, SECTOR};
use crate::error::{Error, Result};
use crate::image::{BlockDevice, DeviceReader};

/// A primary MBR that decoded: its disk signature and its entries (primary, extended,
/// logical).
pub(super) struct Mbr {
    pub disk_signature: u32,
    pub entries: Vec<Partition>,
}

/// A raw 16-byte MBR/EBR entry.
#[derive(Clone, Copy)]
struct RawEntry {
    boot: u8,
    sys: u8,
    start: u32,
    sectors: u32,
}

impl RawEntry {
    fn parse(b: &[u8]) -> RawEntry {
        RawEntry {
            boot: b[0],
            sys: b[4],
            start: u32::from_le_bytes([b[8], b[9], b[10], b[11]]),
            sectors: u32::from_le_bytes([b[12], b[13], b[14], b[15]]),
        }
    }
    fn used(&self) -> bool {
        self.sys != 0 && self.sectors != 0
    }
}

pub(super) fn is_extended(sys: u8) -> bool {
    matches!(sys, 0x05 | 0x0f | 0x85)
}

fn mbr_partition(
    index: u32,
    kind: EntryKind,
    boot: u8,
    sys: u8,
    start_lba: u64,
    sectors: u64,
) -> Partition {
    Partition {
        index,
        kind,
        start: start_lba * SECTOR,
        size: sectors * SECTOR,
        mbr_type: Some(sys),
        gpt_type: None,
        gpt_guid: None,
        name: None,
        type_name: mbr_type_name(sys).to_string(),
        bootable: boot == 0x80,
        efi_system: sys == 0xef,
    }
}

/// Walk an extended partition's chain of EBRs (bounded, loop-safe).
fn walk_extended(
    dev: &Arc<dyn BlockDevice>,
    ext_index: u32,
    ext_start: u64,
    ext_sectors: u64,
    out: &mut Vec<Partition>,
    problems: &mut Vec<Problem>,
) -> Result<()> {
    let size = dev.size();
    let mut rel: u64 = 0;
    let mut next_index = 5u32 + out.iter().filter(|p| p.kind == EntryKind::Logical).count() as u32;
    for step in 0..=MAX_LOGICAL {
        if step == MAX_LOGICAL {
            problem(
                problems,
                ProblemCode::ExtendedChain,
                format!(
                    "the extended partition {ext_index} chains more than {MAX_LOGICAL} logical \
                     partitions; the rest were not read"
                ),
            );
            break;
        }
        let ebr_lba = ext_start + rel;
        let off = ebr_lba * SECTOR;
        if off + SECTOR > size {
            problem(
                problems,
                ProblemCode::ExtendedChain,
                format!(
                    "the extended partition {ext_index} links to an EBR at sector {ebr_lba}, past \
                     the end of the disk"
                ),
            );
            break;
        }
        let s = read(dev, off, SECTOR as usize)?;
        if s[510..512] != [0x55, 0xAA] {
            if step > 0 {
                problem(
                    problems,
                    ProblemCode::ExtendedChain,
                    format!(
                        "the extended partition {ext_index} links to sector {ebr_lba}, which is \
                         not an EBR (no 0x55AA signature)"
                    ),
                );
            }
            break;
        }
        let data = RawEntry::parse(&s[446..462]);
        let link = RawEntry::parse(&s[462..478]);
        if data.used() {
            out.push(mbr_partition(
                next_index,
                EntryKind::Logical,
                data.boot,
                data.sys,
                ebr_lba + data.start as u64,
                data.sectors as u64,
            ));
            next_index += 1;
        }
        if !link.used() || !is_extended(link.sys) {
            break;
        }
        let next = link.start as u64;
        if next <= rel {
            problem(
                problems,
                ProblemCode::ExtendedChain,
                format!(
                    "the extended partition {ext_index}'s EBR at sector {ebr_lba} links back to \
                     sector {} (a loop); the chain was cut there",
                    ext_start + next
                ),
            );
            break;
        }
        if next >= ext_sectors {
            problem(
                problems,
                ProblemCode::ExtendedChain,
                format!(
                    "the extended partition {ext_index}'s EBR at sector {ebr_lba} links to sector \
                     {}, outside the extended partition",
                    ext_start + next
                ),
            );
            break;
        }
        rel = next;
    }
    Ok(())
}

/// Decode sector 0 as an MBR (`s0`, already read) and follow its extended chain. `Ok(None)`
/// when it is not a valid MBR (the reason is a problem).
pub(super) fn read_mbr(
    dev: &Arc<dyn BlockDevice>,
    s0: &[u8],
    problems: &mut Vec<Problem>,
) -> Result<Option<Mbr>> {
    let mut r = DeviceReader::new(dev.clone());
    let h = match mbrman::MBRHeader::read_from(&mut r) {
        Ok(h) => h,
        Err(mbrman::Error::InvalidBootFlag) => {
            let bad = (0..4)
                .map(|i| (i + 1, s0[446 + 16 * i]))
                .find(|(_, b)| *b != 0 && *b != 0x80)
                .unwrap_or((0, 0));
            problem(
                problems,
                ProblemCode::NotAnMbr,
                format!(
                    "sector 0 ends with 0x55AA but is not a valid MBR: entry {} has boot flag \
                     {:#04x} (only 0x00 and 0x80 are valid)",
                    bad.0, bad.1
                ),
            );
            return Ok(None);
        }
        Err(mbrman::Error::Io(e)) => return Err(Error::io(dev.name(), e)),
        Err(e) => {
            problem(
                problems,
                ProblemCode::NotAnMbr,
                format!("sector 0 is not a valid MBR: {e}"),
            );
            return Ok(None);
        }
    };
    let mut entries = primary_entries(&h, problems);
    let exts: Vec<(u32, u64, u64)> = entries
        .iter()
        .filter(|p| p.kind == EntryKind::Extended)
        .map(|p| (p.index, p.start / SECTOR, p.size / SECTOR))
        .collect();
    if exts.len() > 1 {
        problem(
            problems,
            ProblemCode::ExtendedChain,
            format!(
                "{} extended partitions in the MBR; only the first is followed",
                exts.len()
            ),
        );
    }
    if let Some(&(idx, start, sectors)) = exts.first() {
        walk_extended(dev, idx, start, sectors, &mut entries, problems)?;
    }
    Ok(Some(Mbr {
        disk_signature: u32::from_le_bytes(h.disk_signature),
        entries,
    }))
}

/// The used primary entries (one active at most, or a problem).
fn primary_entries(h: &mbrman::MBRHeader, problems: &mut Vec<Problem>) -> Vec<Partition> {
    let mut entries = Vec::new();
    let mut active = 0;
    for (i, e) in h.iter() {
        if !e.is_used() || e.sectors == 0 {
            continue;
        }
        if e.is_active() {
            active += 1;
        }
        let kind = if is_extended(e.sys) {
            EntryKind::Extended
        } else {
            EntryKind::Primary
        };
        entries.push(mbr_partition(
            i as u32,
            kind,
            e.boot,
            e.sys,
            e.starting_lba as u64,
            e.sectors as u64,
        ));
    }
    if active > 1 {
        problem(
            problems,
            ProblemCode::MultipleActive,
            format!("{active} MBR entries are marked active (bootable); there should be one"),
        );
    }
    entries
}
