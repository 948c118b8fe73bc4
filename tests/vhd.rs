//! VHD (qemu "vpc") reader against qemu-img: fixed and dynamic images qemu-img makes, the
//! virtual-size rule, hand-built differencing disks, and hostile headers.
#![allow(clippy::single_range_in_vec_init)]
mod common;
use common::*;

use std::path::{Path, PathBuf};

use imgcheck::image::{self, ExtentKind, OpenOptions};

const MIB: u64 = 1024 * 1024;

// ---------------------------------------------------------------------------------------------
// helpers

fn be32(b: &[u8], off: usize) -> u32 {
    u32::from_be_bytes(b[off..off + 4].try_into().unwrap())
}
fn be64(b: &[u8], off: usize) -> u64 {
    u64::from_be_bytes(b[off..off + 8].try_into().unwrap())
}
fn put32(b: &mut [u8], off: usize, v: u32) {
    b[off..off + 4].copy_from_slice(&v.to_be_bytes());
}
fn put64(b: &mut [u8], off: usize, v: u64) {
    b[off..off + 8].copy_from_slice(&v.to_be_bytes());
}

/// Recompute the checksum of the structure of `len` bytes at `at` whose checksum field is at
/// `field` (footer: 64, dynamic header: 36).
fn fix_sum(b: &mut [u8], at: usize, len: usize, field: usize) {
    put32(b, at + field, 0);
    let sum = b[at..at + len]
        .iter()
        .fold(0u32, |a, &x| a.wrapping_add(u32::from(x)));
    put32(b, at + field, !sum);
}

/// Both footers of a dynamic image (copy at 0, and at the end), or the end one of a fixed image.
fn footer_offsets(b: &[u8]) -> Vec<usize> {
    let mut v = vec![b.len() - 512];
    if &b[..8] == b"conectix" {
        v.push(0);
    }
    v
}

/// Apply `f` to every footer of the image and fix their checksums.
fn patch_footers(b: &mut [u8], f: impl Fn(&mut [u8])) {
    for off in footer_offsets(b) {
        f(&mut b[off..off + 512]);
        fix_sum(b, off, 512, 64);
    }
}

/// Apply `f` to the dynamic disk header and fix its checksum.
fn patch_header(b: &mut [u8], f: impl Fn(&mut [u8])) {
    let h = be64(b, 16) as usize;
    f(&mut b[h..h + 1024]);
    fix_sum(b, h, 1024, 36);
}

fn s(p: &Path) -> String {
    p.display().to_string()
}

/// `qemu-img convert` a pattern disk of `size` bytes to a VHD.
fn qemu_vhd(dir: &Path, name: &str, size: u64, opts: &str, seed: u64) -> PathBuf {
    let raw = dir.join(format!("{name}.src.raw"));
    make_pattern_raw(&raw, size, seed);
    let img = dir.join(name);
    qemu_img(&[
        "convert",
        "-q",
        "-f",
        "raw",
        "-O",
        "vpc",
        "-o",
        opts,
        &s(&raw),
        &s(&img),
    ]);
    std::fs::remove_file(&raw).unwrap();
    img
}

/// Assert imgcheck reads `img` as qemu-img does, and agrees on the virtual size.
fn assert_like_qemu(img: &Path, dir: &Path, subformat: &str) {
    let theirs = qemu_guest_bytes(img, Some("vpc"), dir);
    let ours = imgcheck_guest_bytes(img, dir, &[]);
    assert_same_guest(&ours, &theirs, &s(img));
    let info = imgcheck_info(img);
    let q = qemu_info(img, Some("vpc"));
    assert_eq!(info["format"], "vhd");
    assert_eq!(q["format"], "vpc");
    assert_eq!(info["subformat"], subformat);
    assert_eq!(info["virtual_size"], q["virtual-size"], "{}", s(img));
}

/// Run `imgcheck args`, expect exit status 2 and a message naming `img` and containing every
/// one of `needles`.
fn assert_fails(args: &[&str], img: &Path, needles: &[&str]) {
    let mut a: Vec<String> = args.iter().map(|x| x.to_string()).collect();
    a.push(s(img));
    if args[0] == "convert" {
        a.push(s(&img.with_extension("out.raw")));
    }
    let a: Vec<&str> = a.iter().map(|x| x.as_str()).collect();
    let o = imgcheck(&a);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{a:?}: {err}");
    assert!(
        err.contains(&s(img)),
        "message does not name the file: {err}"
    );
    for n in needles {
        assert!(err.contains(n), "message lacks \"{n}\": {err}");
    }
    assert!(!err.contains("panicked"), "{err}");
}

fn skip() -> bool {
    if !have("qemu-img") {
        eprintln!("SKIP: qemu-img not installed");
        return true;
    }
    false
}

// ---------------------------------------------------------------------------------------------
// images qemu-img makes

#[test]
fn fixed_and_dynamic_read_like_qemu() {
    if skip() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // 5 MiB + 123 (not a whole sector), 7 MiB + 9 sectors (no exact CHS geometry), 3 MiB.
    let sizes = [5 * MIB + 123, 7 * MIB + 9 * 512, 3 * MIB];
    let mut seed = 1;
    for sub in ["fixed", "dynamic"] {
        for force in ["on", "off"] {
            for size in sizes {
                seed += 1;
                let name = format!("{sub}-{force}-{size}.vhd");
                let img = qemu_vhd(
                    dir.path(),
                    &name,
                    size,
                    &format!("subformat={sub},force_size={force}"),
                    seed,
                );
                assert_like_qemu(&img, dir.path(), sub);
            }
        }
    }
}

#[test]
fn size_follows_the_creator_application_like_qemu() {
    if skip() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // qemu writes creator "qemu" and an exact CHS geometry; patch the creator and make
    // current_size disagree with the geometry.
    let base = qemu_vhd(dir.path(), "base.vhd", 9 * MIB, "subformat=dynamic", 5);
    let fixed = qemu_vhd(dir.path(), "basef.vhd", 9 * MIB, "subformat=fixed", 6);
    let apps: [&[u8; 4]; 9] = [
        b"vpc ", b"qemu", b"qem2", b"win ", b"d2v ", b"vs  ", b"wa\0\0", b"tap\0", b"CTXS",
    ];
    for (i, app) in apps.iter().enumerate() {
        for (src, sub) in [(&base, "dynamic"), (&fixed, "fixed")] {
            let img = dir.path().join(format!("app{i}-{sub}.vhd"));
            let mut b = std::fs::read(src).unwrap();
            patch_footers(&mut b, |f| {
                f[28..32].copy_from_slice(*app);
                put64(f, 48, 8 * MIB + 700);
            });
            std::fs::write(&img, &b).unwrap();
            let q = qemu_info(&img, Some("vpc"));
            let info = imgcheck_info(&img);
            assert_eq!(
                info["virtual_size"],
                q["virtual-size"],
                "creator {:?} {sub}",
                String::from_utf8_lossy(*app)
            );
            let want = if matches!(*app, b"vpc " | b"qemu") {
                let g = &b[b.len() - 512..];
                u64::from(be32(g, 56) >> 16) * u64::from(g[58]) * u64::from(g[59]) * 512
            } else {
                8 * MIB + 512
            };
            assert_eq!(info["virtual_size"], want);
        }
    }
}

#[test]
fn size_beyond_chs_uses_current_size() {
    if skip() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // Over 65535 x 16 x 255 sectors qemu writes the maximal geometry and sizes by current_size,
    // also for the "qemu" creator.
    let img = dir.path().join("big.vhd");
    qemu_img(&["create", "-q", "-f", "vpc", &s(&img), "130G"]);
    let io = |cmd: &str| run("qemu-io", &["-f", "vpc", "-c", cmd, &s(&img)]);
    io("write -P 0xa5 129G 3M");
    io("write -P 0x5a 4095k 2k");
    let q = qemu_info(&img, Some("vpc"));
    let info = imgcheck_info(&img);
    assert_eq!(info["virtual_size"], q["virtual-size"]);
    assert_eq!(info["virtual_size"], 130u64 << 30);
    // Spot-check reads against qemu through the library.
    let dev = image::open(&img, &OpenOptions::default()).unwrap();
    let mut buf = vec![0u8; 4 * MIB as usize];
    dev.read_at(&mut buf, (129 << 30) - MIB).unwrap();
    assert!(buf[..MIB as usize].iter().all(|&x| x == 0));
    assert!(buf[MIB as usize..].iter().all(|&x| x == 0xa5));
    dev.read_at(&mut buf[..4096], 4094 * 1024).unwrap();
    assert!(buf[..1024].iter().all(|&x| x == 0));
    assert!(buf[1024..3072].iter().all(|&x| x == 0x5a));
    assert!(buf[3072..4096].iter().all(|&x| x == 0));
    let data: u64 = dev
        .map(0, dev.size())
        .unwrap()
        .iter()
        .filter(|e| e.kind == ExtentKind::Data)
        .map(|e| e.length)
        .sum();
    // Blocks are 2 MiB: the 3 MiB write touches 2 blocks, the 2 KiB write straddles 2 blocks.
    assert_eq!(data, 4 * 2 * MIB);
    assert_eq!(info["allocated"], data);
}

#[test]
fn concurrent_reads_across_blocks_are_right() {
    if skip() {
        return;
    }
    use rayon::prelude::*;
    let dir = tempfile::tempdir().unwrap();
    let img = qemu_vhd(dir.path(), "c.vhd", 9 * MIB + 1000, "subformat=dynamic", 9);
    let want = qemu_guest_bytes(&img, Some("vpc"), dir.path());
    let dev = image::open(&img, &OpenOptions::default()).unwrap();
    assert_eq!(dev.size(), want.len() as u64);
    assert_eq!(dev.granularity(), 2 * MIB);
    let mut rng = Rng::new(42);
    let reads: Vec<(u64, u64)> = (0..400)
        .map(|_| {
            let off = rng.next() % dev.size();
            let len = 1 + rng.next() % (5 * MIB);
            (off, len.min(dev.size() - off))
        })
        .collect();
    reads.par_iter().for_each(|&(off, len)| {
        let mut buf = vec![0u8; len as usize];
        dev.read_at(&mut buf, off).unwrap();
        assert!(
            buf == want[off as usize..(off + len) as usize],
            "read {len} at {off}"
        );
    });
    // Past the end is an error, not a short read.
    let mut b = [0u8; 2];
    assert!(dev.read_at(&mut b, dev.size() - 1).is_err());
    // The map covers the disk, sorted and contiguous.
    let m = dev.map(123, dev.size()).unwrap();
    assert_eq!(m[0].offset, 123);
    for w in m.windows(2) {
        assert_eq!(w[0].offset + w[0].length, w[1].offset);
    }
    let last = m.last().unwrap();
    assert_eq!(last.offset + last.length, dev.size());
}

#[test]
fn partial_bitmap_reads_zeros_and_maps_unallocated() {
    if skip() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let src = qemu_vhd(dir.path(), "p.vhd", 5 * MIB, "subformat=dynamic", 11);
    let want = qemu_guest_bytes(&src, Some("vpc"), dir.path());
    let mut b = std::fs::read(&src).unwrap();
    // Block 1: keep sectors 0..16 and 1000..1500 present, clear the rest of its bitmap.
    let h = be64(&b, 16) as usize;
    let bat = be64(&b, h + 16) as usize;
    let entry = be32(&b, bat + 4);
    assert_ne!(entry, u32::MAX, "block 1 must be allocated");
    let bm = entry as usize * 512;
    b[bm..bm + 512].fill(0);
    let set = |b: &mut [u8], s: usize| b[bm + s / 8] |= 0x80 >> (s % 8);
    for sct in (0..16).chain(1000..1500) {
        set(&mut b, sct);
    }
    let img = dir.path().join("partial.vhd");
    std::fs::write(&img, &b).unwrap();
    let mut expect = want.clone();
    let blk = 2 * MIB as usize;
    for sct in 0..4096usize {
        if !(sct < 16 || (1000..1500).contains(&sct)) {
            expect[blk + sct * 512..blk + sct * 512 + 512].fill(0);
        }
    }
    let ours = imgcheck_guest_bytes(&img, dir.path(), &[]);
    assert_same_guest(&ours, &expect, "partial bitmap");
    let dev = image::open(&img, &OpenOptions::default()).unwrap();
    let m = dev.map(2 * MIB, 2 * MIB).unwrap();
    let kinds: Vec<(u64, u64, ExtentKind)> =
        m.iter().map(|e| (e.offset, e.length, e.kind)).collect();
    let b0 = 2 * MIB;
    assert_eq!(
        kinds,
        vec![
            (b0, 16 * 512, ExtentKind::Data),
            (b0 + 16 * 512, 984 * 512, ExtentKind::Unallocated),
            (b0 + 1000 * 512, 500 * 512, ExtentKind::Data),
            (
                b0 + 1500 * 512,
                (4096 - 1500) * 512,
                ExtentKind::Unallocated
            ),
        ]
    );
    // An unaligned read across the boundaries of runs.
    let mut buf = vec![0u8; 600_000];
    dev.read_at(&mut buf, b0 + 7000).unwrap();
    assert!(buf[..] == expect[(b0 + 7000) as usize..(b0 + 7000) as usize + 600_000]);
}

// ---------------------------------------------------------------------------------------------
// differencing disks, built by hand (qemu-img cannot make them)

const BLOCK: usize = 2 * MIB as usize;

struct Diff<'a> {
    size: u64,
    parent_uuid: [u8; 16],
    uuid: [u8; 16],
    parent_name: &'a str,
    w2ru: Option<&'a str>,
    w2ku: Option<&'a str>,
    /// A MacX locator: a UTF-8 file URL.
    macx: Option<&'a str>,
    /// (block, sectors present, data seed)
    blocks: Vec<(usize, Vec<std::ops::Range<usize>>, u64)>,
}

/// The UUID in the footer of a VHD.
fn uuid_of(img: &Path) -> [u8; 16] {
    let b = std::fs::read(img).unwrap();
    let f = &b[b.len() - 512..];
    f[68..84].try_into().unwrap()
}

/// Write a differencing VHD; returns the bytes each allocated block holds (all 2 MiB of it,
/// present or not).
fn write_diff(path: &Path, d: &Diff) -> Vec<(usize, Vec<u8>)> {
    let entries = (d.size as usize).div_ceil(BLOCK);
    let bat_bytes = (entries * 4).div_ceil(512) * 512;
    let mut f = vec![0u8; 512 + 1024 + bat_bytes];
    // locators, one sector each
    let mut locs: Vec<(&[u8; 4], Vec<u8>)> = Vec::new();
    if let Some(p) = d.w2ru {
        locs.push((
            b"W2ru",
            p.encode_utf16().flat_map(|u| u.to_le_bytes()).collect(),
        ));
    }
    if let Some(p) = d.w2ku {
        locs.push((
            b"W2ku",
            p.encode_utf16().flat_map(|u| u.to_le_bytes()).collect(),
        ));
    }
    if let Some(p) = d.macx {
        locs.push((b"MacX", p.as_bytes().to_vec()));
    }
    let mut hdr = vec![0u8; 1024];
    hdr[..8].copy_from_slice(b"cxsparse");
    put64(&mut hdr, 8, u64::MAX);
    put64(&mut hdr, 16, 1536);
    put32(&mut hdr, 24, 0x0001_0000);
    put32(&mut hdr, 28, entries as u32);
    put32(&mut hdr, 32, BLOCK as u32);
    hdr[40..56].copy_from_slice(&d.parent_uuid);
    let name: Vec<u8> = d
        .parent_name
        .encode_utf16()
        .flat_map(|u| u.to_be_bytes())
        .collect();
    hdr[64..64 + name.len()].copy_from_slice(&name);
    for (i, (code, data)) in locs.iter().enumerate() {
        let off = f.len();
        let mut sector = data.clone();
        sector.resize(512, 0);
        f.extend_from_slice(&sector);
        let l = 576 + i * 24;
        hdr[l..l + 4].copy_from_slice(*code);
        put32(&mut hdr, l + 4, 1);
        put32(&mut hdr, l + 8, data.len() as u32);
        put64(&mut hdr, l + 16, off as u64);
    }
    fix_sum(&mut hdr, 0, 1024, 36);
    f[512..1536].copy_from_slice(&hdr);
    for i in 0..entries {
        put32(&mut f, 1536 + i * 4, u32::MAX);
    }
    let mut stored = Vec::new();
    for (blk, present, seed) in &d.blocks {
        let at = f.len();
        put32(&mut f, 1536 + blk * 4, (at / 512) as u32);
        let mut bm = vec![0u8; 512];
        for r in present {
            for sct in r.clone() {
                bm[sct / 8] |= 0x80 >> (sct % 8);
            }
        }
        f.extend_from_slice(&bm);
        let mut data = vec![0u8; BLOCK];
        Rng::new(*seed).fill(&mut data);
        f.extend_from_slice(&data);
        stored.push((*blk, data));
    }
    let mut foot = vec![0u8; 512];
    foot[..8].copy_from_slice(b"conectix");
    put32(&mut foot, 8, 2);
    put32(&mut foot, 12, 0x0001_0000);
    put64(&mut foot, 16, 512);
    foot[28..32].copy_from_slice(b"win ");
    foot[36..40].copy_from_slice(b"Wi2k");
    put64(&mut foot, 40, d.size);
    put64(&mut foot, 48, d.size);
    put32(&mut foot, 56, 0xffff_10ff); // maximal geometry: size from current_size
    put32(&mut foot, 60, 4);
    foot[68..84].copy_from_slice(&d.uuid);
    fix_sum(&mut foot, 0, 512, 64);
    f[..512].copy_from_slice(&foot);
    f.extend_from_slice(&foot);
    std::fs::write(path, &f).unwrap();
    stored
}

/// The parent: a qemu-made dynamic VHD with an exact size (creator "qem2").
fn parent_vhd(dir: &Path, name: &str, size: u64) -> PathBuf {
    qemu_vhd(dir, name, size, "subformat=dynamic,force_size=on", 21)
}

#[test]
fn differencing_folds_the_parent_in() {
    if skip() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let size = 5 * MIB + 512;
    let parent = parent_vhd(dir.path(), "parent.vhd", size);
    let child = dir.path().join("child.vhd");
    let stored = write_diff(
        &child,
        &Diff {
            size,
            parent_uuid: uuid_of(&parent),
            uuid: [7; 16],
            parent_name: "C:\\VMs\\gone\\parent.vhd",
            w2ru: Some(".\\parent.vhd"),
            w2ku: Some("C:\\VMs\\gone\\parent.vhd"),
            macx: None,
            blocks: vec![
                (0, vec![0..10, 100..300, 4000..4096], 1),
                (2, vec![0..4096], 2),
            ],
        },
    );
    let mut expect = qemu_guest_bytes(&parent, Some("vpc"), dir.path());
    for (blk, data) in &stored {
        let present: Vec<std::ops::Range<usize>> = if *blk == 0 {
            vec![0..10, 100..300, 4000..4096]
        } else {
            vec![0..4096]
        };
        for r in present {
            for sct in r {
                let g = blk * BLOCK + sct * 512;
                if g < expect.len() {
                    expect[g..g + 512].copy_from_slice(&data[sct * 512..sct * 512 + 512]);
                }
            }
        }
    }
    let ours = imgcheck_guest_bytes(&child, dir.path(), &["--allow-backing"]);
    assert_same_guest(&ours, &expect, "differencing");

    let o = imgcheck(&["info", "--format", "json", "--allow-backing", &s(&child)]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let info: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(info["subformat"], "differencing");
    assert_eq!(info["virtual_size"], size);

    // The map: the child's present sectors are data; the rest is the parent's map.
    let opts = OpenOptions {
        allow_backing: true,
        allow_outside_dir: false,
        ..Default::default()
    };
    let dev = image::open(&child, &opts).unwrap();
    let pdev = image::open(&parent, &OpenOptions::default()).unwrap();
    let m = dev.map(0, size).unwrap();
    let mut pos = 0;
    for e in &m {
        assert_eq!(e.offset, pos);
        pos += e.length;
        // every extent is either the child's data or agrees with the parent's map
        let child_data = |g: u64| {
            let blk = (g / BLOCK as u64) as usize;
            let sct = ((g % BLOCK as u64) / 512) as usize;
            (blk == 0 && (sct < 10 || (100..300).contains(&sct) || sct >= 4000)) || blk == 2
        };
        if !child_data(e.offset) {
            let pm = pdev.map(e.offset, 1).unwrap();
            assert_eq!(pm[0].kind, e.kind, "extent at {}", e.offset);
        } else {
            assert_eq!(e.kind, ExtentKind::Data);
        }
    }
    assert_eq!(pos, size);
}

#[test]
fn differencing_is_refused_without_allow_backing_naming_the_parent() {
    if skip() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let size = 3 * MIB;
    let parent = parent_vhd(dir.path(), "base-disk.vhd", size);
    let child = dir.path().join("child.vhd");
    write_diff(
        &child,
        &Diff {
            size,
            parent_uuid: uuid_of(&parent),
            uuid: [8; 16],
            parent_name: "base-disk.vhd",
            w2ru: Some(".\\base-disk.vhd"),
            w2ku: None,
            macx: None,
            blocks: vec![(1, vec![5..6], 3)],
        },
    );
    assert_fails(
        &["info"],
        &child,
        &["base-disk.vhd", "--allow-backing", "differencing"],
    );
    assert_fails(&["convert", "-O", "raw"], &child, &["--allow-backing"]);

    // With --allow-backing but the wrong parent UUID: refused, naming both UUIDs.
    let wrong = dir.path().join("wrong.vhd");
    write_diff(
        &wrong,
        &Diff {
            size,
            parent_uuid: [0x42; 16],
            uuid: [9; 16],
            parent_name: "base-disk.vhd",
            w2ru: None,
            w2ku: None,
            macx: None,
            blocks: vec![],
        },
    );
    assert_fails(
        &["info", "--allow-backing"],
        &wrong,
        &[
            "UUID",
            "42424242-4242-4242-4242-424242424242",
            "base-disk.vhd",
        ],
    );

    // A parent that is not there.
    let orphan = dir.path().join("orphan.vhd");
    write_diff(
        &orphan,
        &Diff {
            size,
            parent_uuid: [1; 16],
            uuid: [2; 16],
            parent_name: "missing.vhd",
            w2ru: Some(".\\missing.vhd"),
            w2ku: None,
            macx: None,
            blocks: vec![],
        },
    );
    assert_fails(
        &["info", "--allow-backing"],
        &orphan,
        &["missing.vhd", "not found"],
    );
}

#[test]
fn differencing_parent_outside_the_directory_is_refused() {
    if skip() {
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let imgdir = root.path().join("images");
    let sib = root.path().join("sibling");
    std::fs::create_dir_all(&imgdir).unwrap();
    std::fs::create_dir_all(&sib).unwrap();
    // The marker is a perfectly good VHD: only the directory rule keeps it from being read.
    let size = 3 * MIB;
    let marker = parent_vhd(&sib, "marker.vhd", size);
    let child = imgdir.join("child.vhd");
    write_diff(
        &child,
        &Diff {
            size,
            parent_uuid: uuid_of(&marker),
            uuid: [3; 16],
            parent_name: "marker.vhd",
            w2ru: Some("..\\sibling\\marker.vhd"),
            w2ku: None,
            macx: None,
            blocks: vec![],
        },
    );
    assert_fails(
        &["info", "--allow-backing"],
        &child,
        &["outside", "marker.vhd"],
    );
    assert_fails(
        &["convert", "-O", "raw", "--allow-backing"],
        &child,
        &["outside"],
    );
    // An absolute locator to the marker is refused the same way.
    let abs = imgdir.join("abs.vhd");
    let target = s(&marker.canonicalize().unwrap());
    write_diff(
        &abs,
        &Diff {
            size,
            parent_uuid: uuid_of(&marker),
            uuid: [4; 16],
            parent_name: "",
            w2ru: Some(&target),
            w2ku: None,
            macx: None,
            blocks: vec![],
        },
    );
    assert_fails(&["info", "--allow-backing"], &abs, &["outside"]);
    // ... and followed only when the user says so.
    let o = imgcheck(&["info", "--allow-backing", "--allow-outside-dir", &s(&child)]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

#[test]
fn differencing_loops_are_bounded() {
    if skip() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let size = 3 * MIB;
    let a = dir.path().join("a.vhd");
    let b = dir.path().join("b.vhd");
    let mk = |path: &Path, uuid: u8, parent_uuid: u8, parent: &str| {
        write_diff(
            path,
            &Diff {
                size,
                parent_uuid: [parent_uuid; 16],
                uuid: [uuid; 16],
                parent_name: parent,
                w2ru: Some(parent),
                w2ku: None,
                macx: None,
                blocks: vec![(0, vec![0..1], 5)],
            },
        );
    };
    mk(&a, 0xa, 0xb, "b.vhd");
    mk(&b, 0xb, 0xa, "a.vhd");
    let start = std::time::Instant::now();
    assert_fails(&["info", "--allow-backing"], &a, &["deeper"]);
    assert!(start.elapsed().as_secs() < 20);
    // A disk that names itself.
    let selfp = dir.path().join("self.vhd");
    mk(&selfp, 0xc, 0xc, "self.vhd");
    assert_fails(&["info", "--allow-backing"], &selfp, &["itself"]);
}

// ---------------------------------------------------------------------------------------------
// damaged and hostile images

/// Write a patched copy of `src` as `name` and return its path.
fn patched(dir: &Path, src: &Path, name: &str, f: impl FnOnce(&mut Vec<u8>)) -> PathBuf {
    let mut b = std::fs::read(src).unwrap();
    f(&mut b);
    let p = dir.join(name);
    std::fs::write(&p, &b).unwrap();
    p
}

#[test]
fn hostile_dynamic_headers_fail_cleanly() {
    if skip() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let src = qemu_vhd(d, "ok.vhd", 5 * MIB + 123, "subformat=dynamic", 31);
    let len = std::fs::metadata(&src).unwrap().len();
    let info = ["info"];
    let conv = ["convert", "-O", "raw"];

    let p = patched(d, &src, "truncated.vhd", |b| b.truncate(3 * MIB as usize));
    assert_fails(&conv, &p, &["truncated", "block"]);
    let p = patched(d, &src, "tiny.vhd", |b| b.truncate(300));
    assert_fails(&info, &p, &["too short"]);
    let p = patched(d, &src, "nocookie.vhd", |b| {
        b[..8].copy_from_slice(b"xonectix")
    });
    assert_fails(&info, &p, &["offset 0 is missing"]);
    let p = patched(d, &src, "footsum.vhd", |b| b[300] ^= 0x40);
    assert_fails(&info, &p, &["offset 0", "checksum"]);
    let p = patched(d, &src, "hdrsum.vhd", |b| b[512 + 900] ^= 1);
    assert_fails(&info, &p, &["dynamic disk header", "checksum"]);
    let p = patched(d, &src, "hdrcookie.vhd", |b| {
        b[512..520].copy_from_slice(b"cxspar5e");
    });
    assert_fails(&info, &p, &["cxsparse"]);
    let p = patched(d, &src, "dataoff.vhd", |b| {
        patch_footers(b, |f| put64(f, 16, len + 4096))
    });
    assert_fails(&info, &p, &["dynamic disk header", "past the end"]);
    let p = patched(d, &src, "dataoff-huge.vhd", |b| {
        patch_footers(b, |f| put64(f, 16, u64::MAX - 10))
    });
    assert_fails(&info, &p, &["dynamic disk header", "past the end"]);
    let p = patched(d, &src, "tableoff.vhd", |b| {
        patch_header(b, |h| put64(h, 16, len + 512))
    });
    assert_fails(&info, &p, &["block allocation table", "past the end"]);
    let p = patched(d, &src, "entries.vhd", |b| {
        patch_header(b, |h| put32(h, 28, 1 << 31))
    });
    assert_fails(&info, &p, &["2147483648 entries", "past the end"]);
    let p = patched(d, &src, "fewentries.vhd", |b| {
        patch_header(b, |h| put32(h, 28, 1))
    });
    assert_fails(&info, &p, &["too few"]);
    for (i, bs) in [0u32, 3 << 20, 1 << 31, 256].into_iter().enumerate() {
        let p = patched(d, &src, &format!("bs{i}.vhd"), |b| {
            patch_header(b, |h| put32(h, 32, bs))
        });
        assert_fails(&info, &p, &["block size"]);
    }
    let p = patched(d, &src, "batpast.vhd", |b| {
        let h = be64(b, 16) as usize;
        let bat = be64(b, h + 16) as usize;
        put32(b, bat + 4, 0x00ff_ffff);
    });
    assert_fails(&conv, &p, &["BAT entry 1", "past the end"]);
    // info refuses it too: the image is damaged (qemu-img refuses to open it as well)
    assert_fails(&info, &p, &["BAT entry 1", "file offset 1540", "damaged"]);
    let p = patched(d, &src, "type.vhd", |b| {
        patch_footers(b, |f| put32(f, 60, 7))
    });
    assert_fails(&info, &p, &["disk type 7"]);
    let p = patched(d, &src, "huge.vhd", |b| {
        patch_footers(b, |f| {
            f[28..32].copy_from_slice(b"win ");
            put64(f, 48, 4 << 40);
        })
    });
    assert_fails(&info, &p, &["2040 GiB"]);
}

#[test]
fn damaged_end_footer_of_a_dynamic_disk_uses_the_copy_and_warns() {
    if skip() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let src = qemu_vhd(d, "ok.vhd", 5 * MIB + 123, "subformat=dynamic", 41);
    let want = qemu_guest_bytes(&src, Some("vpc"), d);
    for (name, f) in [
        (
            "endsum.vhd",
            Box::new(|b: &mut Vec<u8>| {
                let n = b.len();
                b[n - 100] ^= 1;
            }) as Box<dyn Fn(&mut Vec<u8>)>,
        ),
        (
            "endgone.vhd",
            Box::new(|b: &mut Vec<u8>| {
                let n = b.len();
                b[n - 512..].fill(0);
            }),
        ),
    ] {
        let p = patched(d, &src, name, f);
        let info = imgcheck_info(&p);
        let w = info["warnings"].to_string();
        assert!(
            w.contains("end of the file") && w.contains("offset 0"),
            "{w}"
        );
        let ours = imgcheck_guest_bytes(&p, d, &[]);
        assert_same_guest(&ours, &want, name);
    }
}

#[test]
fn fixed_disk_damage_and_old_511_byte_footers() {
    if skip() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let src = qemu_vhd(
        d,
        "f.vhd",
        5 * MIB + 123,
        "subformat=fixed,force_size=on",
        51,
    );
    let want = qemu_guest_bytes(&src, Some("vpc"), d);

    // Old Virtual PC: a 511-byte footer (its reserved last byte is zero, so the sum holds).
    let p = patched(d, &src, "short.vhd", |b| {
        b.pop();
    });
    let ours = imgcheck_guest_bytes(&p, d, &[]);
    assert_same_guest(&ours, &want, "511-byte footer");
    assert_eq!(imgcheck_info(&p)["subformat"], "fixed");

    let p = patched(d, &src, "fsum.vhd", |b| {
        let n = b.len();
        b[n - 3] ^= 1;
    });
    // A fixed disk with a bad footer checksum is still recognised by its cookie, and refused.
    assert_fails(&["info"], &p, &["footer", "checksum"]);
    let p = patched(d, &src, "fbig.vhd", |b| {
        patch_footers(b, |f| put64(f, 48, 64 * MIB))
    });
    assert_fails(&["info"], &p, &["truncated"]);
    let p = patched(d, &src, "fdyn.vhd", |b| {
        patch_footers(b, |f| put32(f, 60, 3))
    });
    assert_fails(&["info"], &p, &["offset 0 is missing"]);
}

#[test]
fn differencing_parent_found_through_macx_and_despite_a_damaged_locator() {
    if skip() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let size = 3 * MIB;
    let parent = parent_vhd(dir.path(), "my parent.vhd", size);
    let want = qemu_guest_bytes(&parent, Some("vpc"), dir.path());
    let canon = parent.canonicalize().unwrap();
    let url = format!("file://localhost{}", s(&canon).replace(' ', "%20"));
    let child = dir.path().join("mac.vhd");
    write_diff(
        &child,
        &Diff {
            size,
            parent_uuid: uuid_of(&parent),
            uuid: [5; 16],
            parent_name: "",
            w2ru: None,
            w2ku: None,
            macx: Some(&url),
            blocks: vec![],
        },
    );
    let ours = imgcheck_guest_bytes(&child, dir.path(), &["--allow-backing"]);
    assert_same_guest(&ours, &want, "MacX parent");

    // A W2ru locator whose data lies past the end of the file, then a good W2ku one.
    let child = dir.path().join("damaged-locator.vhd");
    write_diff(
        &child,
        &Diff {
            size,
            parent_uuid: uuid_of(&parent),
            uuid: [6; 16],
            parent_name: "my parent.vhd",
            w2ru: Some(".\\nothere.vhd"),
            w2ku: Some("D:\\disks\\my parent.vhd"),
            macx: None,
            blocks: vec![],
        },
    );
    let mut b = std::fs::read(&child).unwrap();
    patch_header(&mut b, |h| put64(h, 576 + 16, 1 << 40));
    std::fs::write(&child, &b).unwrap();
    let ours = imgcheck_guest_bytes(&child, dir.path(), &["--allow-backing"]);
    assert_same_guest(&ours, &want, "damaged locator");
    // When nothing is found, the damaged locator is part of the message.
    let lost = dir.path().join("lost.vhd");
    b = std::fs::read(&child).unwrap();
    patch_header(&mut b, |h| {
        h[64..576].fill(0);
        h[600..604].copy_from_slice(b"Mac ");
    });
    std::fs::write(&lost, &b).unwrap();
    assert_fails(
        &["info", "--allow-backing"],
        &lost,
        &["names no parent", "parent locator 0 (W2ru)", "past the end"],
    );
}

/// Counts the reads made of a file.
struct Counting {
    inner: image::FileStorage,
    reads: std::sync::atomic::AtomicU64,
}

impl image::Storage for Counting {
    fn name(&self) -> &str {
        self.inner.name()
    }
    fn len(&self) -> u64 {
        self.inner.len()
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<usize> {
        self.reads
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.inner.read_at(buf, offset)
    }
}

#[test]
fn a_large_read_costs_one_pread_per_block() {
    if skip() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let img = qemu_vhd(dir.path(), "r.vhd", 9 * MIB, "subformat=dynamic", 61);
    let want = qemu_guest_bytes(&img, Some("vpc"), dir.path());
    let st = std::sync::Arc::new(Counting {
        inner: image::FileStorage::open(&img).unwrap(),
        reads: Default::default(),
    });
    let ctx = image::OpenContext::new(OpenOptions::default(), image::Resolver::none());
    let dev = image::vhd::open(st.clone(), &ctx).unwrap();
    let blocks = dev.size().div_ceil(2 * MIB);
    let allocated = dev
        .map(0, dev.size())
        .unwrap()
        .iter()
        .filter(|e| e.kind == ExtentKind::Data)
        .map(|e| e.length)
        .sum::<u64>()
        .div_ceil(2 * MIB);
    assert!(allocated >= 3, "the pattern allocates most blocks");
    let mut buf = vec![0u8; dev.size() as usize];
    let before = st.reads.load(std::sync::atomic::Ordering::Relaxed);
    dev.read_at(&mut buf, 0).unwrap();
    let used = st.reads.load(std::sync::atomic::Ordering::Relaxed) - before;
    assert_same_guest(&buf, &want, "whole-disk read");
    // The map already summarised every bitmap: one pread per allocated block, none for holes.
    assert_eq!(used, allocated, "{blocks} blocks, {allocated} allocated");
}
