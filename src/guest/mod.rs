//! The guest disk as a whole: which partition holds Windows, and what every partition holds.
//!
//! This sits above [`crate::fs`] (which opens one volume and reads files) and
//! [`crate::disk`] (which reads the partition table): deciding where Windows is means probing
//! and opening partitions, which neither layer should do for the other.

use std::sync::Arc;

use serde::Serialize;

use crate::disk::PartitionTable;
use crate::error::{Error, Result};
use crate::fs::{probe, FsKind, Hibernation, Volume, VolumeInfo};
use crate::image::BlockDevice;

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
