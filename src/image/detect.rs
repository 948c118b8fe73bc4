//! Format detection by content (magic numbers), never by file name.

use std::path::Path;

use super::storage::Storage;
use super::Format;
use crate::error::Result;

/// What detection found.
#[derive(Debug, Clone)]
pub struct Detected {
    pub format: Format,
    /// Observations such as "a raw image whose first sector looks like ...".
    pub warnings: Vec<String>,
}

/// Magic numbers.
pub const QCOW_MAGIC: &[u8; 4] = b"QFI\xfb";
pub const VMDK_SPARSE_MAGIC: &[u8; 4] = b"KDMV";
pub const VMDK_COWD_MAGIC: &[u8; 4] = b"COWD";
pub const VHDX_MAGIC: &[u8; 8] = b"vhdxfile";
pub const VHD_COOKIE: &[u8; 8] = b"conectix";

/// A text descriptor larger than this is not taken for one (real ones are a few hundred bytes).
const MAX_DESCRIPTOR_FILE: u64 = 1 << 20;

/// Whether `head` is the start of a VMDK text descriptor. The signature line
/// `# Disk DescriptorFile` decides alone; without it (qemu also accepts a first line of
/// `version=1`), only a small file that names a createType is taken for one.
pub fn looks_like_vmdk_descriptor(head: &[u8], file_len: u64) -> bool {
    let text = String::from_utf8_lossy(&head[..head.len().min(1024)]).to_ascii_lowercase();
    let t = text.trim_start_matches('\u{feff}').trim_start();
    t.starts_with("# disk descriptorfile")
        || (file_len <= MAX_DESCRIPTOR_FILE
            && (t.starts_with('#') || t.starts_with("version="))
            && t.contains("createtype"))
}

/// Detect the container format of `s` from its content.
pub fn detect(s: &dyn Storage) -> Result<Detected> {
    let mut head = [0u8; 1024];
    let n = s
        .read_at(&mut head, 0)
        .map_err(|e| crate::error::Error::io(s.name(), e))?;
    let head = &head[..n];
    let mut warnings = Vec::new();
    let format = if head.starts_with(QCOW_MAGIC) {
        Format::Qcow2
    } else if head.starts_with(VHDX_MAGIC) {
        Format::Vhdx
    } else if head.starts_with(VMDK_SPARSE_MAGIC) || head.starts_with(VMDK_COWD_MAGIC) {
        Format::Vmdk
    } else if head.starts_with(VHD_COOKIE) {
        // Dynamic and differencing VHDs start with a copy of the footer.
        Format::Vhd
    } else if looks_like_vmdk_descriptor(head, s.len()) {
        Format::Vmdk
    } else if vhd_footer_at_end(s) {
        Format::Vhd
    } else {
        Format::Raw
    };
    if format == Format::Raw {
        // A raw disk whose first bytes look like a container header is suspicious: a
        // truncated or mangled container, or a disk made to look like one.
        if head.len() >= 8 && &head[..8] == b"vhdxfile" {
            warnings.push("raw image starts with a VHDX signature".into());
        }
        if s.len() >= 512 && head.len() >= 512 && head[510] != 0x55 && head[511] != 0xaa {
            let lower = String::from_utf8_lossy(&head[..head.len().min(512)]).to_ascii_lowercase();
            if lower.contains("createtype") || lower.contains("extent description") {
                warnings.push(
                    "raw image whose first sector looks like a VMDK descriptor; treated as raw"
                        .into(),
                );
            }
        }
    }
    Ok(Detected { format, warnings })
}

/// A fixed VHD has its only header, a 512-byte footer with cookie "conectix", at the end.
/// Some old writers made a 511-byte footer.
fn vhd_footer_at_end(s: &dyn Storage) -> bool {
    let len = s.len();
    for footer_len in [512u64, 511] {
        if len < footer_len {
            continue;
        }
        let mut cookie = [0u8; 8];
        if s.read_at(&mut cookie, len - footer_len).ok() == Some(8) && &cookie == VHD_COOKIE {
            return true;
        }
    }
    false
}

/// A warning when the file name's extension names another format than the content.
pub fn extension_warning(path: &Path, format: Format) -> Option<String> {
    let ext = path.extension()?.to_str()?.to_ascii_lowercase();
    let by_name = match ext.as_str() {
        "qcow2" | "qcow" | "qcow2c" => Format::Qcow2,
        "vhd" | "vpc" => Format::Vhd,
        "vhdx" => Format::Vhdx,
        "vmdk" => Format::Vmdk,
        "raw" | "dd" | "bin" => Format::Raw,
        _ => return None,
    };
    if by_name == format {
        return None;
    }
    Some(format!(
        "file name ends in .{ext} but the content is {format}; imgcheck goes by the content"
    ))
}
