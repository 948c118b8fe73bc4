//! The destination file: created under a temporary name in the destination's directory,
//! fsync'd and renamed into place only when complete; removed on drop if not committed.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::{CacheMode, ConvertOptions};
use crate::error::{Error, Result};
use crate::image::FileId;

/// Refuse `dst` when it names one of the `inputs` (the source image, a backing file, parent or
/// extent of it), whatever the name: the same path, a hard link, or a symlink to it. `--force`
/// does not lift this: the conversion would replace what it reads.
pub fn refuse_input(dst: &Path, inputs: &[FileId]) -> Result<()> {
    // metadata() follows a symlink at `dst` to what it names.
    let Ok(meta) = std::fs::metadata(dst) else {
        return Ok(());
    };
    if inputs.contains(&FileId::of(&meta)) {
        return Err(Error::refused(
            dst.display(),
            "the destination is an input of this conversion (the source image, or a backing \
             file, parent or extent it reads; maybe through a hard link or symlink); \
             refusing to replace it, even with --force — choose another destination",
        ));
    }
    Ok(())
}

/// A destination being written.
pub struct Output {
    file: Option<File>,
    tmp: PathBuf,
    dst: PathBuf,
    committed: bool,
    cache: CacheMode,
    /// Files `dst` must not be when it is replaced (checked again at the rename).
    protect: Vec<FileId>,
}

impl Output {
    /// Create the temporary file for `dst`. Refuses an existing `dst` unless `opts.force`.
    pub fn create(dst: &Path, opts: &ConvertOptions) -> Result<Self> {
        let force = opts.force;
        let name = dst.display().to_string();
        refuse_input(dst, &opts.protect)?;
        if !force && dst.symlink_metadata().is_ok() {
            return Err(Error::Other(format!(
                "{name}: already exists; pass --force to overwrite it"
            )));
        }
        let dir = match dst.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let base = dst
            .file_name()
            .ok_or_else(|| Error::Other(format!("{name}: not a file name")))?
            .to_string_lossy()
            .to_string();
        let tmp = dir.join(format!(".{base}.{}.tmp-imgcheck", std::process::id()));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&tmp)
            .map_err(|e| Error::io(tmp.display(), e))?;
        Ok(Output {
            file: Some(file),
            tmp,
            dst: dst.to_path_buf(),
            committed: false,
            cache: opts.cache,
            protect: opts.protect.clone(),
        })
    }

    /// The open temporary file.
    pub fn file(&self) -> &File {
        self.file
            .as_ref()
            .expect("output file is open until commit")
    }

    /// Path of the temporary file (for messages).
    pub fn tmp_path(&self) -> &Path {
        &self.tmp
    }

    /// Name of the destination (for messages).
    pub fn name(&self) -> String {
        self.dst.display().to_string()
    }

    /// Write all of `buf` at `offset` of the temporary file.
    pub fn write_at(&self, buf: &[u8], offset: u64) -> Result<()> {
        self.file()
            .write_all_at(buf, offset)
            .map_err(|e| self.write_error(e))?;
        if buf.len() >= 256 * 1024 && self.cache == CacheMode::Writeback {
            self.start_writeback(offset, buf.len() as u64);
        }
        Ok(())
    }

    /// Start writing `[offset, offset+len)` back to the disk now (asynchronously), so the
    /// final fsync overlaps with the conversion instead of following it. Advisory: errors are
    /// reported by the fsync in [`Output::commit`].
    fn start_writeback(&self, offset: u64, len: u64) {
        use std::os::fd::AsRawFd;
        // SAFETY: sync_file_range on a valid fd has no memory-safety preconditions.
        unsafe {
            libc::sync_file_range(
                self.file().as_raw_fd(),
                offset as libc::off64_t,
                len as libc::off64_t,
                libc::SYNC_FILE_RANGE_WRITE,
            );
        }
    }

    /// Set the length of the temporary file (extending it leaves a hole).
    pub fn set_len(&self, len: u64) -> Result<()> {
        self.file().set_len(len).map_err(|e| self.write_error(e))
    }

    /// Map a write error to one that names the destination and says when the disk is full.
    pub fn write_error(&self, e: std::io::Error) -> Error {
        let name = self.name();
        match e.raw_os_error() {
            Some(libc::ENOSPC) => Error::Other(format!("{name}: no space left on the device")),
            Some(libc::EFBIG) => {
                Error::Other(format!("{name}: file too large (file-size limit reached)"))
            }
            Some(libc::EDQUOT) => Error::Other(format!("{name}: disk quota exceeded")),
            _ => Error::io(name, e),
        }
    }

    /// Flush, fsync and rename into place; fsync the directory so the rename is durable.
    /// With `-t unsafe`, only the rename.
    pub fn commit(mut self) -> Result<()> {
        let file = self.file.take().expect("commit once");
        let durable = self.cache == CacheMode::Writeback;
        if durable {
            file.sync_all().map_err(|e| self.write_error(e))?;
        }
        drop(file);
        if super::cancelled() {
            return Err(super::interrupted_error(&self.dst));
        }
        // Again right before the rename: `dst` may have been made a link to an input since.
        refuse_input(&self.dst, &self.protect)?;
        std::fs::rename(&self.tmp, &self.dst).map_err(|e| Error::io(self.name(), e))?;
        self.committed = true;
        if !durable {
            return Ok(());
        }
        if let Some(dir) = self.dst.parent() {
            let dir = if dir.as_os_str().is_empty() {
                Path::new(".")
            } else {
                dir
            };
            if let Ok(d) = File::open(dir) {
                let _ = d.sync_all();
            }
        }
        Ok(())
    }
}

impl Drop for Output {
    fn drop(&mut self) {
        if !self.committed {
            self.file.take();
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}
