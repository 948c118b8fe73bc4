//! qcow2 reader: versions 2 and 3 (compat 0.10 and 1.1), cluster sizes from 512 B to 2 MiB,
//! compressed clusters (raw deflate), zero clusters, extended L2 entries (subclusters) and,
//! when the user allows it, backing files. Encryption, external data files and zstd
//! compression are refused with a clear error.
//!
//! Reads are positional and take `&self`: the L1 table is loaded when the image is opened, L2
//! tables are loaded on demand into a bounded, sharded LRU cache, and guest runs that map to
//! contiguous host bytes are read with a single `pread`.

mod backing;
mod cache;
mod header;
mod validate;

use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use libdeflater::{DecompressionError, Decompressor};

use self::cache::Lru;
pub use self::header::Header;
use super::storage::{read_exact_at, read_vec, Storage};
use super::{
    check_range, clip_end, push_extent, BlockDevice, Extent, ExtentKind, Format, OpenContext,
};
use crate::error::{Error, Result};

/// Bits 9-55 of L1 and L2 entries: the host offset.
const OFFSET_MASK: u64 = 0x00ff_ffff_ffff_fe00;
/// L2 entry bit 62: compressed cluster.
const FLAG_COMPRESSED: u64 = 1 << 62;
/// L2 entry bit 0 (without extended L2): the cluster reads as zeros.
const FLAG_ZERO: u64 = 1;
/// Subclusters per cluster with extended L2 entries.
const SUBCLUSTERS: u64 = 32;

/// Memory given to cached L2 tables.
const L2_CACHE_BYTES: u64 = 32 * 1024 * 1024;
/// Memory given to cached decompressed clusters (used by reads of part of a cluster).
const INFLATE_CACHE_BYTES: u64 = 8 * 1024 * 1024;
/// Most host bytes read ahead at once for compressed clusters (per thread).
const MAX_READAHEAD: u64 = 4 * 1024 * 1024;

/// Distinguishes open images in per-thread state.
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// What one run of guest bytes maps to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Piece {
    /// Stored uncompressed at this host offset (of the run's first byte).
    Data(u64),
    /// Inside a compressed cluster with this L2 entry, starting at this offset in the cluster.
    Compressed { entry: u64, skip: u64 },
    /// Reads as zeros.
    Zero,
    /// Not allocated here: reads from the backing file, or zeros.
    Unallocated,
}

/// An open qcow2 image.
pub struct Qcow2 {
    storage: Arc<dyn Storage>,
    /// Unique per open image (keys per-thread read-ahead state).
    id: u64,
    version: u32,
    size: u64,
    cluster_bits: u32,
    /// log2 of the guest bytes one L2 table covers.
    l1_shift: u32,
    extended_l2: bool,
    /// Active L1 table, the entries the virtual size needs.
    l1: Vec<u64>,
    /// Host offset of the L1 table (an L2 table there would read L1 entries as L2 entries).
    l1_offset: u64,
    l2_cache: Lru<Arc<[u64]>>,
    inflate_cache: Lru<Arc<[u8]>>,
    /// Bit split of compressed cluster descriptors.
    csize_shift: u32,
    csize_mask: u64,
    coffset_mask: u64,
    backing: Option<Arc<dyn BlockDevice>>,
    warnings: Vec<String>,
}

/// Open a qcow2 image.
pub fn open(storage: Arc<dyn Storage>, ctx: &OpenContext) -> Result<Arc<dyn BlockDevice>> {
    Ok(Arc::new(Qcow2::open(storage, ctx)?))
}

impl Qcow2 {
    /// Parse and validate `storage` as qcow2, following a backing file only when allowed.
    pub fn open(storage: Arc<dyn Storage>, ctx: &OpenContext) -> Result<Qcow2> {
        let s = storage.as_ref();
        let hdr = Header::read(s)?;
        let warnings = hdr.check_features(s)?;

        let cluster_bits = hdr.cluster_bits;
        let cluster_size = hdr.cluster_size();
        let extended_l2 = hdr.extended_l2();
        // An L2 table is one cluster of 8-byte (or 16-byte extended) entries.
        let l2_bits = cluster_bits - if extended_l2 { 4 } else { 3 };
        let l1_shift = cluster_bits + l2_bits;

        let l1 = validate::read_l1(s, &hdr, l1_shift)?;

        let csize_shift = 62 - (cluster_bits - 8);
        let csize_mask = (1u64 << (cluster_bits - 8)) - 1;
        let coffset_mask = (1u64 << csize_shift) - 1;
        validate::validate(
            s,
            &validate::Tables {
                hdr: &hdr,
                l1: &l1,
                extended_l2,
                l1_shift,
                csize_shift,
                csize_mask,
                coffset_mask,
            },
        )?;

        let backing = match &hdr.backing_file {
            None => None,
            Some(b) => Some(backing::open_backing(
                &storage,
                ctx,
                b,
                hdr.backing_format.as_deref(),
            )?),
        };

        let l2_cap = (L2_CACHE_BYTES / cluster_size).max(16) as usize;
        let inflate_cap = (INFLATE_CACHE_BYTES / cluster_size).max(4) as usize;
        Ok(Qcow2 {
            storage,
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            version: hdr.version,
            size: hdr.size,
            cluster_bits,
            l1_shift,
            extended_l2,
            l1_offset: hdr.l1_table_offset,
            l1,
            l2_cache: Lru::new(l2_cap),
            inflate_cache: Lru::new(inflate_cap),
            csize_shift,
            csize_mask,
            coffset_mask,
            backing,
            warnings,
        })
    }

    fn name_str(&self) -> &str {
        self.storage.name()
    }

    fn cluster_size(&self) -> u64 {
        1 << self.cluster_bits
    }

    /// The L2 table for L1 index `i`, or `None` when it is not allocated.
    fn l2_table(&self, i: usize) -> Result<Option<Arc<[u64]>>> {
        let entry = self.l1[i];
        let off = entry & OFFSET_MASK;
        if off == 0 {
            return Ok(None);
        }
        let cs = self.cluster_size();
        let guest = (i as u64) << self.l1_shift;
        if off % cs != 0 {
            return Err(Error::corrupt(
                self.name_str(),
                format!(
                    "qcow2 L1 entry {i} (guest offset {guest}) points to an L2 table at host \
                     offset {off}, not aligned to the {cs}-byte cluster"
                ),
            ));
        }
        if let Some(t) = self.l2_cache.get(off) {
            return Ok(Some(t));
        }
        let l1_end = self.l1_offset + self.l1.len() as u64 * 8;
        if !self.l1.is_empty() && off < l1_end && off + cs > self.l1_offset {
            return Err(Error::corrupt(
                self.name_str(),
                format!(
                    "qcow2 L1 entry {i} (guest offset {guest}) points to an L2 table at host \
                     offset {off}, which overlaps the L1 table at {} (corrupt or crafted \
                     metadata)",
                    self.l1_offset
                ),
            ));
        }
        let flen = self.storage.len();
        if off.checked_add(cs).is_none_or(|e| e > flen) {
            return Err(Error::corrupt(
                self.name_str(),
                format!(
                    "qcow2 L1 entry {i} (guest offset {guest}) points to an L2 table at host \
                     offset {off}, past the end of the {flen}-byte file (truncated or corrupt)"
                ),
            ));
        }
        let raw = read_vec(self.storage.as_ref(), off, cs, cs, "qcow2 L2 table")?;
        let table: Arc<[u64]> = raw
            .chunks_exact(8)
            .map(|c| u64::from_be_bytes(c.try_into().expect("8 bytes")))
            .collect();
        self.l2_cache.insert(off, table.clone());
        Ok(Some(table))
    }

    /// Call `f(offset, length, piece)` for consecutive runs covering `[offset, end)`, which
    /// must lie inside the disk. Runs never cross a cluster (or, for an unallocated L2 table,
    /// an L2 span); callers merge neighbours.
    fn walk(
        &self,
        offset: u64,
        end: u64,
        mut f: impl FnMut(u64, u64, Piece) -> Result<()>,
    ) -> Result<()> {
        let cb = self.cluster_bits;
        let cs = self.cluster_size();
        let l2_mask = (1u64 << (self.l1_shift - cb)) - 1;
        let mut pos = offset;
        while pos < end {
            let l1i = (pos >> self.l1_shift) as usize;
            let span_end = ((l1i as u64 + 1) << self.l1_shift).min(end);
            let Some(table) = self.l2_table(l1i)? else {
                f(pos, span_end - pos, Piece::Unallocated)?;
                pos = span_end;
                continue;
            };
            while pos < span_end {
                let gc = pos >> cb;
                let cl_start = gc << cb;
                let cl_end = (cl_start + cs).min(span_end);
                let idx = (gc & l2_mask) as usize;
                if self.extended_l2 {
                    self.walk_extended(
                        table[2 * idx],
                        table[2 * idx + 1],
                        pos,
                        cl_start,
                        cl_end,
                        &mut f,
                    )?;
                } else {
                    let piece = self.classify(table[idx], pos, cl_start)?;
                    f(pos, cl_end - pos, piece)?;
                }
                pos = cl_end;
            }
        }
        Ok(())
    }

    /// The piece for a whole standard (non-extended) L2 entry, reading from `pos`.
    fn classify(&self, entry: u64, pos: u64, cl_start: u64) -> Result<Piece> {
        if entry & FLAG_COMPRESSED != 0 {
            return Ok(Piece::Compressed {
                entry,
                skip: pos - cl_start,
            });
        }
        let host = entry & OFFSET_MASK;
        if entry & FLAG_ZERO != 0 {
            if self.version < 3 {
                return Err(Error::corrupt(
                    self.name_str(),
                    format!(
                        "qcow2 version 2 image has a zero-cluster L2 entry for guest offset \
                         {cl_start} (zero clusters need version 3)"
                    ),
                ));
            }
            return Ok(Piece::Zero);
        }
        if host == 0 {
            return Ok(Piece::Unallocated);
        }
        self.check_data_offset(host, cl_start)?;
        Ok(Piece::Data(host + (pos - cl_start)))
    }

    fn check_data_offset(&self, host: u64, cl_start: u64) -> Result<()> {
        if host % self.cluster_size() != 0 {
            return Err(Error::corrupt(
                self.name_str(),
                format!(
                    "qcow2 L2 entry for guest offset {cl_start} points to host offset {host}, \
                     not aligned to the {}-byte cluster",
                    self.cluster_size()
                ),
            ));
        }
        Ok(())
    }

    /// Pieces of one cluster with an extended (128-bit) L2 entry: runs of subclusters with
    /// the same status.
    fn walk_extended(
        &self,
        entry: u64,
        bitmap: u64,
        pos: u64,
        cl_start: u64,
        cl_end: u64,
        f: &mut impl FnMut(u64, u64, Piece) -> Result<()>,
    ) -> Result<()> {
        if entry & FLAG_COMPRESSED != 0 {
            // Compressed clusters have no subclusters.
            return f(
                pos,
                cl_end - pos,
                Piece::Compressed {
                    entry,
                    skip: pos - cl_start,
                },
            );
        }
        let alloc = bitmap & 0xffff_ffff;
        let zero = bitmap >> 32;
        let host = entry & OFFSET_MASK;
        if alloc & zero != 0 {
            return Err(Error::corrupt(
                self.name_str(),
                format!(
                    "qcow2 extended L2 entry for guest offset {cl_start} marks subclusters both \
                     allocated and zero (bitmap 0x{bitmap:016x})"
                ),
            ));
        }
        if host == 0 && alloc != 0 {
            return Err(Error::corrupt(
                self.name_str(),
                format!(
                    "qcow2 extended L2 entry for guest offset {cl_start} marks subclusters \
                     allocated but has no host cluster"
                ),
            ));
        }
        if host != 0 {
            self.check_data_offset(host, cl_start)?;
        }
        let sc_bits = self.cluster_bits - 5;
        let status = |sc: u64| -> Piece {
            if alloc >> sc & 1 != 0 {
                Piece::Data(0)
            } else if zero >> sc & 1 != 0 {
                Piece::Zero
            } else {
                Piece::Unallocated
            }
        };
        let mut p = pos;
        while p < cl_end {
            let sc = (p - cl_start) >> sc_bits;
            let st = status(sc);
            let mut next = sc + 1;
            while next < SUBCLUSTERS && status(next) == st {
                next += 1;
            }
            let run_end = (cl_start + (next << sc_bits)).min(cl_end);
            let piece = match st {
                Piece::Data(_) => Piece::Data(host + (p - cl_start)),
                other => other,
            };
            f(p, run_end - p, piece)?;
            p = run_end;
        }
        Ok(())
    }

    /// Read `buf.len()` bytes of host data at `host` for guest offset `guest`.
    fn read_host(&self, buf: &mut [u8], host: u64, guest: u64) -> Result<()> {
        let flen = self.storage.len();
        let end = host.saturating_add(buf.len() as u64);
        // The last cluster may be semi-allocated (open checked that every cluster starts inside
        // the file): its part past the end of the file reads as zeros, as in qemu.
        if host >= flen || end - flen.min(end) >= self.cluster_size() {
            return Err(Error::corrupt(
                self.name_str(),
                format!(
                    "qcow2 guest offset {guest} maps to host offset {host} ({} bytes), past the \
                     end of the {flen}-byte file (truncated image or corrupt L2 table)",
                    buf.len()
                ),
            ));
        }
        let inside = (flen.min(end) - host) as usize;
        buf[inside..].fill(0);
        read_exact_at(self.storage.as_ref(), &mut buf[..inside], host)
    }

    /// Read guest bytes at `guest` that this image does not hold: from the backing file (zeros
    /// past its end), or zeros.
    fn read_unallocated(&self, buf: &mut [u8], guest: u64) -> Result<()> {
        match &self.backing {
            None => buf.fill(0),
            Some(b) => {
                let bsize = b.size();
                let in_backing = bsize.saturating_sub(guest).min(buf.len() as u64) as usize;
                if in_backing > 0 {
                    b.read_at(&mut buf[..in_backing], guest)?;
                }
                buf[in_backing..].fill(0);
            }
        }
        Ok(())
    }

    /// Host location and length of a compressed cluster's deflate stream.
    fn compressed_extent(&self, entry: u64, guest_cluster: u64) -> Result<(u64, usize)> {
        let host = entry & self.coffset_mask;
        let sectors = ((entry >> self.csize_shift) & self.csize_mask) + 1;
        // The descriptor counts 512-byte sectors from the one holding `host`; the field is at
        // most cluster_bits-8 bits wide, so this is at most two clusters.
        let len = sectors * 512 - (host & 511);
        let flen = self.storage.len();
        if host >= flen {
            return Err(Error::corrupt(
                self.name_str(),
                format!(
                    "qcow2 compressed cluster for guest offset {guest_cluster} starts at host \
                     offset {host}, past the end of the {flen}-byte file"
                ),
            ));
        }
        // The last sector may run past the end of the file (qemu reads it as zeros).
        Ok((host, len.min(flen - host) as usize))
    }

    /// Inflate the compressed cluster with L2 `entry` into `out` (exactly one cluster).
    /// `readahead` is how many host bytes are worth reading at once: qemu writes compressed
    /// clusters one after another, so the clusters that follow in one large read are usually
    /// found in the same window, and a read of many small compressed clusters costs a few
    /// `pread`s instead of one per cluster.
    fn inflate_cluster(
        &self,
        entry: u64,
        guest_cluster: u64,
        out: &mut [u8],
        readahead: u64,
    ) -> Result<()> {
        struct State {
            dec: Option<Decompressor>,
            /// Image id and host offset of `window`.
            owner: u64,
            start: u64,
            window: Vec<u8>,
        }
        thread_local! {
            static INFLATE: RefCell<State> = const {
                RefCell::new(State { dec: None, owner: 0, start: 0, window: Vec::new() })
            };
        }
        let (host, len) = self.compressed_extent(entry, guest_cluster)?;
        INFLATE.with(|cell| {
            let mut guard = cell.borrow_mut();
            let st = &mut *guard;
            let hit = st.owner == self.id
                && host >= st.start
                && host + len as u64 <= st.start + st.window.len() as u64;
            if !hit {
                let avail = self.storage.len() - host;
                let want = (len as u64).max(readahead.min(MAX_READAHEAD)).min(avail);
                st.owner = 0;
                st.window.resize(want as usize, 0);
                read_exact_at(self.storage.as_ref(), &mut st.window, host)?;
                st.owner = self.id;
                st.start = host;
            }
            let at = (host - st.start) as usize;
            let input = &st.window[at..at + len];
            let dec = st.dec.get_or_insert_with(Decompressor::new);
            let bad = |what: String| {
                Error::corrupt(
                    self.name_str(),
                    format!(
                        "qcow2 compressed cluster for guest offset {guest_cluster} (host offset \
                         {host}, {len} bytes): {what}"
                    ),
                )
            };
            // One whole-buffer inflate: the stream ends inside `input` (the rest of its last
            // sector is ignored) and must produce exactly one cluster.
            match dec.deflate_decompress(input, out) {
                Ok(n) if n == out.len() => {}
                Ok(n) => {
                    return Err(bad(format!(
                        "inflates to {n} bytes instead of a {}-byte cluster",
                        out.len()
                    )))
                }
                Err(DecompressionError::InsufficientSpace) => {
                    return Err(bad(format!(
                        "inflates to more than a {}-byte cluster",
                        out.len()
                    )))
                }
                Err(DecompressionError::BadData) => {
                    return Err(bad("corrupted or cut-short deflate stream".into()))
                }
            }
            Ok(())
        })
    }

    /// Copy `buf.len()` guest bytes starting `skip` bytes into the compressed cluster with L2
    /// `entry`.
    /// `readahead` as for [`Qcow2::inflate_cluster`].
    fn read_compressed(
        &self,
        buf: &mut [u8],
        entry: u64,
        skip: u64,
        guest: u64,
        readahead: u64,
    ) -> Result<()> {
        let cs = self.cluster_size();
        let cl_guest = guest - skip;
        if skip == 0 && buf.len() as u64 == cs {
            return self.inflate_cluster(entry, cl_guest, buf, readahead);
        }
        // Part of a cluster (the disk's last cluster, or a small read): keep the inflated
        // cluster so neighbouring small reads do not inflate it again.
        let cluster = match self.inflate_cache.get(entry) {
            Some(c) => c,
            None => {
                let mut v = vec![0u8; cs as usize];
                self.inflate_cluster(entry, cl_guest, &mut v, 0)?;
                let c: Arc<[u8]> = v.into();
                self.inflate_cache.insert(entry, c.clone());
                c
            }
        };
        let s = skip as usize;
        buf.copy_from_slice(&cluster[s..s + buf.len()]);
        Ok(())
    }
}

/// A run of guest bytes whose read is deferred so neighbours can be merged into one call.
enum Pending {
    None,
    /// (start in buf, host offset, length)
    Host(usize, u64, usize),
    /// (start in buf, length): unallocated, from the backing file or zeros
    Unallocated(usize, usize),
}

impl BlockDevice for Qcow2 {
    fn backing(&self) -> Option<String> {
        self.backing.as_ref().map(|b| b.name().to_string())
    }
    fn format(&self) -> Format {
        Format::Qcow2
    }

    fn subformat(&self) -> Option<String> {
        Some(if self.version == 2 {
            "v2".to_string()
        } else if self.extended_l2 {
            "v3 extended_l2".to_string()
        } else {
            "v3".to_string()
        })
    }

    fn size(&self) -> u64 {
        self.size
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        check_range(self.name_str(), offset, buf.len() as u64, self.size)?;
        let end = offset + buf.len() as u64;
        let mut pending = Pending::None;
        let flush = |buf: &mut [u8], p: &mut Pending| -> Result<()> {
            match std::mem::replace(p, Pending::None) {
                Pending::None => Ok(()),
                Pending::Host(at, host, len) => {
                    self.read_host(&mut buf[at..at + len], host, offset + at as u64)
                }
                Pending::Unallocated(at, len) => {
                    self.read_unallocated(&mut buf[at..at + len], offset + at as u64)
                }
            }
        };
        self.walk(offset, end, |pos, len, piece| {
            let at = (pos - offset) as usize;
            let n = len as usize;
            match piece {
                Piece::Data(host) => {
                    if let Pending::Host(pat, phost, plen) = &mut pending {
                        if *pat + *plen == at && *phost + *plen as u64 == host {
                            *plen += n;
                            return Ok(());
                        }
                    }
                    flush(buf, &mut pending)?;
                    pending = Pending::Host(at, host, n);
                }
                Piece::Unallocated => {
                    if let Pending::Unallocated(pat, plen) = &mut pending {
                        if *pat + *plen == at {
                            *plen += n;
                            return Ok(());
                        }
                    }
                    flush(buf, &mut pending)?;
                    pending = Pending::Unallocated(at, n);
                }
                Piece::Zero => {
                    flush(buf, &mut pending)?;
                    buf[at..at + n].fill(0);
                }
                Piece::Compressed { entry, skip } => {
                    flush(buf, &mut pending)?;
                    // The rest of this request is worth reading ahead for (compressed data is
                    // rarely larger than the guest bytes it holds).
                    let ahead = end - pos;
                    self.read_compressed(&mut buf[at..at + n], entry, skip, pos, ahead)?;
                }
            }
            Ok(())
        })?;
        flush(buf, &mut pending)
    }

    fn map(&self, offset: u64, len: u64) -> Result<Vec<Extent>> {
        let end = clip_end(offset, len, self.size);
        let mut out = Vec::new();
        if offset >= end {
            return Ok(out);
        }
        // Unallocated runs are collected and then resolved against the backing file in one
        // map call each.
        let mut unalloc: Option<(u64, u64)> = None;
        let resolve = |out: &mut Vec<Extent>, run: Option<(u64, u64)>| -> Result<()> {
            let Some((start, rlen)) = run else {
                return Ok(());
            };
            let Some(b) = &self.backing else {
                push_extent(out, start, rlen, ExtentKind::Unallocated);
                return Ok(());
            };
            let bend = (start + rlen).min(b.size());
            let mut pos = start;
            if start < bend {
                for e in b.map(start, bend - start)? {
                    // Trust but clip: the backing's map must stay inside the asked range.
                    let s = e.offset.max(pos);
                    let t = (e.offset + e.length).min(bend);
                    if t > s {
                        push_extent(out, pos, s - pos, ExtentKind::Unallocated);
                        push_extent(out, s, t - s, e.kind);
                        pos = t;
                    }
                }
            }
            push_extent(out, pos, start + rlen - pos, ExtentKind::Unallocated);
            Ok(())
        };
        self.walk(offset, end, |pos, l, piece| {
            let kind = match piece {
                Piece::Unallocated => {
                    match &mut unalloc {
                        Some((s, n)) if *s + *n == pos => *n += l,
                        _ => {
                            resolve(&mut out, unalloc.take())?;
                            unalloc = Some((pos, l));
                        }
                    }
                    return Ok(());
                }
                Piece::Data(_) | Piece::Compressed { .. } => ExtentKind::Data,
                Piece::Zero => ExtentKind::Zero,
            };
            resolve(&mut out, unalloc.take())?;
            push_extent(&mut out, pos, l, kind);
            Ok(())
        })?;
        resolve(&mut out, unalloc.take())?;
        Ok(out)
    }

    fn actual_size(&self) -> u64 {
        self.storage.allocated_size()
    }

    fn name(&self) -> &str {
        self.storage.name()
    }

    fn warnings(&self) -> Vec<String> {
        let mut w = self.warnings.clone();
        if let Some(b) = &self.backing {
            w.extend(
                b.warnings()
                    .into_iter()
                    .map(|x| format!("backing file {}: {x}", b.name())),
            );
        }
        w
    }

    fn granularity(&self) -> u64 {
        self.cluster_size()
    }

    fn files(&self) -> Vec<super::FileId> {
        let mut v: Vec<_> = self.storage.file_id().into_iter().collect();
        if let Some(b) = &self.backing {
            v.extend(b.files());
        }
        v
    }
}
