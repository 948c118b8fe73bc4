//! Raw writer: a sparse file the size of the guest disk. Only non-zero 4 KiB pieces of the
//! source's data extents are written; holes and zeros stay holes.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use super::output::Output;
use super::pipeline::{self, Chunk, CHUNK};
use super::{ConvertOptions, ConvertStats};
use crate::error::Result;
use crate::image::BlockDevice;

/// Granularity of zero detection in raw-like outputs (a host page / file-system block).
pub const ZERO_GRAN: usize = 4096;

/// Write `src` as a sparse raw file at `dst`.
pub fn write(
    src: Arc<dyn BlockDevice>,
    dst: &Path,
    opts: &ConvertOptions,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<ConvertStats> {
    let out = Output::create(dst, opts)?;
    let size = src.size();
    out.set_len(size)?;
    let (read, written) = copy_sparse(src.as_ref(), &out, 0, size, opts.threads(), progress)?;
    out.commit()?;
    Ok(ConvertStats {
        virtual_size: size,
        bytes_read: read,
        bytes_written: written,
    })
}

/// Copy the guest disk into `out` at `base + guest offset`, sparsely (raw and fixed VHD).
/// `limit` is the guest space the output covers (at least `src.size()`). Returns the bytes
/// read and written.
pub fn copy_sparse(
    src: &dyn BlockDevice,
    out: &Output,
    base: u64,
    limit: u64,
    jobs: usize,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<(u64, u64)> {
    let chunks = pipeline::plan(src, ZERO_GRAN as u64, CHUNK, limit.max(src.size()))?;
    let read = AtomicU64::new(0);
    let written = AtomicU64::new(0);
    pipeline::run_unordered(
        jobs,
        &chunks,
        || vec![0u8; CHUNK as usize],
        |buf: &mut Vec<u8>, c: Chunk| {
            let b = &mut buf[..c.len as usize];
            pipeline::read_padded(src, b, c.offset)?;
            read.fetch_add(c.len, Ordering::Relaxed);
            for (s, l) in pipeline::nonzero_runs(b, ZERO_GRAN) {
                out.write_at(&b[s..s + l], base + c.offset + s as u64)?;
                written.fetch_add(l as u64, Ordering::Relaxed);
            }
            Ok(())
        },
        progress,
    )?;
    pipeline::credit_tail(&chunks, src.size(), progress);
    Ok((read.into_inner(), written.into_inner()))
}
