//! Deflate for the writers that compress: qcow2 `-c` clusters and streamOptimized VMDK grains.
//!
//! Kept apart from the pipeline because what it does (which data is worth compressing, with which
//! codec and window) is a question of its own, tuned and measured on its own.

use crate::error::{Error, Result};

/// Compresses clusters (qcow2) or grains (streamOptimized VMDK) for a writer.
///
/// Data that will not compress (already-compressed files, encrypted data, random bytes) is
/// common on real disks, and deflating it at level 6 costs as much CPU as the rest of a
/// conversion. Before the full deflate, three 1 KiB samples (start, middle, end) are deflated
/// at level 1; when they shrink by less than 3 %, the data is taken as incompressible: qcow2
/// stores the cluster uncompressed (what qemu does when compression does not make it
/// smaller), and VMDK, whose stream grains must be deflate streams, stores it in deflate's
/// "stored" blocks (level 0). The cost: a cluster random where sampled but compressible
/// elsewhere is stored as is.
pub struct Deflater {
    main: flate2::Compress,
    stored: flate2::Compress,
    probe: flate2::Compress,
    scratch: Vec<u8>,
}

/// Size of each sample the probe deflates.
const PROBE_SAMPLE: usize = 1024;

impl Deflater {
    /// Raw deflate with a 4 KiB window (window bits −12): qcow2's compressed clusters, as
    /// qemu's driver writes and reads them.
    pub fn qcow2(level: u32) -> Self {
        let raw12 =
            |l: u32| flate2::Compress::new_with_window_bits(flate2::Compression::new(l), false, 12);
        Deflater {
            main: raw12(level),
            stored: raw12(0),
            probe: raw12(1),
            scratch: Vec::with_capacity(2 * PROBE_SAMPLE),
        }
    }

    /// zlib streams (with header): streamOptimized VMDK grains.
    pub fn zlib(level: u32) -> Self {
        let zlib = |l: u32| flate2::Compress::new(flate2::Compression::new(l), true);
        Deflater {
            main: zlib(level),
            stored: zlib(0),
            probe: flate2::Compress::new(flate2::Compression::new(1), false),
            scratch: Vec::with_capacity(2 * PROBE_SAMPLE),
        }
    }

    /// Whether `input` looks incompressible (see the type's documentation).
    pub fn looks_incompressible(&mut self, input: &[u8]) -> bool {
        if input.len() < 4 * PROBE_SAMPLE {
            return false;
        }
        let mut out = 0;
        for off in [0, input.len() / 2, input.len() - PROBE_SAMPLE] {
            self.probe.reset();
            self.scratch.clear();
            // A failure here only means "no verdict": compress for real.
            if self
                .probe
                .compress_vec(
                    &input[off..off + PROBE_SAMPLE],
                    &mut self.scratch,
                    flate2::FlushCompress::Finish,
                )
                .is_err()
            {
                return false;
            }
            out += self.scratch.len();
        }
        out * 100 >= 3 * PROBE_SAMPLE * 97
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
        out.reserve(limit);
        self.main.reset();
        let status = self
            .main
            .compress_vec(input, out, flate2::FlushCompress::Finish)
            .map_err(|e| Error::Other(format!("deflate failed: {e}")))?;
        if status == flate2::Status::StreamEnd && out.len() - start < limit {
            Ok(true)
        } else {
            out.truncate(start);
            Ok(false)
        }
    }

    /// Append a complete deflate stream of `input` to `out` (stored blocks when `input` looks
    /// incompressible).
    pub fn compress_all(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<()> {
        let c = if self.looks_incompressible(input) {
            &mut self.stored
        } else {
            &mut self.main
        };
        c.reset();
        // Worst case of deflate: 5 bytes per 64 KiB stored block plus header and trailer.
        out.reserve(input.len() + input.len() / 64 + 256);
        let status = c
            .compress_vec(input, out, flate2::FlushCompress::Finish)
            .map_err(|e| Error::Other(format!("deflate failed: {e}")))?;
        if status != flate2::Status::StreamEnd {
            return Err(Error::Other(
                "deflate did not finish a grain (internal error)".into(),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod deflater_tests {
    use super::Deflater;
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

    #[test]
    fn probe_tells_random_from_compressible() {
        let mut d = Deflater::qcow2(6);
        assert!(d.looks_incompressible(&random(65536)));
        assert!(!d.looks_incompressible(&text(65536)));
        // Mostly random but compressible where sampled: not skipped.
        let mut mixed = random(65536);
        mixed[..4096].copy_from_slice(&text(4096));
        assert!(!d.looks_incompressible(&mixed));
        // Too small to judge: compressed for real.
        assert!(!d.looks_incompressible(&random(1024)));
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
