//! Output safety: a killed or failing `convert` leaves nothing at DST, and the input is never
//! opened for writing (inotify watches it) nor changed (bytes and mtime).
mod common;
use common::*;

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const MIB: u64 = 1024 * 1024;

fn s(p: &Path) -> String {
    p.display().to_string()
}

/// A raw source of `size` bytes of random data (incompressible, no holes: converting it takes
/// real work).
fn dense_raw(path: &Path, size: u64) {
    let mut b = vec![0u8; size as usize];
    Rng::new(size).fill(&mut b);
    std::fs::write(path, b).unwrap();
}

/// Leftover temporary files in `dir`.
fn tmp_files(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(".tmp-imgcheck"))
        .collect()
}

#[test]
fn kill_9_mid_convert_leaves_no_dst() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src.raw");
    dense_raw(&src, 48 * MIB);
    let out = dir.path().join("out");
    std::fs::create_dir(&out).unwrap();
    let dst = out.join("dst.raw");
    let mut child = Command::new(imgcheck_bin())
        .args(["convert", "-q", "-O", "raw", &s(&src), &s(&dst)])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Wait until the temporary output exists (the copy has started), then SIGKILL.
    let t = Instant::now();
    while tmp_files(&out).is_empty() {
        assert!(
            child.try_wait().unwrap().is_none(),
            "convert finished before it could be killed; make the source bigger"
        );
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "no temporary output appeared"
        );
        std::thread::sleep(Duration::from_micros(200));
    }
    std::thread::sleep(Duration::from_millis(5));
    child.kill().unwrap(); // SIGKILL
    let st = child.wait().unwrap();
    assert_eq!(
        st.signal(),
        Some(libc::SIGKILL),
        "convert exited ({st:?}) before the kill: the test proves nothing"
    );
    assert!(!dst.exists(), "a killed convert left {}", dst.display());
    // Only the temporary file may remain, under its recognisable name.
    for e in std::fs::read_dir(&out).unwrap() {
        let p = e.unwrap().path();
        assert!(
            p.to_string_lossy().ends_with(".tmp-imgcheck"),
            "unexpected file {}",
            p.display()
        );
    }
}

#[test]
fn file_size_limit_gives_a_clear_error_and_no_dst() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src.raw");
    dense_raw(&src, 4 * MIB);
    let dst = dir.path().join("dst.raw");
    // ulimit -f 1024: at most 512 KiB (dash counts 512-byte blocks) or 1 MiB (bash: KiB).
    let o = Command::new("sh")
        .arg("-c")
        .arg("ulimit -f 1024; exec \"$0\" convert -q -O raw \"$1\" \"$2\"")
        .arg(imgcheck_bin())
        .arg(&src)
        .arg(&dst)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(
        o.status.signal(),
        None,
        "killed by a signal (SIGXFSZ not ignored?): {err}"
    );
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains("dst.raw"),
        "the error does not name DST: {err}"
    );
    assert!(
        err.to_lowercase().contains("file too large"),
        "the error does not say why: {err}"
    );
    assert!(!err.contains("panicked"), "{err}");
    assert!(!dst.exists(), "a partial DST was left");
    assert!(tmp_files(dir.path()).is_empty(), "temporary file left");
}

/// Watches `path` with inotify; `events()` returns the masks seen so far.
struct Watch {
    fd: i32,
}

impl Watch {
    fn new(path: &Path) -> Watch {
        let fd = unsafe { libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC) };
        assert!(fd >= 0);
        let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
        let mask = libc::IN_OPEN | libc::IN_MODIFY | libc::IN_CLOSE_WRITE | libc::IN_ATTRIB;
        let wd = unsafe { libc::inotify_add_watch(fd, c.as_ptr(), mask) };
        assert!(wd >= 0);
        Watch { fd }
    }
    fn events(&self) -> Vec<u32> {
        let mut out = Vec::new();
        let mut buf = vec![0u8; 65536];
        loop {
            let n = unsafe { libc::read(self.fd, buf.as_mut_ptr().cast(), buf.len()) };
            if n <= 0 {
                break;
            }
            let mut at = 0usize;
            while at < n as usize {
                let mask = u32::from_ne_bytes(buf[at + 4..at + 8].try_into().unwrap());
                let len = u32::from_ne_bytes(buf[at + 12..at + 16].try_into().unwrap()) as usize;
                out.push(mask);
                at += 16 + len;
            }
        }
        out
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        unsafe { libc::close(self.fd) };
    }
}

#[test]
fn input_is_never_opened_writable_nor_changed() {
    let dir = tempfile::tempdir().unwrap();
    let mut inputs = Vec::new();
    let raw = dir.path().join("in.raw");
    make_pattern_raw(&raw, 8 * MIB, 3);
    inputs.push(raw.clone());
    if have("qemu-img") {
        for (fmt, name) in [
            ("qcow2", "in.qcow2"),
            ("vpc", "in.vhd"),
            ("vmdk", "in.vmdk"),
        ] {
            let p = dir.path().join(name);
            qemu_img(&["convert", "-q", "-f", "raw", "-O", fmt, &s(&raw), &s(&p)]);
            inputs.push(p);
        }
    }
    for input in &inputs {
        std::fs::set_permissions(input, std::fs::Permissions::from_mode(0o444)).unwrap();
        let before = std::fs::read(input).unwrap();
        let mtime = std::fs::metadata(input).unwrap().modified().unwrap();
        let w = Watch::new(input);
        let dst = dir.path().join("out.raw");
        let _ = std::fs::remove_file(&dst);
        for args in [
            vec!["info".to_string(), s(input)],
            vec!["verify".to_string(), "-q".to_string(), s(input)],
            vec![
                "convert".to_string(),
                "-q".to_string(),
                "-O".to_string(),
                "raw".to_string(),
                s(input),
                s(&dst),
            ],
        ] {
            let a: Vec<&str> = args.iter().map(String::as_str).collect();
            let o = imgcheck(&a);
            let err = String::from_utf8_lossy(&o.stderr);
            assert!(!err.contains("panicked"), "{a:?}: {err}");
            if args[0] != "verify" {
                // verify fails its checks on a pattern disk (exit 1); info and convert succeed.
                assert!(o.status.success(), "{a:?}: {err}");
            } else {
                assert_eq!(o.status.code(), Some(1), "{a:?}: {err}");
            }
        }
        let ev = w.events();
        assert!(
            ev.iter().any(|m| m & libc::IN_OPEN != 0),
            "{}: inotify saw no open at all (watch broken?)",
            input.display()
        );
        for m in &ev {
            assert_eq!(
                m & (libc::IN_MODIFY | libc::IN_CLOSE_WRITE | libc::IN_ATTRIB),
                0,
                "{}: opened writable, modified or changed (inotify mask {m:#x})",
                input.display()
            );
        }
        assert_eq!(std::fs::read(input).unwrap(), before, "{}", input.display());
        assert_eq!(
            std::fs::metadata(input).unwrap().modified().unwrap(),
            mtime,
            "{}",
            input.display()
        );
        // The converted guest equals qemu-img's reading of the input (the oracle; for a VHD the
        // virtual size is rounded to its CHS geometry, so not simply the raw pattern).
        let reference = if input == &raw {
            raw.clone()
        } else {
            let r = dir.path().join("ref.raw");
            let _ = std::fs::remove_file(&r);
            qemu_img(&["convert", "-q", "-O", "raw", &s(input), &s(&r)]);
            r
        };
        assert!(
            std::fs::read(&dst).unwrap() == std::fs::read(&reference).unwrap(),
            "{}: converted guest differs from qemu-img's",
            input.display()
        );
    }
}
