//! Read budgets and limits: what keeps hostile NTFS metadata from hanging or exhausting memory.
//!
//! Every walk the `ntfs` crate does (index B-trees, attribute lists, data runs) runs over a
//! [`Budgeted`] reader, so a loop in the on-disk structures ends in an error naming what was
//! being read instead of a hang; calls into the crate run under [`guard`], so a crate panic on
//! hostile input becomes an error; [`map_err`] turns the crate's errors into ours, naming the
//! volume and the operation.

use std::io::{self, Read, Seek, SeekFrom};
use std::panic::{catch_unwind, AssertUnwindSafe};

use ntfs::NtfsError;

use crate::error::Error;
use crate::error::Result;
use crate::image::DeviceReader;

/// Default cap on the size of a file read into memory by [`super::Volume::read`].
pub const DEFAULT_READ_CAP: u64 = 512 << 20;
/// Bytes of metadata one operation (a lookup, a listing) may read before it is treated as a
/// loop in the on-disk structures.
pub const METADATA_BUDGET: u64 = 256 << 20;
/// Largest file or index record accepted (Windows uses 1 KiB and 4 KiB).
pub const MAX_RECORD_SIZE: u32 = 64 * 1024;
/// Most entries returned for one directory.
pub const MAX_DIR_ENTRIES: usize = 1_000_000;
/// Most path components followed.
pub const MAX_PATH_DEPTH: usize = 256;

/// Marker carried by the I/O error a [`Budgeted`] reader returns when its budget is spent.
#[derive(Debug)]
struct BudgetExceeded;
impl std::fmt::Display for BudgetExceeded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("read budget exceeded")
    }
}
impl std::error::Error for BudgetExceeded {}

/// A partition reader that fails once it has read `left` bytes.
pub(super) struct Budgeted {
    inner: DeviceReader,
    left: u64,
    budget: u64,
}

impl Budgeted {
    /// A reader over `inner` that may read `budget` bytes.
    pub(super) fn new(inner: DeviceReader, budget: u64) -> Self {
        Budgeted {
            inner,
            left: budget,
            budget,
        }
    }
    /// The budget it started with (for messages).
    pub(super) fn budget(&self) -> u64 {
        self.budget
    }
}

impl Read for Budgeted {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.len() as u64 > self.left {
            return Err(io::Error::other(BudgetExceeded));
        }
        let n = self.inner.read(buf)?;
        self.left -= n as u64;
        Ok(n)
    }
}

impl Seek for Budgeted {
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        self.inner.seek(pos)
    }
}

/// Turn a crate error into ours, naming the volume and what was being done.
pub(super) fn map_err(name: &str, what: &str, e: NtfsError, budget: u64) -> Error {
    match e {
        NtfsError::Io(io) => {
            if io
                .get_ref()
                .is_some_and(|inner| inner.downcast_ref::<BudgetExceeded>().is_some())
            {
                Error::corrupt(
                    name,
                    format!(
                        "{what}: gave up after reading {budget} bytes of metadata (a loop in the \
                         file system's structures?)"
                    ),
                )
            } else {
                Error::io(format!("{name}: {what}"), io)
            }
        }
        e @ NtfsError::UpdateSequenceNumberMismatch { .. } => Error::corrupt(
            name,
            format!(
                "{what}: the record is corrupt: {e} (a torn write or damaged sector; run chkdsk /f)"
            ),
        ),
        e @ (NtfsError::InvalidFileSignature { .. } | NtfsError::InvalidIndexSignature { .. }) => {
            Error::corrupt(
                name,
                format!("{what}: the record is corrupt: {e} (run chkdsk /f)"),
            )
        }
        e => Error::corrupt(
            name,
            format!("{what}: {e} (byte positions are counted from the partition's start)"),
        ),
    }
}

/// Run a call into the `ntfs` crate, turning a panic (a crate bug on hostile input) into an
/// error instead of aborting the check.
pub(super) fn guard<R>(name: &str, what: &str, f: impl FnOnce() -> R) -> Result<R> {
    catch_unwind(AssertUnwindSafe(f)).map_err(|p| {
        let msg = p
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| p.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".into());
        Error::corrupt(
            name,
            format!("{what}: the NTFS reader failed on this data: {msg}"),
        )
    })
}
