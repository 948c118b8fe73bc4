//! VMDK images: monolithicSparse, streamOptimized, monolithicFlat, twoGbMaxExtentSparse,
//! twoGbMaxExtentFlat, ESXi `vmfs` (`x.vmdk` + `x-flat.vmdk`), and ZERO extents.
//!
//! A VMDK disk is a list of extents laid end to end, named by a text descriptor: either a
//! standalone file (`# Disk DescriptorFile`) or a block embedded in a hosted sparse extent
//! (`KDMV`). The virtual size is the sum of the extents' sizes.
//!
//! - A `KDMV` file with a non-zero capacity is one sparse extent; its embedded descriptor gives
//!   the create type and the parent, but its extent line (which names the file itself) is not
//!   followed. (A `KDMV` file with capacity 0 and a descriptor is a descriptor in disguise and
//!   is treated as one.)
//! - Extent files are resolved with the image's [`Resolver`](super::Resolver): every extent
//!   must be inside the descriptor's directory (symlinks resolved) unless the user allows
//!   otherwise, and an extent may not be the descriptor itself.
//! - A delta disk (`parentCID` other than `ffffffff`) is refused unless `allow_backing`; then
//!   the parent named by `parentFileNameHint` is resolved the same way, opened by content, its
//!   CID checked against `parentCID`, and unallocated grains read from it.
//! - `COWD` (ESX 2 / vmfsSparse) extents, VMFSSPARSE, SESPARSE and raw device mappings are
//!   refused with a message that names them.

pub mod descriptor;
pub mod sparse;
mod tables;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use crate::image::push_file_extents;

use super::detect::VMDK_COWD_MAGIC;
use super::storage::{read_exact_at, read_vec, FileId, Storage};
use super::{
    check_range, clip_end, push_extent, BlockDevice, Extent, ExtentKind, Format, OpenContext,
};
use crate::error::{Error, Result};
use descriptor::{Access, Descriptor, ExtentType, MAX_DESCRIPTOR_BYTES};
use sparse::{GrainState, SparseExtent, SECTOR};

/// What backs one extent of the virtual disk.
enum Backing {
    /// A flat file; `base` is the byte offset of the extent's data in it.
    Flat {
        storage: Arc<dyn Storage>,
        base: u64,
    },
    Sparse(Arc<SparseExtent>),
    Zero,
}

/// One extent, placed in the virtual disk.
struct Piece {
    start: u64,
    len: u64,
    backing: Backing,
}

/// An opened VMDK disk.
pub struct VmdkImage {
    name: String,
    create_type: Option<String>,
    size: u64,
    pieces: Vec<Piece>,
    parent: Option<Arc<dyn BlockDevice>>,
    warnings: Vec<String>,
    granularity: u64,
    actual_size: u64,
    /// The descriptor (embedded or standalone), when there is one.
    descriptor: Option<Descriptor>,
    /// The host files of this disk: its descriptor or sparse file, and its extents.
    files: Vec<FileId>,
}

/// Open a vmdk image (a `KDMV` sparse extent or a text descriptor).
pub fn open(storage: Arc<dyn Storage>, ctx: &OpenContext) -> Result<Arc<dyn BlockDevice>> {
    Ok(Arc::new(open_image(storage, ctx)?))
}

/// Open a vmdk image, returning the concrete type.
pub fn open_image(storage: Arc<dyn Storage>, ctx: &OpenContext) -> Result<VmdkImage> {
    let name = storage.name().to_string();
    let mut head = [0u8; 4];
    let n = storage
        .read_at(&mut head, 0)
        .map_err(|e| Error::io(&name, e))?;
    if n == 4 && &head == VMDK_COWD_MAGIC {
        return Err(cowd_refusal(&name));
    }
    if n == 4 && &head == sparse::MAGIC {
        let ext = SparseExtent::open(storage.clone())?;
        let h = ext.first_header;
        let desc = if h.desc_offset != 0 && h.desc_size != 0 && h.desc_offset != u64::MAX {
            let off = h.desc_offset.checked_mul(SECTOR);
            let len = h.desc_size.checked_mul(SECTOR);
            let (Some(off), Some(len)) = (off, len) else {
                return Err(Error::corrupt(
                    &name,
                    "embedded descriptor offset or size overflows",
                ));
            };
            let raw = read_vec(
                storage.as_ref(),
                off,
                len,
                MAX_DESCRIPTOR_BYTES,
                "embedded descriptor",
            )?;
            Some(descriptor::parse(&name, &raw)?)
        } else {
            None
        };
        if ext.header.capacity == 0 {
            if let Some(d) = desc.as_ref().filter(|d| !d.extents.is_empty()) {
                // A header-only file whose descriptor names the real extents.
                return from_descriptor(storage, d.clone(), ctx);
            }
        }
        return from_sparse(storage, ext, desc, ctx);
    }
    let len = storage.len();
    if len > MAX_DESCRIPTOR_BYTES {
        return Err(Error::corrupt(
            &name,
            format!(
                "looks like a VMDK descriptor but is {len} bytes long, more than the \
                 {MAX_DESCRIPTOR_BYTES}-byte limit for a descriptor"
            ),
        ));
    }
    let raw = read_vec(storage.as_ref(), 0, len, MAX_DESCRIPTOR_BYTES, "descriptor")?;
    let d = descriptor::parse(&name, &raw)?;
    from_descriptor(storage, d, ctx)
}

/// Largest virtual disk accepted: 1 PiB (VMware's limit is 62 TiB). Bounds every walk over
/// the disk's map.
pub const MAX_VIRTUAL_SIZE: u64 = 1 << 50;

fn too_big(name: &str, size: u64) -> Error {
    Error::corrupt(
        name,
        format!(
            "virtual size of {size} bytes is more than the {MAX_VIRTUAL_SIZE} bytes (1 PiB) \
             imgcheck accepts"
        ),
    )
}

fn cowd_refusal(name: &str) -> Error {
    Error::unsupported(
        name,
        "this is an ESX 2 / vmfsSparse (COWD) sparse extent, which imgcheck does not read; \
         convert it on the host first (vmkfstools -i, or qemu-img convert -f vmdk)",
    )
}

/// A single hosted sparse extent (monolithicSparse or streamOptimized).
fn from_sparse(
    storage: Arc<dyn Storage>,
    ext: SparseExtent,
    desc: Option<Descriptor>,
    ctx: &OpenContext,
) -> Result<VmdkImage> {
    let name = storage.name().to_string();
    let mut warnings = ext.warnings.clone();
    let size = ext.capacity_bytes();
    if size > MAX_VIRTUAL_SIZE {
        return Err(too_big(&name, size));
    }
    // Like qemu, the content decides the type of a KDMV file; a descriptor that disagrees
    // gets a warning.
    let by_content = if ext.is_compressed() {
        "streamOptimized"
    } else {
        "monolithicSparse"
    };
    match &desc {
        Some(d) => {
            warnings.extend(d.warnings.iter().map(|w| format!("{name}: {w}")));
            if let Some(total) = d.total_bytes() {
                if !d.extents.is_empty() && total != size {
                    warnings.push(format!(
                        "{name}: the embedded descriptor gives {total} bytes of extents but the \
                         header's capacity is {size} bytes; the header is used"
                    ));
                }
            }
            if let Some(ct) = d.create_type.as_deref().filter(|c| *c != by_content) {
                warnings.push(format!(
                    "{name}: the embedded descriptor says createType \"{ct}\" but the file is a \
                     {by_content} extent"
                ));
            }
        }
        None => warnings.push(format!(
            "{name}: sparse extent without an embedded descriptor (one extent of a larger \
             disk?)"
        )),
    }
    let create_type = Some(by_content.to_string());
    let granularity = ext.grain_bytes();
    let parent = match &desc {
        Some(d) => open_parent(&storage, d, ctx, &mut warnings)?,
        None => None,
    };
    let actual_size = storage.allocated_size();
    Ok(VmdkImage {
        name,
        create_type,
        size,
        pieces: vec![Piece {
            start: 0,
            len: size,
            backing: Backing::Sparse(Arc::new(ext)),
        }],
        parent,
        warnings,
        granularity,
        actual_size,
        descriptor: desc,
        files: storage.file_id().into_iter().collect(),
    })
}

/// A disk described by a descriptor whose extents are other files.
fn from_descriptor(
    storage: Arc<dyn Storage>,
    d: Descriptor,
    ctx: &OpenContext,
) -> Result<VmdkImage> {
    let name = storage.name().to_string();
    let mut warnings: Vec<String> = d.warnings.iter().map(|w| format!("{name}: {w}")).collect();
    if d.extents.is_empty() {
        return Err(Error::corrupt(&name, "descriptor lists no extents"));
    }
    if d.create_type.is_none() {
        warnings.push(format!("{name}: descriptor has no createType"));
    }
    match d.total_bytes() {
        None => {
            return Err(Error::corrupt(
                &name,
                "the extents' sizes add up to more than 2^64 bytes",
            ))
        }
        Some(t) if t > MAX_VIRTUAL_SIZE => return Err(too_big(&name, t)),
        Some(_) => {}
    }
    // Refuse a delta disk before opening anything else.
    if d.has_parent() && !ctx.options.allow_backing {
        return Err(parent_refusal(&name, &d));
    }
    let self_path = storage.path().and_then(|p| p.canonicalize().ok());
    let mut opened: HashMap<PathBuf, Arc<dyn Storage>> = HashMap::new();
    // One SparseExtent (one grain directory in memory) per file, however often it is named.
    let mut sparse_opened: HashMap<PathBuf, Arc<SparseExtent>> = HashMap::new();
    let mut pieces = Vec::with_capacity(d.extents.len());
    let mut start = 0u64;
    let mut granularity = 0u64;
    let mut actual_size = storage.allocated_size();
    for e in &d.extents {
        let len = e.sectors * SECTOR; // checked by total_bytes above
        let what = format!("extent on descriptor line {}", e.line);
        if e.access == Access::NoAccess {
            return Err(Error::unsupported(
                &name,
                format!("{what} is marked NOACCESS: its data is not available"),
            ));
        }
        if len == 0 {
            warnings.push(format!("{name}: {what} has size 0 and was skipped"));
            continue;
        }
        let backing = match &e.kind {
            ExtentType::Zero => Backing::Zero,
            ExtentType::Flat | ExtentType::Vmfs | ExtentType::Sparse => {
                let file = e.file.as_deref().unwrap_or_default();
                let path = ctx.resolver.resolve(&name, "extent", file)?;
                if self_path.as_deref() == Some(path.as_path()) {
                    return Err(Error::corrupt(
                        &name,
                        format!("{what} names the descriptor itself (\"{file}\")"),
                    ));
                }
                let st = match opened.get(&path) {
                    Some(s) => s.clone(),
                    None => {
                        let s = ctx.resolver.open(&name, &what, &path)?;
                        actual_size = actual_size.saturating_add(s.allocated_size());
                        opened.insert(path.clone(), s.clone());
                        s
                    }
                };
                if e.kind == ExtentType::Sparse {
                    let ext = match sparse_opened.get(&path) {
                        Some(x) => x.clone(),
                        None => {
                            let x = open_sparse_extent(&name, &what, st, e.sectors, &mut warnings)?;
                            sparse_opened.insert(path.clone(), x.clone());
                            x
                        }
                    };
                    Backing::Sparse(ext)
                } else {
                    let base = e.offset.checked_mul(SECTOR).ok_or_else(|| {
                        Error::corrupt(&name, format!("{what}: offset overflows"))
                    })?;
                    let end = base.checked_add(len);
                    if end.is_none_or(|end| end > st.len()) {
                        return Err(Error::corrupt(
                            &name,
                            format!(
                                "{what}: flat extent file {} is {} bytes, but the descriptor \
                                 places {len} bytes at offset {base} in it (truncated?)",
                                st.name(),
                                st.len()
                            ),
                        ));
                    }
                    Backing::Flat { storage: st, base }
                }
            }
            ExtentType::VmfsSparse => {
                return Err(Error::unsupported(
                    &name,
                    format!(
                        "{what} is a VMFSSPARSE (ESX delta disk, COWD format) extent, which \
                         imgcheck does not read; consolidate the snapshot on the host first"
                    ),
                ))
            }
            ExtentType::SeSparse => {
                return Err(Error::unsupported(
                    &name,
                    format!(
                        "{what} is an SESPARSE (ESXi space-efficient sparse) extent, which \
                         imgcheck does not read; consolidate or clone the disk on the host first"
                    ),
                ))
            }
            ExtentType::VmfsRdm | ExtentType::VmfsRaw => {
                return Err(Error::refused(
                    &name,
                    format!(
                        "{what} is a raw device mapping: the data lives on a host device, not \
                         in the image; clone the disk to a regular VMDK first"
                    ),
                ))
            }
            ExtentType::Other(t) => {
                return Err(Error::unsupported(
                    &name,
                    format!("{what} has unknown extent type \"{t}\""),
                ))
            }
        };
        if let Backing::Sparse(s) = &backing {
            granularity = granularity.max(s.grain_bytes());
        }
        pieces.push(Piece {
            start,
            len,
            backing,
        });
        start += len;
    }
    let parent = open_parent(&storage, &d, ctx, &mut warnings)?;
    Ok(VmdkImage {
        name,
        create_type: d.create_type.clone(),
        size: start,
        pieces,
        parent,
        warnings,
        granularity: if granularity == 0 {
            64 * 1024
        } else {
            granularity
        },
        actual_size,
        descriptor: Some(d),
        files: storage
            .file_id()
            .into_iter()
            .chain(opened.values().filter_map(|s| s.file_id()))
            .collect(),
    })
}

fn open_sparse_extent(
    name: &str,
    what: &str,
    st: Arc<dyn Storage>,
    sectors: u64,
    warnings: &mut Vec<String>,
) -> Result<Arc<SparseExtent>> {
    let mut magic = [0u8; 4];
    let n = st
        .read_at(&mut magic, 0)
        .map_err(|e| Error::io(st.name(), e))?;
    if n == 4 && &magic == VMDK_COWD_MAGIC {
        return Err(cowd_refusal(st.name()));
    }
    if n < 4 || &magic != sparse::MAGIC {
        return Err(Error::corrupt(
            name,
            format!(
                "{what}: {} is not a hosted sparse extent (no KDMV magic)",
                st.name()
            ),
        ));
    }
    let ext = SparseExtent::open(st)?;
    warnings.extend(ext.warnings.iter().cloned());
    if ext.header.capacity != sectors {
        warnings.push(format!(
            "{name}: {what} is {sectors} sectors in the descriptor but {} sectors in the \
             header of {}; the descriptor's size is used",
            ext.header.capacity,
            ext.name()
        ));
    }
    Ok(Arc::new(ext))
}

fn parent_refusal(name: &str, d: &Descriptor) -> Error {
    let hint = d
        .parent_hint
        .as_deref()
        .unwrap_or("(no parentFileNameHint)");
    Error::refused(
        name,
        format!(
            "this is a delta (snapshot) disk whose unallocated grains come from parent \
             \"{hint}\"; pass --allow-backing to read the parent (it must be in the same \
             directory), or consolidate the snapshot first"
        ),
    )
}

/// Open the parent of a delta disk, when the descriptor names one (allow_backing checked).
fn open_parent(
    storage: &Arc<dyn Storage>,
    d: &Descriptor,
    ctx: &OpenContext,
    warnings: &mut Vec<String>,
) -> Result<Option<Arc<dyn BlockDevice>>> {
    if !d.has_parent() {
        return Ok(None);
    }
    let name = storage.name();
    if !ctx.options.allow_backing {
        return Err(parent_refusal(name, d));
    }
    let Some(hint) = d.parent_hint.as_deref().filter(|h| !h.is_empty()) else {
        return Err(Error::corrupt(
            name,
            format!(
                "delta disk (parentCID={:08x}) without a parentFileNameHint: its parent \
                 cannot be found",
                d.parent_cid.unwrap_or(0)
            ),
        ));
    };
    let path = match ctx.resolver.resolve(name, "parent", hint) {
        Ok(p) => p,
        Err(e @ Error::Refused { .. }) => return Err(e),
        Err(e) => {
            // VMware writes the parent's absolute path on the original host (e.g.
            // /vmfs/volumes/...); look for its file name next to this disk instead.
            let base = hint.rsplit(['/', '\\']).next().unwrap_or(hint);
            if base == hint || base.is_empty() {
                return Err(e);
            }
            let p = ctx.resolver.resolve(name, "parent", base).map_err(|_| e)?;
            warnings.push(format!(
                "{name}: parent \"{hint}\" not found; using {} from this disk's directory",
                p.display()
            ));
            p
        }
    };
    if storage
        .path()
        .and_then(|p| p.canonicalize().ok())
        .is_some_and(|me| me == path)
    {
        return Err(Error::corrupt(
            name,
            format!("parentFileNameHint \"{hint}\" names this disk itself"),
        ));
    }
    let pst = ctx.resolver.open(name, "parent", &path)?;
    let parent_cid = read_cid(pst.as_ref());
    let dev = super::open_storage(pst, &ctx.child(name)?)?;
    if dev.format() == Format::Vmdk {
        let want = d.parent_cid.unwrap_or(0);
        match parent_cid {
            Some(c) if c == want => {}
            Some(c) => {
                return Err(Error::corrupt(
                    name,
                    format!(
                        "parent {} has CID {c:08x} but this disk expects parentCID {want:08x}: \
                         the parent changed after the snapshot was taken",
                        path.display()
                    ),
                ))
            }
            None => warnings.push(format!(
                "{name}: the CID of parent {} could not be read, so it was not checked",
                path.display()
            )),
        }
    } else {
        warnings.push(format!(
            "{name}: parent {} is a {} image, not VMDK; its content ID cannot be checked",
            path.display(),
            dev.format()
        ));
    }
    warnings.extend(dev.warnings());
    Ok(Some(dev))
}

/// The CID in a VMDK file's descriptor (embedded or standalone), if it can be read.
fn read_cid(s: &dyn Storage) -> Option<u32> {
    let mut sec = [0u8; 512];
    let n = s.read_at(&mut sec, 0).ok()?;
    let raw = if n == 512 && &sec[..4] == sparse::MAGIC {
        let h = sparse::Header::parse(&sec);
        let off = h.desc_offset.checked_mul(SECTOR)?;
        let len = h.desc_size.checked_mul(SECTOR)?;
        read_vec(s, off, len, MAX_DESCRIPTOR_BYTES, "descriptor").ok()?
    } else {
        let len = s.len().min(MAX_DESCRIPTOR_BYTES);
        read_vec(s, 0, len, MAX_DESCRIPTOR_BYTES, "descriptor").ok()?
    };
    descriptor::parse(s.name(), &raw).ok()?.cid
}

impl VmdkImage {
    /// Index of the piece holding guest offset `off` (< size).
    fn piece_at(&self, off: u64) -> usize {
        self.pieces.partition_point(|p| p.start + p.len <= off)
    }

    /// Fill `buf` with what an unallocated range at guest offset `off` reads as.
    fn read_unallocated(&self, buf: &mut [u8], off: u64) -> Result<()> {
        match &self.parent {
            Some(p) => {
                let psize = p.size();
                let n = (psize.saturating_sub(off)).min(buf.len() as u64) as usize;
                if n > 0 {
                    p.read_at(&mut buf[..n], off)?;
                }
                buf[n..].fill(0);
                Ok(())
            }
            None => {
                buf.fill(0);
                Ok(())
            }
        }
    }

    /// Map an unallocated range: the parent's map where there is a parent.
    fn map_unallocated(&self, out: &mut Vec<Extent>, off: u64, len: u64) -> Result<()> {
        if let Some(p) = &self.parent {
            let pend = clip_end(off, len, p.size());
            let mut pos = off;
            if pend > off {
                for e in p.map(off, pend - off)? {
                    push_extent(out, e.offset, e.length, e.kind);
                    pos = e.offset + e.length;
                }
            }
            push_extent(out, pos, off + len - pos, ExtentKind::Unallocated);
        } else {
            push_extent(out, off, len, ExtentKind::Unallocated);
        }
        Ok(())
    }

    /// The descriptor's createType.
    pub fn create_type(&self) -> Option<&str> {
        self.create_type.as_deref()
    }

    /// The descriptor (CID, parent, extent lines, `ddb.*` keys such as `ddb.adapterType`).
    pub fn descriptor(&self) -> Option<&Descriptor> {
        self.descriptor.as_ref()
    }
}

impl BlockDevice for VmdkImage {
    fn backing(&self) -> Option<String> {
        self.parent.as_ref().map(|p| p.name().to_string())
    }
    fn format(&self) -> Format {
        Format::Vmdk
    }
    fn subformat(&self) -> Option<String> {
        self.create_type.clone()
    }
    fn size(&self) -> u64 {
        self.size
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        check_range(&self.name, offset, buf.len() as u64, self.size)?;
        let mut done = 0usize;
        let mut i = self.piece_at(offset);
        while done < buf.len() {
            let pos = offset + done as u64;
            let p = &self.pieces[i];
            let in_p = pos - p.start;
            let n = ((p.len - in_p) as usize).min(buf.len() - done);
            let dst = &mut buf[done..done + n];
            match &p.backing {
                Backing::Zero => dst.fill(0),
                Backing::Flat { storage, base } => {
                    read_exact_at(storage.as_ref(), dst, base + in_p)?
                }
                Backing::Sparse(s) => {
                    let start = p.start;
                    s.read(dst, in_p, &mut |b, eoff| {
                        self.read_unallocated(b, start + eoff)
                    })?
                }
            }
            done += n;
            i += 1;
        }
        Ok(())
    }
    fn map(&self, offset: u64, len: u64) -> Result<Vec<Extent>> {
        let end = clip_end(offset, len, self.size);
        let mut out = Vec::new();
        if end <= offset {
            return Ok(out);
        }
        let mut i = self.piece_at(offset);
        let mut pos = offset;
        while pos < end {
            let p = &self.pieces[i];
            let in_p = pos - p.start;
            let n = (p.len - in_p).min(end - pos);
            match &p.backing {
                Backing::Zero => push_extent(&mut out, pos, n, ExtentKind::Zero),
                Backing::Flat { storage, base } => {
                    // Holes in a sparse flat file read as zeros.
                    let hole_kind = if self.parent.is_some() {
                        ExtentKind::Zero
                    } else {
                        ExtentKind::Unallocated
                    };
                    push_file_extents(&mut out, storage.as_ref(), base + in_p, n, pos, hole_kind)?;
                }
                Backing::Sparse(s) => {
                    for (eoff, l, st) in s.map(in_p, n)? {
                        let g = p.start + eoff;
                        match st {
                            GrainState::Data => push_extent(&mut out, g, l, ExtentKind::Data),
                            GrainState::Zero => push_extent(&mut out, g, l, ExtentKind::Zero),
                            GrainState::Unallocated => self.map_unallocated(&mut out, g, l)?,
                        }
                    }
                }
            }
            pos += n;
            i += 1;
        }
        Ok(out)
    }
    fn actual_size(&self) -> u64 {
        self.actual_size
    }
    fn name(&self) -> &str {
        &self.name
    }
    fn warnings(&self) -> Vec<String> {
        self.warnings.clone()
    }
    fn granularity(&self) -> u64 {
        self.granularity
    }
    fn files(&self) -> Vec<FileId> {
        let mut v = self.files.clone();
        if let Some(p) = &self.parent {
            v.extend(p.files());
        }
        v
    }
}
