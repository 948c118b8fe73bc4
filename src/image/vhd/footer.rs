//! On-disk structures of a VHD: the hard disk footer, the dynamic disk header and its parent
//! locators, their checksums, and qemu's rule for the virtual size.

use crate::error::{Error, Result};

/// Size of the footer (and of its copy at offset 0 of a dynamic disk).
pub const FOOTER_SIZE: usize = 512;
/// Some old writers (early Virtual PC) wrote a footer one byte short.
pub const SHORT_FOOTER_SIZE: usize = 511;
/// Size of the dynamic disk header.
pub const DYN_HEADER_SIZE: usize = 1024;
/// Footer cookie.
pub const COOKIE: &[u8; 8] = b"conectix";
/// Dynamic disk header cookie.
pub const DYN_COOKIE: &[u8; 8] = b"cxsparse";
/// A BAT entry for a block that is not allocated.
pub const UNALLOCATED: u32 = 0xFFFF_FFFF;

/// Largest CHS geometry (cylinders x heads x sectors per track) a footer can hold. qemu writes
/// it when the size cannot be expressed in CHS, and then always uses `current_size`.
pub const MAX_GEOMETRY_SECTORS: u64 = 65535 * 16 * 255;
/// qemu refuses images larger than 2040 GiB (`VHD_MAX_SECTORS`); so does imgcheck.
pub const MAX_SECTORS: u64 = 0xff00_0000;

/// Byte offsets of footer fields (all integers big-endian).
mod fo {
    pub const DATA_OFFSET: usize = 16;
    pub const TIMESTAMP: usize = 24;
    pub const CREATOR_APP: usize = 28;
    pub const CURRENT_SIZE: usize = 48;
    pub const CYLINDERS: usize = 56;
    pub const HEADS: usize = 58;
    pub const SECTORS: usize = 59;
    pub const DISK_TYPE: usize = 60;
    pub const CHECKSUM: usize = 64;
    pub const UUID: usize = 68;
}

/// Byte offsets of dynamic disk header fields.
mod ho {
    pub const TABLE_OFFSET: usize = 16;
    pub const MAX_TABLE_ENTRIES: usize = 28;
    pub const BLOCK_SIZE: usize = 32;
    pub const CHECKSUM: usize = 36;
    pub const PARENT_UUID: usize = 40;
    pub const PARENT_NAME: usize = 64;
    pub const PARENT_NAME_LEN: usize = 512;
    pub const LOCATORS: usize = 576;
    pub const LOCATOR_SIZE: usize = 24;
    pub const LOCATOR_COUNT: usize = 8;
}

pub fn be16(b: &[u8], off: usize) -> u16 {
    u16::from_be_bytes([b[off], b[off + 1]])
}
pub fn be32(b: &[u8], off: usize) -> u32 {
    u32::from_be_bytes([b[off], b[off + 1], b[off + 2], b[off + 3]])
}
pub fn be64(b: &[u8], off: usize) -> u64 {
    (u64::from(be32(b, off)) << 32) | u64::from(be32(b, off + 4))
}

/// The VHD checksum: ones' complement of the byte sum of `buf`, with the four bytes of the
/// checksum field at `field` counted as zero.
pub fn checksum(buf: &[u8], field: usize) -> u32 {
    let sum = buf
        .iter()
        .enumerate()
        .filter(|(i, _)| !(field..field + 4).contains(i))
        .fold(0u32, |a, (_, &b)| a.wrapping_add(u32::from(b)));
    !sum
}

/// Disk types of the footer's "disk type" field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiskType {
    Fixed,
    Dynamic,
    Differencing,
}

impl DiskType {
    pub fn from_code(code: u32) -> Option<Self> {
        match code {
            2 => Some(DiskType::Fixed),
            3 => Some(DiskType::Dynamic),
            4 => Some(DiskType::Differencing),
            _ => None,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            DiskType::Fixed => "fixed",
            DiskType::Dynamic => "dynamic",
            DiskType::Differencing => "differencing",
        }
    }
}

/// What is wrong with 511 or 512 bytes that were expected to be a footer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FooterProblem {
    NoCookie,
    Checksum { stored: u32, computed: u32 },
}

impl std::fmt::Display for FooterProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FooterProblem::NoCookie => write!(f, "no \"conectix\" cookie"),
            FooterProblem::Checksum { stored, computed } => write!(
                f,
                "checksum mismatch (stored 0x{stored:08x}, computed 0x{computed:08x})"
            ),
        }
    }
}

/// A parsed hard disk footer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Footer {
    /// The bytes as stored (511 or 512).
    pub raw: Vec<u8>,
    pub data_offset: u64,
    pub timestamp: u32,
    pub creator_app: [u8; 4],
    pub current_size: u64,
    pub cylinders: u16,
    pub heads: u8,
    pub sectors_per_track: u8,
    pub disk_type_code: u32,
    pub uuid: [u8; 16],
}

impl Footer {
    /// Parse and verify a footer (cookie and checksum).
    pub fn parse(buf: &[u8]) -> std::result::Result<Footer, FooterProblem> {
        if buf.len() < SHORT_FOOTER_SIZE || &buf[..8] != COOKIE {
            return Err(FooterProblem::NoCookie);
        }
        let stored = be32(buf, fo::CHECKSUM);
        let computed = checksum(buf, fo::CHECKSUM);
        if stored != computed {
            return Err(FooterProblem::Checksum { stored, computed });
        }
        let mut creator_app = [0u8; 4];
        creator_app.copy_from_slice(&buf[fo::CREATOR_APP..fo::CREATOR_APP + 4]);
        let mut uuid = [0u8; 16];
        uuid.copy_from_slice(&buf[fo::UUID..fo::UUID + 16]);
        Ok(Footer {
            raw: buf.to_vec(),
            data_offset: be64(buf, fo::DATA_OFFSET),
            timestamp: be32(buf, fo::TIMESTAMP),
            creator_app,
            current_size: be64(buf, fo::CURRENT_SIZE),
            cylinders: be16(buf, fo::CYLINDERS),
            heads: buf[fo::HEADS],
            sectors_per_track: buf[fo::SECTORS],
            disk_type_code: be32(buf, fo::DISK_TYPE),
            uuid,
        })
    }

    pub fn disk_type(&self) -> Option<DiskType> {
        DiskType::from_code(self.disk_type_code)
    }

    /// Sectors addressed by the CHS geometry.
    pub fn chs_sectors(&self) -> u64 {
        u64::from(self.cylinders) * u64::from(self.heads) * u64::from(self.sectors_per_track)
    }

    /// Whether qemu sizes this disk by its CHS geometry rather than `current_size`: only for
    /// the creator applications "vpc " (Virtual PC) and "qemu" (qemu without force_size).
    pub fn sized_by_chs(&self) -> bool {
        (&self.creator_app == b"vpc " || &self.creator_app == b"qemu")
            && self.chs_sectors() != MAX_GEOMETRY_SECTORS
    }

    /// Virtual size in 512-byte sectors, exactly as qemu computes it (see the module doc).
    pub fn virtual_sectors(&self) -> u64 {
        if self.sized_by_chs() {
            self.chs_sectors()
        } else {
            self.current_size / 512
        }
    }

    /// The creator application as printable text.
    pub fn creator_app_text(&self) -> String {
        self.creator_app
            .iter()
            .map(|&b| {
                if b.is_ascii_graphic() || b == b' ' {
                    b as char
                } else {
                    '.'
                }
            })
            .collect()
    }
}

/// Format a UUID as stored (big-endian byte order, as VHD writes it).
pub fn uuid_text(u: &[u8; 16]) -> String {
    let h: Vec<String> = u.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        h[0..4].concat(),
        h[4..6].concat(),
        h[6..8].concat(),
        h[8..10].concat(),
        h[10..16].concat()
    )
}

/// One parent locator entry of the dynamic disk header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Locator {
    /// Index of the entry in the header (0-7).
    pub slot: usize,
    /// Platform code ("W2ku", "W2ru", "MacX", ...).
    pub platform: [u8; 4],
    pub data_length: u32,
    pub data_offset: u64,
}

impl Locator {
    pub fn platform_text(&self) -> String {
        String::from_utf8_lossy(&self.platform).into_owned()
    }
}

/// A parsed dynamic disk header.
#[derive(Debug, Clone)]
pub struct DynHeader {
    pub table_offset: u64,
    pub max_table_entries: u32,
    pub block_size: u32,
    pub parent_uuid: [u8; 16],
    /// Raw parent unicode name (UTF-16, big-endian by the specification).
    pub parent_name: Vec<u8>,
    /// Locators whose platform code is not zero.
    pub locators: Vec<Locator>,
}

impl DynHeader {
    /// Parse and verify (cookie and checksum) a dynamic disk header read at `offset` of `name`.
    pub fn parse(name: &str, buf: &[u8], offset: u64) -> Result<DynHeader> {
        if buf.len() < DYN_HEADER_SIZE || &buf[..8] != DYN_COOKIE {
            return Err(Error::corrupt(
                name,
                format!(
                    "no dynamic disk header at offset {offset} (the footer's data offset): the \
                     \"cxsparse\" cookie is missing"
                ),
            ));
        }
        let stored = be32(buf, ho::CHECKSUM);
        let computed = checksum(&buf[..DYN_HEADER_SIZE], ho::CHECKSUM);
        if stored != computed {
            return Err(Error::corrupt(
                name,
                format!(
                    "dynamic disk header at offset {offset} is corrupt: checksum mismatch \
                     (stored 0x{stored:08x}, computed 0x{computed:08x})"
                ),
            ));
        }
        let mut parent_uuid = [0u8; 16];
        parent_uuid.copy_from_slice(&buf[ho::PARENT_UUID..ho::PARENT_UUID + 16]);
        let mut locators = Vec::new();
        for i in 0..ho::LOCATOR_COUNT {
            let l = &buf[ho::LOCATORS + i * ho::LOCATOR_SIZE..][..ho::LOCATOR_SIZE];
            let mut platform = [0u8; 4];
            platform.copy_from_slice(&l[..4]);
            if platform == [0; 4] {
                continue;
            }
            locators.push(Locator {
                slot: i,
                platform,
                data_length: be32(l, 8),
                data_offset: be64(l, 16),
            });
        }
        Ok(DynHeader {
            table_offset: be64(buf, ho::TABLE_OFFSET),
            max_table_entries: be32(buf, ho::MAX_TABLE_ENTRIES),
            block_size: be32(buf, ho::BLOCK_SIZE),
            parent_uuid,
            parent_name: buf[ho::PARENT_NAME..ho::PARENT_NAME + ho::PARENT_NAME_LEN].to_vec(),
            locators,
        })
    }

    /// The parent unicode name, decoded. The specification says UTF-16 big-endian; a name
    /// written little-endian (zero bytes at odd positions) is accepted too.
    pub fn parent_name_text(&self) -> String {
        decode_utf16(&self.parent_name, !looks_little_endian(&self.parent_name))
    }
}

/// Whether UTF-16 text of mostly ASCII characters is little-endian (its high bytes, at odd
/// positions, are the zero ones).
pub fn looks_little_endian(b: &[u8]) -> bool {
    let pairs = b.chunks_exact(2).take_while(|p| p != &[0, 0]);
    let (mut even_zero, mut odd_zero) = (0, 0);
    for p in pairs {
        even_zero += usize::from(p[0] == 0);
        odd_zero += usize::from(p[1] == 0);
    }
    odd_zero > even_zero
}

/// Decode UTF-16 text up to the first NUL.
pub fn decode_utf16(b: &[u8], big_endian: bool) -> String {
    let units: Vec<u16> = b
        .chunks_exact(2)
        .map(|p| {
            if big_endian {
                u16::from_be_bytes([p[0], p[1]])
            } else {
                u16::from_le_bytes([p[0], p[1]])
            }
        })
        .take_while(|&u| u != 0)
        .collect();
    String::from_utf16_lossy(&units)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn footer(app: &[u8; 4], size: u64, c: u16, h: u8, s: u8) -> Footer {
        let mut b = vec![0u8; FOOTER_SIZE];
        b[..8].copy_from_slice(COOKIE);
        b[fo::CREATOR_APP..fo::CREATOR_APP + 4].copy_from_slice(app);
        b[fo::CURRENT_SIZE..fo::CURRENT_SIZE + 8].copy_from_slice(&size.to_be_bytes());
        b[fo::CYLINDERS..fo::CYLINDERS + 2].copy_from_slice(&c.to_be_bytes());
        b[fo::HEADS] = h;
        b[fo::SECTORS] = s;
        b[fo::DISK_TYPE + 3] = 3;
        let c = checksum(&b, fo::CHECKSUM);
        b[fo::CHECKSUM..fo::CHECKSUM + 4].copy_from_slice(&c.to_be_bytes());
        Footer::parse(&b).unwrap()
    }

    #[test]
    fn size_rule_follows_qemu() {
        // CHS 300 x 4 x 17 = 20400 sectors; current_size says 8 MiB + 700 bytes.
        let cur = 8 * 1024 * 1024 + 700;
        for app in [b"vpc ", b"qemu"] {
            assert_eq!(footer(app, cur, 300, 4, 17).virtual_sectors(), 20400);
        }
        for app in [
            b"qem2", b"win ", b"d2v ", b"vs  ", b"wa\0\0", b"tap\0", b"CTXS", b"xyz ",
        ] {
            assert_eq!(footer(app, cur, 300, 4, 17).virtual_sectors(), cur / 512);
        }
        // The maximum geometry means "use current_size" even for qemu and Virtual PC.
        assert_eq!(
            footer(b"qemu", 200 << 30, 65535, 16, 255).virtual_sectors(),
            (200u64 << 30) / 512
        );
    }

    #[test]
    fn checksum_mismatch_and_missing_cookie_are_reported() {
        let f = footer(b"qemu", 1 << 20, 1, 4, 17);
        let mut raw = f.raw.clone();
        raw[100] ^= 1;
        assert!(matches!(
            Footer::parse(&raw),
            Err(FooterProblem::Checksum { .. })
        ));
        raw[0] = b'x';
        assert_eq!(Footer::parse(&raw), Err(FooterProblem::NoCookie));
    }

    #[test]
    fn parent_names_decode_in_either_byte_order() {
        let be: Vec<u8> = "p.vhd"
            .encode_utf16()
            .flat_map(|u| u.to_be_bytes())
            .collect();
        let le: Vec<u8> = "p.vhd"
            .encode_utf16()
            .flat_map(|u| u.to_le_bytes())
            .collect();
        assert!(!looks_little_endian(&be));
        assert!(looks_little_endian(&le));
        assert_eq!(decode_utf16(&be, true), "p.vhd");
        assert_eq!(decode_utf16(&le, false), "p.vhd");
    }
}
