//! VMDK reader against qemu-img: every subformat qemu-img writes, hand-made ESXi and
//! VMware-style stream files, ZERO extents, delta disks, and hostile inputs.
mod common;
use common::*;

use std::io::Write;
use std::path::{Path, PathBuf};

use imgcheck::image::{self, ExtentKind, OpenOptions};

/// Odd virtual size: not a multiple of the 64 KiB grain nor of 512.
const ODD: u64 = 5 * 1024 * 1024 + 123;

fn s(p: &Path) -> String {
    p.display().to_string()
}

fn skip() -> bool {
    if !have("qemu-img") {
        eprintln!("SKIP: qemu-img not installed");
        return true;
    }
    false
}

/// Convert a pattern source to vmdk with qemu-img; returns the image path.
fn qemu_vmdk(dir: &Path, name: &str, opts: &str, size: u64, seed: u64) -> PathBuf {
    let src = dir.join(format!("{name}.src.raw"));
    make_pattern_raw(&src, size, seed);
    let img = dir.join(format!("{name}.vmdk"));
    qemu_img(&["convert", "-O", "vmdk", "-o", opts, &s(&src), &s(&img)]);
    std::fs::remove_file(&src).unwrap();
    img
}

/// imgcheck's guest bytes and info must match qemu-img's.
fn assert_matches_qemu(img: &Path, dir: &Path, subformat: &str) {
    let ours = imgcheck_guest_bytes(img, dir, &[]);
    let theirs = qemu_guest_bytes(img, Some("vmdk"), dir);
    assert_same_guest(&ours, &theirs, &s(img));
    let info = imgcheck_info(img);
    let q = qemu_info(img, Some("vmdk"));
    assert_eq!(info["format"], "vmdk");
    assert_eq!(q["format"], "vmdk");
    assert_eq!(info["virtual_size"], q["virtual-size"], "{}", s(img));
    assert_eq!(info["subformat"], subformat);
    assert_eq!(info["virtual_size"].as_u64().unwrap(), ours.len() as u64);
}

/// Run imgcheck info on `img`; it must fail with exit status 2 and a message holding every
/// string in `needles` (and the file's name when `name` is given).
fn assert_fails(args: &[&str], needles: &[&str]) -> String {
    let o = imgcheck(args);
    let err = String::from_utf8_lossy(&o.stderr).to_string();
    assert_eq!(o.status.code(), Some(2), "args {args:?}: stderr {err}");
    for n in needles {
        assert!(err.contains(n), "expected {n:?} in: {err}");
    }
    assert!(!err.contains("panicked"), "{err}");
    err
}

fn info_fails(img: &Path, needles: &[&str]) -> String {
    let mut n = needles.to_vec();
    let name = img.file_name().unwrap().to_string_lossy().to_string();
    n.push(&name);
    assert_fails(&["info", &s(img)], &n)
}

fn convert_fails(img: &Path, dir: &Path, needles: &[&str]) -> String {
    let out = dir.join("fail-out.raw");
    let mut n = needles.to_vec();
    let name = img.file_name().unwrap().to_string_lossy().to_string();
    n.push(&name);
    let e = assert_fails(&["convert", "-O", "raw", &s(img), &s(&out)], &n);
    assert!(!out.exists(), "a failed convert left {}", s(&out));
    e
}

fn patch(path: &Path, offset: u64, bytes: &[u8]) {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    f.write_all_at(bytes, offset).unwrap();
}

fn read_u32(path: &Path, offset: u64) -> u32 {
    let b = std::fs::read(path).unwrap();
    u32::from_le_bytes(b[offset as usize..offset as usize + 4].try_into().unwrap())
}

fn read_u64(path: &Path, offset: u64) -> u64 {
    let b = std::fs::read(path).unwrap();
    u64::from_le_bytes(b[offset as usize..offset as usize + 8].try_into().unwrap())
}

// Sparse header field offsets.
const H_VERSION: u64 = 4;
const H_FLAGS: u64 = 8;
const H_CAPACITY: u64 = 12;
const H_GRAIN: u64 = 20;
const H_GTES: u64 = 44;
const H_RGD: u64 = 48;
const H_GD: u64 = 56;
const H_CHECK: u64 = 73;

#[test]
fn every_qemu_subformat_reads_like_qemu() {
    if skip() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("monolithicSparse", ODD, 1),
        ("streamOptimized", ODD, 2),
        ("monolithicFlat", ODD, 3),
        ("twoGbMaxExtentSparse", ODD, 4),
        ("twoGbMaxExtentFlat", ODD, 5),
        // an exact multiple of the grain, and a one-sector disk
        ("monolithicSparse", 4 * 1024 * 1024, 6),
        ("streamOptimized", 512, 7),
    ];
    for (i, (sub, size, seed)) in cases.iter().enumerate() {
        let img = qemu_vmdk(
            dir.path(),
            &format!("c{i}-{sub}"),
            &format!("subformat={sub}"),
            *size,
            *seed,
        );
        assert_matches_qemu(&img, dir.path(), sub);
    }
    // twoGbMaxExtent* still makes separate extent files on a small disk
    let names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    assert!(names.iter().any(|n| n.ends_with("-s001.vmdk")), "{names:?}");
    assert!(names.iter().any(|n| n.ends_with("-f001.vmdk")), "{names:?}");
}

/// Data ranges of `qemu-img map --output=json`, merged.
fn qemu_data_ranges(img: &Path) -> Vec<(u64, u64)> {
    let o = qemu_img(&["map", "--output=json", "-f", "vmdk", &s(img)]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let mut out: Vec<(u64, u64)> = Vec::new();
    for e in v.as_array().unwrap() {
        if e["data"] == true {
            let (st, len) = (e["start"].as_u64().unwrap(), e["length"].as_u64().unwrap());
            match out.last_mut() {
                Some(l) if l.0 + l.1 == st => l.1 += len,
                _ => out.push((st, len)),
            }
        }
    }
    out
}

fn our_ranges(img: &Path, kind: ExtentKind) -> Vec<(u64, u64)> {
    let dev = image::open(img, &OpenOptions::default()).unwrap();
    let map = dev.map(0, dev.size()).unwrap();
    // sorted, contiguous, covering the disk
    let mut pos = 0;
    for e in &map {
        assert_eq!(e.offset, pos);
        pos += e.length;
    }
    assert_eq!(pos, dev.size());
    let mut out: Vec<(u64, u64)> = Vec::new();
    for e in map.iter().filter(|e| e.kind == kind) {
        match out.last_mut() {
            Some(l) if l.0 + l.1 == e.offset => l.1 += e.length,
            _ => out.push((e.offset, e.length)),
        }
    }
    out
}

#[test]
fn map_matches_qemu_map_including_zero_grains() {
    if skip() || !have("qemu-io") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let img = qemu_vmdk(
        dir.path(),
        "mapped",
        "subformat=monolithicSparse,zeroed_grain=on",
        ODD,
        11,
    );
    // Turn two allocated grains into zeroed grains (GTE 1) and allocate one more.
    run(
        "qemu-io",
        &["-f", "vmdk", "-c", "write -z 0 131072", &s(&img)],
    );
    run(
        "qemu-io",
        &["-f", "vmdk", "-c", "write -P 0x5a 3000000 70000", &s(&img)],
    );
    let data = our_ranges(&img, ExtentKind::Data);
    assert!(!data.is_empty());
    assert_eq!(data, qemu_data_ranges(&img));
    // qemu reports the zeroed grains as present zeros
    let o = qemu_img(&["map", "--output=json", "-f", "vmdk", &s(&img)]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let qzero: Vec<(u64, u64)> = v
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["zero"] == true && e["present"] == true)
        .map(|e| (e["start"].as_u64().unwrap(), e["length"].as_u64().unwrap()))
        .collect();
    assert_eq!(our_ranges(&img, ExtentKind::Zero), qzero);
    assert_eq!(qzero, vec![(0, 131072)]);
    assert_matches_qemu(&img, dir.path(), "monolithicSparse");
    // streamOptimized too
    let st = qemu_vmdk(dir.path(), "mapped-s", "subformat=streamOptimized", ODD, 12);
    assert_eq!(our_ranges(&st, ExtentKind::Data), qemu_data_ranges(&st));
}

// ---------------------------------------------------------------------------------------
// Hand-written files

fn descriptor_text(
    create_type: &str,
    cid: &str,
    parent: Option<(&str, &str)>,
    extents: &[String],
) -> String {
    let mut t = format!("# Disk DescriptorFile\nversion=1\nencoding=\"UTF-8\"\nCID={cid}\n");
    match parent {
        Some((pcid, hint)) => {
            t += &format!(
                "parentCID={pcid}\ncreateType=\"{create_type}\"\nparentFileNameHint=\"{hint}\"\n"
            )
        }
        None => t += &format!("parentCID=ffffffff\ncreateType=\"{create_type}\"\n"),
    }
    t += "\n# Extent description\n";
    for e in extents {
        t += e;
        t += "\n";
    }
    t += "\n# The Disk Data Base\n#DDB\n\nddb.adapterType = \"lsilogic\"\nddb.virtualHWVersion = \"14\"\n";
    t
}

fn write_file(path: &Path, text: &str) {
    std::fs::File::create(path)
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
}

#[test]
fn esxi_vmfs_pair_reads_like_qemu() {
    if skip() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let flat = dir.path().join("x-flat.vmdk");
    let size = 3 * 1024 * 1024 + 7 * 512; // ESXi disks are whole sectors
    make_pattern_raw(&flat, size, 21);
    let desc = dir.path().join("x.vmdk");
    write_file(
        &desc,
        &descriptor_text(
            "vmfs",
            "fffffffe",
            None,
            &[format!("RW {} VMFS \"x-flat.vmdk\"", size / 512)],
        ),
    );
    assert_matches_qemu(&desc, dir.path(), "vmfs");
    let ours = imgcheck_guest_bytes(&desc, dir.path(), &[]);
    assert_same_guest(&ours, &std::fs::read(&flat).unwrap(), "x-flat");
    // the disk database is available to checks
    let opts = OpenOptions::default();
    let ctx = image::OpenContext::new(
        opts.clone(),
        image::Resolver::for_image(&desc, &opts).unwrap(),
    );
    let st = std::sync::Arc::new(image::FileStorage::open(&desc).unwrap());
    let v = image::vmdk::open_image(st, &ctx).unwrap();
    let d = v.descriptor().unwrap();
    assert_eq!(d.ddb("ddb.adapterType"), Some("lsilogic"));
    assert_eq!(d.cid, Some(0xfffffffe));
    assert_eq!(v.create_type(), Some("vmfs"));
    // holes in the flat file are not counted as allocated
    let info = imgcheck_info(&desc);
    assert!(info["allocated"].as_u64().unwrap() < size);
}

#[test]
fn zero_extent_reads_as_zeros_between_flat_extents() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a.bin");
    let b = dir.path().join("b.bin");
    make_pattern_raw(&a, 1024 * 1024, 31);
    // b holds its extent at an offset of 8 sectors
    make_pattern_raw(&b, 520 * 1024, 32);
    let desc = dir.path().join("z.vmdk");
    write_file(
        &desc,
        &descriptor_text(
            "monolithicFlat",
            "12345678",
            None,
            &[
                "RW 2048 FLAT \"a.bin\" 0".into(),
                "RW 777 ZERO".into(),
                "RDONLY 1032 FLAT \"b.bin\" 8".into(),
            ],
        ),
    );
    // qemu skips ZERO extent lines (and so shifts what follows), so the oracle is built by hand.
    let mut want = std::fs::read(&a).unwrap();
    want.extend(vec![0u8; 777 * 512]);
    want.extend_from_slice(&std::fs::read(&b).unwrap()[8 * 512..]);
    let ours = imgcheck_guest_bytes(&desc, dir.path(), &[]);
    assert_same_guest(&ours, &want, "zero extent");
    let info = imgcheck_info(&desc);
    assert_eq!(info["virtual_size"], (2048 + 777 + 1032) * 512);
    let zero = our_ranges(&desc, ExtentKind::Zero);
    assert_eq!(zero, vec![(2048 * 512, 777 * 512)]);
}

/// Build a VMware-style streamOptimized file: header with gdOffset = GD_AT_END, compressed
/// grains behind grain markers, GT and GD markers, and the real header in the footer.
fn write_vmware_stream(raw: &[u8], out: &Path, mangle: impl Fn(&mut Vec<u8>, &[u64])) {
    use flate2::write::ZlibEncoder;
    const GRAIN: usize = 65536;
    let cap_sectors = raw.len().div_ceil(512) as u64;
    let grains = (cap_sectors as usize * 512).div_ceil(GRAIN);
    let gts = grains.div_ceil(512);
    let header = |gd: u64| {
        let mut h = vec![0u8; 512];
        h[0..4].copy_from_slice(b"KDMV");
        h[4..8].copy_from_slice(&3u32.to_le_bytes());
        h[8..12].copy_from_slice(&(1u32 | (1 << 16) | (1 << 17)).to_le_bytes());
        h[12..20].copy_from_slice(&cap_sectors.to_le_bytes());
        h[20..28].copy_from_slice(&128u64.to_le_bytes());
        h[28..36].copy_from_slice(&1u64.to_le_bytes());
        h[36..44].copy_from_slice(&20u64.to_le_bytes());
        h[44..48].copy_from_slice(&512u32.to_le_bytes());
        h[56..64].copy_from_slice(&gd.to_le_bytes());
        h[64..72].copy_from_slice(&128u64.to_le_bytes());
        h[73..77].copy_from_slice(b"\n \r\n");
        h[77..79].copy_from_slice(&1u16.to_le_bytes());
        h
    };
    let pad = |v: &mut Vec<u8>| v.resize(v.len().div_ceil(512) * 512, 0);
    let mut f = header(u64::MAX);
    let desc = descriptor_text(
        "streamOptimized",
        "abcdef01",
        None,
        &[format!("RW {cap_sectors} SPARSE \"stream.vmdk\"")],
    );
    f.extend_from_slice(desc.as_bytes());
    f.resize(128 * 512, 0);
    let mut gte = vec![0u32; gts * 512];
    let mut grain_offsets = Vec::new();
    for (g, entry) in gte.iter_mut().enumerate().take(grains) {
        let start = g * GRAIN;
        let end = (start + GRAIN).min(raw.len());
        let mut chunk = raw[start..end].to_vec();
        chunk.resize(chunk.len().div_ceil(512) * 512, 0);
        if chunk.iter().all(|&b| b == 0) {
            continue;
        }
        let mut enc = ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        enc.write_all(&chunk).unwrap();
        let z = enc.finish().unwrap();
        let sector = f.len() as u64 / 512;
        *entry = sector as u32;
        grain_offsets.push(f.len() as u64);
        f.extend_from_slice(&((g * 128) as u64).to_le_bytes());
        f.extend_from_slice(&(z.len() as u32).to_le_bytes());
        f.extend_from_slice(&z);
        pad(&mut f);
    }
    let marker = |val: u64, ty: u32| {
        let mut m = vec![0u8; 512];
        m[0..8].copy_from_slice(&val.to_le_bytes());
        m[12..16].copy_from_slice(&ty.to_le_bytes());
        m
    };
    let mut gd = Vec::new();
    for t in 0..gts {
        f.extend(marker(4, 1));
        gd.push((f.len() / 512) as u32);
        for e in &gte[t * 512..(t + 1) * 512] {
            f.extend_from_slice(&e.to_le_bytes());
        }
    }
    f.extend(marker(gts.div_ceil(128) as u64, 2));
    let gd_sector = f.len() as u64 / 512;
    for e in &gd {
        f.extend_from_slice(&e.to_le_bytes());
    }
    pad(&mut f);
    f.extend(marker(1, 3));
    f.extend(header(gd_sector));
    f.extend(marker(0, 0));
    mangle(&mut f, &grain_offsets);
    std::fs::write(out, f).unwrap();
}

#[test]
fn vmware_stream_with_footer_grain_directory() {
    if skip() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src.raw");
    make_pattern_raw(&src, ODD, 41);
    let raw = std::fs::read(&src).unwrap();
    let img = dir.path().join("stream.vmdk");
    write_vmware_stream(&raw, &img, |_, _| {});
    assert_matches_qemu(&img, dir.path(), "streamOptimized");
    let mut padded = raw.clone();
    padded.resize(raw.len().div_ceil(512) * 512, 0);
    assert_same_guest(
        &imgcheck_guest_bytes(&img, dir.path(), &[]),
        &padded,
        "source",
    );

    // A corrupt deflate stream in one grain: exit 2 naming the grain and the problem.
    let bad = dir.path().join("bad-deflate.vmdk");
    write_vmware_stream(&raw, &bad, |f, offs| {
        let o = offs[1] as usize + 12 + 2; // past the zlib header
        for b in &mut f[o..o + 64] {
            *b ^= 0xa5;
        }
    });
    convert_fails(&bad, dir.path(), &["grain", "deflate"]);

    // A grain marker claiming an absurd compressed size.
    let big = dir.path().join("bad-size.vmdk");
    write_vmware_stream(&raw, &big, |f, offs| {
        let o = offs[0] as usize + 8;
        f[o..o + 4].copy_from_slice(&0x7fff_ffffu32.to_le_bytes());
    });
    convert_fails(&big, dir.path(), &["compressed size", "limit"]);

    // A truncated stream: the footer is gone.
    let cut = dir.path().join("cut.vmdk");
    write_vmware_stream(&raw, &cut, |f, _| {
        let l = f.len();
        f.truncate(l - 4096);
    });
    info_fails(&cut, &["footer"]);
}

#[test]
fn delta_disk_needs_allow_backing_and_reads_through_parent() {
    if skip() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let base = qemu_vmdk(dir.path(), "base", "subformat=monolithicSparse", ODD, 51);
    let child = dir.path().join("child.vmdk");
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "vmdk",
        "-b",
        "base.vmdk",
        "-F",
        "vmdk",
        &s(&child),
    ]);
    if have("qemu-io") {
        run(
            "qemu-io",
            &[
                "-f",
                "vmdk",
                "-c",
                "write -P 0x77 100000 200000",
                &s(&child),
            ],
        );
    }
    let e = info_fails(&child, &["delta", "base.vmdk", "--allow-backing"]);
    assert!(e.contains("refused"), "{e}");
    let ours = imgcheck_guest_bytes(&child, dir.path(), &["--allow-backing"]);
    let theirs = qemu_guest_bytes(&child, Some("vmdk"), dir.path());
    assert_same_guest(&ours, &theirs, "delta disk");
    assert_eq!(ours.len() as u64, ODD.div_ceil(512) * 512);

    // A parent outside the directory is refused even with --allow-backing.
    let outside = tempfile::tempdir().unwrap();
    let sub = dir.path().join("sub");
    std::fs::create_dir(&sub).unwrap();
    std::fs::copy(&base, outside.path().join("base.vmdk")).unwrap();
    let hostile = sub.join("child.vmdk");
    std::fs::copy(&child, &hostile).unwrap();
    let bytes = std::fs::read(&hostile).unwrap();
    let text = String::from_utf8_lossy(&bytes[512..512 + 20 * 512]).to_string();
    let hint = s(&outside.path().join("base.vmdk"));
    let new = text.replace(
        "parentFileNameHint=\"base.vmdk\"",
        &format!("parentFileNameHint=\"{hint}\""),
    );
    assert_ne!(new, text);
    let mut nb = new.into_bytes();
    nb.resize(20 * 512, 0);
    patch(&hostile, 512, &nb);
    assert_fails(
        &["info", "--allow-backing", &s(&hostile)],
        &["outside the image's directory", "parent"],
    );

    // A parent whose CID changed after the snapshot: refused, as qemu does.
    let pcid_at = text.find("parentCID=").unwrap() + "parentCID=".len();
    let mut wrong = text.clone().into_bytes();
    wrong[pcid_at..pcid_at + 8].copy_from_slice(b"0badc0de");
    let stale = dir.path().join("stale.vmdk");
    std::fs::copy(&child, &stale).unwrap();
    patch(&stale, 512, &wrong);
    assert_fails(
        &["info", "--allow-backing", &s(&stale)],
        &["stale.vmdk", "CID", "0badc0de"],
    );
}

#[test]
fn redundant_grain_directory_replaces_a_broken_primary() {
    if skip() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let img = qemu_vmdk(dir.path(), "rgd", "subformat=monolithicSparse", ODD, 61);
    let want = qemu_guest_bytes(&img, Some("vmdk"), dir.path());
    assert_ne!(read_u64(&img, H_RGD), 0);
    // primary GD far past the end of the file
    patch(&img, H_GD, &0x0fff_ffffu64.to_le_bytes());
    let info = imgcheck_info(&img);
    let w = info["warnings"].to_string();
    assert!(w.contains("redundant grain directory"), "{w}");
    let ours = imgcheck_guest_bytes(&img, dir.path(), &[]);
    assert_same_guest(&ours, &want, "redundant GD");
    // both broken: an error naming both
    patch(&img, H_RGD, &0x0fff_fff0u64.to_le_bytes());
    info_fails(&img, &["both grain directories", "past the end"]);
}

#[test]
fn hostile_sparse_headers_fail_cleanly() {
    if skip() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let good = qemu_vmdk(dir.path(), "good", "subformat=monolithicSparse", ODD, 71);
    let variant = |name: &str, f: &dyn Fn(&Path)| {
        let p = dir.path().join(format!("{name}.vmdk"));
        std::fs::copy(&good, &p).unwrap();
        f(&p);
        p
    };
    let v = variant("version", &|p| patch(p, H_VERSION, &99u32.to_le_bytes()));
    info_fails(&v, &["version 99"]);
    for (n, g) in [("grain0", 0u64), ("grain3", 3), ("grainhuge", 1 << 40)] {
        let v = variant(n, &|p| patch(p, H_GRAIN, &g.to_le_bytes()));
        info_fails(&v, &["grain size"]);
    }
    for (n, g) in [("gtes0", 0u32), ("gteshuge", 1 << 30)] {
        let v = variant(n, &|p| patch(p, H_GTES, &g.to_le_bytes()));
        info_fails(&v, &["entries per grain table"]);
    }
    // 2^60 bytes of capacity in a tiny file: refused without allocating for it
    let v = variant("cap", &|p| {
        patch(p, H_CAPACITY, &(1u64 << 51).to_le_bytes());
        patch(p, H_FLAGS, &1u32.to_le_bytes()); // no redundant GD to fall back on
    });
    info_fails(&v, &["capacity", "grain tables"]);
    let v = variant("cap2", &|p| {
        patch(p, H_CAPACITY, &(1u64 << 40).to_le_bytes());
        patch(p, H_FLAGS, &1u32.to_le_bytes());
    });
    info_fails(&v, &["grain directory", "past the end"]);
    let v = variant("capoverflow", &|p| {
        patch(p, H_CAPACITY, &u64::MAX.to_le_bytes())
    });
    info_fails(&v, &["capacity"]);
    // GD offset past EOF with no redundant GD
    let v = variant("gd", &|p| {
        patch(p, H_FLAGS, &1u32.to_le_bytes());
        patch(p, H_GD, &0x00ff_ffffu64.to_le_bytes());
    });
    info_fails(&v, &["grain directory", "past the end"]);
    // GT offset past EOF (in both directories)
    let v = variant("gt", &|p| {
        let gd = read_u64(p, H_GD) * 512;
        let rgd = read_u64(p, H_RGD) * 512;
        patch(p, gd, &0x00ff_fff0u32.to_le_bytes());
        patch(p, rgd, &0x00ff_fff0u32.to_le_bytes());
    });
    info_fails(&v, &["grain table", "past the end"]);
    // a grain past EOF: the read fails naming the grain
    let v = variant("grainpos", &|p| {
        let gd = read_u64(p, H_GD) * 512;
        let gt = read_u32(p, gd) as u64 * 512;
        patch(p, gt, &0x00ff_ff00u32.to_le_bytes());
    });
    convert_fails(&v, dir.path(), &["grain 0", "past the end"]);
    // text-mode transfer damage
    let v = variant("ascii", &|p| patch(p, H_CHECK, b"\n \n\n"));
    info_fails(&v, &["text-mode"]);
    // a truncated file: the grains are gone
    let v = variant("trunc", &|p| {
        let f = std::fs::OpenOptions::new().write(true).open(p).unwrap();
        f.set_len(100_000).unwrap();
    });
    convert_fails(&v, dir.path(), &["past the end"]);
    // cut inside the header
    let v = variant("tiny", &|p| {
        let f = std::fs::OpenOptions::new().write(true).open(p).unwrap();
        f.set_len(300).unwrap();
    });
    info_fails(&v, &["truncated"]);
    // COWD (ESX 2 sparse)
    let v = dir.path().join("cowd.vmdk");
    let mut b = b"COWD".to_vec();
    b.resize(4096, 0);
    std::fs::write(&v, b).unwrap();
    info_fails(&v, &["COWD", "unsupported"]);
}

#[test]
fn hostile_descriptors_are_refused() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("img");
    let outside = root.path().join("outside");
    std::fs::create_dir(&dir).unwrap();
    std::fs::create_dir(&outside).unwrap();
    let marker = outside.join("marker");
    std::fs::write(&marker, vec![0x42u8; 64 * 1024]).unwrap();
    let desc = |name: &str, extents: &[String]| {
        let p = dir.join(name);
        write_file(
            &p,
            &descriptor_text("monolithicFlat", "11111111", None, extents),
        );
        p
    };
    let p = desc("rel.vmdk", &["RW 128 FLAT \"../outside/marker\" 0".into()]);
    info_fails(
        &p,
        &[
            "refused",
            "../outside/marker",
            "outside the image's directory",
        ],
    );
    let abs = s(&marker);
    let p = desc("abs.vmdk", &[format!("RW 128 FLAT \"{abs}\" 0")]);
    info_fails(&p, &["refused", "outside the image's directory"]);
    std::os::unix::fs::symlink(&marker, dir.join("link-flat.vmdk")).unwrap();
    let p = desc("sym.vmdk", &["RW 128 FLAT \"link-flat.vmdk\" 0".into()]);
    info_fails(
        &p,
        &["refused", "link-flat.vmdk", "outside the image's directory"],
    );
    // but --allow-outside-dir lets a trusted image use it
    let o = imgcheck(&["info", "--allow-outside-dir", &s(&p)]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));

    let p = desc("self.vmdk", &["RW 1 FLAT \"self.vmdk\" 0".into()]);
    info_fails(&p, &["names the descriptor itself"]);
    let p = desc(
        "selfsparse.vmdk",
        &["RW 1 SPARSE \"selfsparse.vmdk\"".into()],
    );
    info_fails(&p, &["names the descriptor itself"]);
    std::fs::write(dir.join("data.bin"), vec![1u8; 4096]).unwrap();
    let p = desc("notsparse.vmdk", &["RW 8 SPARSE \"data.bin\"".into()]);
    info_fails(&p, &["data.bin", "KDMV"]);
    let p = desc(
        "overflow.vmdk",
        &[
            "RW 18446744073709551615 ZERO".into(),
            "RW 18446744073709551615 ZERO".into(),
        ],
    );
    info_fails(&p, &["2^64"]);
    let p = desc("huge-zero.vmdk", &[format!("RW {} ZERO", 1u64 << 52)]);
    info_fails(&p, &["virtual size", "1 PiB"]);
    let p = desc("short.vmdk", &["RW 100 FLAT \"data.bin\" 0".into()]);
    info_fails(&p, &["data.bin", "truncated"]);
    let p = desc("missing.vmdk", &["RW 100 FLAT \"nope.bin\" 0".into()]);
    info_fails(&p, &["nope.bin"]);
    let p = desc("vmfssparse.vmdk", &["RW 8 VMFSSPARSE \"data.bin\"".into()]);
    info_fails(&p, &["VMFSSPARSE", "unsupported"]);
    let p = desc("rdm.vmdk", &["RW 8 VMFSRDM \"data.bin\"".into()]);
    info_fails(&p, &["raw device mapping"]);
    let p = desc("badline.vmdk", &["RW lots FLAT \"data.bin\" 0".into()]);
    info_fails(&p, &["invalid extent line"]);
    let p = desc("none.vmdk", &[]);
    info_fails(&p, &["no extents"]);
    // a delta disk is refused without --allow-backing, naming the parent
    let p = dir.join("delta.vmdk");
    write_file(
        &p,
        &descriptor_text(
            "monolithicFlat",
            "22222222",
            Some(("33333333", "../outside/marker")),
            &["RW 8 FLAT \"data.bin\" 0".into()],
        ),
    );
    info_fails(&p, &["delta", "../outside/marker", "--allow-backing"]);
    assert_fails(
        &["info", "--allow-backing", &s(&p)],
        &["outside the image's directory"],
    );
    // a FIFO inside the directory must not hang the open
    let fifo = dir.join("fifo-flat.vmdk");
    run("mkfifo", &[&s(&fifo)]);
    let p = desc("fifo.vmdk", &["RW 8 FLAT \"fifo-flat.vmdk\" 0".into()]);
    info_fails(&p, &["fifo-flat.vmdk", "not a regular file"]);
    // two delta disks naming each other as parents: a bounded chain, not a hang
    for (me, cid, pcid, other) in [
        ("loop-a.vmdk", "aaaaaaaa", "bbbbbbbb", "loop-b.vmdk"),
        ("loop-b.vmdk", "bbbbbbbb", "aaaaaaaa", "loop-a.vmdk"),
    ] {
        write_file(
            &dir.join(me),
            &descriptor_text(
                "monolithicFlat",
                cid,
                Some((pcid, other)),
                &["RW 8 FLAT \"data.bin\" 0".into()],
            ),
        );
    }
    assert_fails(
        &["info", "--allow-backing", &s(&dir.join("loop-a.vmdk"))],
        &["loop-", "deeper than 16 levels"],
    );
    // a huge "descriptor"
    let p = dir.join("huge.vmdk");
    let mut t = descriptor_text("monolithicFlat", "1", None, &[]).into_bytes();
    t.resize(3 << 20, b' ');
    std::fs::write(&p, t).unwrap();
    info_fails(&p, &["limit"]);
}

#[test]
fn concurrent_unaligned_reads_match_qemu() {
    if skip() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    for sub in ["streamOptimized", "monolithicSparse", "twoGbMaxExtentFlat"] {
        let img = qemu_vmdk(dir.path(), sub, &format!("subformat={sub}"), ODD, 81);
        let want = qemu_guest_bytes(&img, Some("vmdk"), dir.path());
        let dev = image::open(&img, &OpenOptions::default()).unwrap();
        assert_eq!(dev.size(), want.len() as u64);
        std::thread::scope(|sc| {
            for t in 0..4u64 {
                let dev = dev.clone();
                let want = &want;
                sc.spawn(move || {
                    let mut rng = Rng::new(1000 + t);
                    let size = dev.size();
                    for _ in 0..300 {
                        let off = rng.next() % size;
                        let len = (1 + rng.next() % 200_000).min(size - off);
                        let mut buf = vec![0xeeu8; len as usize];
                        dev.read_at(&mut buf, off).unwrap();
                        let w = &want[off as usize..(off + len) as usize];
                        assert!(buf == w, "{sub}: read of {len} at {off} differs");
                    }
                    // past the end is an error, not a short read
                    let mut b = [0u8; 2];
                    assert!(dev.read_at(&mut b, size - 1).is_err());
                });
            }
        });
    }
}

#[test]
fn multi_extent_sparse_and_flat_descriptor_reads_like_qemu() {
    if skip() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // Sparse extents (each also a monolithicSparse with its own descriptor) and a flat one.
    let sizes = [
        3 * 1024 * 1024,
        2 * 1024 * 1024,
        3 * 1024 * 1024 + 512,
        1024 * 1024 + 1536,
    ];
    let imgs: Vec<PathBuf> = sizes
        .iter()
        .enumerate()
        .map(|(i, &sz)| {
            qemu_vmdk(
                dir.path(),
                &format!("e{i}"),
                "subformat=monolithicSparse",
                sz,
                91 + i as u64,
            )
        })
        .collect();
    let c = dir.path().join("c.bin");
    make_pattern_raw(&c, 1024 * 1024 + 512, 99);
    let views: Vec<Vec<u8>> = imgs
        .iter()
        .map(|p| qemu_guest_bytes(p, Some("vmdk"), dir.path()))
        .collect();
    let flat = std::fs::read(&c).unwrap();
    let sparse_line = |i: usize| format!("RW {} SPARSE \"e{i}.vmdk\"", sizes[i] / 512);
    let flat_line = format!("RW {} FLAT \"c.bin\" 0", flat.len() / 512);

    // Grain-aligned extents, as VMware writes them: qemu is the oracle.
    let desc = dir.path().join("multi.vmdk");
    write_file(
        &desc,
        &descriptor_text(
            "twoGbMaxExtentSparse",
            "44444444",
            None,
            &[sparse_line(0), sparse_line(1), flat_line.clone()],
        ),
    );
    assert_matches_qemu(&desc, dir.path(), "twoGbMaxExtentSparse");
    let want = [views[0].clone(), views[1].clone(), flat.clone()].concat();
    assert_same_guest(
        &imgcheck_guest_bytes(&desc, dir.path(), &[]),
        &want,
        "concatenation",
    );
    // qemu calls all of a flat extent data (holes included); compare the sparse part.
    let sparse_end = sizes[0] + sizes[1];
    let clip = |v: Vec<(u64, u64)>| -> Vec<(u64, u64)> {
        v.into_iter()
            .filter(|r| r.0 < sparse_end)
            .map(|(o, l)| (o, l.min(sparse_end - o)))
            .collect()
    };
    assert_eq!(
        clip(qemu_data_ranges(&desc)),
        clip(our_ranges(&desc, ExtentKind::Data))
    );

    // Extents that end inside a grain: qemu reads the next extent's first bytes from the
    // previous extent's file there, so the oracle is the concatenation of the extents.
    let odd = dir.path().join("unaligned.vmdk");
    write_file(
        &odd,
        &descriptor_text(
            "twoGbMaxExtentSparse",
            "55555555",
            None,
            &[sparse_line(2), sparse_line(3), flat_line],
        ),
    );
    let want = [views[2].clone(), views[3].clone(), flat].concat();
    assert_same_guest(
        &imgcheck_guest_bytes(&odd, dir.path(), &[]),
        &want,
        "unaligned extents",
    );
    assert_eq!(imgcheck_info(&odd)["virtual_size"], want.len() as u64);

    // A KDMV header with capacity 0 defers to its embedded descriptor, which here names the
    // file itself as its sparse extent: refused, not followed in a loop.
    patch(&imgs[0], H_CAPACITY, &0u64.to_le_bytes());
    info_fails(&imgs[0], &["names the descriptor itself"]);
}

#[test]
fn mutated_sparse_files_never_panic() {
    use imgcheck::image::{MemStorage, OpenContext, Resolver, Storage};
    use std::sync::Arc;
    if skip() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut rng = Rng::new(4242);
    for (sub, seed) in [("monolithicSparse", 101), ("streamOptimized", 102)] {
        let img = qemu_vmdk(
            dir.path(),
            sub,
            &format!("subformat={sub}"),
            1024 * 1024 + 3584,
            seed,
        );
        let orig = std::fs::read(&img).unwrap();
        for round in 0..150 {
            let mut data = orig.clone();
            let flips = 1 + rng.next() % 8;
            for _ in 0..flips {
                // mostly in the metadata at the front, sometimes anywhere
                let span = if rng.next() % 4 == 0 {
                    data.len()
                } else {
                    64 * 1024
                };
                let at = (rng.next() as usize) % span.min(data.len());
                data[at] = rng.next() as u8;
            }
            if round % 10 == 0 {
                let cut = (rng.next() as usize) % data.len();
                data.truncate(cut);
            }
            let st: Arc<dyn Storage> = Arc::new(MemStorage::new(format!("{sub}-{round}"), data));
            let ctx = OpenContext::new(OpenOptions::default(), Resolver::none());
            let Ok(dev) = image::open_storage(st, &ctx) else {
                continue;
            };
            let size = dev.size().min(64 << 20);
            let _ = dev.map(0, size);
            let mut buf = vec![0u8; 65536];
            let mut off = 0;
            while off < size {
                let n = (size - off).min(buf.len() as u64) as usize;
                let _ = dev.read_at(&mut buf[..n], off);
                off += n as u64;
            }
        }
    }
}
