//! `--verify`: read the destination back with imgcheck's own reader and compare it with the
//! source, in parallel. Ranges both allocation maps call holes are not read. A destination
//! larger than the source (sizes rounded up to sectors or VHD geometry) must read as zeros
//! past the source's end.

use std::sync::atomic::{AtomicU64, Ordering};

use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::image::BlockDevice;

/// Bytes compared per work item.
const STEP: u64 = 4 * 1024 * 1024;

fn all_holes(dev: &dyn BlockDevice, off: u64, len: u64) -> Result<bool> {
    if off >= dev.size() {
        return Ok(true);
    }
    Ok(dev.map(off, len)?.iter().all(|e| e.kind.reads_as_zero()))
}

fn read_part(dev: &dyn BlockDevice, buf: &mut [u8], off: u64) -> Result<()> {
    super::pipeline::read_padded(dev, buf, off)
}

/// Compare `src` and `dst` guest bytes; returns the number of bytes compared.
pub fn compare(
    src: &dyn BlockDevice,
    dst: &dyn BlockDevice,
    jobs: usize,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<u64> {
    if dst.size() < src.size() {
        return Err(Error::Other(format!(
            "verify: {} is {} bytes, smaller than the {}-byte source {}",
            dst.name(),
            dst.size(),
            src.size(),
            src.name()
        )));
    }
    let total = dst.size();
    let steps = total.div_ceil(STEP);
    let compared = AtomicU64::new(0);
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(jobs.max(1))
        .build()
        .map_err(|e| Error::Other(format!("cannot start worker threads: {e}")))?;
    pool.install(|| {
        (0..steps).into_par_iter().try_for_each_init(
            || (vec![0u8; STEP as usize], vec![0u8; STEP as usize]),
            |(a, b), i| -> Result<()> {
                if super::cancelled() {
                    return Err(Error::Other("verify interrupted".into()));
                }
                let off = i * STEP;
                let len = STEP.min(total - off);
                if all_holes(src, off, len)? && all_holes(dst, off, len)? {
                    progress(len);
                    return Ok(());
                }
                let (a, b) = (&mut a[..len as usize], &mut b[..len as usize]);
                read_part(src, a, off)?;
                dst.read_at(b, off)?;
                if a != b {
                    let at = a
                        .iter()
                        .zip(b.iter())
                        .position(|(x, y)| x != y)
                        .unwrap_or(0);
                    return Err(Error::Other(format!(
                        "verify: {} differs from {} at guest offset {}",
                        dst.name(),
                        src.name(),
                        off + at as u64
                    )));
                }
                compared.fetch_add(len, Ordering::Relaxed);
                progress(len);
                Ok(())
            },
        )
    })?;
    Ok(compared.into_inner())
}
