//! The check made when a qcow2 image is opened: the image holds its own tables and data.
//!
//! Every structure the image reads through is walked once — the refcount table and the
//! location of every refcount block, every L1 entry, every entry of every L2 table — and must
//! lie inside the file, at a cluster boundary where the format says so, and outside the other
//! metadata (header, L1 table, refcount table and blocks, L2 tables). The first entry that
//! does not is the error, naming the table, the entry and the host offsets. An image cut short
//! (an interrupted upload) or a single L2 entry pointing far past the end of the file is found
//! here, even in a region no check would ever read.
//!
//! The rule for "inside the file" is qemu-img check's: a referenced region may run past the
//! end of the file by less than one cluster (qemu leaves the last cluster of an image
//! semi-allocated; it reads as zeros), so a data cluster must start inside the file. Metadata
//! clusters must be whole.
//!
//! Cost: one read of the refcount table and one of each L2 table (streamed through one
//! cluster-sized buffer); memory: the sorted list of metadata clusters, at most the L1 table's
//! and refcount table's entries, both bounded by their size caps.

use super::header::{Header, MAX_L1_BYTES};
use super::{FLAG_COMPRESSED, OFFSET_MASK};
use crate::error::{Error, Result};
use crate::image::storage::{read_exact_at, read_vec, Storage};

/// qemu's limit on the refcount table (`QCOW_MAX_REFTABLE_SIZE`, 8 MiB).
pub const MAX_REFTABLE_BYTES: u64 = 8 << 20;
/// Bits 9-63 of a refcount table entry: the refcount block's host offset.
const REFTABLE_OFFSET_MASK: u64 = !0x1ff;

/// What the walk needs of an open image.
pub(super) struct Tables<'a> {
    pub hdr: &'a Header,
    /// The active L1 entries the virtual size needs.
    pub l1: &'a [u64],
    pub extended_l2: bool,
    /// log2 of the guest bytes one L2 table covers.
    pub l1_shift: u32,
    pub csize_shift: u32,
    pub csize_mask: u64,
    pub coffset_mask: u64,
}

/// Host ranges that hold metadata, which no other structure may share.
struct Metadata {
    /// (start, end, what): header, L1 table, refcount table.
    fixed: Vec<(u64, u64, &'static str)>,
    /// Sorted (cluster offset, what): refcount blocks and L2 tables.
    clusters: Vec<(u64, &'static str)>,
    cluster_size: u64,
}

impl Metadata {
    /// The metadata structure `[start, end)` overlaps, if any, as (its offset, what it is).
    fn overlap(&self, start: u64, end: u64) -> Option<(u64, &'static str)> {
        for &(s, e, what) in &self.fixed {
            if start < e && s < end {
                return Some((s, what));
            }
        }
        let first = start - start % self.cluster_size;
        let i = self.clusters.partition_point(|&(c, _)| c < first);
        self.clusters
            .get(i)
            .filter(|&&(c, _)| c < end)
            .map(|&(c, what)| (c, what))
    }
}

fn damaged(s: &dyn Storage, msg: String) -> Error {
    Error::corrupt(
        s.name(),
        format!("{msg}: the image is damaged (cut short, or its metadata is corrupt)"),
    )
}

/// Check the header's L1 fields (size, claimed entries, alignment) and read the active L1
/// entries the virtual size needs.
pub(super) fn read_l1(s: &dyn Storage, hdr: &Header, l1_shift: u32) -> Result<Vec<u64>> {
    let name = s.name();
    let cluster_size = hdr.cluster_size();
    if hdr.size > i64::MAX as u64 {
        return Err(Error::corrupt(
            name,
            format!(
                "qcow2 virtual size {} is absurd (over 2^63 bytes)",
                hdr.size
            ),
        ));
    }
    let l1_needed = hdr.size.div_ceil(1u64 << l1_shift);
    let l1_claimed = hdr.l1_size as u64 * 8;
    if l1_claimed > MAX_L1_BYTES {
        return Err(Error::corrupt(
            name,
            format!(
                "qcow2 L1 table claims {} entries ({l1_claimed} bytes), more than the \
                 {MAX_L1_BYTES}-byte limit",
                hdr.l1_size
            ),
        ));
    }
    if (hdr.l1_size as u64) < l1_needed {
        return Err(Error::corrupt(
            name,
            format!(
                "qcow2 L1 table has {} entries but the {}-byte virtual size needs {l1_needed} \
                 with {cluster_size}-byte clusters",
                hdr.l1_size, hdr.size
            ),
        ));
    }
    if hdr.l1_table_offset % cluster_size != 0 {
        return Err(Error::corrupt(
            name,
            format!(
                "qcow2 L1 table offset {} is not aligned to the {cluster_size}-byte cluster",
                hdr.l1_table_offset
            ),
        ));
    }
    Ok(if l1_needed == 0 {
        Vec::new()
    } else {
        if hdr.l1_table_offset == 0 {
            return Err(Error::corrupt(
                name,
                "qcow2 L1 table offset is 0 (it would overlap the header)",
            ));
        }
        read_vec(
            s,
            hdr.l1_table_offset,
            l1_needed * 8,
            MAX_L1_BYTES,
            "qcow2 L1 table",
        )
        .map_err(as_damage)?
        .chunks_exact(8)
        .map(|c| u64::from_be_bytes(c.try_into().expect("8 bytes")))
        .collect()
    })
}

/// `e`, a read of a table that failed because the table is not in the file, said to mean a
/// damaged image; other errors unchanged.
pub(super) fn as_damage(e: Error) -> Error {
    match e {
        Error::Corrupt { path, msg } => Error::Corrupt {
            path,
            msg: format!("{msg}: the image is damaged (cut short, or its header is corrupt)"),
        },
        other => other,
    }
}

/// Walk every table of the image in `s` (see the module doc).
pub(super) fn validate(s: &dyn Storage, t: &Tables) -> Result<()> {
    let cs = t.hdr.cluster_size();
    let refblocks = refcount_blocks(s, t.hdr)?;
    let l1_bytes = (t.l1.len() as u64 * 8).div_ceil(cs) * cs;
    let rt_bytes = u64::from(t.hdr.refcount_table_clusters) * cs;
    let mut meta = Metadata {
        fixed: vec![
            (0, cs, "the header cluster"),
            (
                t.hdr.l1_table_offset,
                t.hdr.l1_table_offset + l1_bytes,
                "the L1 table",
            ),
            (
                t.hdr.refcount_table_offset,
                t.hdr.refcount_table_offset + rt_bytes,
                "the refcount table",
            ),
        ],
        clusters: Vec::with_capacity(refblocks.len() + t.l1.len()),
        cluster_size: cs,
    };
    for &(i, off) in &refblocks {
        if let Some((at, what)) = meta.overlap(off, off + cs) {
            return Err(damaged(
                s,
                format!(
                    "qcow2 refcount table entry {i}: the refcount block at host offset {off} \
                     overlaps {what} at host offset {at}"
                ),
            ));
        }
        meta.clusters.push((off, "a refcount block"));
    }
    meta.clusters.sort_unstable();
    let l2s = l2_tables(s, t, &meta)?;
    meta.clusters
        .extend(l2s.iter().map(|&(_, off)| (off, "an L2 table")));
    meta.clusters.sort_unstable();
    let mut buf = vec![0u8; cs as usize];
    for &(i, off) in &l2s {
        read_exact_at(s, &mut buf, off)?;
        check_l2(s, t, &meta, i, off, &buf)?;
    }
    Ok(())
}

/// The refcount table's entries that name a refcount block, as (index, host offset), each
/// checked to be a whole, aligned cluster inside the file.
fn refcount_blocks(s: &dyn Storage, hdr: &Header) -> Result<Vec<(usize, u64)>> {
    let cs = hdr.cluster_size();
    let flen = s.len();
    let off = hdr.refcount_table_offset;
    let clusters = u64::from(hdr.refcount_table_clusters);
    if clusters == 0 {
        return Err(damaged(s, "qcow2 header names no refcount table".into()));
    }
    let len = clusters * cs;
    if len > MAX_REFTABLE_BYTES {
        return Err(damaged(
            s,
            format!(
                "qcow2 refcount table of {clusters} clusters ({len} bytes) is larger than the \
                 {MAX_REFTABLE_BYTES}-byte limit"
            ),
        ));
    }
    let problem = if off == 0 || off % cs != 0 {
        Some("is not at a cluster boundary after the header".to_string())
    } else if off.checked_add(len).is_none_or(|e| e > flen) {
        Some(format!("lies past the end of the {flen}-byte file"))
    } else {
        None
    };
    if let Some(p) = problem {
        return Err(damaged(
            s,
            format!("qcow2 refcount table ({len} bytes at host offset {off}) {p}"),
        ));
    }
    let raw = read_vec(s, off, len, MAX_REFTABLE_BYTES, "qcow2 refcount table")?;
    let mut out = Vec::new();
    for (i, c) in raw.chunks_exact(8).enumerate() {
        let e = u64::from_be_bytes(c.try_into().expect("8 bytes")) & REFTABLE_OFFSET_MASK;
        if e == 0 {
            continue;
        }
        if e % cs != 0 || e.checked_add(cs).is_none_or(|end| end > flen) {
            return Err(damaged(
                s,
                format!(
                    "qcow2 refcount table entry {i} (at host offset {}): the refcount block at \
                     host offset {e} is {} the {flen}-byte file",
                    off + 8 * i as u64,
                    if e % cs != 0 {
                        "not cluster-aligned in"
                    } else {
                        "past the end of"
                    }
                ),
            ));
        }
        out.push((i, e));
    }
    Ok(out)
}

/// The active L1 entries that name an L2 table, as (L1 index, host offset), each checked to be
/// a whole, aligned cluster inside the file and outside the other metadata.
fn l2_tables(s: &dyn Storage, t: &Tables, meta: &Metadata) -> Result<Vec<(usize, u64)>> {
    let cs = t.hdr.cluster_size();
    let flen = s.len();
    let mut out = Vec::with_capacity(t.l1.len().min((MAX_L1_BYTES / 8) as usize));
    for (i, &e) in t.l1.iter().enumerate() {
        let off = e & OFFSET_MASK;
        if off == 0 {
            continue;
        }
        let at = t.hdr.l1_table_offset + 8 * i as u64;
        let guest = (i as u64) << t.l1_shift;
        let problem = if off % cs != 0 {
            Some("is not aligned to a cluster".to_string())
        } else if off.checked_add(cs).is_none_or(|end| end > flen) {
            Some(format!("lies past the end of the {flen}-byte file"))
        } else {
            meta.overlap(off, off + cs)
                .map(|(o, what)| format!("overlaps {what} at host offset {o}"))
        };
        if let Some(p) = problem {
            return Err(damaged(
                s,
                format!(
                    "qcow2 L1 entry {i} (at host offset {at}, guest offset {guest}): the L2 \
                     table at host offset {off} {p}"
                ),
            ));
        }
        out.push((i, off));
    }
    Ok(out)
}

/// Check every entry of the L2 table for L1 index `l1i`, read from host offset `off`.
fn check_l2(
    s: &dyn Storage,
    t: &Tables,
    meta: &Metadata,
    l1i: usize,
    off: u64,
    table: &[u8],
) -> Result<()> {
    let cs = t.hdr.cluster_size();
    let flen = s.len();
    let stride = if t.extended_l2 { 16 } else { 8 };
    for (j, c) in table.chunks_exact(stride).enumerate() {
        let e = u64::from_be_bytes(c[..8].try_into().expect("8 bytes"));
        let (host, len, what) = if e & FLAG_COMPRESSED != 0 {
            let host = e & t.coffset_mask;
            let sectors = ((e >> t.csize_shift) & t.csize_mask) + 1;
            (host, sectors * 512 - (host & 511), "compressed cluster")
        } else {
            (e & OFFSET_MASK, cs, "data cluster")
        };
        if host == 0 {
            continue;
        }
        let problem = if what == "data cluster" && host % cs != 0 {
            Some("is not aligned to a cluster".to_string())
        } else if host.saturating_add(len).saturating_sub(flen) >= cs {
            Some(format!(
                "lies past the end of the {flen}-byte file (by {} bytes)",
                host.saturating_add(len) - flen
            ))
        } else {
            meta.overlap(host, host + len)
                .map(|(o, m)| format!("overlaps {m} at host offset {o}"))
        };
        if let Some(p) = problem {
            let guest = ((l1i as u64) << t.l1_shift) + j as u64 * cs;
            return Err(damaged(
                s,
                format!(
                    "qcow2 L2 table at host offset {off} (L1 entry {l1i}), entry {j} (at host \
                     offset {}, guest offset {guest}): the {what} at host offset {host} {p}",
                    off + (j * stride) as u64
                ),
            ));
        }
    }
    Ok(())
}
