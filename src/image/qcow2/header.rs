//! The qcow2 header and its extensions (qemu docs/interop/qcow2.txt), parsed and validated
//! before anything else of the image is trusted.

use crate::error::{Error, Result};
use crate::image::storage::{read_exact_at, read_vec, Storage};

/// Smallest and largest cluster sizes qemu accepts (512 B and 2 MiB).
pub const MIN_CLUSTER_BITS: u32 = 9;
pub const MAX_CLUSTER_BITS: u32 = 21;
/// Extended L2 entries need clusters of at least 16 KiB (subclusters of at least 512 B).
pub const MIN_EXTENDED_L2_CLUSTER_BITS: u32 = 14;
/// qemu's limit on the active L1 table: 32 MiB (4 Mi entries).
pub const MAX_L1_BYTES: u64 = 32 * 1024 * 1024;

const V2_HEADER_LEN: u64 = 72;
const V3_MIN_HEADER_LEN: u64 = 104;

/// Incompatible feature bits.
pub const INCOMPAT_DIRTY: u64 = 1 << 0;
pub const INCOMPAT_CORRUPT: u64 = 1 << 1;
pub const INCOMPAT_DATA_FILE: u64 = 1 << 2;
pub const INCOMPAT_COMPRESSION: u64 = 1 << 3;
pub const INCOMPAT_EXTL2: u64 = 1 << 4;
const INCOMPAT_KNOWN: u64 = 0x1f;

/// Header extension types.
const EXT_END: u32 = 0;
const EXT_BACKING_FORMAT: u32 = 0xe279_2aca;
const EXT_FEATURE_TABLE: u32 = 0x6803_f857;
const EXT_DATA_FILE: u32 = 0x4441_5441;

/// The parts of a qcow2 header a reader needs.
#[derive(Debug, Clone)]
pub struct Header {
    pub version: u32,
    pub cluster_bits: u32,
    pub size: u64,
    pub crypt_method: u32,
    pub l1_size: u32,
    pub l1_table_offset: u64,
    pub refcount_table_offset: u64,
    pub refcount_table_clusters: u32,
    pub nb_snapshots: u32,
    pub incompatible: u64,
    pub compression_type: u8,
    pub backing_file: Option<String>,
    pub backing_format: Option<String>,
    pub data_file: Option<String>,
    /// (feature type, bit, name) from the feature name table.
    pub feature_names: Vec<(u8, u8, String)>,
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn be64(b: &[u8], at: usize) -> u64 {
    u64::from_be_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

fn string_field(s: &dyn Storage, bytes: &[u8], what: &str) -> Result<String> {
    String::from_utf8(bytes.to_vec())
        .map_err(|_| Error::corrupt(s.name(), format!("{what} is not valid UTF-8")))
}

impl Header {
    /// Read and validate the header of `s`.
    pub fn read(s: &dyn Storage) -> Result<Header> {
        let name = s.name();
        let mut h = [0u8; V3_MIN_HEADER_LEN as usize];
        let avail = s.len().min(V3_MIN_HEADER_LEN) as usize;
        if (avail as u64) < V2_HEADER_LEN {
            return Err(Error::corrupt(
                name,
                format!(
                    "file is truncated: a qcow2 header needs {V2_HEADER_LEN} bytes but the file \
                     is {} bytes long",
                    s.len()
                ),
            ));
        }
        read_exact_at(s, &mut h[..avail], 0)?;
        let version = be32(&h, 4);
        match version {
            2 | 3 => {}
            1 => {
                return Err(Error::unsupported(
                    name,
                    "this is a QCOW version 1 image (the original qcow format); only qcow2 \
                     versions 2 and 3 are read — convert it with `qemu-img convert -O qcow2`",
                ))
            }
            v => {
                return Err(Error::unsupported(
                    name,
                    format!("qcow2 version {v} is not supported (only versions 2 and 3 exist)"),
                ))
            }
        }
        let cluster_bits = be32(&h, 20);
        if !(MIN_CLUSTER_BITS..=MAX_CLUSTER_BITS).contains(&cluster_bits) {
            return Err(Error::corrupt(
                name,
                format!(
                    "qcow2 header has cluster_bits {cluster_bits}; cluster sizes from 512 bytes \
                     (9) to 2 MiB (21) are valid"
                ),
            ));
        }
        let cluster_size = 1u64 << cluster_bits;
        let header_length = if version == 2 {
            V2_HEADER_LEN
        } else {
            if (avail as u64) < V3_MIN_HEADER_LEN {
                return Err(Error::corrupt(
                    name,
                    format!(
                        "file is truncated: a qcow2 version 3 header needs {V3_MIN_HEADER_LEN} \
                         bytes but the file is {} bytes long",
                        s.len()
                    ),
                ));
            }
            let hl = be32(&h, 100) as u64;
            if hl < V3_MIN_HEADER_LEN || hl % 8 != 0 || hl > cluster_size {
                return Err(Error::corrupt(
                    name,
                    format!(
                        "qcow2 header_length {hl} is invalid (must be a multiple of 8, at least \
                         {V3_MIN_HEADER_LEN} and at most the {cluster_size}-byte cluster)"
                    ),
                ));
            }
            hl
        };
        let (incompatible, refcount_order) = if version == 3 {
            (be64(&h, 72), be32(&h, 96))
        } else {
            (0, 4)
        };
        if refcount_order > 6 {
            return Err(Error::corrupt(
                name,
                format!("qcow2 refcount_order {refcount_order} is invalid (at most 6)"),
            ));
        }
        let compression_type = if version == 3 && header_length > 104 {
            let mut b = [0u8; 1];
            read_exact_at(s, &mut b, 104)?;
            b[0]
        } else {
            0
        };
        let backing_file_offset = be64(&h, 8);
        let backing_file_size = be32(&h, 16);

        let mut hdr = Header {
            version,
            cluster_bits,
            size: be64(&h, 24),
            crypt_method: be32(&h, 32),
            l1_size: be32(&h, 36),
            l1_table_offset: be64(&h, 40),
            refcount_table_offset: be64(&h, 48),
            refcount_table_clusters: be32(&h, 56),
            nb_snapshots: be32(&h, 60),
            incompatible,
            compression_type,
            backing_file: None,
            backing_format: None,
            data_file: None,
            feature_names: Vec::new(),
        };

        // Header extensions run from the end of the header to the backing file name (or the
        // end of the first cluster).
        let ext_end = if backing_file_offset != 0 {
            backing_file_offset.min(cluster_size)
        } else {
            cluster_size
        }
        .min(s.len());
        if ext_end > header_length {
            let area = read_vec(
                s,
                header_length,
                ext_end - header_length,
                cluster_size,
                "qcow2 header extension area",
            )?;
            hdr.parse_extensions(s, &area, header_length)?;
        }

        if backing_file_offset != 0 && backing_file_size != 0 {
            if backing_file_size > 1023 {
                return Err(Error::corrupt(
                    name,
                    format!(
                        "qcow2 backing file name is {backing_file_size} bytes long (at most 1023)"
                    ),
                ));
            }
            if backing_file_offset > cluster_size {
                return Err(Error::corrupt(
                    name,
                    format!(
                        "qcow2 backing file name offset {backing_file_offset} lies outside the \
                         first cluster"
                    ),
                ));
            }
            let b = read_vec(
                s,
                backing_file_offset,
                backing_file_size as u64,
                1023,
                "qcow2 backing file name",
            )?;
            hdr.backing_file = Some(string_field(s, &b, "qcow2 backing file name")?);
        }
        Ok(hdr)
    }

    fn parse_extensions(&mut self, s: &dyn Storage, area: &[u8], area_offset: u64) -> Result<()> {
        let name = s.name();
        let mut pos = 0usize;
        // Every extension takes at least 8 bytes, so this loop ends within area.len()/8 steps.
        while pos + 8 <= area.len() {
            let ty = be32(area, pos);
            let len = be32(area, pos + 4) as usize;
            if ty == EXT_END {
                break;
            }
            let data_start = pos + 8;
            if len > area.len() - data_start {
                return Err(Error::corrupt(
                    name,
                    format!(
                        "qcow2 header extension 0x{ty:08x} at offset {} claims {len} bytes, \
                         past the end of the header area",
                        area_offset + pos as u64
                    ),
                ));
            }
            let data = &area[data_start..data_start + len];
            match ty {
                EXT_BACKING_FORMAT => {
                    self.backing_format = Some(string_field(s, data, "qcow2 backing format")?);
                }
                EXT_DATA_FILE => {
                    self.data_file = Some(string_field(s, data, "qcow2 external data file name")?);
                }
                EXT_FEATURE_TABLE => {
                    for entry in data.chunks_exact(48) {
                        let raw = &entry[2..];
                        let end = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
                        let n = String::from_utf8_lossy(&raw[..end]).into_owned();
                        self.feature_names.push((entry[0], entry[1], n));
                    }
                }
                _ => {} // bitmaps, encryption header, unknown: not needed to read guest data
            }
            pos = data_start + len.div_ceil(8) * 8;
        }
        Ok(())
    }

    pub fn cluster_size(&self) -> u64 {
        1 << self.cluster_bits
    }

    pub fn extended_l2(&self) -> bool {
        self.incompatible & INCOMPAT_EXTL2 != 0
    }

    /// Name of incompatible feature `bit`: from the image's own feature table, or the known
    /// names.
    fn incompatible_name(&self, bit: u32) -> String {
        if let Some((_, _, n)) = self
            .feature_names
            .iter()
            .find(|(t, b, _)| *t == 0 && *b as u32 == bit)
        {
            return n.clone();
        }
        match bit {
            0 => "dirty bit",
            1 => "corrupt bit",
            2 => "external data file",
            3 => "compression type",
            4 => "extended L2 entries",
            _ => "unknown",
        }
        .to_string()
    }

    /// Refuse what imgcheck cannot read: encryption, unknown incompatible features, an
    /// external data file, a compression type other than deflate. Returns warnings for what
    /// can be read with care (dirty and corrupt bits).
    pub fn check_features(&self, s: &dyn Storage) -> Result<Vec<String>> {
        let name = s.name();
        if self.crypt_method != 0 {
            let method = match self.crypt_method {
                1 => "AES",
                2 => "LUKS",
                _ => "an unknown method",
            };
            return Err(Error::refused(
                name,
                format!(
                    "qcow2 image is encrypted ({method}, crypt_method {}); imgcheck does not read \
                     encrypted images — decrypt it first, e.g. `qemu-img convert --object \
                     secret,id=k,data=PASSPHRASE --image-opts \
                     driver=qcow2,file.filename={name},encrypt.key-secret=k -O qcow2 \
                     plain.qcow2`",
                    self.crypt_method
                ),
            ));
        }
        let unknown = self.incompatible & !INCOMPAT_KNOWN;
        if unknown != 0 {
            let bit = unknown.trailing_zeros();
            return Err(Error::unsupported(
                name,
                format!(
                    "qcow2 image sets incompatible feature bit {bit} ({}), which imgcheck does \
                     not know; it cannot be read safely",
                    self.incompatible_name(bit)
                ),
            ));
        }
        if self.incompatible & INCOMPAT_DATA_FILE != 0 {
            let file = match &self.data_file {
                Some(f) => format!("\"{f}\""),
                None => "(its name is not recorded in the image)".to_string(),
            };
            return Err(Error::refused(
                name,
                format!(
                    "qcow2 image keeps its guest data in an external data file {file} \
                     (incompatible feature bit 2); imgcheck reads only self-contained images — \
                     merge it first with `qemu-img convert -O qcow2`"
                ),
            ));
        }
        if self.incompatible & INCOMPAT_COMPRESSION != 0 || self.compression_type != 0 {
            if self.incompatible & INCOMPAT_COMPRESSION == 0 {
                return Err(Error::corrupt(
                    name,
                    format!(
                        "qcow2 compression_type is {} but the compression type feature bit is \
                         not set",
                        self.compression_type
                    ),
                ));
            }
            let what = match self.compression_type {
                0 => {
                    return Err(Error::corrupt(
                        name,
                        "qcow2 compression type feature bit is set but compression_type is \
                         missing or zero",
                    ))
                }
                1 => "zstd".to_string(),
                t => format!("unknown type {t}"),
            };
            return Err(Error::unsupported(
                name,
                format!(
                    "qcow2 image uses {what} compression (incompatible feature bit 3); imgcheck \
                     reads only deflate-compressed qcow2 — recompress with `qemu-img convert -O \
                     qcow2 -o compression_type=zlib`"
                ),
            ));
        }
        if self.extended_l2() && self.cluster_bits < MIN_EXTENDED_L2_CLUSTER_BITS {
            return Err(Error::corrupt(
                name,
                format!(
                    "qcow2 image has extended L2 entries with {}-byte clusters; at least 16384 \
                     are needed",
                    self.cluster_size()
                ),
            ));
        }
        let mut warnings = Vec::new();
        if self.incompatible & INCOMPAT_DIRTY != 0 {
            warnings.push(
                "qcow2 dirty bit is set (the image was not closed cleanly): refcounts may be \
                 stale; guest data is read from the L1/L2 tables, which qemu keeps consistent"
                    .to_string(),
            );
        }
        if self.incompatible & INCOMPAT_CORRUPT != 0 {
            warnings.push(
                "qcow2 corrupt bit is set: qemu found an inconsistency in this image's metadata; \
                 what is read may be wrong — check it with `qemu-img check`"
                    .to_string(),
            );
        }
        if self.nb_snapshots != 0 {
            warnings.push(format!(
                "qcow2 image has {} internal snapshot(s); only the active state is read",
                self.nb_snapshots
            ));
        }
        Ok(warnings)
    }
}
