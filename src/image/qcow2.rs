//! qcow2 reader (being written: see issue 2).

use std::sync::Arc;

use super::storage::Storage;
use super::{BlockDevice, OpenContext};
use crate::error::{Error, Result};

/// Open a qcow2 image.
pub fn open(storage: Arc<dyn Storage>, _ctx: &OpenContext) -> Result<Arc<dyn BlockDevice>> {
    Err(Error::unsupported(
        storage.name(),
        "qcow2 reader not yet built",
    ))
}
