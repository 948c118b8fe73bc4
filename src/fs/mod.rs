//! Offline NTFS access: open a partition of a guest disk and read files by path.
//!
//! Built on the `ntfs` crate (read-only), with what it leaves to its callers:
//! - the partition is identified before NTFS is parsed ([`probe`]): BitLocker, FAT, ext, zeros;
//! - boot-sector fields that size allocations are checked before the crate sees them;
//! - every walk the crate does (index B-trees, attribute lists) runs over a reader with a byte
//!   budget, so a looping structure ends in an error instead of a hang;
//! - file data that the crate would return wrongly is refused: NTFS-compressed and EFS-encrypted
//!   streams, reparse points (WOF/CompactOS compression, deduplication, links), and bytes past an
//!   attribute's initialized size (valid data length) are returned as zeros as NTFS defines;
//! - errors name the image, the partition and the record or path that failed.

use std::io::{self, Read, Seek, SeekFrom, Write};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

use ntfs::indexes::NtfsFileNameIndex;
use ntfs::structured_values::{NtfsFileNamespace, NtfsIndexRoot, NtfsVolumeFlags};
use ntfs::{Ntfs, NtfsAttributeFlags, NtfsAttributeType, NtfsError, NtfsFile, NtfsReadSeek};
use serde::Serialize;

use crate::disk::{self, EntryKind, PartitionTable};
use crate::error::{Error, Result};
use crate::image::{BlockDevice, DeviceReader};

/// Default cap on the size of a file read into memory by [`Volume::read`].
pub const DEFAULT_READ_CAP: u64 = 512 << 20;
/// Bytes of metadata one operation (a lookup, a listing) may read before it is treated as a
/// loop in the on-disk structures.
pub const METADATA_BUDGET: u64 = 256 << 20;
/// Largest file or index record accepted (Windows uses 1 KiB and 4 KiB).
pub const MAX_RECORD_SIZE: u32 = 64 * 1024;
/// Most entries returned for one directory.
pub const MAX_DIR_ENTRIES: usize = 1_000_000;
/// Most path components followed.
pub const MAX_PATH_DEPTH: usize = 256;
/// First MFT record of an ordinary file; 0-15 are NTFS metadata files ($MFT, $Volume, ...).
pub const FIRST_USER_RECORD: u64 = 16;
const ROOT_RECORD: u64 = 5;

/// What a partition holds, judged from its first sectors (and the NTFS backup boot sector).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum FsKind {
    /// "NTFS    " OEM ID at offset 3.
    Ntfs,
    /// "-FVE-FS-" OEM ID: a BitLocker-encrypted volume.
    BitLocker,
    /// FAT12/16/32 (by OEM ID or file-system type string).
    Fat { variant: String },
    /// exFAT.
    Exfat,
    /// ext2/3/4 (superblock magic 0xEF53 at byte 1080).
    Ext,
    /// The first 4 KiB are zeros; `backup_ntfs` when the NTFS backup boot sector in the
    /// partition's last sector is intact.
    Zeros { backup_ntfs: bool },
    /// Nothing recognised.
    Unknown { backup_ntfs: bool },
}

impl FsKind {
    /// A phrase for messages: "FAT32", "ext2/3/4", "all zeros".
    pub fn describe(&self) -> String {
        match self {
            FsKind::Ntfs => "NTFS".into(),
            FsKind::BitLocker => "BitLocker-encrypted".into(),
            FsKind::Fat { variant } => variant.clone(),
            FsKind::Exfat => "exFAT".into(),
            FsKind::Ext => "ext2/3/4 (Linux)".into(),
            FsKind::Zeros { .. } => "all zeros (no file system)".into(),
            FsKind::Unknown { .. } => "not a file system imgcheck recognises".into(),
        }
    }
}

/// Identify the file system in `[start, start+len)` of `dev` without parsing it.
pub fn probe(dev: &Arc<dyn BlockDevice>, start: u64, len: u64) -> Result<FsKind> {
    let r = DeviceReader::window(dev.clone(), start, len);
    let n = r.len().min(4096) as usize;
    let mut buf = vec![0u8; n];
    r.read_at(&mut buf, 0)
        .map_err(|e| Error::io(format!("{} (partition at byte {start})", dev.name()), e))?;
    if let Some(kind) = disk::boot_sector_kind(&buf) {
        return Ok(match kind {
            "NTFS" => FsKind::Ntfs,
            "BitLocker" => FsKind::BitLocker,
            "exFAT" => FsKind::Exfat,
            v => FsKind::Fat {
                variant: v.to_string(),
            },
        });
    }
    if buf.len() >= 1082 && buf[1080..1082] == [0x53, 0xEF] {
        return Ok(FsKind::Ext);
    }
    let backup_ntfs = {
        let mut b = [0u8; 512];
        r.len() >= 1024
            && r.read_at(&mut b, r.len() / 512 * 512 - 512).is_ok()
            && &b[3..11] == b"NTFS    "
            && b[510..512] == [0x55, 0xAA]
    };
    if buf.iter().all(|&b| b == 0) {
        Ok(FsKind::Zeros { backup_ntfs })
    } else {
        Ok(FsKind::Unknown { backup_ntfs })
    }
}

/// Facts about an open volume.
#[derive(Debug, Clone, Serialize)]
pub struct VolumeInfo {
    /// Volume label ($Volume's $VOLUME_NAME), if set.
    pub label: Option<String>,
    /// 64-bit serial number from the boot sector.
    pub serial: u64,
    pub cluster_size: u32,
    pub sector_size: u16,
    pub file_record_size: u32,
    /// Size of the file system, from the boot sector.
    pub size: u64,
    /// NTFS version, e.g. "3.1".
    pub version: String,
    /// The dirty flag of $VOLUME_INFORMATION: Windows will run chkdsk at the next boot.
    pub dirty: bool,
    /// Raw $VOLUME_INFORMATION flags.
    pub flags: u16,
}

/// One directory entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DirEntry {
    pub name: String,
    pub is_dir: bool,
    /// Size of the unnamed data stream (0 for directories).
    pub size: u64,
    /// MFT record number.
    pub record: u64,
}

/// What [`Volume::stat`] reports about a path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Stat {
    /// The name as stored (the case on disk) of the last component; "" for the root.
    pub name: String,
    pub is_dir: bool,
    pub size: u64,
    pub record: u64,
    pub compressed: bool,
    pub encrypted: bool,
    pub sparse: bool,
    /// Reparse tag, if the file has a reparse point.
    pub reparse_tag: Option<u32>,
}

/// A hibernated (or Fast-Startup) Windows: `hiberfil.sys` carries a live memory image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Hibernation {
    /// The signature found, as stored ("HIBR", "wake", "RSTR", "LINK").
    pub signature: String,
    /// Size of hiberfil.sys.
    pub file_size: u64,
}

/// Marker carried by the I/O error a [`Budgeted`] reader returns when its budget is spent.
#[derive(Debug)]
struct BudgetExceeded;
impl std::fmt::Display for BudgetExceeded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("read budget exceeded")
    }
}
impl std::error::Error for BudgetExceeded {}

/// A partition reader that fails once it has read `left` bytes.
struct Budgeted {
    inner: DeviceReader,
    left: u64,
    budget: u64,
}

impl Read for Budgeted {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.len() as u64 > self.left {
            return Err(io::Error::other(BudgetExceeded));
        }
        let n = self.inner.read(buf)?;
        self.left -= n as u64;
        Ok(n)
    }
}

impl Seek for Budgeted {
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        self.inner.seek(pos)
    }
}

/// An open NTFS volume (read-only).
pub struct Volume {
    dev: Arc<dyn BlockDevice>,
    name: String,
    start: u64,
    len: u64,
    partition: Option<u32>,
    ntfs: Ntfs,
    info: VolumeInfo,
}

impl std::fmt::Debug for Volume {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Volume")
            .field("name", &self.name)
            .field("start", &self.start)
            .field("len", &self.len)
            .field("info", &self.info)
            .finish()
    }
}

/// Split a path on `/` and `\`, dropping empty and "." components and resolving "..".
pub fn split_path(path: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for c in path.split(['/', '\\']) {
        match c {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            c => out.push(c.to_string()),
        }
    }
    out
}

fn display_path(parts: &[String]) -> String {
    if parts.is_empty() {
        "\\".to_string()
    } else {
        format!("\\{}", parts.join("\\"))
    }
}

fn not_found(name: &str, path: &str) -> Error {
    Error::io(
        format!("{name}: {path}"),
        io::Error::new(io::ErrorKind::NotFound, "no such file or directory"),
    )
}

/// Whether an error from this module means "no such file" (as opposed to a damaged volume).
pub fn is_not_found(e: &Error) -> bool {
    matches!(e, Error::Io { err, .. } if err.kind() == io::ErrorKind::NotFound)
}

fn reparse_tag_name(tag: u32) -> &'static str {
    match tag {
        0xA000_0003 => "a junction (mount point)",
        0xA000_000C => "a symbolic link",
        0x8000_0017 => {
            "WOF-compressed (CompactOS / compact.exe); its data lives in a compressed stream"
        }
        0x8000_0013 => "deduplicated (Data Deduplication); its data lives in the chunk store",
        0x8000_001B => "an AppExecLink",
        0x8000_0023 => "an AF_UNIX socket",
        t if t & 0xFFFF_0FFF == 0x9000_001A => {
            "a cloud-files placeholder (OneDrive); its data may not be local"
        }
        _ => "a reparse point",
    }
}

fn le16(b: &[u8], off: usize) -> u16 {
    u16::from_le_bytes([b[off], b[off + 1]])
}
fn le32(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes([b[off], b[off + 1], b[off + 2], b[off + 3]])
}
fn le64(b: &[u8], off: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[off..off + 8]);
    u64::from_le_bytes(a)
}

/// Decode a boot-sector record-size byte (clusters if positive, 2^-n bytes if negative).
fn record_size(v: i8, cluster: u64) -> Option<u64> {
    if v > 0 {
        cluster.checked_mul(v as u64)
    } else {
        let e = v.unsigned_abs() as u32;
        if e < 64 {
            Some(1u64 << e)
        } else {
            None
        }
    }
}

impl Volume {
    /// Open the NTFS file system in `[start, start+len)` of `dev`.
    pub fn open(dev: &Arc<dyn BlockDevice>, start: u64, len: u64) -> Result<Volume> {
        let name = format!("{} (partition at byte {start})", dev.name());
        Self::open_named(dev, start, len, name, None)
    }

    /// Open partition `index` (as numbered in `table`).
    pub fn open_partition(
        dev: &Arc<dyn BlockDevice>,
        table: &PartitionTable,
        index: u32,
    ) -> Result<Volume> {
        let p = table.partition(index).ok_or_else(|| {
            Error::Other(format!(
                "{}: there is no partition {index} (partitions: {})",
                dev.name(),
                table
                    .partitions
                    .iter()
                    .map(|p| p.index.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        })?;
        if p.kind == EntryKind::Extended {
            return Err(Error::Other(format!(
                "{}: partition {index} is an extended-partition container, not a file system",
                dev.name()
            )));
        }
        let name = format!("{} partition {index}", dev.name());
        Self::open_named(dev, p.start, p.size, name, Some(index))
    }

    /// Open with a caller-chosen name for messages.
    pub fn open_named(
        dev: &Arc<dyn BlockDevice>,
        start: u64,
        len: u64,
        name: String,
        partition: Option<u32>,
    ) -> Result<Volume> {
        let size = dev.size();
        if start >= size {
            return Err(Error::corrupt(
                &name,
                format!(
                    "the partition starts at byte {start}, past the end of the {size}-byte disk"
                ),
            ));
        }
        let len = len.min(size - start);
        match probe(dev, start, len)? {
            FsKind::Ntfs => {}
            FsKind::BitLocker => {
                return Err(Error::refused(
                    &name,
                    "the volume is encrypted with BitLocker (\"-FVE-FS-\" boot sector): its files \
                     cannot be read offline; turn BitLocker off (manage-bde -off C:, then wait for \
                     decryption to finish) before exporting the disk",
                ))
            }
            k @ (FsKind::Zeros { backup_ntfs } | FsKind::Unknown { backup_ntfs }) => {
                let mut msg = format!("not NTFS: the boot sector is {}", k.describe());
                if backup_ntfs {
                    msg.push_str(
                        "; the NTFS backup boot sector at the partition's end is intact, so the \
                         primary boot sector was damaged (chkdsk or testdisk can restore it)",
                    );
                }
                return Err(Error::unsupported(&name, msg));
            }
            k => {
                return Err(Error::unsupported(
                    &name,
                    format!("not NTFS: the partition holds {}", k.describe()),
                ))
            }
        }
        // The ntfs crate panics (an "unreachable" binrw error) when the boot sector itself is cut
        // short, so a volume smaller than one sector is refused here.
        if len < 512 {
            return Err(Error::corrupt(
                &name,
                format!(
                    "the volume is only {len} bytes long, shorter than its 512-byte boot sector"
                ),
            ));
        }
        // Check the boot-sector fields that size the crate's allocations.
        let mut bs = [0u8; 512];
        DeviceReader::window(dev.clone(), start, len)
            .read_at(&mut bs, 0)
            .map_err(|e| Error::io(&name, e))?;
        let sector = le16(&bs, 0x0B) as u64;
        let spc = bs[0x0D];
        let cluster = if spc > 128 {
            // Windows encodes large clusters as 2^(256-spc) sectors.
            let e = 256 - spc as u32;
            if e > 20 {
                0
            } else {
                sector << e
            }
        } else {
            sector * spc as u64
        };
        let bad_boot = |what: String| {
            Error::corrupt(
                &name,
                format!("the NTFS boot sector is invalid: {what}; run chkdsk (or restore the backup boot sector)"),
            )
        };
        if !(256..=4096).contains(&sector) || !sector.is_power_of_two() {
            return Err(bad_boot(format!("bytes per sector is {sector}")));
        }
        if cluster == 0 {
            return Err(bad_boot(format!("sectors per cluster is {spc}")));
        }
        for (off, what) in [(0x40usize, "file record"), (0x44, "index record")] {
            match record_size(bs[off] as i8, cluster) {
                Some(s) if (512..=MAX_RECORD_SIZE as u64).contains(&s) => {}
                s => {
                    return Err(bad_boot(format!(
                        "the {what} size (byte {:#04x} = {}) is out of range",
                        bs[off],
                        s.map(|s| format!("{s} bytes")).unwrap_or("overflow".into())
                    )))
                }
            }
        }
        let mut fs = Budgeted {
            inner: DeviceReader::window(dev.clone(), start, len),
            left: METADATA_BUDGET,
            budget: METADATA_BUDGET,
        };
        let ntfs = guard(&name, "reading the boot sector", || Ntfs::new(&mut fs))
            .and_then(|r| r.map_err(|e| bad_boot(e.to_string())))?;
        if ntfs.size() > len {
            return Err(bad_boot(format!(
                "it claims {} bytes but the partition has {len}",
                ntfs.size()
            )));
        }
        let mut vol = Volume {
            dev: dev.clone(),
            name,
            start,
            len,
            partition,
            ntfs,
            info: VolumeInfo {
                label: None,
                serial: 0,
                cluster_size: 0,
                sector_size: 0,
                file_record_size: 0,
                size: 0,
                version: String::new(),
                dirty: false,
                flags: 0,
            },
        };
        vol.check_mft()?;
        {
            let Volume { ntfs, name, .. } = &mut vol;
            let mut fs = Budgeted {
                inner: DeviceReader::window(dev.clone(), start, len),
                left: METADATA_BUDGET,
                budget: METADATA_BUDGET,
            };
            guard(name, "reading $UpCase", || ntfs.read_upcase_table(&mut fs))?.map_err(|e| {
                map_err(
                    name,
                    "reading the $UpCase table (MFT record 10)",
                    e,
                    METADATA_BUDGET,
                )
            })?;
        }
        vol.info = vol.read_info()?;
        // The root directory must open and have a readable index.
        vol.list_record(ROOT_RECORD, "\\", true, false)?;
        Ok(vol)
    }

    /// Name used in messages ("IMAGE partition N").
    pub fn name(&self) -> &str {
        &self.name
    }
    /// Partition number, when opened with [`Volume::open_partition`].
    pub fn partition_index(&self) -> Option<u32> {
        self.partition
    }
    /// Byte offset of the volume on the disk.
    pub fn start(&self) -> u64 {
        self.start
    }
    /// Length of the partition window.
    pub fn len(&self) -> u64 {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    /// Label, serial, version, dirty flag...
    pub fn info(&self) -> &VolumeInfo {
        &self.info
    }
    pub fn label(&self) -> Option<&str> {
        self.info.label.as_deref()
    }
    pub fn serial(&self) -> u64 {
        self.info.serial
    }
    pub fn cluster_size(&self) -> u32 {
        self.info.cluster_size
    }
    pub fn version(&self) -> &str {
        &self.info.version
    }
    pub fn is_dirty(&self) -> bool {
        self.info.dirty
    }

    fn reader(&self, budget: u64) -> Budgeted {
        Budgeted {
            inner: DeviceReader::window(self.dev.clone(), self.start, self.len),
            left: budget,
            budget,
        }
    }

    fn err(&self, what: &str, e: NtfsError, budget: u64) -> Error {
        map_err(&self.name, what, e, budget)
    }

    /// $MFT record 0 must be readable: every other record is found through it. (An $MFT whose
    /// own data needs an attribute list is read through its extension records by the patched
    /// ntfs crate, vendor/ntfs/PATCHES.md.)
    fn check_mft(&mut self) -> Result<()> {
        let mut fs = self.reader(METADATA_BUDGET);
        let what = "reading the $MFT's own record (MFT record 0)";
        guard(&self.name, what, || self.ntfs.file(&mut fs, 0).map(|_| ()))?
            .map_err(|e| map_err(&self.name, what, e, METADATA_BUDGET))
    }

    fn read_info(&self) -> Result<VolumeInfo> {
        let mut fs = self.reader(METADATA_BUDGET);
        let what = "reading $Volume (MFT record 3)";
        let ntfs = &self.ntfs;
        let (label, vi) = guard(&self.name, what, || {
            let label = match ntfs.volume_name(&mut fs) {
                None => None,
                Some(Ok(n)) => Some(n.name().to_string_lossy()),
                Some(Err(e)) => return Err(e),
            };
            let vi = ntfs.volume_info(&mut fs)?;
            Ok((label, vi))
        })?
        .map_err(|e| self.err(what, e, METADATA_BUDGET))?;
        Ok(VolumeInfo {
            label,
            serial: ntfs.serial_number(),
            cluster_size: ntfs.cluster_size(),
            sector_size: ntfs.sector_size(),
            file_record_size: ntfs.file_record_size(),
            size: ntfs.size(),
            version: format!("{}.{}", vi.major_version(), vi.minor_version()),
            dirty: vi.flags().contains(NtfsVolumeFlags::IS_DIRTY),
            flags: vi.flags().bits(),
        })
    }

    /// Load MFT record `n`, with a clear error for records the crate cannot reach.
    fn file<'n, T: Read + Seek>(&'n self, fs: &mut T, n: u64, path: &str) -> Result<NtfsFile<'n>> {
        let what = format!("reading {path} (MFT record {n})");
        guard(&self.name, &what, || self.ntfs.file(fs, n))?
            .map_err(|e| self.err(&what, e, METADATA_BUDGET))
    }

    /// Resolve `path` to an MFT record number and the components as stored.
    fn resolve(&self, fs: &mut Budgeted, path: &str) -> Result<(u64, Vec<String>)> {
        let parts = split_path(path);
        if parts.len() > MAX_PATH_DEPTH {
            return Err(Error::Other(format!(
                "{}: path {path} has more than {MAX_PATH_DEPTH} components",
                self.name
            )));
        }
        let mut rec = ROOT_RECORD;
        let mut stored: Vec<String> = Vec::new();
        for (i, comp) in parts.iter().enumerate() {
            let here = display_path(&stored);
            let dir = self.file(fs, rec, &here)?;
            if !dir.is_directory() {
                return Err(Error::io(
                    format!("{}: {}", self.name, display_path(&parts[..i + 1])),
                    io::Error::new(
                        io::ErrorKind::NotADirectory,
                        format!("{here} is not a directory"),
                    ),
                ));
            }
            self.check_index_root(&dir, fs, &here)?;
            let what = format!("looking up {comp:?} in {here}");
            let found = guard(&self.name, &what, || {
                let index = dir.directory_index(fs)?;
                let mut finder = index.finder();
                match NtfsFileNameIndex::find(&mut finder, &self.ntfs, fs, comp) {
                    None => Ok(None),
                    Some(Err(e)) => Err(e),
                    Some(Ok(entry)) => {
                        let r = entry.file_reference().file_record_number();
                        let stored = match entry.key() {
                            Some(Ok(k)) => k.name().to_string_lossy(),
                            _ => comp.clone(),
                        };
                        Ok(Some((r, stored)))
                    }
                }
            })?
            .map_err(|e| self.err(&what, e, fs.budget))?;
            match found {
                Some((r, s)) => {
                    rec = r;
                    stored.push(s);
                }
                None => return Err(not_found(&self.name, &display_path(&parts[..i + 1]))),
            }
        }
        Ok((rec, stored))
    }

    /// Refuse index roots whose record size would make the crate allocate without bound.
    fn check_index_root<T: Read + Seek>(
        &self,
        dir: &NtfsFile,
        fs: &mut T,
        here: &str,
    ) -> Result<()> {
        let what = format!("reading the index root of {here}");
        let size = guard(
            &self.name,
            &what,
            || -> std::result::Result<Option<u32>, NtfsError> {
                let mut it = dir.attributes();
                while let Some(item) = it.next(fs) {
                    let item = item?;
                    let a = item.to_attribute()?;
                    if a.ty()? == NtfsAttributeType::IndexRoot && a.name()? == "$I30" {
                        let root = a.resident_structured_value::<NtfsIndexRoot>()?;
                        return Ok(Some(root.index_record_size()));
                    }
                }
                Ok(None)
            },
        )?
        .map_err(|e| self.err(&what, e, METADATA_BUDGET))?;
        match size {
            None => Err(Error::corrupt(
                &self.name,
                format!("{here} is marked as a directory but has no $I30 index root"),
            )),
            Some(s) if !(512..=MAX_RECORD_SIZE).contains(&s) => Err(Error::corrupt(
                &self.name,
                format!("{here}: its index root claims index records of {s} bytes"),
            )),
            Some(_) => Ok(()),
        }
    }

    /// Whether `path` exists (a damaged volume is an error, not `false`).
    pub fn exists(&self, path: &str) -> Result<bool> {
        let mut fs = self.reader(METADATA_BUDGET);
        match self.resolve(&mut fs, path) {
            Ok(_) => Ok(true),
            Err(e) if is_not_found(&e) => Ok(false),
            Err(e) if matches!(&e, Error::Io { err, .. } if err.kind() == io::ErrorKind::NotADirectory) => {
                Ok(false)
            }
            Err(e) => Err(e),
        }
    }

    /// Size, type and data-stream properties of `path`.
    pub fn stat(&self, path: &str) -> Result<Stat> {
        let mut fs = self.reader(METADATA_BUDGET);
        let (rec, stored) = self.resolve(&mut fs, path)?;
        let shown = display_path(&stored);
        let file = self.file(&mut fs, rec, &shown)?;
        let d = self.data_facts(&file, &mut fs, &shown)?;
        Ok(Stat {
            name: stored.last().cloned().unwrap_or_default(),
            is_dir: file.is_directory(),
            size: if file.is_directory() { 0 } else { d.size },
            record: rec,
            compressed: d.flags.contains(NtfsAttributeFlags::COMPRESSED),
            encrypted: d.flags.contains(NtfsAttributeFlags::ENCRYPTED),
            sparse: d.flags.contains(NtfsAttributeFlags::SPARSE),
            reparse_tag: d.reparse_tag,
        })
    }

    /// The entries of directory `path` in index order (NTFS's case-insensitive collation, as
    /// `ntfsls` prints them), without DOS 8.3 aliases, "." and the NTFS metadata files.
    pub fn list(&self, path: &str) -> Result<Vec<DirEntry>> {
        self.list_opts(path, false)
    }

    /// Like [`Volume::list`]; `system` also returns the metadata files ($MFT, $Volume, ...).
    pub fn list_opts(&self, path: &str, system: bool) -> Result<Vec<DirEntry>> {
        let mut fs = self.reader(METADATA_BUDGET);
        let (rec, stored) = self.resolve(&mut fs, path)?;
        self.list_record(rec, &display_path(&stored), system, true)
    }

    /// Like [`Volume::list_opts`] but without reading each file's record: sizes come from the
    /// directory index, which Windows refreshes only lazily (fast for huge directories).
    pub fn list_names(&self, path: &str, system: bool) -> Result<Vec<DirEntry>> {
        let mut fs = self.reader(METADATA_BUDGET);
        let (rec, stored) = self.resolve(&mut fs, path)?;
        self.list_record(rec, &display_path(&stored), system, false)
    }

    fn list_record(
        &self,
        rec: u64,
        shown: &str,
        system: bool,
        sizes: bool,
    ) -> Result<Vec<DirEntry>> {
        let mut fs = self.reader(METADATA_BUDGET);
        let dir = self.file(&mut fs, rec, shown)?;
        if !dir.is_directory() {
            return Err(Error::io(
                format!("{}: {shown}", self.name),
                io::Error::new(io::ErrorKind::NotADirectory, "not a directory"),
            ));
        }
        self.check_index_root(&dir, &mut fs, shown)?;
        let what = format!("reading the directory index of {shown} (MFT record {rec})");
        let raw = guard(
            &self.name,
            &what,
            || -> std::result::Result<Vec<(String, bool, u64, u64)>, NtfsError> {
                let index = dir.directory_index(&mut fs)?;
                let mut it = index.entries();
                let mut out = Vec::new();
                while let Some(e) = it.next(&mut fs) {
                    let e = e?;
                    let Some(key) = e.key() else { continue };
                    let key = key?;
                    if key.namespace() == NtfsFileNamespace::Dos {
                        continue;
                    }
                    let r = e.file_reference().file_record_number();
                    let name = key.name().to_string_lossy();
                    if name == "." || (!system && r < FIRST_USER_RECORD) {
                        continue;
                    }
                    out.push((name, key.is_directory(), r, key.data_size()));
                    if out.len() > MAX_DIR_ENTRIES {
                        break;
                    }
                }
                Ok(out)
            },
        )?
        .map_err(|e| self.err(&what, e, METADATA_BUDGET))?;
        if raw.len() > MAX_DIR_ENTRIES {
            return Err(Error::corrupt(
                &self.name,
                format!("{shown} has more than {MAX_DIR_ENTRIES} entries (a loop in its index?)"),
            ));
        }
        let mut out = Vec::with_capacity(raw.len());
        for (name, is_dir, record, index_size) in raw {
            // The size in the index is only refreshed on rename; take the record's when it reads.
            let size = if is_dir {
                0
            } else if !sizes {
                index_size
            } else {
                let mut fs = self.reader(METADATA_BUDGET);
                self.file(&mut fs, record, shown)
                    .ok()
                    .and_then(|f| self.data_facts(&f, &mut fs, shown).ok())
                    .map(|d| d.size)
                    .unwrap_or(index_size)
            };
            out.push(DirEntry {
                name,
                is_dir,
                size,
                record,
            });
        }
        Ok(out)
    }

    /// Read a whole file into memory, refusing files larger than `cap` bytes.
    pub fn read_capped(&self, path: &str, cap: u64) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        self.read_range_to(path, 0, u64::MAX, cap, &mut out)?;
        Ok(out)
    }

    /// Read a whole file (at most [`DEFAULT_READ_CAP`] bytes).
    pub fn read(&self, path: &str) -> Result<Vec<u8>> {
        self.read_capped(path, DEFAULT_READ_CAP)
    }

    /// The first `n` bytes of a file (fewer if it is shorter); any file size.
    pub fn read_head(&self, path: &str, n: u64) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        self.read_range_to(path, 0, n, u64::MAX, &mut out)?;
        Ok(out)
    }

    /// Stream a whole file to `w` (no size cap); returns the bytes written.
    pub fn read_to(&self, path: &str, w: &mut dyn Write) -> Result<u64> {
        self.read_range_to(path, 0, u64::MAX, u64::MAX, w)
    }

    /// Stream `[offset, offset+len)` of a file's unnamed data stream to `w`, refusing files
    /// larger than `cap`. Returns the bytes written.
    pub fn read_range_to(
        &self,
        path: &str,
        offset: u64,
        len: u64,
        cap: u64,
        w: &mut dyn Write,
    ) -> Result<u64> {
        let mut fs = self.reader(METADATA_BUDGET);
        let (rec, stored) = self.resolve(&mut fs, path)?;
        let shown = display_path(&stored);
        let file = self.file(&mut fs, rec, &shown)?;
        if file.is_directory() {
            return Err(Error::io(
                format!("{}: {shown}", self.name),
                io::Error::new(io::ErrorKind::IsADirectory, "is a directory"),
            ));
        }
        let d = self.data_facts(&file, &mut fs, &shown)?;
        if let Some(tag) = d.reparse_tag {
            return Err(Error::unsupported(
                &self.name,
                format!(
                    "{shown} is {} (reparse tag {tag:#010x}); its contents are not stored as \
                     plain file data",
                    reparse_tag_name(tag)
                ),
            ));
        }
        if d.flags.contains(NtfsAttributeFlags::ENCRYPTED) {
            return Err(Error::refused(
                &self.name,
                format!("{shown} is EFS-encrypted; its data cannot be read offline"),
            ));
        }
        if d.flags.contains(NtfsAttributeFlags::COMPRESSED) {
            return Err(Error::unsupported(
                &self.name,
                format!(
                    "{shown} is NTFS-compressed, which imgcheck does not decompress (the raw \
                     clusters would be wrong data)"
                ),
            ));
        }
        if d.size > cap {
            return Err(Error::refused(
                &self.name,
                format!(
                    "{shown} is {} bytes, more than the {cap}-byte limit",
                    d.size
                ),
            ));
        }
        if !d.present || offset >= d.size {
            return Ok(0);
        }
        let end = offset.saturating_add(len).min(d.size);
        let valid_end = d.initialized.min(end);
        // Data reads need a budget of their own: the file's bytes plus metadata.
        let budget = METADATA_BUDGET.saturating_add(end);
        let mut fs = self.reader(budget);
        let what = format!("reading the data of {shown} (MFT record {rec})");
        let file = self.file(&mut fs, rec, &shown)?;
        let mut written = 0u64;
        let mut werr: Option<io::Error> = None;
        let res = guard(
            &self.name,
            &what,
            || -> std::result::Result<(), NtfsError> {
                let Some(item) = file.data(&mut fs, "") else {
                    return Ok(());
                };
                let item = item?;
                let attr = item.to_attribute()?;
                let mut value = attr.value(&mut fs)?;
                let mut pos = offset;
                if pos < valid_end {
                    value.seek(&mut fs, SeekFrom::Start(pos))?;
                }
                let mut buf = vec![0u8; (1 << 20).min((end - offset) as usize).max(1)];
                while pos < end {
                    let n = ((end - pos) as usize).min(buf.len());
                    let chunk = &mut buf[..n];
                    if pos >= valid_end {
                        chunk.fill(0);
                    } else {
                        let m = ((valid_end - pos) as usize).min(n);
                        let mut got = 0;
                        while got < m {
                            let k = value.read(&mut fs, &mut chunk[got..m])?;
                            if k == 0 {
                                return Err(NtfsError::Io(io::Error::new(
                                    io::ErrorKind::UnexpectedEof,
                                    format!(
                                        "the data runs end at byte {} of {}",
                                        pos + got as u64,
                                        d.size
                                    ),
                                )));
                            }
                            got += k;
                        }
                        chunk[m..].fill(0);
                    }
                    if let Err(e) = w.write_all(chunk) {
                        werr = Some(e);
                        return Ok(());
                    }
                    pos += n as u64;
                    written += n as u64;
                }
                Ok(())
            },
        )?;
        res.map_err(|e| self.err(&what, e, budget))?;
        if let Some(e) = werr {
            return Err(Error::io("output", e));
        }
        Ok(written)
    }

    /// Facts about a file's unnamed data stream and reparse point.
    fn data_facts<T: Read + Seek>(
        &self,
        file: &NtfsFile,
        fs: &mut T,
        shown: &str,
    ) -> Result<DataFacts> {
        let what = format!("reading the attributes of {shown}");
        let raw = guard(
            &self.name,
            &what,
            || -> std::result::Result<DataFacts, NtfsError> {
                let mut facts = DataFacts::default();
                let mut it = file.attributes();
                let mut n = 0;
                while let Some(item) = it.next(fs) {
                    n += 1;
                    if n > 4096 {
                        break;
                    }
                    let item = item?;
                    let a = item.to_attribute()?;
                    match a.ty() {
                        Ok(NtfsAttributeType::ReparsePoint) => {
                            let mut tag = [0u8; 4];
                            let mut v = a.value(fs)?;
                            let mut got = 0;
                            while got < 4 {
                                let k = v.read(fs, &mut tag[got..])?;
                                if k == 0 {
                                    break;
                                }
                                got += k;
                            }
                            facts.reparse_tag = Some(u32::from_le_bytes(tag));
                        }
                        Ok(NtfsAttributeType::Data) if !facts.present && a.name()?.is_empty() => {
                            facts.present = true;
                            facts.size = a.value_length();
                            facts.flags = a.flags();
                            facts.resident = a.is_resident();
                            facts.position = a.position().value().map(|p| p.get());
                        }
                        _ => {}
                    }
                }
                Ok(facts)
            },
        )?
        .map_err(|e| self.err(&what, e, METADATA_BUDGET))?;
        let mut facts = raw;
        facts.initialized = facts.size;
        if facts.present && !facts.resident {
            if let Some(pos) = facts.position {
                facts.initialized = self.initialized_size(file, pos, shown)?.min(facts.size);
            }
        }
        Ok(facts)
    }

    /// The initialized size (valid data length) of the non-resident attribute at partition
    /// byte `pos`: the crate does not expose it, so read it from the fixed-up record.
    fn initialized_size(&self, file: &NtfsFile, pos: u64, shown: &str) -> Result<u64> {
        let rs = self.ntfs.file_record_size() as u64;
        let base = file.position().value().map(|p| p.get()).unwrap_or(0);
        // The base record, or (for an attribute-list extension) the record containing `pos`:
        // records start on a 512-byte boundary at most `rs` bytes before it.
        let candidates: Vec<u64> = if pos >= base && pos < base + rs {
            vec![base]
        } else {
            let sec = pos - pos % 512;
            (0..rs / 512)
                .filter_map(|k| sec.checked_sub(k * 512))
                .collect()
        };
        let bad = |why: &str| {
            Error::corrupt(
                &self.name,
                format!("{shown}: cannot read the valid data length of its data stream: {why}"),
            )
        };
        let r = DeviceReader::window(self.dev.clone(), self.start, self.len);
        let mut last = "the MFT record holding it was not found".to_string();
        for rec_start in candidates {
            let mut rec = vec![0u8; rs as usize];
            let n = r
                .read_at(&mut rec, rec_start)
                .map_err(|e| Error::io(&self.name, e))?;
            if n < rec.len() || &rec[0..4] != b"FILE" {
                continue;
            }
            if let Err(m) = apply_fixup(&mut rec) {
                last = m;
                continue;
            }
            let off = (pos - rec_start) as usize;
            let used = le32(&rec, 0x18) as usize;
            if off + 0x40 > rec.len().min(used) || rec[off + 8] == 0 {
                last = "the attribute is not where the record says".to_string();
                continue;
            }
            return Ok(le64(&rec, off + 0x38));
        }
        Err(bad(&last))
    }

    /// Whether Windows is hibernated (or shut down with Fast Startup): `\hiberfil.sys`
    /// starts with "hibr", "wake", "rstr" or "link" (any case).
    pub fn hibernation(&self) -> Result<Option<Hibernation>> {
        hibernation(self)
    }
}

struct DataFacts {
    present: bool,
    size: u64,
    initialized: u64,
    flags: NtfsAttributeFlags,
    resident: bool,
    position: Option<u64>,
    reparse_tag: Option<u32>,
}

impl Default for DataFacts {
    fn default() -> Self {
        DataFacts {
            present: false,
            size: 0,
            initialized: 0,
            flags: NtfsAttributeFlags::empty(),
            resident: false,
            position: None,
            reparse_tag: None,
        }
    }
}

/// Undo the update-sequence fixups of a multi-sector record in place.
fn apply_fixup(rec: &mut [u8]) -> std::result::Result<(), String> {
    let usa_off = le16(rec, 4) as usize;
    let usa_count = le16(rec, 6) as usize;
    if usa_count == 0 || usa_off + 2 * usa_count > rec.len() || (usa_count - 1) * 512 > rec.len() {
        return Err(format!(
            "bad update sequence array (offset {usa_off}, count {usa_count})"
        ));
    }
    let usn = [rec[usa_off], rec[usa_off + 1]];
    for i in 1..usa_count {
        let end = i * 512;
        if rec[end - 2..end] != usn {
            return Err(format!(
                "update sequence (fixup) mismatch in sector {} of the record",
                i - 1
            ));
        }
        rec[end - 2] = rec[usa_off + 2 * i];
        rec[end - 1] = rec[usa_off + 2 * i + 1];
    }
    Ok(())
}

/// Turn a crate error into ours, naming the volume and what was being done.
fn map_err(name: &str, what: &str, e: NtfsError, budget: u64) -> Error {
    match e {
        NtfsError::Io(io) => {
            if io
                .get_ref()
                .is_some_and(|inner| inner.downcast_ref::<BudgetExceeded>().is_some())
            {
                Error::corrupt(
                    name,
                    format!(
                        "{what}: gave up after reading {budget} bytes of metadata (a loop in the \
                         file system's structures?)"
                    ),
                )
            } else {
                Error::io(format!("{name}: {what}"), io)
            }
        }
        e @ NtfsError::UpdateSequenceNumberMismatch { .. } => Error::corrupt(
            name,
            format!(
                "{what}: the record is corrupt: {e} (a torn write or damaged sector; run chkdsk /f)"
            ),
        ),
        e @ (NtfsError::InvalidFileSignature { .. } | NtfsError::InvalidIndexSignature { .. }) => {
            Error::corrupt(
                name,
                format!("{what}: the record is corrupt: {e} (run chkdsk /f)"),
            )
        }
        e => Error::corrupt(
            name,
            format!("{what}: {e} (byte positions are counted from the partition's start)"),
        ),
    }
}

/// Run a call into the `ntfs` crate, turning a panic (a crate bug on hostile input) into an
/// error instead of aborting the check.
fn guard<R>(name: &str, what: &str, f: impl FnOnce() -> R) -> Result<R> {
    catch_unwind(AssertUnwindSafe(f)).map_err(|p| {
        let msg = p
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| p.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".into());
        Error::corrupt(
            name,
            format!("{what}: the NTFS reader failed on this data: {msg}"),
        )
    })
}

/// See [`Volume::hibernation`].
pub fn hibernation(vol: &Volume) -> Result<Option<Hibernation>> {
    let st = match vol.stat("hiberfil.sys") {
        Ok(s) => s,
        Err(e) if is_not_found(&e) => return Ok(None),
        Err(e) => return Err(e),
    };
    if st.is_dir {
        return Ok(None);
    }
    let head = vol.read_head("hiberfil.sys", 4)?;
    if head.len() < 4 {
        return Ok(None);
    }
    let sig = String::from_utf8_lossy(&head).to_string();
    let lower = sig.to_ascii_lowercase();
    if ["hibr", "wake", "rstr", "link"].contains(&lower.as_str()) {
        Ok(Some(Hibernation {
            signature: sig,
            file_size: st.size,
        }))
    } else {
        Ok(None)
    }
}

/// What one partition holds, as [`scan`] found it.
#[derive(Debug, Clone, Serialize)]
pub struct PartitionFs {
    /// Partition number (as in the [`PartitionTable`]).
    pub index: u32,
    pub start: u64,
    pub size: u64,
    /// What the boot sector says; `None` when even that could not be read.
    pub fs: Option<FsKind>,
    /// Volume facts when it opened as NTFS.
    pub volume: Option<VolumeInfo>,
    /// Why it did not open (or could not be probed).
    pub error: Option<String>,
    /// `\Windows\System32\config` exists on it.
    pub windows: bool,
    /// A hibernated Windows (hiberfil.sys signature), when it opened.
    pub hibernation: Option<Hibernation>,
}

/// Probe every data partition and open the NTFS ones: a summary for checks and reports.
/// Nothing here is an error; each partition carries its own outcome.
pub fn scan(dev: &Arc<dyn BlockDevice>, table: &PartitionTable) -> Vec<PartitionFs> {
    let mut out = Vec::new();
    for p in table.data_partitions() {
        let mut r = PartitionFs {
            index: p.index,
            start: p.start,
            size: p.size,
            fs: None,
            volume: None,
            error: None,
            windows: false,
            hibernation: None,
        };
        match probe(dev, p.start, p.size) {
            Err(e) => r.error = Some(e.to_string()),
            Ok(k) => {
                r.fs = Some(k);
                match Volume::open_partition(dev, table, p.index) {
                    Ok(v) => {
                        r.volume = Some(v.info().clone());
                        match v.exists(WINDOWS_CONFIG_DIR) {
                            Ok(w) => r.windows = w,
                            Err(e) => r.error = Some(e.to_string()),
                        }
                        match v.hibernation() {
                            Ok(h) => r.hibernation = h,
                            Err(e) => {
                                r.error.get_or_insert(e.to_string());
                            }
                        }
                    }
                    Err(e) => r.error = Some(e.to_string()),
                }
            }
        }
        out.push(r);
    }
    out
}

/// Path whose presence marks the Windows system partition.
pub const WINDOWS_CONFIG_DIR: &str = "Windows/System32/config";

/// The partition holding `\Windows\System32\config`, opened. Partitions that are not NTFS
/// or fail to open are skipped; `None` when no partition has it.
pub fn find_windows(dev: &Arc<dyn BlockDevice>, table: &PartitionTable) -> Option<Volume> {
    for p in table.data_partitions() {
        let Ok(FsKind::Ntfs) = probe(dev, p.start, p.size) else {
            continue;
        };
        let Ok(vol) = Volume::open_partition(dev, table, p.index) else {
            continue;
        };
        if matches!(vol.exists(WINDOWS_CONFIG_DIR), Ok(true)) {
            return Some(vol);
        }
    }
    None
}

/// The volume `ls`/`cat` use by default: the Windows partition, else the first NTFS partition,
/// else the whole disk when it is an NTFS volume with no partition table.
pub fn default_volume(dev: &Arc<dyn BlockDevice>, table: &PartitionTable) -> Result<Volume> {
    if let Some(v) = find_windows(dev, table) {
        return Ok(v);
    }
    let mut first_err = None;
    for p in table.data_partitions() {
        if let Ok(FsKind::Ntfs) = probe(dev, p.start, p.size) {
            match Volume::open_partition(dev, table, p.index) {
                Ok(v) => return Ok(v),
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
    }
    if let Some(e) = first_err {
        return Err(e);
    }
    // No NTFS anywhere: the first partition's own error says what it is (BitLocker, FAT...).
    if let Some(p) = table.first_partition() {
        Volume::open_partition(dev, table, p.index)?;
    }
    if table.partitions.is_empty() && table.boot_sector_at_0.as_deref() == Some("NTFS") {
        return Volume::open_named(
            dev,
            0,
            dev.size(),
            format!("{} (whole disk)", dev.name()),
            Some(0),
        );
    }
    Err(Error::Other(format!(
        "{}: no NTFS partition found ({} partition table, {} partitions)",
        dev.name(),
        table.kind,
        table.data_partitions().len()
    )))
}

/// Open partition `index`; 0 means the whole disk (an image of a single volume).
pub fn open_index(
    dev: &Arc<dyn BlockDevice>,
    table: &PartitionTable,
    index: u32,
) -> Result<Volume> {
    if index == 0 {
        Volume::open_named(
            dev,
            0,
            dev.size(),
            format!("{} (whole disk)", dev.name()),
            Some(0),
        )
    } else {
        Volume::open_partition(dev, table, index)
    }
}
