//! vmdk reader (being written: see issue 2).

use std::sync::Arc;

use super::storage::Storage;
use super::{BlockDevice, OpenContext};
use crate::error::{Error, Result};

/// Open a vmdk image.
pub fn open(storage: Arc<dyn Storage>, _ctx: &OpenContext) -> Result<Arc<dyn BlockDevice>> {
    Err(Error::unsupported(
        storage.name(),
        "vmdk reader not yet built",
    ))
}
