//! The VMDK text descriptor: a small `key=value` file (or a block embedded in a sparse extent)
//! that names the disk's extents, its content ID and, for a delta (snapshot) disk, its parent.
//!
//! ```text
//! # Disk DescriptorFile
//! version=1
//! CID=e6bc7d84
//! parentCID=ffffffff
//! createType="monolithicFlat"
//!
//! # Extent description
//! RW 10241 FLAT "disk-flat.vmdk" 0
//! RW 2048 ZERO
//!
//! # The Disk Data Base
//! ddb.adapterType = "ide"
//! ```

use crate::error::{Error, Result};

/// Largest descriptor read (text file or embedded block). Real descriptors are a few hundred
/// bytes; qemu reads at most 1 MiB too.
pub const MAX_DESCRIPTOR_BYTES: u64 = 1 << 20;

/// Most extent lines accepted (a 16 TiB twoGbMaxExtent disk has 8192).
pub const MAX_EXTENTS: usize = 8192;

/// `parentCID` of a disk without a parent.
pub const NO_PARENT_CID: u32 = 0xffff_ffff;

/// Access mode of an extent line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    ReadWrite,
    ReadOnly,
    NoAccess,
}

/// Type of an extent line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExtentType {
    /// Hosted sparse extent (`KDMV` header).
    Sparse,
    /// Flat file, with a start offset in sectors.
    Flat,
    /// Reads as zeros; no file.
    Zero,
    /// ESXi flat extent (`x-flat.vmdk`).
    Vmfs,
    /// ESX delta disk in the COWD format.
    VmfsSparse,
    /// ESXi space-efficient sparse.
    SeSparse,
    /// Raw device mapping (physical or virtual).
    VmfsRdm,
    VmfsRaw,
    /// Anything else, as written.
    Other(String),
}

impl ExtentType {
    fn parse(s: &str) -> Self {
        match s.to_ascii_uppercase().as_str() {
            "SPARSE" => ExtentType::Sparse,
            "FLAT" => ExtentType::Flat,
            "ZERO" => ExtentType::Zero,
            "VMFS" => ExtentType::Vmfs,
            "VMFSSPARSE" => ExtentType::VmfsSparse,
            "SESPARSE" => ExtentType::SeSparse,
            "VMFSRDM" => ExtentType::VmfsRdm,
            "VMFSRAW" => ExtentType::VmfsRaw,
            _ => ExtentType::Other(s.to_string()),
        }
    }
}

/// One extent line: `ACCESS SIZE_IN_SECTORS TYPE "FILE" [OFFSET]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtentLine {
    pub access: Access,
    /// Size of the extent in 512-byte sectors.
    pub sectors: u64,
    pub kind: ExtentType,
    /// File name as written (relative to the descriptor's directory, or absolute).
    pub file: Option<String>,
    /// Start of the extent's data inside a flat file, in sectors.
    pub offset: u64,
    /// 1-based line number, for messages.
    pub line: usize,
}

/// A parsed descriptor.
#[derive(Debug, Clone, Default)]
pub struct Descriptor {
    pub version: Option<String>,
    pub cid: Option<u32>,
    /// `None` when absent; [`NO_PARENT_CID`] when the disk has no parent.
    pub parent_cid: Option<u32>,
    pub create_type: Option<String>,
    pub parent_hint: Option<String>,
    pub extents: Vec<ExtentLine>,
    /// `ddb.*` keys (disk database: geometry, adapter type, tools version, UUID).
    pub ddb: Vec<(String, String)>,
    /// Non-fatal oddities found while parsing.
    pub warnings: Vec<String>,
}

impl Descriptor {
    /// Whether this is a delta disk whose unallocated grains come from a parent.
    pub fn has_parent(&self) -> bool {
        matches!(self.parent_cid, Some(c) if c != NO_PARENT_CID)
    }

    /// The value of a `ddb.*` key.
    pub fn ddb(&self, key: &str) -> Option<&str> {
        self.ddb
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v.as_str())
    }

    /// Total size of the extents in bytes (`None` on overflow).
    pub fn total_bytes(&self) -> Option<u64> {
        self.extents
            .iter()
            .try_fold(0u64, |acc, e| acc.checked_add(e.sectors.checked_mul(512)?))
    }
}

/// Split a line into tokens; `"..."` is one token (quotes removed). Returns (token, quoted).
fn tokenize(line: &str) -> std::result::Result<Vec<(String, bool)>, &'static str> {
    let mut out = Vec::new();
    let mut chars = line.chars().peekable();
    while let Some(&c) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
            continue;
        }
        if c == '"' {
            chars.next();
            let mut s = String::new();
            let mut closed = false;
            for c in chars.by_ref() {
                if c == '"' {
                    closed = true;
                    break;
                }
                s.push(c);
            }
            if !closed {
                return Err("unterminated quoted file name");
            }
            out.push((s, true));
        } else {
            let mut s = String::new();
            while let Some(&c) = chars.peek() {
                if c.is_whitespace() || c == '"' {
                    break;
                }
                s.push(c);
                chars.next();
            }
            out.push((s, false));
        }
    }
    Ok(out)
}

fn unquote(v: &str) -> String {
    let v = v.trim();
    let v = v.strip_prefix('"').unwrap_or(v);
    let v = v.strip_suffix('"').unwrap_or(v);
    v.to_string()
}

fn parse_cid(name: &str, key: &str, v: &str) -> Result<u32> {
    u32::from_str_radix(v.trim(), 16).map_err(|_| {
        Error::corrupt(
            name,
            format!("descriptor: {key} \"{v}\" is not a 32-bit hexadecimal number"),
        )
    })
}

/// Parse descriptor text. `name` (the file holding it) is used in messages. The text ends at
/// the first NUL byte (an embedded descriptor is padded with zeros).
pub fn parse(name: &str, raw: &[u8]) -> Result<Descriptor> {
    if raw.len() as u64 > MAX_DESCRIPTOR_BYTES {
        return Err(Error::corrupt(
            name,
            format!(
                "descriptor is {} bytes, more than the {MAX_DESCRIPTOR_BYTES}-byte limit",
                raw.len()
            ),
        ));
    }
    let end = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
    let text = String::from_utf8_lossy(&raw[..end]);
    let text = text.trim_start_matches('\u{feff}');
    let mut d = Descriptor::default();
    let mut unknown = 0usize;
    for (i, line) in text.lines().enumerate() {
        let lineno = i + 1;
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let first = line.split_whitespace().next().unwrap_or("");
        let access = match first.to_ascii_uppercase().as_str() {
            "RW" => Some(Access::ReadWrite),
            "RDONLY" => Some(Access::ReadOnly),
            "NOACCESS" => Some(Access::NoAccess),
            _ => None,
        };
        if let Some(access) = access {
            if d.extents.len() >= MAX_EXTENTS {
                return Err(Error::corrupt(
                    name,
                    format!("descriptor lists more than {MAX_EXTENTS} extents"),
                ));
            }
            d.extents.push(parse_extent(name, lineno, line, access)?);
            continue;
        }
        if let Some((k, v)) = line.split_once('=') {
            let key = k.trim();
            let value = unquote(v);
            match key.to_ascii_lowercase().as_str() {
                "version" => d.version = Some(value),
                "cid" => d.cid = Some(parse_cid(name, "CID", &value)?),
                "parentcid" => d.parent_cid = Some(parse_cid(name, "parentCID", &value)?),
                "createtype" => d.create_type = Some(value),
                "parentfilenamehint" => d.parent_hint = Some(value),
                "encoding" | "isnativesnapshot" | "changetrackpath" => {}
                k if k.starts_with("ddb.") => d.ddb.push((key.to_string(), value)),
                _ => unknown += 1,
            }
            continue;
        }
        unknown += 1;
    }
    if unknown > 0 {
        d.warnings.push(format!(
            "descriptor has {unknown} line(s) imgcheck does not recognise; they were ignored"
        ));
    }
    if let Some(v) = &d.version {
        if !matches!(v.as_str(), "1" | "2" | "3") {
            d.warnings.push(format!(
                "descriptor version {v} is not one imgcheck knows (1 to 3)"
            ));
        }
    }
    Ok(d)
}

fn parse_extent(name: &str, lineno: usize, line: &str, access: Access) -> Result<ExtentLine> {
    let bad = |why: &str| {
        Error::corrupt(
            name,
            format!("descriptor line {lineno}: invalid extent line ({why}): {line}"),
        )
    };
    let toks = tokenize(line).map_err(bad)?;
    if toks.len() < 3 {
        return Err(bad("expected ACCESS SIZE TYPE [\"FILE\" [OFFSET]]"));
    }
    let sectors: u64 = toks[1]
        .0
        .parse()
        .map_err(|_| bad("size in sectors is not a number"))?;
    let kind = ExtentType::parse(&toks[2].0);
    let file = toks.get(3).map(|t| t.0.clone());
    let offset = match toks.get(4) {
        Some((t, false)) => t
            .parse()
            .map_err(|_| bad("offset in sectors is not a number"))?,
        Some((_, true)) => return Err(bad("offset is quoted")),
        None => 0,
    };
    if toks.len() > 5 {
        return Err(bad("unexpected text after the offset"));
    }
    match kind {
        ExtentType::Zero => {}
        _ if file.is_none() => return Err(bad("no file name")),
        _ => {}
    }
    if let Some(f) = &file {
        if f.is_empty() {
            return Err(bad("empty file name"));
        }
    }
    Ok(ExtentLine {
        access,
        sectors,
        kind,
        file,
        offset,
        line: lineno,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_qemu_descriptor() {
        let t = b"# Disk DescriptorFile\nversion=1\nCID=e6bc7d84\nparentCID=ffffffff\n\
createType=\"twoGbMaxExtentFlat\"\n\n# Extent description\nRW 10241 FLAT \"a b-f001.vmdk\" 0\r\n\
RDONLY 20 ZERO\nRW 5 VMFS \"x-flat.vmdk\"\n\n#DDB\nddb.adapterType = \"ide\"\n\0\0\0junk";
        let d = parse("t.vmdk", t).unwrap();
        assert_eq!(d.cid, Some(0xe6bc7d84));
        assert!(!d.has_parent());
        assert_eq!(d.create_type.as_deref(), Some("twoGbMaxExtentFlat"));
        assert_eq!(d.extents.len(), 3);
        assert_eq!(d.extents[0].file.as_deref(), Some("a b-f001.vmdk"));
        assert_eq!(d.extents[0].kind, ExtentType::Flat);
        assert_eq!(d.extents[1].kind, ExtentType::Zero);
        assert_eq!(d.extents[1].access, Access::ReadOnly);
        assert_eq!(d.extents[2].kind, ExtentType::Vmfs);
        assert_eq!(d.ddb("ddb.adapterType"), Some("ide"));
        assert_eq!(d.total_bytes(), Some((10241 + 20 + 5) * 512));
        assert!(d.warnings.is_empty(), "{:?}", d.warnings);
    }

    #[test]
    fn rejects_bad_lines_and_overflow() {
        assert!(parse("t", b"RW x SPARSE \"a\"\n").is_err());
        assert!(parse("t", b"RW 1 SPARSE \"a\n").is_err());
        assert!(parse("t", b"RW 1 SPARSE\n").is_err());
        assert!(parse("t", b"CID=zz\n").is_err());
        let d = parse("t", b"RW 18446744073709551615 ZERO\n").unwrap();
        assert_eq!(d.total_bytes(), None);
        let d = parse(
            "t",
            b"parentCID=12345678\nparentFileNameHint=\"base.vmdk\"\n",
        )
        .unwrap();
        assert!(d.has_parent());
        assert_eq!(d.parent_hint.as_deref(), Some("base.vmdk"));
    }
}
