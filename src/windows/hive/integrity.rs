//! Hive integrity: what of a hive can be trusted, found before any check reads it.
//!
//! notatin reads what it finds and drops what it cannot: a subkey list shorter than its key's
//! subkey count, a cell in a zeroed page or a hive bin whose header was overwritten simply
//! make keys and values vanish, and a check would then say "viostor is not installed" about a
//! damaged hive. So, on our copy of the hive bytes (after log replay), this module
//!
//! 1. walks the hive bins: each must have its signature, its own offset and a size that is a
//!    non-zero multiple of 4096 inside the hive bins data; the cells inside must have sizes that
//!    are non-zero multiples of 8 and end inside their bin. A bin that fails is damaged from
//!    the first bad byte to the next valid bin header;
//! 2. walks every key from the root (iteratively, each cell once, bounded): a key is damaged
//!    when its subkey list holds fewer (or more) entries than the key declares, when a list,
//!    a subkey, its value list, a value or a value's data lies outside the sound part of the
//!    hive, is a free cell or has the wrong signature.
//!
//! [`super::Hive`] then refuses, with an error naming the hive, the key and the offset, every
//! lookup that passes through a damaged key: a check that depends on the damaged part fails
//! with the reason, the others are unaffected. [`Damage`] says how much was lost.

use std::collections::{HashMap, HashSet};

use serde::Serialize;

use super::{le16, le32, HBIN_START, MAX_DEPTH};

/// Most keys walked (the largest real hives hold about a million).
pub const MAX_KEYS_WALKED: usize = 4 << 20;
/// Most damaged keys and bin ranges listed in [`Damage`] (all are still refused).
const MAX_LISTED: usize = 64;

/// A range of hive bins data that could not be read as bins and cells.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DamagedRange {
    /// File offset of the first damaged byte.
    pub offset: u64,
    /// Length of the damaged range.
    pub length: u64,
    pub reason: String,
}

/// A key whose subkeys or values cannot all be read.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DamagedKey {
    /// Path from the hive root.
    pub path: String,
    /// File offset of its key node cell.
    pub offset: u64,
    /// What is wrong.
    pub problem: String,
    /// Subkeys the key node declares.
    pub subkeys_declared: u32,
    /// Subkeys that could be read.
    pub subkeys_readable: u32,
}

/// What of the hive is damaged. Empty lists: the whole hive was walked and is sound.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Damage {
    /// Hive bin ranges that are not sound (the first [`MAX_LISTED`]).
    pub bins: Vec<DamagedRange>,
    /// Damaged keys (the first [`MAX_LISTED`]).
    pub keys: Vec<DamagedKey>,
    /// Damaged keys in all.
    pub damaged_keys: usize,
    /// Subkeys declared by damaged keys that could not be read (keys lost, at least: what lay
    /// below them is unknown).
    pub subkeys_lost: u64,
    /// Keys walked.
    pub keys_walked: usize,
}

impl Damage {
    /// Nothing damaged was found.
    pub fn is_empty(&self) -> bool {
        self.bins.is_empty() && self.damaged_keys == 0
    }

    /// One line for messages: how much is damaged.
    pub fn summary(&self) -> String {
        let mut parts = Vec::new();
        if let Some(b) = self.bins.first() {
            parts.push(format!(
                "{} damaged hive bin range(s), the first at offset {:#x} ({})",
                self.bins.len(),
                b.offset,
                b.reason
            ));
        }
        if self.damaged_keys > 0 {
            parts.push(format!(
                "{} key(s) with damaged subkey or value lists, {} subkey(s) lost",
                self.damaged_keys, self.subkeys_lost
            ));
        }
        parts.join("; ")
    }
}

/// The sound parts of the hive bins: `[start, end)` hive-bins-relative ranges where cells may
/// lie, sorted.
struct Sound(Vec<(usize, usize)>);

impl Sound {
    /// The cell at `rel`, when it lies in a sound range, is allocated and holds at least
    /// `min` bytes (its size field included).
    fn cell<'a>(&self, b: &'a [u8], rel: usize, min: usize) -> Result<&'a [u8], String> {
        let i = self.0.partition_point(|&(s, _)| s <= rel);
        let Some(&(s, e)) = i.checked_sub(1).and_then(|i| self.0.get(i)) else {
            return Err(format!(
                "cell at offset {:#x} is outside the sound hive bins",
                HBIN_START + rel
            ));
        };
        if rel < s || rel + 4 > e || rel % 8 != 0 {
            return Err(format!(
                "cell at offset {:#x} is outside the sound hive bins",
                HBIN_START + rel
            ));
        }
        let size = le32(b, HBIN_START + rel) as i32;
        if size >= 0 {
            return Err(format!(
                "cell at offset {:#x} is a free cell",
                HBIN_START + rel
            ));
        }
        let len = size.unsigned_abs() as usize;
        if len < min || rel + len > e {
            return Err(format!(
                "cell at offset {:#x} is {len} bytes, too short or past its hive bin",
                HBIN_START + rel
            ));
        }
        Ok(&b[HBIN_START + rel..HBIN_START + rel + len])
    }
}

/// Walks the hive bins `[HBIN_START, HBIN_START + bins)` of `b`.
fn walk_bins(b: &[u8], bins: usize, damage: &mut Vec<DamagedRange>) -> Sound {
    let end = bins.min(b.len().saturating_sub(HBIN_START)) / 4096 * 4096;
    let mut sound = Vec::new();
    let mut pos = 0usize;
    let mut bad: Option<(usize, String)> = None;
    let mut flush = |bad: &mut Option<(usize, String)>, upto: usize| {
        if let Some((from, reason)) = bad.take() {
            damage.push(DamagedRange {
                offset: (HBIN_START + from) as u64,
                length: (upto - from) as u64,
                reason,
            });
        }
    };
    while pos < end {
        let h = &b[HBIN_START + pos..];
        let size = le32(h, 8) as usize;
        let header = if &h[..4] != b"hbin" {
            Err("no hbin signature".to_string())
        } else if le32(h, 4) as usize != pos {
            Err(format!("its header gives offset {:#x}", le32(h, 4)))
        } else if size == 0 || size % 4096 != 0 || pos + size > end {
            Err(format!("its header gives size {size}"))
        } else {
            Ok(size)
        };
        let size = match header {
            Ok(size) => size,
            Err(reason) => {
                if bad.is_none() {
                    bad = Some((
                        pos,
                        format!("hive bin at offset {:#x}: {reason}", HBIN_START + pos),
                    ));
                }
                pos += 4096;
                continue;
            }
        };
        flush(&mut bad, pos);
        // Cells from the bin header's end to the bin's end.
        let mut c = pos + 32;
        let bin_end = pos + size;
        while c < bin_end {
            let len = (le32(b, HBIN_START + c) as i32).unsigned_abs() as usize;
            if len == 0 || len % 8 != 0 || c + len > bin_end {
                bad = Some((
                    c,
                    format!("cell at offset {:#x} has size {len}", HBIN_START + c),
                ));
                break;
            }
            c += len;
        }
        sound.push((pos + 32, c));
        if bad.is_some() {
            flush(&mut bad, bin_end);
        }
        pos = bin_end;
    }
    flush(&mut bad, end);
    Sound(sound)
}

/// Subkey list entries of the list cell at `list`: (entries found, problem).
fn list_entries(b: &[u8], s: &Sound, list: usize, out: &mut Vec<usize>) -> Result<(), String> {
    let leaf = |rel: usize, out: &mut Vec<usize>| -> Result<(), String> {
        let c = s.cell(b, rel, 8)?;
        let count = le16(c, 6) as usize;
        let step = match &c[4..6] {
            b"lf" | b"lh" => 8,
            b"li" => 4,
            b"ri" => {
                return Err(format!(
                    "the ri subkey index points at another ri index at offset {:#x} (nested or cyclic subkey lists)",
                    HBIN_START + rel
                ))
            }
            sig => {
                return Err(format!(
                    "subkey list at offset {:#x} has signature {:?}",
                    HBIN_START + rel,
                    String::from_utf8_lossy(sig)
                ))
            }
        };
        if 8 + count * step > c.len() {
            return Err(format!(
                "subkey list at offset {:#x} declares {count} entries, its cell holds {}",
                HBIN_START + rel,
                (c.len() - 8) / step
            ));
        }
        if out.len() + count > super::MAX_SUBKEYS as usize {
            return Err(format!(
                "its subkey lists hold more than {} entries",
                super::MAX_SUBKEYS
            ));
        }
        out.extend((0..count).map(|k| le32(c, 8 + k * step) as usize));
        Ok(())
    };
    let c = s.cell(b, list, 8)?;
    if &c[4..6] == b"ri" {
        let count = le16(c, 6) as usize;
        if 8 + count * 4 > c.len() {
            return Err(format!(
                "subkey index at offset {:#x} declares {count} lists, its cell holds {}",
                HBIN_START + list,
                (c.len() - 8) / 4
            ));
        }
        for k in 0..count {
            leaf(le32(c, 8 + 4 * k) as usize, out)?;
        }
        Ok(())
    } else {
        leaf(list, out)
    }
}

/// Checks a key's value list, its values and their data.
fn check_values(b: &[u8], s: &Sound, nk: &[u8]) -> Result<(), String> {
    let count = le32(nk, 40) as usize;
    if count == 0 {
        return Ok(());
    }
    if count > super::MAX_VALUES {
        return Err(format!("it declares {count} values"));
    }
    let list = s
        .cell(b, le32(nk, 44) as usize, 4 + 4 * count)
        .map_err(|e| format!("its value list: {e}"))?;
    for k in 0..count {
        let at = le32(list, 4 + 4 * k) as usize;
        let vk = s.cell(b, at, 24).map_err(|e| format!("value {k}: {e}"))?;
        if &vk[4..6] != b"vk" {
            return Err(format!(
                "value {k}: cell at offset {:#x} is not a value",
                HBIN_START + at
            ));
        }
        let size = le32(vk, 8);
        let len = (size & 0x7FFF_FFFF) as usize;
        if size & 0x8000_0000 != 0 || len == 0 {
            continue; // data stored in the value cell itself
        }
        let data = le32(vk, 12) as usize;
        let need = if len > 16344 { 8 } else { 4 + len };
        let d = s
            .cell(b, data, need)
            .map_err(|e| format!("the data of value {k}: {e}"))?;
        if len > 16344 && &d[4..6] == b"db" {
            let segments = le16(d, 6) as usize;
            let seglist = s
                .cell(b, le32(d, 8) as usize, 4 + 4 * segments)
                .map_err(|e| format!("the data segments of value {k}: {e}"))?;
            for i in 0..segments {
                s.cell(b, le32(seglist, 4 + 4 * i) as usize, 8)
                    .map_err(|e| format!("data segment {i} of value {k}: {e}"))?;
            }
        } else if len > 16344 && d.len() < 4 + len {
            return Err(format!("the data of value {k} is cut short"));
        }
    }
    Ok(())
}

/// The name of a key node cell.
fn key_name(nk: &[u8]) -> String {
    let len = le16(nk, 76) as usize;
    let Some(raw) = nk.get(80..80 + len) else {
        return "?".into();
    };
    if le16(nk, 6) & 0x20 != 0 {
        raw.iter().map(|&c| c as char).collect()
    } else {
        let u: Vec<u16> = raw
            .chunks_exact(2)
            .map(|p| u16::from_le_bytes([p[0], p[1]]))
            .collect();
        String::from_utf16_lossy(&u)
    }
}

/// What a walk found: the damage, and the key node cells (hive-bins-relative offsets) whose
/// subkeys, or whose values, cannot all be read, with a description.
pub(super) struct Scan {
    pub damage: Damage,
    pub lists: HashMap<usize, String>,
    pub values: HashMap<usize, String>,
}

/// Scans the hive bins data (`bins` bytes after the base block) and every key below `root`.
pub(super) fn scan(b: &[u8], bins: usize, root: usize) -> Scan {
    let mut damage = Damage::default();
    let sound = walk_bins(b, bins, &mut damage.bins);
    damage.bins.truncate(MAX_LISTED);
    let mut lists = HashMap::new();
    let mut values = HashMap::new();
    let mut seen = HashSet::new();
    let mut stack = vec![(root, String::new(), 0usize)];
    // `in_list`: the subkeys cannot all be read; `in_values`: the values cannot.
    let mut record = |damage: &mut Damage,
                      path: &str,
                      at: usize,
                      problem: String,
                      declared: u32,
                      readable: u32,
                      in_list: bool,
                      in_values: bool| {
        damage.damaged_keys += 1;
        damage.subkeys_lost += u64::from(declared.saturating_sub(readable));
        let shown = if path.is_empty() { "(root)" } else { path };
        let what = format!(
            "key {shown:?} (cell at offset {:#x}): {problem}",
            HBIN_START + at
        );
        if in_list {
            lists.insert(at, what.clone());
        }
        if in_values {
            values.insert(at, what);
        }
        if damage.keys.len() < MAX_LISTED {
            damage.keys.push(DamagedKey {
                path: path.to_string(),
                offset: (HBIN_START + at) as u64,
                problem,
                subkeys_declared: declared,
                subkeys_readable: readable,
            });
        }
    };
    while let Some((at, path, depth)) = stack.pop() {
        if damage.keys_walked >= MAX_KEYS_WALKED {
            // Keys past the cap were not checked: no lookup may trust the hive.
            let why = format!(
                "the hive has more than {MAX_KEYS_WALKED} keys; it was not checked completely"
            );
            record(&mut damage, "", root, why, 0, 0, true, false);
            break;
        }
        if !seen.insert(at) {
            continue;
        }
        damage.keys_walked += 1;
        let nk = match sound.cell(b, at, 80) {
            Ok(c) if &c[4..6] == b"nk" => c,
            Ok(_) => {
                record(
                    &mut damage,
                    &path,
                    at,
                    "the cell is not a key node".into(),
                    0,
                    0,
                    true,
                    true,
                );
                continue;
            }
            Err(e) => {
                record(&mut damage, &path, at, e, 0, 0, true, true);
                continue;
            }
        };
        let declared = le32(nk, 24);
        let mut problems = Vec::new();
        let mut readable = 0u32;
        if declared > 0 {
            let mut entries = Vec::new();
            if let Err(e) = list_entries(b, &sound, le32(nk, 32) as usize, &mut entries) {
                problems.push(format!("its subkey list: {e}"));
            }
            for &child in &entries {
                match sound.cell(b, child, 80) {
                    Ok(c) if &c[4..6] == b"nk" => {
                        readable += 1;
                        if depth < MAX_DEPTH * 8 {
                            stack.push((child, super::join(&path, &key_name(c)), depth + 1));
                        }
                    }
                    Ok(_) => problems.push(format!(
                        "subkey cell at offset {:#x} is not a key node",
                        HBIN_START + child
                    )),
                    Err(e) => problems.push(format!("a subkey: {e}")),
                }
            }
            if entries.len() != declared as usize {
                problems.insert(
                    0,
                    format!(
                        "it declares {declared} subkeys, its subkey list holds {}",
                        entries.len()
                    ),
                );
            }
        }
        let in_list = !problems.is_empty();
        let mut in_values = false;
        if let Err(e) = check_values(b, &sound, nk) {
            problems.push(e);
            in_values = true;
        }
        if !problems.is_empty() {
            problems.truncate(3);
            record(
                &mut damage,
                &path,
                at,
                problems.join("; "),
                declared,
                readable,
                in_list,
                in_values,
            );
        }
    }
    Scan {
        damage,
        lists,
        values,
    }
}
