//! qcow2 backing files: opened only when the user allows it, through the image's resolver.

use std::sync::Arc;

use crate::error::{Error, Result};
use crate::image::storage::Storage;
use crate::image::{BlockDevice, Format, OpenContext};

/// Open the backing file `reference` of `storage`, when the user allows it.
pub(super) fn open_backing(
    storage: &Arc<dyn Storage>,
    ctx: &OpenContext,
    reference: &str,
    format: Option<&str>,
) -> Result<Arc<dyn BlockDevice>> {
    let name = storage.name();
    if !ctx.options.allow_backing {
        return Err(Error::refused(
            name,
            format!(
                "qcow2 image has backing file \"{reference}\"; pass --allow-backing to read \
                 through it (it must lie in the image's directory), or flatten the image first \
                 with `qemu-img convert -O qcow2`"
            ),
        ));
    }
    let path = ctx.resolver.resolve(name, "backing file", reference)?;
    let child = ctx.child(reference)?;
    let bs = ctx.resolver.open(name, "backing file", &path)?;
    let dev: Arc<dyn BlockDevice> = match format {
        // A backing file declared raw is read as raw, never probed.
        Some("raw") => Arc::new(crate::image::raw::RawImage::new(bs)),
        _ => crate::image::open_storage(bs, &child)?,
    };
    if let Some(fmt) = format {
        let expected = match fmt {
            "raw" => Some(Format::Raw),
            "qcow2" => Some(Format::Qcow2),
            "vpc" => Some(Format::Vhd),
            "vmdk" => Some(Format::Vmdk),
            _ => None,
        };
        match expected {
            None => {
                return Err(Error::unsupported(
                    name,
                    format!(
                        "qcow2 backing file \"{reference}\" has format \"{fmt}\", which imgcheck \
                         does not read"
                    ),
                ))
            }
            Some(f) if f != dev.format() => {
                return Err(Error::corrupt(
                    name,
                    format!(
                        "qcow2 backing file \"{reference}\" is declared as {fmt} but its content \
                         is {}",
                        dev.format()
                    ),
                ))
            }
            Some(_) => {}
        }
    }
    Ok(dev)
}
