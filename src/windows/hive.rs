//! A registry hive (regf) opened from bytes, with optional `.LOG1`/`.LOG2` transaction logs,
//! seen as a case-insensitive tree of keys and typed values.
//!
//! Parsing and log replay are done by the `notatin` crate. Around it this module adds:
//! - header checks and size caps before notatin sees the bytes (a clear error instead of
//!   whatever notatin makes of garbage);
//! - a check of every subkey list before notatin follows it: notatin follows `ri` index lists
//!   recursively, so an `ri` list pointing at itself would overflow the stack, which no
//!   `catch_unwind` can catch. Windows never nests `ri` lists, so an `ri` whose items point at
//!   another `ri` is refused. To check the bytes notatin will read, we keep our own copy of the
//!   hive with the transaction logs replayed by the same rules ([`marvin32`] hashes included);
//! - the same check refuses memory bombs notatin would build: `ri` fan-out beyond
//!   [`MAX_SUBKEYS`] entries (notatin trusts the lists, not the key's subkey count), and keys
//!   whose values claim more than [`MAX_KEY_DATA`] bytes or [`MAX_VALUES`] values (notatin copies
//!   and hashes every value's data when it reads a key);
//! - `catch_unwind` around every notatin call as a last line of defence: notatin indexes
//!   slices in places and may panic on crafted input; a panic becomes an [`Error::Corrupt`]
//!   (the default panic hook still prints it on stderr);
//! - key lookup one path segment at a time, taking the first matching subkey, refusing a
//!   subkey that is the key itself or a parent (cyclic lists), so no walk can run forever;
//! - memoised lookups and listings, since the analyses ask for the same keys repeatedly.
//!
//! Names compare case-insensitively as notatin does it (ASCII case folding).
//! notatin finds the root key as the first cell of the first hive bin (where Windows puts it).

use std::collections::HashMap;
use std::io::Cursor;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Mutex};

use notatin::cell_key_node::CellKeyNode;
use notatin::parser::Parser;
use notatin::parser_builder::ParserBuilder;
use serde::Serialize;

use crate::{Error, Result};

/// Largest primary hive accepted (the biggest real SOFTWARE hives are a few hundred MiB).
pub const MAX_HIVE_SIZE: usize = 512 << 20;
/// Largest transaction log accepted.
pub const MAX_LOG_SIZE: usize = 512 << 20;
/// Most subkeys listed for one key.
pub const MAX_SUBKEYS: u32 = 262_144;
/// Most segments in a key path (Windows' own limit is 512; nothing we read is deeper than 16).
pub const MAX_DEPTH: usize = 64;

const BASE_BLOCK: usize = 4096;
const HBIN_START: usize = 4096;

/// Typed registry data.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "type", content = "data", rename_all = "snake_case")]
pub enum RegData {
    None,
    Sz(String),
    ExpandSz(String),
    MultiSz(Vec<String>),
    Dword(u32),
    Qword(u64),
    Binary(Vec<u8>),
    /// Any other type (REG_LINK, resource lists, big-endian dword...): raw type and bytes.
    Other {
        type_id: u32,
        bytes: Vec<u8>,
    },
}

impl RegData {
    fn decode(type_id: u32, bytes: &[u8]) -> RegData {
        match type_id {
            0 if bytes.is_empty() => RegData::None,
            1 => RegData::Sz(utf16z(bytes)),
            2 => RegData::ExpandSz(utf16z(bytes)),
            3 => RegData::Binary(bytes.to_vec()),
            4 if bytes.len() >= 4 => {
                RegData::Dword(u32::from_le_bytes(bytes[..4].try_into().unwrap()))
            }
            7 => RegData::MultiSz(multi_sz(bytes)),
            11 if bytes.len() >= 8 => {
                RegData::Qword(u64::from_le_bytes(bytes[..8].try_into().unwrap()))
            }
            _ => RegData::Other {
                type_id,
                bytes: bytes.to_vec(),
            },
        }
    }

    /// The string of a REG_SZ or REG_EXPAND_SZ (unexpanded).
    pub fn as_str(&self) -> Option<&str> {
        match self {
            RegData::Sz(s) | RegData::ExpandSz(s) => Some(s),
            _ => None,
        }
    }

    /// A REG_DWORD, or a REG_QWORD that fits.
    pub fn as_u32(&self) -> Option<u32> {
        match self {
            RegData::Dword(v) => Some(*v),
            RegData::Qword(v) => u32::try_from(*v).ok(),
            _ => None,
        }
    }

    pub fn as_u64(&self) -> Option<u64> {
        match self {
            RegData::Dword(v) => Some(*v as u64),
            RegData::Qword(v) => Some(*v),
            _ => None,
        }
    }

    /// A REG_MULTI_SZ; a single REG_SZ/EXPAND_SZ is read as a one-element list (drivers
    /// sometimes write filter lists that way).
    pub fn as_multi(&self) -> Option<Vec<String>> {
        match self {
            RegData::MultiSz(v) => Some(v.clone()),
            RegData::Sz(s) | RegData::ExpandSz(s) if !s.is_empty() => Some(vec![s.clone()]),
            RegData::Sz(_) | RegData::ExpandSz(_) => Some(vec![]),
            _ => None,
        }
    }

    pub fn as_bytes(&self) -> Option<&[u8]> {
        match self {
            RegData::Binary(b) => Some(b),
            RegData::Other { bytes, .. } => Some(bytes),
            _ => None,
        }
    }
}

fn utf16_units(bytes: &[u8]) -> impl Iterator<Item = u16> + '_ {
    bytes
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
}

/// UTF-16LE up to the first NUL.
fn utf16z(bytes: &[u8]) -> String {
    let units: Vec<u16> = utf16_units(bytes).take_while(|&u| u != 0).collect();
    String::from_utf16_lossy(&units)
}

/// NUL-separated UTF-16LE strings, ending at an empty string (double NUL).
fn multi_sz(bytes: &[u8]) -> Vec<String> {
    let units: Vec<u16> = utf16_units(bytes).collect();
    let mut out = Vec::new();
    for part in units.split(|&u| u == 0) {
        if part.is_empty() {
            break;
        }
        out.push(String::from_utf16_lossy(part));
    }
    out
}

/// One value of a key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Value {
    /// Value name as stored ("" for the default value).
    pub name: String,
    pub data: RegData,
}

/// A key, with its values already read.
#[derive(Clone, Debug)]
pub struct Key {
    path: String,
    name: String,
    values: Vec<Value>,
    subkey_count: u32,
    node: CellKeyNode,
    /// File offsets of the keys from the root down to this one, to refuse cycles.
    chain: Arc<Vec<usize>>,
}

/// Registry names compare case-insensitively (Windows upcases; Unicode lowercase is close
/// enough for the names we look up).
pub fn name_eq(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.eq_ignore_ascii_case(b)
        || a.chars()
            .flat_map(char::to_lowercase)
            .eq(b.chars().flat_map(char::to_lowercase))
}

impl Key {
    fn from_node(node: CellKeyNode, path: String, chain: Arc<Vec<usize>>) -> Key {
        let values = node
            .value_iter()
            .map(|v| {
                let bytes = v.detail.value_bytes().unwrap_or_default();
                Value {
                    name: v.detail.value_name(),
                    data: RegData::decode(v.detail.data_type_raw(), &bytes),
                }
            })
            .collect();
        Key {
            name: node.key_name.clone(),
            subkey_count: node.detail.number_of_sub_keys(),
            path,
            values,
            node,
            chain,
        }
    }

    /// Path from the hive root, backslash-separated, in the hive's own spelling ("" for the root).
    pub fn path(&self) -> &str {
        &self.path
    }
    pub fn name(&self) -> &str {
        &self.name
    }
    pub fn values(&self) -> &[Value] {
        &self.values
    }
    /// Number of subkeys the key node claims.
    pub fn subkey_count(&self) -> u32 {
        self.subkey_count
    }
    /// A value by name, case-insensitively ("" is the default value).
    pub fn value(&self, name: &str) -> Option<&Value> {
        self.values.iter().find(|v| name_eq(&v.name, name))
    }
    pub fn data(&self, name: &str) -> Option<&RegData> {
        self.value(name).map(|v| &v.data)
    }
    /// REG_SZ / REG_EXPAND_SZ value.
    pub fn string(&self, name: &str) -> Option<String> {
        self.data(name).and_then(|d| d.as_str()).map(str::to_string)
    }
    /// REG_SZ / REG_EXPAND_SZ value, trimmed, or None when empty.
    pub fn nonempty_string(&self, name: &str) -> Option<String> {
        self.string(name)
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
    }
    pub fn dword(&self, name: &str) -> Option<u32> {
        self.data(name).and_then(RegData::as_u32)
    }
    pub fn qword(&self, name: &str) -> Option<u64> {
        self.data(name).and_then(RegData::as_u64)
    }
    pub fn multi_sz(&self, name: &str) -> Option<Vec<String>> {
        self.data(name).and_then(RegData::as_multi)
    }
    pub fn binary(&self, name: &str) -> Option<&[u8]> {
        self.data(name).and_then(RegData::as_bytes)
    }
    /// Path of a value of this key, for messages: `Key\Path\ValueName`.
    pub fn value_path(&self, value: &str) -> String {
        join(&self.path, value)
    }
}

/// Joins registry path segments with a backslash.
pub fn join(a: &str, b: &str) -> String {
    if a.is_empty() {
        b.to_string()
    } else if b.is_empty() {
        a.to_string()
    } else {
        format!("{a}\\{b}")
    }
}

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

/// A parsed hive.
pub struct Hive {
    name: String,
    parser: Mutex<Parser>,
    root: CellKeyNode,
    root_prefix_len: usize,
    replay: ReplayInfo,
    /// Our copy of the hive bytes after replay, to check subkey lists before notatin reads them
    /// (the primary's bytes themselves, shared with notatin's input, when nothing is replayed).
    mirror: Arc<Vec<u8>>,
    /// Memoised lookups and listings (analyses ask for the same keys repeatedly), bounded.
    keys: Mutex<HashMap<String, Option<Key>>>,
    lists: Mutex<HashMap<String, Arc<Vec<Key>>>>,
}

/// Most memoised lookups and listings per hive.
const CACHE_ENTRIES: usize = 4096;

/// Hive bytes shared between notatin's input cursor and our mirror.
struct Shared(Arc<Vec<u8>>);

impl AsRef<[u8]> for Shared {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl std::fmt::Debug for Hive {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hive")
            .field("name", &self.name)
            .field("replay", &self.replay)
            .finish()
    }
}

fn le32(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes(b[off..off + 4].try_into().unwrap())
}
fn le16(b: &[u8], off: usize) -> u16 {
    u16::from_le_bytes(b[off..off + 2].try_into().unwrap())
}

/// Runs a notatin call, turning a panic into an error naming the hive. Last line of defence:
/// the header checks and the `ri` pre-scan reject what we know makes notatin misbehave, but
/// notatin indexes slices directly in places and may still panic on crafted input.
fn guarded<T>(name: &str, what: &str, f: impl FnOnce() -> T) -> Result<T> {
    catch_unwind(AssertUnwindSafe(f)).map_err(|p| {
        let msg = p
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| p.downcast_ref::<String>().cloned())
            .unwrap_or_default();
        Error::corrupt(
            name,
            format!("malformed registry hive: the parser failed while {what} ({msg})"),
        )
    })
}

/// Checks the primary file's base block and first hive bin; returns (seq1, seq2, checksum ok).
fn check_primary(name: &str, b: &[u8]) -> Result<(u32, u32, bool)> {
    if b.len() > MAX_HIVE_SIZE {
        return Err(Error::refused(
            name,
            format!(
                "registry hive is {} bytes, more than the {} MiB accepted",
                b.len(),
                MAX_HIVE_SIZE >> 20
            ),
        ));
    }
    if b.len() < BASE_BLOCK + 32 {
        return Err(Error::corrupt(
            name,
            format!(
                "not a registry hive: {} bytes, too short for a base block and a hive bin",
                b.len()
            ),
        ));
    }
    if &b[..4] != b"regf" {
        return Err(Error::corrupt(
            name,
            "not a registry hive: no \"regf\" signature",
        ));
    }
    let file_type = le32(b, 28);
    if file_type != 0 {
        return Err(Error::corrupt(
            name,
            format!("registry file type {file_type} is not a primary hive (a transaction log given as the hive?)"),
        ));
    }
    let seq1 = le32(b, 4);
    let seq2 = le32(b, 8);
    let checksum = (0..127).fold(0u32, |x, i| x ^ le32(b, i * 4));
    let checksum = match checksum {
        0 => 1,
        0xFFFF_FFFF => 0xFFFF_FFFE,
        c => c,
    };
    let checksum_ok = checksum == le32(b, 508);
    let root = le32(b, 36) as usize;
    let bins = le32(b, 40) as usize;
    if bins % 4096 != 0 || bins == 0 {
        return Err(Error::corrupt(
            name,
            format!("registry hive: hive bins data size {bins} is not a non-zero multiple of 4096"),
        ));
    }
    if HBIN_START + bins > b.len() {
        return Err(Error::corrupt(
            name,
            format!(
                "registry hive is truncated: the header says {} bytes of hive bins, the file has {}",
                bins,
                b.len() - HBIN_START
            ),
        ));
    }
    if &b[HBIN_START..HBIN_START + 4] != b"hbin" {
        return Err(Error::corrupt(
            name,
            "registry hive: no \"hbin\" signature at offset 4096",
        ));
    }
    if root + 80 > bins {
        return Err(Error::corrupt(
            name,
            format!(
                "registry hive: root cell offset {root} is outside the {bins} bytes of hive bins"
            ),
        ));
    }
    Ok((seq1, seq2, checksum_ok))
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
struct LogEntry<'a> {
    sequence: u32,
    bins_size: u32,
    hashes_ok: bool,
    /// (hive-bins-relative offset, bytes)
    pages: Vec<(usize, &'a [u8])>,
}

/// A parsed new-format transaction log: its base block's primary and secondary sequence
/// numbers, and its entries.
type ParsedLog<'a> = (u32, u32, Vec<LogEntry<'a>>);

/// Parses a new-format transaction log.
/// Parsing stops at the first entry that does not parse (bounded by the log size).
fn parse_log(log: &[u8]) -> ParsedLog<'_> {
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
        if !complete {
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
fn mirror_replay(
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

/// Most values per key accepted (real keys have at most a few thousand).
pub const MAX_VALUES: usize = 65_536;
/// Most value data one key may claim (notatin copies every value's data when it reads a key).
pub const MAX_KEY_DATA: u64 = 64 << 20;

/// The cell at a hive-bins-relative offset, if inside the buffer.
fn cell_at(b: &[u8], rel: usize) -> Option<&[u8]> {
    b.get(HBIN_START.checked_add(rel)?..)
}

fn sig_at(b: &[u8], rel: usize) -> Option<[u8; 2]> {
    let c = cell_at(b, rel)?;
    Some([*c.get(4)?, *c.get(5)?])
}

/// A cell offset from a subkey list: notatin adds the hive bins' start (4096) to it in a u32,
/// which overflows (a panic in builds with overflow checks) for offsets this large; no hive
/// reaches them, so they are refused.
fn checked_offset(rel: u32) -> Result<usize, String> {
    if rel.checked_add(HBIN_START as u32).is_none() {
        return Err(format!(
            "its subkey list names a cell at offset {rel:#x}, beyond any hive's size"
        ));
    }
    Ok(rel as usize)
}

/// Subkey offsets of the list at `list` the way notatin reads it (an `ri` index of lf/lh/li
/// lists, or one lf/lh/li list), refusing nested `ri` indexes and more than [`MAX_SUBKEYS`]
/// entries in all (an `ri` of 65535 lists of 65535 entries would make notatin allocate
/// gigabytes, whatever the key node's subkey count says).
fn subkey_offsets(b: &[u8], list: usize) -> Result<Vec<usize>, String> {
    let leaf = |rel: usize, out: &mut Vec<usize>| -> Result<(), String> {
        let Some(c) = cell_at(b, rel) else {
            return Ok(());
        };
        let (Some(sig), Some(count)) = (c.get(4..6), c.get(6..8)) else {
            return Ok(());
        };
        let count = le16(count, 0) as usize;
        let step = match sig {
            b"lf" | b"lh" => 8,
            b"li" => 4,
            b"ri" => {
                return Err(format!(
                    "its ri subkey index points at another ri index at offset {} (nested or cyclic subkey lists)",
                    HBIN_START + rel
                ))
            }
            _ => return Ok(()),
        };
        if out.len() + count > MAX_SUBKEYS as usize {
            return Err(format!(
                "its subkey lists hold more than {MAX_SUBKEYS} entries"
            ));
        }
        for k in 0..count {
            let Some(e) = c.get(8 + step * k..12 + step * k) else {
                break;
            };
            out.push(checked_offset(le32(e, 0))?);
        }
        Ok(())
    };
    let mut out = Vec::new();
    if sig_at(b, list) == Some(*b"ri") {
        let c = cell_at(b, list).unwrap_or_default();
        let count = c.get(6..8).map(|x| le16(x, 0)).unwrap_or(0) as usize;
        for k in 0..count {
            let Some(e) = c.get(8 + 4 * k..12 + 4 * k) else {
                break;
            };
            leaf(checked_offset(le32(e, 0))?, &mut out)?;
        }
    } else {
        leaf(list, &mut out)?;
    }
    Ok(out)
}

/// Refuses a key node whose values notatin would turn into a memory bomb: more than
/// [`MAX_VALUES`] values, or more than [`MAX_KEY_DATA`] bytes of data claimed in all (value
/// lists may name the same big value many times).
fn check_values(b: &[u8], nk: usize) -> Result<(), String> {
    let Some(c) = cell_at(b, nk) else {
        return Ok(());
    };
    if c.get(4..6) != Some(b"nk") || c.len() < 48 {
        return Ok(());
    }
    let count = le32(c, 40) as usize;
    if count == 0 || count > 1024 * 1024 {
        return Ok(()); // notatin skips keys claiming more than 1M values
    }
    if count > MAX_VALUES {
        return Err(format!(
            "a subkey (cell at {}) claims {count} values, more than {MAX_VALUES}",
            HBIN_START + nk
        ));
    }
    let list = le32(c, 44) as usize;
    let Some(l) = cell_at(b, list) else {
        return Ok(());
    };
    let mut total = 0u64;
    for k in 0..count {
        let Some(e) = l.get(4 + 4 * k..8 + 4 * k) else {
            break;
        };
        let Some(vk) = cell_at(b, le32(e, 0) as usize) else {
            continue;
        };
        if vk.get(4..6) != Some(b"vk") || vk.len() < 12 {
            continue;
        }
        // What notatin copies: nothing for resident data; for big data (over 16344 bytes in a
        // "db" cell) up to 16344 bytes per segment; else the data if it lies inside the hive.
        let size = le32(vk, 8);
        if size & 0x8000_0000 == 0 {
            let data = le32(vk, 12) as usize;
            let size = size as u64;
            total += match cell_at(b, data) {
                Some(d) if size > 16344 && d.get(4..6) == Some(b"db") => {
                    let segments = d.get(6..8).map(|x| le16(x, 0)).unwrap_or(0) as u64;
                    size.min(segments * 16344)
                }
                Some(d) if size + 4 <= d.len() as u64 => size,
                _ => 0,
            };
        }
        if total > MAX_KEY_DATA {
            return Err(format!(
                "the values of a subkey (cell at {}) claim more than {} MiB of data",
                HBIN_START + nk,
                MAX_KEY_DATA >> 20
            ));
        }
    }
    Ok(())
}

/// Checks what notatin will read when it follows the subkey list at `list`: the list itself
/// ([`subkey_offsets`]) and each subkey's values ([`check_values`]).
fn check_subkeys(b: &[u8], list: usize) -> Result<(), String> {
    for nk in subkey_offsets(b, list)? {
        check_values(b, nk)?;
    }
    Ok(())
}

impl Hive {
    /// Opens a hive from the primary file's bytes and any transaction logs (`.LOG1`, `.LOG2`,
    /// in any order; empty ones are ignored). `name` names the hive in errors and messages.
    /// When the primary is dirty, notatin replays the logs' entries whose hashes and sequence
    /// numbers are valid; [`Hive::replay`] says what happened.
    pub fn open(name: &str, primary: &[u8], logs: &[&[u8]]) -> Result<Hive> {
        check_primary(name, primary)?;
        Self::open_vec(name, primary.to_vec(), logs)
    }

    /// [`Hive::open`] taking the primary's bytes by value (saves a copy of a big hive).
    pub fn open_vec(name: &str, primary: Vec<u8>, logs: &[&[u8]]) -> Result<Hive> {
        let (seq1, seq2, checksum_ok) = check_primary(name, &primary)?;
        let mut replay = ReplayInfo {
            primary_sequence: seq1,
            secondary_sequence: seq2,
            checksum_ok,
            dirty: seq1 != seq2 || !checksum_ok,
            ..Default::default()
        };
        let logs: Vec<&[u8]> = logs.iter().copied().filter(|l| !l.is_empty()).collect();
        let mut parsed = Vec::new();
        for log in &logs {
            if log.len() > MAX_LOG_SIZE {
                return Err(Error::refused(
                    name,
                    format!(
                        "transaction log is {} bytes, more than the {} MiB accepted",
                        log.len(),
                        MAX_LOG_SIZE >> 20
                    ),
                ));
            }
            if log.len() < 512 || &log[..4] != b"regf" {
                replay
                    .notes
                    .push("a transaction log without a regf base block was ignored".into());
                continue;
            }
            if log.len() >= 516 && &log[512..516] == b"DIRT" {
                replay.notes.push(
                    "a transaction log is in the old format (DIRT, Windows 8 and earlier): not replayed"
                        .into(),
                );
            }
            let parsed_log = parse_log(log);
            replay.log_entries += parsed_log.2.len();
            replay.log_dirty_pages += parsed_log.2.iter().map(|e| e.pages.len()).sum::<usize>();
            parsed.push(parsed_log);
        }
        replay.logs_supplied = logs.len();
        let primary = Arc::new(primary);
        let mut mirror_applied = 0;
        // Like notatin: with a bad base block checksum, the newest log's base block replaces
        // the primary's and only that log is used; replay happens only when that base block's
        // sequence numbers differ (in real logs they are equal, so such a hive is not replayed).
        let (eff_seq1, eff_seq2, used): (u32, u32, Vec<&ParsedLog>) = if checksum_ok {
            (seq1, seq2, parsed.iter().collect())
        } else if let Some(newest) = parsed.iter().max_by_key(|l| l.0) {
            (newest.0, newest.1, vec![newest])
        } else {
            (seq1, seq2, Vec::new())
        };
        let mirror = if replay.dirty && !used.is_empty() && eff_seq1 != eff_seq2 {
            let mut m = primary.to_vec();
            let (applied, changed) = mirror_replay(&mut m, eff_seq2, &used, MAX_HIVE_SIZE);
            mirror_applied = applied;
            replay.pages_changed = changed;
            replay.bytes_added = m.len().saturating_sub(primary.len());
            Arc::new(m)
        } else {
            primary.clone()
        };
        drop(parsed);

        let mut builder = ParserBuilder::from_file(Cursor::new(Shared(primary)));
        for log in &logs {
            if log.len() >= 512 && &log[..4] == b"regf" {
                builder.with_transaction_log(Cursor::new(log.to_vec()));
            }
        }
        let root_rel = le32(&mirror, 36) as usize;
        let root_first = root_rel == 0x20;
        // notatin reads the root's values (and those of the first cell) while opening.
        for nk in [root_rel, 0x20] {
            check_values(&mirror, nk).map_err(|msg| {
                Error::corrupt(
                    name,
                    format!(
                        "registry hive: root key: {}",
                        msg.replace("a subkey", "the key")
                    ),
                )
            })?;
        }
        let mut parser =
            guarded(name, "opening the hive", move || builder.build())?.map_err(|e| {
                // notatin reads the root key from the first cell of the first hive bin (where
                // Windows puts it), not from the base block's root cell offset.
                let hint = if root_first {
                    ""
                } else {
                    " (the root key is not the first cell of the first hive bin)"
                };
                Error::corrupt(name, format!("malformed registry hive: {e}{hint}"))
            })?;
        if let Some(notes) = parser.get_parse_logs().get() {
            for n in notes {
                // notatin writes this note even when no entry could be applied (then with
                // sequence number 0).
                if n.text.starts_with("Applied transaction log") {
                    let seq: Option<u32> = n
                        .text
                        .split("updated to ")
                        .nth(1)
                        .and_then(|s| s.split('.').next())
                        .and_then(|s| s.trim().parse().ok());
                    if let Some(seq) = seq.filter(|&s| s != 0) {
                        replay.logs_applied = true;
                        replay.sequence_after_replay = Some(seq);
                    }
                }
                replay.notes.push(n.text.clone());
            }
        }
        if replay.logs_applied != (mirror_applied > 0) {
            replay.notes.push(format!(
                "imgcheck's own replay rules applied {mirror_applied} log entries where notatin {} (structure checks may look at other bytes than notatin reads)",
                if replay.logs_applied { "applied some" } else { "applied none" }
            ));
        }
        let root = guarded(name, "reading the root key", || parser.get_root_key())?
            .map_err(|e| Error::corrupt(name, format!("malformed registry hive: root key: {e}")))?
            .ok_or_else(|| Error::corrupt(name, "registry hive: no root key"))?;
        let root_prefix_len = root.path.len();
        Ok(Hive {
            name: name.to_string(),
            parser: Mutex::new(parser),
            root,
            root_prefix_len,
            replay,
            mirror,
            keys: Mutex::new(HashMap::new()),
            lists: Mutex::new(HashMap::new()),
        })
    }

    /// Name given at open.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The base block state and what log replay did.
    pub fn replay(&self) -> &ReplayInfo {
        &self.replay
    }

    /// The root key's name (e.g. "ROOT", "CMI-CreateHive{...}").
    pub fn root_name(&self) -> &str {
        &self.root.key_name
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, Parser>> {
        self.parser.lock().map_err(|_| {
            Error::corrupt(
                &self.name,
                "registry hive unusable after an earlier parser failure",
            )
        })
    }

    /// Checks a key's subkey list and its subkeys' values before notatin reads them (see
    /// [`check_subkeys`]).
    fn check_list(&self, node: &CellKeyNode) -> Result<()> {
        if node.detail.number_of_sub_keys() == 0 {
            return Ok(());
        }
        check_subkeys(
            &self.mirror,
            node.detail.sub_keys_list_offset_relative() as usize,
        )
        .map_err(|msg| {
            Error::corrupt(
                &self.name,
                format!("registry key {:?}: {msg}", self.rel_path(node)),
            )
        })
    }

    fn rel_path(&self, node: &CellKeyNode) -> String {
        node.path
            .get(self.root_prefix_len..)
            .unwrap_or("")
            .trim_start_matches('\\')
            .to_string()
    }

    /// The root key.
    pub fn root(&self) -> Key {
        Key::from_node(
            self.root.clone(),
            String::new(),
            Arc::new(vec![self.root.file_offset_absolute]),
        )
    }

    /// A key by backslash-separated path from the root (case-insensitive; leading, trailing
    /// and doubled backslashes ignored). `Ok(None)` when it does not exist.
    pub fn key(&self, path: &str) -> Result<Option<Key>> {
        let norm = cache_key(path);
        if let Some(k) = self.keys.lock().ok().and_then(|c| c.get(&norm).cloned()) {
            return Ok(k);
        }
        let k = self.key_uncached(path)?;
        if let Ok(mut c) = self.keys.lock() {
            if c.len() < CACHE_ENTRIES {
                c.insert(norm, k.clone());
            }
        }
        Ok(k)
    }

    fn key_uncached(&self, path: &str) -> Result<Option<Key>> {
        let segments: Vec<&str> = path.split('\\').filter(|s| !s.is_empty()).collect();
        if segments.len() > MAX_DEPTH {
            return Err(Error::Other(format!(
                "{}: registry path {path:?} is deeper than {MAX_DEPTH} keys",
                self.name
            )));
        }
        let mut node = self.root.clone();
        let mut chain = vec![node.file_offset_absolute];
        let mut parser = self.lock()?;
        for seg in segments {
            self.check_list(&node)?;
            let next = guarded(&self.name, "looking up a key", || {
                node.get_sub_key_by_path(&mut parser, seg)
            })?;
            match next {
                Some(n) => {
                    self.check_cycle(&chain, &n, &self.rel_path(&node))?;
                    chain.push(n.file_offset_absolute);
                    node = n;
                }
                None => return Ok(None),
            }
        }
        drop(parser);
        let rel = self.rel_path(&node);
        Ok(Some(Key::from_node(node, rel, Arc::new(chain))))
    }

    /// Refuses a subkey that is the key itself or one of its parents.
    fn check_cycle(&self, chain: &[usize], child: &CellKeyNode, parent_path: &str) -> Result<()> {
        if chain.contains(&child.file_offset_absolute) {
            return Err(Error::corrupt(
                &self.name,
                format!(
                    "registry key {parent_path:?}: its subkey list names the key itself or one of its parents (cell at offset {}): cyclic subkey lists",
                    child.file_offset_absolute
                ),
            ));
        }
        Ok(())
    }

    fn child_key(&self, parent: &Key, n: CellKeyNode) -> Result<Key> {
        self.check_cycle(&parent.chain, &n, &parent.path)?;
        let mut chain = Vec::with_capacity(parent.chain.len() + 1);
        chain.extend_from_slice(&parent.chain);
        chain.push(n.file_offset_absolute);
        let rel = join(&parent.path, &n.key_name);
        Ok(Key::from_node(n, rel, Arc::new(chain)))
    }

    /// A direct subkey by name (case-insensitive).
    pub fn subkey(&self, key: &Key, name: &str) -> Result<Option<Key>> {
        if name.is_empty() || name.contains('\\') {
            return Ok(None);
        }
        self.check_list(&key.node)?;
        let mut node = key.node.clone();
        let mut parser = self.lock()?;
        let next = guarded(&self.name, "looking up a key", || {
            node.get_sub_key_by_path(&mut parser, name)
        })?;
        drop(parser);
        next.map(|n| self.child_key(key, n)).transpose()
    }

    /// All subkeys of a key, with their values. Errors when the key claims more than
    /// [`MAX_SUBKEYS`].
    pub fn subkeys(&self, key: &Key) -> Result<Vec<Key>> {
        if key.subkey_count == 0 {
            return Ok(Vec::new());
        }
        if key.subkey_count > MAX_SUBKEYS {
            return Err(Error::corrupt(
                &self.name,
                format!(
                    "registry key {:?} claims {} subkeys, more than the {} accepted",
                    key.path, key.subkey_count, MAX_SUBKEYS
                ),
            ));
        }
        self.check_list(&key.node)?;
        let mut node = key.node.clone();
        let mut parser = self.lock()?;
        let children = guarded(&self.name, "listing subkeys", || {
            node.read_sub_keys(&mut parser)
        })?;
        drop(parser);
        children
            .into_iter()
            .take(MAX_SUBKEYS as usize)
            .map(|n| self.child_key(key, n))
            .collect()
    }

    /// Subkeys of the key at `path` (memoised); empty when the key does not exist.
    pub fn subkeys_of(&self, path: &str) -> Result<Arc<Vec<Key>>> {
        let norm = cache_key(path);
        if let Some(l) = self.lists.lock().ok().and_then(|c| c.get(&norm).cloned()) {
            return Ok(l);
        }
        let l = Arc::new(match self.key(path)? {
            Some(k) => self.subkeys(&k)?,
            None => Vec::new(),
        });
        if let Ok(mut c) = self.lists.lock() {
            if c.len() < CACHE_ENTRIES {
                c.insert(norm, l.clone());
            }
        }
        Ok(l)
    }
}

/// Normalised memo key of a path: lowercase, no empty segments.
fn cache_key(path: &str) -> String {
    path.split('\\')
        .filter(|s| !s.is_empty())
        .map(|s| s.to_lowercase())
        .collect::<Vec<_>>()
        .join("\\")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_strings() {
        let s: Vec<u8> = "ab\0c\0\0"
            .encode_utf16()
            .flat_map(|u| u.to_le_bytes())
            .collect();
        assert_eq!(
            RegData::decode(7, &s),
            RegData::MultiSz(vec!["ab".into(), "c".into()])
        );
        assert_eq!(RegData::decode(1, &s), RegData::Sz("ab".into()));
        assert_eq!(RegData::decode(4, &[1, 0, 0, 0]), RegData::Dword(1));
        assert!(matches!(RegData::decode(4, &[1]), RegData::Other { .. }));
        assert!(name_eq("Services", "SERVICES"));
        assert!(!name_eq("vmbus", "vmbusr"));
    }

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
