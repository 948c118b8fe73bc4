//! The disk drawn to scale in reports: partitions, and how much of each slice of the disk
//! holds data (from the allocation map only: no data is read).

use serde::Serialize;

use crate::guest::Disk;

/// One partition as drawn in reports.
#[derive(Debug, Clone, Serialize)]
pub struct PartitionBox {
    /// Partition number (1-based, as Windows and Linux number them).
    pub index: u32,
    pub start: u64,
    pub size: u64,
    /// Type, e.g. "NTFS/exFAT (0x07)", "EFI system (0xEF)", a GPT type name.
    pub kind: String,
    pub bootable: bool,
}

/// The disk drawn to scale: partitions, and the fraction of each of [`ALLOCATION_BINS`] equal
/// slices of the disk that holds data.
#[derive(Debug, Clone, Serialize)]
pub struct Layout {
    pub partitions: Vec<PartitionBox>,
    pub allocation: Vec<f32>,
}

/// Number of slices the allocation map is summarised into.
pub const ALLOCATION_BINS: usize = 128;

/// Fraction of each of `bins` slices of the device that holds data (from the allocation map
/// only: no data is read).
pub fn allocation_bins(
    dev: &dyn crate::image::BlockDevice,
    bins: usize,
) -> crate::Result<Vec<f32>> {
    let size = dev.size();
    if size == 0 || bins == 0 {
        return Ok(Vec::new());
    }
    let mut out = vec![0f64; bins];
    let bin_len = size as f64 / bins as f64;
    let window = 1u64 << 34;
    let mut pos = 0;
    while pos < size {
        let len = window.min(size - pos);
        for e in dev.map(pos, len)? {
            if e.kind != crate::image::ExtentKind::Data {
                continue;
            }
            // Spread the extent over the bins it covers.
            let (mut a, b) = (e.offset as f64, (e.offset + e.length) as f64);
            while a < b {
                let i = ((a / bin_len) as usize).min(bins - 1);
                let bin_end = ((i + 1) as f64 * bin_len).min(b);
                let part = if bin_end > a { bin_end - a } else { b - a };
                out[i] += part;
                a += part;
            }
        }
        pos += len;
    }
    Ok(out
        .into_iter()
        .map(|v| (v / bin_len).clamp(0.0, 1.0) as f32)
        .collect())
}

/// The partitions that hold data, for drawing.
pub fn partition_boxes(disk: &Disk) -> Vec<PartitionBox> {
    let Ok(t) = disk.table() else {
        return Vec::new();
    };
    t.data_partitions()
        .into_iter()
        .map(|p| PartitionBox {
            index: p.index,
            start: p.start,
            size: p.size,
            kind: match p.mbr_type {
                Some(b) => format!("{} (0x{b:02X})", p.type_name),
                None => p.type_name.clone(),
            },
            bootable: p.bootable,
        })
        .collect()
}
