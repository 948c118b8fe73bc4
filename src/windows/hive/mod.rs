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
//! - memoised lookups and listings, since the analyses ask for the same keys repeatedly;
//! - an integrity walk of the whole hive at open ([`integrity`]): a lookup through a damaged
//!   key is an error naming the damage, never a key that silently vanished;
//! - old-format (DIRT) log replay, which notatin lacks, done before notatin sees the hive
//!   (`replay.rs`); new-format logs with a bad base block are not given to notatin.
//!
//! Files: this one (opening, lookups), `data.rs` (values and keys), `cells.rs` (what notatin
//! is about to follow), `replay.rs` (logs), [`integrity`] (damage).
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

use crate::{Error, Result};

mod cells;
mod data;
pub mod integrity;
mod replay;

use cells::{check_subkeys, check_values};
pub use cells::{MAX_KEY_DATA, MAX_VALUES};
pub use data::{join, name_eq, Key, RegData, Value};
pub use replay::{base_block_checksum, marvin32, ReplayInfo, LOG_HASH_SEED};
use replay::{mirror_replay, parse_log, ParsedLog};

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
    /// What of the hive is damaged ([`integrity`]), and the key node cells (hive-bins-relative)
    /// whose subkeys or values cannot all be read.
    damage: integrity::Damage,
    damaged_lists: HashMap<usize, String>,
    damaged_values: HashMap<usize, String>,
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
    let (major, minor) = (le32(b, 20), le32(b, 24));
    if major != 1 || !(2..=6).contains(&minor) {
        let era = if major == 1 && minor < 2 {
            " (Windows NT 3.x)"
        } else {
            ""
        };
        return Err(Error::refused(
            name,
            format!("registry hive format {major}.{minor}{era} is not supported (only 1.2 to 1.6, Windows NT 4.0 and later)"),
        ));
    }
    let seq1 = le32(b, 4);
    let seq2 = le32(b, 8);
    let checksum_ok = replay::base_block_checksum(b) == le32(b, 508);
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
        }
        // Old-format (DIRT) logs: notatin does not replay them, we do (replay.rs). The
        // replayed hive has a clean base block, so nothing more is replayed after it.
        let mut primary = primary;
        let mut old_applied = false;
        if replay.dirty && logs.iter().any(|l| replay::is_old_format(l)) {
            if let Some(r) = replay::old_format_replay(
                &primary,
                checksum_ok,
                &logs,
                MAX_HIVE_SIZE,
                &mut replay.notes,
            ) {
                replay.logs_applied = true;
                replay.pages_changed = r.changed;
                replay.log_dirty_pages += r.pages;
                replay.bytes_added = r.bytes.len().saturating_sub(primary.len());
                replay.sequence_after_replay = Some(r.sequence);
                primary = r.bytes;
                old_applied = true;
            }
        }
        // New-format logs go to notatin (and to our mirror of its rules), unless their base
        // block is not valid: notatin would replay them without a word.
        let mut new_logs: Vec<&[u8]> = Vec::new();
        let mut parsed = Vec::new();
        for (i, log) in logs.iter().enumerate() {
            if log.len() < 512 || &log[..4] != b"regf" {
                replay.notes.push(format!(
                    "transaction log #{} has no regf base block: ignored",
                    i + 1
                ));
                continue;
            }
            if replay::is_old_format(log) {
                continue;
            }
            if replay::base_block_checksum(log) != le32(log, 508) {
                replay.notes.push(format!(
                    "transaction log #{} not applied: its base block checksum is wrong",
                    i + 1
                ));
                continue;
            }
            if old_applied {
                continue;
            }
            let parsed_log = parse_log(log, le32(&primary, 40) as usize);
            replay.log_entries += parsed_log.2.len();
            replay.log_dirty_pages += parsed_log.2.iter().map(|e| e.pages.len()).sum::<usize>();
            parsed.push(parsed_log);
            new_logs.push(log);
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
        let mirror = if replay.dirty && !old_applied && !used.is_empty() && eff_seq1 != eff_seq2 {
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
        for log in &new_logs {
            builder.with_transaction_log(Cursor::new(log.to_vec()));
        }
        let root_rel = le32(&mirror, 36) as usize;
        let bins = if replay.bytes_added > 0 {
            mirror.len() - HBIN_START
        } else {
            le32(&mirror, 40) as usize
        };
        let scan = integrity::scan(&mirror, bins, root_rel);
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
                    match seq.filter(|&s| s != 0) {
                        Some(seq) => {
                            replay.logs_applied = true;
                            replay.sequence_after_replay = Some(seq);
                        }
                        None => {
                            replay.notes.push(
                                "no transaction log entry could be applied (none followed the hive's sequence number with valid hashes)".into(),
                            );
                            continue;
                        }
                    }
                }
                replay.notes.push(n.text.clone());
            }
        }
        if !old_applied && replay.logs_applied != (mirror_applied > 0) {
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
            damage: scan.damage,
            damaged_lists: scan.lists,
            damaged_values: scan.values,
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

    /// What of the hive is damaged (empty when the whole hive was walked and is sound).
    pub fn damage(&self) -> &integrity::Damage {
        &self.damage
    }

    /// Refuses a key whose subkeys (`list`) or values cannot all be read: the caller would see
    /// a key or a value vanish.
    fn check_damage(&self, node: &CellKeyNode, list: bool) -> Result<()> {
        let rel = node.file_offset_absolute.wrapping_sub(HBIN_START);
        let map = if list {
            &self.damaged_lists
        } else {
            &self.damaged_values
        };
        match map.get(&rel) {
            None => Ok(()),
            Some(what) => Err(Error::corrupt(
                &self.name,
                format!(
                    "registry hive is damaged: {what} (in all: {})",
                    self.damage.summary()
                ),
            )),
        }
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
        self.check_damage(node, true)?;
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
        self.check_damage(&node, false)?;
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
        self.check_damage(&n, false)?;
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
