//! qcow2 reader against qemu-img as the oracle: every compat level, cluster size, compression,
//! extended L2, zero clusters, backing files, refusals and hostile headers.
mod common;
use common::*;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use imgcheck::image::{self, ExtentKind, OpenOptions};

const MIB: u64 = 1024 * 1024;

fn p(path: &Path) -> String {
    path.display().to_string()
}

fn skip_without_qemu() -> bool {
    if have("qemu-img") && have("qemu-io") {
        return false;
    }
    eprintln!("SKIP: qemu-img / qemu-io not installed");
    true
}

/// Allocation kinds over the disk as (start, end, kind), neighbours of one kind merged.
fn merge(runs: impl IntoIterator<Item = (u64, u64, ExtentKind)>) -> Vec<(u64, u64, ExtentKind)> {
    let mut out: Vec<(u64, u64, ExtentKind)> = Vec::new();
    for (s, e, k) in runs {
        if e == s {
            continue;
        }
        if let Some(last) = out.last_mut() {
            if last.2 == k && last.1 == s {
                last.1 = e;
                continue;
            }
        }
        out.push((s, e, k));
    }
    out
}

/// qemu-img's map of `img`: data → Data, present but not data → Zero, not present →
/// Unallocated.
fn qemu_map(img: &Path) -> Vec<(u64, u64, ExtentKind)> {
    let o = qemu_img(&["map", "--output=json", &p(img)]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    merge(v.as_array().unwrap().iter().map(|e| {
        let s = e["start"].as_u64().unwrap();
        let l = e["length"].as_u64().unwrap();
        let kind = if e["data"].as_bool().unwrap() {
            ExtentKind::Data
        } else if e["present"].as_bool().unwrap_or(true) {
            ExtentKind::Zero
        } else {
            ExtentKind::Unallocated
        };
        (s, s + l, kind)
    }))
}

/// imgcheck's map of `img` through the library.
fn our_map(img: &Path, opts: &OpenOptions) -> Vec<(u64, u64, ExtentKind)> {
    let dev = image::open(img, opts).unwrap();
    let ext = dev.map(0, dev.size()).unwrap();
    // The map must be sorted, contiguous and cover the disk.
    let mut pos = 0;
    for e in &ext {
        assert_eq!(
            e.offset,
            pos,
            "map of {} has a gap or overlap",
            img.display()
        );
        assert!(e.length > 0);
        pos += e.length;
    }
    assert_eq!(pos, dev.size());
    merge(ext.iter().map(|e| (e.offset, e.offset + e.length, e.kind)))
}

/// Byte equality with qemu-img's view, info agreement, and map agreement.
fn assert_agrees_with_qemu(img: &Path, dir: &Path, extra: &[&str], what: &str) {
    assert_agrees(img, dir, extra, what, true)
}

/// As [`assert_agrees_with_qemu`]; with `strict` false the maps are compared only on data vs
/// no data (qemu calls the holes of a raw file "present zeros", imgcheck "unallocated").
fn assert_agrees(img: &Path, dir: &Path, extra: &[&str], what: &str, strict: bool) {
    let theirs = qemu_guest_bytes(img, Some("qcow2"), dir);
    let ours = imgcheck_guest_bytes(img, dir, extra);
    assert_same_guest(&ours, &theirs, what);

    let q = qemu_info(img, None);
    let o = imgcheck(&[&["info", "--format", "json"], extra, &[&p(img)]].concat());
    assert!(
        o.status.success(),
        "{what}: info failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let info: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(info["format"], "qcow2", "{what}");
    assert_eq!(q["format"], "qcow2", "{what}");
    assert_eq!(info["virtual_size"], q["virtual-size"], "{what}");
    let compat = q["format-specific"]["data"]["compat"].as_str().unwrap();
    let sub = info["subformat"].as_str().unwrap();
    assert_eq!(
        sub.starts_with("v2"),
        compat == "0.10",
        "{what}: {sub} vs {compat}"
    );
    let ext_l2 = q["format-specific"]["data"]["extended-l2"]
        .as_bool()
        .unwrap_or(false);
    assert_eq!(sub.contains("extended_l2"), ext_l2, "{what}: {sub}");

    let opts = OpenOptions {
        allow_backing: extra.contains(&"--allow-backing"),
        allow_outside_dir: false,
        ..Default::default()
    };
    let (mut ours, mut theirs) = (our_map(img, &opts), qemu_map(img));
    if !strict {
        let data_only = |m: Vec<(u64, u64, ExtentKind)>| {
            merge(m.into_iter().map(|(s, e, k)| {
                let k = if k == ExtentKind::Data {
                    k
                } else {
                    ExtentKind::Zero
                };
                (s, e, k)
            }))
        };
        ours = data_only(ours);
        theirs = data_only(theirs);
    }
    assert_eq!(ours, theirs, "{what}: map differs");
}

/// Convert a patterned raw disk with `qemu-img convert -O qcow2 -o opts` and compare.
fn convert_case(opts: &str, compress: bool, size: u64, seed: u64) {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src.raw");
    make_pattern_raw(&src, size, seed);
    let img = dir.path().join("disk.qcow2");
    let mut args = vec!["convert", "-q", "-f", "raw", "-O", "qcow2", "-o", opts];
    if compress {
        args.push("-c");
    }
    let (s, i) = (p(&src), p(&img));
    args.push(&s);
    args.push(&i);
    qemu_img(&args);
    let what = format!("qcow2 {opts}{}", if compress { " -c" } else { "" });
    assert_agrees_with_qemu(&img, dir.path(), &[], &what);
}

const ODD_SIZE: u64 = 5 * MIB + 123;

#[test]
fn compat_0_10_every_cluster_size() {
    if skip_without_qemu() {
        return;
    }
    for cs in ["512", "4K", "64K", "2M"] {
        convert_case(
            &format!("compat=0.10,cluster_size={cs}"),
            false,
            ODD_SIZE,
            11,
        );
    }
}

#[test]
fn compat_0_10_compressed() {
    if skip_without_qemu() {
        return;
    }
    for cs in ["512", "4K", "64K", "2M"] {
        convert_case(
            &format!("compat=0.10,cluster_size={cs}"),
            true,
            ODD_SIZE,
            12,
        );
    }
}

#[test]
fn compat_1_1_every_cluster_size() {
    if skip_without_qemu() {
        return;
    }
    for cs in ["512", "4K", "64K", "2M"] {
        convert_case(
            &format!("compat=1.1,cluster_size={cs}"),
            false,
            ODD_SIZE,
            13,
        );
    }
}

#[test]
fn compat_1_1_compressed() {
    if skip_without_qemu() {
        return;
    }
    for cs in ["512", "4K", "64K", "2M"] {
        convert_case(&format!("compat=1.1,cluster_size={cs}"), true, ODD_SIZE, 14);
    }
}

#[test]
fn extended_l2_every_cluster_size() {
    if skip_without_qemu() {
        return;
    }
    for cs in ["16K", "64K", "2M"] {
        convert_case(
            &format!("compat=1.1,extended_l2=on,cluster_size={cs}"),
            false,
            ODD_SIZE,
            15,
        );
    }
    convert_case(
        "compat=1.1,extended_l2=on,cluster_size=32K",
        true,
        ODD_SIZE,
        16,
    );
}

#[test]
fn every_power_of_two_cluster_size() {
    if skip_without_qemu() {
        return;
    }
    for bits in 9..=21u32 {
        let opts = format!("compat=1.1,cluster_size={}", 1u64 << bits);
        convert_case(&opts, bits % 2 == 1, 2 * MIB + 4097, 17 + bits as u64);
    }
}

/// Images written through qemu-io: zero clusters (plain and on allocated clusters),
/// subcluster writes, discards, partial-cluster data at unaligned places.
fn qemu_io_image(dir: &Path, name: &str, opts: &str, size: &str, cmds: &[&str]) -> PathBuf {
    let img = dir.join(name);
    qemu_img(&["create", "-q", "-f", "qcow2", "-o", opts, &p(&img), size]);
    let mut args = vec![];
    for c in cmds {
        args.push("-c");
        args.push(c);
    }
    let i = p(&img);
    args.push(&i);
    run("qemu-io", &args);
    img
}

const WRITES: &[&str] = &[
    "write -P 0xab 0 1M",
    "write -z 100k 300k",
    "write -P 0xcd 2100k 7k",
    "write -z -u 1536k 128k",
    "discard 640k 64k",
    "write -P 0x11 2999k 1k",
    "write -z 3000k 96k",
    "write -P 0x5a 3333k 4097",
];

#[test]
fn zero_clusters_and_subclusters_match_qemu() {
    if skip_without_qemu() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    for (i, opts) in [
        "compat=1.1,cluster_size=64K",
        "compat=1.1,cluster_size=4K",
        "compat=1.1,cluster_size=64K,extended_l2=on",
        "compat=1.1,cluster_size=16K,extended_l2=on",
        "compat=0.10,cluster_size=4K",
    ]
    .iter()
    .enumerate()
    {
        let img = qemu_io_image(dir.path(), &format!("z{i}.qcow2"), opts, "4000K", WRITES);
        assert_agrees_with_qemu(&img, dir.path(), &[], opts);
        if opts.starts_with("compat=1.1") {
            let m = our_map(&img, &OpenOptions::default());
            assert!(
                m.iter().any(|r| r.2 == ExtentKind::Zero),
                "{opts}: no zero clusters in {m:?}"
            );
        }
    }
}

#[test]
fn compressed_image_with_zero_clusters_written_over() {
    if skip_without_qemu() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src.raw");
    make_pattern_raw(&src, 3 * MIB + 512, 21);
    let img = dir.path().join("c.qcow2");
    qemu_img(&[
        "convert",
        "-q",
        "-c",
        "-f",
        "raw",
        "-O",
        "qcow2",
        "-o",
        "cluster_size=8K",
        &p(&src),
        &p(&img),
    ]);
    run(
        "qemu-io",
        &[
            "-c",
            "write -z 10k 40k",
            "-c",
            "write -P 7 1000k 3k",
            &p(&img),
        ],
    );
    assert_agrees_with_qemu(&img, dir.path(), &[], "compressed + overwrites");
}

/// Small reads at odd offsets and lengths through the library, compared with qemu's bytes;
/// many threads at once.
#[test]
fn concurrent_small_and_large_reads() {
    if skip_without_qemu() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src.raw");
    make_pattern_raw(&src, 4 * MIB + 1000, 31);
    for (name, opts, c) in [
        ("a.qcow2", "cluster_size=4K", true),
        ("b.qcow2", "cluster_size=16K,extended_l2=on", false),
        ("d.qcow2", "cluster_size=512", false),
    ] {
        let img = dir.path().join(name);
        let mut args = vec!["convert", "-q", "-f", "raw", "-O", "qcow2", "-o", opts];
        if c {
            args.push("-c");
        }
        let (s, i) = (p(&src), p(&img));
        args.push(&s);
        args.push(&i);
        qemu_img(&args);
        let want = qemu_guest_bytes(&img, Some("qcow2"), dir.path());
        let dev = image::open(&img, &OpenOptions::default()).unwrap();
        assert_eq!(dev.size(), want.len() as u64);
        std::thread::scope(|sc| {
            for t in 0..8u64 {
                let dev = &dev;
                let want = &want;
                sc.spawn(move || {
                    let mut rng = Rng::new(t + 1);
                    for _ in 0..300 {
                        let len = 1 + rng.next() % if rng.next() % 4 == 0 { 600_000 } else { 9000 };
                        let len = len.min(want.len() as u64);
                        let off = rng.next() % (want.len() as u64 - len + 1);
                        let mut buf = vec![0xeeu8; len as usize];
                        dev.read_at(&mut buf, off).unwrap();
                        let w = &want[off as usize..(off + len) as usize];
                        assert!(buf == w, "{name}: read of {len} at {off} differs");
                    }
                });
            }
        });
        // A map of any window is the whole map clipped to it.
        let full = merge(
            dev.map(0, dev.size())
                .unwrap()
                .iter()
                .map(|e| (e.offset, e.offset + e.length, e.kind)),
        );
        let mut rng = Rng::new(77);
        for _ in 0..200 {
            let off = rng.next() % dev.size();
            let len = 1 + rng.next() % (dev.size() / 3);
            let end = (off + len).min(dev.size());
            let got = merge(
                dev.map(off, len)
                    .unwrap()
                    .iter()
                    .map(|e| (e.offset, e.offset + e.length, e.kind)),
            );
            let want = merge(
                full.iter()
                    .filter(|r| r.1 > off && r.0 < end)
                    .map(|r| (r.0.max(off), r.1.min(end), r.2)),
            );
            assert_eq!(got, want, "{name}: map({off}, {len})");
        }
        assert!(dev.map(dev.size(), 10).unwrap().is_empty());
        // Past the end is an error, not a short read.
        let mut b = [0u8; 2];
        assert!(dev.read_at(&mut b, dev.size() - 1).is_err());
    }
}

// ---------------------------------------------------------------------------------------------
// Backing files

fn make_base(dir: &Path, name: &str, size: &str) -> PathBuf {
    let base = dir.join(name);
    qemu_img(&["create", "-q", "-f", "qcow2", &p(&base), size]);
    run(
        "qemu-io",
        &[
            "-c",
            "write -P 0x77 0 1536k",
            "-c",
            "write -P 0x78 1700k 100k",
            &p(&base),
        ],
    );
    base
}

#[test]
fn backing_file_refused_by_default_and_read_when_allowed() {
    if skip_without_qemu() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // The backing (2 MiB) is smaller than the overlay (3 MiB): past its end reads zeros.
    make_base(dir.path(), "base.qcow2", "2M");
    let img = make_overlay(dir.path(), "top.qcow2", "base.qcow2", "qcow2", "");

    let o = imgcheck(&["info", &p(&img)]);
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("base.qcow2"), "{err}");
    assert!(err.contains("--allow-backing"), "{err}");
    assert!(err.contains("top.qcow2"), "{err}");
    let o = imgcheck(&[
        "convert",
        "-O",
        "raw",
        &p(&img),
        &p(&dir.path().join("x.raw")),
    ]);
    assert_eq!(o.status.code(), Some(2));

    assert_agrees_with_qemu(&img, dir.path(), &["--allow-backing"], "backing qcow2");

    // Extended L2 overlay with subcluster writes on the same backing.
    let img2 = make_overlay(
        dir.path(),
        "top2.qcow2",
        "base.qcow2",
        "qcow2",
        ",extended_l2=on,cluster_size=32K",
    );
    run(
        "qemu-io",
        &["-c", "write -P 3 5k 3k", "-c", "write -z 70k 4k", &p(&img2)],
    );
    assert_agrees_with_qemu(&img2, dir.path(), &["--allow-backing"], "backing extl2");

    // A chain: top3 -> top.qcow2 -> base.qcow2.
    let img3 = make_overlay(
        dir.path(),
        "top3.qcow2",
        "top.qcow2",
        "qcow2",
        ",compat=0.10",
    );
    assert_agrees_with_qemu(&img3, dir.path(), &["--allow-backing"], "backing chain");
}

#[test]
fn raw_backing_file() {
    if skip_without_qemu() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("base.raw");
    make_pattern_raw(&base, 2 * MIB + 4096, 41);
    let img = make_overlay(
        dir.path(),
        "top.qcow2",
        "base.raw",
        "raw",
        ",cluster_size=4K",
    );
    assert_agrees(&img, dir.path(), &["--allow-backing"], "raw backing", false);
}

#[test]
fn backing_outside_the_directory_is_refused_even_when_allowed() {
    if skip_without_qemu() {
        return;
    }
    let outside = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let base = make_base(outside.path(), "secret.qcow2", "2M");

    // Absolute path to a file in another directory.
    let img = make_overlay(dir.path(), "abs.qcow2", &p(&base), "qcow2", "");
    let o = imgcheck(&["info", "--allow-backing", &p(&img)]);
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("secret.qcow2") && err.contains("outside"),
        "{err}"
    );

    // Relative path climbing out.
    let rel = format!(
        "../{}/secret.qcow2",
        outside.path().file_name().unwrap().to_string_lossy()
    );
    let img = make_overlay(dir.path(), "rel.qcow2", &rel, "qcow2", "");
    let o = imgcheck(&["info", "--allow-backing", &p(&img)]);
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("outside"), "{err}");

    // A symlink inside the directory that points outside.
    std::os::unix::fs::symlink(&base, dir.path().join("link.qcow2")).unwrap();
    let img = make_overlay(dir.path(), "sym.qcow2", "link.qcow2", "qcow2", "");
    let o = imgcheck(&[
        "convert",
        "--allow-backing",
        "-O",
        "raw",
        &p(&img),
        &p(&dir.path().join("o.raw")),
    ]);
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("link.qcow2") && err.contains("outside"),
        "{err}"
    );
    assert!(!dir.path().join("o.raw").exists());
}

#[test]
fn backing_loop_is_bounded() {
    if skip_without_qemu() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // a.qcow2 names b.qcow2 as backing and b names a: qemu-img refuses to create a loop, so
    // patch the name in place (same length).
    let a = dir.path().join("a.qcow2");
    let b = dir.path().join("b.qcow2");
    qemu_img(&["create", "-q", "-f", "qcow2", &p(&b), "1M"]);
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-b",
        "b.qcow2",
        "-F",
        "qcow2",
        &p(&a),
        "1M",
    ]);
    std::fs::remove_file(&b).unwrap();
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-b",
        "a.qcow2",
        "-F",
        "qcow2",
        &p(&b),
        "1M",
        "-u",
    ]);
    let start = Instant::now();
    let o = imgcheck(&["info", "--allow-backing", &p(&a)]);
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("deeper") || err.contains("loop"), "{err}");
    assert!(start.elapsed() < Duration::from_secs(20));
}

// ---------------------------------------------------------------------------------------------
// Refusals

fn assert_exit2(img: &Path, extra: &[&str], needles: &[&str]) -> String {
    let start = Instant::now();
    let out = img.with_extension("out.raw");
    let o = imgcheck(&[&["convert", "-O", "raw"], extra, &[&p(img), &p(&out)]].concat());
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert_eq!(o.status.code(), Some(2), "{}: {err}", img.display());
    assert!(!err.contains("panicked"), "{err}");
    assert!(
        err.contains(&p(img)),
        "message does not name the file: {err}"
    );
    for n in needles {
        assert!(
            err.to_lowercase().contains(&n.to_lowercase()),
            "message lacks \"{n}\": {err}"
        );
    }
    assert!(!out.exists(), "a failed conversion left {}", out.display());
    assert!(
        start.elapsed() < Duration::from_secs(20),
        "{} took {:?}",
        img.display(),
        start.elapsed()
    );
    err
}

#[test]
fn external_data_file_is_refused_naming_it() {
    if skip_without_qemu() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("ext.qcow2");
    let marker = dir.path().join("marker.raw");
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-o",
        &format!("data_file={}", p(&marker)),
        &p(&img),
        "1M",
    ]);
    assert_exit2(&img, &[], &["external data file", "marker.raw"]);
    assert_exit2(&img, &["--allow-backing"], &["external data file"]);
}

#[test]
fn encrypted_image_is_refused() {
    if skip_without_qemu() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("luks.qcow2");
    qemu_img(&[
        "create",
        "-q",
        "--object",
        "secret,id=s,data=x",
        "-f",
        "qcow2",
        "-o",
        "encrypt.format=luks,encrypt.key-secret=s,encrypt.iter-time=10",
        &p(&img),
        "1M",
    ]);
    assert_exit2(&img, &[], &["encrypted", "LUKS"]);
    // Legacy AES (qemu no longer creates it): patch crypt_method of a plain image.
    let mut b = small_image(dir.path(), false);
    put32(&mut b, 32, 1);
    let aes = write_case(dir.path(), "aes.qcow2", &b);
    assert_exit2(&aes, &[], &["encrypted", "AES"]);
}

#[test]
fn zstd_compression_is_refused_clearly() {
    if skip_without_qemu() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("zstd.qcow2");
    let o = std::process::Command::new("qemu-img")
        .args([
            "create",
            "-q",
            "-f",
            "qcow2",
            "-o",
            "compression_type=zstd",
            &p(&img),
            "1M",
        ])
        .output()
        .unwrap();
    if !o.status.success() {
        eprintln!("SKIP: this qemu-img has no zstd");
        return;
    }
    assert_exit2(&img, &[], &["zstd", "unsupported"]);
}

// ---------------------------------------------------------------------------------------------
// Hostile headers, made by patching a valid image

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(b[at..at + 4].try_into().unwrap())
}
fn be64(b: &[u8], at: usize) -> u64 {
    u64::from_be_bytes(b[at..at + 8].try_into().unwrap())
}
fn put32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_be_bytes());
}
fn put64(b: &mut [u8], at: usize, v: u64) {
    b[at..at + 8].copy_from_slice(&v.to_be_bytes());
}

/// A valid small qcow2 (1.1, 64 KiB clusters) with data; compressed when asked.
fn small_image(dir: &Path, compress: bool) -> Vec<u8> {
    let src = dir.join("small-src.raw");
    make_pattern_raw(&src, 2 * MIB, 51);
    let img = dir.join("small.qcow2");
    let mut args = vec!["convert", "-q", "-f", "raw", "-O", "qcow2"];
    if compress {
        args.push("-c");
    }
    let (s, i) = (p(&src), p(&img));
    args.push(&s);
    args.push(&i);
    qemu_img(&args);
    std::fs::read(&img).unwrap()
}

/// Offset of the first L2 table and the index of its first entry with `pred`.
fn find_l2_entry(img: &[u8], pred: impl Fn(u64) -> bool) -> (usize, usize) {
    let cb = be32(img, 20);
    let l1 = be64(img, 40) as usize;
    let l2 = (be64(img, l1) & 0x00ff_ffff_ffff_fe00) as usize;
    let n = (1usize << cb) / 8;
    let i = (0..n)
        .find(|&i| pred(be64(img, l2 + 8 * i)))
        .expect("an L2 entry of the wanted kind");
    (l2, i)
}

fn write_case(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

#[test]
fn hostile_headers_fail_cleanly() {
    if skip_without_qemu() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let good = small_image(d, false);
    let flen = good.len() as u64;

    // Truncated inside the header.
    assert_exit2(
        &write_case(d, "trunc-header.qcow2", &good[..50]),
        &[],
        &["truncated"],
    );
    // Truncated v3 header (between 72 and 104 bytes).
    assert_exit2(
        &write_case(d, "trunc-v3.qcow2", &good[..90]),
        &[],
        &["truncated"],
    );
    // Truncated after the tables: data clusters are missing.
    let (l2, _) = find_l2_entry(&good, |e| e != 0);
    let cut = (l2 + 65536).max(good.len() / 2);
    assert_exit2(
        &write_case(d, "trunc-data.qcow2", &good[..cut]),
        &[],
        &["past the end"],
    );

    // Version 4.
    let mut b = good.clone();
    put32(&mut b, 4, 4);
    assert_exit2(&write_case(d, "v4.qcow2", &b), &[], &["version 4"]);
    // cluster_bits 40.
    let mut b = good.clone();
    put32(&mut b, 20, 40);
    assert_exit2(&write_case(d, "cb40.qcow2", &b), &[], &["cluster_bits 40"]);
    // cluster_bits 8.
    let mut b = good.clone();
    put32(&mut b, 20, 8);
    assert_exit2(&write_case(d, "cb8.qcow2", &b), &[], &["cluster_bits 8"]);
    // l1_size of 2^28 entries (2 GiB of L1) in a tiny file.
    let mut b = good.clone();
    put32(&mut b, 36, 1 << 28);
    assert_exit2(
        &write_case(d, "l1huge.qcow2", &b),
        &[],
        &["L1 table", "limit"],
    );
    // A virtual size of 2^60 bytes with the small L1.
    let mut b = good.clone();
    put64(&mut b, 24, 1 << 60);
    assert_exit2(
        &write_case(d, "size60.qcow2", &b),
        &[],
        &["L1 table", "needs"],
    );
    // A virtual size over 2^63.
    let mut b = good.clone();
    put64(&mut b, 24, u64::MAX - 511);
    assert_exit2(&write_case(d, "sizemax.qcow2", &b), &[], &["virtual size"]);
    // L1 table past the end of the file.
    let mut b = good.clone();
    put64(&mut b, 40, 1 << 40);
    assert_exit2(
        &write_case(d, "l1eof.qcow2", &b),
        &[],
        &["L1 table", "past the end"],
    );
    // L1 table not cluster-aligned.
    let mut b = good.clone();
    let l1 = be64(&b, 40);
    put64(&mut b, 40, l1 + 8);
    assert_exit2(&write_case(d, "l1align.qcow2", &b), &[], &["not aligned"]);
    // L2 table past the end of the file.
    let mut b = good.clone();
    let l1 = be64(&b, 40) as usize;
    put64(
        &mut b,
        l1,
        (1u64 << 63) | ((flen + (1 << 20)) / 65536 * 65536),
    );
    assert_exit2(
        &write_case(d, "l2eof.qcow2", &b),
        &[],
        &["L2 table", "past the end"],
    );
    // A data cluster past the end of the file.
    let mut b = good.clone();
    let (l2, i) = find_l2_entry(&b, |e| e & 0x00ff_ffff_ffff_fe00 != 0);
    put64(&mut b, l2 + 8 * i, (1u64 << 63) | (1 << 40));
    assert_exit2(&write_case(d, "dataeof.qcow2", &b), &[], &["past the end"]);
    // A data cluster at an unaligned host offset.
    let mut b = good.clone();
    let e = be64(&b, l2 + 8 * i);
    put64(&mut b, l2 + 8 * i, e + 512);
    assert_exit2(&write_case(d, "dataalign.qcow2", &b), &[], &["not aligned"]);
    // Unknown incompatible feature bit 5.
    let mut b = good.clone();
    let inc = be64(&b, 72);
    put64(&mut b, 72, inc | (1 << 5));
    assert_exit2(
        &write_case(d, "incompat5.qcow2", &b),
        &[],
        &["incompatible feature bit 5"],
    );
    // Bad header_length.
    let mut b = good.clone();
    put32(&mut b, 100, 1 << 30);
    assert_exit2(&write_case(d, "hdrlen.qcow2", &b), &[], &["header_length"]);
    // A header extension that claims more than the first cluster.
    let mut b = good.clone();
    let hl = be32(&b, 100) as usize;
    put32(&mut b, hl, 0x1234_5678);
    put32(&mut b, hl + 4, 0x7fff_ffff);
    assert_exit2(&write_case(d, "ext.qcow2", &b), &[], &["header extension"]);
    // Backing file name longer than 1023 bytes.
    let mut b = good.clone();
    put64(&mut b, 8, 4096);
    put32(&mut b, 16, 5000);
    assert_exit2(
        &write_case(d, "backlen.qcow2", &b),
        &[],
        &["backing file name"],
    );

    // Compressed clusters.
    let good = small_image(d, true);
    let flen = good.len() as u64;
    let cmask = (1u64 << (62 - (16 - 8))) - 1;
    let (l2, i) = find_l2_entry(&good, |e| e & (1 << 62) != 0);
    let entry = be64(&good, l2 + 8 * i);
    // Offset past the end of the file.
    let mut b = good.clone();
    put64(&mut b, l2 + 8 * i, (entry & !cmask) | (flen + 1000));
    assert_exit2(
        &write_case(d, "ceof.qcow2", &b),
        &[],
        &["compressed", "past the end"],
    );
    // A corrupted deflate stream.
    let mut b = good.clone();
    let host = (entry & cmask) as usize;
    for x in &mut b[host..host + 64] {
        *x = 0xff;
    }
    assert_exit2(
        &write_case(d, "cbad.qcow2", &b),
        &[],
        &["compressed", "deflate"],
    );
    // A stream cut short: a cluster whose data spans several sectors, with a descriptor
    // that claims only the first.
    let csize = |e: u64| (e >> (62 - 8)) & 0xff;
    let (l2, i) = find_l2_entry(&good, |e| e & (1 << 62) != 0 && csize(e) >= 2);
    let entry = be64(&good, l2 + 8 * i);
    let mut b = good.clone();
    put64(&mut b, l2 + 8 * i, entry & !(0xff << (62 - 8)));
    assert_exit2(&write_case(d, "cshort.qcow2", &b), &[], &["compressed"]);
}

#[test]
fn dirty_and_corrupt_bits_warn() {
    if skip_without_qemu() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut b = small_image(d, false);
    let inc = be64(&b, 72);
    put64(&mut b, 72, inc | 1);
    let img = write_case(d, "dirty.qcow2", &b);
    let info = imgcheck_info(&img);
    let w = info["warnings"].to_string();
    assert!(w.contains("dirty") && w.contains("refcounts"), "{w}");
    let mut b2 = b.clone();
    put64(&mut b2, 72, inc | 2);
    let img2 = write_case(d, "corrupt.qcow2", &b2);
    let info = imgcheck_info(&img2);
    assert!(info["warnings"].to_string().contains("corrupt"), "{info}");
    // Data still reads as qemu reads the clean image.
    let clean = write_case(d, "clean.qcow2", &small_image(d, false));
    let want = qemu_guest_bytes(&clean, Some("qcow2"), d);
    assert_same_guest(&imgcheck_guest_bytes(&img, d, &[]), &want, "dirty");
}

#[test]
fn zero_flag_in_a_version_2_image_is_corrupt() {
    if skip_without_qemu() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let src = d.join("s.raw");
    make_pattern_raw(&src, MIB, 5);
    let img = d.join("v2.qcow2");
    qemu_img(&[
        "convert",
        "-q",
        "-O",
        "qcow2",
        "-o",
        "compat=0.10",
        &p(&src),
        &p(&img),
    ]);
    let mut b = std::fs::read(&img).unwrap();
    let (l2, i) = find_l2_entry(&b, |e| e != 0);
    let e = be64(&b, l2 + 8 * i);
    put64(&mut b, l2 + 8 * i, e | 1);
    let bad = write_case(d, "v2zero.qcow2", &b);
    assert_exit2(&bad, &[], &["zero", "version"]);
}

#[test]
fn extended_l2_with_both_bits_set_is_corrupt() {
    if skip_without_qemu() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let img = qemu_io_image(
        d,
        "x.qcow2",
        "cluster_size=16K,extended_l2=on",
        "1M",
        &["write -P 1 0 4k"],
    );
    let mut b = std::fs::read(&img).unwrap();
    let l1 = be64(&b, 40) as usize;
    let l2 = (be64(&b, l1) & 0x00ff_ffff_ffff_fe00) as usize;
    let bitmap = be64(&b, l2 + 8);
    assert_ne!(bitmap & 1, 0, "subcluster 0 should be allocated");
    put64(&mut b, l2 + 8, bitmap | (1 << 32));
    let bad = write_case(d, "both.qcow2", &b);
    assert_exit2(&bad, &[], &["allocated and zero"]);
}

/// Random byte corruptions of valid images (plain, compressed, extended L2) through the
/// library: every open, map and read either succeeds or returns an error; none panics, none
/// hangs.
#[test]
fn random_corruptions_never_panic() {
    use imgcheck::image::{open_storage, MemStorage, OpenContext, Resolver};
    use std::sync::Arc;
    if skip_without_qemu() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let plain = small_image(d, false);
    let compressed = small_image(d, true);
    let ext = std::fs::read(qemu_io_image(
        d,
        "e.qcow2",
        "cluster_size=16K,extended_l2=on",
        "1M",
        &["write -P 1 0 5k", "write -z 8k 20k", "write -P 2 100k 50k"],
    ))
    .unwrap();
    let start = Instant::now();
    let mut rng = Rng::new(99);
    let (mut opened, mut failed) = (0, 0);
    for (name, good) in [
        ("plain", &plain),
        ("compressed", &compressed),
        ("ext", &ext),
    ] {
        for _ in 0..150 {
            let mut b = good.clone();
            // Corrupt the metadata area more often than the data.
            let span = if rng.next() % 2 == 0 {
                4096
            } else {
                b.len() as u64
            };
            for _ in 0..1 + rng.next() % 8 {
                let at = (rng.next() % span.min(b.len() as u64)) as usize;
                b[at] = rng.next() as u8;
            }
            let ctx = OpenContext::new(OpenOptions::default(), Resolver::none());
            let s = Arc::new(MemStorage::new(format!("{name}-fuzz.qcow2"), b));
            let dev = match open_storage(s, &ctx) {
                Ok(d) => d,
                Err(e) => {
                    assert!(e.to_string().contains("fuzz.qcow2"), "{e}");
                    failed += 1;
                    continue;
                }
            };
            opened += 1;
            let size = dev.size().min(8 * MIB);
            let _ = dev.map(0, size);
            let mut buf = vec![0u8; 256 * 1024];
            let mut off = 0;
            while off < size {
                let n = (buf.len() as u64).min(size - off) as usize;
                if let Err(e) = dev.read_at(&mut buf[..n], off) {
                    assert!(e.to_string().contains("fuzz.qcow2"), "{e}");
                    break;
                }
                off += n as u64;
            }
        }
    }
    assert!(opened > 0 && failed > 0, "opened {opened}, failed {failed}");
    assert!(start.elapsed() < Duration::from_secs(60));
}

#[test]
fn internal_snapshot_reads_the_active_state_and_warns() {
    if skip_without_qemu() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let img = qemu_io_image(
        dir.path(),
        "snap.qcow2",
        "cluster_size=4K",
        "1M",
        &["write -P 1 0 512k"],
    );
    qemu_img(&["snapshot", "-c", "before", &p(&img)]);
    run(
        "qemu-io",
        &[
            "-c",
            "write -P 2 1000 100k",
            "-c",
            "write -z 300k 8k",
            &p(&img),
        ],
    );
    assert_agrees_with_qemu(&img, dir.path(), &[], "snapshot");
    let w = imgcheck_info(&img)["warnings"].to_string();
    assert!(w.contains("snapshot"), "{w}");
}

#[test]
fn preallocated_images_match_qemu() {
    if skip_without_qemu() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    for pre in ["metadata", "falloc", "full"] {
        let img = qemu_io_image(
            dir.path(),
            &format!("pre-{pre}.qcow2"),
            &format!("preallocation={pre},cluster_size=16K"),
            "2M",
            &["write -P 9 100k 10k", "write -z 1M 64k"],
        );
        assert_agrees_with_qemu(&img, dir.path(), &[], pre);
    }
}
