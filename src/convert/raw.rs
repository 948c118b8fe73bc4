//! Raw writer: a sparse file the size of the guest disk; only data chunks are written.

use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use rayon::prelude::*;

use super::output::Output;
use super::{ConvertOptions, ConvertStats};
use crate::error::{Error, Result};
use crate::image::{BlockDevice, ExtentKind};

/// Size of the unit of parallel work.
pub const CHUNK: u64 = 2 * 1024 * 1024;

/// Write `src` as a sparse raw file at `dst`.
pub fn write(
    src: Arc<dyn BlockDevice>,
    dst: &Path,
    opts: &ConvertOptions,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<ConvertStats> {
    let out = Output::create(dst, opts.force)?;
    let size = src.size();
    out.file().set_len(size).map_err(|e| out.write_error(e))?;
    let chunks = data_chunks(src.as_ref(), CHUNK)?;
    let read = AtomicU64::new(0);
    let written = AtomicU64::new(0);
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(opts.jobs)
        .build()
        .map_err(|e| Error::Other(format!("cannot start worker threads: {e}")))?;
    pool.install(|| {
        chunks.par_iter().try_for_each(|&(off, len)| -> Result<()> {
            let mut buf = vec![0u8; len as usize];
            src.read_at(&mut buf, off)?;
            read.fetch_add(len, Ordering::Relaxed);
            if !is_zero(&buf) {
                out.file()
                    .write_all_at(&buf, off)
                    .map_err(|e| out.write_error(e))?;
                written.fetch_add(len, Ordering::Relaxed);
            }
            progress(len);
            Ok(())
        })
    })?;
    out.commit()?;
    Ok(ConvertStats {
        virtual_size: size,
        bytes_read: read.into_inner(),
        bytes_written: written.into_inner(),
    })
}

/// Split the data extents of `src` into chunks of at most `chunk` bytes, aligned to `chunk`.
pub fn data_chunks(src: &dyn BlockDevice, chunk: u64) -> Result<Vec<(u64, u64)>> {
    let size = src.size();
    let mut out = Vec::new();
    let window = 1u64 << 34;
    let mut pos = 0;
    while pos < size {
        let wlen = window.min(size - pos);
        for e in src.map(pos, wlen)? {
            if e.kind != ExtentKind::Data {
                continue;
            }
            let mut off = e.offset;
            let end = e.offset + e.length;
            while off < end {
                let next = ((off / chunk) + 1) * chunk;
                let stop = next.min(end);
                out.push((off, stop - off));
                off = stop;
            }
        }
        pos += wlen;
    }
    Ok(out)
}

/// Whether a buffer is all zeros.
pub fn is_zero(buf: &[u8]) -> bool {
    let (pre, mid, post) = unsafe { buf.align_to::<u128>() };
    pre.iter().all(|&b| b == 0) && mid.iter().all(|&w| w == 0) && post.iter().all(|&b| b == 0)
}
