//! Writers: convert a guest disk into raw, qcow2, VHD or VMDK.
//!
//! Every writer writes to a temporary file in the destination's directory, fsyncs it, and
//! renames it to the destination only when complete ([`output::Output`]), so an interrupted or
//! failed conversion never leaves a partial destination behind.
//!
//! All writers share one parallel pipeline ([`pipeline`]): the source's allocation map is cut
//! into chunks (holes are never read), rayon workers read (and compress) chunks in parallel,
//! all-zero clusters/grains/blocks are dropped, and output offsets are assigned in guest order so
//! the output is identical whatever the number of threads. Memory is bounded by
//! `jobs × chunk buffers`, whatever the image size.

pub mod deflate;
pub mod output;
pub mod pipeline;
pub mod qcow2;
pub mod raw;
pub mod verify;
pub mod vhd;
pub mod vmdk;

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use serde::Serialize;

use crate::error::{Error, Result};
use crate::image::{BlockDevice, FileId};

/// Set (from a SIGINT/SIGTERM handler, or by a library user) to stop a conversion: the pipeline
/// stops at the next chunk and the temporary output is removed.
pub static CANCEL: AtomicBool = AtomicBool::new(false);

/// Ask a running conversion to stop (async-signal-safe: one atomic store).
pub fn request_cancel() {
    CANCEL.store(true, Ordering::SeqCst);
}

/// Whether a stop was requested.
pub fn cancelled() -> bool {
    CANCEL.load(Ordering::Relaxed)
}

/// The error returned when a conversion was stopped.
pub fn interrupted_error(dst: &Path) -> Error {
    Error::Other(format!(
        "{}: conversion interrupted; nothing was written",
        dst.display()
    ))
}

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

/// What the output's durability is when the conversion returns (`-t`, qemu-img's cache-mode
/// names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CacheMode {
    /// The default: writeback is started while converting, and the output is fsync'd before it
    /// is renamed into place (and the directory after), so a DST that exists is on the disk.
    /// qemu-img's `-t writeback` flushes at the end in the same way.
    #[default]
    Writeback,
    /// No flush: the output may still be in the page cache when the command returns (qemu-img
    /// convert's default for its destination). The temporary name and the rename stay, so an
    /// interrupted conversion still leaves no DST, but a power failure right after may.
    Unsafe,
}

impl std::str::FromStr for CacheMode {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "writeback" => Ok(CacheMode::Writeback),
            "unsafe" => Ok(CacheMode::Unsafe),
            "none" | "writethrough" | "directsync" => Err(Error::Other(format!(
                "-t {s}: not offered (imgcheck writes through the page cache); use -t \
                 writeback (the default: fsync before the rename) or -t unsafe (no fsync)"
            ))),
            other => Err(Error::Other(format!(
                "unknown cache mode \"{other}\" (expected writeback or unsafe)"
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
    /// `-c`: compress (qcow2; streamOptimized VMDK is always compressed).
    pub compress: bool,
    /// Worker threads (0 = as many as cores).
    pub jobs: usize,
    /// Overwrite an existing destination.
    pub force: bool,
    /// `-t`: fsync the output before renaming it into place, or not.
    pub cache: CacheMode,
    /// Host files the destination must never be (the source and every file it reads);
    /// [`convert`] adds the source's own, a batch adds all of its inputs.
    pub protect: Vec<FileId>,
}

impl Default for ConvertOptions {
    fn default() -> Self {
        ConvertOptions {
            format: OutputFormat::Raw,
            options: Vec::new(),
            compress: false,
            jobs: 0,
            force: false,
            cache: CacheMode::Writeback,
            protect: Vec::new(),
        }
    }
}

impl ConvertOptions {
    /// Number of worker threads to use.
    pub fn threads(&self) -> usize {
        if self.jobs > 0 {
            self.jobs
        } else {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        }
    }

    /// The value of `-o key=...`, if given (the last one wins, as in qemu-img).
    pub fn option(&self, key: &str) -> Option<&str> {
        self.options
            .iter()
            .rev()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v.as_str())
    }

    /// Refuse `-o` keys the chosen format does not know.
    fn check_keys(&self, known: &[&str]) -> Result<()> {
        for (k, _) in &self.options {
            if !known.iter().any(|n| n.eq_ignore_ascii_case(k)) {
                return Err(Error::Other(format!(
                    "-o {k}: not an option of the {:?} output format (known: {})",
                    self.format,
                    if known.is_empty() {
                        "none".to_string()
                    } else {
                        known.join(", ")
                    }
                )));
            }
        }
        Ok(())
    }
}

/// What a conversion did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ConvertStats {
    /// Virtual size of the output (may be rounded up: sectors, VHD geometry).
    pub virtual_size: u64,
    /// Guest bytes read from the source.
    pub bytes_read: u64,
    /// Bytes of guest data written (holes and zero chunks are not written; compressed output
    /// counts the compressed bytes).
    pub bytes_written: u64,
}

/// Convert `src` into `dst`. `progress` is called with the number of guest bytes done (holes
/// included); the calls add up to `src.size()`.
pub fn convert(
    src: Arc<dyn BlockDevice>,
    dst: &Path,
    opts: &ConvertOptions,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<ConvertStats> {
    let mut own = opts.clone();
    own.protect.extend(src.files());
    let opts = &own;
    output::refuse_input(dst, &opts.protect)?;
    match opts.format {
        OutputFormat::Raw => {
            opts.check_keys(&[])?;
            if opts.compress {
                return Err(Error::Other(
                    "-c: raw output cannot be compressed (use -O qcow2 -c)".into(),
                ));
            }
            raw::write(src, dst, opts, progress)
        }
        OutputFormat::Qcow2 => {
            opts.check_keys(&["cluster_size", "compat", "compression_type"])?;
            qcow2::write(src, dst, opts, progress)
        }
        OutputFormat::Vhd => {
            opts.check_keys(&["subformat"])?;
            if opts.compress {
                return Err(Error::Other("-c: VHD output cannot be compressed".into()));
            }
            vhd::write(src, dst, opts, progress)
        }
        OutputFormat::Vmdk => {
            opts.check_keys(&["subformat", "adapter_type"])?;
            vmdk::write(src, dst, opts, progress)
        }
    }
}

/// Random bytes for image identifiers (VHD UUID, VMDK CID). With `SOURCE_DATE_EPOCH` set
/// (the reproducible-builds convention) they are derived from it and from `salt`, so that
/// two runs produce byte-identical files.
pub fn unique_bytes<const N: usize>(salt: u64) -> [u8; N] {
    let mut out = [0u8; N];
    if let Some(epoch) = source_date_epoch() {
        let mut x = epoch ^ salt.rotate_left(17) ^ 0x9E37_79B9_7F4A_7C15;
        for b in out.iter_mut() {
            // splitmix64
            x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = x;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            *b = (z ^ (z >> 31)) as u8;
        }
        return out;
    }
    use std::io::Read;
    if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
        if f.read_exact(&mut out).is_ok() {
            return out;
        }
    }
    // No /dev/urandom: fall back to time and pid, still unique enough for an identifier.
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let seed = t ^ ((std::process::id() as u64) << 32) ^ salt;
    for (i, b) in out.iter_mut().enumerate() {
        *b = (seed.rotate_left((i as u32 * 7) % 64) >> 3) as u8 ^ i as u8;
    }
    out
}

/// Seconds since the Unix epoch for timestamps written into images: `SOURCE_DATE_EPOCH` when
/// set, else now.
pub fn timestamp() -> u64 {
    source_date_epoch().unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)
    })
}

fn source_date_epoch() -> Option<u64> {
    std::env::var("SOURCE_DATE_EPOCH").ok()?.trim().parse().ok()
}
