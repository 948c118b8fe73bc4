//! VHD (Microsoft Virtual Hard Disk, "vpc" in qemu): fixed, dynamic and differencing disks.
//!
//! # Layout
//! - **Fixed**: the guest disk followed by a 512-byte footer (cookie `conectix`; old Virtual PC
//!   versions wrote 511 bytes, also accepted).
//! - **Dynamic**: a copy of the footer at offset 0, a 1024-byte dynamic disk header (cookie
//!   `cxsparse`) at the footer's data offset, a block allocation table (BAT: big-endian u32
//!   sector numbers, `0xFFFFFFFF` = not allocated), blocks of `block_size` bytes each preceded
//!   by a sector bitmap (one bit per 512-byte sector, most significant bit first, padded to a
//!   512-byte boundary), and the footer at the end. A sector whose bit is 0 reads as zeros.
//! - **Differencing**: a dynamic disk whose absent blocks and sectors read from a parent VHD,
//!   named by the header's parent unicode name and parent locators (`W2ru`/`W2ku`: UTF-16LE
//!   relative/absolute Windows paths; `MacX`: a UTF-8 file URL). Followed only with
//!   `--allow-backing`, only inside the image's directory, to a bounded depth, and only when the
//!   parent's UUID is the one the child records.
//!
//! # Virtual size (exactly as qemu 10 computes it, block/vpc.c `vpc_open`)
//! Virtual PC sizes a disk by its CHS geometry, everyone else by the footer's `current_size`.
//! qemu decides by the footer's creator application:
//! - `"vpc "` (Virtual PC) and `"qemu"` (qemu-img without `force_size`): the geometry,
//!   cylinders x heads x sectors-per-track sectors of 512 bytes;
//! - every other creator (`"qem2"` = qemu-img with `force_size=on`, `"win "` Hyper-V, `"d2v "`
//!   Disk2vhd, `"vs  "`, `"tap\0"` XenServer, `"CTXS"` XenConvert, `"wa\0\0"` Azure, ...):
//!   `current_size`;
//! - but a geometry of exactly 65535 x 16 x 255 (the largest, written when the size cannot be
//!   expressed in CHS) always means `current_size`.
//!
//! `current_size` is rounded down to whole sectors. (qemu before 10.0 used the opposite
//! default: the geometry for every creator except "win ", "qem2", "d2v ", "CTXS" and "tap\0";
//! the installed qemu-img, the oracle of the tests, has the rule above.) qemu's runtime option
//! `force_size_calc` cannot be given to imgcheck. Disks over 2040 GiB are refused, like qemu.
//!
//! # Decisions where a damaged image meets a choice
//! - Footer checksums: qemu reads the copy at offset 0 of a dynamic disk and never looks at
//!   the end; it refuses a footer whose checksum is wrong. imgcheck does the same for the footer
//!   it uses (the copy at 0 of a dynamic disk, the end footer of a fixed one), so an image
//!   imgcheck accepts is one qemu-img accepts. A dynamic disk whose *end* footer is missing,
//!   damaged or different while the copy at 0 is good is read from the copy, with a warning.
//! - The dynamic disk header checksum, which qemu ignores, is verified: a mismatch is an error,
//!   because that header holds the table offset and block size every read depends on.
//! - Sector bitmaps are honoured (qemu ignores them and reads whole blocks). qemu writes
//!   all-ones bitmaps, so both read qemu's images alike; for other writers the specification
//!   (and Hyper-V) is followed.
//! - A BAT entry whose block runs past the end of the file (or into the footer, the image's
//!   metadata or another block) is an error when the image is opened, naming the entry and its
//!   offsets; qemu refuses to open such a file too. See [`bat`].
//! - A parent whose UUID differs from the one the child records is refused. The parent time
//!   stamp is not compared: writers disagree on what it records.
//! - Where qemu cannot serve as the oracle: it does not find a 511-byte footer, and it opens a
//!   differencing VHD as a dynamic one without its parent. imgcheck reads both as specified.
//!
//! # Performance
//! The BAT is loaded at open (only the entries the virtual size needs, bounded by the file size
//! and a cap). A read issues one `pread` per run of present sectors in a block, so a block with
//! a full bitmap costs one `pread` whatever the read size. Each block's bitmap is read once and
//! summarised as full, empty or partial in one byte per block; only partial bitmaps are kept,
//! in a cache of bounded size. Everything takes `&self`; many threads read one image at once.

mod bat;
mod footer;
mod parent;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};

pub use footer::{checksum, uuid_text, DiskType, DynHeader, Footer, FooterProblem};

use super::storage::{read_exact_at, read_vec, Storage};
use super::{
    check_range, clip_end, push_extent, BlockDevice, Extent, ExtentKind, Format, OpenContext,
};
use crate::error::{Error, Result};
use crate::image::push_file_extents;
use footer::{COOKIE, DYN_HEADER_SIZE, FOOTER_SIZE, MAX_SECTORS, SHORT_FOOTER_SIZE, UNALLOCATED};

/// Largest block allocation table loaded (64 Mi entries: 128 TiB of 2 MiB blocks).
const BAT_CAP: u64 = 256 << 20;
/// Largest block size accepted. Writers use 512 KiB or 2 MiB; qemu accepts any power of two.
const MAX_BLOCK_SIZE: u32 = 256 << 20;
/// Read granularity reported for fixed disks.
const FIXED_GRANULARITY: u64 = 2 << 20;
/// Bytes of partial sector bitmaps kept in memory.
const BITMAP_CACHE_BYTES: usize = 16 << 20;

/// Summary of a block's sector bitmap.
const ST_UNKNOWN: u8 = 0;
const ST_FULL: u8 = 1;
const ST_EMPTY: u8 = 2;
const ST_PARTIAL: u8 = 3;

/// Open a VHD image.
pub fn open(storage: Arc<dyn Storage>, ctx: &OpenContext) -> Result<Arc<dyn BlockDevice>> {
    Ok(Arc::new(VhdImage::open(storage, ctx)?))
}

/// Read the footer that governs the image in `s` (see the module doc), with warnings about
/// the other copy.
pub(crate) fn locate_footer(s: &dyn Storage) -> Result<(Footer, Vec<String>)> {
    let name = s.name();
    let len = s.len();
    if len < SHORT_FOOTER_SIZE as u64 {
        return Err(Error::corrupt(
            name,
            format!("file is {len} bytes long, too short to hold a VHD footer"),
        ));
    }
    let tail = read_tail_footer(s)?;
    if len >= FOOTER_SIZE as u64 {
        let mut head = vec![0u8; FOOTER_SIZE];
        read_exact_at(s, &mut head, 0)?;
        if &head[..8] == COOKIE {
            let f = Footer::parse(&head).map_err(|p| {
                Error::corrupt(
                    name,
                    format!("the VHD footer copy at offset 0 is corrupt: {p}"),
                )
            })?;
            match f.disk_type() {
                Some(DiskType::Dynamic | DiskType::Differencing) => {
                    let mut warnings = Vec::new();
                    match &tail {
                        Err(FooterProblem::NoCookie) => warnings.push(
                            "the VHD footer at the end of the file is missing (no \"conectix\" \
                             cookie): the file may be truncated; using the copy at offset 0"
                                .to_string(),
                        ),
                        Err(p) => warnings.push(format!(
                            "the VHD footer at the end of the file is damaged ({p}); using the \
                             copy at offset 0"
                        )),
                        Ok(t) if t.raw[..] != f.raw[..t.raw.len()] => warnings.push(
                            "the VHD footer at the end of the file differs from the copy at \
                             offset 0; using the copy at offset 0"
                                .to_string(),
                        ),
                        Ok(_) => {}
                    }
                    return Ok((f, warnings));
                }
                // A fixed disk has no copy at 0: this is guest data, and the end footer decides.
                Some(DiskType::Fixed) => {}
                None => return Err(unknown_type(name, f.disk_type_code)),
            }
        }
    }
    let t = tail.map_err(|p| {
        Error::corrupt(
            name,
            match p {
                FooterProblem::NoCookie => {
                    "not a VHD: no \"conectix\" footer at offset 0 or at the end of the file"
                        .to_string()
                }
                p => format!("the VHD footer at the end of the file is corrupt: {p}"),
            },
        )
    })?;
    match t.disk_type() {
        Some(DiskType::Fixed) => Ok((t, Vec::new())),
        Some(d) => Err(Error::corrupt(
            name,
            format!(
                "the footer at the end of the file describes a {} disk, but the footer copy \
                 that must be at offset 0 is missing: the start of the file is damaged",
                d.as_str()
            ),
        )),
        None => Err(unknown_type(name, t.disk_type_code)),
    }
}

fn unknown_type(name: &str, code: u32) -> Error {
    Error::unsupported(
        name,
        format!("VHD disk type {code} (only 2 fixed, 3 dynamic and 4 differencing exist)"),
    )
}

/// The footer at the end of the file: 512 bytes, or 511 from old writers.
fn read_tail_footer(s: &dyn Storage) -> Result<std::result::Result<Footer, FooterProblem>> {
    let len = s.len();
    let mut first = Err(FooterProblem::NoCookie);
    for size in [FOOTER_SIZE, SHORT_FOOTER_SIZE] {
        if len < size as u64 {
            continue;
        }
        let mut buf = vec![0u8; size];
        read_exact_at(s, &mut buf, len - size as u64)?;
        match Footer::parse(&buf) {
            Ok(f) => return Ok(Ok(f)),
            Err(FooterProblem::NoCookie) => {}
            Err(p) => {
                if first == Err(FooterProblem::NoCookie) {
                    first = Err(p);
                }
            }
        }
    }
    Ok(first)
}

/// A sector bitmap as seen by a read.
enum Bitmap {
    Full,
    Empty,
    Partial(Arc<[u8]>),
}

fn bit(bm: &[u8], sector: u64) -> bool {
    bm[(sector / 8) as usize] & (0x80 >> (sector % 8)) != 0
}

/// Dynamic and differencing disks.
struct Sparse {
    block_size: u64,
    bitmap_size: u64,
    bat: Vec<u32>,
    states: Vec<AtomicU8>,
    partial: Mutex<HashMap<usize, Arc<[u8]>>>,
    parent: Option<parent::Parent>,
}

/// An open VHD.
pub struct VhdImage {
    storage: Arc<dyn Storage>,
    kind: DiskType,
    size: u64,
    footer: Footer,
    warnings: Vec<String>,
    sparse: Option<Sparse>,
}

impl VhdImage {
    /// Open the VHD in `storage`.
    pub fn open(storage: Arc<dyn Storage>, ctx: &OpenContext) -> Result<VhdImage> {
        let name = storage.name().to_string();
        let (footer, mut warnings) = locate_footer(storage.as_ref())?;
        let kind = footer
            .disk_type()
            .ok_or_else(|| unknown_type(&name, footer.disk_type_code))?;
        let sectors = footer.virtual_sectors();
        if sectors > MAX_SECTORS {
            return Err(Error::unsupported(
                &name,
                format!(
                    "the footer claims a {}-byte disk, over the 2040 GiB limit of the VHD format",
                    sectors.saturating_mul(512)
                ),
            ));
        }
        let size = sectors * 512;
        let len = storage.len();
        let sparse = match kind {
            DiskType::Fixed => {
                let data_len = len - footer.raw.len() as u64;
                if size > data_len {
                    return Err(Error::corrupt(
                        &name,
                        format!(
                            "the footer describes a {size}-byte fixed disk, but only {data_len} \
                             bytes precede the footer: the file is truncated"
                        ),
                    ));
                }
                None
            }
            DiskType::Dynamic | DiskType::Differencing => Some(open_sparse(
                storage.as_ref(),
                &footer,
                kind,
                size,
                ctx,
                &mut warnings,
            )?),
        };
        Ok(VhdImage {
            storage,
            kind,
            size,
            footer,
            warnings,
            sparse,
        })
    }

    /// The footer in use.
    pub fn footer(&self) -> &Footer {
        &self.footer
    }

    /// The disk type.
    pub fn disk_type(&self) -> DiskType {
        self.kind
    }

    fn name_str(&self) -> &str {
        self.storage.name()
    }

    /// Read `buf.len()` bytes of the file at `off` for block `b`, failing with the block's name
    /// when the file ends first.
    fn read_file(&self, b: usize, guest_off: u64, buf: &mut [u8], off: u64) -> Result<()> {
        let len = self.storage.len();
        if off + buf.len() as u64 > len {
            return Err(Error::corrupt(
                self.name_str(),
                format!(
                    "block {b} (guest offset {guest_off}) is stored at file offset {off}, past \
                     the end of the {len}-byte file: the file is truncated or the block \
                     allocation table is corrupt"
                ),
            ));
        }
        read_exact_at(self.storage.as_ref(), buf, off)
    }

    /// The bitmap of allocated block `b`.
    fn bitmap(&self, sp: &Sparse, b: usize) -> Result<Bitmap> {
        match sp.states[b].load(Ordering::Acquire) {
            ST_FULL => return Ok(Bitmap::Full),
            ST_EMPTY => return Ok(Bitmap::Empty),
            ST_PARTIAL => {
                let cache = sp.partial.lock().unwrap_or_else(|e| e.into_inner());
                if let Some(bm) = cache.get(&b) {
                    return Ok(Bitmap::Partial(bm.clone()));
                }
            }
            _ => {}
        }
        let start = u64::from(sp.bat[b]) * 512;
        let mut bm = vec![0u8; sp.bitmap_size as usize];
        let len = self.storage.len();
        if start + sp.bitmap_size > len {
            return Err(Error::corrupt(
                self.name_str(),
                format!(
                    "block {b} (guest offset {}) has its sector bitmap at file offset {start}, \
                     past the end of the {len}-byte file: the file is truncated or the block \
                     allocation table is corrupt",
                    b as u64 * sp.block_size
                ),
            ));
        }
        read_exact_at(self.storage.as_ref(), &mut bm, start)?;
        // Only the sectors inside the virtual disk count.
        let block_start = b as u64 * sp.block_size;
        let sectors = sp.block_size.min(self.size - block_start) / 512;
        let full_bytes = (sectors / 8) as usize;
        let mut all = bm[..full_bytes].iter().all(|&x| x == 0xff);
        let mut none = bm[..full_bytes].iter().all(|&x| x == 0);
        for s in (full_bytes as u64 * 8)..sectors {
            if bit(&bm, s) {
                none = false;
            } else {
                all = false;
            }
        }
        let state = match (all, none) {
            (true, _) => ST_FULL,
            (_, true) => ST_EMPTY,
            _ => ST_PARTIAL,
        };
        if state == ST_PARTIAL {
            let bm: Arc<[u8]> = bm.into();
            let mut cache = sp.partial.lock().unwrap_or_else(|e| e.into_inner());
            if (cache.len() + 1) * sp.bitmap_size as usize > BITMAP_CACHE_BYTES {
                cache.clear();
            }
            cache.insert(b, bm.clone());
            drop(cache);
            sp.states[b].store(state, Ordering::Release);
            return Ok(Bitmap::Partial(bm));
        }
        sp.states[b].store(state, Ordering::Release);
        Ok(if state == ST_FULL {
            Bitmap::Full
        } else {
            Bitmap::Empty
        })
    }

    /// Fill `buf` with guest bytes at `off` that this image does not hold: zeros, or the
    /// parent's bytes.
    fn read_absent(&self, sp: &Sparse, buf: &mut [u8], off: u64) -> Result<()> {
        match &sp.parent {
            None => buf.fill(0),
            Some(p) => {
                let psize = p.dev.size();
                let n = if off >= psize {
                    0
                } else {
                    (psize - off).min(buf.len() as u64) as usize
                };
                if n > 0 {
                    p.dev.read_at(&mut buf[..n], off)?;
                }
                buf[n..].fill(0);
            }
        }
        Ok(())
    }

    fn read_sparse(&self, sp: &Sparse, buf: &mut [u8], offset: u64) -> Result<()> {
        let bs = sp.block_size;
        let mut done = 0usize;
        while done < buf.len() {
            let pos = offset + done as u64;
            let b = (pos / bs) as usize;
            let in_block = pos % bs;
            let n = (bs - in_block).min((buf.len() - done) as u64) as usize;
            let chunk = &mut buf[done..done + n];
            let entry = sp.bat[b];
            if entry == UNALLOCATED {
                self.read_absent(sp, chunk, pos)?;
            } else {
                let data = u64::from(entry) * 512 + sp.bitmap_size;
                match self.bitmap(sp, b)? {
                    Bitmap::Full => self.read_file(b, pos, chunk, data + in_block)?,
                    Bitmap::Empty => self.read_absent(sp, chunk, pos)?,
                    Bitmap::Partial(bm) => {
                        let end = in_block + n as u64;
                        let mut p = in_block;
                        while p < end {
                            let sector = p / 512;
                            let set = bit(&bm, sector);
                            let mut s = sector + 1;
                            while s * 512 < end && bit(&bm, s) == set {
                                s += 1;
                            }
                            let stop = (s * 512).min(end);
                            let piece =
                                &mut chunk[(p - in_block) as usize..(stop - in_block) as usize];
                            let guest = b as u64 * bs + p;
                            if set {
                                self.read_file(b, guest, piece, data + p)?;
                            } else {
                                self.read_absent(sp, piece, guest)?;
                            }
                            p = stop;
                        }
                    }
                }
            }
            done += n;
        }
        Ok(())
    }

    /// Append the map of a range this image does not hold.
    fn map_absent(&self, sp: &Sparse, out: &mut Vec<Extent>, start: u64, stop: u64) -> Result<()> {
        match &sp.parent {
            None => push_extent(out, start, stop - start, ExtentKind::Unallocated),
            Some(p) => {
                let psize = p.dev.size();
                let mid = stop.min(psize).max(start);
                if mid > start {
                    for e in p.dev.map(start, mid - start)? {
                        push_extent(out, e.offset, e.length, e.kind);
                    }
                }
                push_extent(out, mid, stop - mid, ExtentKind::Unallocated);
            }
        }
        Ok(())
    }

    fn map_sparse(&self, sp: &Sparse, offset: u64, end: u64) -> Result<Vec<Extent>> {
        let bs = sp.block_size;
        let mut out = Vec::new();
        // A pending run of absent bytes, mapped through the parent in one call.
        let mut absent: Option<(u64, u64)> = None;
        let add = |out: &mut Vec<Extent>,
                   absent: &mut Option<(u64, u64)>,
                   start: u64,
                   stop: u64,
                   data: bool|
         -> Result<()> {
            if data {
                if let Some((a, z)) = absent.take() {
                    self.map_absent(sp, out, a, z)?;
                }
                push_extent(out, start, stop - start, ExtentKind::Data);
            } else {
                match absent {
                    Some((_, z)) if *z == start => *z = stop,
                    _ => {
                        if let Some((a, z)) = absent.take() {
                            self.map_absent(sp, out, a, z)?;
                        }
                        *absent = Some((start, stop));
                    }
                }
            }
            Ok(())
        };
        let mut pos = offset;
        while pos < end {
            let b = (pos / bs) as usize;
            let block_start = b as u64 * bs;
            let stop = (block_start + bs).min(end);
            if sp.bat[b] == UNALLOCATED {
                add(&mut out, &mut absent, pos, stop, false)?;
            } else if u64::from(sp.bat[b]) * 512 + sp.bitmap_size > self.storage.len() {
                // Unreachable for an opened image (open checks every block); kept so a read of
                // such a block fails, naming it, rather than mapping garbage.
                add(&mut out, &mut absent, pos, stop, true)?;
            } else {
                match self.bitmap(sp, b)? {
                    Bitmap::Full => add(&mut out, &mut absent, pos, stop, true)?,
                    Bitmap::Empty => add(&mut out, &mut absent, pos, stop, false)?,
                    Bitmap::Partial(bm) => {
                        let mut p = pos;
                        while p < stop {
                            let sector = (p - block_start) / 512;
                            let set = bit(&bm, sector);
                            let mut s = sector + 1;
                            while block_start + s * 512 < stop && bit(&bm, s) == set {
                                s += 1;
                            }
                            let q = (block_start + s * 512).min(stop);
                            add(&mut out, &mut absent, p, q, set)?;
                            p = q;
                        }
                    }
                }
            }
            pos = stop;
        }
        if let Some((a, z)) = absent.take() {
            self.map_absent(sp, &mut out, a, z)?;
        }
        Ok(out)
    }
}

/// Read the dynamic disk header and BAT, and find the parent of a differencing disk.
fn open_sparse(
    storage: &dyn Storage,
    footer: &Footer,
    kind: DiskType,
    size: u64,
    ctx: &OpenContext,
    warnings: &mut Vec<String>,
) -> Result<Sparse> {
    let name = storage.name();
    let len = storage.len();
    let hoff = footer.data_offset;
    let hbuf = read_vec(
        storage,
        hoff,
        DYN_HEADER_SIZE as u64,
        DYN_HEADER_SIZE as u64,
        "dynamic disk header (at the footer's data offset)",
    )?;
    let hdr = DynHeader::parse(name, &hbuf, hoff)?;
    let bs = hdr.block_size;
    if bs < 512 || !bs.is_power_of_two() {
        return Err(Error::corrupt(
            name,
            format!(
                "block size {bs} in the dynamic disk header is invalid: it must be a power of two \
                 of at least 512 bytes"
            ),
        ));
    }
    if bs > MAX_BLOCK_SIZE {
        return Err(Error::corrupt(
            name,
            format!(
                "block size {bs} in the dynamic disk header is absurd (over {MAX_BLOCK_SIZE} \
                 bytes; writers use 512 KiB or 2 MiB)"
            ),
        ));
    }
    let bs = u64::from(bs);
    // One bit per sector, padded to whole sectors. (qemu computes 0 for blocks under 4 KiB,
    // which no writer makes; the specification's padding is used here.)
    let bitmap_size = (bs / 512).div_ceil(8).div_ceil(512) * 512;
    let needed = size.div_ceil(bs);
    let entries = u64::from(hdr.max_table_entries);
    if entries < needed {
        return Err(Error::corrupt(
            name,
            format!(
                "the block allocation table has {entries} entries, too few for the {size}-byte \
                 virtual disk ({needed} blocks of {bs} bytes)"
            ),
        ));
    }
    if hdr
        .table_offset
        .checked_add(entries * 4)
        .is_none_or(|e| e > len)
    {
        return Err(Error::corrupt(
            name,
            format!(
                "the block allocation table ({entries} entries at offset {}) lies past the end \
                 of the {len}-byte file",
                hdr.table_offset
            ),
        ));
    }
    let raw = read_vec(
        storage,
        hdr.table_offset,
        needed * 4,
        BAT_CAP,
        "block allocation table",
    )?;
    let bat: Vec<u32> = raw
        .chunks_exact(4)
        .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    drop(raw);
    let tail_footer = match read_tail_footer(storage)? {
        Ok(f) => f.raw.len() as u64,
        Err(FooterProblem::NoCookie) => 0,
        Err(_) => FOOTER_SIZE as u64,
    };
    bat::check(
        storage,
        &bat,
        &bat::Layout {
            header_offset: hoff,
            table_offset: hdr.table_offset,
            table_entries: entries,
            block_size: bs,
            bitmap_size,
            size,
            tail_footer,
        },
    )?;
    let states = (0..bat.len()).map(|_| AtomicU8::new(ST_UNKNOWN)).collect();
    let parent = if kind == DiskType::Differencing {
        let info = parent::parent_info(storage, &hdr)?;
        if !ctx.options.allow_backing {
            return Err(Error::refused(
                name,
                format!(
                    "this is a differencing VHD: its guest disk is completed by its {}, a \
                     separate file; imgcheck follows a parent only with --allow-backing, and \
                     then only inside the image's directory",
                    info.describe()
                ),
            ));
        }
        let path = parent::resolve(name, storage.path(), &info, ctx)?;
        let p = parent::open_parent(name, storage.path(), &path, &hdr.parent_uuid, ctx).map_err(
            |e| {
                // Name the file the user gave once, at the top of the chain.
                if ctx.depth == 0 {
                    parent::in_chain(name, e)
                } else {
                    e
                }
            },
        )?;
        if p.dev.size() != size {
            warnings.push(format!(
                "the parent {} is {} bytes but this differencing disk is {size} bytes",
                p.path,
                p.dev.size()
            ));
        }
        for w in p.dev.warnings() {
            warnings.push(format!("parent {}: {w}", p.path));
        }
        Some(p)
    } else {
        None
    };
    Ok(Sparse {
        block_size: bs,
        bitmap_size,
        bat,
        states,
        partial: Mutex::new(HashMap::new()),
        parent,
    })
}

impl BlockDevice for VhdImage {
    fn format(&self) -> Format {
        Format::Vhd
    }
    fn subformat(&self) -> Option<String> {
        Some(self.kind.as_str().to_string())
    }
    fn backing(&self) -> Option<String> {
        self.sparse
            .as_ref()
            .and_then(|sp| sp.parent.as_ref())
            .map(|p| p.path.clone())
    }
    fn size(&self) -> u64 {
        self.size
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        check_range(self.name_str(), offset, buf.len() as u64, self.size)?;
        match &self.sparse {
            None => read_exact_at(self.storage.as_ref(), buf, offset),
            Some(sp) => self.read_sparse(sp, buf, offset),
        }
    }
    fn map(&self, offset: u64, len: u64) -> Result<Vec<Extent>> {
        let end = clip_end(offset, len, self.size);
        if end <= offset {
            return Ok(Vec::new());
        }
        match &self.sparse {
            Some(sp) => self.map_sparse(sp, offset, end),
            None => {
                let mut out = Vec::new();
                push_file_extents(
                    &mut out,
                    self.storage.as_ref(),
                    offset,
                    end - offset,
                    offset,
                    ExtentKind::Unallocated,
                )?;
                Ok(out)
            }
        }
    }
    fn actual_size(&self) -> u64 {
        self.storage.allocated_size()
    }
    fn name(&self) -> &str {
        self.name_str()
    }
    fn warnings(&self) -> Vec<String> {
        self.warnings.clone()
    }
    fn granularity(&self) -> u64 {
        match &self.sparse {
            Some(sp) => sp.block_size,
            None => FIXED_GRANULARITY,
        }
    }
    fn files(&self) -> Vec<super::FileId> {
        let mut v: Vec<_> = self.storage.file_id().into_iter().collect();
        if let Some(p) = self.sparse.as_ref().and_then(|sp| sp.parent.as_ref()) {
            v.extend(p.dev.files());
        }
        v
    }
}
