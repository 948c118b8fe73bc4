//! Transaction log replay: what happened to the logs ([`ReplayInfo`]), the new-format (HvLE)
//! log parser and our mirror of notatin's replay rules, and the old-format (DIRT) replay that
//! notatin does not do.

use serde::Serialize;

use super::{le32, HBIN_START};

/// What happened to the transaction logs.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ReplayInfo {
    /// Primary sequence number from the primary file's base block.
    pub primary_sequence: u32,
    /// Secondary sequence number from the primary file's base block.
    pub secondary_sequence: u32,
    /// The base block checksum is right.
    pub checksum_ok: bool,
    /// The primary file was not written out completely (sequence numbers differ or bad checksum):
    /// the last changes are only in the logs.
    pub dirty: bool,
    /// Number of log files given.
    pub logs_supplied: usize,
    /// Number of new-format (HvLE) log entries found in the logs given.
    pub log_entries: usize,
    /// Number of dirty pages in those entries (what a replay could change).
    pub log_dirty_pages: usize,
    /// notatin replayed log entries onto the primary.
    pub logs_applied: bool,
    /// Dirty pages (4 KiB) whose bytes a replay changes. notatin itself cannot say which keys
    /// changed without its costly recover-deleted mode: to see what the replay changed in an
    /// analysis, open the primary alone as well and compare the results.
    pub pages_changed: usize,
    /// Bytes the replay adds to the hive (the hive grew).
    pub bytes_added: usize,
    /// Sequence number after replay.
    pub sequence_after_replay: Option<u32>,
    /// notatin's own notes about the base block and the logs (skipped entries, hash mismatches...).
    pub notes: Vec<String>,
}

/// Marvin32 (the hash of HvLE log entries), seeded; written from the published algorithm.
pub fn marvin32(seed: u64, data: &[u8]) -> u64 {
    let mut lo = seed as u32;
    let mut hi = (seed >> 32) as u32;
    fn mix(lo: &mut u32, hi: &mut u32) {
        *hi ^= *lo;
        *lo = lo.rotate_left(20).wrapping_add(*hi);
        *hi = hi.rotate_left(9) ^ *lo;
        *lo = lo.rotate_left(27).wrapping_add(*hi);
        *hi = hi.rotate_left(19);
    }
    let mut chunks = data.chunks_exact(4);
    for c in &mut chunks {
        lo = lo.wrapping_add(u32::from_le_bytes(c.try_into().unwrap()));
        mix(&mut lo, &mut hi);
    }
    let r = chunks.remainder();
    let fin = match r.len() {
        0 => 0x80,
        1 => 0x8000 | r[0] as u32,
        2 => 0x80_0000 | u16::from_le_bytes([r[0], r[1]]) as u32,
        _ => 0x8000_0000 | (r[2] as u32) << 16 | u16::from_le_bytes([r[0], r[1]]) as u32,
    };
    lo = lo.wrapping_add(fin);
    mix(&mut lo, &mut hi);
    mix(&mut lo, &mut hi);
    (lo as u64) | ((hi as u64) << 32)
}

/// Seed of the HvLE entry hashes.
pub const LOG_HASH_SEED: u64 = 0x82EF_4D88_7A4E_55C5;

/// One new-format (HvLE) log entry.
pub(super) struct LogEntry<'a> {
    sequence: u32,
    bins_size: u32,
    hashes_ok: bool,
    /// (hive-bins-relative offset, bytes)
    pub(super) pages: Vec<(usize, &'a [u8])>,
}

/// A parsed new-format transaction log: its base block's primary and secondary sequence
/// numbers, and its entries.
pub(super) type ParsedLog<'a> = (u32, u32, Vec<LogEntry<'a>>);

/// Parses a new-format transaction log.
/// Parsing stops at the first entry that does not parse (bounded by the log size).
/// Parsing also stops, as the patched notatin's replay does (vendor/notatin/PATCHES.md), at an
/// entry whose hive bins size exceeds the primary's (`primary_bins`) plus the log's length, or
/// that carries a page outside the hive bins it declares.
pub(super) fn parse_log(log: &[u8], primary_bins: usize) -> ParsedLog<'_> {
    let mut entries = Vec::new();
    let mut pos = 512usize;
    while pos + 40 <= log.len() {
        if &log[pos..pos + 4] != b"HvLE" {
            break;
        }
        let size = le32(log, pos + 4) as usize;
        let count = le32(log, pos + 20) as usize;
        if size < 40 || pos + size > log.len() || count > size / 8 || 40 + count * 8 > size {
            break;
        }
        let e = &log[pos..pos + size];
        let hash1 = u64::from_le_bytes(e[24..32].try_into().unwrap());
        let hash2 = u64::from_le_bytes(e[32..40].try_into().unwrap());
        let hashes_ok = marvin32(LOG_HASH_SEED, &e[40..]) == hash1
            && marvin32(LOG_HASH_SEED, &e[..32]) == hash2;
        let mut pages = Vec::new();
        let mut data = 40 + count * 8;
        let mut complete = true;
        for i in 0..count {
            let off = le32(e, 40 + i * 8) as usize;
            let len = le32(e, 44 + i * 8) as usize;
            if data + len > size {
                complete = false;
                break;
            }
            pages.push((off, &e[data..data + len]));
            data += len;
        }
        let bins = le32(e, 16) as usize;
        if !complete
            || bins > primary_bins.saturating_add(log.len())
            || pages
                .iter()
                .any(|(off, p)| off.saturating_add(p.len()) > bins)
        {
            break;
        }
        entries.push(LogEntry {
            sequence: le32(e, 12),
            bins_size: le32(e, 16),
            hashes_ok,
            pages,
        });
        pos += size;
    }
    (le32(log, 4), le32(log, 8), entries)
}

/// Builds our own copy of what notatin's replay produces, following the same rules (logs
/// oldest first; an entry is applied when its hashes are right, its sequence number is not
/// below the primary's secondary sequence number and follows the previous one; the hive grows
/// to the entry's hive bins size). Used to check subkey lists before notatin follows them.
/// Returns the number of entries applied and of dirty pages that changed bytes.
pub(super) fn mirror_replay(
    buf: &mut Vec<u8>,
    secondary: u32,
    logs: &[&ParsedLog],
    cap: usize,
) -> (usize, usize) {
    let mut order: Vec<&ParsedLog> = logs.to_vec();
    order.sort_by_key(|l| l.0);
    let mut last = 0u32;
    let mut applied = 0;
    let mut changed = 0;
    for (log_seq, _, entries) in order {
        if *log_seq < secondary || (last != 0 && *log_seq != last.wrapping_add(1)) {
            continue;
        }
        for e in entries {
            if !e.hashes_ok {
                break;
            }
            if e.sequence < secondary {
                continue;
            }
            if e.bins_size % 4096 != 0 || (last != 0 && e.sequence != last.wrapping_add(1)) {
                break;
            }
            let want = HBIN_START + e.bins_size as usize;
            if want > buf.len() && want <= cap {
                buf.resize(want, 0);
            }
            for (off, bytes) in &e.pages {
                let at = HBIN_START + off;
                if let Some(dst) = buf.get_mut(at..at + bytes.len()) {
                    if dst != *bytes {
                        changed += 1;
                        dst.copy_from_slice(bytes);
                    }
                }
            }
            last = e.sequence;
            applied += 1;
        }
    }
    (applied, changed)
}

/// The base block checksum: XOR of the first 127 dwords, with 0 and -1 mapped as Windows
/// maps them (to 1 and -2).
pub fn base_block_checksum(b: &[u8]) -> u32 {
    match (0..127).fold(0u32, |x, i| x ^ le32(b, i * 4)) {
        0 => 1,
        0xFFFF_FFFF => 0xFFFF_FFFE,
        c => c,
    }
}

/// An old-format (DIRT) log: a 512-byte partial base block, then at 512 "DIRT" and a bitmap of
/// dirty 512-byte pages of the hive bins data, then those pages from the next sector on.
pub(super) fn is_old_format(log: &[u8]) -> bool {
    log.len() >= 1024 && &log[..4] == b"regf" && &log[512..516] == b"DIRT"
}

/// What an old-format replay did.
pub(super) struct OldReplay {
    /// The hive after replay, with a clean base block.
    pub bytes: Vec<u8>,
    /// Dirty pages applied, and those among them whose bytes changed.
    pub pages: usize,
    pub changed: usize,
    pub sequence: u32,
}

/// `(hive-bins-relative offset, the page's bytes)` of each dirty page of a log.
type DirtyPages<'a> = Vec<(usize, &'a [u8])>;

/// Why an old-format log cannot be applied to `primary`, or its dirty pages as
/// `(bins size, [(hive-bins-relative offset, 512 bytes)])`.
fn old_log_pages<'a>(
    primary: &[u8],
    checksum_ok: bool,
    log: &'a [u8],
    cap: usize,
) -> Result<(usize, DirtyPages<'a>), String> {
    if base_block_checksum(log) != le32(log, 508) {
        return Err("its base block checksum is wrong".into());
    }
    let file_type = le32(log, 28);
    if file_type != 1 && file_type != 2 {
        return Err(format!(
            "its file type is {file_type}, not a transaction log"
        ));
    }
    if le32(log, 4) != le32(log, 8) {
        return Err(format!(
            "its sequence numbers differ ({} and {}): the log itself was not written completely",
            le32(log, 4),
            le32(log, 8)
        ));
    }
    // The log belongs to this state of the hive when its last-written timestamp is the
    // primary's (the first hive bin's when the primary's base block is bad).
    let stamp = if checksum_ok {
        &primary[12..20]
    } else {
        &primary[HBIN_START + 0x14..HBIN_START + 0x1C]
    };
    if &log[12..20] != stamp {
        return Err("its last-written timestamp is not the hive's: a stale log".into());
    }
    let bins = le32(log, 40) as usize;
    if bins == 0 || bins % 4096 != 0 || HBIN_START + bins > cap {
        return Err(format!("its hive bins data size {bins} is not usable"));
    }
    let bits = bins / 512;
    let bitmap = log
        .get(516..516 + bits.div_ceil(8))
        .ok_or("its dirty vector is cut short")?;
    let mut at = (516 + bitmap.len()).div_ceil(512) * 512;
    let mut pages = Vec::new();
    for bit in 0..bits {
        if bitmap[bit / 8] & (1 << (bit % 8)) != 0 {
            let page = log
                .get(at..at + 512)
                .ok_or_else(|| format!("its dirty page {} is cut short", pages.len()))?;
            pages.push((bit * 512, page));
            at += 512;
        }
    }
    Ok((bins, pages))
}

/// Replays the first applicable old-format log onto a dirty `primary`, as the format
/// specification describes it: the log's base block valid and its sequence numbers equal, its
/// last-written timestamp the hive's; dirty pages written at 4096 + 512·bit; each hive bin the
/// pages touch verified (signature, its own offset, a size of at least 4096) and the replay
/// stopped at the first that is not. Each log not applied gets a note saying why.
pub(super) fn old_format_replay(
    primary: &[u8],
    checksum_ok: bool,
    logs: &[&[u8]],
    cap: usize,
    notes: &mut Vec<String>,
) -> Option<OldReplay> {
    for (i, log) in logs.iter().enumerate() {
        if !is_old_format(log) {
            continue;
        }
        let (bins, pages) = match old_log_pages(primary, checksum_ok, log, cap) {
            Ok(p) => p,
            Err(why) => {
                notes.push(format!(
                    "old-format transaction log #{} not applied: {why}",
                    i + 1
                ));
                continue;
            }
        };
        let mut out = primary[..primary.len().min(HBIN_START + bins)].to_vec();
        out.resize(HBIN_START + bins, 0);
        let mut changed = 0;
        let mut applied = 0;
        // Verify the dirty bins as they will stand: apply, then walk the bins.
        let mut trial = out.clone();
        for (off, page) in &pages {
            trial[HBIN_START + off..HBIN_START + off + 512].copy_from_slice(page);
        }
        let stop = first_bad_dirty_bin(&trial, bins, &pages);
        if let Some(at) = stop {
            notes.push(format!(
                "old-format transaction log #{}: replay stopped at the hive bin at offset {:#x}, which is not valid after its dirty pages",
                i + 1,
                HBIN_START + at
            ));
        }
        for (off, page) in &pages {
            if stop.is_some_and(|s| *off >= s) {
                break;
            }
            let dst = &mut out[HBIN_START + off..HBIN_START + off + 512];
            if dst != *page {
                changed += 1;
                dst.copy_from_slice(page);
            }
            applied += 1;
        }
        // A clean base block: the primary's (the log's when the primary's is bad), its
        // sequence numbers equal, the log's hive bins size, the checksum recomputed.
        if !checksum_ok {
            out[..512].copy_from_slice(&log[..512]);
            out[28..32].copy_from_slice(&0u32.to_le_bytes());
        }
        let sequence = le32(&out, 4).max(le32(log, 4));
        out[4..8].copy_from_slice(&sequence.to_le_bytes());
        out[8..12].copy_from_slice(&sequence.to_le_bytes());
        out[40..44].copy_from_slice(&(bins as u32).to_le_bytes());
        let sum = base_block_checksum(&out);
        out[508..512].copy_from_slice(&sum.to_le_bytes());
        notes.push(format!(
            "old-format transaction log #{} applied: {applied} dirty pages of 512 bytes ({changed} changed bytes); sequence number now {sequence}",
            i + 1
        ));
        return Some(OldReplay {
            bytes: out,
            pages: applied,
            changed,
            sequence,
        });
    }
    None
}

/// The first hive bin (hive-bins-relative offset) that a dirty page touches and that is not a
/// valid bin once the pages are applied.
fn first_bad_dirty_bin(b: &[u8], bins: usize, pages: &[(usize, &[u8])]) -> Option<usize> {
    let mut pos = 0usize;
    let mut next_page = 0usize;
    while pos < bins {
        let h = &b[HBIN_START + pos..];
        let size = le32(h, 8) as usize;
        let valid = &h[..4] == b"hbin"
            && le32(h, 4) as usize == pos
            && size >= 4096
            && size % 4096 == 0
            && pos + size <= bins;
        let end = if valid { pos + size } else { pos + 4096 };
        while next_page < pages.len() && pages[next_page].0 < pos {
            next_page += 1;
        }
        let dirty = next_page < pages.len() && pages[next_page].0 < end;
        if dirty && !valid {
            return Some(pos);
        }
        if !valid {
            return None; // damage outside the dirty pages: the integrity walk reports it
        }
        pos = end;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marvin32_vectors() {
        // Published test vectors (dotnet MarvinTests).
        let seed = 0x004F_B61A_001B_DBCC;
        assert_eq!(marvin32(seed, &[]), 0x30ED35C100CD3C7D);
        assert_eq!(marvin32(seed, &[0xAF]), 0x48E73FC77D75DDC1);
        assert_eq!(marvin32(seed, &[0xE7, 0x0F]), 0xB5F6E1FC485DBFF8);
        assert_eq!(marvin32(seed, &[0x37, 0xF4, 0x95]), 0xF0B07C789B8CF7E8);
        assert_eq!(
            marvin32(seed, &[0x86, 0x42, 0xDC, 0x59]),
            0x7008F2E87E9CF556
        );
        let all: Vec<u8> = (0..=255).collect();
        assert_eq!(marvin32(seed, &all), 0x7DFCAB33FCEAD72C);
    }
}
