//! Byte stores that image formats are parsed from: a host file, a buffer in memory (tests and
//! fuzzing), or a remote NBD export. All reads are positional and take `&self`, so many threads
//! can read one store at once.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::{Error, Result};

/// A read-only, randomly addressable byte store.
pub trait Storage: Send + Sync {
    /// Name used in messages (usually the path).
    fn name(&self) -> &str;
    /// Length in bytes.
    fn len(&self) -> u64;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Read up to `buf.len()` bytes at `offset`; returns the number read (short only at the end).
    fn read_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<usize>;
    /// Host path of the store, when it is a file (used to resolve references next to it).
    fn path(&self) -> Option<&Path> {
        None
    }
    /// Ranges of `[offset, offset+len)` that may hold data, as (start, length); the rest are
    /// holes that read as zeros. The default says "everything may hold data".
    fn data_ranges(&self, offset: u64, len: u64) -> std::io::Result<Vec<(u64, u64)>> {
        let end = offset.saturating_add(len).min(self.len());
        if end <= offset {
            return Ok(vec![]);
        }
        Ok(vec![(offset, end - offset)])
    }
    /// Bytes the store occupies on its host (allocated blocks for a sparse file).
    fn allocated_size(&self) -> u64 {
        self.len()
    }
    /// Identity of the host file, when the store is one (compared to refuse writing over it).
    fn file_id(&self) -> Option<FileId> {
        None
    }
}

/// The identity of an opened host file: device and inode numbers, as `fstat` gave them. Two
/// names (hard links, symlinks, `a/../b`) of one file have the same identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FileId {
    pub dev: u64,
    pub ino: u64,
}

impl FileId {
    /// The identity of the file `meta` describes.
    pub fn of(meta: &std::fs::Metadata) -> Self {
        use std::os::unix::fs::MetadataExt;
        FileId {
            dev: meta.dev(),
            ino: meta.ino(),
        }
    }
}

/// Read exactly `buf.len()` bytes at `offset`, or fail with an error that names the store and
/// says the file is truncated.
pub fn read_exact_at(s: &dyn Storage, buf: &mut [u8], offset: u64) -> Result<()> {
    let mut done = 0usize;
    while done < buf.len() {
        let n = s
            .read_at(&mut buf[done..], offset + done as u64)
            .map_err(|e| Error::io(s.name(), e))?;
        if n == 0 {
            return Err(Error::corrupt(
                s.name(),
                format!(
                    "file is truncated: needs {} bytes at offset {} but the file is {} bytes long",
                    buf.len(),
                    offset,
                    s.len()
                ),
            ));
        }
        done += n;
    }
    Ok(())
}

/// Read `len` bytes at `offset` into a new buffer, refusing lengths over `cap` (a header field
/// must never make us allocate in proportion to what it claims) and past the end of the store.
pub fn read_vec(s: &dyn Storage, offset: u64, len: u64, cap: u64, what: &str) -> Result<Vec<u8>> {
    if len > cap {
        return Err(Error::corrupt(
            s.name(),
            format!("{what} claims {len} bytes, more than the {cap}-byte limit"),
        ));
    }
    if offset.checked_add(len).is_none_or(|end| end > s.len()) {
        return Err(Error::corrupt(
            s.name(),
            format!(
                "{what} ({len} bytes at offset {offset}) lies past the end of the {}-byte file",
                s.len()
            ),
        ));
    }
    let mut v = vec![0u8; len as usize];
    read_exact_at(s, &mut v, offset)?;
    Ok(v)
}

/// Bytes read from host files by this process (all [`FileStorage`]s): `verify -v` reports it
/// so a user can see that checking a sparse 64 GiB image reads only its metadata.
static FILE_BYTES_READ: AtomicU64 = AtomicU64::new(0);

/// Bytes read from image files so far by this process.
pub fn file_bytes_read() -> u64 {
    FILE_BYTES_READ.load(Ordering::Relaxed)
}

/// Back to blocking reads on `file`, opened with `O_NONBLOCK` so that a FIFO could not make
/// the open wait (a regular file or block device never blocks, but nothing should depend on
/// that).
pub(crate) fn clear_nonblock(file: &File) {
    let fd = file.as_raw_fd();
    // SAFETY: fcntl on a valid, owned descriptor with integer arguments.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFL);
        if flags >= 0 {
            libc::fcntl(fd, libc::F_SETFL, flags & !libc::O_NONBLOCK);
        }
    }
}

/// A host file opened read-only.
pub struct FileStorage {
    file: File,
    name: String,
    path: PathBuf,
    len: u64,
    id: FileId,
}

impl FileStorage {
    /// Open `path` read-only. The input is never opened writable. A regular file or a block
    /// device (named by the user); a FIFO, socket or character device is refused without
    /// waiting for a writer (`O_NONBLOCK`): an image must be readable at any offset.
    pub fn open(path: &Path) -> Result<Self> {
        use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
        let name = path.display().to_string();
        let file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open(path)
            .map_err(|e| Error::io(&name, e))?;
        let ft = file
            .metadata()
            .map_err(|e| Error::io(&name, e))?
            .file_type();
        if ft.is_fifo() || ft.is_socket() || ft.is_char_device() {
            return Err(Error::refused(
                &name,
                "is a FIFO, socket or character device, not an image file (an image must be \
                 readable at any offset: give a regular file or a block device)",
            ));
        }
        clear_nonblock(&file);
        Self::from_file(file, path)
    }

    /// A store reading `file`, already opened read-only from `path`.
    pub fn from_file(file: File, path: &Path) -> Result<Self> {
        let name = path.display().to_string();
        let meta = file.metadata().map_err(|e| Error::io(&name, e))?;
        let len = if meta.file_type().is_file() {
            meta.len()
        } else {
            // Block devices report 0 in metadata; ask the device itself.
            let mut end = 0u64;
            // SAFETY: lseek on a valid fd has no memory-safety preconditions.
            let r = unsafe { libc::lseek(file.as_raw_fd(), 0, libc::SEEK_END) };
            if r > 0 {
                end = r as u64;
            }
            if meta.is_dir() {
                return Err(Error::Other(format!(
                    "{name}: is a directory, not an image"
                )));
            }
            end
        };
        Ok(FileStorage {
            file,
            name,
            path: path.to_path_buf(),
            len,
            id: FileId::of(&meta),
        })
    }
}

impl Storage for FileStorage {
    fn name(&self) -> &str {
        &self.name
    }
    fn len(&self) -> u64 {
        self.len
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<usize> {
        loop {
            match self.file.read_at(buf, offset) {
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Ok(n) => {
                    FILE_BYTES_READ.fetch_add(n as u64, Ordering::Relaxed);
                    return Ok(n);
                }
                r => return r,
            }
        }
    }
    fn path(&self) -> Option<&Path> {
        Some(&self.path)
    }
    fn data_ranges(&self, offset: u64, len: u64) -> std::io::Result<Vec<(u64, u64)>> {
        let end = offset.saturating_add(len).min(self.len);
        let mut out = Vec::new();
        let fd = self.file.as_raw_fd();
        let mut pos = offset;
        while pos < end {
            // SAFETY: lseek on a valid fd has no memory-safety preconditions.
            let data = unsafe { libc::lseek(fd, pos as libc::off_t, libc::SEEK_DATA) };
            if data < 0 {
                let err = std::io::Error::last_os_error();
                match err.raw_os_error() {
                    // No data after pos: the rest is a hole.
                    Some(libc::ENXIO) => break,
                    // File system without SEEK_DATA: everything may be data.
                    Some(libc::EINVAL) | Some(libc::EOPNOTSUPP) => {
                        out.push((pos, end - pos));
                        break;
                    }
                    _ => return Err(err),
                }
            }
            let data = data as u64;
            if data >= end {
                break;
            }
            // SAFETY: as above.
            let hole = unsafe { libc::lseek(fd, data as libc::off_t, libc::SEEK_HOLE) };
            let hole = if hole < 0 {
                end
            } else {
                (hole as u64).min(end)
            };
            if hole <= data {
                out.push((data, end - data));
                break;
            }
            out.push((data, hole - data));
            pos = hole;
        }
        Ok(out)
    }
    fn allocated_size(&self) -> u64 {
        use std::os::unix::fs::MetadataExt;
        self.file
            .metadata()
            .map(|m| m.blocks() * 512)
            .unwrap_or(self.len)
    }
    fn file_id(&self) -> Option<FileId> {
        Some(self.id)
    }
}

/// A byte buffer in memory: for tests and fuzzing.
pub struct MemStorage {
    name: String,
    data: Vec<u8>,
}

impl MemStorage {
    pub fn new(name: impl Into<String>, data: Vec<u8>) -> Self {
        MemStorage {
            name: name.into(),
            data,
        }
    }
}

impl Storage for MemStorage {
    fn name(&self) -> &str {
        &self.name
    }
    fn len(&self) -> u64 {
        self.data.len() as u64
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<usize> {
        if offset >= self.data.len() as u64 {
            return Ok(0);
        }
        let start = offset as usize;
        let n = buf.len().min(self.data.len() - start);
        buf[..n].copy_from_slice(&self.data[start..start + n]);
        Ok(n)
    }
}
