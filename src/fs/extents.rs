//! Where a file's bytes lie on the disk: for offline repair, which rewrites a hive file in place,
//! cluster for cluster, and must change nothing else on the volume.
//!
//! Only plain data can be rewritten so: a non-resident, unnamed `$DATA` stream that is not
//! compressed, encrypted or sparse, has no reparse point, and whose initialized size (valid data
//! length) is its size (bytes past it read as zeros, so bytes written there would be lost).
//! Anything else is refused with the reason.

use std::io::SeekFrom;

use ntfs::{NtfsAttributeFlags, NtfsError, NtfsReadSeek};

use super::budget::{guard, METADATA_BUDGET};
use super::index::display_path;
use super::volume::Volume;
use crate::error::{Error, Result};

/// The disk ranges holding a file's data, in file order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileExtents {
    /// The path as stored on the volume.
    pub path: String,
    /// The file's size in bytes.
    pub size: u64,
    /// `(offset on the guest disk, length)` pieces covering `[0, size)` in order; contiguous
    /// clusters are merged.
    pub extents: Vec<(u64, u64)>,
}

impl Volume {
    /// The disk ranges of `path`'s data (see the module documentation for what is refused).
    pub fn data_extents(&self, path: &str) -> Result<FileExtents> {
        let mut fs = self.reader(METADATA_BUDGET);
        let (rec, stored) = self.resolve(&mut fs, path)?;
        let shown = display_path(&stored);
        let file = self.file(&mut fs, rec, &shown)?;
        let refuse = |why: &str| Error::refused(&self.name, format!("{shown}: {why}"));
        if file.is_directory() {
            return Err(refuse("is a directory"));
        }
        let d = self.data_facts(&file, &mut fs, &shown)?;
        if d.reparse_tag.is_some() {
            return Err(refuse(
                "has a reparse point; its data is not stored in place",
            ));
        }
        if !d.present || d.resident {
            return Err(refuse(
                "its data is stored inside its MFT record, not in clusters",
            ));
        }
        for (flag, what) in [
            (NtfsAttributeFlags::COMPRESSED, "NTFS-compressed"),
            (NtfsAttributeFlags::ENCRYPTED, "EFS-encrypted"),
            (NtfsAttributeFlags::SPARSE, "sparse"),
        ] {
            if d.flags.contains(flag) {
                return Err(refuse(&format!(
                    "is {what}; it cannot be rewritten in place"
                )));
            }
        }
        if d.initialized != d.size {
            return Err(refuse(&format!(
                "only {} of its {} bytes are initialized",
                d.initialized, d.size
            )));
        }
        let cluster = u64::from(self.cluster_size());
        let budget = METADATA_BUDGET.saturating_add(d.size);
        let mut fs = self.reader(budget);
        let file = self.file(&mut fs, rec, &shown)?;
        let what = format!("mapping the clusters of {shown} (MFT record {rec})");
        let start = self.start;
        let size = d.size;
        let found = guard(
            &self.name,
            &what,
            || -> std::result::Result<Option<Vec<(u64, u64)>>, NtfsError> {
                let Some(item) = file.data(&mut fs, "") else {
                    return Ok(None);
                };
                let item = item?;
                let attr = item.to_attribute()?;
                let mut value = attr.value(&mut fs)?;
                let mut out: Vec<(u64, u64)> = Vec::new();
                let mut pos = 0u64;
                value.seek(&mut fs, SeekFrom::Start(0))?;
                while pos < size {
                    let Some(at) = value.data_position().value() else {
                        return Ok(None);
                    };
                    let len = (cluster - pos % cluster).min(size - pos);
                    let at = start + at.get();
                    match out.last_mut() {
                        Some((o, l)) if *o + *l == at => *l += len,
                        _ => out.push((at, len)),
                    }
                    pos += len;
                    if pos < size {
                        value.seek(&mut fs, SeekFrom::Start(pos))?;
                    }
                }
                Ok(Some(out))
            },
        )?
        .map_err(|e| self.err(&what, e, budget))?;
        let extents = found.ok_or_else(|| refuse("part of its data is not mapped to clusters"))?;
        Ok(FileExtents {
            path: shown,
            size,
            extents,
        })
    }
}
