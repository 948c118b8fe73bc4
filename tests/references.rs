//! References an image makes to other files (qcow2 backing files, VMDK extents) must name
//! regular files, checked on the opened descriptor: a FIFO is refused without hanging, a
//! character device is refused even through a symlink with --allow-outside-dir, and a block
//! device only with --allow-block-devices. And a conversion never replaces one of its inputs:
//! not the source (by its path, a hard link or a symlink), not a backing file, not with
//! --force, not in a batch whose output folder holds the inputs. Every refused run leaves the
//! inputs' bytes unchanged (compared by SHA-256).
mod common;
use common::*;

use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

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

/// Run imgcheck, killing it (and failing the test) if it has not ended within 10 s.
fn imgcheck_timed(args: &[&str]) -> Output {
    let mut child = Command::new(imgcheck_bin())
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            child.kill().unwrap();
            child.wait().unwrap();
            panic!("imgcheck {args:?} hung (killed after 10 s)");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

/// Exit 2, a message naming every needle.
fn assert_refused(o: &Output, needles: &[&str]) {
    let err = String::from_utf8_lossy(&o.stderr);
    eprintln!("  imgcheck: exit {:?}: {}", o.status.code(), err.trim());
    assert_eq!(o.status.code(), Some(2), "{err}");
    for n in needles {
        assert!(err.contains(n), "message lacks {n:?}: {err}");
    }
}

/// A 4 MiB qcow2 overlay `name` in `dir` whose backing file is `backing` (raw), not probed.
fn overlay(dir: &Path, name: &str, backing: &str) -> PathBuf {
    let p = dir.join(name);
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-b",
        backing,
        "-F",
        "raw",
        "-u",
        &s(&p),
        "4M",
    ]);
    p
}

#[test]
fn backing_file_that_is_a_fifo_is_refused_without_hanging() {
    if skip() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("base.raw");
    run("mkfifo", &[&s(&fifo)]);
    let top = overlay(dir.path(), "top.qcow2", "base.raw");
    for cmd in ["info", "verify"] {
        let o = imgcheck_timed(&[cmd, "--allow-backing", &s(&top)]);
        if cmd == "info" {
            assert_refused(
                &o,
                &["backing file", "base.raw", "FIFO", "not a regular file"],
            );
        } else {
            assert_eq!(o.status.code(), Some(2));
        }
    }
    // The FIFO named as the image itself.
    let o = imgcheck_timed(&["info", &s(&fifo)]);
    assert_refused(&o, &["base.raw", "FIFO"]);
    // A VMDK extent that is a FIFO, too.
    let desc = dir.path().join("d.vmdk");
    std::fs::write(
        &desc,
        "# Disk DescriptorFile\nversion=1\nCID=fffffffe\nparentCID=ffffffff\n\
         createType=\"monolithicFlat\"\nRW 8192 FLAT \"base.raw\" 0\n",
    )
    .unwrap();
    let o = imgcheck_timed(&["info", &s(&desc)]);
    assert_refused(&o, &["extent", "base.raw", "FIFO"]);
}

#[test]
fn character_device_through_a_symlink_is_refused_even_outside_the_directory() {
    if skip() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    for dev in ["/dev/zero", "/dev/null"] {
        let name = format!("link-{}.raw", &dev[5..]);
        symlink(dev, dir.path().join(&name)).unwrap();
        let top = overlay(dir.path(), &format!("top-{}.qcow2", &dev[5..]), &name);
        // Without --allow-outside-dir the symlink leaves the directory: refused for that.
        let o = imgcheck_timed(&["info", "--allow-backing", &s(&top)]);
        assert_refused(&o, &["outside"]);
        // With it (and even with --allow-block-devices) a character device is no image.
        for extra in [&[][..], &["--allow-block-devices"][..]] {
            let mut a = vec!["info", "--allow-backing", "--allow-outside-dir"];
            a.extend_from_slice(extra);
            let t = s(&top);
            a.push(&t);
            let o = imgcheck_timed(&a);
            assert_refused(&o, &[dev, "character device", "not a regular file"]);
        }
        // The same through a VMDK extent.
        let desc = dir.path().join(format!("{}.vmdk", &dev[5..]));
        std::fs::write(
            &desc,
            format!(
                "# Disk DescriptorFile\nversion=1\nCID=fffffffe\nparentCID=ffffffff\n\
                 createType=\"monolithicFlat\"\nRW 8192 FLAT \"{name}\" 0\n"
            ),
        )
        .unwrap();
        let o = imgcheck_timed(&["info", "--allow-outside-dir", &s(&desc)]);
        assert_refused(&o, &[dev, "character device"]);
    }
}

/// A block device that can be opened read-only here (a loop device; none without root).
fn readable_block_device() -> Option<&'static str> {
    ["/dev/loop0", "/dev/loop1"]
        .into_iter()
        .find(|p| std::fs::File::open(p).is_ok())
}

#[test]
fn block_device_backing_file_needs_allow_block_devices() {
    if skip() {
        return;
    }
    let Some(dev) = readable_block_device() else {
        eprintln!("SKIP: no block device can be opened (not root)");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    symlink(dev, dir.path().join("blk.raw")).unwrap();
    let top = overlay(dir.path(), "top.qcow2", "blk.raw");
    let t = s(&top);
    let o = imgcheck_timed(&["info", "--allow-backing", "--allow-outside-dir", &t]);
    assert_refused(&o, &[dev, "block device", "--allow-block-devices"]);
    let o = imgcheck_timed(&[
        "info",
        "--allow-backing",
        "--allow-outside-dir",
        "--allow-block-devices",
        &t,
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!err.contains("block device"), "allowed now: {err}");
}

/// SHA-256 of a file (coreutils' sha256sum).
fn sha256(p: &Path) -> String {
    let o = run("sha256sum", &[&s(p)]);
    String::from_utf8_lossy(&o.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

/// No temporary output left in `dir`.
fn assert_no_temporaries(dir: &Path) {
    let left: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp-imgcheck"))
        .collect();
    assert!(left.is_empty(), "temporaries left: {left:?}");
}

#[test]
fn convert_never_replaces_an_input_even_with_force() {
    if skip() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let raw = d.join("p.raw");
    make_pattern_raw(&raw, 4 << 20, 3);
    let src = d.join("src.qcow2");
    qemu_img(&["convert", "-O", "qcow2", &s(&raw), &s(&src)]);
    std::fs::hard_link(&src, d.join("hard.qcow2")).unwrap();
    symlink("src.qcow2", d.join("soft.qcow2")).unwrap();
    let before = sha256(&src);
    let srcs = s(&src);
    for dst in [
        "src.qcow2",
        "hard.qcow2",
        "soft.qcow2",
        "./sub/../src.qcow2",
    ] {
        std::fs::create_dir_all(d.join("sub")).unwrap();
        let dsts = s(&d.join(dst));
        for fmt in ["qcow2", "raw"] {
            let o = imgcheck(&["convert", "--force", "-O", fmt, &srcs, &dsts]);
            eprintln!("convert --force -O {fmt} src.qcow2 {dst}:");
            assert_refused(&o, &["destination is an input", "even with --force"]);
            assert_eq!(sha256(&src), before, "{dst}: source bytes changed");
            assert!(
                d.join("soft.qcow2").is_symlink(),
                "{dst}: the symlink was replaced"
            );
        }
    }
    // The backing file of the source as the destination.
    let base = d.join("base.raw");
    make_pattern_raw(&base, 4 << 20, 4);
    let top = overlay(d, "top.qcow2", "base.raw");
    let (b0, t0) = (sha256(&base), sha256(&top));
    let o = imgcheck(&[
        "convert",
        "--allow-backing",
        "--force",
        "-O",
        "raw",
        &s(&top),
        &s(&base),
    ]);
    eprintln!("convert --allow-backing --force top.qcow2 base.raw (its backing file):");
    assert_refused(&o, &["destination is an input"]);
    assert_eq!((sha256(&base), sha256(&top)), (b0, t0));
    assert_no_temporaries(d);
    // A destination that is no input still works, with --force over an existing file.
    std::fs::write(d.join("other.raw"), b"old").unwrap();
    let o = imgcheck(&[
        "convert",
        "--force",
        "-O",
        "raw",
        &srcs,
        &s(&d.join("other.raw")),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(
        std::fs::read(d.join("other.raw")).unwrap(),
        std::fs::read(&raw).unwrap()
    );
}

#[test]
fn batch_convert_refuses_an_output_folder_where_outputs_replace_inputs() {
    if skip() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let raw = d.join("a.raw");
    make_pattern_raw(&raw, 2 << 20, 5);
    let q = d.join("b.qcow2");
    qemu_img(&["convert", "-O", "qcow2", &s(&raw), &s(&q)]);
    let hashes = || (sha256(&raw), sha256(&q));
    let before = hashes();
    let dirs = s(d);
    // -O qcow2 into the input folder: b.qcow2 -> b.qcow2. -O raw: a.raw -> a.raw.
    for (fmt, clash) in [("qcow2", "b.qcow2"), ("raw", "a.raw")] {
        for force in [false, true] {
            let mut a = vec!["batch-convert", "-O", fmt, "--out-dir", &dirs];
            if force {
                a.push("--force");
            }
            let (r, qs) = (s(&raw), s(&q));
            a.extend([r.as_str(), qs.as_str()]);
            let o = imgcheck(&a);
            eprintln!("batch-convert -O {fmt} --out-dir <input folder> (force {force}):");
            assert_refused(
                &o,
                &[clash, "would replace an input", "nothing was converted"],
            );
            assert_eq!(hashes(), before, "inputs changed");
        }
    }
    // Two inputs with one output name.
    let v = d.join("a.vhd");
    qemu_img(&["convert", "-O", "vpc", &s(&raw), &s(&v)]);
    let out = d.join("out");
    let o = imgcheck(&[
        "batch-convert",
        "-O",
        "qcow2",
        "--out-dir",
        &s(&out),
        &s(&raw),
        &s(&v),
    ]);
    assert_refused(&o, &["a.qcow2", "would be converted to this output"]);
    assert!(!out.join("a.qcow2").exists());
    // The input folder as output folder without a clash converts (a.raw -> a.qcow2).
    let o = imgcheck(&["batch-convert", "-O", "qcow2", "--out-dir", &dirs, &s(&raw)]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(d.join("a.qcow2").exists());
    assert_eq!(hashes(), before);
    assert_no_temporaries(d);
}
