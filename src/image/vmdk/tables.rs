//! The check made when a hosted sparse extent is opened: every grain table the grain
//! directory names, and every grain those tables name, lies inside the file and clear of the
//! directory and tables.
//!
//! qemu-img check reports a grain that starts at or past the end of the file ("points after
//! EOF"); imgcheck refuses the extent when it is opened, naming the first such grain table
//! entry and its offsets, and is stricter on uncompressed grains, which must be whole (VMware
//! and qemu write whole grains). For a compressed grain only its marker can be checked without
//! reading the grain. Entries of grains past the extent's capacity are not looked at (as
//! qemu). Cost: one read of each allocated grain table.

use crate::error::{Error, Result};
use crate::image::storage::{read_vec, Storage};

use super::sparse::SECTOR;

/// What the walk needs of an extent's header.
pub(super) struct Grains {
    /// Grain size in sectors, entries per grain table, capacity in sectors.
    pub grain_sectors: u64,
    pub gtes: u64,
    pub capacity: u64,
    pub compressed: bool,
    pub zero_grain: bool,
    /// The grain directory in use, and its sector offset.
    pub gd_sector: u64,
}

fn damaged(s: &dyn Storage, msg: String) -> Error {
    Error::corrupt(
        s.name(),
        format!("{msg}: the extent is damaged (truncated, or its grain tables are corrupt)"),
    )
}

/// Check every grain table named by `gd` and every grain they name (see the module doc).
pub(super) fn check(s: &dyn Storage, gd: &[u32], g: &Grains) -> Result<()> {
    let gt_bytes = g.gtes * 4;
    let gt_sectors = gt_bytes.div_ceil(SECTOR);
    // Metadata: the grain directory and the grain tables, as sorted sector ranges.
    let mut meta: Vec<(u64, u64)> = gd
        .iter()
        .filter(|&&e| e != 0)
        .map(|&e| (u64::from(e), u64::from(e) + gt_sectors))
        .collect();
    let gd_sectors = (gd.len() as u64 * 4).div_ceil(SECTOR);
    meta.push((g.gd_sector, g.gd_sector + gd_sectors));
    meta.sort_unstable();
    for (i, &e) in gd.iter().enumerate() {
        if e == 0 {
            continue;
        }
        let what = format!("grain table {i}");
        let raw = read_vec(s, u64::from(e) * SECTOR, gt_bytes, gt_bytes, &what)?;
        for (j, c) in raw.chunks_exact(4).enumerate() {
            let gi = i as u64 * g.gtes + j as u64;
            if gi * g.grain_sectors >= g.capacity {
                break;
            }
            let gte = u32::from_le_bytes(c.try_into().expect("4 bytes"));
            if gte == 0 || (gte == 1 && g.zero_grain) {
                continue;
            }
            if let Some(p) = grain_problem(s, &meta, u64::from(gte), g) {
                return Err(damaged(
                    s,
                    format!(
                        "grain table {i} (at file offset {}), entry {j} (grain {gi}, extent \
                         offset {}): the grain at file offset {} {p}",
                        u64::from(e) * SECTOR + 4 * j as u64,
                        gi * g.grain_sectors * SECTOR,
                        u64::from(gte) * SECTOR
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// What is wrong with a grain at `sector`, if anything.
fn grain_problem(s: &dyn Storage, meta: &[(u64, u64)], sector: u64, g: &Grains) -> Option<String> {
    let len = s.len();
    let start = sector * SECTOR;
    // A compressed grain starts with a 12-byte marker (or at least one byte of deflate data).
    let need = if g.compressed {
        12
    } else {
        g.grain_sectors * SECTOR
    };
    if start + need > len {
        let what = if g.compressed {
            "its 12-byte grain marker"
        } else {
            "its data"
        };
        return Some(format!(
            "({what}, {need} bytes) runs past the end of the {len}-byte file"
        ));
    }
    let end_sector = sector + need.div_ceil(SECTOR);
    // The last metadata range starting before the grain's end is the one it could overlap.
    let i = meta.partition_point(|&(m0, _)| m0 < end_sector);
    i.checked_sub(1)
        .map(|k| meta[k])
        .filter(|&(_, m1)| m1 > sector)
        .map(|(m0, _)| {
            format!(
                "overlaps the grain directory or a grain table at file offset {}",
                m0 * SECTOR
            )
        })
}
