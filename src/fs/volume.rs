//! An open NTFS volume: the boot-sector checks that come before the `ntfs` crate sees the
//! volume, the `$MFT`'s own record, `$Volume`, and loading MFT records by number.
//!
//! Opening validates everything a later read relies on (boot-sector geometry, the `$MFT`
//! record, `$UpCase`, the root index), so a volume that opens is one whose metadata reads; a
//! damaged one fails here with a message naming the structure rather than later with an empty
//! listing.

use std::io::{Read, Seek};
use std::sync::Arc;

use ntfs::structured_values::NtfsVolumeFlags;
use ntfs::{Ntfs, NtfsError, NtfsFile};
use serde::Serialize;

use super::budget::{guard, map_err, Budgeted, MAX_RECORD_SIZE, METADATA_BUDGET};
use super::le16;
use super::probe::{probe, FsKind};
use crate::disk::{EntryKind, PartitionTable};
use crate::error::{Error, Result};
use crate::image::{BlockDevice, DeviceReader};

/// First MFT record of an ordinary file; 0-15 are NTFS metadata files ($MFT, $Volume, ...).
pub const FIRST_USER_RECORD: u64 = 16;
/// MFT record of the root directory.
pub(super) const ROOT_RECORD: u64 = 5;

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

/// An open NTFS volume (read-only).
pub struct Volume {
    pub(super) dev: Arc<dyn BlockDevice>,
    pub(super) name: String,
    pub(super) start: u64,
    pub(super) len: u64,
    pub(super) partition: Option<u32>,
    pub(super) ntfs: Ntfs,
    pub(super) info: VolumeInfo,
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

/// Refuse a partition that is not NTFS, saying what it is instead.
fn refuse_non_ntfs(dev: &Arc<dyn BlockDevice>, start: u64, len: u64, name: &str) -> Result<()> {
    match probe(dev, start, len)? {
        FsKind::Ntfs => {}
        FsKind::BitLocker => {
            return Err(Error::refused(
                name,
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
            return Err(Error::unsupported(name, msg));
        }
        k => {
            return Err(Error::unsupported(
                name,
                format!("not NTFS: the partition holds {}", k.describe()),
            ))
        }
    }
    Ok(())
}

/// The error for an invalid NTFS boot sector.
fn bad_boot(name: &str, what: String) -> Error {
    Error::corrupt(
        name,
        format!("the NTFS boot sector is invalid: {what}; run chkdsk (or restore the backup boot sector)"),
    )
}

/// Check the boot-sector fields that size the crate's allocations (before the crate sees them).
fn check_boot_sector(dev: &Arc<dyn BlockDevice>, start: u64, len: u64, name: &str) -> Result<()> {
    // The ntfs crate panics (an "unreachable" binrw error) when the boot sector itself is cut
    // short, so a volume smaller than one sector is refused here.
    if len < 512 {
        return Err(Error::corrupt(
            name,
            format!("the volume is only {len} bytes long, shorter than its 512-byte boot sector"),
        ));
    }
    // Check the boot-sector fields that size the crate's allocations.
    let mut bs = [0u8; 512];
    DeviceReader::window(dev.clone(), start, len)
        .read_at(&mut bs, 0)
        .map_err(|e| Error::io(name, e))?;
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
    if !(256..=4096).contains(&sector) || !sector.is_power_of_two() {
        return Err(bad_boot(name, format!("bytes per sector is {sector}")));
    }
    if cluster == 0 {
        return Err(bad_boot(name, format!("sectors per cluster is {spc}")));
    }
    for (off, what) in [(0x40usize, "file record"), (0x44, "index record")] {
        match record_size(bs[off] as i8, cluster) {
            Some(s) if (512..=MAX_RECORD_SIZE as u64).contains(&s) => {}
            s => {
                return Err(bad_boot(
                    name,
                    format!(
                        "the {what} size (byte {:#04x} = {}) is out of range",
                        bs[off],
                        s.map(|s| format!("{s} bytes")).unwrap_or("overflow".into())
                    ),
                ))
            }
        }
    }
    Ok(())
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
        refuse_non_ntfs(dev, start, len, &name)?;
        check_boot_sector(dev, start, len, &name)?;
        let mut fs = Budgeted::new(
            DeviceReader::window(dev.clone(), start, len),
            METADATA_BUDGET,
        );
        let ntfs = guard(&name, "reading the boot sector", || Ntfs::new(&mut fs))
            .and_then(|r| r.map_err(|e| bad_boot(&name, e.to_string())))?;
        if ntfs.size() > len {
            return Err(bad_boot(
                &name,
                format!(
                    "it claims {} bytes but the partition has {len}",
                    ntfs.size()
                ),
            ));
        }
        Self::finish_open(dev, name, start, len, partition, ntfs)
    }

    /// Read `$MFT`, `$UpCase`, `$Volume` and the root index of a volume whose boot sector the
    /// crate accepted.
    fn finish_open(
        dev: &Arc<dyn BlockDevice>,
        name: String,
        start: u64,
        len: u64,
        partition: Option<u32>,
        ntfs: Ntfs,
    ) -> Result<Volume> {
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
            let mut fs = Budgeted::new(
                DeviceReader::window(dev.clone(), start, len),
                METADATA_BUDGET,
            );
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

    pub(super) fn reader(&self, budget: u64) -> Budgeted {
        Budgeted::new(
            DeviceReader::window(self.dev.clone(), self.start, self.len),
            budget,
        )
    }

    pub(super) fn err(&self, what: &str, e: NtfsError, budget: u64) -> Error {
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
    pub(super) fn file<'n, T: Read + Seek>(
        &'n self,
        fs: &mut T,
        n: u64,
        path: &str,
    ) -> Result<NtfsFile<'n>> {
        let what = format!("reading {path} (MFT record {n})");
        guard(&self.name, &what, || self.ntfs.file(fs, n))?
            .map_err(|e| self.err(&what, e, METADATA_BUDGET))
    }
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
