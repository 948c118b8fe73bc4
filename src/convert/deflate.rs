//! Deflate for the writers that compress: qcow2 `-c` clusters and streamOptimized VMDK grains.
//!
//! Kept apart from the pipeline because what it does (which data is worth compressing, with which
//! codec and window) is a question of its own, tuned and measured on its own.

use crate::error::{Error, Result};

/// Compresses clusters (qcow2) or grains (streamOptimized VMDK) for a writer.
///
/// Data that will not compress (already-compressed files, encrypted data, random bytes) is
/// common on real disks, and deflating it at level 6 costs as much CPU as the rest of a
/// conversion. So before the full deflate, the byte entropy of every 4 KiB block of the input
/// is measured; when every block is above [`RANDOM_BLOCK_BITS`] bits per byte, the data is taken
/// as incompressible: qcow2 stores the cluster uncompressed (what qemu does when compression does
/// not make it smaller), and VMDK, whose stream grains must be deflate streams, stores it in
/// deflate's "stored" blocks (level 0).
///
/// Why entropy and not a trial deflate of samples (the earlier probe): a cheap trial at level 1
/// uses only static Huffman codes (zlib-rs, like zlib-ng's "quick" strategy), under which plain
/// text with few repeats barely shrinks, so whole disks of text were stored raw (134.5 MB where
/// qemu-img wrote 78.6 MB, scripts/bench-sources/gen.py text). Measured on 64 MiB of each
/// benchmark source (64 KiB clusters, deflate level 6, 4 KiB window): random 4 KiB blocks measure
/// 7.94-7.96 bits per byte, text about 4.3, executables and libraries 5-7; with every block at
/// 7.8 or more, 3 of 1,024 clusters of the binaries source are skipped, none of which deflate
/// would have shrunk below 65,000 bytes, and every random cluster is skipped. A cluster that is
/// random but for one compressible 4 KiB block is still compressed. The test costs one pass over
/// the data (a histogram per block), far below a deflate.
pub struct Deflater {
    codec: Codec,
}

/// The two encodings, each with the engine that does it best (measured, see the constructors).
enum Codec {
    /// Raw deflate with a 4 KiB window, for qcow2 (zlib-rs: libdeflate has no window setting).
    Raw4k {
        main: Box<flate2::Compress>,
        stored: Box<flate2::Compress>,
    },
    /// zlib streams with the normal 32 KiB window, for VMDK grains (libdeflate).
    Zlib {
        main: Box<libdeflater::Compressor>,
        stored: Box<libdeflater::Compressor>,
    },
}

/// Size of the blocks whose entropy is measured.
const ENTROPY_BLOCK: usize = 4096;
/// Bits per byte above which a 4 KiB block is taken as random: random blocks of 4 KiB measure
/// 7.94 or more (the estimate from 4,096 samples is biased about 0.045 below 8), text about 4.3.
pub const RANDOM_BLOCK_BITS: f64 = 7.8;

/// Shannon entropy of `block`, in bits per byte.
fn entropy_bits(block: &[u8]) -> f64 {
    // Four interleaved tables keep successive increments off one counter.
    let mut counts = [[0u32; 256]; 4];
    let mut quads = block.chunks_exact(4);
    for q in &mut quads {
        counts[0][q[0] as usize] += 1;
        counts[1][q[1] as usize] += 1;
        counts[2][q[2] as usize] += 1;
        counts[3][q[3] as usize] += 1;
    }
    for &b in quads.remainder() {
        counts[0][b as usize] += 1;
    }
    let n = block.len() as f64;
    let mut sum = 0.0;
    for (((a, b), c), d) in counts[0]
        .iter()
        .zip(&counts[1])
        .zip(&counts[2])
        .zip(&counts[3])
    {
        let c = a + b + c + d;
        if c > 0 {
            let c = f64::from(c);
            sum += c * c.log2();
        }
    }
    n.log2() - sum / n
}

impl Deflater {
    /// Raw deflate with a 4 KiB window (window bits −12): qcow2's compressed clusters, as
    /// qemu's driver writes and reads them (qemu inflates with window bits −12, so a wider window
    /// would make streams it rejects). zlib-rs at `level`.
    pub fn qcow2(level: u32) -> Self {
        let raw12 = |l: u32| {
            Box::new(flate2::Compress::new_with_window_bits(
                flate2::Compression::new(l),
                false,
                12,
            ))
        };
        Deflater {
            codec: Codec::Raw4k {
                main: raw12(level),
                stored: raw12(0),
            },
        }
    }

    /// zlib streams (with header) and the standard 32 KiB window: streamOptimized VMDK grains,
    /// which VMware and qemu inflate as ordinary zlib streams. libdeflate at `level` (0-12).
    pub fn zlib(level: u32) -> Self {
        let lvl = |l: u32| {
            libdeflater::CompressionLvl::new(l as i32)
                .unwrap_or_else(|_| libdeflater::CompressionLvl::default())
        };
        Deflater {
            codec: Codec::Zlib {
                main: Box::new(libdeflater::Compressor::new(lvl(level))),
                stored: Box::new(libdeflater::Compressor::new(lvl(0))),
            },
        }
    }

    /// Whether `input` looks incompressible (see the type's documentation). Inputs shorter
    /// than one block are never judged: they are compressed for real.
    pub fn looks_incompressible(&mut self, input: &[u8]) -> bool {
        if input.len() < ENTROPY_BLOCK {
            return false;
        }
        input
            .chunks(ENTROPY_BLOCK)
            .filter(|b| b.len() == ENTROPY_BLOCK)
            .all(|b| entropy_bits(b) >= RANDOM_BLOCK_BITS)
    }

    /// Append the deflated `input` to `out` when that is smaller than `limit` bytes and return
    /// `true`; otherwise leave `out` as it was and return `false` (store the data as is).
    pub fn compress_if_smaller(
        &mut self,
        input: &[u8],
        out: &mut Vec<u8>,
        limit: usize,
    ) -> Result<bool> {
        if self.looks_incompressible(input) {
            return Ok(false);
        }
        let start = out.len();
        let done = match &mut self.codec {
            Codec::Raw4k { main, .. } => deflate_into(main, input, out, limit)?,
            Codec::Zlib { main, .. } => libdeflate_into(main, input, out)?,
        };
        if done && out.len() - start < limit {
            Ok(true)
        } else {
            out.truncate(start);
            Ok(false)
        }
    }

    /// Append a complete deflate stream of `input` to `out` (stored blocks when `input` looks
    /// incompressible).
    pub fn compress_all(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<()> {
        let incompressible = self.looks_incompressible(input);
        // Worst case of deflate: 5 bytes per 64 KiB stored block plus header and trailer.
        let bound = input.len() + input.len() / 64 + 256;
        let done = match &mut self.codec {
            Codec::Raw4k { main, stored } => {
                let c = if incompressible { stored } else { main };
                deflate_into(c, input, out, bound)?
            }
            Codec::Zlib { main, stored } => {
                let c = if incompressible { stored } else { main };
                libdeflate_into(c, input, out)?
            }
        };
        if !done {
            return Err(Error::Other(
                "deflate did not finish a grain (internal error)".into(),
            ));
        }
        Ok(())
    }
}

/// Append `input` deflated by `c` to `out`, with room for `room` bytes; whether it finished.
fn deflate_into(
    c: &mut flate2::Compress,
    input: &[u8],
    out: &mut Vec<u8>,
    room: usize,
) -> Result<bool> {
    c.reset();
    out.reserve(room);
    let status = c
        .compress_vec(input, out, flate2::FlushCompress::Finish)
        .map_err(|e| Error::Other(format!("deflate failed: {e}")))?;
    Ok(status == flate2::Status::StreamEnd)
}

/// Append `input` as a zlib stream made by libdeflate to `out`; whether it fitted the bound.
fn libdeflate_into(
    c: &mut libdeflater::Compressor,
    input: &[u8],
    out: &mut Vec<u8>,
) -> Result<bool> {
    let start = out.len();
    out.resize(start + c.zlib_compress_bound(input.len()), 0);
    match c.zlib_compress(input, &mut out[start..]) {
        Ok(n) => {
            out.truncate(start + n);
            Ok(true)
        }
        Err(libdeflater::CompressionError::InsufficientSpace) => {
            out.truncate(start);
            Ok(false)
        }
    }
}

#[cfg(test)]
mod deflater_tests {
    use super::{entropy_bits, Deflater};
    use std::io::Read;

    fn random(n: usize) -> Vec<u8> {
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    fn text(n: usize) -> Vec<u8> {
        b"MZ\x90\0 This program cannot be run in DOS mode. viostor.sys ControlSet001 "
            .iter()
            .cycle()
            .take(n)
            .copied()
            .collect()
    }

    /// Plain words with few repeats: what the old static-Huffman probe stored raw.
    fn words(n: usize) -> Vec<u8> {
        let mut x = 0x2545_F491_4F6C_DD1Du64;
        let mut out = Vec::with_capacity(n + 16);
        while out.len() < n {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let len = 2 + (x % 9) as usize;
            for k in 0..len {
                out.push(b"etaoinshrdlcumwfgypbvk"[((x >> (8 + 5 * k)) % 22) as usize]);
            }
            out.push(if x % 11 == 0 { b'\n' } else { b' ' });
        }
        out.truncate(n);
        out
    }

    #[test]
    fn probe_tells_random_from_compressible() {
        let mut d = Deflater::qcow2(6);
        assert!(d.looks_incompressible(&random(65536)));
        assert!(!d.looks_incompressible(&text(65536)));
        assert!(!d.looks_incompressible(&words(65536)));
        // Mostly random but compressible where sampled: not skipped.
        let mut mixed = random(65536);
        mixed[..4096].copy_from_slice(&text(4096));
        assert!(!d.looks_incompressible(&mixed));
        // Too small to judge: compressed for real.
        assert!(!d.looks_incompressible(&random(1024)));
    }

    #[test]
    fn plain_words_are_compressed() {
        let mut d = Deflater::qcow2(6);
        let w = words(65536);
        let mut out = Vec::new();
        assert!(d.compress_if_smaller(&w, &mut out, 65536).unwrap());
        assert!(out.len() < 65536 * 3 / 4, "{} bytes", out.len());
    }

    #[test]
    fn entropy_of_known_inputs() {
        assert!(entropy_bits(&[7u8; 4096]) < 0.001);
        let two: Vec<u8> = (0..4096).map(|i| (i % 2) as u8).collect();
        assert!((entropy_bits(&two) - 1.0).abs() < 1e-9);
        let all: Vec<u8> = (0..4096).map(|i| i as u8).collect();
        assert!((entropy_bits(&all) - 8.0).abs() < 1e-9);
        assert!(entropy_bits(&random(4096)) > 7.9);
    }

    #[test]
    fn qcow2_clusters_store_random_and_compress_text() {
        let mut d = Deflater::qcow2(6);
        let mut out = vec![1, 2, 3];
        assert!(!d
            .compress_if_smaller(&random(65536), &mut out, 65536)
            .unwrap());
        assert_eq!(out, [1, 2, 3], "nothing appended for a stored cluster");
        let t = text(65536);
        assert!(d.compress_if_smaller(&t, &mut out, 65536).unwrap());
        let mut back = Vec::new();
        flate2::read::DeflateDecoder::new(&out[3..])
            .read_to_end(&mut back)
            .unwrap();
        assert_eq!(back, t);
    }

    #[test]
    fn vmdk_grains_are_always_zlib_streams() {
        let mut d = Deflater::zlib(6);
        for data in [random(65536), text(65536)] {
            let mut out = Vec::new();
            d.compress_all(&data, &mut out).unwrap();
            let mut back = Vec::new();
            flate2::read::ZlibDecoder::new(&out[..])
                .read_to_end(&mut back)
                .unwrap();
            assert_eq!(back, data);
        }
    }
}
