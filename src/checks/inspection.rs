//! What verify learns about an image, gathered once and shared by the checks: the partition
//! table, the first partition's volume and the Windows volume.

use std::sync::Arc;

use crate::disk::{self, PartitionTable};
use crate::fs::{self, FsKind, Volume};
use crate::image::BlockDevice;

/// Facts gathered from one image.
pub struct Inspection {
    pub dev: Arc<dyn BlockDevice>,
    /// The partition table, or why it could not be read.
    pub table: Result<PartitionTable, String>,
    /// The first partition's file system, as probed.
    pub first_kind: Option<Result<FsKind, String>>,
    /// The first partition, opened as NTFS (or why it did not open).
    pub first_volume: Option<Result<Volume, String>>,
    /// The partition holding `\Windows\System32\config`.
    pub windows: Option<Volume>,
}

impl Inspection {
    /// Read the table, probe and open the first partition and find Windows.
    pub fn gather(dev: Arc<dyn BlockDevice>) -> Self {
        let table = disk::analyze(&dev).map_err(|e| e.to_string());
        let mut insp = Inspection {
            dev,
            table,
            first_kind: None,
            first_volume: None,
            windows: None,
        };
        let Ok(table) = &insp.table else {
            return insp;
        };
        if let Some(p) = table.first_partition() {
            let kind = fs::probe(&insp.dev, p.start, p.size).map_err(|e| e.to_string());
            if matches!(kind, Ok(FsKind::Ntfs)) {
                insp.first_volume = Some(
                    Volume::open_partition(&insp.dev, table, p.index).map_err(|e| e.to_string()),
                );
            }
            insp.first_kind = Some(kind);
        }
        let first_index = table.first_partition().map(|p| p.index);
        let first_has_windows = matches!(&insp.first_volume, Some(Ok(v))
            if matches!(v.exists(crate::guest::WINDOWS_CONFIG_DIR), Ok(true)));
        insp.windows = if first_has_windows {
            // Open it a second time rather than share: volumes are cheap to open and the two
            // roles (first partition, Windows partition) are used independently.
            first_index.and_then(|i| Volume::open_partition(&insp.dev, table, i).ok())
        } else {
            crate::guest::find_windows(&insp.dev, table)
        };
        insp
    }
}
