//! Containers that do not hold their own tables and data: made by qemu-img in the test's temp
//! directory, then cut short or byte-edited. Each must make `imgcheck info` exit 2 saying the
//! image is damaged, and `verify` fail `image.format` (exit 2), naming the first bad structure
//! and its byte offset. qemu-img's verdict on the same file is printed beside ours (and
//! asserted where qemu-img has one: `check` for qcow2 and VMDK, `info` for VHD, whose qemu
//! driver has no check).
mod common;
use common::*;

use std::path::{Path, PathBuf};
use std::process::Command;

const MIB: u64 = 1024 * 1024;
const TIB: u64 = 1 << 40;

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
fn le32(b: &[u8], o: usize) -> u64 {
    u64::from(u32::from_le_bytes(b[o..o + 4].try_into().unwrap()))
}
fn le64(b: &[u8], o: usize) -> u64 {
    u64::from_le_bytes(b[o..o + 8].try_into().unwrap())
}
fn put_le32(b: &mut [u8], o: usize, v: u32) {
    b[o..o + 4].copy_from_slice(&v.to_le_bytes());
}

/// A copy of `src` named `name`, edited by `f`.
fn edited(src: &Path, name: &str, f: impl FnOnce(&mut Vec<u8>)) -> PathBuf {
    let mut b = std::fs::read(src).unwrap();
    f(&mut b);
    let p = src.with_file_name(name);
    std::fs::write(&p, &b).unwrap();
    p
}

/// An 8 MiB raw disk with 300 000 random bytes at every MiB, converted by qemu-img to `fmt`.
fn source(dir: &Path, fmt: &str, name: &str) -> PathBuf {
    let raw = dir.join("pattern.raw");
    if !raw.exists() {
        use std::os::unix::fs::FileExt;
        let f = std::fs::File::create(&raw).unwrap();
        f.set_len(8 * MIB).unwrap();
        let mut rng = Rng::new(7);
        let mut buf = vec![0u8; 300_000];
        for i in 0..8 {
            rng.fill(&mut buf);
            f.write_all_at(&buf, i * MIB).unwrap();
        }
    }
    let out = dir.join(name);
    qemu_img(&["convert", "-O", fmt, &s(&raw), &s(&out)]);
    out
}

/// What qemu-img makes of the same file.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Qemu {
    /// `qemu-img check` reports errors (its output has "ERROR" and exit status is not 0, or
    /// it counts errors).
    CheckErrors,
    /// `qemu-img check` finds nothing (it does not look where the damage is).
    CheckClean,
    /// `qemu-img info` refuses to open it.
    InfoFails,
    /// `qemu-img info` opens it without a complaint (qemu does not look).
    InfoOpens,
}

impl Qemu {
    fn command(self) -> &'static str {
        match self {
            Qemu::InfoFails | Qemu::InfoOpens => "info",
            _ => "check",
        }
    }
}

/// `qemu-img check` (or `info`) of `img` as `fmt`: exit status and all output.
fn qemu_verdict(img: &Path, fmt: &str, q: Qemu) -> (i32, String) {
    let o = Command::new("qemu-img")
        .args([q.command(), "-f", fmt, &s(img)])
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stderr),
        String::from_utf8_lossy(&o.stdout)
    );
    (o.status.code().unwrap_or(-1), text)
}

/// `img` is reported damaged by `info` and fails `image.format` in `verify`, both naming
/// every needle; qemu-img's verdict is printed beside ours and must be `q`.
fn assert_damaged(img: &Path, fmt: &str, needles: &[&str], q: Qemu) {
    let o = imgcheck(&["info", &s(img)]);
    let err = String::from_utf8_lossy(&o.stderr).to_string();
    let (qcode, qtext) = qemu_verdict(img, fmt, q);
    let qfirst: Vec<&str> = qtext.lines().take(3).collect();
    eprintln!(
        "--- {}\n  imgcheck info: exit {:?}: {}\n  qemu-img {}: exit {qcode}: {}",
        img.file_name().unwrap().to_string_lossy(),
        o.status.code(),
        err.trim(),
        q.command(),
        qfirst.join(" | ")
    );
    assert_eq!(o.status.code(), Some(2), "info must fail: {err}");
    assert!(err.contains(&s(img)), "names the file: {err}");
    assert!(err.contains("damaged"), "says it is damaged: {err}");
    for n in needles {
        assert!(err.contains(n), "info message lacks {n:?}: {err}");
    }
    assert!(!err.contains("panicked"), "{err}");
    let (code, report) = verify_json(img, &["--quiet"]);
    assert_eq!(code, 2, "verify exits 2");
    let c = check(&report, "image.format");
    assert_eq!(c["status"], "fail", "{c}");
    let msg = c["message"].as_str().unwrap();
    for n in needles {
        assert!(msg.contains(n), "image.format message lacks {n:?}: {msg}");
    }
    match q {
        Qemu::CheckErrors => assert!(
            qcode != 0 || qtext.contains("errors were found"),
            "qemu-img check finds errors too: {qtext}"
        ),
        Qemu::CheckClean => assert_eq!(qcode, 0, "{qtext}"),
        Qemu::InfoFails => assert_ne!(qcode, 0, "qemu-img info refuses it too: {qtext}"),
        Qemu::InfoOpens => assert_eq!(qcode, 0, "{qtext}"),
    }
    if q.command() == "check" {
        assert!(
            qtext.contains("ERROR") == (q == Qemu::CheckErrors),
            "{qtext}"
        );
    }
}

/// The unedited source: imgcheck and qemu-img check both find it sound.
fn assert_sound(img: &Path, fmt: &str) {
    let o = imgcheck(&["info", &s(img)]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    if fmt != "vpc" {
        let (code, text) = qemu_verdict(img, fmt, Qemu::CheckClean);
        assert_eq!(code, 0, "qemu-img check of the source: {text}");
    }
}

fn skip() -> bool {
    if !have("qemu-img") {
        eprintln!("SKIP: qemu-img not installed");
        return true;
    }
    false
}

/// Host offset of the first L2 table of a qcow2 image `b`.
fn first_l2(b: &[u8]) -> usize {
    let l1 = be64(b, 40) as usize;
    (be64(b, l1) & 0x00ff_ffff_ffff_fe00) as usize
}

#[test]
fn qcow2_that_does_not_hold_its_tables_and_data() {
    if skip() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let src = source(dir.path(), "qcow2", "src.qcow2");
    assert_sound(&src, "qcow2");
    let b = std::fs::read(&src).unwrap();
    let flen = b.len() as u64;
    let (l1, rt, l2) = (be64(&b, 40), be64(&b, 48), first_l2(&b));

    // Cut short (an interrupted upload): data clusters past the end.
    let p = edited(&src, "cut.qcow2", |b| b.truncate(b.len() / 2));
    let cut = flen / 2;
    assert_damaged(
        &p,
        "qcow2",
        &[
            &format!("L2 table at host offset {l2}"),
            "data cluster at host offset",
            &format!("past the end of the {cut}-byte file"),
        ],
        Qemu::CheckErrors,
    );
    // The L1 table past the end.
    let p = edited(&src, "l1.qcow2", |b| put_be64(b, 40, TIB));
    assert_damaged(
        &p,
        "qcow2",
        &["L1 table", &format!("offset {TIB}"), "past the end"],
        Qemu::CheckErrors,
    );
    // An L2 table past the end.
    let p = edited(&src, "l2.qcow2", |b| {
        put_be64(b, l1 as usize, (1 << 63) | (4 * MIB))
    });
    assert_damaged(
        &p,
        "qcow2",
        &[
            &format!("L1 entry 0 (at host offset {l1}"),
            &format!("L2 table at host offset {}", 4 * MIB),
            "past the end",
        ],
        Qemu::CheckErrors,
    );
    // The refcount table past the end.
    let p = edited(&src, "reftable.qcow2", |b| put_be64(b, 48, TIB));
    assert_damaged(
        &p,
        "qcow2",
        &[
            "refcount table",
            &format!("host offset {TIB}"),
            "past the end",
        ],
        Qemu::CheckErrors,
    );
    // A refcount block past the end.
    let p = edited(&src, "refblock.qcow2", |b| put_be64(b, rt as usize, TIB));
    assert_damaged(
        &p,
        "qcow2",
        &[
            &format!("refcount table entry 0 (at host offset {rt})"),
            &format!("refcount block at host offset {TIB}"),
            "past the end",
        ],
        Qemu::CheckErrors,
    );
    // An L2 table placed over the refcount table.
    let p = edited(&src, "overlap.qcow2", |b| {
        put_be64(b, l1 as usize, (1 << 63) | rt)
    });
    assert_damaged(
        &p,
        "qcow2",
        &[
            "L2 table",
            &format!("overlaps the refcount table at host offset {rt}"),
        ],
        Qemu::CheckErrors,
    );
}

/// One L2 entry, of an unallocated cluster near the end of the disk (free NTFS space that no
/// check reads), points 1 TiB past the end of the file of an image that otherwise passes
/// every check.
#[test]
fn qcow2_l2_entry_a_tib_past_the_end_where_verify_never_reads() {
    if skip() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let raw = fixture("good-mbr.raw", dir.path());
    let src = dir.path().join("good.qcow2");
    qemu_img(&["convert", "-O", "qcow2", &s(&raw), &s(&src)]);
    let (code, _) = verify_json(&src, &["--quiet"]);
    assert_eq!(code, 0, "the unedited image passes verify");
    assert_sound(&src, "qcow2");
    let b = std::fs::read(&src).unwrap();
    let cs = 1u64 << be32(&b, 20);
    let size = be64(&b, 24);
    let clusters = (size / cs) as usize;
    let l2 = first_l2(&b);
    assert!(
        clusters <= (cs / 8) as usize,
        "the whole disk is in the first L2 table"
    );
    let last = (0..clusters)
        .rev()
        .find(|&i| be64(&b, l2 + 8 * i) == 0)
        .expect("an unallocated cluster");
    let at = l2 + 8 * last;
    let host = (b.len() as u64 + TIB) / cs * cs;
    let p = edited(&src, "tib.qcow2", |b| put_be64(b, at, (1 << 63) | host));
    assert_damaged(
        &p,
        "qcow2",
        &[
            &format!(
                "entry {last} (at host offset {at}, guest offset {})",
                last as u64 * cs
            ),
            &format!("data cluster at host offset {host}"),
            "past the end",
        ],
        Qemu::CheckErrors,
    );
    // ... and a conversion refuses it before writing anything.
    let out = dir.path().join("out.raw");
    let o = imgcheck(&["convert", "-O", "raw", &s(&p), &s(&out)]);
    assert_eq!(o.status.code(), Some(2));
    assert!(!out.exists());
}

#[test]
fn dynamic_vhd_whose_blocks_are_not_in_the_file() {
    if skip() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let src = source(dir.path(), "vpc", "src.vhd");
    assert_sound(&src, "vpc");
    let b = std::fs::read(&src).unwrap();
    let len = b.len() as u64;
    let hdr = be64(&b, 16) as usize;
    let bat = be64(&b, hdr + 16) as usize;
    assert_ne!(be32(&b, bat + 4), u32::MAX, "block 1 is allocated");

    // BAT entry 1 names the footer's sector: the block runs past the footer and the file.
    let footer = (len - 512) / 512;
    let p = edited(&src, "batfoot.vhd", |b| put_be32(b, bat + 4, footer as u32));
    assert_damaged(
        &p,
        "vpc",
        &[
            &format!("BAT entry 1 (at file offset {},", bat + 4),
            &format!("block at file offset {}", footer * 512),
            "past the end",
        ],
        Qemu::InfoFails,
    );
    // BAT entry 2 points 1 TiB past the end.
    let p = edited(&src, "battib.vhd", |b| {
        put_be32(b, bat + 8, ((len + TIB) / 512) as u32)
    });
    assert_damaged(
        &p,
        "vpc",
        &[
            &format!("BAT entry 2 (at file offset {},", bat + 8),
            "past the end",
        ],
        Qemu::InfoFails,
    );
    // BAT entry 0 names the BAT itself.
    let p = edited(&src, "batbat.vhd", |b| put_be32(b, bat, (bat / 512) as u32));
    assert_damaged(
        &p,
        "vpc",
        &["BAT entry 0", "overlaps the block allocation table"],
        Qemu::InfoOpens,
    );
    // Truncated (cut in half): the blocks after the cut are gone, and so is the end footer.
    let p = edited(&src, "cut.vhd", |b| b.truncate(b.len() / 2));
    assert_damaged(
        &p,
        "vpc",
        &[
            "BAT entry",
            "past the end",
            &format!("{}-byte file", len / 2),
        ],
        Qemu::InfoFails,
    );
}

/// Offsets in a monolithicSparse VMDK `b`: (GD, redundant GD, first GT) in bytes.
fn vmdk_tables(b: &[u8]) -> (usize, usize, usize) {
    let gd = le64(b, 56) as usize * 512;
    let rgd = le64(b, 48) as usize * 512;
    let gt0 = le32(b, gd) as usize * 512;
    (gd, rgd, gt0)
}

#[test]
fn sparse_vmdk_whose_tables_point_out_of_the_file() {
    if skip() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let src = source(dir.path(), "vmdk", "src.vmdk");
    assert_sound(&src, "vmdk");
    let b = std::fs::read(&src).unwrap();
    let (gd, rgd, gt0) = vmdk_tables(&b);
    assert_ne!(le32(&b, gt0 + 4), 0, "grain 1 is allocated");

    // A grain table entry 1 TiB past the end.
    let p = edited(&src, "gte.vmdk", |b| {
        put_le32(b, gt0 + 4, (TIB / 512) as u32)
    });
    assert_damaged(
        &p,
        "vmdk",
        &[
            &format!("grain table 0 (at file offset {}), entry 1", gt0 + 4),
            &format!("grain at file offset {TIB}"),
            "past the end",
        ],
        Qemu::CheckErrors,
    );
    // Both grain directories' first entry past the end. (qemu-img check does not look.)
    let p = edited(&src, "gd.vmdk", |b| {
        put_le32(b, gd, 1 << 30);
        put_le32(b, rgd, 1 << 30);
    });
    assert_damaged(
        &p,
        "vmdk",
        &[
            &format!("grain directory entry 0 (at file offset {gd})"),
            &format!("file offset {}", 512u64 << 30),
            "past the end",
        ],
        Qemu::CheckClean,
    );
    // Truncated in half.
    let half = b.len() / 2;
    let p = edited(&src, "cut.vmdk", |b| b.truncate(half));
    assert_damaged(
        &p,
        "vmdk",
        &[
            "grain table 0",
            "grain at file offset",
            &format!("{half}-byte file"),
        ],
        Qemu::CheckErrors,
    );
}
