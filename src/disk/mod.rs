//! Partition tables: MBR, GPT (protective MBR), hybrid MBR, Windows dynamic disks (LDM).
//!
//! [`analyze`] reads a guest disk's partition table and returns data plus a list of
//! [`Problem`]s; it makes no pass/fail decision. The primary MBR is decoded with `mbrman`, the
//! GPT header and entries with `gpt` (after our own bounds checks, since the crate asserts on
//! and allocates from header fields), and extended-partition chains with our own bounded walk.

mod classify;
mod geometry;
mod gpt;
mod mbr;

use std::sync::Arc;

use serde::Serialize;

use crate::error::Result;
use crate::image::BlockDevice;

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

pub(super) fn read(dev: &Arc<dyn BlockDevice>, off: u64, len: usize) -> Result<Vec<u8>> {
    let mut buf = vec![0u8; len];
    dev.read_at(&mut buf, off)?;
    Ok(buf)
}

pub(super) fn upper(x: impl std::fmt::Display) -> String {
    x.to_string().to_uppercase()
}

pub(super) fn problem(t: &mut Vec<Problem>, code: ProblemCode, message: impl Into<String>) {
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
    let bytes = read(dev, 0, SECTOR as usize)?;
    let s0 = classify::Sector0 {
        signed: bytes[510..512] == [0x55, 0xAA],
        vbr: boot_sector_kind(&bytes),
        bytes: &bytes,
    };
    let gpt = gpt::read_gpt(dev, &mut problems)?;
    // A volume boot sector at sector 0 is not an MBR.
    let mbr = if s0.signed && s0.vbr.is_none() {
        mbr::read_mbr(dev, &bytes, &mut problems)?
    } else {
        None
    };
    classify::classify(&mut t, &s0, mbr, gpt, &mut problems);
    geometry::check(&t, size, &mut problems);
    t.efi_system_partitions = t
        .partitions
        .iter()
        .filter(|p| p.efi_system)
        .map(|p| p.index)
        .collect();
    t.problems = problems;
    Ok(t)
}
