//! Raw images: the file is the guest disk. Holes of a sparse file are reported as unallocated.

use std::sync::Arc;

use super::storage::{read_exact_at, Storage};
use super::{check_range, clip_end, push_file_extents, BlockDevice, Extent, ExtentKind, Format};
use crate::error::Result;

/// A raw disk image.
pub struct RawImage {
    storage: Arc<dyn Storage>,
}

impl RawImage {
    pub fn new(storage: Arc<dyn Storage>) -> Self {
        RawImage { storage }
    }
}

impl BlockDevice for RawImage {
    fn format(&self) -> Format {
        Format::Raw
    }
    fn size(&self) -> u64 {
        self.storage.len()
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        check_range(self.storage.name(), offset, buf.len() as u64, self.size())?;
        read_exact_at(self.storage.as_ref(), buf, offset)
    }
    fn map(&self, offset: u64, len: u64) -> Result<Vec<Extent>> {
        let end = clip_end(offset, len, self.size());
        let mut out = Vec::new();
        push_file_extents(
            &mut out,
            self.storage.as_ref(),
            offset,
            end.saturating_sub(offset),
            offset,
            ExtentKind::Unallocated,
        )?;
        Ok(out)
    }
    fn actual_size(&self) -> u64 {
        self.storage.allocated_size()
    }
    fn name(&self) -> &str {
        self.storage.name()
    }
    fn files(&self) -> Vec<super::FileId> {
        self.storage.file_id().into_iter().collect()
    }
}
