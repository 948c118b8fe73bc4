//! The check made when a dynamic or differencing VHD is opened: every block the block
//! allocation table (BAT) names lies inside the file, before the footer at its end, and clear
//! of the image's own metadata and of the other blocks.
//!
//! qemu refuses to open a VHD whose blocks run past the end of the file ("The image has been
//! truncated"); imgcheck refuses it too, naming the first such BAT entry and its offsets, and
//! also refuses blocks that overlap the footer copy at offset 0, the dynamic disk header, the
//! BAT itself, the footer at the end, or one another. The walk is one pass over the BAT that
//! `open` already holds in memory, plus one sort of the allocated blocks.

use super::footer::{DYN_HEADER_SIZE, FOOTER_SIZE, UNALLOCATED};
use crate::error::{Error, Result};
use crate::image::storage::Storage;

/// Where the image's metadata lies, for [`check`].
pub(super) struct Layout {
    /// File offset of the dynamic disk header.
    pub header_offset: u64,
    /// File offset and entry count of the BAT.
    pub table_offset: u64,
    pub table_entries: u64,
    pub block_size: u64,
    pub bitmap_size: u64,
    /// Virtual size (the last block may be partly outside the disk).
    pub size: u64,
    /// Bytes of footer at the end of the file (0 when it is missing).
    pub tail_footer: u64,
}

fn damaged(s: &dyn Storage, msg: String) -> Error {
    Error::corrupt(
        s.name(),
        format!(
            "{msg}: the image is damaged (truncated, or its block allocation table is corrupt)"
        ),
    )
}

/// Check every allocated entry of `bat` (see the module doc).
pub(super) fn check(s: &dyn Storage, bat: &[u32], l: &Layout) -> Result<()> {
    let len = s.len();
    let limit = len - l.tail_footer.min(len);
    let bat_end = l.table_offset + (l.table_entries * 4).div_ceil(512) * 512;
    let fixed = [
        (0, FOOTER_SIZE as u64, "the footer copy at offset 0"),
        (
            l.header_offset,
            l.header_offset + DYN_HEADER_SIZE as u64,
            "the dynamic disk header",
        ),
        (l.table_offset, bat_end, "the block allocation table"),
    ];
    let mut blocks: Vec<(u64, u64, usize)> = Vec::new();
    for (b, &e) in bat.iter().enumerate() {
        if e == UNALLOCATED {
            continue;
        }
        let start = u64::from(e) * 512;
        let in_disk = l.block_size.min(l.size - b as u64 * l.block_size);
        let end = start + l.bitmap_size + in_disk;
        let entry_at = l.table_offset + 4 * b as u64;
        let problem = if end > limit {
            Some(if end > len {
                format!(
                    "runs past the end of the {len}-byte file (by {} bytes)",
                    end - len
                )
            } else {
                format!("runs into the footer at file offset {limit}")
            })
        } else {
            fixed
                .iter()
                .find(|&&(s0, e0, _)| start < e0 && s0 < end)
                .map(|&(s0, _, what)| format!("overlaps {what} at file offset {s0}"))
        };
        if let Some(p) = problem {
            return Err(damaged(
                s,
                format!(
                    "BAT entry {b} (at file offset {entry_at}, guest offset {}): the block at \
                     file offset {start} (bitmap and data, {} bytes) {p}",
                    b as u64 * l.block_size,
                    end - start
                ),
            ));
        }
        blocks.push((start, end, b));
    }
    blocks.sort_unstable();
    for w in blocks.windows(2) {
        let ((s0, e0, b0), (s1, _, b1)) = (w[0], w[1]);
        if s1 < e0 {
            return Err(damaged(
                s,
                format!(
                    "BAT entries {b0} and {b1} name overlapping blocks (at file offsets {s0} \
                     and {s1})"
                ),
            ));
        }
    }
    Ok(())
}
