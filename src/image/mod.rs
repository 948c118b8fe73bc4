//! Container formats: one read-only view of a guest disk, whatever file holds it.
//!
//! [`open`] detects the format by content (never by file name) and returns a [`BlockDevice`]:
//! the virtual disk's size, positional reads that take `&self` (so rayon threads can share one
//! image), and an allocation map so callers skip holes without reading them.

pub mod detect;
pub mod qcow2;
pub mod raw;
pub mod reader;
pub mod resolve;
pub mod storage;
pub mod vhd;
pub mod vmdk;

use std::path::Path;
use std::sync::Arc;

use serde::Serialize;

use crate::error::{Error, Result};
pub use detect::{detect, extension_warning, Detected};
pub use reader::DeviceReader;
pub use resolve::Resolver;
pub use storage::{read_exact_at, read_vec, FileId, FileStorage, MemStorage, Storage};

/// Container formats imgcheck recognises.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    Raw,
    Vhd,
    Vmdk,
    Qcow2,
    /// Recognised only to be refused.
    Vhdx,
}

impl Format {
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Raw => "raw",
            Format::Vhd => "vhd",
            Format::Vmdk => "vmdk",
            Format::Qcow2 => "qcow2",
            Format::Vhdx => "vhdx",
        }
    }
}

impl std::fmt::Display for Format {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Allocation status of a range of the virtual disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ExtentKind {
    /// Backed by stored data (which may still happen to be zeros).
    Data,
    /// Allocated or marked as zeros by the format (qcow2 zero clusters); reads as zeros.
    Zero,
    /// Not allocated in this image; reads as zeros (or from the parent, folded in by the reader).
    Unallocated,
}

impl ExtentKind {
    /// Whether the range reads as zeros without looking at it.
    pub fn reads_as_zero(self) -> bool {
        !matches!(self, ExtentKind::Data)
    }
}

/// A run of the virtual disk with one allocation status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Extent {
    pub offset: u64,
    pub length: u64,
    pub kind: ExtentKind,
}

/// A read-only guest disk.
pub trait BlockDevice: Send + Sync {
    /// Container format.
    fn format(&self) -> Format;
    /// Sub-format where the format has several (e.g. `dynamic`, `streamOptimized`, `v3`).
    fn subformat(&self) -> Option<String> {
        None
    }
    /// Virtual size of the guest disk in bytes.
    fn size(&self) -> u64;
    /// Fill `buf` with the guest bytes at `offset`. A read that runs past the end of the
    /// virtual disk is an error, never a short read.
    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()>;
    /// Allocation map of `[offset, offset+len)`: sorted, contiguous extents that cover exactly
    /// the part of the range inside the disk. Adjacent extents of one kind may or may not be
    /// merged.
    fn map(&self, offset: u64, len: u64) -> Result<Vec<Extent>>;
    /// Bytes the image occupies on its host.
    fn actual_size(&self) -> u64;
    /// Name used in messages (the path of the image file).
    fn name(&self) -> &str;
    /// Non-fatal observations made while opening (e.g. an extension that disagrees).
    fn warnings(&self) -> Vec<String> {
        Vec::new()
    }
    /// The backing file or parent this image reads through, when it has one (qcow2 backing
    /// file, differencing VHD parent, VMDK delta parent).
    fn backing(&self) -> Option<String> {
        None
    }
    /// A preferred read granularity (cluster, grain or block size), used by converters to size
    /// their chunks.
    fn granularity(&self) -> u64 {
        64 * 1024
    }
    /// Every host file this image reads: the image itself, its backing files or parents, its
    /// extents (a converter refuses to write over any of them).
    fn files(&self) -> Vec<FileId> {
        Vec::new()
    }
}

/// Check that `[offset, offset+len)` lies inside a disk of `size` bytes.
pub fn check_range(name: &str, offset: u64, len: u64, size: u64) -> Result<()> {
    match offset.checked_add(len) {
        Some(end) if end <= size => Ok(()),
        _ => Err(Error::OutOfRange {
            path: name.to_string(),
            offset,
            len,
            size,
        }),
    }
}

/// Clip `[offset, offset+len)` to `[0, size)`; returns the end.
pub fn clip_end(offset: u64, len: u64, size: u64) -> u64 {
    offset.saturating_add(len).min(size)
}

/// Append an extent, merging it with the previous one when contiguous and of the same kind.
pub fn push_extent(out: &mut Vec<Extent>, offset: u64, length: u64, kind: ExtentKind) {
    if length == 0 {
        return;
    }
    if let Some(last) = out.last_mut() {
        if last.kind == kind && last.offset + last.length == offset {
            last.length += length;
            return;
        }
    }
    out.push(Extent {
        offset,
        length,
        kind,
    });
}

/// Append the extents of bytes `[file_off, file_off+len)` of `storage` to `out`, placed at guest
/// offset `guest_off`: `Data` where the file may hold data (SEEK_DATA), `hole` elsewhere,
/// including any part past the file's end.
pub fn push_file_extents(
    out: &mut Vec<Extent>,
    storage: &dyn Storage,
    file_off: u64,
    len: u64,
    guest_off: u64,
    hole: ExtentKind,
) -> Result<()> {
    let ranges = storage
        .data_ranges(file_off, len)
        .map_err(|e| Error::io(storage.name(), e))?;
    let end = file_off.saturating_add(len);
    let at = |f: u64| guest_off + (f - file_off);
    let mut pos = file_off;
    for (start, length) in ranges {
        let start = start.max(pos);
        let stop = start.saturating_add(length).min(end);
        if stop <= start {
            continue;
        }
        push_extent(out, at(pos), start - pos, hole);
        push_extent(out, at(start), stop - start, ExtentKind::Data);
        pos = stop;
    }
    push_extent(out, at(pos), end - pos, hole);
    Ok(())
}

/// Options that widen what [`open`] is allowed to follow. All default to off: an uploaded image
/// must not make imgcheck read a file on the host.
#[derive(Debug, Clone, Default)]
pub struct OpenOptions {
    /// Follow qcow2 backing files and VHD differencing parents (inside the image's directory).
    pub allow_backing: bool,
    /// Let backing files, parents and VMDK extents lie outside the image's directory.
    pub allow_outside_dir: bool,
    /// Let backing files, parents and VMDK extents be block devices (otherwise only regular
    /// files are opened; FIFOs, sockets and character devices never are).
    pub allow_block_devices: bool,
}

/// Everything a format reader needs to open one image.
#[derive(Clone)]
pub struct OpenContext {
    pub options: OpenOptions,
    /// Resolves references (extents, parents, backing files) to other files.
    pub resolver: Resolver,
    /// How many backing/parent levels are above this image (chains are bounded).
    pub depth: u32,
}

/// Longest backing/parent chain followed.
pub const MAX_CHAIN_DEPTH: u32 = 16;

impl OpenContext {
    pub fn new(options: OpenOptions, resolver: Resolver) -> Self {
        OpenContext {
            options,
            resolver,
            depth: 0,
        }
    }
    /// Context for opening a backing file or parent of this image.
    pub fn child(&self, name: &str) -> Result<Self> {
        if self.depth + 1 >= MAX_CHAIN_DEPTH {
            return Err(Error::refused(
                name,
                format!("backing chain is deeper than {MAX_CHAIN_DEPTH} levels (a loop?)"),
            ));
        }
        let mut c = self.clone();
        c.depth += 1;
        Ok(c)
    }
}

/// Open the image at `path`, detecting its format by content.
pub fn open(path: &Path, options: &OpenOptions) -> Result<Arc<dyn BlockDevice>> {
    let storage: Arc<dyn Storage> = Arc::new(FileStorage::open(path)?);
    let resolver = Resolver::for_image(path, options)?;
    let ctx = OpenContext::new(options.clone(), resolver);
    let dev = open_storage(storage, &ctx)?;
    Ok(dev)
}

/// Open an image named on the command line: a file path, or an NBD URI
/// (`nbd://HOST:PORT/EXPORT`, `nbd+unix:///EXPORT?socket=PATH`).
pub fn open_spec(spec: &str, options: &OpenOptions) -> Result<Arc<dyn BlockDevice>> {
    if is_nbd_uri(spec) {
        crate::nbd::open_uri(spec, options)
    } else {
        open(Path::new(spec), options)
    }
}

/// Whether `spec` is an NBD URI rather than a path.
pub fn is_nbd_uri(spec: &str) -> bool {
    spec.starts_with("nbd://") || spec.starts_with("nbd+unix://") || spec.starts_with("nbd+tcp://")
}

/// Open an image held in `storage` (a file, a buffer, an NBD export).
pub fn open_storage(storage: Arc<dyn Storage>, ctx: &OpenContext) -> Result<Arc<dyn BlockDevice>> {
    let det = detect(storage.as_ref())?;
    let mut warnings = det.warnings.clone();
    if let Some(p) = storage.path() {
        if let Some(w) = extension_warning(p, det.format) {
            warnings.push(w);
        }
    }
    let dev: Arc<dyn BlockDevice> = match det.format {
        Format::Raw => Arc::new(raw::RawImage::new(storage)),
        Format::Qcow2 => qcow2::open(storage, ctx)?,
        Format::Vhd => vhd::open(storage, ctx)?,
        Format::Vmdk => vmdk::open(storage, ctx)?,
        Format::Vhdx => return Err(vhdx_refusal(storage.name())),
    };
    if warnings.is_empty() {
        Ok(dev)
    } else {
        Ok(Arc::new(Warned {
            inner: dev,
            warnings,
        }))
    }
}

/// The error for a VHDX image: the target platform refuses VHDX.
pub fn vhdx_refusal(name: &str) -> Error {
    Error::refused(
        name,
        "this is a VHDX image, which the target platform does not accept; export a VHD instead \
         (in disk2vhd, leave \"Use Vhdx\" unticked), or convert it with \
         `qemu-img convert -f vhdx -O vpc`",
    )
}

/// Wraps a device to carry warnings found while opening it.
struct Warned {
    inner: Arc<dyn BlockDevice>,
    warnings: Vec<String>,
}

impl BlockDevice for Warned {
    fn format(&self) -> Format {
        self.inner.format()
    }
    fn subformat(&self) -> Option<String> {
        self.inner.subformat()
    }
    fn size(&self) -> u64 {
        self.inner.size()
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        self.inner.read_at(buf, offset)
    }
    fn map(&self, offset: u64, len: u64) -> Result<Vec<Extent>> {
        self.inner.map(offset, len)
    }
    fn actual_size(&self) -> u64 {
        self.inner.actual_size()
    }
    fn name(&self) -> &str {
        self.inner.name()
    }
    fn warnings(&self) -> Vec<String> {
        let mut w = self.warnings.clone();
        w.extend(self.inner.warnings());
        w
    }
    fn granularity(&self) -> u64 {
        self.inner.granularity()
    }
    fn backing(&self) -> Option<String> {
        self.inner.backing()
    }
    fn files(&self) -> Vec<FileId> {
        self.inner.files()
    }
}

/// Bytes of the guest disk that hold data (extents of kind [`ExtentKind::Data`]), walking the
/// map in bounded windows so a huge sparse disk never needs a huge map in memory.
pub fn allocated_bytes(dev: &dyn BlockDevice) -> Result<u64> {
    const WINDOW: u64 = 1 << 34; // 16 GiB of guest space per map call
    let size = dev.size();
    let mut total = 0u64;
    let mut pos = 0u64;
    while pos < size {
        let len = WINDOW.min(size - pos);
        for e in dev.map(pos, len)? {
            if e.kind == ExtentKind::Data {
                total += e.length;
            }
        }
        pos += len;
    }
    Ok(total)
}

/// Summary of an image, as printed by `imgcheck info`.
#[derive(Debug, Clone, Serialize)]
pub struct ImageInfo {
    pub filename: String,
    pub format: Format,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subformat: Option<String>,
    pub virtual_size: u64,
    pub actual_size: u64,
    pub allocated: u64,
    pub warnings: Vec<String>,
}

impl ImageInfo {
    pub fn of(dev: &dyn BlockDevice) -> Result<Self> {
        Ok(ImageInfo {
            filename: dev.name().to_string(),
            format: dev.format(),
            subformat: dev.subformat(),
            virtual_size: dev.size(),
            actual_size: dev.actual_size(),
            allocated: allocated_bytes(dev)?,
            warnings: dev.warnings(),
        })
    }
}
