//! Differencing VHDs: finding the parent named by the dynamic disk header (parent unicode name
//! and parent locators) inside the image's directory, opening it, and checking its identity.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::footer::{decode_utf16, uuid_text, DynHeader, Locator};
use crate::error::{Error, Result};
use crate::image::storage::{read_vec, Storage};
use crate::image::{open_storage, BlockDevice, Format, OpenContext};

/// Longest parent locator payload read (a Windows path of 32767 UTF-16 units fits).
const MAX_LOCATOR_BYTES: u64 = 64 * 1024;

/// A reference to the parent, in the order it is tried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParentRef {
    /// Where it came from ("W2ru locator", "parent name", ...).
    pub source: String,
    /// The path as written in the image.
    pub written: String,
    /// What is handed to the resolver (relative paths, or a bare file name).
    pub lookup: Vec<String>,
}

/// What the header says about the parent.
#[derive(Debug, Clone)]
pub struct ParentInfo {
    pub name: String,
    pub refs: Vec<ParentRef>,
    /// Locators that could not be read.
    pub problems: Vec<String>,
}

impl ParentInfo {
    /// A short description for messages: the parent name and where the locators point.
    pub fn describe(&self) -> String {
        let mut s = if self.name.is_empty() {
            "a parent".to_string()
        } else {
            format!("parent \"{}\"", self.name)
        };
        let locs: Vec<String> = self
            .refs
            .iter()
            .filter(|r| r.source != "parent name")
            .map(|r| format!("{} \"{}\"", r.source, r.written))
            .collect();
        if !locs.is_empty() {
            s.push_str(&format!(" ({})", locs.join(", ")));
        }
        s
    }
}

/// Read the parent name and every parent locator of `hdr`.
pub fn parent_info(storage: &dyn Storage, hdr: &DynHeader) -> Result<ParentInfo> {
    let name = hdr.parent_name_text();
    let mut refs: Vec<ParentRef> = Vec::new();
    let mut problems = Vec::new();
    // Relative locators first: they survive copying a chain to another directory or machine.
    let mut locs: Vec<&Locator> = hdr.locators.iter().collect();
    locs.sort_by_key(|l| match &l.platform {
        b"W2ru" => 0,
        b"Wi2r" => 1,
        b"W2ku" => 2,
        b"Wi2k" => 3,
        b"MacX" => 4,
        _ => 5,
    });
    for l in locs {
        let platform = l.platform_text();
        let text = match &l.platform {
            b"W2ku" | b"W2ru" | b"Wi2r" | b"Wi2k" | b"MacX" => match read_locator(storage, l) {
                Ok(t) => t,
                Err(e) => {
                    // A damaged locator is reported, and the others are still tried.
                    problems.push(e.to_string());
                    continue;
                }
            },
            // "Mac " holds a Mac OS alias record, which names no path usable here.
            _ => continue,
        };
        let written = match &l.platform {
            b"MacX" => file_url_to_path(&text),
            _ => text,
        };
        if written.is_empty() {
            continue;
        }
        refs.push(make_ref(format!("{platform} locator"), written));
    }
    if !name.is_empty() {
        refs.push(make_ref("parent name".into(), name.clone()));
    }
    Ok(ParentInfo {
        name,
        refs,
        problems,
    })
}

/// Read and decode one locator's payload.
fn read_locator(storage: &dyn Storage, l: &Locator) -> Result<String> {
    let what = format!("parent locator {} ({})", l.slot, l.platform_text());
    let data = read_vec(
        storage,
        l.data_offset,
        u64::from(l.data_length),
        MAX_LOCATOR_BYTES,
        &what,
    )?;
    Ok(match &l.platform {
        // Windows 2000+ locators: UTF-16 little-endian.
        b"W2ku" | b"W2ru" => decode_utf16(&data, false),
        // MacX: a UTF-8 file URL; Wi2k/Wi2r (deprecated): single-byte text.
        _ => {
            let end = data.iter().position(|&b| b == 0).unwrap_or(data.len());
            String::from_utf8_lossy(&data[..end]).into_owned()
        }
    })
}

/// "file://localhost/Users/x/p%20q.vhd" → "/Users/x/p q.vhd".
fn file_url_to_path(url: &str) -> String {
    let rest = url
        .strip_prefix("file://")
        .map(|r| r.strip_prefix("localhost").unwrap_or(r))
        .unwrap_or(url);
    percent_decode(rest)
}

fn percent_decode(s: &str) -> String {
    fn hex(c: u8) -> Option<u8> {
        (c as char).to_digit(16).map(|d| d as u8)
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.push(h * 16 + l);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Whether a path (with '/' separators) only means something on Windows: it starts with a
/// drive letter ("C:/...", "C:x") or is a UNC path ("//server/share/...").
fn windows_only(p: &str) -> bool {
    let b = p.as_bytes();
    (b.len() >= 2 && b[0].is_ascii_alphabetic() && b[1] == b':') || p.starts_with("//")
}

/// The lookups for one written reference: the path itself when it can mean something on this
/// host (relative, or a host-absolute path from a MacX locator), then its bare file name in the
/// image's directory (a chain copied together from another machine).
fn make_ref(source: String, written: String) -> ParentRef {
    let slashed = written.replace('\\', "/");
    let mut lookup = Vec::new();
    if !windows_only(&slashed) {
        lookup.push(slashed.clone());
    }
    if let Some(base) = slashed.rsplit('/').next() {
        if !base.is_empty() && base != "." && base != ".." && !lookup.iter().any(|l| l == base) {
            lookup.push(base.to_string());
        }
    }
    ParentRef {
        source,
        written,
        lookup,
    }
}

/// Find the parent file inside the image's directory. A reference that resolves outside the
/// directory is refused; the next one is tried, and if none works the refusal is the error.
pub fn resolve(
    name: &str,
    own_path: Option<&Path>,
    info: &ParentInfo,
    ctx: &OpenContext,
) -> Result<PathBuf> {
    let own = own_path.and_then(|p| p.canonicalize().ok());
    let mut refused: Option<Error> = None;
    let mut is_self = false;
    let mut tried: Vec<String> = Vec::new();
    for r in &info.refs {
        for l in &r.lookup {
            if tried.contains(l) {
                continue;
            }
            tried.push(l.clone());
            match ctx.resolver.resolve(name, "parent", l) {
                Ok(p) if own.as_deref() == Some(p.as_path()) => is_self = true,
                Ok(p) if p.is_dir() => {} // not a parent image
                // Anything else is opened, and refused there unless it is a regular file.
                Ok(p) => return Ok(p),
                Err(e @ Error::Refused { .. }) => {
                    refused.get_or_insert(e);
                }
                Err(_) => {}
            }
        }
    }
    if let Some(e) = refused {
        return Err(e);
    }
    if is_self {
        return Err(Error::corrupt(
            name,
            "differencing VHD names itself as its parent",
        ));
    }
    let mut msg = if info.refs.is_empty() {
        "differencing VHD names no parent: its parent name and parent locators are empty"
            .to_string()
    } else {
        format!(
            "the {} of this differencing VHD was not found in the image's directory (tried {})",
            info.describe(),
            tried
                .iter()
                .map(|t| format!("\"{t}\""))
                .collect::<Vec<_>>()
                .join(", ")
        )
    };
    for p in &info.problems {
        msg.push_str(&format!("; {p}"));
    }
    Err(Error::corrupt(name, msg))
}

/// An error met while opening the parent chain of `name`, named after `name` too: the user
/// gave `name`, and may not know the files behind it. Errors that already name `name` pass.
pub fn in_chain(name: &str, e: Error) -> Error {
    let (path, kind) = match &e {
        Error::Io { path, .. } | Error::Corrupt { path, .. } | Error::OutOfRange { path, .. } => {
            (path.clone(), 0)
        }
        Error::Unsupported { path, .. } => (path.clone(), 1),
        Error::Refused { path, .. } => (path.clone(), 2),
        Error::Other(_) => (String::new(), 0),
    };
    if path == name {
        return e;
    }
    let msg = format!("while opening its parent chain: {e}");
    match kind {
        1 => Error::unsupported(name, msg),
        2 => Error::refused(name, msg),
        _ => Error::corrupt(name, msg),
    }
}

/// The opened parent of a differencing VHD.
pub struct Parent {
    pub dev: Arc<dyn BlockDevice>,
    pub path: String,
}

/// Open the parent at `path` for the differencing VHD `name`, and check that it is the disk
/// the child was made from.
///
/// Decision on a UUID mismatch: refuse. The child's sectors are a delta against one exact
/// parent; any other disk (a parent that was recreated, or another disk with the same file
/// name) silently yields a corrupt guest. Hyper-V refuses such a chain too.
pub fn open_parent(
    name: &str,
    own_path: Option<&Path>,
    path: &Path,
    expected_uuid: &[u8; 16],
    ctx: &OpenContext,
) -> Result<Parent> {
    if let Some(own) = own_path.and_then(|p| p.canonicalize().ok()) {
        if own == path {
            return Err(Error::corrupt(
                name,
                "differencing VHD names itself as its parent",
            ));
        }
    }
    let child_ctx = ctx.child(name)?;
    let storage = ctx.resolver.open(name, "parent", path)?;
    let dev = open_storage(storage.clone(), &child_ctx)?;
    let pname = path.display().to_string();
    if dev.format() != Format::Vhd {
        return Err(Error::refused(
            name,
            format!(
                "parent {pname} is a {} image; the parent of a differencing VHD must be a VHD",
                dev.format()
            ),
        ));
    }
    let (pf, _) = super::locate_footer(storage.as_ref())?;
    if &pf.uuid != expected_uuid {
        return Err(Error::refused(
            name,
            format!(
                "parent {pname} is not the disk this differencing VHD was made from: its UUID is \
                 {}, the child expects {}",
                uuid_text(&pf.uuid),
                uuid_text(expected_uuid)
            ),
        ));
    }
    Ok(Parent { dev, path: pname })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_turn_into_lookups_inside_the_directory() {
        let r = make_ref("W2ku locator".into(), "C:\\VMs\\base\\parent.vhd".into());
        assert_eq!(r.lookup, vec!["parent.vhd"]);
        let r = make_ref("W2ru locator".into(), ".\\parent.vhd".into());
        assert_eq!(r.lookup, vec!["./parent.vhd", "parent.vhd"]);
        let r = make_ref("W2ru locator".into(), "..\\other\\p.vhd".into());
        assert_eq!(r.lookup, vec!["../other/p.vhd", "p.vhd"]);
        let r = make_ref("W2ku locator".into(), "\\\\server\\share\\p.vhd".into());
        assert_eq!(r.lookup, vec!["p.vhd"]);
        assert_eq!(
            file_url_to_path("file://localhost/Users/me/my%20disk.vhd"),
            "/Users/me/my disk.vhd"
        );
        assert_eq!(percent_decode("a%2"), "a%2");
    }
}
