//! A guest disk seen through replaced byte ranges: the source image, unchanged, with the bytes
//! of repaired files laid over it. `imgcheck fix` converts this view to the destination, so the
//! source is never written and the destination appears only when complete (the converter's
//! temporary name and rename).

use std::sync::Arc;

use crate::image::{BlockDevice, Extent, ExtentKind, FileId, Format};
use crate::Result;

/// `inner` with `patches` (guest offset, bytes) laid over it. Patches do not overlap.
pub struct Overlay {
    inner: Arc<dyn BlockDevice>,
    patches: Vec<(u64, Vec<u8>)>,
}

impl Overlay {
    /// Sorts the patches; they must not overlap and must lie inside the disk.
    pub fn new(inner: Arc<dyn BlockDevice>, mut patches: Vec<(u64, Vec<u8>)>) -> Result<Overlay> {
        patches.sort_by_key(|p| p.0);
        let mut end = 0u64;
        for (off, b) in &patches {
            crate::image::check_range(inner.name(), *off, b.len() as u64, inner.size())?;
            if *off < end {
                return Err(crate::Error::Other(format!(
                    "{}: repair patches overlap at guest offset {off}",
                    inner.name()
                )));
            }
            end = off + b.len() as u64;
        }
        Ok(Overlay { inner, patches })
    }

    fn overlapping(&self, offset: u64, len: u64) -> impl Iterator<Item = &(u64, Vec<u8>)> {
        let end = offset.saturating_add(len);
        let first = self
            .patches
            .partition_point(|(o, b)| o + b.len() as u64 <= offset);
        self.patches[first..]
            .iter()
            .take_while(move |(o, _)| *o < end)
    }
}

impl BlockDevice for Overlay {
    fn format(&self) -> Format {
        self.inner.format()
    }
    fn subformat(&self) -> Option<String> {
        self.inner.subformat()
    }
    fn size(&self) -> u64 {
        self.inner.size()
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        self.inner.read_at(buf, offset)?;
        let end = offset + buf.len() as u64;
        for (o, b) in self.overlapping(offset, buf.len() as u64) {
            let from = offset.max(*o);
            let to = end.min(o + b.len() as u64);
            buf[(from - offset) as usize..(to - offset) as usize]
                .copy_from_slice(&b[(from - o) as usize..(to - o) as usize]);
        }
        Ok(())
    }
    /// The source's map, with any extent that a patch touches reported as data.
    fn map(&self, offset: u64, len: u64) -> Result<Vec<Extent>> {
        let mut m = self.inner.map(offset, len)?;
        for e in &mut m {
            if e.kind != ExtentKind::Data && self.overlapping(e.offset, e.length).next().is_some() {
                e.kind = ExtentKind::Data;
            }
        }
        Ok(m)
    }
    fn actual_size(&self) -> u64 {
        self.inner.actual_size()
    }
    fn name(&self) -> &str {
        self.inner.name()
    }
    fn warnings(&self) -> Vec<String> {
        self.inner.warnings()
    }
    fn backing(&self) -> Option<String> {
        self.inner.backing()
    }
    fn granularity(&self) -> u64 {
        self.inner.granularity()
    }
    fn files(&self) -> Vec<FileId> {
        self.inner.files()
    }
}
