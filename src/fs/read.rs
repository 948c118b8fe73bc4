//! Reading a file's data, and refusing what cannot be read correctly.
//!
//! The `ntfs` crate would return raw clusters for NTFS-compressed and EFS-encrypted streams and
//! for reparse points (WOF/CompactOS compression, deduplication, links): imgcheck refuses
//! those with a message naming the file, rather than hand back wrong bytes. Bytes past an
//! attribute's initialized size (valid data length) read as zeros, as NTFS defines; the crate
//! does not expose that size, so it is read from the fixed-up MFT record.

use std::io::{self, Read, Seek, SeekFrom, Write};

use ntfs::{NtfsAttributeFlags, NtfsAttributeType, NtfsError, NtfsFile, NtfsReadSeek};
use serde::Serialize;

use super::budget::{guard, DEFAULT_READ_CAP, METADATA_BUDGET};
use super::index::{display_path, is_not_found};
use super::volume::Volume;
use super::{le16, le32, le64};
use crate::error::{Error, Result};
use crate::image::DeviceReader;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Stat {
    /// The name as stored (the case on disk) of the last component; "" for the root.
    pub name: String,
    pub is_dir: bool,
    pub size: u64,
    pub record: u64,
    pub compressed: bool,
    pub encrypted: bool,
    pub sparse: bool,
    /// Reparse tag, if the file has a reparse point.
    pub reparse_tag: Option<u32>,
}

/// A hibernated (or Fast-Startup) Windows: `hiberfil.sys` carries a live memory image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Hibernation {
    /// The signature found, as stored ("HIBR", "wake", "RSTR", "LINK").
    pub signature: String,
    /// Size of hiberfil.sys.
    pub file_size: u64,
}

fn reparse_tag_name(tag: u32) -> &'static str {
    match tag {
        0xA000_0003 => "a junction (mount point)",
        0xA000_000C => "a symbolic link",
        0x8000_0017 => {
            "WOF-compressed (CompactOS / compact.exe); its data lives in a compressed stream"
        }
        0x8000_0013 => "deduplicated (Data Deduplication); its data lives in the chunk store",
        0x8000_001B => "an AppExecLink",
        0x8000_0023 => "an AF_UNIX socket",
        t if t & 0xFFFF_0FFF == 0x9000_001A => {
            "a cloud-files placeholder (OneDrive); its data may not be local"
        }
        _ => "a reparse point",
    }
}

/// Splits `FILE:STREAM` (or `FILE:STREAM:$DATA`, `FILE::$DATA`) into the path and the stream
/// name ("" for the unnamed stream). Only the last component can name a stream.
pub fn split_stream(path: &str) -> (&str, &str) {
    let last = path.rfind(['/', '\\']).map_or(0, |i| i + 1);
    match path[last..].find(':') {
        None => (path, ""),
        Some(i) => {
            let file = &path[..last + i];
            let rest = &path[last + i + 1..];
            let stream = rest
                .strip_suffix(":$DATA")
                .or_else(|| rest.strip_suffix(":$data"))
                .unwrap_or(if rest.eq_ignore_ascii_case("$DATA") {
                    ""
                } else {
                    rest
                });
            (file, stream)
        }
    }
}

impl Volume {
    /// Size, type and data-stream properties of `path`.
    pub fn stat(&self, path: &str) -> Result<Stat> {
        let mut fs = self.reader(METADATA_BUDGET);
        let (rec, stored) = self.resolve(&mut fs, path)?;
        let shown = display_path(&stored);
        let file = self.file(&mut fs, rec, &shown)?;
        let d = self.data_facts(&file, &mut fs, &shown)?;
        Ok(Stat {
            name: stored.last().cloned().unwrap_or_default(),
            is_dir: file.is_directory(),
            size: if file.is_directory() { 0 } else { d.size },
            record: rec,
            compressed: d.flags.contains(NtfsAttributeFlags::COMPRESSED),
            encrypted: d.flags.contains(NtfsAttributeFlags::ENCRYPTED),
            sparse: d.flags.contains(NtfsAttributeFlags::SPARSE),
            reparse_tag: d.reparse_tag,
        })
    }

    /// Read a whole file into memory, refusing files larger than `cap` bytes.
    pub fn read_capped(&self, path: &str, cap: u64) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        self.read_range_to(path, 0, u64::MAX, cap, &mut out)?;
        Ok(out)
    }

    /// Read a whole file (at most [`DEFAULT_READ_CAP`] bytes).
    pub fn read(&self, path: &str) -> Result<Vec<u8>> {
        self.read_capped(path, DEFAULT_READ_CAP)
    }

    /// The first `n` bytes of a file (fewer if it is shorter); any file size.
    pub fn read_head(&self, path: &str, n: u64) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        self.read_range_to(path, 0, n, u64::MAX, &mut out)?;
        Ok(out)
    }

    /// Stream a whole file to `w` (no size cap); returns the bytes written.
    pub fn read_to(&self, path: &str, w: &mut dyn Write) -> Result<u64> {
        self.read_range_to(path, 0, u64::MAX, u64::MAX, w)
    }

    /// Stream `[offset, offset+len)` of a file's unnamed data stream to `w`, refusing files
    /// larger than `cap`. Returns the bytes written.
    pub fn read_range_to(
        &self,
        path: &str,
        offset: u64,
        len: u64,
        cap: u64,
        w: &mut dyn Write,
    ) -> Result<u64> {
        let mut fs = self.reader(METADATA_BUDGET);
        let (path, stream) = split_stream(path);
        let (rec, stored) = self.resolve(&mut fs, path)?;
        let mut shown = display_path(&stored);
        let file = self.file(&mut fs, rec, &shown)?;
        if file.is_directory() && stream.is_empty() {
            return Err(Error::io(
                format!("{}: {shown}", self.name),
                io::Error::new(io::ErrorKind::IsADirectory, "is a directory"),
            ));
        }
        let d = self.stream_facts(&file, &mut fs, &shown, stream)?;
        if !stream.is_empty() {
            if !d.present {
                return Err(Error::io(
                    format!("{}: {shown}:{stream}", self.name),
                    io::Error::new(io::ErrorKind::NotFound, "no such data stream"),
                ));
            }
            shown = format!("{shown}:{}", d.stream);
        }
        if let Some(tag) = d.reparse_tag {
            return Err(Error::unsupported(
                &self.name,
                format!(
                    "{shown} is {} (reparse tag {tag:#010x}); its contents are not stored as \
                     plain file data",
                    reparse_tag_name(tag)
                ),
            ));
        }
        if d.flags.contains(NtfsAttributeFlags::ENCRYPTED) {
            return Err(Error::refused(
                &self.name,
                format!("{shown} is EFS-encrypted; its data cannot be read offline"),
            ));
        }
        if d.flags.contains(NtfsAttributeFlags::COMPRESSED) {
            return Err(Error::unsupported(
                &self.name,
                format!(
                    "{shown} is NTFS-compressed, which imgcheck does not decompress (the raw \
                     clusters would be wrong data)"
                ),
            ));
        }
        if d.size > cap {
            return Err(Error::refused(
                &self.name,
                format!(
                    "{shown} is {} bytes, more than the {cap}-byte limit",
                    d.size
                ),
            ));
        }
        if !d.present {
            // Every file has an unnamed $DATA attribute (empty ones too): without it the record
            // is damaged, and its data is unknown, not empty.
            return Err(Error::corrupt(
                &self.name,
                format!("{shown} (MFT record {rec}) has no $DATA attribute"),
            ));
        }
        if offset >= d.size {
            return Ok(0);
        }
        let end = offset.saturating_add(len).min(d.size);
        let valid_end = d.initialized.min(end);
        // Data reads need a budget of their own: the file's bytes plus metadata.
        let budget = METADATA_BUDGET.saturating_add(end);
        let mut fs = self.reader(budget);
        let what = format!("reading the data of {shown} (MFT record {rec})");
        let file = self.file(&mut fs, rec, &shown)?;
        let mut written = 0u64;
        let mut werr: Option<io::Error> = None;
        let res = guard(
            &self.name,
            &what,
            || -> std::result::Result<(), NtfsError> {
                let Some(item) = file.data(&mut fs, &d.stream) else {
                    return Ok(());
                };
                let item = item?;
                let attr = item.to_attribute()?;
                let mut value = attr.value(&mut fs)?;
                let mut pos = offset;
                if pos < valid_end {
                    value.seek(&mut fs, SeekFrom::Start(pos))?;
                }
                let mut buf = vec![0u8; (1 << 20).min((end - offset) as usize).max(1)];
                while pos < end {
                    let n = ((end - pos) as usize).min(buf.len());
                    let chunk = &mut buf[..n];
                    if pos >= valid_end {
                        chunk.fill(0);
                    } else {
                        let m = ((valid_end - pos) as usize).min(n);
                        let mut got = 0;
                        while got < m {
                            let k = value.read(&mut fs, &mut chunk[got..m])?;
                            if k == 0 {
                                return Err(NtfsError::Io(io::Error::new(
                                    io::ErrorKind::UnexpectedEof,
                                    format!(
                                        "the data runs end at byte {} of {}",
                                        pos + got as u64,
                                        d.size
                                    ),
                                )));
                            }
                            got += k;
                        }
                        chunk[m..].fill(0);
                    }
                    if let Err(e) = w.write_all(chunk) {
                        werr = Some(e);
                        return Ok(());
                    }
                    pos += n as u64;
                    written += n as u64;
                }
                Ok(())
            },
        )?;
        res.map_err(|e| self.err(&what, e, budget))?;
        if let Some(e) = werr {
            return Err(Error::io("output", e));
        }
        Ok(written)
    }

    /// Facts about a file's unnamed data stream and reparse point.
    pub(super) fn data_facts<T: Read + Seek>(
        &self,
        file: &NtfsFile,
        fs: &mut T,
        shown: &str,
    ) -> Result<DataFacts> {
        self.stream_facts(file, fs, shown, "")
    }

    /// Facts about a file's data stream `stream` ("" for the unnamed one; names compare
    /// case-insensitively, as NTFS does) and its reparse point.
    pub(super) fn stream_facts<T: Read + Seek>(
        &self,
        file: &NtfsFile,
        fs: &mut T,
        shown: &str,
        stream: &str,
    ) -> Result<DataFacts> {
        let what = format!("reading the attributes of {shown}");
        let raw = guard(
            &self.name,
            &what,
            || -> std::result::Result<DataFacts, NtfsError> {
                let mut facts = DataFacts::default();
                let mut it = file.attributes();
                let mut n = 0;
                while let Some(item) = it.next(fs) {
                    n += 1;
                    if n > 4096 {
                        break;
                    }
                    let item = item?;
                    let a = item.to_attribute()?;
                    match a.ty() {
                        Ok(NtfsAttributeType::ReparsePoint) => {
                            let mut tag = [0u8; 4];
                            let mut v = a.value(fs)?;
                            let mut got = 0;
                            while got < 4 {
                                let k = v.read(fs, &mut tag[got..])?;
                                if k == 0 {
                                    break;
                                }
                                got += k;
                            }
                            facts.reparse_tag = Some(u32::from_le_bytes(tag));
                        }
                        Ok(NtfsAttributeType::Data)
                            if !facts.present
                                && a.name()?.to_string_lossy().to_lowercase()
                                    == stream.to_lowercase() =>
                        {
                            facts.present = true;
                            facts.stream = a.name()?.to_string_lossy();
                            facts.size = a.value_length();
                            facts.flags = a.flags();
                            facts.resident = a.is_resident();
                            facts.position = a.position().value().map(|p| p.get());
                        }
                        _ => {}
                    }
                }
                Ok(facts)
            },
        )?
        .map_err(|e| self.err(&what, e, METADATA_BUDGET))?;
        let mut facts = raw;
        facts.initialized = facts.size;
        if facts.present && !facts.resident {
            if let Some(pos) = facts.position {
                facts.initialized = self.initialized_size(file, pos, shown)?.min(facts.size);
            }
        }
        Ok(facts)
    }

    /// The initialized size (valid data length) of the non-resident attribute at partition
    /// byte `pos`: the crate does not expose it, so read it from the fixed-up record.
    fn initialized_size(&self, file: &NtfsFile, pos: u64, shown: &str) -> Result<u64> {
        let rs = self.ntfs.file_record_size() as u64;
        let base = file.position().value().map(|p| p.get()).unwrap_or(0);
        // The base record, or (for an attribute-list extension) the record containing `pos`:
        // records start on a 512-byte boundary at most `rs` bytes before it.
        let candidates: Vec<u64> = if pos >= base && pos < base + rs {
            vec![base]
        } else {
            let sec = pos - pos % 512;
            (0..rs / 512)
                .filter_map(|k| sec.checked_sub(k * 512))
                .collect()
        };
        let bad = |why: &str| {
            Error::corrupt(
                &self.name,
                format!("{shown}: cannot read the valid data length of its data stream: {why}"),
            )
        };
        let r = DeviceReader::window(self.dev.clone(), self.start, self.len);
        let mut last = "the MFT record holding it was not found".to_string();
        for rec_start in candidates {
            let mut rec = vec![0u8; rs as usize];
            let n = r
                .read_at(&mut rec, rec_start)
                .map_err(|e| Error::io(&self.name, e))?;
            if n < rec.len() || &rec[0..4] != b"FILE" {
                continue;
            }
            if let Err(m) = apply_fixup(&mut rec) {
                last = m;
                continue;
            }
            let off = (pos - rec_start) as usize;
            let used = le32(&rec, 0x18) as usize;
            if off + 0x40 > rec.len().min(used) || rec[off + 8] == 0 {
                last = "the attribute is not where the record says".to_string();
                continue;
            }
            return Ok(le64(&rec, off + 0x38));
        }
        Err(bad(&last))
    }

    /// Whether Windows is hibernated (or shut down with Fast Startup): `\hiberfil.sys`
    /// starts with "hibr", "wake", "rstr" or "link" (any case).
    pub fn hibernation(&self) -> Result<Option<Hibernation>> {
        hibernation(self)
    }
}

/// What [`Volume::data_facts`] learns about the unnamed data stream.
pub(super) struct DataFacts {
    pub(super) present: bool,
    pub(super) size: u64,
    pub(super) initialized: u64,
    pub(super) flags: NtfsAttributeFlags,
    pub(super) resident: bool,
    position: Option<u64>,
    pub(super) reparse_tag: Option<u32>,
    /// The stream's name as stored ("" for the unnamed stream).
    pub(super) stream: String,
}

impl Default for DataFacts {
    fn default() -> Self {
        DataFacts {
            present: false,
            size: 0,
            initialized: 0,
            flags: NtfsAttributeFlags::empty(),
            stream: String::new(),
            resident: false,
            position: None,
            reparse_tag: None,
        }
    }
}

/// Undo the update-sequence fixups of a multi-sector record in place.
fn apply_fixup(rec: &mut [u8]) -> std::result::Result<(), String> {
    let usa_off = le16(rec, 4) as usize;
    let usa_count = le16(rec, 6) as usize;
    if usa_count == 0 || usa_off + 2 * usa_count > rec.len() || (usa_count - 1) * 512 > rec.len() {
        return Err(format!(
            "bad update sequence array (offset {usa_off}, count {usa_count})"
        ));
    }
    let usn = [rec[usa_off], rec[usa_off + 1]];
    for i in 1..usa_count {
        let end = i * 512;
        if rec[end - 2..end] != usn {
            return Err(format!(
                "update sequence (fixup) mismatch in sector {} of the record",
                i - 1
            ));
        }
        rec[end - 2] = rec[usa_off + 2 * i];
        rec[end - 1] = rec[usa_off + 2 * i + 1];
    }
    Ok(())
}

/// See [`Volume::hibernation`].
pub fn hibernation(vol: &Volume) -> Result<Option<Hibernation>> {
    let st = match vol.stat("hiberfil.sys") {
        Ok(s) => s,
        Err(e) if is_not_found(&e) => return Ok(None),
        Err(e) => return Err(e),
    };
    if st.is_dir {
        return Ok(None);
    }
    let head = vol.read_head("hiberfil.sys", 4)?;
    if head.len() < 4 {
        return Ok(None);
    }
    let sig = String::from_utf8_lossy(&head).to_string();
    let lower = sig.to_ascii_lowercase();
    if ["hibr", "wake", "rstr", "link"].contains(&lower.as_str()) {
        Ok(Some(Hibernation {
            signature: sig,
            file_size: st.size,
        }))
    } else {
        Ok(None)
    }
}
