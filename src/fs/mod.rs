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
//!
//! One file per concern: [`probe`] (what a partition holds), [`budget`] (read budgets and
//! limits), [`volume`] (opening, MFT records), [`index`] (paths and directories), [`read`]
//! (file data and what is refused). Which partition holds Windows is not decided here: see
//! [`crate::guest`].

pub mod budget;
pub mod extents;
pub mod index;
pub mod probe;
pub mod read;
pub mod volume;

pub use budget::{
    DEFAULT_READ_CAP, MAX_DIR_ENTRIES, MAX_PATH_DEPTH, MAX_RECORD_SIZE, METADATA_BUDGET,
};
pub use extents::FileExtents;
pub use index::{is_not_found, split_path, DirEntry};
pub use probe::{probe, FsKind};
pub use read::{hibernation, Hibernation, Stat};
pub use volume::{open_index, Volume, VolumeInfo, FIRST_USER_RECORD};

pub(crate) fn le16(b: &[u8], off: usize) -> u16 {
    u16::from_le_bytes([b[off], b[off + 1]])
}
pub(crate) fn le32(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes([b[off], b[off + 1], b[off + 2], b[off + 3]])
}
pub(crate) fn le64(b: &[u8], off: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[off..off + 8]);
    u64::from_le_bytes(a)
}
