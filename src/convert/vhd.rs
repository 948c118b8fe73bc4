//! VHD writer: fixed and dynamic (`-o subformat=fixed|dynamic`, default dynamic as qemu-img).
//!
//! # Virtual size and CHS geometry
//!
//! A VHD footer carries both a CHS geometry and `current_size`. Virtual PC (and qemu-img for
//! images whose creator is not Hyper-V, disk2vhd, XenServer or "qem2") take the size from the
//! geometry; Hyper-V, Azure and disk2vhd take `current_size`. To make every reader agree, this
//! writer does what `qemu-img create -f vpc` does without `force_size`:
//!
//! - the geometry is computed with the algorithm of the VHD specification (appendix
//!   "CHS calculation"), trying successively larger sector counts until
//!   `cylinders × heads × sectors ≥` the source's size in sectors, i.e. the size is **rounded
//!   up** to the next size CHS can express, and `current_size` is set to exactly that CHS size.
//!   Both kinds of reader then report the same, possibly slightly larger, size; the excess
//!   reads as zeros (`qemu-img compare` says "Image size mismatch! Images are identical.").
//!   The rounding is at most one cylinder (≤ 16 × 255 sectors, about 2 MiB).
//! - when the size is beyond what CHS can express (65535 × 16 × 255 sectors, about 127 GiB),
//!   the geometry is set to that maximum and `current_size` is the source size rounded up to a
//!   sector, as qemu does; qemu-img then uses `current_size` because the geometry is the
//!   maximum, and Hyper-V-style readers use it anyway, so they agree again, without rounding.
//! - sizes over 2040 GiB (qemu's limit for VHD) are refused.
//!
//! We do not use qemu's `force_size` mode (creator "qem2", exact `current_size` with a smaller
//! geometry): readers that trust the geometry would then see a smaller disk and silently cut
//! off the end.
//!
//! The creator application is "imgc" (imgcheck), the creator host OS "Wi2k" as qemu writes.
//! Dynamic disks use 2 MiB blocks with a full sector bitmap (all sectors present), like
//! qemu-img and Hyper-V; blocks whose data is all zeros are not allocated. Timestamps and the
//! UUID honour `SOURCE_DATE_EPOCH` for reproducible output.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use super::output::Output;
use super::pipeline::{self, Chunk};
use super::raw::ZERO_GRAN;
use super::{ConvertOptions, ConvertStats};
use crate::error::{Error, Result};
use crate::image::BlockDevice;

/// Seconds between the Unix epoch and the VHD epoch (2000-01-01 00:00:00 UTC).
const VHD_EPOCH: u64 = 946_684_800;
/// 65535 × 16 × 255: the largest CHS geometry.
pub const MAX_CHS_SECTORS: u64 = 65535 * 16 * 255;
/// qemu's limit: 2040 GiB.
pub const MAX_SECTORS: u64 = 0xff00_0000;
/// Dynamic disk block size.
pub const BLOCK: u64 = 2 * 1024 * 1024;
const FOOTER: usize = 512;

/// CHS geometry for `total_sectors`, per the VHD specification's algorithm.
pub fn geometry(total_sectors: u64) -> (u16, u8, u8) {
    let total = total_sectors.min(MAX_CHS_SECTORS);
    let (spt, heads, cth);
    if total >= 65535 * 16 * 63 {
        spt = 255u64;
        heads = 16u64;
        cth = total / spt;
    } else {
        let mut s = 17u64;
        let mut c = total / s;
        let mut h = c.div_ceil(1024).max(4);
        if c >= h * 1024 || h > 16 {
            s = 31;
            h = 16;
            c = total / s;
        }
        if c >= h * 1024 {
            s = 63;
            h = 16;
            c = total / s;
        }
        spt = s;
        heads = h;
        cth = c;
    }
    ((cth / heads) as u16, heads as u8, spt as u8)
}

/// The geometry and the virtual size (bytes) a VHD of at least `size` bytes gets.
pub fn vhd_size(size: u64) -> Result<((u16, u8, u8), u64)> {
    let sectors = size.div_ceil(512);
    if sectors > MAX_SECTORS {
        return Err(Error::Other(format!(
            "a {size}-byte disk is larger than VHD allows (2040 GiB)"
        )));
    }
    let want = sectors.min(MAX_CHS_SECTORS);
    let mut geo = geometry(want);
    let mut i = 0;
    while chs(geo) < want {
        i += 1;
        geo = geometry(want + i);
    }
    if chs(geo) == MAX_CHS_SECTORS {
        Ok((geo, sectors * 512))
    } else {
        Ok((geo, chs(geo) * 512))
    }
}

fn chs(g: (u16, u8, u8)) -> u64 {
    g.0 as u64 * g.1 as u64 * g.2 as u64
}

fn checksum(b: &[u8]) -> u32 {
    !b.iter().fold(0u32, |a, &x| a.wrapping_add(x as u32))
}

/// The 512-byte footer.
fn footer(dynamic: bool, size: u64, geo: (u16, u8, u8), uuid: &[u8; 16]) -> [u8; FOOTER] {
    let mut f = [0u8; FOOTER];
    f[0..8].copy_from_slice(b"conectix");
    f[8..12].copy_from_slice(&2u32.to_be_bytes()); // features: reserved bit set
    f[12..16].copy_from_slice(&0x0001_0000u32.to_be_bytes());
    let data_offset: u64 = if dynamic { 512 } else { u64::MAX };
    f[16..24].copy_from_slice(&data_offset.to_be_bytes());
    let ts = super::timestamp().saturating_sub(VHD_EPOCH) as u32;
    f[24..28].copy_from_slice(&ts.to_be_bytes());
    f[28..32].copy_from_slice(b"imgc");
    f[32..36].copy_from_slice(&0x0001_0000u32.to_be_bytes());
    f[36..40].copy_from_slice(b"Wi2k");
    f[40..48].copy_from_slice(&size.to_be_bytes()); // original size
    f[48..56].copy_from_slice(&size.to_be_bytes()); // current size
    f[56..58].copy_from_slice(&geo.0.to_be_bytes());
    f[58] = geo.1;
    f[59] = geo.2;
    let disk_type: u32 = if dynamic { 3 } else { 2 };
    f[60..64].copy_from_slice(&disk_type.to_be_bytes());
    f[68..84].copy_from_slice(uuid);
    let c = checksum(&f);
    f[64..68].copy_from_slice(&c.to_be_bytes());
    f
}

/// The 1024-byte dynamic disk header.
fn dyn_header(bat_offset: u64, entries: u32) -> [u8; 1024] {
    let mut h = [0u8; 1024];
    h[0..8].copy_from_slice(b"cxsparse");
    h[8..16].copy_from_slice(&u64::MAX.to_be_bytes());
    h[16..24].copy_from_slice(&bat_offset.to_be_bytes());
    h[24..28].copy_from_slice(&0x0001_0000u32.to_be_bytes());
    h[28..32].copy_from_slice(&entries.to_be_bytes());
    h[32..36].copy_from_slice(&(BLOCK as u32).to_be_bytes());
    let c = checksum(&h);
    h[36..40].copy_from_slice(&c.to_be_bytes());
    h
}

/// Write `src` as a VHD at `dst`.
pub fn write(
    src: Arc<dyn BlockDevice>,
    dst: &Path,
    opts: &ConvertOptions,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<ConvertStats> {
    let dynamic = match opts.option("subformat") {
        None => true,
        Some(s) if s.eq_ignore_ascii_case("dynamic") => true,
        Some(s) if s.eq_ignore_ascii_case("fixed") => false,
        Some(s) => {
            return Err(Error::Other(format!(
                "-o subformat={s}: VHD subformats are fixed and dynamic"
            )))
        }
    };
    let (geo, size) = vhd_size(src.size()).map_err(|e| match e {
        Error::Other(m) => Error::Other(format!("{}: {m}", src.name())),
        e => e,
    })?;
    let uuid: [u8; 16] = super::unique_bytes(size);
    let out = Output::create(dst, opts)?;
    let foot = footer(dynamic, size, geo, &uuid);
    if !dynamic {
        out.set_len(size + FOOTER as u64)?;
        let (read, written) =
            super::raw::copy_sparse(src.as_ref(), &out, 0, size, opts.threads(), progress)?;
        out.write_at(&foot, size)?;
        out.commit()?;
        return Ok(ConvertStats {
            virtual_size: size,
            bytes_read: read,
            bytes_written: written,
        });
    }

    let entries = size.div_ceil(BLOCK);
    let bat_offset = 3 * 512u64;
    let bat_bytes = (entries * 4).div_ceil(512) * 512;
    let data_start = bat_offset + bat_bytes;
    let chunks = pipeline::plan(src.as_ref(), BLOCK, BLOCK, size)?;
    let read = AtomicU64::new(0);
    let written = AtomicU64::new(0);
    struct State {
        bat: Vec<u32>,
        next: u64,
    }
    let state = State {
        bat: vec![u32::MAX; entries as usize],
        next: data_start,
    };
    let bitmap = [0xffu8; 512];
    let state = pipeline::run_ordered(
        opts.threads(),
        &chunks,
        state,
        || (vec![0u8; BLOCK as usize], 0usize, false),
        |l: &mut (Vec<u8>, usize, bool), c: Chunk| {
            let b = &mut l.0[..c.len as usize];
            pipeline::read_padded(src.as_ref(), b, c.offset)?;
            read.fetch_add(c.len, Ordering::Relaxed);
            l.2 = !pipeline::is_zero(b);
            l.1 = c.len as usize;
            Ok(())
        },
        |s: &mut State, l: &(Vec<u8>, usize, bool), c: Chunk| {
            if !l.2 {
                return Ok(None);
            }
            let host = s.next;
            let sector = host / 512;
            if sector >= u32::MAX as u64 {
                return Err(Error::Other(format!(
                    "{}: VHD file would exceed the 2 TiB a block table can address",
                    dst.display()
                )));
            }
            s.bat[(c.offset / BLOCK) as usize] = sector as u32;
            s.next += 512 + BLOCK;
            Ok(Some(host))
        },
        |l: &(Vec<u8>, usize, bool), host: Option<u64>| {
            let Some(host) = host else { return Ok(()) };
            out.write_at(&bitmap, host)?;
            let b = &l.0[..l.1];
            // the chunk starts at its block's start (chunks are block-aligned)
            for (s, len) in pipeline::nonzero_runs(b, ZERO_GRAN) {
                out.write_at(&b[s..s + len], host + 512 + s as u64)?;
                written.fetch_add(len as u64, Ordering::Relaxed);
            }
            Ok(())
        },
        progress,
    )?;
    pipeline::credit_tail(&chunks, src.size(), progress);
    let mut bat = Vec::with_capacity(bat_bytes as usize);
    for e in &state.bat {
        bat.extend_from_slice(&e.to_be_bytes());
    }
    bat.resize(bat_bytes as usize, 0xff);
    out.write_at(&bat, bat_offset)?;
    out.write_at(&dyn_header(bat_offset, entries as u32), 512)?;
    out.write_at(&foot, 0)?;
    out.set_len(state.next + FOOTER as u64)?;
    out.write_at(&foot, state.next)?;
    out.commit()?;
    Ok(ConvertStats {
        virtual_size: size,
        bytes_read: read.into_inner(),
        bytes_written: written.into_inner(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn geometry_matches_the_spec_examples() {
        // 127 GiB-ish maximum
        assert_eq!(geometry(MAX_CHS_SECTORS), (65535, 16, 255));
        // small disk: 17 sectors per track, at least 4 heads
        let (c, h, s) = geometry(20480);
        assert_eq!((h, s), (4, 17));
        assert!(c as u64 * 4 * 17 <= 20480);
    }

    #[test]
    fn vhd_size_rounds_up_and_never_down() {
        for size in [
            1u64,
            512,
            5 << 20,
            (5 << 20) + 123,
            3 << 20,
            1 << 30,
            127 << 30,
        ] {
            let (geo, v) = vhd_size(size).unwrap();
            assert!(v >= size, "{size}");
            if chs(geo) != MAX_CHS_SECTORS {
                assert_eq!(v, chs(geo) * 512);
                assert!(v - size.div_ceil(512) * 512 <= 16 * 255 * 512);
            }
        }
        let (geo, v) = vhd_size(200 << 30).unwrap();
        assert_eq!(chs(geo), MAX_CHS_SECTORS);
        assert_eq!(v, 200 << 30);
        assert!(vhd_size(3 << 40).is_err());
    }
}
