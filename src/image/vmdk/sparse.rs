//! Hosted sparse extents (`KDMV`): monolithicSparse, the `-sNNN` files of twoGbMaxExtentSparse,
//! and streamOptimized (deflate-compressed grains behind grain markers, the grain directory
//! possibly only in the footer).
//!
//! Layout: a 512-byte header; a grain directory (GD) of u32 sector offsets of grain tables
//! (GT); each GT holds `numGTEsPerGT` u32 sector offsets of grains. A GTE of 0 is an
//! unallocated grain; 1 is a zeroed grain when the header's zero-grain flag is set.
//!
//! Choices:
//! - The GD is loaded at open (bounded by the file's size and [`MAX_GD_ENTRIES`]), and every
//!   GD entry is checked to name a GT inside the file. GTs are read on demand into a bounded,
//!   thread-safe, direct-mapped cache.
//! - Redundant GD (monolithicSparse): the primary GD is used, as VMware and qemu do. If the
//!   primary GD cannot be used (past the end of the file, or an entry pointing past the end),
//!   the redundant GD is used instead and a warning says so. If both are unusable, the error
//!   names the primary's problem. Grain tables are not cross-checked against their copies.
//! - Compressed grains are bounded: the marker's size must be at most 2 grains + 4 KiB, and a
//!   grain must inflate to at most one grain. A grain that inflates to less (the last grain
//!   of a disk, written short by some tools) reads as zeros past its end; qemu refuses to read
//!   that part instead.

use std::cell::RefCell;
use std::sync::{Arc, Mutex};

use libdeflater::{DecompressionError, Decompressor};

use crate::error::{Error, Result};
use crate::image::storage::{read_exact_at, read_vec, Storage};

pub const SECTOR: u64 = 512;
pub const MAGIC: &[u8; 4] = b"KDMV";
/// `gdOffset` meaning "the grain directory is found through the footer".
pub const GD_AT_END: u64 = u64::MAX;

pub const FLAG_NL_DETECT: u32 = 1 << 0;
pub const FLAG_RGD: u32 = 1 << 1;
pub const FLAG_ZERO_GRAIN: u32 = 1 << 2;
pub const FLAG_COMPRESSED: u32 = 1 << 16;
pub const FLAG_MARKERS: u32 = 1 << 17;

const MARKER_EOS: u32 = 0;
const MARKER_FOOTER: u32 = 3;

/// Largest grain accepted: 1 GiB (as qemu).
pub const MAX_GRAIN_SECTORS: u64 = 0x20_0000;
/// Largest grain accepted in a compressed extent (each read may inflate one grain).
pub const MAX_COMPRESSED_GRAIN_BYTES: u64 = 16 << 20;
/// Largest grain table accepted, in entries (VMware always writes 512).
pub const MAX_GTES_PER_GT: u64 = 4096;
/// Largest grain directory accepted, in entries (as qemu: 32 Mi entries, 128 MiB).
pub const MAX_GD_ENTRIES: u64 = 32 << 20;
/// Memory for cached grain tables per extent.
const GT_CACHE_BYTES: u64 = 16 << 20;
/// Inflated grains kept for reads that take part of a grain: at most this many ...
const GRAIN_CACHE_SLOTS: u64 = 32;
/// ... and at most this much memory.
const GRAIN_CACHE_BYTES: u64 = 32 << 20;

/// The sparse extent header (the first sector, or the footer's copy).
#[derive(Debug, Clone, Copy)]
pub struct Header {
    pub version: u32,
    pub flags: u32,
    /// Capacity in sectors.
    pub capacity: u64,
    /// Grain size in sectors.
    pub grain_size: u64,
    pub desc_offset: u64,
    pub desc_size: u64,
    pub gtes_per_gt: u32,
    pub rgd_offset: u64,
    pub gd_offset: u64,
    pub overhead: u64,
    pub check_bytes: [u8; 4],
    pub compress_algorithm: u16,
}

fn le32(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes(b[o..o + 4].try_into().unwrap())
}
fn le64(b: &[u8], o: usize) -> u64 {
    u64::from_le_bytes(b[o..o + 8].try_into().unwrap())
}

impl Header {
    /// Parse the 512-byte sector `b` (which starts with the magic).
    pub fn parse(b: &[u8; 512]) -> Self {
        Header {
            version: le32(b, 4),
            flags: le32(b, 8),
            capacity: le64(b, 12),
            grain_size: le64(b, 20),
            desc_offset: le64(b, 28),
            desc_size: le64(b, 36),
            gtes_per_gt: le32(b, 44),
            rgd_offset: le64(b, 48),
            gd_offset: le64(b, 56),
            overhead: le64(b, 64),
            check_bytes: [b[73], b[74], b[75], b[76]],
            compress_algorithm: u16::from_le_bytes([b[77], b[78]]),
        }
    }
}

/// Allocation state of a grain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GrainState {
    Unallocated,
    Zero,
    Data,
}

type Slot<T> = Mutex<Option<(u64, Arc<T>)>>;

/// An opened hosted sparse extent.
pub struct SparseExtent {
    storage: Arc<dyn Storage>,
    /// Header from the start of the file (holds the embedded descriptor's location).
    pub first_header: Header,
    /// Header in effect (the footer's for a streamOptimized file with GD_AT_END).
    pub header: Header,
    grain_bytes: u64,
    grain_sectors: u64,
    gtes: u64,
    capacity_bytes: u64,
    compressed: bool,
    markers: bool,
    zero_grain: bool,
    gd: Vec<u32>,
    gt_cache: Vec<Slot<Vec<u32>>>,
    grain_cache: Vec<Slot<Vec<u8>>>,
    pub warnings: Vec<String>,
}

/// The message of an error about this extent, without the file name in front.
fn msg_of(e: &Error) -> String {
    match e {
        Error::Corrupt { msg, .. } => msg.clone(),
        other => other.to_string(),
    }
}

fn corrupt(s: &dyn Storage, msg: impl Into<String>) -> Error {
    Error::corrupt(s.name(), msg)
}

impl SparseExtent {
    /// Open the sparse extent in `storage` (whose first four bytes are `KDMV`).
    pub fn open(storage: Arc<dyn Storage>) -> Result<Self> {
        let s = storage.as_ref();
        if s.len() < SECTOR {
            return Err(corrupt(
                s,
                format!(
                    "file is truncated: {} bytes, too small for a VMDK sparse header",
                    s.len()
                ),
            ));
        }
        let mut sec = [0u8; 512];
        read_exact_at(s, &mut sec, 0)?;
        if &sec[..4] != MAGIC {
            return Err(corrupt(
                s,
                "not a VMDK hosted sparse extent (no KDMV magic)".to_string(),
            ));
        }
        let first = Header::parse(&sec);
        let mut warnings = Vec::new();
        let header = if first.gd_offset == GD_AT_END {
            read_footer(s)?
        } else {
            first
        };
        let h = header;
        if h.version == 0 || h.version > 3 {
            return Err(Error::unsupported(
                s.name(),
                format!(
                    "VMDK sparse extent version {} (imgcheck reads versions 1 to 3)",
                    h.version
                ),
            ));
        }
        if h.flags & FLAG_NL_DETECT != 0 && h.check_bytes != *b"\n \r\n" {
            return Err(corrupt(
                s,
                "the header's newline check bytes are damaged: the file was probably \
                 corrupted by a text-mode (ASCII) transfer; copy it again in binary mode",
            ));
        }
        let compressed = match h.compress_algorithm {
            0 => false,
            1 => true,
            a => {
                return Err(Error::unsupported(
                    s.name(),
                    format!("grain compression algorithm {a} (only deflate, 1, is defined)"),
                ))
            }
        };
        if h.flags & FLAG_COMPRESSED != 0 && !compressed {
            warnings.push(format!(
                "{}: header sets the compressed-grains flag but names no compression \
                 algorithm; grains are read uncompressed",
                s.name()
            ));
        }
        if h.grain_size == 0 || !h.grain_size.is_power_of_two() || h.grain_size > MAX_GRAIN_SECTORS
        {
            return Err(corrupt(
                s,
                format!(
                    "invalid grain size of {} sectors (must be a power of two, at most {})",
                    h.grain_size, MAX_GRAIN_SECTORS
                ),
            ));
        }
        let grain_bytes = h.grain_size * SECTOR;
        if compressed && grain_bytes > MAX_COMPRESSED_GRAIN_BYTES {
            return Err(Error::unsupported(
                s.name(),
                format!(
                    "compressed grains of {grain_bytes} bytes (imgcheck reads compressed \
                     grains up to {MAX_COMPRESSED_GRAIN_BYTES} bytes)"
                ),
            ));
        }
        let gtes = h.gtes_per_gt as u64;
        if gtes == 0 || gtes > MAX_GTES_PER_GT {
            return Err(corrupt(
                s,
                format!(
                    "invalid number of entries per grain table: {gtes} (must be 1 to \
                     {MAX_GTES_PER_GT}; VMware writes 512)"
                ),
            ));
        }
        let capacity_bytes = h.capacity.checked_mul(SECTOR).ok_or_else(|| {
            corrupt(
                s,
                format!("capacity of {} sectors overflows a byte count", h.capacity),
            )
        })?;
        let gt_span = h.grain_size * gtes; // sectors covered by one GT; no overflow (2^21 * 2^12)
        let gd_entries = h.capacity.div_ceil(gt_span);
        if gd_entries > MAX_GD_ENTRIES {
            return Err(corrupt(
                s,
                format!(
                    "capacity of {} bytes needs {gd_entries} grain tables, more than the \
                     {MAX_GD_ENTRIES} imgcheck accepts",
                    capacity_bytes
                ),
            ));
        }
        let gt_bytes = gtes * 4;
        let (gd, gd_sector) = if gd_entries == 0 {
            (Vec::new(), 0)
        } else {
            let primary = if h.gd_offset == 0 || h.gd_offset == GD_AT_END {
                Err(corrupt(
                    s,
                    format!("grain directory offset {:#x} is invalid", h.gd_offset),
                ))
            } else {
                load_gd(s, "grain directory", h.gd_offset, gd_entries, gt_bytes)
            };
            match primary {
                Ok(gd) => (gd, h.gd_offset),
                Err(e) => {
                    let rgd_ok =
                        h.flags & FLAG_RGD != 0 && h.rgd_offset != 0 && h.rgd_offset != GD_AT_END;
                    if !rgd_ok {
                        return Err(e);
                    }
                    match load_gd(
                        s,
                        "redundant grain directory",
                        h.rgd_offset,
                        gd_entries,
                        gt_bytes,
                    ) {
                        Ok(gd) => {
                            warnings.push(format!(
                                "{}: the primary grain directory is unusable ({}); using the \
                                 redundant grain directory at sector {}",
                                s.name(),
                                msg_of(&e),
                                h.rgd_offset
                            ));
                            (gd, h.rgd_offset)
                        }
                        Err(e2) => {
                            return Err(corrupt(
                                s,
                                format!(
                                    "both grain directories are unusable: primary: {}; \
                                     redundant: {}",
                                    msg_of(&e),
                                    msg_of(&e2)
                                ),
                            ))
                        }
                    }
                }
            }
        };
        super::tables::check(
            s,
            &gd,
            &super::tables::Grains {
                grain_sectors: h.grain_size,
                gtes,
                capacity: h.capacity,
                compressed,
                zero_grain: h.flags & FLAG_ZERO_GRAIN != 0,
                gd_sector,
            },
        )?;
        let slots = (GT_CACHE_BYTES / gt_bytes)
            .clamp(1, 4096)
            .min(gd_entries.max(1)) as usize;
        let gt_cache = (0..slots).map(|_| Mutex::new(None)).collect();
        let grain_slots = if compressed {
            (GRAIN_CACHE_BYTES / grain_bytes).clamp(1, GRAIN_CACHE_SLOTS) as usize
        } else {
            0
        };
        let grain_cache = (0..grain_slots).map(|_| Mutex::new(None)).collect();
        Ok(SparseExtent {
            storage,
            first_header: first,
            header: h,
            grain_bytes,
            grain_sectors: h.grain_size,
            gtes,
            capacity_bytes,
            compressed,
            markers: h.flags & FLAG_MARKERS != 0,
            zero_grain: h.flags & FLAG_ZERO_GRAIN != 0,
            gd,
            gt_cache,
            grain_cache,
            warnings,
        })
    }

    pub fn name(&self) -> &str {
        self.storage.name()
    }
    pub fn storage(&self) -> &Arc<dyn Storage> {
        &self.storage
    }
    /// Capacity from the header, in bytes.
    pub fn capacity_bytes(&self) -> u64 {
        self.capacity_bytes
    }
    pub fn grain_bytes(&self) -> u64 {
        self.grain_bytes
    }
    pub fn is_compressed(&self) -> bool {
        self.compressed
    }

    /// The grain table `gd_idx`, from the cache or the file. `None` when not allocated.
    fn gt(&self, gd_idx: u64) -> Result<Option<Arc<Vec<u32>>>> {
        let Some(&sector) = self.gd.get(gd_idx as usize) else {
            return Ok(None);
        };
        if sector == 0 {
            return Ok(None);
        }
        let slot = &self.gt_cache[(gd_idx % self.gt_cache.len() as u64) as usize];
        if let Some((idx, gt)) = slot.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
            if *idx == gd_idx {
                return Ok(Some(gt.clone()));
            }
        }
        let bytes = read_vec(
            self.storage.as_ref(),
            sector as u64 * SECTOR,
            self.gtes * 4,
            MAX_GTES_PER_GT * 4,
            &format!("grain table {gd_idx}"),
        )?;
        let gt: Arc<Vec<u32>> = Arc::new(
            bytes
                .chunks_exact(4)
                .map(|c| u32::from_le_bytes(c.try_into().unwrap()))
                .collect(),
        );
        *slot.lock().unwrap_or_else(|p| p.into_inner()) = Some((gd_idx, gt.clone()));
        Ok(Some(gt))
    }

    /// Grain table entry of grain `gi`, keeping the current GT in `cur` between calls.
    fn entry(&self, gi: u64, cur: &mut Option<(u64, Option<Arc<Vec<u32>>>)>) -> Result<u32> {
        let gd_idx = gi / self.gtes;
        let fresh = !matches!(cur, Some((i, _)) if *i == gd_idx);
        if fresh {
            *cur = Some((gd_idx, self.gt(gd_idx)?));
        }
        let gt = cur.as_ref().and_then(|(_, g)| g.as_ref());
        Ok(gt.map_or(0, |g| g[(gi % self.gtes) as usize]))
    }

    fn state_of(&self, entry: u32) -> GrainState {
        match entry {
            0 => GrainState::Unallocated,
            1 if self.zero_grain => GrainState::Zero,
            _ => GrainState::Data,
        }
    }

    /// Allocation map of `[off, off+len)` of the extent as (offset, length, state) runs, merged.
    pub fn map(&self, off: u64, len: u64) -> Result<Vec<(u64, u64, GrainState)>> {
        let mut out: Vec<(u64, u64, GrainState)> = Vec::new();
        let end = off.saturating_add(len);
        let mut pos = off;
        let mut cur = None;
        while pos < end {
            let gi = pos / self.grain_bytes;
            let gd_idx = gi / self.gtes;
            let (next, st) = if self.gd.get(gd_idx as usize).copied().unwrap_or(0) == 0 {
                // No grain table: its whole span is unallocated.
                let span_end = (gd_idx + 1)
                    .saturating_mul(self.gtes)
                    .saturating_mul(self.grain_bytes);
                (span_end.min(end), GrainState::Unallocated)
            } else {
                let next = ((gi + 1) * self.grain_bytes).min(end);
                (next, self.state_of(self.entry(gi, &mut cur)?))
            };
            match out.last_mut() {
                Some(last) if last.2 == st && last.0 + last.1 == pos => last.1 += next - pos,
                _ => out.push((pos, next - pos, st)),
            }
            pos = next;
        }
        Ok(out)
    }

    /// Read `buf.len()` bytes at extent offset `off`. Unallocated runs are handed to
    /// `unalloc(slice, extent_offset)` (zeros, or the parent's bytes).
    pub fn read(
        &self,
        buf: &mut [u8],
        off: u64,
        unalloc: &mut dyn FnMut(&mut [u8], u64) -> Result<()>,
    ) -> Result<()> {
        let gb = self.grain_bytes;
        let total = buf.len();
        let mut done = 0usize;
        let mut cur = None;
        while done < total {
            let pos = off + done as u64;
            let gi = pos / gb;
            let in_g = pos % gb;
            let n = ((gb - in_g) as usize).min(total - done);
            let entry = self.entry(gi, &mut cur)?;
            let state = self.state_of(entry);
            // Extend over following grains of the same kind (contiguous on disk for data).
            let mut run = n;
            let mut last_entry = entry;
            let mut g = gi;
            while done + run < total && !(state == GrainState::Data && self.compressed) {
                let e = self.entry(g + 1, &mut cur)?;
                let st = self.state_of(e);
                let contiguous = match state {
                    GrainState::Data => {
                        st == GrainState::Data && e as u64 == last_entry as u64 + self.grain_sectors
                    }
                    _ => st == state,
                };
                if !contiguous {
                    break;
                }
                g += 1;
                last_entry = e;
                run += (gb as usize).min(total - done - run);
            }
            let dst = &mut buf[done..done + run];
            match state {
                GrainState::Unallocated => unalloc(dst, pos)?,
                GrainState::Zero => dst.fill(0),
                GrainState::Data if self.compressed => {
                    self.read_compressed(dst, gi, in_g, entry)?
                }
                GrainState::Data => {
                    let foff = entry as u64 * SECTOR + in_g;
                    let fend = foff + run as u64;
                    if fend > self.storage.len() {
                        return Err(corrupt(
                            self.storage.as_ref(),
                            format!(
                                "grain {gi} (extent offset {pos}): its data at file offsets \
                                 {foff}..{fend} runs past the end of the {}-byte file \
                                 (truncated?)",
                                self.storage.len()
                            ),
                        ));
                    }
                    read_exact_at(self.storage.as_ref(), dst, foff)?;
                }
            }
            done += run;
        }
        Ok(())
    }

    fn read_compressed(&self, dst: &mut [u8], gi: u64, in_g: u64, entry: u32) -> Result<()> {
        let gb = self.grain_bytes as usize;
        if in_g == 0 && dst.len() == gb {
            // A whole grain: inflate straight into the caller's buffer.
            let n = self.inflate_grain(gi, entry, dst)?;
            dst[n..].fill(0);
            return Ok(());
        }
        let slot = &self.grain_cache[(gi % self.grain_cache.len() as u64) as usize];
        let cached = slot
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .filter(|(i, _)| *i == gi)
            .map(|(_, g)| g.clone());
        let grain = match cached {
            Some(g) => g,
            None => {
                let mut g = vec![0u8; gb];
                let n = self.inflate_grain(gi, entry, &mut g)?;
                g[n..].fill(0);
                let g = Arc::new(g);
                *slot.lock().unwrap_or_else(|p| p.into_inner()) = Some((gi, g.clone()));
                g
            }
        };
        let start = in_g as usize;
        dst.copy_from_slice(&grain[start..start + dst.len()]);
        Ok(())
    }

    /// Inflate compressed grain `gi` (GTE `entry`) into `out` (one grain long); returns the
    /// inflated length.
    fn inflate_grain(&self, gi: u64, entry: u32, out: &mut [u8]) -> Result<usize> {
        INFLATE_BUF.with(|cell| {
            let mut input = cell.borrow_mut();
            self.inflate_grain_with(gi, entry, out, &mut input)
        })
    }

    fn inflate_grain_with(
        &self,
        gi: u64,
        entry: u32,
        out: &mut [u8],
        input: &mut Vec<u8>,
    ) -> Result<usize> {
        let s = self.storage.as_ref();
        let off = entry as u64 * SECTOR;
        let cap = 2 * self.grain_bytes + 4096;
        let avail = s.len().saturating_sub(off);
        let past_end = || {
            corrupt(
                s,
                format!(
                    "grain {gi} lies at file offset {off}, past the end of the {}-byte file",
                    s.len()
                ),
            )
        };
        // One read for the marker and (usually) all of the compressed data.
        let first = if self.markers {
            (12 + self.grain_bytes + 512).min(avail)
        } else {
            cap.min(avail)
        };
        if first < if self.markers { 12 } else { 1 } {
            return Err(past_end());
        }
        input.clear();
        input.resize(first as usize, 0);
        read_exact_at(s, input, off)?;
        let (start, size) = if self.markers {
            let lba = le64(input, 0);
            let size = le32(input, 8) as u64;
            if size == 0 {
                return Err(corrupt(
                    s,
                    format!(
                        "grain {gi}: the grain table points at file offset {off}, which holds a \
                         metadata marker, not a grain"
                    ),
                ));
            }
            if lba != gi * self.grain_sectors {
                return Err(corrupt(
                    s,
                    format!(
                        "grain {gi}: the grain marker at file offset {off} is for sector {lba}, \
                         not sector {}",
                        gi * self.grain_sectors
                    ),
                ));
            }
            if size > cap {
                return Err(corrupt(
                    s,
                    format!(
                        "grain {gi}: compressed size {size} is more than the {cap}-byte limit \
                         for a {}-byte grain",
                        self.grain_bytes
                    ),
                ));
            }
            if 12 + size > first {
                // Larger than the first read (incompressible data): read the rest.
                let more = read_vec(s, off + 12, size, cap, &format!("compressed grain {gi}"))?;
                input.clear();
                input.extend_from_slice(&more);
                (0usize, size as usize)
            } else {
                (12usize, size as usize)
            }
        } else {
            (0usize, first as usize)
        };
        let data = &input[start..start + size];
        let bad = |why: String| corrupt(s, format!("grain {gi} (file offset {off}): {why}"));
        INFLATER.with(|cell| {
            let mut slot = cell.borrow_mut();
            let d = slot.get_or_insert_with(Decompressor::new);
            // One whole-buffer inflate of the zlib stream (its Adler-32 checked); a grain may
            // inflate to less than a grain (the last one), never to more.
            match d.zlib_decompress(data, out) {
                Ok(n) => Ok(n),
                Err(DecompressionError::InsufficientSpace) => Err(bad(format!(
                    "inflates to more than one grain ({} bytes)",
                    self.grain_bytes
                ))),
                Err(DecompressionError::BadData) => Err(bad(
                    "corrupt or truncated deflate stream (or a wrong Adler-32 checksum)".into(),
                )),
            }
        })
    }
}

thread_local! {
    /// Per-thread inflater (libdeflate keeps no state between grains; this saves its allocation).
    static INFLATER: RefCell<Option<Decompressor>> = const { RefCell::new(None) };
    /// Per-thread buffer for compressed grain data.
    static INFLATE_BUF: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Read and check the footer of a streamOptimized extent: footer marker, header copy and
/// end-of-stream marker in the last three sectors.
fn read_footer(s: &dyn Storage) -> Result<Header> {
    let len = s.len() / SECTOR * SECTOR;
    if len < 4 * SECTOR {
        return Err(corrupt(
            s,
            "header says the grain directory is in the footer, but the file is too short to \
             have one (truncated?)",
        ));
    }
    let mut b = [0u8; 1536];
    read_exact_at(s, &mut b, len - 1536)?;
    let footer_ok = le32(&b, 8) == 0 && le32(&b, 12) == MARKER_FOOTER;
    let eos_ok = le64(&b, 1024) == 0 && le32(&b, 1032) == 0 && le32(&b, 1036) == MARKER_EOS;
    if !footer_ok || !eos_ok || &b[512..516] != MAGIC {
        return Err(corrupt(
            s,
            "header says the grain directory is in the footer, but the file does not end with \
             a footer marker, a header copy and an end-of-stream marker (truncated stream?)",
        ));
    }
    let h: [u8; 512] = b[512..1024].try_into().unwrap();
    let h = Header::parse(&h);
    if h.gd_offset == GD_AT_END || h.gd_offset == 0 {
        return Err(corrupt(
            s,
            "the footer's header copy does not give the grain directory's offset",
        ));
    }
    Ok(h)
}

/// Read a grain directory of `n` entries at `sector` and check that every entry names a grain
/// table inside the file.
fn load_gd(s: &dyn Storage, what: &str, sector: u64, n: u64, gt_bytes: u64) -> Result<Vec<u32>> {
    let off = sector.checked_mul(SECTOR).ok_or_else(|| {
        corrupt(
            s,
            format!("{what} offset of {sector} sectors overflows a byte offset"),
        )
    })?;
    let raw = read_vec(s, off, n * 4, MAX_GD_ENTRIES * 4, what)?;
    let gd: Vec<u32> = raw
        .chunks_exact(4)
        .map(|c| u32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    for (i, &e) in gd.iter().enumerate() {
        if e != 0 && e as u64 * SECTOR + gt_bytes > s.len() {
            return Err(corrupt(
                s,
                format!(
                    "{what} entry {i} (at file offset {}) points at a grain table at sector \
                     {e} (file offset {}), past the end of the {}-byte file: the extent is \
                     damaged (truncated, or its grain directory is corrupt)",
                    off + 4 * i as u64,
                    e as u64 * SECTOR,
                    s.len()
                ),
            ));
        }
    }
    Ok(gd)
}
