//! A table of hostile and broken images, each run through the `imgcheck` binary: every one must
//! give exit status 2 with a message naming what is wrong, or a failed check (exit 1) with a
//! specific message; none may panic, and each must finish within 1 s wall time and 100 MiB peak
//! RSS. References made by the images point at marker files in a sibling folder of the test's
//! own temporary directory, never at a real system file.
mod common;
use common::*;

use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

const MIB: u64 = 1024 * 1024;

fn s(p: &Path) -> String {
    p.display().to_string()
}

fn be32(b: &[u8], o: usize) -> u32 {
    u32::from_be_bytes(b[o..o + 4].try_into().unwrap())
}
fn be64(b: &[u8], o: usize) -> u64 {
    u64::from_be_bytes(b[o..o + 8].try_into().unwrap())
}
fn put_be32(b: &mut [u8], o: usize, v: u32) {
    b[o..o + 4].copy_from_slice(&v.to_be_bytes());
}
fn put_be64(b: &mut [u8], o: usize, v: u64) {
    b[o..o + 8].copy_from_slice(&v.to_be_bytes());
}
fn put_le32(b: &mut [u8], o: usize, v: u32) {
    b[o..o + 4].copy_from_slice(&v.to_le_bytes());
}
fn le32(b: &[u8], o: usize) -> usize {
    u32::from_le_bytes(b[o..o + 4].try_into().unwrap()) as usize
}

/// What a run must show.
enum Expect {
    /// Exit 2; stderr holds every word (case-insensitive).
    Error(&'static [&'static str]),
    /// Exit 1 (a check failed); stdout holds every word.
    Failed(&'static [&'static str]),
    /// Exit 0 or 1, with a warning holding every word in stdout or stderr.
    Warned(&'static [&'static str]),
}

struct Case {
    name: &'static str,
    args: Vec<String>,
    expect: Expect,
}

fn has_all(hay: &str, words: &[&str]) -> bool {
    let h = hay.to_lowercase();
    words.iter().all(|w| h.contains(&w.to_lowercase()))
}

// ---------------------------------------------------------------------------------------------
// builders

/// Apply `f` to a copy of `src` written as `dst`.
fn patched(src: &Path, dst: &Path, f: impl FnOnce(&mut Vec<u8>)) -> PathBuf {
    let mut b = std::fs::read(src).unwrap();
    f(&mut b);
    std::fs::write(dst, &b).unwrap();
    dst.to_path_buf()
}

fn qcow2(dir: &Path, name: &str, extra: &[&str], size: &str) -> PathBuf {
    let p = dir.join(name);
    let mut a = vec!["create", "-q", "-f", "qcow2"];
    a.extend_from_slice(extra);
    let ps = s(&p);
    a.push(&ps);
    a.push(size);
    qemu_img(&a);
    p
}

/// A qcow2 image with data in its first clusters (so it has L2 tables and refcounts).
fn qcow2_with_data(dir: &Path, name: &str, compress: bool) -> PathBuf {
    let raw = dir.join(format!("{name}.src"));
    make_pattern_raw(&raw, 2 * MIB, 7);
    let p = dir.join(name);
    let mut a = vec!["convert", "-q", "-f", "raw", "-O", "qcow2"];
    if compress {
        a.push("-c");
    }
    let (rs, ps) = (s(&raw), s(&p));
    a.push(&rs);
    a.push(&ps);
    qemu_img(&a);
    std::fs::remove_file(raw).unwrap();
    p
}

/// Checksum of a VHD structure (footer: field 64 in 512 bytes; dynamic header: 36 in 1024).
fn fix_sum(b: &mut [u8], at: usize, len: usize, field: usize) {
    put_be32(b, at + field, 0);
    let sum = b[at..at + len]
        .iter()
        .fold(0u32, |a, &x| a.wrapping_add(u32::from(x)));
    put_be32(b, at + field, !sum);
}

fn vhd_patch_header(b: &mut [u8], f: impl Fn(&mut [u8])) {
    let h = be64(b, 16) as usize;
    f(&mut b[h..h + 1024]);
    fix_sum(b, h, 1024, 36);
}

/// A differencing VHD of `size` bytes with no blocks of its own whose parent is `parent`
/// (locator W2ru and the Unicode parent name).
fn vhd_diff(path: &Path, size: u64, uuid: u8, parent_uuid: u8, parent: &str) {
    const BLOCK: usize = 2 * MIB as usize;
    let entries = (size as usize).div_ceil(BLOCK);
    let bat_bytes = (entries * 4).div_ceil(512) * 512;
    let mut f = vec![0u8; 512 + 1024 + bat_bytes];
    let loc: Vec<u8> = parent
        .encode_utf16()
        .flat_map(|u| u.to_le_bytes())
        .collect();
    let mut hdr = vec![0u8; 1024];
    hdr[..8].copy_from_slice(b"cxsparse");
    put_be64(&mut hdr, 8, u64::MAX);
    put_be64(&mut hdr, 16, 1536);
    put_be32(&mut hdr, 24, 0x0001_0000);
    put_be32(&mut hdr, 28, entries as u32);
    put_be32(&mut hdr, 32, BLOCK as u32);
    hdr[40..56].copy_from_slice(&[parent_uuid; 16]);
    let name: Vec<u8> = parent
        .encode_utf16()
        .flat_map(|u| u.to_be_bytes())
        .collect();
    hdr[64..64 + name.len()].copy_from_slice(&name);
    let off = f.len();
    let mut sector = loc.clone();
    sector.resize(512, 0);
    f.extend_from_slice(&sector);
    hdr[576..580].copy_from_slice(b"W2ru");
    put_be32(&mut hdr, 580, 1);
    put_be32(&mut hdr, 584, loc.len() as u32);
    put_be64(&mut hdr, 592, off as u64);
    fix_sum(&mut hdr, 0, 1024, 36);
    f[512..1536].copy_from_slice(&hdr);
    for i in 0..entries {
        put_be32(&mut f, 1536 + i * 4, u32::MAX);
    }
    let mut foot = vec![0u8; 512];
    foot[..8].copy_from_slice(b"conectix");
    put_be32(&mut foot, 8, 2);
    put_be32(&mut foot, 12, 0x0001_0000);
    put_be64(&mut foot, 16, 512);
    foot[28..32].copy_from_slice(b"win ");
    foot[36..40].copy_from_slice(b"Wi2k");
    put_be64(&mut foot, 40, size);
    put_be64(&mut foot, 48, size);
    put_be32(&mut foot, 56, 0xffff_10ff);
    put_be32(&mut foot, 60, 4);
    foot[68..84].copy_from_slice(&[uuid; 16]);
    fix_sum(&mut foot, 0, 512, 64);
    f[..512].copy_from_slice(&foot);
    f.extend_from_slice(&foot);
    std::fs::write(path, &f).unwrap();
}

fn vmdk_descriptor(path: &Path, extents: &str) {
    let text = format!(
        "# Disk DescriptorFile\nversion=1\nCID=fffffffe\nparentCID=ffffffff\n\
         createType=\"monolithicFlat\"\n\n# Extent description\n{extents}\n\n\
         # The Disk Data Base\n#DDB\n\nddb.virtualHWVersion = \"4\"\n\
         ddb.geometry.cylinders = \"2\"\nddb.geometry.heads = \"16\"\n\
         ddb.geometry.sectors = \"63\"\nddb.adapterType = \"ide\"\n"
    );
    std::fs::write(path, text).unwrap();
}

/// An MBR sector with `entries` (boot flag, type, first LBA, sectors).
fn mbr(entries: &[(u8, u8, u32, u32)]) -> Vec<u8> {
    let mut b = vec![0u8; 512];
    put_le32(&mut b, 440, 0x1A2B_3C4D);
    for (i, &(boot, t, start, n)) in entries.iter().enumerate() {
        let e = 446 + i * 16;
        b[e] = boot;
        b[e + 1..e + 4].copy_from_slice(&[0xfe, 0xff, 0xff]);
        b[e + 4] = t;
        b[e + 5..e + 8].copy_from_slice(&[0xfe, 0xff, 0xff]);
        put_le32(&mut b, e + 8, start);
        put_le32(&mut b, e + 12, n);
    }
    b[510] = 0x55;
    b[511] = 0xaa;
    b
}

/// A sparse raw disk of `size` bytes whose sectors `sectors` hold the given bytes.
fn raw_disk(path: &Path, size: u64, sectors: &[(u64, Vec<u8>)]) -> PathBuf {
    use std::os::unix::fs::FileExt;
    let f = std::fs::File::create(path).unwrap();
    f.set_len(size).unwrap();
    for (lba, data) in sectors {
        f.write_all_at(data, lba * 512).unwrap();
    }
    path.to_path_buf()
}

/// Decompress a fixture to `dst` with xz (streamed: this process stays small, so the peak RSS
/// the kernel hands down to the spawned imgcheck stays small too).
fn unxz(name: &str, dst: &Path) {
    let src = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(name);
    let st = Command::new("xz")
        .arg("-dc")
        .arg(&src)
        .stdout(std::fs::File::create(dst).unwrap())
        .status()
        .expect("run xz");
    assert!(st.success());
}

/// Patch `len` bytes at `at` of the file at `path` in place.
fn patch_at(path: &Path, at: u64, f: impl FnOnce(&mut [u8]), len: usize) {
    use std::os::unix::fs::FileExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let mut b = vec![0u8; len];
    file.read_exact_at(&mut b, at).unwrap();
    f(&mut b);
    file.write_all_at(&b, at).unwrap();
}

/// Offset in the disk file of the hive whose first 4 KiB equal `hive`'s (read 1 MiB at a time).
fn find_hive(disk: &Path, hive: &[u8]) -> u64 {
    use std::os::unix::fs::FileExt;
    let f = std::fs::File::open(disk).unwrap();
    let mut buf = vec![0u8; MIB as usize + 4096];
    let mut pos = 0u64;
    loop {
        let n = f.read_at(&mut buf, pos).unwrap();
        assert!(n >= 4096, "hive not found in the disk");
        let mut o = 0;
        while o + 4096 <= n {
            if buf[o..o + 4096] == hive[..4096] {
                return pos + o as u64;
            }
            o += 512;
        }
        pos += MIB;
    }
}

// ---------------------------------------------------------------------------------------------

fn cases(dir: &Path, outside: &Path) -> Vec<Case> {
    let marker = outside.join("marker.raw");
    std::fs::write(&marker, vec![0x4du8; MIB as usize]).unwrap();
    std::fs::write(outside.join("marker.vhd"), b"secret").unwrap();
    let mut v: Vec<Case> = Vec::new();
    let info = |p: &Path| vec!["info".to_string(), s(p)];
    let info_b = |p: &Path| vec!["info".to_string(), "--allow-backing".to_string(), s(p)];
    let verify = |p: &Path| vec!["verify".to_string(), "--quiet".to_string(), s(p)];
    let convert = |p: &Path| {
        vec![
            "convert".to_string(),
            "--quiet".to_string(),
            "-O".to_string(),
            "raw".to_string(),
            s(p),
            s(&p.with_extension("out.raw")),
        ]
    };

    // ---- qcow2
    let base_marker = outside.join("base.qcow2");
    qemu_img(&["create", "-q", "-f", "qcow2", &s(&base_marker), "4M"]);
    let p = qcow2(
        dir,
        "backing-outside.qcow2",
        &["-b", "../outside/base.qcow2", "-F", "qcow2", "-u"],
        "4M",
    );
    v.push(Case {
        name: "qcow2 backing file outside the directory",
        args: info_b(&p),
        expect: Expect::Error(&["outside", "base.qcow2"]),
    });
    let p = qcow2(
        dir,
        "backing-absolute.qcow2",
        &["-b", &s(&marker), "-F", "raw", "-u"],
        "4M",
    );
    v.push(Case {
        name: "qcow2 absolute backing path",
        args: info_b(&p),
        expect: Expect::Error(&["outside", "marker.raw"]),
    });
    v.push(Case {
        name: "qcow2 backing file without --allow-backing",
        args: info(&p),
        expect: Expect::Error(&["backing", "marker.raw"]),
    });
    symlink(&marker, dir.join("link.raw")).unwrap();
    let p = qcow2(
        dir,
        "backing-symlink.qcow2",
        &["-b", "link.raw", "-F", "raw", "-u"],
        "4M",
    );
    v.push(Case {
        name: "qcow2 backing file through a symlink out of the directory",
        args: info_b(&p),
        expect: Expect::Error(&["outside", "link.raw"]),
    });
    // qemu-img create -o data_file=X creates and truncates X: X is in the test's outside folder.
    let p = qcow2(
        dir,
        "data-file.qcow2",
        &["-o", &format!("data_file={}", s(&outside.join("data.raw")))],
        "4M",
    );
    v.push(Case {
        name: "qcow2 external data file",
        args: info(&p),
        expect: Expect::Error(&["data file"]),
    });
    let good = qcow2(dir, "good.qcow2", &[], "4M");
    let p = patched(&good, &dir.join("encrypted.qcow2"), |b| put_be32(b, 32, 1));
    v.push(Case {
        name: "qcow2 AES encryption",
        args: info(&p),
        expect: Expect::Error(&["encrypt"]),
    });
    let p = patched(&good, &dir.join("l1-huge.qcow2"), |b| {
        put_be32(b, 36, 0x7fff_ffff)
    });
    v.push(Case {
        name: "qcow2 L1 table of 2^31 entries",
        args: info(&p),
        expect: Expect::Error(&["l1"]),
    });
    let p = patched(&good, &dir.join("cluster-bits.qcow2"), |b| {
        put_be32(b, 20, 40)
    });
    v.push(Case {
        name: "qcow2 cluster_bits 40",
        args: info(&p),
        expect: Expect::Error(&["cluster"]),
    });
    let p = patched(&good, &dir.join("l1-past-end.qcow2"), |b| {
        put_be64(b, 40, 1 << 40)
    });
    v.push(Case {
        name: "qcow2 L1 table past the end of the file",
        args: info(&p),
        expect: Expect::Error(&["l1 table", "past the end"]),
    });
    let data = qcow2_with_data(dir, "data.qcow2", false);
    // The first L1 entry points its L2 table at the L1 table itself (L1 entries would be read
    // as L2 entries, i.e. as data cluster pointers to the L2 tables).
    let p = patched(&data, &dir.join("l2-at-l1.qcow2"), |b| {
        let l1 = be64(b, 40);
        put_be64(b, l1 as usize, 0x8000_0000_0000_0000 | l1);
    });
    v.push(Case {
        name: "qcow2 L2 table pointer loops back to the L1 table",
        args: convert(&p),
        expect: Expect::Error(&["overlaps the L1 table"]),
    });
    // An L1 entry far past the end of the file.
    let p = patched(&data, &dir.join("l2-past-end.qcow2"), |b| {
        let l1 = be64(b, 40) as usize;
        put_be64(b, l1, 0x8000_0000_0000_0000 | (1 << 50));
    });
    v.push(Case {
        name: "qcow2 L2 table past the end of the file",
        args: convert(&p),
        expect: Expect::Error(&["l2"]),
    });
    let comp = qcow2_with_data(dir, "comp.qcow2", true);
    let p = patched(&comp, &dir.join("compressed-garbage.qcow2"), |b| {
        // Overwrite every cluster after the metadata with garbage (compressed data streams).
        let cb = be32(b, 20);
        let cs = 1usize << cb;
        let start = 4 * cs;
        let mut r = Rng::new(99);
        let n = b.len();
        r.fill(&mut b[start.min(n)..]);
    });
    v.push(Case {
        name: "qcow2 compressed clusters holding garbage",
        args: convert(&p),
        expect: Expect::Error(&["compressed"]),
    });

    // ---- VHD
    vhd_diff(
        &dir.join("parent-outside.vhd"),
        4 * MIB,
        1,
        2,
        "../outside/marker.vhd",
    );
    v.push(Case {
        name: "VHD parent outside the directory",
        args: info_b(&dir.join("parent-outside.vhd")),
        expect: Expect::Error(&["outside", "marker.vhd"]),
    });
    vhd_diff(&dir.join("loop-a.vhd"), 4 * MIB, 0xa, 0xb, "loop-b.vhd");
    vhd_diff(&dir.join("loop-b.vhd"), 4 * MIB, 0xb, 0xa, "loop-a.vhd");
    v.push(Case {
        name: "VHD parent loop (a -> b -> a)",
        args: info_b(&dir.join("loop-a.vhd")),
        expect: Expect::Error(&["deeper"]),
    });
    let dynv = dir.join("dyn.vhd");
    qemu_img(&["create", "-q", "-f", "vpc", &s(&dynv), "8M"]);
    let p = patched(&dynv, &dir.join("bat-huge.vhd"), |b| {
        vhd_patch_header(b, |h| put_be32(h, 28, 0xffff_fff0))
    });
    v.push(Case {
        name: "VHD BAT of 2^32 entries",
        args: info(&p),
        expect: Expect::Error(&["bat"]),
    });
    let p = patched(&dynv, &dir.join("block-huge.vhd"), |b| {
        vhd_patch_header(b, |h| put_be32(h, 32, 0x8000_0000))
    });
    v.push(Case {
        name: "VHD block size 2 GiB",
        args: info(&p),
        expect: Expect::Error(&["block size"]),
    });
    let p = patched(&dynv, &dir.join("checksum.vhd"), |b| {
        let h = be64(b, 16) as usize;
        b[h + 36] ^= 0xff; // dynamic header checksum
    });
    v.push(Case {
        name: "VHD dynamic header with a bad checksum",
        args: info(&p),
        expect: Expect::Error(&["checksum"]),
    });

    // ---- VMDK
    vmdk_descriptor(
        &dir.join("extent-absolute.vmdk"),
        &format!("RW 2048 FLAT \"{}\" 0", s(&marker)),
    );
    v.push(Case {
        name: "VMDK extent with an absolute path",
        args: info(&dir.join("extent-absolute.vmdk")),
        expect: Expect::Error(&["outside", "marker.raw"]),
    });
    vmdk_descriptor(
        &dir.join("extent-dotdot.vmdk"),
        "RW 2048 FLAT \"../outside/marker.raw\" 0",
    );
    v.push(Case {
        name: "VMDK extent ../",
        args: info(&dir.join("extent-dotdot.vmdk")),
        expect: Expect::Error(&["outside", "marker.raw"]),
    });
    vmdk_descriptor(&dir.join("extent-link.vmdk"), "RW 2048 FLAT \"link.raw\" 0");
    v.push(Case {
        name: "VMDK extent through a symlink",
        args: info(&dir.join("extent-link.vmdk")),
        expect: Expect::Error(&["outside", "link.raw"]),
    });
    vmdk_descriptor(&dir.join("self.vmdk"), "RW 2048 SPARSE \"self.vmdk\"");
    v.push(Case {
        name: "VMDK descriptor naming itself as its extent",
        args: info(&dir.join("self.vmdk")),
        expect: Expect::Error(&["self.vmdk"]),
    });
    let sparse = dir.join("sparse.vmdk");
    qemu_img(&["create", "-q", "-f", "vmdk", &s(&sparse), "8M"]);
    let p = patched(&sparse, &dir.join("gt-huge.vmdk"), |b| {
        b[44..48].copy_from_slice(&0x4000_0000u32.to_le_bytes())
    });
    v.push(Case {
        name: "VMDK 2^30 grain table entries",
        args: info(&p),
        expect: Expect::Error(&["grain"]),
    });
    let p = patched(&sparse, &dir.join("grain-size.vmdk"), |b| {
        b[20..28].copy_from_slice(&(1u64 << 40).to_le_bytes())
    });
    v.push(Case {
        name: "VMDK grain size 2^40 sectors",
        args: info(&p),
        expect: Expect::Error(&["grain"]),
    });
    let stream =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/good-mbr.streamOptimized.vmdk");
    let p = patched(&stream, &dir.join("stream-markers.vmdk"), |b| {
        // Garbage over everything after the header and descriptor: grain markers, tables, footer.
        let keep = 64 * 1024;
        let mut r = Rng::new(5);
        let n = b.len();
        r.fill(&mut b[keep..n - 1536]);
    });
    v.push(Case {
        name: "VMDK stream with garbage markers",
        args: convert(&p),
        expect: Expect::Error(&["stream-markers.vmdk"]),
    });
    let vhdx = dir.join("disk.vhdx");
    qemu_img(&["create", "-q", "-f", "vhdx", &s(&vhdx), "8M"]);
    v.push(Case {
        name: "VHDX refused",
        args: info(&vhdx),
        expect: Expect::Error(&["vhdx"]),
    });

    // ---- partition tables (4 MiB sparse raw disks)
    let disk = 4 * MIB;
    let p = raw_disk(
        &dir.join("overlap.raw"),
        disk,
        &[(0, mbr(&[(0x80, 7, 2048, 4096), (0, 7, 4096, 2048)]))],
    );
    v.push(Case {
        name: "MBR partitions overlap",
        args: verify(&p),
        expect: Expect::Failed(&["overlap"]),
    });
    let p = raw_disk(
        &dir.join("past-end.raw"),
        disk,
        &[(0, mbr(&[(0x80, 7, 2048, 100_000)]))],
    );
    v.push(Case {
        name: "MBR partition past the end of the disk",
        args: verify(&p),
        expect: Expect::Failed(&["end"]),
    });
    let mut ebr = mbr(&[(0, 7, 63, 100), (0, 5, 0, 2000)]); // next EBR: itself (relative 0)
    ebr[440..444].fill(0);
    let p = raw_disk(
        &dir.join("ebr-loop.raw"),
        disk,
        &[
            (0, mbr(&[(0x80, 7, 2048, 2048), (0, 5, 4096, 4000)])),
            (4096, ebr),
        ],
    );
    v.push(Case {
        name: "MBR extended partition whose EBR points at itself",
        args: verify(&p),
        expect: Expect::Failed(&["loop"]),
    });
    let p = raw_disk(
        &dir.join("over-2tib.raw"),
        3 << 40,
        &[(0, mbr(&[(0x80, 7, 2048, u32::MAX - 2048)]))],
    );
    v.push(Case {
        name: "MBR disk larger than 2 TiB",
        args: verify(&p),
        expect: Expect::Failed(&["2 TiB"]),
    });
    let mut gpt = vec![0u8; 512];
    gpt[..8].copy_from_slice(b"EFI PART");
    gpt[8..12].copy_from_slice(&0x0001_0000u32.to_le_bytes());
    gpt[12..16].copy_from_slice(&92u32.to_le_bytes());
    gpt[16..20].copy_from_slice(&0xdead_beefu32.to_le_bytes()); // wrong header CRC
    let p = raw_disk(
        &dir.join("gpt-bad.raw"),
        disk,
        &[(0, mbr(&[(0, 0xee, 1, (disk / 512 - 1) as u32)])), (1, gpt)],
    );
    v.push(Case {
        name: "GPT with a bad header",
        args: verify(&p),
        expect: Expect::Failed(&["gpt"]),
    });

    // ---- NTFS (fixtures)
    let p = dir.join("bitlocker.raw");
    unxz("bitlocker.raw.xz", &p);
    v.push(Case {
        name: "NTFS: BitLocker volume",
        args: verify(&p),
        expect: Expect::Failed(&["bitlocker"]),
    });
    let p = dir.join("bad-bootsector.raw");
    unxz("bad-bootsector.raw.xz", &p);
    v.push(Case {
        name: "NTFS: bad boot sector",
        args: verify(&p),
        expect: Expect::Failed(&["boot sector"]),
    });
    let p = dir.join("bad-mft.raw");
    unxz("bad-mft-record.raw.xz", &p);
    v.push(Case {
        name: "NTFS: bad MFT record fixup",
        args: verify(&p),
        expect: Expect::Failed(&["mft"]),
    });

    // ---- hives inside the good disk
    let good_disk = dir.join("good.raw");
    unxz("good-mbr.raw.xz", &good_disk);
    let sys_path = dir.join("SYSTEM");
    unxz("hives/good/SYSTEM.xz", &sys_path);
    let sys = std::fs::read(&sys_path).unwrap();
    let at = find_hive(&good_disk, &sys);
    let p = dir.join("hive-truncated.raw");
    std::fs::copy(&good_disk, &p).unwrap();
    // Keep the header and first bin; zero the rest of the hive's bins.
    patch_at(&p, at + 8192, |b| b.fill(0), sys.len() - 8192);
    v.push(Case {
        name: "SYSTEM hive cut short (bins zeroed)",
        args: verify(&p),
        expect: Expect::Failed(&["SYSTEM"]),
    });
    // The $MFT's own $DATA run list made to claim a run of 2^31 clusters (8 TiB).
    let p = dir.join("ntfs-huge-run.raw");
    std::fs::copy(&good_disk, &p).unwrap();
    let mut boot = [0u8; 512];
    patch_at(&p, MIB, |b| boot.copy_from_slice(b), 512);
    let cluster = u64::from(u16::from_le_bytes([boot[11], boot[12]])) * u64::from(boot[13]);
    let mft = MIB + u64::from_le_bytes(boot[0x30..0x38].try_into().unwrap()) * cluster;
    patch_at(
        &p,
        mft,
        |r| {
            assert_eq!(&r[..4], b"FILE");
            let mut a = usize::from(u16::from_le_bytes([r[0x14], r[0x15]]));
            while le32(r, a) != 0x80 {
                a += le32(r, a + 4);
            }
            let runs = a + usize::from(u16::from_le_bytes([r[a + 0x20], r[a + 0x21]]));
            // header 0x41: 1-byte offset, 4-byte length; length 0x7fffffff, LCN +4, end.
            r[runs..runs + 8].copy_from_slice(&[0x41, 0xff, 0xff, 0xff, 0x7f, 0x04, 0, 0]);
        },
        1024,
    );
    v.push(Case {
        name: "NTFS: $MFT run list claiming an 8 TiB run",
        args: verify(&p),
        expect: Expect::Failed(&["does not open", "MFT record 0"]),
    });
    let p = dir.join("hive-cycle.raw");
    std::fs::rename(&good_disk, &p).unwrap();
    let root = le32(&sys, 36);
    let nk = 4096 + root;
    let list = 4096 + le32(&sys, nk + 4 + 28);
    // The root's subkey list's first entry points back at the root.
    patch_at(&p, at + list as u64 + 8, |b| put_le32(b, 0, root as u32), 4);
    drop(sys);
    v.push(Case {
        name: "SYSTEM hive subkey list cycle",
        args: verify(&p),
        expect: Expect::Failed(&["SYSTEM hive has no control set"]),
    });

    // ---- misnamed and look-alike
    let mut desc = b"# Disk DescriptorFile\nversion=1\ncreateType=\"monolithicFlat\"\nRW 8 FLAT \"../outside/marker.raw\" 0\n".to_vec();
    desc.resize(512, 0);
    let p = raw_disk(&dir.join("looks-like-vmdk.raw"), disk, &[(0, desc)]);
    v.push(Case {
        name: "raw disk whose first sector is a VMDK descriptor",
        args: info(&p),
        expect: Expect::Error(&["looks like a VMDK descriptor", "limit"]),
    });
    let mut q = std::fs::read(&good).unwrap()[..512].to_vec();
    put_be32(&mut q, 20, 99); // nonsense cluster_bits
    let p = raw_disk(&dir.join("looks-like-qcow2.raw"), disk, &[(0, q)]);
    v.push(Case {
        name: "raw disk whose first sector is a qcow2 header",
        args: info(&p),
        expect: Expect::Error(&["cluster"]),
    });
    let p = dir.join("qcow2-named.vhd");
    std::fs::copy(&good, &p).unwrap();
    v.push(Case {
        name: "a .vhd file that is qcow2",
        args: info(&p),
        expect: Expect::Warned(&["qcow2", "vhd"]),
    });
    v
}

#[test]
fn hostile_images_fail_cleanly_fast_and_small() {
    if !have("qemu-img") {
        eprintln!("SKIP: qemu-img not installed");
        return;
    }
    let top = tempfile::tempdir().unwrap();
    let dir = top.path().join("images");
    let outside = top.path().join("outside");
    std::fs::create_dir(&dir).unwrap();
    std::fs::create_dir(&outside).unwrap();
    let all = cases(&dir, &outside);
    assert!(all.len() >= 30, "only {} cases", all.len());
    let marker_before = std::fs::read(outside.join("marker.raw")).unwrap();
    let mut failures = Vec::new();
    for c in &all {
        let r = run_measured(&c.args, top.path());
        let both = format!("{}\n{}", r.stdout, r.stderr);
        let mut why = Vec::new();
        if r.stderr.contains("panicked") || r.code == Some(101) {
            why.push("panicked".to_string());
        }
        if let Some(sig) = r.signal {
            why.push(format!("killed by signal {sig}"));
        }
        if r.wall > Duration::from_secs(1) {
            why.push(format!("took {:?}", r.wall));
        }
        if r.max_rss_kib > 100 * 1024 {
            why.push(format!("peak RSS {} MiB", r.max_rss_kib / 1024));
        }
        match c.expect {
            Expect::Error(words) => {
                if r.code != Some(2) || !has_all(&r.stderr, words) {
                    why.push(format!("want exit 2 with {words:?}"));
                }
            }
            Expect::Failed(words) => {
                if r.code != Some(1) || !has_all(&r.stdout, words) {
                    why.push(format!("want exit 1 (failed check) with {words:?}"));
                }
            }
            Expect::Warned(words) => {
                if !matches!(r.code, Some(0) | Some(1))
                    || !has_all(&both, &["warning"])
                    || !has_all(&both, words)
                {
                    why.push(format!("want a warning with {words:?}"));
                }
            }
        }
        if !why.is_empty() {
            failures.push(format!(
                "{}: {} (exit {:?}, {:?}, {} KiB)\n--- stdout:\n{}\n--- stderr:\n{}",
                c.name,
                why.join("; "),
                r.code,
                r.wall,
                r.max_rss_kib,
                r.stdout.chars().take(3000).collect::<String>(),
                r.stderr.chars().take(2000).collect::<String>()
            ));
        }
    }
    // Nothing was written over the marker (qemu-img's data_file went to its own file).
    assert_eq!(
        std::fs::read(outside.join("marker.raw")).unwrap(),
        marker_before
    );
    assert!(
        failures.is_empty(),
        "{} of {} hostile cases misbehaved:\n\n{}",
        failures.len(),
        all.len(),
        failures.join("\n\n")
    );
}
