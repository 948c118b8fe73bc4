//! Edit a registry hive (regf) in place, for offline repair.
//!
//! Only changes that fit inside the cells the hive already has are made, so the file keeps its
//! length and its hive bins, and the NTFS file holding it can be rewritten cluster for cluster:
//! - a REG_DWORD value is overwritten (it lives in the value's own cell);
//! - a REG_MULTI_SZ value is rewritten shorter (or as long) in its data cell;
//! - a key is deleted: it is unlinked from its parent's subkey list (lf, lh, li, or one level of
//!   ri) and the parent's subkey count lowered, and its cells (the key, its value list, values,
//!   value data, class name, subkey lists and subkeys) are freed as Windows frees them: the size
//!   made positive, merged with free neighbours in the same bin; its security descriptor's
//!   reference count is lowered (and the descriptor unlinked and freed at zero).
//!
//! Every key changed gets a new last-written time; [`HiveEditor::finish`] makes the base block
//! clean and consistent: both sequence numbers equal and above every transaction log's, so a log
//! left beside the hive is never replayed over the edit, a new timestamp and checksum.
//!
//! The editor works on the bytes of a clean hive (dirty ones are replayed first, by
//! [`crate::windows::hive`]); every offset it follows is checked against the hive's bins, and
//! anything it does not expect (a big-data value where a DWORD should be, an `ri` inside an `ri`,
//! a value that would need a larger cell) is refused with an error naming the key: a repair is
//! never half made or guessed. The format is msuhanov/regf's specification.

use crate::error::{Error, Result};

const BASE: usize = 4096;
const NO_CELL: u32 = 0xFFFF_FFFF;
const KEY_COMP_NAME: u16 = 0x0020;
const VALUE_COMP_NAME: u16 = 0x0001;
const DATA_INLINE: u32 = 0x8000_0000;
const REG_DWORD: u32 = 4;
const REG_MULTI_SZ: u32 = 7;
/// Largest value data stored in one cell (larger is a "db" big-data record).
const MAX_CELL_DATA: u32 = 16344;
/// Deepest key tree deleted (StartOverride has none; a bound for hostile hives).
const MAX_DELETE_DEPTH: usize = 16;

/// An open hive being edited.
pub struct HiveEditor {
    name: String,
    bytes: Vec<u8>,
    /// Offsets (relative to the first bin) of keys whose last-written time must be refreshed.
    touched: Vec<u32>,
}

/// A key found by [`HiveEditor::key`]: its cell offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyCell(pub u32);

fn le16(b: &[u8], o: usize) -> u16 {
    u16::from_le_bytes([b[o], b[o + 1]])
}
fn le32(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes(b[o..o + 4].try_into().unwrap())
}
fn put32(b: &mut [u8], o: usize, v: u32) {
    b[o..o + 4].copy_from_slice(&v.to_le_bytes());
}

/// The checksum of a base block (one implementation, in the hive reader).
pub use crate::windows::hive::base_block_checksum;

/// Compare a stored name with `want` as Windows does for ASCII (case-insensitive).
fn name_matches(stored: &str, want: &str) -> bool {
    stored.eq_ignore_ascii_case(want)
}

impl HiveEditor {
    /// Start editing `bytes`, a hive that must be clean (equal sequence numbers) and whose base
    /// block must be valid.
    pub fn new(name: &str, bytes: Vec<u8>) -> Result<Self> {
        let bad = |m: String| Error::corrupt(name, m);
        if bytes.len() < BASE + 32 || &bytes[..4] != b"regf" {
            return Err(bad("not a registry hive (no regf base block)".into()));
        }
        if le32(&bytes, 508) != base_block_checksum(&bytes) {
            return Err(bad(
                "the base block's checksum is wrong; refusing to edit".into()
            ));
        }
        if le32(&bytes, 4) != le32(&bytes, 8) {
            return Err(Error::refused(
                name,
                "the hive is dirty (its sequence numbers differ): bring it up to date from its \
                 transaction logs before editing",
            ));
        }
        let data = le32(&bytes, 40) as usize;
        if BASE + data > bytes.len() {
            return Err(bad(format!(
                "its bins claim {data} bytes but the file holds {}",
                bytes.len() - BASE
            )));
        }
        Ok(HiveEditor {
            name: name.to_string(),
            bytes,
            touched: Vec::new(),
        })
    }

    fn err(&self, m: impl Into<String>) -> Error {
        Error::corrupt(&self.name, m.into())
    }

    /// End of the hive bins, relative to the first bin.
    fn bins_len(&self) -> u32 {
        le32(&self.bytes, 40)
    }

    /// Absolute position of the data of the allocated cell at `off`, and its capacity; checked
    /// to lie inside one bin.
    fn cell(&self, off: u32, what: &str) -> Result<(usize, usize)> {
        if off == NO_CELL || off % 8 != 0 || off.saturating_add(4) > self.bins_len() {
            return Err(self.err(format!(
                "{what}: cell offset {off:#x} is outside the hive bins"
            )));
        }
        let pos = BASE + off as usize;
        let size = le32(&self.bytes, pos) as i32;
        if size >= 0 {
            return Err(self.err(format!("{what}: cell {off:#x} is free, not allocated")));
        }
        let size = size.unsigned_abs() as usize;
        if size < 8 || pos + size > BASE + self.bins_len() as usize {
            return Err(self.err(format!("{what}: cell {off:#x} claims {size} bytes")));
        }
        Ok((pos + 4, size - 4))
    }

    /// The data of the cell at `off`, at least `need` bytes long.
    fn cell_data(&self, off: u32, need: usize, what: &str) -> Result<usize> {
        let (pos, cap) = self.cell(off, what)?;
        if cap < need {
            return Err(self.err(format!(
                "{what}: cell {off:#x} holds {cap} bytes, fewer than the {need} it needs"
            )));
        }
        Ok(pos)
    }

    fn nk(&self, off: u32, what: &str) -> Result<usize> {
        let p = self.cell_data(off, 76, what)?;
        if &self.bytes[p..p + 2] != b"nk" {
            return Err(self.err(format!("{what}: cell {off:#x} is not a key (nk)")));
        }
        let name_len = le16(&self.bytes, p + 72) as usize;
        self.cell_data(off, 76 + name_len, what)?;
        Ok(p)
    }

    fn key_name(&self, p: usize) -> String {
        let len = le16(&self.bytes, p + 72) as usize;
        let raw = &self.bytes[p + 76..p + 76 + len];
        if le16(&self.bytes, p + 2) & KEY_COMP_NAME != 0 {
            raw.iter().map(|&c| c as char).collect()
        } else {
            let u: Vec<u16> = raw
                .chunks_exact(2)
                .map(|c| u16::from_le_bytes([c[0], c[1]]))
                .collect();
            String::from_utf16_lossy(&u)
        }
    }

    /// The root key.
    pub fn root(&self) -> Result<KeyCell> {
        let off = le32(&self.bytes, 36);
        self.nk(off, "the root key")?;
        Ok(KeyCell(off))
    }

    /// The subkey offsets listed by the list cell `list` (one level of `ri` followed).
    fn list_entries(&self, list: u32, what: &str) -> Result<Vec<u32>> {
        let p = self.cell_data(list, 4, what)?;
        let sig = [self.bytes[p], self.bytes[p + 1]];
        let n = le16(&self.bytes, p + 2) as usize;
        let (step, ri) = match &sig {
            b"lf" | b"lh" => (8, false),
            b"li" => (4, false),
            b"ri" => (4, true),
            _ => return Err(self.err(format!("{what}: cell {list:#x} is not a subkey list"))),
        };
        self.cell_data(list, 4 + n * step, what)?;
        let mut out = Vec::new();
        for i in 0..n {
            let e = le32(&self.bytes, p + 4 + i * step);
            if ri {
                let q = self.cell_data(e, 4, what)?;
                if &self.bytes[q..q + 2] == b"ri" {
                    return Err(self.err(format!("{what}: an ri list inside an ri list")));
                }
                out.extend(self.list_entries(e, what)?);
            } else {
                out.push(e);
            }
        }
        Ok(out)
    }

    fn subkeys(&self, key: KeyCell, what: &str) -> Result<Vec<u32>> {
        let p = self.nk(key.0, what)?;
        let count = le32(&self.bytes, p + 20);
        if count == 0 {
            return Ok(Vec::new());
        }
        let list = le32(&self.bytes, p + 28);
        let v = self.list_entries(list, what)?;
        if v.len() != count as usize {
            return Err(self.err(format!(
                "{what}: the key declares {count} subkeys but its list holds {}",
                v.len()
            )));
        }
        Ok(v)
    }

    /// The subkey `name` of `key`.
    pub fn subkey(&self, key: KeyCell, name: &str) -> Result<Option<KeyCell>> {
        for off in self.subkeys(key, name)? {
            let p = self.nk(off, name)?;
            if name_matches(&self.key_name(p), name) {
                return Ok(Some(KeyCell(off)));
            }
        }
        Ok(None)
    }

    /// The key at `path` (backslash-separated, below the root; case-insensitive).
    pub fn key(&self, path: &str) -> Result<Option<KeyCell>> {
        let mut k = self.root()?;
        for seg in path.split('\\').filter(|s| !s.is_empty()) {
            match self.subkey(k, seg)? {
                Some(s) => k = s,
                None => return Ok(None),
            }
        }
        Ok(Some(k))
    }

    /// The value cells of `key`, as (offset, position of its data).
    fn values(&self, key: KeyCell, what: &str) -> Result<Vec<(u32, usize)>> {
        let p = self.nk(key.0, what)?;
        let count = le32(&self.bytes, p + 36) as usize;
        if count == 0 {
            return Ok(Vec::new());
        }
        let list = le32(&self.bytes, p + 40);
        let lp = self.cell_data(list, count * 4, what)?;
        let mut out = Vec::with_capacity(count);
        for i in 0..count {
            let off = le32(&self.bytes, lp + i * 4);
            let vp = self.cell_data(off, 20, what)?;
            if &self.bytes[vp..vp + 2] != b"vk" {
                return Err(self.err(format!("{what}: cell {off:#x} is not a value (vk)")));
            }
            let nl = le16(&self.bytes, vp + 2) as usize;
            self.cell_data(off, 20 + nl, what)?;
            out.push((off, vp));
        }
        Ok(out)
    }

    fn value_name(&self, vp: usize) -> String {
        let len = le16(&self.bytes, vp + 2) as usize;
        let raw = &self.bytes[vp + 20..vp + 20 + len];
        if le16(&self.bytes, vp + 16) & VALUE_COMP_NAME != 0 {
            raw.iter().map(|&c| c as char).collect()
        } else {
            let u: Vec<u16> = raw
                .chunks_exact(2)
                .map(|c| u16::from_le_bytes([c[0], c[1]]))
                .collect();
            String::from_utf16_lossy(&u)
        }
    }

    fn value(&self, key: KeyCell, name: &str, what: &str) -> Result<Option<usize>> {
        for (_, vp) in self.values(key, what)? {
            if name_matches(&self.value_name(vp), name) {
                return Ok(Some(vp));
            }
        }
        Ok(None)
    }

    /// Overwrite the REG_DWORD `name` of `key` with `v`. The value must exist as a REG_DWORD.
    pub fn set_dword(&mut self, key: KeyCell, name: &str, v: u32, what: &str) -> Result<()> {
        let vp = self
            .value(key, name, what)?
            .ok_or_else(|| self.err(format!("{what}: there is no value {name} to change")))?;
        if le32(&self.bytes, vp + 12) != REG_DWORD {
            return Err(self.err(format!("{what}: {name} is not a REG_DWORD")));
        }
        let size = le32(&self.bytes, vp + 4);
        if size == DATA_INLINE | 4 {
            put32(&mut self.bytes, vp + 8, v);
        } else if size == 4 {
            let dp = self.cell_data(le32(&self.bytes, vp + 8), 4, what)?;
            put32(&mut self.bytes, dp, v);
        } else {
            return Err(self.err(format!("{what}: {name} holds {size:#x} bytes, not a DWORD")));
        }
        self.touched.push(key.0);
        Ok(())
    }

    /// Rewrite the REG_MULTI_SZ `name` of `key` as `items`, in its data cell (the new data must
    /// not be longer than the cell).
    pub fn set_multi_sz(
        &mut self,
        key: KeyCell,
        name: &str,
        items: &[String],
        what: &str,
    ) -> Result<()> {
        let vp = self
            .value(key, name, what)?
            .ok_or_else(|| self.err(format!("{what}: there is no value {name} to change")))?;
        if le32(&self.bytes, vp + 12) != REG_MULTI_SZ {
            return Err(self.err(format!("{what}: {name} is not a REG_MULTI_SZ")));
        }
        let size = le32(&self.bytes, vp + 4);
        if size & DATA_INLINE != 0 || size > MAX_CELL_DATA {
            return Err(Error::unsupported(
                &self.name,
                format!("{what}: {name} is stored inline or as big data; not edited in place"),
            ));
        }
        let mut data: Vec<u8> = Vec::new();
        for s in items {
            for u in s.encode_utf16() {
                data.extend_from_slice(&u.to_le_bytes());
            }
            data.extend_from_slice(&[0, 0]);
        }
        data.extend_from_slice(&[0, 0]);
        let dp = self.cell_data(le32(&self.bytes, vp + 8), size as usize, what)?;
        let (_, cap) = self.cell(le32(&self.bytes, vp + 8), what)?;
        if data.len() > cap {
            return Err(Error::unsupported(
                &self.name,
                format!("{what}: the new {name} does not fit its cell"),
            ));
        }
        self.bytes[dp..dp + data.len()].copy_from_slice(&data);
        self.bytes[dp + data.len()..dp + cap].fill(0);
        put32(&mut self.bytes, vp + 4, data.len() as u32);
        self.touched.push(key.0);
        Ok(())
    }

    /// Delete the subkey `name` of `parent` with everything below it.
    pub fn delete_key(&mut self, parent: KeyCell, name: &str, what: &str) -> Result<()> {
        let child = self
            .subkey(parent, name)?
            .ok_or_else(|| self.err(format!("{what}: there is no key {name} to delete")))?;
        // Collect the whole tree first (bounded), so nothing is changed when it is unreadable.
        let mut cells = Vec::new();
        let mut security = Vec::new();
        self.collect_key(child, what, 0, &mut cells, &mut security)?;
        self.unlink(parent, child.0, what)?;
        for sk in security {
            self.release_security(sk, what)?;
        }
        cells.sort_unstable();
        cells.dedup();
        for c in cells {
            self.free(c);
        }
        let mut touched = std::mem::take(&mut self.touched);
        touched.retain(|&k| !self.is_free(k));
        touched.push(parent.0);
        self.touched = touched;
        Ok(())
    }

    fn collect_key(
        &self,
        key: KeyCell,
        what: &str,
        depth: usize,
        cells: &mut Vec<u32>,
        security: &mut Vec<u32>,
    ) -> Result<()> {
        if depth > MAX_DELETE_DEPTH {
            return Err(self.err(format!("{what}: key tree deeper than {MAX_DELETE_DEPTH}")));
        }
        let p = self.nk(key.0, what)?;
        cells.push(key.0);
        for sub in self.subkeys(key, what)? {
            self.collect_key(KeyCell(sub), what, depth + 1, cells, security)?;
        }
        if le32(&self.bytes, p + 20) > 0 {
            let list = le32(&self.bytes, p + 28);
            let lp = self.cell_data(list, 4, what)?;
            if &self.bytes[lp..lp + 2] == b"ri" {
                let n = le16(&self.bytes, lp + 2) as usize;
                for i in 0..n {
                    cells.push(le32(&self.bytes, lp + 4 + i * 4));
                }
            }
            cells.push(list);
        }
        let values = self.values(key, what)?;
        if !values.is_empty() {
            cells.push(le32(&self.bytes, p + 40));
        }
        for (off, vp) in values {
            cells.push(off);
            let size = le32(&self.bytes, vp + 4);
            if size & DATA_INLINE == 0 && size > 0 {
                if size > MAX_CELL_DATA {
                    return Err(Error::unsupported(
                        &self.name,
                        format!("{what}: a value stored as big data; not deleted"),
                    ));
                }
                let data = le32(&self.bytes, vp + 8);
                self.cell_data(data, size as usize, what)?;
                cells.push(data);
            }
        }
        let class = le32(&self.bytes, p + 48);
        if class != NO_CELL && le16(&self.bytes, p + 74) > 0 {
            self.cell(class, what)?;
            cells.push(class);
        }
        let sk = le32(&self.bytes, p + 44);
        if sk != NO_CELL {
            let sp = self.cell_data(sk, 20, what)?;
            if &self.bytes[sp..sp + 2] != b"sk" {
                return Err(self.err(format!("{what}: cell {sk:#x} is not a security cell")));
            }
            security.push(sk);
        }
        Ok(())
    }

    /// Remove `child` from `parent`'s subkey list and lower its subkey count.
    fn unlink(&mut self, parent: KeyCell, child: u32, what: &str) -> Result<()> {
        let pp = self.nk(parent.0, what)?;
        let count = le32(&self.bytes, pp + 20);
        let list = le32(&self.bytes, pp + 28);
        let lp = self.cell_data(list, 4, what)?;
        let mut emptied = Vec::new();
        let found = if &self.bytes[lp..lp + 2] == b"ri" {
            let n = le16(&self.bytes, lp + 2) as usize;
            let mut found = false;
            for i in 0..n {
                let sub = le32(&self.bytes, lp + 4 + i * 4);
                if self.remove_from_list(sub, child, what)? {
                    found = true;
                    let sp = self.cell_data(sub, 4, what)?;
                    if le16(&self.bytes, sp + 2) == 0 {
                        self.remove_element(lp, i, 4);
                        emptied.push(sub);
                    }
                    break;
                }
            }
            found
        } else {
            self.remove_from_list(list, child, what)?
        };
        if !found {
            return Err(self.err(format!("{what}: the key is not in its parent's list")));
        }
        put32(&mut self.bytes, pp + 20, count - 1);
        if count == 1 {
            emptied.push(list);
            put32(&mut self.bytes, pp + 28, NO_CELL);
        }
        for c in emptied {
            self.free(c);
        }
        Ok(())
    }

    /// Remove `child` from the lf/lh/li list `list`; whether it was there.
    fn remove_from_list(&mut self, list: u32, child: u32, what: &str) -> Result<bool> {
        let p = self.cell_data(list, 4, what)?;
        let step = match &self.bytes[p..p + 2] {
            b"lf" | b"lh" => 8,
            b"li" => 4,
            _ => return Err(self.err(format!("{what}: cell {list:#x} is not a subkey list"))),
        };
        let n = le16(&self.bytes, p + 2) as usize;
        for i in 0..n {
            if le32(&self.bytes, p + 4 + i * step) == child {
                self.remove_element(p, i, step);
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Remove element `i` (of `step` bytes) from the list whose data starts at `p`.
    fn remove_element(&mut self, p: usize, i: usize, step: usize) {
        let n = le16(&self.bytes, p + 2) as usize;
        let start = p + 4 + i * step;
        let end = p + 4 + n * step;
        self.bytes.copy_within(start + step..end, start);
        self.bytes[end - step..end].fill(0);
        self.bytes[p + 2..p + 4].copy_from_slice(&((n - 1) as u16).to_le_bytes());
    }

    /// Lower a security descriptor's reference count; unlink and free it at zero.
    fn release_security(&mut self, sk: u32, what: &str) -> Result<()> {
        let p = self.cell_data(sk, 20, what)?;
        let refs = le32(&self.bytes, p + 12);
        if refs > 1 {
            put32(&mut self.bytes, p + 12, refs - 1);
            return Ok(());
        }
        let (flink, blink) = (le32(&self.bytes, p + 4), le32(&self.bytes, p + 8));
        if flink == sk || blink == sk {
            return Err(self.err(format!("{what}: the hive's only security descriptor")));
        }
        let fp = self.cell_data(flink, 20, what)?;
        let bp = self.cell_data(blink, 20, what)?;
        put32(&mut self.bytes, bp + 4, flink);
        put32(&mut self.bytes, fp + 8, blink);
        self.free(sk);
        Ok(())
    }

    fn is_free(&self, off: u32) -> bool {
        (le32(&self.bytes, BASE + off as usize) as i32) > 0
    }

    /// Free the cell at `off` (already checked) and merge free neighbours in its bin.
    fn free(&mut self, off: u32) {
        let pos = BASE + off as usize;
        let size = (le32(&self.bytes, pos) as i32).unsigned_abs();
        put32(&mut self.bytes, pos, size);
        self.bytes[pos + 4..pos + size as usize].fill(0);
        // The bin holding it: walk the bins from the first (their headers give their sizes).
        let mut bin = 0usize;
        while bin < self.bins_len() as usize {
            let bsize = le32(&self.bytes, BASE + bin + 8) as usize;
            if &self.bytes[BASE + bin..BASE + bin + 4] != b"hbin" || bsize == 0 {
                return;
            }
            if (off as usize) < bin + bsize {
                self.coalesce(bin, bsize);
                return;
            }
            bin += bsize;
        }
    }

    fn coalesce(&mut self, bin: usize, bsize: usize) {
        let mut at = bin + 32;
        let end = bin + bsize;
        while at + 4 <= end {
            let size = le32(&self.bytes, BASE + at) as i32;
            if size == 0 {
                return;
            }
            let len = size.unsigned_abs() as usize;
            if size > 0 {
                let mut merged = len;
                while at + merged + 4 <= end {
                    let next = le32(&self.bytes, BASE + at + merged) as i32;
                    if next <= 0 {
                        break;
                    }
                    merged += next as usize;
                }
                if merged != len {
                    put32(&mut self.bytes, BASE + at, merged as u32);
                    self.bytes[BASE + at + 4..BASE + at + merged].fill(0);
                }
                at += merged;
            } else {
                at += len;
            }
        }
    }

    /// Finish: refresh the touched keys' times to `now` (a FILETIME), make the base block clean
    /// with sequence numbers above `min_sequence` (the highest of the hive and its logs), and
    /// return the bytes.
    pub fn finish(mut self, now: u64, min_sequence: u32) -> Vec<u8> {
        let mut touched = std::mem::take(&mut self.touched);
        touched.sort_unstable();
        touched.dedup();
        for k in touched {
            if let Ok(p) = self.nk(k, "") {
                self.bytes[p + 4..p + 12].copy_from_slice(&now.to_le_bytes());
            }
        }
        let seq = le32(&self.bytes, 4).max(min_sequence).wrapping_add(1);
        put32(&mut self.bytes, 4, seq);
        put32(&mut self.bytes, 8, seq);
        self.bytes[12..20].copy_from_slice(&now.to_le_bytes());
        let sum = base_block_checksum(&self.bytes);
        put32(&mut self.bytes, 508, sum);
        self.bytes
    }
}

/// The current time as a Windows FILETIME (100 ns since 1601).
pub fn filetime_now() -> u64 {
    let unix = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() / 100)
        .unwrap_or(0) as u64;
    unix + 116_444_736_000_000_000
}
