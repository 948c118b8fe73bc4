//! Resolving references from one image file to another (VMDK extents, VHD parents, qcow2
//! backing files) without ever leaving the image's own directory unless the user allows it.
//! Tools that followed such references blindly leaked host files (OpenStack CVE-2022-47951,
//! CVE-2024-32498).

use std::path::{Path, PathBuf};

use super::OpenOptions;
use crate::error::{Error, Result};

/// Resolves file references made by an image.
#[derive(Debug, Clone)]
pub struct Resolver {
    /// Canonical directory of the top-level image; `None` when the image is not a file (an NBD
    /// export or a buffer), in which case no reference can be followed.
    dir: Option<PathBuf>,
    allow_outside: bool,
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
        })
    }

    /// A resolver that follows nothing (for images that are not host files).
    pub fn none() -> Self {
        Resolver {
            dir: None,
            allow_outside: false,
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
}
