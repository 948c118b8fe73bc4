//! `Read + Seek` over a window of a [`BlockDevice`] (the whole disk or one partition), for
//! crates that want a stream: ntfs, mbrman, gpt, the NBD server.

use std::io::{self, Read, Seek, SeekFrom};
use std::sync::Arc;

use super::BlockDevice;

/// A cursor over `[start, start+len)` of a device.
#[derive(Clone)]
pub struct DeviceReader {
    dev: Arc<dyn BlockDevice>,
    start: u64,
    len: u64,
    pos: u64,
}

impl DeviceReader {
    /// The whole device.
    pub fn new(dev: Arc<dyn BlockDevice>) -> Self {
        let len = dev.size();
        DeviceReader {
            dev,
            start: 0,
            len,
            pos: 0,
        }
    }

    /// A window (a partition) of the device, clipped to the device's end.
    pub fn window(dev: Arc<dyn BlockDevice>, start: u64, len: u64) -> Self {
        let size = dev.size();
        let start = start.min(size);
        let len = len.min(size - start);
        DeviceReader {
            dev,
            start,
            len,
            pos: 0,
        }
    }

    /// Length of the window.
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The device under the window.
    pub fn device(&self) -> &Arc<dyn BlockDevice> {
        &self.dev
    }

    /// Offset of the window on the device.
    pub fn start(&self) -> u64 {
        self.start
    }

    /// Positional read inside the window; short only at the window's end.
    pub fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        if offset >= self.len {
            return Ok(0);
        }
        let n = (buf.len() as u64).min(self.len - offset) as usize;
        self.dev
            .read_at(&mut buf[..n], self.start + offset)
            .map_err(|e| io::Error::other(e.to_string()))?;
        Ok(n)
    }
}

impl Read for DeviceReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.read_at(buf, self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }
}

impl Seek for DeviceReader {
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        let new = match pos {
            SeekFrom::Start(p) => Some(p),
            SeekFrom::End(d) => self.len.checked_add_signed(d),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        };
        match new {
            Some(p) => {
                self.pos = p;
                Ok(p)
            }
            None => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "seek to a negative or overflowing position",
            )),
        }
    }
}
