//! Resolving references from one image file to another (VMDK extents, VHD parents, qcow2
//! backing files) without ever leaving the image's own directory unless the user allows it.
//! Tools that followed such references blindly leaked host files (OpenStack CVE-2022-47951,
//! CVE-2024-32498).

use std::fs::File;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::storage::{clear_nonblock, FileStorage, Storage};
use super::OpenOptions;
use crate::error::{Error, Result};

/// Resolves file references made by an image.
#[derive(Debug, Clone)]
pub struct Resolver {
    /// Canonical directory of the top-level image; `None` when the image is not a file (an NBD
    /// export or a buffer), in which case no reference can be followed.
    dir: Option<PathBuf>,
    allow_outside: bool,
    /// Whether a reference may name a block device (never a FIFO, socket or character device).
    allow_block: bool,
}

impl Resolver {
    /// Resolver for references made by the image at `path`.
    pub fn for_image(path: &Path, options: &OpenOptions) -> Result<Self> {
        let canon = path
            .canonicalize()
            .map_err(|e| Error::io(path.display(), e))?;
        Ok(Resolver {
            dir: canon.parent().map(Path::to_path_buf),
            allow_outside: options.allow_outside_dir,
            allow_block: options.allow_block_devices,
        })
    }

    /// A resolver that follows nothing (for images that are not host files).
    pub fn none() -> Self {
        Resolver {
            dir: None,
            allow_outside: false,
            allow_block: false,
        }
    }

    /// Directory references resolve in.
    pub fn dir(&self) -> Option<&Path> {
        self.dir.as_deref()
    }

    /// Resolve `reference`, made by `referrer` (for messages) as a `what` ("extent", "backing
    /// file", "parent"), to a canonical path inside the image's directory (symlinks followed and
    /// then checked). Fails with a message that names the reference.
    pub fn resolve(&self, referrer: &str, what: &str, reference: &str) -> Result<PathBuf> {
        let Some(dir) = &self.dir else {
            return Err(Error::refused(
                referrer,
                format!("{what} \"{reference}\" cannot be followed: the image is not a local file"),
            ));
        };
        if reference.is_empty() || reference.contains('\0') {
            return Err(Error::corrupt(
                referrer,
                format!("{what} reference is empty or invalid"),
            ));
        }
        if reference.contains("://") || reference.starts_with("json:") {
            return Err(Error::refused(
                referrer,
                format!("{what} \"{reference}\" is a URL or protocol reference; imgcheck follows only files"),
            ));
        }
        let refp = Path::new(reference);
        let joined = if refp.is_absolute() {
            refp.to_path_buf()
        } else {
            dir.join(refp)
        };
        let canon = joined.canonicalize().map_err(|e| {
            Error::corrupt(
                referrer,
                format!(
                    "{what} \"{reference}\" cannot be opened ({}): {e}",
                    joined.display()
                ),
            )
        })?;
        if !self.allow_outside && !canon.starts_with(dir) {
            return Err(Error::refused(
                referrer,
                format!(
                    "{what} \"{reference}\" resolves to {}, outside the image's directory {}; \
                     pass --allow-outside-dir only if you trust this image",
                    canon.display(),
                    dir.display()
                ),
            ));
        }
        Ok(canon)
    }

    /// Open `path`, a reference of `referrer` resolved by [`Resolver::resolve`], read-only.
    /// What is checked is the opened descriptor, so a file swapped in after `resolve` cannot
    /// slip through: the open does not follow a symlink in the last component (`resolve`
    /// returns a path without symlinks) nor wait for a FIFO's writer (`O_NONBLOCK`); `fstat`
    /// then requires a regular file, or a block device when the user allows them; and the
    /// descriptor's own path (`/proc/self/fd`) must still be `path`.
    pub fn open(&self, referrer: &str, what: &str, path: &Path) -> Result<Arc<dyn Storage>> {
        let shown = path.display();
        let file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open(path)
            .map_err(|e| match e.raw_os_error() {
                Some(libc::ELOOP) => Error::refused(
                    referrer,
                    format!("{what} {shown} became a symbolic link while it was being opened"),
                ),
                _ => Error::io(&shown, e),
            })?;
        let meta = file.metadata().map_err(|e| Error::io(&shown, e))?;
        let ft = meta.file_type();
        if ft.is_block_device() && !self.allow_block {
            return Err(Error::refused(
                referrer,
                format!(
                    "{what} {shown} is a block device, not an image file; pass \
                     --allow-block-devices only if you mean to read that device"
                ),
            ));
        }
        if !ft.is_file() && !ft.is_block_device() {
            let kind = if ft.is_fifo() {
                "a FIFO (named pipe)"
            } else if ft.is_char_device() {
                "a character device"
            } else if ft.is_socket() {
                "a socket"
            } else if ft.is_dir() {
                "a directory"
            } else {
                "of an unknown kind"
            };
            return Err(Error::refused(
                referrer,
                format!(
                    "{what} {shown} is {kind}, not a regular file; an image may refer only \
                     to regular files"
                ),
            ));
        }
        check_fd_path(referrer, what, &file, path)?;
        clear_nonblock(&file);
        Ok(Arc::new(FileStorage::from_file(file, path)?))
    }
}

/// Refuse `file` when the kernel names it by another path than `path` (a directory on the way
/// was swapped for a symlink after `path` was resolved). Skipped where `/proc` is not mounted.
fn check_fd_path(referrer: &str, what: &str, file: &File, path: &Path) -> Result<()> {
    let link = format!("/proc/self/fd/{}", file.as_raw_fd());
    match std::fs::read_link(link) {
        Ok(real) if real != path => Err(Error::refused(
            referrer,
            format!(
                "{what} {} was replaced while it was being opened (it is now {})",
                path.display(),
                real.display()
            ),
        )),
        _ => Ok(()),
    }
}
