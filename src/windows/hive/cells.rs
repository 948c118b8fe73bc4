//! Checks of the cells notatin is about to follow (subkey lists, value lists), on our own copy
//! of the hive bytes: what would overflow notatin's stack or make it allocate gigabytes.

use super::{le16, le32, HBIN_START, MAX_SUBKEYS};

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
pub(super) fn check_values(b: &[u8], nk: usize) -> Result<(), String> {
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
pub(super) fn check_subkeys(b: &[u8], list: usize) -> Result<(), String> {
    for nk in subkey_offsets(b, list)? {
        check_values(b, nk)?;
    }
    Ok(())
}
