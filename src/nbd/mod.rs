//! NBD: serve an image read-only, and read `nbd://` sources.

use std::sync::Arc;

use crate::error::{Error, Result};
use crate::image::{BlockDevice, OpenOptions};

/// Open an NBD URI as an image (the export's content is detected like a file's).
pub fn open_uri(uri: &str, _options: &OpenOptions) -> Result<Arc<dyn BlockDevice>> {
    Err(Error::unsupported(uri, "NBD client not built yet"))
}
