//! vhd reader (being written: see issue 2).

use std::sync::Arc;

use super::storage::Storage;
use super::{BlockDevice, OpenContext};
use crate::error::{Error, Result};

/// Open a vhd image.
pub fn open(storage: Arc<dyn Storage>, _ctx: &OpenContext) -> Result<Arc<dyn BlockDevice>> {
    Err(Error::unsupported(
        storage.name(),
        "vhd reader not yet built",
    ))
}
