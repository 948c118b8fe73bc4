//! qcow2 writer: version 3 (compat 1.1), 16-bit refcounts, no backing file.
//!
//! Layout (all offsets are decided in guest order, so output does not depend on `-j`):
//!
//! ```text
//! cluster 0            header (104 bytes + compression type, header-extension end marker)
//! L1 table             l1_size entries, sized for the virtual size
//! refcount table       sized for the refcount blocks below
//! refcount blocks      preallocated slots for an upper bound of the clusters the file can
//!                      use (computed from the source's allocation map, not its virtual size);
//!                      slots that turn out not to be needed stay unreferenced holes
//! data                 appended in guest order: each L2 table is allocated when its range is
//!                      first touched, then the data clusters (or compressed clusters, packed
//!                      at byte granularity like qemu-img) that follow
//! ```
//!
//! Only one L2 table and the refcount blocks of the current range are held in memory; a
//! refcount block is written as soon as the append point has passed its range.
//! All-zero clusters are not allocated (their L2 entry stays 0: unallocated, reads as zeros).
//!
//! Compressed clusters (`-c`) are raw deflate streams with a 4 KiB window (window bits −12),
//! which is what qemu's inflater accepts, at [`COMPRESSION_LEVEL`]; a cluster whose compressed
//! form is not smaller than the cluster is stored uncompressed, as qemu does. Clusters whose
//! every 4 KiB block measures as random ([`super::deflate::Deflater`]) are stored without the
//! attempt (they would come out larger anyway). The L2 descriptor follows docs/interop/qcow2.txt: bit 62 set, the host byte offset in bits
//! `0..x` and the number of additional 512-byte sectors in bits `x..62`, with
//! `x = 62 - (cluster_bits - 8)`; each host cluster touched by those sectors gets one
//! reference per compressed cluster, which is exactly how `qemu-img check` counts them.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use super::output::Output;
use super::pipeline::{self, Chunk, Src, WritePlan, CHUNK};
use super::{ConvertOptions, ConvertStats};
use crate::error::{Error, Result};
use crate::image::BlockDevice;

const QCOW_MAGIC: &[u8; 4] = b"QFI\xfb";
/// L2/L1 entry: refcount is exactly one.
const OFLAG_COPIED: u64 = 1 << 63;
/// L2 entry: compressed cluster.
const OFLAG_COMPRESSED: u64 = 1 << 62;
/// refcount_order 4: 16-bit refcounts.
const REFCOUNT_ORDER: u32 = 4;
/// Header length written (v3 header with the compression type byte, padded to 8).
const HEADER_LENGTH: u32 = 112;
/// Deflate level for zlib-rs. qemu deflates with zlib's default level 6; zlib-rs at 6 uses a
/// faster strategy whose output was 2.4-3.7 % larger than qemu-img's on the benchmark sources
/// (scripts/bench-sources), at 9 it is within 0.1 % (or smaller) and still takes less CPU than
/// qemu-img's zlib 6 (BENCHMARKS.md, "Compressed output size").
pub const COMPRESSION_LEVEL: u32 = 9;

/// Parse a size as qemu-img does: plain bytes, or a number with a k/M/G suffix (powers of 2).
pub fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let (num, mult) = match s.chars().last()? {
        'k' | 'K' => (&s[..s.len() - 1], 1u64 << 10),
        'm' | 'M' => (&s[..s.len() - 1], 1 << 20),
        'g' | 'G' => (&s[..s.len() - 1], 1 << 30),
        'b' | 'B' => (&s[..s.len() - 1], 1),
        _ => (s, 1),
    };
    num.trim().parse::<u64>().ok()?.checked_mul(mult)
}

/// The cluster size from `-o cluster_size=` (default 64 KiB).
fn cluster_size(opts: &ConvertOptions) -> Result<u64> {
    let Some(v) = opts.option("cluster_size") else {
        return Ok(64 * 1024);
    };
    match parse_size(v) {
        Some(cs) if cs.is_power_of_two() && (512..=2 * 1024 * 1024).contains(&cs) => Ok(cs),
        _ => Err(Error::Other(format!(
            "-o cluster_size={v}: must be a power of two between 512 and 2M"
        ))),
    }
}

/// What a worker found in one cluster of its chunk.
#[derive(Debug, Clone, Copy)]
enum Kind {
    Zero,
    /// Stored as is, from the read buffer.
    Plain,
    /// Compressed: `[start, start+len)` of the worker's compressed buffer.
    Compressed {
        start: usize,
        len: usize,
    },
}

/// One worker's scratch space.
type Local = pipeline::Scratch<Kind>;

/// The layout state, updated in guest order under the pipeline's lock.
struct Layout {
    cs: u64,
    bits: u32,
    l2_entries: u64,
    /// Append point (bytes).
    next: u64,
    l1: Vec<u64>,
    /// The L2 table being filled: (L1 index, host offset, entries).
    cur_l2: Option<(u64, u64, Vec<u64>)>,
    /// Refcounts of ranges not yet written: range index -> counts.
    open_refs: BTreeMap<u64, Vec<u16>>,
    /// Refcount entries per refcount block.
    per_rb: u64,
    /// Ranges up to this one hold metadata and are written at the end.
    meta_last_range: u64,
    /// Host offset of refcount block slot 0, and the number of slots.
    rb_base: u64,
    rb_slots: u64,
    written: u64,
}

impl Layout {
    fn inc(&mut self, from: u64, to: u64) -> Result<()> {
        // clusters [from, to)
        for c in from..to {
            let r = c / self.per_rb;
            let per_rb = self.per_rb as usize;
            let counts = self
                .open_refs
                .entry(r)
                .or_insert_with(|| vec![0u16; per_rb]);
            let e = &mut counts[(c % self.per_rb) as usize];
            *e = e.checked_add(1).ok_or_else(|| {
                Error::Other("qcow2 writer: refcount overflow (internal error)".into())
            })?;
        }
        Ok(())
    }

    fn alloc_cluster(&mut self) -> Result<u64> {
        let host = self.next.div_ceil(self.cs) * self.cs;
        self.next = host + self.cs;
        self.inc(host / self.cs, host / self.cs + 1)?;
        Ok(host)
    }

    /// Make the L2 table covering guest cluster `g` the current one.
    fn l2_for(&mut self, g: u64, plan: &mut WritePlan) -> Result<()> {
        let idx = g / self.l2_entries;
        if matches!(&self.cur_l2, Some((i, _, _)) if *i == idx) {
            return Ok(());
        }
        self.finish_l2(plan);
        let host = self.alloc_cluster()?;
        self.l1[idx as usize] = host | OFLAG_COPIED;
        self.cur_l2 = Some((idx, host, vec![0u64; self.l2_entries as usize]));
        Ok(())
    }

    fn finish_l2(&mut self, plan: &mut WritePlan) {
        if let Some((_, host, entries)) = self.cur_l2.take() {
            plan.meta.push((host, be64s(&entries)));
        }
    }

    fn set_l2(&mut self, g: u64, entry: u64) {
        let (_, _, entries) = self.cur_l2.as_mut().expect("l2_for called first");
        entries[(g % self.l2_entries) as usize] = entry;
    }

    /// Write out the refcount blocks of ranges the append point has left behind.
    fn flush_refs(&mut self, plan: &mut WritePlan, all: bool) -> Result<()> {
        let done_clusters = self.next / self.cs; // clusters fully before the append point
        let ranges: Vec<u64> = self.open_refs.keys().copied().collect();
        for r in ranges {
            let complete = (r + 1) * self.per_rb <= done_clusters;
            if all || (complete && r > self.meta_last_range) {
                if r >= self.rb_slots {
                    return Err(Error::Other(format!(
                        "qcow2 writer: refcount block {r} beyond the {} preallocated (internal error)",
                        self.rb_slots
                    )));
                }
                let counts = self.open_refs.remove(&r).unwrap();
                let mut bytes = Vec::with_capacity(counts.len() * 2);
                for c in counts {
                    bytes.extend_from_slice(&c.to_be_bytes());
                }
                plan.meta.push((self.rb_base + r * self.cs, bytes));
            }
        }
        Ok(())
    }

    fn compressed_entry(&self, host: u64, len: u64) -> u64 {
        let x = 62 - (self.bits - 8);
        let extra = ((host + len - 1) >> 9) - (host >> 9);
        OFLAG_COMPRESSED | (extra << x) | host
    }
}

fn be64s(v: &[u64]) -> Vec<u8> {
    let mut out = Vec::with_capacity(v.len() * 8);
    for x in v {
        out.extend_from_slice(&x.to_be_bytes());
    }
    out
}

/// Write `src` as a qcow2 v3 image at `dst`.
pub fn write(
    src: Arc<dyn BlockDevice>,
    dst: &Path,
    opts: &ConvertOptions,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<ConvertStats> {
    let cs = cluster_size(opts)?;
    if let Some(c) = opts.option("compat") {
        if !matches!(c, "1.1" | "v3") {
            return Err(Error::Other(format!(
                "-o compat={c}: only compat=1.1 (qcow2 version 3) is written"
            )));
        }
    }
    if let Some(t) = opts.option("compression_type") {
        if !t.eq_ignore_ascii_case("zlib") {
            return Err(Error::Other(format!(
                "-o compression_type={t}: only zlib (deflate) is written"
            )));
        }
    }
    let compress = opts.compress;
    let size = src.size().div_ceil(512) * 512;
    let bits = cs.trailing_zeros();
    let l2_entries = cs / 8;
    let l2_span = l2_entries * cs;
    let l1_size = size.div_ceil(l2_span);
    if l1_size > (32 << 20) / 8 {
        return Err(Error::Other(format!(
            "{}: a {size}-byte disk needs an L1 table larger than qemu accepts; use a larger \
             cluster_size",
            dst.display()
        )));
    }
    let chunk_len = cs.max(CHUNK);
    let chunks = pipeline::plan(src.as_ref(), cs, chunk_len, size)?;

    // Upper bound of the clusters the file will use, for the refcount structures.
    let n_data: u64 = chunks.iter().map(|c| c.len.div_ceil(cs)).sum();
    let mut n_l2 = 0u64;
    let mut last_l2 = u64::MAX;
    for c in &chunks {
        for i in c.offset / l2_span..=(c.end() - 1) / l2_span {
            if i != last_l2 {
                n_l2 += 1;
                last_l2 = i;
            }
        }
    }
    let l1_clusters = (l1_size * 8).div_ceil(cs).max(1);
    let per_rb = cs * 8 / (1 << REFCOUNT_ORDER);
    let (mut rb, mut rt) = (1u64, 1u64);
    loop {
        let total = 1 + l1_clusters + rt + rb + n_l2 + n_data + 2;
        let rb2 = total.div_ceil(per_rb);
        let rt2 = (rb2 * 8).div_ceil(cs);
        if rb2 <= rb && rt2 <= rt {
            break;
        }
        rb = rb.max(rb2);
        rt = rt.max(rt2);
    }
    let l1_off = cs;
    let rt_off = l1_off + l1_clusters * cs;
    let rb_base = rt_off + rt * cs;
    let data_start = rb_base + rb * cs;

    let out = Output::create(dst, opts)?;
    let mut layout = Layout {
        cs,
        bits,
        l2_entries,
        next: data_start,
        l1: vec![0u64; l1_size as usize],
        cur_l2: None,
        open_refs: BTreeMap::new(),
        per_rb,
        meta_last_range: (data_start / cs - 1) / per_rb,
        rb_base,
        rb_slots: rb,
        written: 0,
    };
    // header, L1 and refcount table; the refcount block slots are counted at the end.
    layout.inc(0, rt_off / cs + rt)?;

    let read = AtomicU64::new(0);
    let jobs = opts.threads();
    let clusters_per_chunk = (chunk_len / cs) as usize;
    let layout = pipeline::run_ordered(
        jobs,
        &chunks,
        layout,
        || Local {
            buf: vec![0u8; chunk_len as usize],
            comp: Vec::with_capacity(if compress {
                chunk_len as usize + cs as usize
            } else {
                0
            }),
            kinds: Vec::with_capacity(clusters_per_chunk),
            deflater: compress.then(|| super::deflate::Deflater::qcow2(COMPRESSION_LEVEL)),
        },
        |l: &mut Local, c: Chunk| {
            let n = c.len.div_ceil(cs) as usize;
            let buf = &mut l.buf[..n * cs as usize];
            pipeline::read_padded(src.as_ref(), buf, c.offset)?;
            read.fetch_add(c.len, Ordering::Relaxed);
            l.kinds.clear();
            l.comp.clear();
            for k in 0..n {
                let cl = &buf[k * cs as usize..(k + 1) * cs as usize];
                if pipeline::is_zero(cl) {
                    l.kinds.push(Kind::Zero);
                    continue;
                }
                let Some(d) = l.deflater.as_mut() else {
                    l.kinds.push(Kind::Plain);
                    continue;
                };
                let start = l.comp.len();
                if d.compress_if_smaller(cl, &mut l.comp, cs as usize)? {
                    let len = l.comp.len() - start;
                    l.kinds.push(Kind::Compressed { start, len });
                } else {
                    l.kinds.push(Kind::Plain);
                }
            }
            Ok(())
        },
        |lay: &mut Layout, l: &Local, c: Chunk| {
            let mut plan = WritePlan::default();
            let g0 = c.offset / cs;
            for (k, kind) in l.kinds.iter().enumerate() {
                let g = g0 + k as u64;
                match *kind {
                    Kind::Zero => continue,
                    Kind::Plain => {
                        lay.l2_for(g, &mut plan)?;
                        let host = lay.alloc_cluster()?;
                        lay.set_l2(g, host | OFLAG_COPIED);
                        plan.push(host, Src::Read, k * cs as usize, cs as usize);
                        lay.written += cs;
                    }
                    Kind::Compressed { start, len } => {
                        lay.l2_for(g, &mut plan)?;
                        let host = lay.next;
                        lay.next += len as u64;
                        let sectors_end = (host + len as u64).div_ceil(512) * 512;
                        lay.inc(host / cs, (sectors_end - 1) / cs + 1)?;
                        let entry = lay.compressed_entry(host, len as u64);
                        lay.set_l2(g, entry);
                        plan.push(host, Src::Comp, start, len);
                        lay.written += len as u64;
                    }
                }
            }
            lay.flush_refs(&mut plan, false)?;
            Ok(plan)
        },
        |l: &Local, plan: WritePlan| plan.execute(&out, &l.buf, &l.comp),
        progress,
    )?;
    pipeline::credit_tail(&chunks, src.size(), progress);
    let written = layout.written;
    finish(&out, layout, size, l1_off, rt_off, rt)?;
    out.commit()?;
    Ok(ConvertStats {
        virtual_size: size,
        bytes_read: read.into_inner(),
        bytes_written: written,
    })
}

/// Write the last L2 table, the refcount blocks, the refcount table, the L1 table and the
/// header.
fn finish(
    out: &Output,
    mut lay: Layout,
    size: u64,
    l1_off: u64,
    rt_off: u64,
    rt: u64,
) -> Result<()> {
    let mut plan = WritePlan::default();
    lay.finish_l2(&mut plan);
    let end = lay.next;
    let clusters = end.div_ceil(lay.cs);
    let needed = clusters.div_ceil(lay.per_rb);
    if needed > lay.rb_slots {
        return Err(Error::Other(format!(
            "qcow2 writer: {needed} refcount blocks needed, {} preallocated (internal error)",
            lay.rb_slots
        )));
    }
    let base_cluster = lay.rb_base / lay.cs;
    lay.inc(base_cluster, base_cluster + needed)?;
    lay.flush_refs(&mut plan, true)?;
    let mut reftable = vec![0u64; (rt * lay.cs / 8) as usize];
    for (r, e) in reftable.iter_mut().enumerate().take(needed as usize) {
        *e = lay.rb_base + r as u64 * lay.cs;
    }
    plan.meta.push((rt_off, be64s(&reftable)));
    plan.meta.push((l1_off, be64s(&lay.l1)));
    plan.execute(out, &[], &[])?;
    out.set_len(end.div_ceil(512) * 512)?;

    let mut h = vec![0u8; HEADER_LENGTH as usize + 8];
    h[0..4].copy_from_slice(QCOW_MAGIC);
    h[4..8].copy_from_slice(&3u32.to_be_bytes());
    // backing file offset/size: 0
    h[20..24].copy_from_slice(&lay.bits.to_be_bytes());
    h[24..32].copy_from_slice(&size.to_be_bytes());
    // crypt method 0
    h[36..40].copy_from_slice(&(lay.l1.len() as u32).to_be_bytes());
    h[40..48].copy_from_slice(&l1_off.to_be_bytes());
    h[48..56].copy_from_slice(&rt_off.to_be_bytes());
    h[56..60].copy_from_slice(&(rt as u32).to_be_bytes());
    // snapshots: none; incompatible/compatible/autoclear features: none
    h[96..100].copy_from_slice(&REFCOUNT_ORDER.to_be_bytes());
    h[100..104].copy_from_slice(&HEADER_LENGTH.to_be_bytes());
    // byte 104: compression type 0 (deflate); then the header-extension end marker (zeros)
    out.write_at(&h, 0)?;
    Ok(())
}
