//! What a partition holds, judged from its first sectors before any file system is parsed.
//!
//! Checks and `ls` need to say *why* a partition does not open (BitLocker, FAT, ext, zeros, a
//! damaged NTFS boot sector whose backup is intact) rather than pass a non-NTFS volume to the
//! `ntfs` crate and relay a parse error.

use std::sync::Arc;

use serde::Serialize;

use crate::disk;
use crate::error::{Error, Result};
use crate::image::{BlockDevice, DeviceReader};

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
