//! Where Windows boots from: the BCD store, looked for on the active partition first.
//!
//! BIOS installations keep the BCD on the active partition (System Reserved, or C: itself);
//! UEFI ones on the EFI system partition. Only NTFS partitions are searched: an ESP is FAT,
//! which imgcheck does not read, and the UEFI verdict comes from the partition table anyway.

use super::Part;
use crate::error::Result;
use crate::windows::bcd::{self, BcdInfo};
use crate::windows::hive::{Hive, MAX_HIVE_SIZE};

/// BCD locations: BIOS installs keep it on the active partition, UEFI ones on the ESP.
pub const BCD_PATHS: [&str; 2] = ["Boot/BCD", "EFI/Microsoft/Boot/BCD"];

/// The BCD store found on the disk, with where it was found.
pub struct FoundBcd {
    pub partition: u32,
    /// The path as Windows writes it (`\Boot\BCD`).
    pub path: String,
    /// What it says, or why it could not be read.
    pub info: Result<BcdInfo>,
}

/// The first BCD store on the active partition, then on the others by number.
pub(super) fn find_bcd(parts: &[Part]) -> Option<FoundBcd> {
    let mut order: Vec<&Part> = parts.iter().collect();
    order.sort_by_key(|p| (!p.entry.bootable, p.entry.index));
    for p in order {
        let Some(vol) = p.ntfs() else {
            continue;
        };
        for path in BCD_PATHS {
            if !matches!(vol.exists(path), Ok(true)) {
                continue;
            }
            let shown = format!("\\{}", path.replace('/', "\\"));
            let info = vol
                .read_capped(path, MAX_HIVE_SIZE as u64)
                .and_then(|b| Hive::open(&format!("{}: {shown}", vol.name()), &b, &[]))
                .and_then(|h| bcd::bcd_boot(&h));
            return Some(FoundBcd {
                partition: p.entry.index,
                path: shown,
                info,
            });
        }
    }
    None
}
