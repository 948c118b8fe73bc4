//! Partition tables: MBR, GPT (protective MBR), hybrid MBR, Windows dynamic disks (LDM).
//!
//! [`analyze`] reads a guest disk's partition table and returns data plus a list of
//! [`Problem`]s; it makes no pass/fail decision. The primary MBR is decoded with `mbrman`, the
//! GPT header and entries with `gpt` (after our own bounds checks, since the crate asserts on
//! and allocates from header fields), and extended-partition chains with our own bounded walk.

use std::sync::Arc;

use serde::Serialize;

use crate::error::{Error, Result};
use crate::image::{BlockDevice, DeviceReader};

/// Sector size assumed for MBR tables (virtual disks exported from Windows use 512).
pub const SECTOR: u64 = 512;
/// Largest disk an MBR can address with 512-byte sectors: 2^32 sectors (2 TiB).
pub const MBR_LIMIT: u64 = (1u64 << 32) * SECTOR;
/// Most logical partitions followed in an extended-partition chain.
pub const MAX_LOGICAL: usize = 128;
/// Most GPT entries accepted (the standard array holds 128; we allow some slack).
pub const MAX_GPT_ENTRIES: u32 = 1024;

/// GPT type GUID of an EFI system partition.
pub const GPT_EFI_SYSTEM: &str = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B";
/// GPT type GUID of a Windows basic data partition.
pub const GPT_BASIC_DATA: &str = "EBD0A0A2-B9E5-4433-87C0-68B6B72699C7";
/// GPT type GUID of a Microsoft reserved partition.
pub const GPT_MS_RESERVED: &str = "E3C9E316-0B5C-4DB8-817D-F92DF00215AE";
/// GPT type GUID of Windows LDM metadata (dynamic disk).
pub const GPT_LDM_METADATA: &str = "5808C8AA-7E8F-42E0-85D2-E1E90434CFB3";
/// GPT type GUID of Windows LDM data (dynamic disk).
pub const GPT_LDM_DATA: &str = "AF9B60A0-1431-4F62-BC68-3311714A69AD";
/// GPT type GUID of a Windows recovery partition.
pub const GPT_WINDOWS_RECOVERY: &str = "DE94BBA4-06D1-4D40-A16A-BFD50179D6AC";

/// What kind of partition table the disk has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TableKind {
    /// A classic MBR (DOS) table.
    Mbr,
    /// GPT: a protective MBR (type 0xEE) or a valid "EFI PART" header at LBA 1.
    Gpt,
    /// An MBR with a 0xEE entry next to other entries.
    HybridMbr,
    /// No table: no 0x55AA signature, not a valid MBR, or all four entries empty.
    None,
    /// A Windows dynamic disk (MBR type 0x42 or GPT LDM partitions).
    Ldm,
}

impl TableKind {
    pub fn as_str(self) -> &'static str {
        match self {
            TableKind::Mbr => "mbr",
            TableKind::Gpt => "gpt",
            TableKind::HybridMbr => "hybrid_mbr",
            TableKind::None => "none",
            TableKind::Ldm => "ldm",
        }
    }
}

impl std::fmt::Display for TableKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which table an entry comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EntryKind {
    /// One of the four MBR slots.
    Primary,
    /// An MBR extended-partition container (type 0x05, 0x0F, 0x85).
    Extended,
    /// A logical partition inside an extended chain (numbered from 5).
    Logical,
    /// A GPT entry.
    Gpt,
}

/// One partition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Partition {
    /// Number as Linux and Windows tools count it: MBR slot 1-4, logicals from 5, GPT entry
    /// index from 1.
    pub index: u32,
    pub kind: EntryKind,
    /// Start on the disk, in bytes.
    pub start: u64,
    /// Size in bytes.
    pub size: u64,
    /// MBR type byte (for MBR entries).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mbr_type: Option<u8>,
    /// GPT type GUID, upper case (for GPT entries).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gpt_type: Option<String>,
    /// GPT unique partition GUID, upper case.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gpt_guid: Option<String>,
    /// GPT partition name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// A readable name for the type ("NTFS/exFAT", "EFI system", ...).
    pub type_name: String,
    /// MBR active flag (0x80); for GPT the legacy-BIOS-bootable attribute (bit 2).
    pub bootable: bool,
    /// An EFI system partition (MBR 0xEF, GPT C12A7328-...).
    pub efi_system: bool,
}

impl Partition {
    /// End offset (exclusive), saturating.
    pub fn end(&self) -> u64 {
        self.start.saturating_add(self.size)
    }
    /// Whether this entry holds data (not an extended container, not a protective 0xEE).
    pub fn holds_data(&self) -> bool {
        self.kind != EntryKind::Extended && self.mbr_type != Some(0xEE)
    }
}

/// What is wrong (or notable) about a table. Each code has its own message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ProblemCode {
    /// Sector 0 has no 0x55AA signature.
    NoSignature,
    /// The signature is there but the sector is not a valid MBR (bad boot flag, a volume boot
    /// sector at sector 0).
    NotAnMbr,
    /// Valid MBR with all four entries empty.
    EmptyTable,
    /// The disk uses GPT.
    Gpt,
    /// A hybrid MBR (0xEE plus other entries).
    HybridMbr,
    /// A Windows dynamic disk.
    Ldm,
    /// Two entries overlap.
    Overlap,
    /// An entry runs past the end of the disk.
    PastEnd,
    /// The disk is larger than an MBR can address.
    TooLargeForMbr,
    /// An entry lies (partly) beyond what an MBR can address.
    BeyondMbrLimit,
    /// The extended-partition chain is broken, loops or is too long.
    ExtendedChain,
    /// A GPT header or entry array is damaged (bad CRC, backup missing, impossible fields).
    GptHeader,
    /// More than one MBR entry is marked active.
    MultipleActive,
}

/// One problem, with a message that says what and where.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    pub code: ProblemCode,
    pub message: String,
}

/// Everything [`analyze`] found.
#[derive(Debug, Clone, Serialize)]
pub struct PartitionTable {
    pub kind: TableKind,
    /// Logical sector size used to read the table.
    pub sector_size: u64,
    /// Virtual size of the disk.
    pub disk_size: u64,
    /// MBR disk signature (bytes 440..444 read as little-endian), as Windows shows it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disk_signature: Option<u32>,
    /// GPT disk GUID, upper case.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disk_guid: Option<String>,
    /// The partitions an operating system would use: GPT entries on a GPT disk (or a hybrid
    /// one with a valid GPT), otherwise the MBR entries (primary, extended, logical).
    pub partitions: Vec<Partition>,
    /// The raw MBR entries (primary, extended, logical) when sector 0 is a valid MBR; on an MBR
    /// disk this equals `partitions`.
    pub mbr_entries: Vec<Partition>,
    /// Indexes (in `partitions`) of EFI system partitions.
    pub efi_system_partitions: Vec<u32>,
    /// What a file-system boot sector at sector 0 looks like, when there is no table.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub boot_sector_at_0: Option<String>,
    pub problems: Vec<Problem>,
}

impl PartitionTable {
    /// Whether a problem with `code` was found.
    pub fn has(&self, code: ProblemCode) -> bool {
        self.problems.iter().any(|p| p.code == code)
    }
    /// The partition numbered `index`.
    pub fn partition(&self, index: u32) -> Option<&Partition> {
        self.partitions.iter().find(|p| p.index == index)
    }
    /// Partitions that hold data (no extended containers, no protective 0xEE), by start.
    pub fn data_partitions(&self) -> Vec<&Partition> {
        let mut v: Vec<&Partition> = self.partitions.iter().filter(|p| p.holds_data()).collect();
        v.sort_by_key(|p| (p.start, p.index));
        v
    }
    /// The first partition in table order (lowest index) that holds data.
    pub fn first_partition(&self) -> Option<&Partition> {
        self.partitions
            .iter()
            .filter(|p| p.holds_data())
            .min_by_key(|p| p.index)
    }
}

/// Readable name of an MBR type byte.
pub fn mbr_type_name(t: u8) -> &'static str {
    match t {
        0x00 => "empty",
        0x01 => "FAT12",
        0x04 | 0x06 | 0x0e => "FAT16",
        0x05 => "extended",
        0x07 => "NTFS/exFAT",
        0x0b | 0x0c => "FAT32",
        0x0f => "extended (LBA)",
        0x12 => "OEM diagnostics/recovery",
        0x17 => "hidden NTFS",
        0x27 => "Windows recovery (hidden NTFS)",
        0x42 => "Windows dynamic disk (LDM)",
        0x82 => "Linux swap",
        0x83 => "Linux",
        0x85 => "Linux extended",
        0x8e => "Linux LVM",
        0xee => "GPT protective",
        0xef => "EFI system",
        0xfd => "Linux RAID",
        _ => "unknown",
    }
}

/// Readable name of a GPT type GUID (upper case).
pub fn gpt_type_name(guid: &str) -> &'static str {
    match guid {
        GPT_EFI_SYSTEM => "EFI system",
        GPT_BASIC_DATA => "Microsoft basic data",
        GPT_MS_RESERVED => "Microsoft reserved",
        GPT_LDM_METADATA => "Windows LDM metadata",
        GPT_LDM_DATA => "Windows LDM data",
        GPT_WINDOWS_RECOVERY => "Windows recovery",
        "0FC63DAF-8483-4772-8E79-3D69D8477DE4" => "Linux filesystem",
        "21686148-6449-6E6F-744E-656564454649" => "BIOS boot",
        "0657FD6D-A4AB-43C4-84E5-0933C84B4F4F" => "Linux swap",
        "E6D6D379-F507-44C2-A23C-238F2A3DF928" => "Linux LVM",
        _ => "unknown",
    }
}

/// What a volume boot sector (or other signature) at the start of `sector` looks like.
/// Shared with [`crate::fs`], which uses it to say what a non-NTFS partition is.
pub fn boot_sector_kind(sector: &[u8]) -> Option<&'static str> {
    let at = |off: usize, s: &[u8]| sector.get(off..off + s.len()) == Some(s);
    if at(3, b"NTFS    ") {
        Some("NTFS")
    } else if at(3, b"-FVE-FS-") {
        Some("BitLocker")
    } else if at(3, b"EXFAT   ") {
        Some("exFAT")
    } else if at(0x52, b"FAT32   ") {
        Some("FAT32")
    } else if at(0x36, b"FAT16   ") {
        Some("FAT16")
    } else if at(0x36, b"FAT12   ") {
        Some("FAT12")
    } else if at(0x36, b"FAT     ")
        || at(3, b"MSDOS5.0")
        || at(3, b"mkfs.fat")
        || at(3, b"MSWIN4.1")
    {
        Some("FAT")
    } else {
        None
    }
}

fn read(dev: &Arc<dyn BlockDevice>, off: u64, len: usize) -> Result<Vec<u8>> {
    let mut buf = vec![0u8; len];
    dev.read_at(&mut buf, off)?;
    Ok(buf)
}

fn upper(x: impl std::fmt::Display) -> String {
    x.to_string().to_uppercase()
}

fn problem(t: &mut Vec<Problem>, code: ProblemCode, message: impl Into<String>) {
    let message = message.into();
    if !t.iter().any(|p| p.code == code && p.message == message) {
        t.push(Problem { code, message });
    }
}

fn human(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut v = bytes as f64;
    let mut u = 0;
    v /= 1024.0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    format!("{v:.1} {}", UNITS[u])
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

fn is_extended(sys: u8) -> bool {
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

/// A GPT that was read: header facts plus entries.
struct GptFound {
    disk_guid: String,
    partitions: Vec<Partition>,
}

/// Read and check a GPT header at `lba` (1 for the primary, the last LBA for the backup) and
/// its entry array. `Ok(None)` when there is no "EFI PART" signature.
fn read_gpt_at(
    dev: &Arc<dyn BlockDevice>,
    lba: u64,
    which: &str,
    problems: &mut Vec<Problem>,
) -> Result<Option<GptFound>> {
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
    let bad = |problems: &mut Vec<Problem>, msg: String| {
        problem(
            problems,
            ProblemCode::GptHeader,
            format!("the {which} GPT header at sector {lba} {msg}"),
        );
    };
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
fn read_gpt(dev: &Arc<dyn BlockDevice>, problems: &mut Vec<Problem>) -> Result<Option<GptFound>> {
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

/// Read the partition table of a guest disk.
///
/// I/O errors are errors; everything about the table's content (missing, damaged, unusual) is
/// reported as data: [`PartitionTable::kind`] and [`PartitionTable::problems`].
pub fn analyze(dev: &Arc<dyn BlockDevice>) -> Result<PartitionTable> {
    let size = dev.size();
    let mut problems = Vec::new();
    let mut t = PartitionTable {
        kind: TableKind::None,
        sector_size: SECTOR,
        disk_size: size,
        disk_signature: None,
        disk_guid: None,
        partitions: Vec::new(),
        mbr_entries: Vec::new(),
        efi_system_partitions: Vec::new(),
        boot_sector_at_0: None,
        problems: Vec::new(),
    };
    if size > MBR_LIMIT {
        problem(
            &mut problems,
            ProblemCode::TooLargeForMbr,
            format!(
                "the disk is {size} bytes ({}), larger than the 2 TiB an MBR can address with \
                 512-byte sectors",
                human(size)
            ),
        );
    }
    if size < SECTOR {
        problem(
            &mut problems,
            ProblemCode::NoSignature,
            format!("the disk is only {size} bytes, smaller than one sector: no partition table"),
        );
        t.problems = problems;
        return Ok(t);
    }
    let s0 = read(dev, 0, SECTOR as usize)?;
    let signed = s0[510..512] == [0x55, 0xAA];
    let vbr = boot_sector_kind(&s0);
    let gpt = read_gpt(dev, &mut problems)?;

    // Decode the primary MBR with mbrman; a volume boot sector at sector 0 is not an MBR.
    let mut header = None;
    if signed && vbr.is_none() {
        let mut r = DeviceReader::new(dev.clone());
        match mbrman::MBRHeader::read_from(&mut r) {
            Ok(h) => header = Some(h),
            Err(mbrman::Error::InvalidBootFlag) => {
                let bad = (0..4)
                    .map(|i| (i + 1, s0[446 + 16 * i]))
                    .find(|(_, b)| *b != 0 && *b != 0x80)
                    .unwrap_or((0, 0));
                problem(
                    &mut problems,
                    ProblemCode::NotAnMbr,
                    format!(
                        "sector 0 ends with 0x55AA but is not a valid MBR: entry {} has boot flag \
                         {:#04x} (only 0x00 and 0x80 are valid)",
                        bad.0, bad.1
                    ),
                );
            }
            Err(mbrman::Error::Io(e)) => return Err(Error::io(dev.name(), e)),
            Err(e) => {
                problem(
                    &mut problems,
                    ProblemCode::NotAnMbr,
                    format!("sector 0 is not a valid MBR: {e}"),
                );
            }
        }
    }

    let mut mbr_entries = Vec::new();
    if let Some(h) = &header {
        t.disk_signature = Some(u32::from_le_bytes(h.disk_signature));
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
            mbr_entries.push(mbr_partition(
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
                &mut problems,
                ProblemCode::MultipleActive,
                format!("{active} MBR entries are marked active (bootable); there should be one"),
            );
        }
        let exts: Vec<(u32, u64, u64)> = mbr_entries
            .iter()
            .filter(|p| p.kind == EntryKind::Extended)
            .map(|p| (p.index, p.start / SECTOR, p.size / SECTOR))
            .collect();
        if exts.len() > 1 {
            problem(
                &mut problems,
                ProblemCode::ExtendedChain,
                format!(
                    "{} extended partitions in the MBR; only the first is followed",
                    exts.len()
                ),
            );
        }
        if let Some(&(idx, start, sectors)) = exts.first() {
            walk_extended(dev, idx, start, sectors, &mut mbr_entries, &mut problems)?;
        }
    }

    let protective = mbr_entries.iter().any(|p| p.mbr_type == Some(0xEE));
    let others = mbr_entries.iter().any(|p| p.mbr_type != Some(0xEE));
    let ldm_mbr = mbr_entries.iter().any(|p| p.mbr_type == Some(0x42));
    let ldm_gpt = gpt.as_ref().is_some_and(|g| {
        g.partitions.iter().any(|p| {
            matches!(
                p.gpt_type.as_deref(),
                Some(GPT_LDM_METADATA) | Some(GPT_LDM_DATA)
            )
        })
    });

    if header.is_some() && protective {
        if let Some(g) = &gpt {
            t.disk_guid = Some(g.disk_guid.clone());
            t.partitions = g.partitions.clone();
        } else {
            problem(
                &mut problems,
                ProblemCode::GptHeader,
                "the MBR has a GPT protective entry (type 0xEE) but no valid GPT header was found",
            );
            t.partitions = mbr_entries
                .iter()
                .filter(|p| p.mbr_type != Some(0xEE))
                .cloned()
                .collect();
        }
        if others {
            t.kind = TableKind::HybridMbr;
            problem(
                &mut problems,
                ProblemCode::HybridMbr,
                "hybrid MBR: a GPT protective entry (type 0xEE) next to other MBR entries",
            );
        } else {
            t.kind = TableKind::Gpt;
        }
        problem(
            &mut problems,
            ProblemCode::Gpt,
            "the disk is partitioned with GPT, not MBR",
        );
    } else if header.is_some() && others {
        t.kind = TableKind::Mbr;
        t.partitions = mbr_entries.clone();
        if gpt.is_some() {
            problem(
                &mut problems,
                ProblemCode::GptHeader,
                "a valid GPT header lies at sector 1 next to an MBR table without a protective \
                 entry (left over from an earlier GPT?); some tools will read the disk as GPT",
            );
        }
    } else if let Some(g) = &gpt {
        // No usable MBR (no signature or all entries empty) but a valid GPT header.
        t.kind = TableKind::Gpt;
        t.disk_guid = Some(g.disk_guid.clone());
        t.partitions = g.partitions.clone();
        problem(
            &mut problems,
            ProblemCode::Gpt,
            "the disk is partitioned with GPT (without a protective MBR), not MBR",
        );
    } else {
        t.kind = TableKind::None;
        t.boot_sector_at_0 = vbr.map(str::to_string);
        if let Some(fs) = vbr {
            problem(
                &mut problems,
                ProblemCode::NotAnMbr,
                format!(
                    "no partition table: sector 0 is the boot sector of an {fs} volume, so this \
                     is an image of one partition, not of a whole disk"
                ),
            );
        } else if !signed {
            let zero = s0.iter().all(|&b| b == 0);
            problem(
                &mut problems,
                ProblemCode::NoSignature,
                if zero {
                    "no partition table: sector 0 is all zeros".to_string()
                } else {
                    "no partition table: sector 0 has no 0x55AA boot signature".to_string()
                },
            );
        } else if header.is_some() {
            problem(
                &mut problems,
                ProblemCode::EmptyTable,
                "the MBR partition table is empty: all four entries are unused",
            );
        }
    }
    if ldm_mbr || ldm_gpt {
        t.kind = TableKind::Ldm;
        problem(
            &mut problems,
            ProblemCode::Ldm,
            if ldm_mbr {
                "Windows dynamic disk (LDM, MBR partition type 0x42)"
            } else {
                "Windows dynamic disk (LDM partitions in the GPT)"
            },
        );
    }
    t.mbr_entries = mbr_entries;

    // Geometry problems over the partitions an OS would use, plus the raw MBR entries of a
    // hybrid table (the hybrid entries must also make sense).
    let mut lists: Vec<&Vec<Partition>> = vec![&t.partitions];
    if t.kind == TableKind::HybridMbr {
        lists.push(&t.mbr_entries);
    }
    for list in lists {
        for p in list.iter() {
            if p.mbr_type == Some(0xEE) {
                continue;
            }
            let end = p.start.saturating_add(p.size);
            if end > size {
                problem(
                    &mut problems,
                    ProblemCode::PastEnd,
                    format!(
                        "partition {} (bytes {}..{}) runs past the end of the {}-byte disk",
                        p.index, p.start, end, size
                    ),
                );
            }
            if p.kind != EntryKind::Gpt && end > MBR_LIMIT {
                problem(
                    &mut problems,
                    ProblemCode::BeyondMbrLimit,
                    format!(
                        "partition {} ends at byte {end}, beyond the 2 TiB an MBR can address",
                        p.index
                    ),
                );
            }
        }
        for (i, a) in list.iter().enumerate() {
            for b in &list[i + 1..] {
                if a.size == 0
                    || b.size == 0
                    || a.mbr_type == Some(0xEE)
                    || b.mbr_type == Some(0xEE)
                {
                    continue;
                }
                let nested = |x: &Partition, y: &Partition| {
                    x.kind == EntryKind::Extended && y.kind == EntryKind::Logical
                };
                if nested(a, b) || nested(b, a) {
                    continue;
                }
                if a.start < b.end() && b.start < a.end() {
                    problem(
                        &mut problems,
                        ProblemCode::Overlap,
                        format!(
                            "partitions {} (bytes {}..{}) and {} (bytes {}..{}) overlap",
                            a.index,
                            a.start,
                            a.end(),
                            b.index,
                            b.start,
                            b.end()
                        ),
                    );
                }
            }
        }
    }
    // Logical partitions must lie inside their extended container.
    if let Some(ext) = t.mbr_entries.iter().find(|p| p.kind == EntryKind::Extended) {
        for l in t
            .mbr_entries
            .iter()
            .filter(|p| p.kind == EntryKind::Logical)
        {
            if l.start < ext.start || l.end() > ext.end() {
                problem(
                    &mut problems,
                    ProblemCode::ExtendedChain,
                    format!(
                        "logical partition {} (bytes {}..{}) lies outside the extended partition \
                         {} (bytes {}..{})",
                        l.index,
                        l.start,
                        l.end(),
                        ext.index,
                        ext.start,
                        ext.end()
                    ),
                );
            }
        }
    }
    t.efi_system_partitions = t
        .partitions
        .iter()
        .filter(|p| p.efi_system)
        .map(|p| p.index)
        .collect();
    t.problems = problems;
    Ok(t)
}
