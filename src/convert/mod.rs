//! Writers: convert a guest disk into raw, qcow2, VHD or VMDK.
//!
//! Every writer writes to a temporary file in the destination's directory, fsyncs it, and
//! renames it to the destination only when complete, so an interrupted conversion never leaves
//! a partial destination behind.

pub mod output;
pub mod raw;

use std::path::Path;
use std::sync::Arc;

use serde::Serialize;

use crate::error::{Error, Result};
use crate::image::BlockDevice;

/// Output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OutputFormat {
    Raw,
    Qcow2,
    Vhd,
    Vmdk,
}

impl std::str::FromStr for OutputFormat {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "raw" => Ok(OutputFormat::Raw),
            "qcow2" => Ok(OutputFormat::Qcow2),
            "vhd" | "vpc" => Ok(OutputFormat::Vhd),
            "vmdk" => Ok(OutputFormat::Vmdk),
            "vhdx" => Err(Error::Other(
                "VHDX output is not offered: the target platform refuses VHDX".into(),
            )),
            other => Err(Error::Other(format!(
                "unknown output format \"{other}\" (expected raw, qcow2, vhd/vpc or vmdk)"
            ))),
        }
    }
}

/// How to convert.
#[derive(Debug, Clone)]
pub struct ConvertOptions {
    pub format: OutputFormat,
    /// `-o key=value,...` options (subformat, cluster_size, ...).
    pub options: Vec<(String, String)>,
    /// `-c`: compress (qcow2).
    pub compress: bool,
    /// Worker threads (0 = as many as cores).
    pub jobs: usize,
    /// Overwrite an existing destination.
    pub force: bool,
}

impl Default for ConvertOptions {
    fn default() -> Self {
        ConvertOptions {
            format: OutputFormat::Raw,
            options: Vec::new(),
            compress: false,
            jobs: 0,
            force: false,
        }
    }
}

/// What a conversion did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ConvertStats {
    pub virtual_size: u64,
    /// Guest bytes read from the source.
    pub bytes_read: u64,
    /// Guest bytes written as data (holes and zero chunks are not written).
    pub bytes_written: u64,
}

/// Convert `src` into `dst`.
pub fn convert(
    src: Arc<dyn BlockDevice>,
    dst: &Path,
    opts: &ConvertOptions,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<ConvertStats> {
    match opts.format {
        OutputFormat::Raw => raw::write(src, dst, opts, progress),
        other => Err(Error::Other(format!(
            "conversion to {other:?} is not built yet"
        ))),
    }
}
