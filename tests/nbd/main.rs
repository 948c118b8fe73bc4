//! NBD: `imgcheck serve` against real clients (qemu-img, qemu-io, qemu-nbd -L, nbdinfo, the
//! `nbd` crate's client, and a hand-written protocol client for pipelining and refusals), and
//! `nbd://` sources read by imgcheck from qemu-nbd and from `imgcheck serve`.
//! Everything listens on 127.0.0.1 (or a Unix socket in the test's temp folder); every server
//! is killed when its guard is dropped. Attacks on the server and the client (connection
//! floods, clients that do not read) are in `attacks.rs`, deadlines (the server's handshake
//! and idle deadlines, the client's against dripping servers) in `deadlines.rs`.
#[path = "../common/mod.rs"]
mod common;
use common::*;

mod attacks;
mod deadlines;
mod wire;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running `imgcheck serve`; killed and reaped on drop.
struct Served {
    child: Child,
    uri: String,
    /// Its standard error (a file: a pipe nobody reads would stall a server that logs a lot).
    log: tempfile::NamedTempFile,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Served {
    /// What the server has written to standard error so far.
    fn log(&self) -> String {
        std::fs::read_to_string(self.log.path()).unwrap_or_default()
    }

    /// Send SIGTERM and wait up to `within` for the server to exit; its status, `None` if it
    /// is still running then.
    fn terminate(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        // SAFETY: kill() on our own child's pid.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        let t0 = Instant::now();
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                return Some(st);
            }
            if t0.elapsed() > within {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Start `imgcheck serve ARGS` and wait for its "listening on URI" line.
fn serve(args: &[&str]) -> Served {
    let log = tempfile::NamedTempFile::new().unwrap();
    let mut child = Command::new(imgcheck_bin())
        .arg("serve")
        .args(args)
        .stdout(Stdio::piped())
        .stderr(log.reopen().unwrap())
        .spawn()
        .expect("start imgcheck serve");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let Some(uri) = line.trim().strip_prefix("listening on ") else {
        let _ = child.kill();
        let _ = child.wait();
        let err = std::fs::read_to_string(log.path()).unwrap_or_default();
        panic!("imgcheck serve {args:?} did not start: {line:?} {err}");
    };
    Served {
        uri: uri.to_string(),
        child,
        log,
    }
}

/// Serve `img` on a free loopback port under the export name `name`.
fn serve_tcp(img: &Path, name: &str) -> Served {
    serve(&[
        "--listen",
        "127.0.0.1:0",
        "--export-name",
        name,
        &img.display().to_string(),
    ])
}

fn port_of(uri: &str) -> u16 {
    let rest = uri.strip_prefix("nbd://127.0.0.1:").expect(uri);
    rest.split('/').next().unwrap().parse().unwrap()
}

/// A qemu-nbd server (forked, pid in a file); killed on drop.
struct QemuNbd {
    pid: i32,
}

impl Drop for QemuNbd {
    fn drop(&mut self) {
        let _ = Command::new("kill").arg(self.pid.to_string()).status();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `qemu-nbd -t -r -p PORT -x NAME [-f FMT] IMAGE` on 127.0.0.1; returns the guard and URI.
fn qemu_nbd(img: &Path, name: &str, fmt: &str, dir: &Path) -> (QemuNbd, String) {
    let port = free_port();
    let pidfile = dir.join(format!("qemu-nbd-{port}.pid"));
    let o = Command::new("qemu-nbd")
        .args([
            "-t",
            "-r",
            "-b",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-x",
            name,
            "-f",
            fmt,
            "--fork",
            &format!("--pid-file={}", pidfile.display()),
            &img.display().to_string(),
        ])
        .output()
        .expect("run qemu-nbd");
    assert!(
        o.status.success(),
        "qemu-nbd failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let pid = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    (QemuNbd { pid }, format!("nbd://127.0.0.1:{port}/{name}"))
}

fn run_out(cmd: &str, args: &[&str]) -> (bool, String, String) {
    let o = Command::new(cmd).args(args).output().expect(cmd);
    (
        o.status.success(),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

fn need_qemu() -> bool {
    if !have("qemu-img") || !have("qemu-nbd") {
        eprintln!("SKIP: qemu-img/qemu-nbd not installed");
        return false;
    }
    true
}

/// Merge qemu-img map JSON into (start, length, data, zero) runs.
fn map_runs(json: &str) -> Vec<(u64, u64, bool, bool)> {
    let v: serde_json::Value = serde_json::from_str(json).unwrap();
    let mut out: Vec<(u64, u64, bool, bool)> = Vec::new();
    for e in v.as_array().unwrap() {
        let (s, l) = (e["start"].as_u64().unwrap(), e["length"].as_u64().unwrap());
        let (d, z) = (e["data"].as_bool().unwrap(), e["zero"].as_bool().unwrap());
        match out.last_mut() {
            Some(last) if last.2 == d && last.3 == z && last.0 + last.1 == s => last.1 += l,
            _ => out.push((s, l, d, z)),
        }
    }
    out
}

#[test]
fn qemu_clients_read_a_served_raw_image() {
    if !need_qemu() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("disk.raw");
    make_pattern_raw(&img, 6 * 1024 * 1024, 11);
    let imgs = img.display().to_string();
    let s = serve_tcp(&img, "disk");
    assert!(s.uri.starts_with("nbd://127.0.0.1:"), "{}", s.uri);

    // compare: identical
    let (ok, out, err) = run_out(
        "qemu-img",
        &["compare", "-f", "raw", "-F", "raw", &s.uri, &imgs],
    );
    assert!(ok && out.contains("identical"), "{out}{err}");

    // convert: same bytes
    let copy = dir.path().join("copy.raw");
    qemu_img(&[
        "convert",
        "-f",
        "raw",
        "-O",
        "raw",
        &s.uri,
        &copy.display().to_string(),
    ]);
    assert_same_guest(
        &std::fs::read(&copy).unwrap(),
        &std::fs::read(&img).unwrap(),
        "qemu-img convert from imgcheck serve",
    );

    // map: the holes of the sparse file are reported as holes, exactly as on the file
    let (ok, nbd_map, err) = run_out("qemu-img", &["map", "--output=json", "-f", "raw", &s.uri]);
    assert!(ok, "{err}");
    let (ok, file_map, err) = run_out("qemu-img", &["map", "--output=json", "-f", "raw", &imgs]);
    assert!(ok, "{err}");
    let runs = map_runs(&nbd_map);
    assert!(runs.iter().any(|r| !r.2 && r.3), "no hole in {nbd_map}");
    assert!(runs.iter().any(|r| r.2 && !r.3), "no data in {nbd_map}");
    assert_eq!(
        runs,
        map_runs(&file_map),
        "map over NBD differs from the file's"
    );

    // info: virtual size
    let (ok, out, err) = run_out("qemu-img", &["info", "--output=json", "-f", "raw", &s.uri]);
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["virtual-size"], 6 * 1024 * 1024);

    // qemu-io cannot write: the export is read-only
    let (ok, out, err) = run_out("qemu-io", &["-f", "raw", "-c", "write 0 512", &s.uri]);
    assert!(!ok, "write succeeded: {out}");
    assert!(
        err.contains("Permission denied") || err.contains("read-only"),
        "{err}"
    );
    // ...and reads through it return the file's bytes
    let (ok, out, err) = run_out(
        "qemu-io",
        &["-r", "-f", "raw", "-c", "read -P 0 1048576 4096", &s.uri],
    );
    let file = std::fs::read(&img).unwrap();
    let expect_zero = file[1048576..1048576 + 4096].iter().all(|&b| b == 0);
    assert_eq!(
        ok && !out.contains("Pattern verification failed"),
        expect_zero,
        "{out}{err}"
    );

    // unknown export name refused; the empty (default) name reaches the one export
    let port = port_of(&s.uri);
    let (ok, _, err) = run_out(
        "qemu-img",
        &["info", &format!("nbd://127.0.0.1:{port}/nope")],
    );
    assert!(!ok, "unknown export accepted");
    assert!(err.contains("nope"), "{err}");
    let (ok, out, err) = run_out(
        "qemu-img",
        &[
            "compare",
            "-f",
            "raw",
            "-F",
            "raw",
            &format!("nbd://127.0.0.1:{port}/"),
            &imgs,
        ],
    );
    assert!(ok, "default export: {out}{err}");

    // NBD_OPT_LIST / INFO / LIST_META_CONTEXT via qemu-nbd -L
    let (ok, out, err) = run_out(
        "qemu-nbd",
        &["-L", "-b", "127.0.0.1", "-p", &port.to_string()],
    );
    assert!(ok, "{err}");
    assert!(
        out.contains("exports available: 1") && out.contains("export: 'disk'"),
        "{out}"
    );
    assert!(
        out.contains("base:allocation") && out.contains("readonly"),
        "{out}"
    );
    assert!(out.contains("size:  6291456"), "{out}");
}

#[test]
fn nbdinfo_lists_the_export() {
    if !have("nbdinfo") {
        eprintln!("SKIP: nbdinfo (libnbd-bin) not installed");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("win disk.raw");
    make_pattern_raw(&img, 1024 * 1024, 5);
    let s = serve_tcp(&img, "win disk");
    let port = port_of(&s.uri);
    let (ok, out, err) = run_out("nbdinfo", &["--list", &format!("nbd://127.0.0.1:{port}")]);
    assert!(ok, "{err}");
    assert!(out.contains("export=\"win disk\""), "{out}");
    assert!(
        out.contains("raw image") && out.contains("read-only"),
        "{out}"
    );
    assert!(
        out.contains("is_read_only: true") && out.contains("base:allocation"),
        "{out}"
    );
    // nbdinfo --map reads base:allocation
    let (ok, out, err) = run_out("nbdinfo", &["--map", &s.uri]);
    assert!(ok, "{err}");
    assert!(out.contains("hole,zero") && out.contains("data"), "{out}");
}

#[test]
fn unix_socket_export_and_clean_shutdown_on_sigterm() {
    if !need_qemu() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("disk.raw");
    make_pattern_raw(&img, 2 * 1024 * 1024, 3);
    let sock = dir.path().join("nbd.sock");
    let mut s = serve(&[
        "--unix",
        &sock.display().to_string(),
        "--export-name",
        "d",
        &img.display().to_string(),
    ]);
    assert!(s.uri.starts_with("nbd+unix:///d?socket="), "{}", s.uri);
    assert!(sock.exists());
    let (ok, out, err) = run_out(
        "qemu-img",
        &[
            "compare",
            "-f",
            "raw",
            "-F",
            "raw",
            &s.uri,
            &img.display().to_string(),
        ],
    );
    assert!(ok && out.contains("identical"), "{out}{err}");
    // imgcheck reads it back over the socket too
    let ours = imgcheck_guest_bytes_of(&s.uri, dir.path());
    assert_same_guest(
        &ours,
        &std::fs::read(&img).unwrap(),
        "imgcheck over nbd+unix",
    );

    // SIGTERM: exits 0 and removes the socket file
    let pid = s.child.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let t0 = Instant::now();
    let status = loop {
        if let Some(st) = s.child.try_wait().unwrap() {
            break st;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "serve did not stop on SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status:?}");
    assert!(!sock.exists(), "socket file left behind");

    // A second server on the same path works (and a regular file there is refused)
    let marker = dir.path().join("not-a-socket");
    std::fs::write(&marker, b"keep me").unwrap();
    let o = imgcheck(&[
        "serve",
        "--unix",
        &marker.display().to_string(),
        &img.display().to_string(),
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("not a socket"));
    assert_eq!(std::fs::read(&marker).unwrap(), b"keep me");
}

/// imgcheck convert -O raw SRC (a URI) → bytes.
fn imgcheck_guest_bytes_of(src: &str, dir: &Path) -> Vec<u8> {
    let out = dir.join(format!("via-nbd-{}.raw", std::process::id()));
    let _ = std::fs::remove_file(&out);
    let o = imgcheck(&["convert", "-O", "raw", src, &out.display().to_string()]);
    assert!(
        o.status.success(),
        "imgcheck convert {src}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let v = std::fs::read(&out).unwrap();
    std::fs::remove_file(&out).ok();
    v
}

#[test]
fn many_clients_at_once() {
    if !need_qemu() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("disk.raw");
    make_pattern_raw(&img, 4 * 1024 * 1024, 21);
    let s = serve_tcp(&img, "disk");
    let imgs = img.display().to_string();
    let mut kids = Vec::new();
    for i in 0..6 {
        let out = dir.path().join(format!("c{i}.raw"));
        kids.push((
            out.clone(),
            Command::new("qemu-img")
                .args([
                    "convert",
                    "-f",
                    "raw",
                    "-O",
                    "raw",
                    &s.uri,
                    &out.display().to_string(),
                ])
                .stderr(Stdio::piped())
                .spawn()
                .unwrap(),
        ));
    }
    let cmp = Command::new("qemu-img")
        .args(["compare", "-f", "raw", "-F", "raw", &s.uri, &imgs])
        .output();
    let ours = imgcheck_guest_bytes_of(&s.uri, dir.path());
    let file = std::fs::read(&img).unwrap();
    for (out, k) in kids {
        let o = k.wait_with_output().unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        assert_same_guest(
            &std::fs::read(&out).unwrap(),
            &file,
            "concurrent qemu-img convert",
        );
    }
    assert!(cmp.unwrap().status.success());
    assert_same_guest(&ours, &file, "concurrent imgcheck convert");
}

/// Minimal hand-written NBD client for protocol-level checks.
struct Raw {
    s: TcpStream,
}

const IHAVEOPT: u64 = 0x4948_4156_454f_5054;
const REPLY_MAGIC: u64 = 0x0003_e889_0455_65a9;

impl Raw {
    fn connect(port: u16) -> Raw {
        let s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut r = Raw { s };
        let mut hello = [0u8; 18];
        r.s.read_exact(&mut hello).unwrap();
        assert_eq!(&hello[..16], b"NBDMAGICIHAVEOPT");
        assert_eq!(u16::from_be_bytes([hello[16], hello[17]]) & 3, 3);
        r.s.write_all(&3u32.to_be_bytes()).unwrap(); // fixed newstyle, no zeroes
        r
    }
    fn opt(&mut self, opt: u32, data: &[u8]) {
        let mut b = IHAVEOPT.to_be_bytes().to_vec();
        b.extend_from_slice(&opt.to_be_bytes());
        b.extend_from_slice(&(data.len() as u32).to_be_bytes());
        b.extend_from_slice(data);
        self.s.write_all(&b).unwrap();
    }
    fn opt_reply(&mut self, opt: u32) -> (u32, Vec<u8>) {
        assert_eq!(self.u64(), REPLY_MAGIC);
        assert_eq!(self.u32(), opt);
        let typ = self.u32();
        let len = self.u32() as usize;
        let mut d = vec![0u8; len];
        self.s.read_exact(&mut d).unwrap();
        (typ, d)
    }
    fn u16(&mut self) -> u16 {
        let mut b = [0u8; 2];
        self.s.read_exact(&mut b).unwrap();
        u16::from_be_bytes(b)
    }
    fn u32(&mut self) -> u32 {
        let mut b = [0u8; 4];
        self.s.read_exact(&mut b).unwrap();
        u32::from_be_bytes(b)
    }
    fn u64(&mut self) -> u64 {
        let mut b = [0u8; 8];
        self.s.read_exact(&mut b).unwrap();
        u64::from_be_bytes(b)
    }
    fn request(&mut self, flags: u16, typ: u16, cookie: u64, offset: u64, len: u32) {
        let mut b = 0x2560_9513u32.to_be_bytes().to_vec();
        b.extend_from_slice(&flags.to_be_bytes());
        b.extend_from_slice(&typ.to_be_bytes());
        b.extend_from_slice(&cookie.to_be_bytes());
        b.extend_from_slice(&offset.to_be_bytes());
        b.extend_from_slice(&len.to_be_bytes());
        self.s.write_all(&b).unwrap();
    }
    /// One structured chunk: (flags, type, cookie, payload).
    fn chunk(&mut self) -> (u16, u16, u64, Vec<u8>) {
        assert_eq!(self.u32(), 0x668e_33ef, "structured reply magic");
        let flags = self.u16();
        let typ = self.u16();
        let cookie = self.u64();
        let len = self.u32() as usize;
        let mut d = vec![0u8; len];
        self.s.read_exact(&mut d).unwrap();
        (flags, typ, cookie, d)
    }
}

fn name_data(name: &str) -> Vec<u8> {
    let mut d = (name.len() as u32).to_be_bytes().to_vec();
    d.extend_from_slice(name.as_bytes());
    d
}

#[test]
fn protocol_negotiation_pipelining_and_refusals() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("disk.raw");
    let size = 3 * 1024 * 1024 + 512;
    make_pattern_raw(&img, size, 9);
    let file = std::fs::read(&img).unwrap();
    let s = serve_tcp(&img, "disk");
    let port = port_of(&s.uri);
    let mut c = Raw::connect(port);

    // unknown option → ERR_UNSUP, negotiation continues
    c.opt(99, b"");
    assert_eq!(c.opt_reply(99).0, 0x8000_0001);
    // LIST with data → ERR_INVALID; LIST → one SERVER then ACK
    c.opt(3, b"x");
    assert_eq!(c.opt_reply(3).0, 0x8000_0003);
    c.opt(3, b"");
    let (t, d) = c.opt_reply(3);
    assert_eq!(t, 2);
    assert_eq!(&d[..8], &[0, 0, 0, 4, b'd', b'i', b's', b'k']);
    assert_eq!(c.opt_reply(3).0, 1);
    // meta context before structured replies → ERR_INVALID
    let mut meta = name_data("disk");
    meta.extend_from_slice(&1u32.to_be_bytes());
    meta.extend_from_slice(&name_data("base:allocation"));
    c.opt(10, &meta);
    assert_eq!(c.opt_reply(10).0, 0x8000_0003);
    // structured replies, then base:allocation
    c.opt(8, b"");
    assert_eq!(c.opt_reply(8).0, 1);
    c.opt(10, &meta);
    let (t, d) = c.opt_reply(10);
    assert_eq!(t, 4);
    let ctx = u32::from_be_bytes(d[..4].try_into().unwrap());
    assert_eq!(&d[4..], b"base:allocation");
    assert_eq!(c.opt_reply(10).0, 1);
    // INFO for an unknown export → ERR_UNKNOWN
    let mut info = name_data("other");
    info.extend_from_slice(&0u16.to_be_bytes());
    c.opt(6, &info);
    assert_eq!(c.opt_reply(6).0, 0x8000_0006);
    // GO with NAME, DESCRIPTION and BLOCK_SIZE requested
    let mut go = name_data("disk");
    go.extend_from_slice(&3u16.to_be_bytes());
    for i in [1u16, 2, 3] {
        go.extend_from_slice(&i.to_be_bytes());
    }
    c.opt(7, &go);
    let mut seen = Vec::new();
    loop {
        let (t, d) = c.opt_reply(7);
        if t == 1 {
            break;
        }
        assert_eq!(t, 3, "NBD_REP_INFO");
        let kind = u16::from_be_bytes([d[0], d[1]]);
        match kind {
            0 => {
                assert_eq!(u64::from_be_bytes(d[2..10].try_into().unwrap()), size);
                let flags = u16::from_be_bytes([d[10], d[11]]);
                assert_eq!(flags & 3, 3, "HAS_FLAGS | READ_ONLY");
            }
            1 => assert_eq!(&d[2..], b"disk"),
            2 => assert!(String::from_utf8_lossy(&d[2..]).contains("read-only")),
            3 => {
                assert_eq!(u32::from_be_bytes(d[2..6].try_into().unwrap()), 1);
                assert_eq!(u32::from_be_bytes(d[10..14].try_into().unwrap()), 32 << 20);
            }
            k => panic!("unexpected info {k}"),
        }
        seen.push(kind);
    }
    seen.sort();
    assert_eq!(seen, [0, 1, 2, 3]);

    // Transmission: 8 reads pipelined before any reply is read, unaligned, some in holes.
    let reqs: Vec<(u64, u32)> = (0..8u64)
        .map(|i| {
            (
                i * 397_001 % (size - 70_000),
                1 + (i as u32 * 8_191) % 65_536,
            )
        })
        .collect();
    for (i, &(off, len)) in reqs.iter().enumerate() {
        c.request(0, 0, 100 + i as u64, off, len);
    }
    let mut bufs: Vec<Vec<u8>> = reqs.iter().map(|r| vec![0xAA; r.1 as usize]).collect();
    let mut covered = vec![0u64; reqs.len()];
    let mut done = 0;
    while done < reqs.len() {
        let (flags, typ, cookie, d) = c.chunk();
        let i = (cookie - 100) as usize;
        let (off, _) = reqs[i];
        match typ {
            1 => {
                let o = u64::from_be_bytes(d[..8].try_into().unwrap());
                let rel = (o - off) as usize;
                bufs[i][rel..rel + d.len() - 8].copy_from_slice(&d[8..]);
                covered[i] += d.len() as u64 - 8;
            }
            2 => {
                let o = u64::from_be_bytes(d[..8].try_into().unwrap());
                let n = u32::from_be_bytes(d[8..12].try_into().unwrap()) as usize;
                let rel = (o - off) as usize;
                bufs[i][rel..rel + n].fill(0);
                covered[i] += n as u64;
            }
            0 => {}
            t => panic!("chunk type {t}"),
        }
        if flags & 1 != 0 {
            done += 1;
        }
    }
    for (i, &(off, len)) in reqs.iter().enumerate() {
        assert_eq!(covered[i], len as u64, "request {i} not fully covered");
        assert_eq!(
            bufs[i],
            &file[off as usize..off as usize + len as usize],
            "request {i}"
        );
    }

    // Block status from offset 0: descriptors tile the range; holes are HOLE|ZERO.
    c.request(0, 7, 500, 0, size as u32);
    let (flags, typ, cookie, d) = c.chunk();
    assert_eq!((flags & 1, typ, cookie), (1, 5, 500));
    assert_eq!(u32::from_be_bytes(d[..4].try_into().unwrap()), ctx);
    let mut pos = 0u64;
    let mut holes = 0;
    for e in d[4..].chunks_exact(8) {
        let len = u32::from_be_bytes(e[..4].try_into().unwrap()) as u64;
        let st = u32::from_be_bytes(e[4..].try_into().unwrap());
        if st == 3 {
            holes += 1;
            assert!(file[pos as usize..(pos + len) as usize]
                .iter()
                .all(|&b| b == 0));
        }
        pos += len;
    }
    assert_eq!(pos, size);
    assert!(holes > 0, "no hole reported");

    // Refusals: write (payload swallowed) → EPERM; trim → EPERM; too long → EINVAL;
    // past the end → EINVAL. The connection stays usable.
    let expect_err = |c: &mut Raw, cookie: u64, errno: u32| {
        let (flags, typ, ck, d) = c.chunk();
        assert_eq!((flags & 1, typ, ck), (1, 0x8001, cookie));
        assert_eq!(u32::from_be_bytes(d[..4].try_into().unwrap()), errno);
    };
    c.request(0, 1, 600, 0, 512);
    c.s.write_all(&[0x55; 512]).unwrap();
    expect_err(&mut c, 600, 1);
    c.request(0, 4, 601, 0, 4096);
    expect_err(&mut c, 601, 1);
    c.request(0, 0, 602, 0, 64 << 20);
    expect_err(&mut c, 602, 22);
    c.request(0, 0, 603, size - 100, 200);
    expect_err(&mut c, 603, 22);
    // flush is fine on a read-only export
    c.request(0, 3, 604, 0, 0);
    let (flags, typ, ck, _) = c.chunk();
    assert_eq!((flags & 1, typ, ck), (1, 0, 604));
    // a read with DF comes back as a single chunk
    c.request(4, 0, 605, 1000, 70_000);
    let (flags, typ, ck, d) = c.chunk();
    assert_eq!((flags & 1, ck), (1, 605));
    if typ == 1 {
        assert_eq!(&d[8..], &file[1000..71_000]);
    } else {
        assert_eq!(typ, 2);
        assert!(file[1000..71_000].iter().all(|&b| b == 0));
    }
    // Longer than a reply piece: with DF still one chunk; without, data chunks of at most
    // 256 KiB (holes merged), DONE on the last one only, the whole range covered.
    c.request(4, 0, 607, 512, 2 << 20);
    let (flags, typ, ck, d) = c.chunk();
    assert_eq!((flags & 1, typ, ck), (1, 1, 607));
    assert_eq!(&d[8..], &file[512..512 + (2 << 20)]);
    c.request(0, 0, 608, 0, size as u32);
    let mut got = vec![0xAAu8; size as usize];
    let mut covered = 0u64;
    loop {
        let (flags, typ, ck, d) = c.chunk();
        assert_eq!(ck, 608);
        let o = u64::from_be_bytes(d[..8].try_into().unwrap()) as usize;
        match typ {
            1 => {
                assert!(d.len() - 8 <= imgcheck::nbd::server::PIECE);
                got[o..o + d.len() - 8].copy_from_slice(&d[8..]);
                covered += d.len() as u64 - 8;
            }
            2 => {
                let n = u32::from_be_bytes(d[8..12].try_into().unwrap()) as usize;
                got[o..o + n].fill(0);
                covered += n as u64;
            }
            t => panic!("chunk type {t}"),
        }
        if flags & 1 != 0 {
            break;
        }
    }
    assert_eq!(covered, size);
    assert_eq!(got, file);
    // the file was not modified
    assert_eq!(std::fs::read(&img).unwrap(), file);
    // soft disconnect: the server closes
    c.request(0, 2, 606, 0, 0);
    let mut rest = Vec::new();
    c.s.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty());
}

#[test]
fn old_style_client_from_the_nbd_crate() {
    // The nbd crate's client speaks only NBD_OPT_EXPORT_NAME with simple replies (and wants
    // the 124 zero bytes): an independent check of that path.
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("disk.raw");
    make_pattern_raw(&img, 1024 * 1024, 17);
    let file = std::fs::read(&img).unwrap();
    let s = serve_tcp(&img, "disk");
    let port = port_of(&s.uri);

    let mut tcp = TcpStream::connect(("127.0.0.1", port)).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let export = nbd::client::handshake(&mut tcp, b"disk").unwrap();
    assert_eq!(export.size, file.len() as u64);
    assert!(export.readonly);
    let mut c = nbd::client::NbdClient::new(&mut tcp, &export);
    use std::io::{Seek, SeekFrom};
    c.seek(SeekFrom::Start(4096)).unwrap();
    let mut buf = vec![0u8; 300_000];
    c.read_exact(&mut buf).unwrap();
    assert_eq!(buf, &file[4096..304_096]);
    // the whole export in one simple reply (streamed by the server in pieces)
    c.seek(SeekFrom::Start(0)).unwrap();
    let mut all = vec![0u8; file.len()];
    c.read_exact(&mut all).unwrap();
    assert_eq!(all, file);
    c.seek(SeekFrom::Start(0)).unwrap();
    let e = c.write(&[1u8; 512]).unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::PermissionDenied, "{e}");
    assert_eq!(std::fs::read(&img).unwrap(), file, "image modified");

    // EXPORT_NAME for an unknown export: the server can only close the connection
    let mut tcp = TcpStream::connect(("127.0.0.1", port)).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    assert!(nbd::client::handshake(&mut tcp, b"nope").is_err());
}

#[test]
fn imgcheck_reads_from_qemu_nbd() {
    if !need_qemu() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("disk.raw");
    make_pattern_raw(&img, 5 * 1024 * 1024, 31);
    let (_q, uri) = qemu_nbd(&img, "guest", "raw", dir.path());

    let o = imgcheck(&["info", "--format", "json", &uri]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["format"], "raw");
    assert_eq!(v["virtual_size"], 5 * 1024 * 1024);
    assert_eq!(v["filename"], uri.as_str());
    let file_info = imgcheck_info(&img);
    // holes found through NBD_CMD_BLOCK_STATUS, as on the file through SEEK_DATA
    assert_eq!(v["allocated"], file_info["allocated"]);

    // qemu-nbd has a 512-byte minimum block: imgcheck's unaligned reads must still be exact
    let ours = imgcheck_guest_bytes_of(&uri, dir.path());
    assert_same_guest(
        &ours,
        &std::fs::read(&img).unwrap(),
        "imgcheck convert from qemu-nbd",
    );

    // unknown export: exit 2, message names the export
    let bad = uri.replace("/guest", "/nope");
    let o = imgcheck(&["info", &bad]);
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("nope") && err.contains(&bad), "{err}");

    // nothing listening: a clear error, no hang
    let o = imgcheck(&["info", &format!("nbd://127.0.0.1:{}/x", free_port())]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("cannot connect"));
}

#[test]
fn export_content_is_format_detected() {
    // qemu-nbd -f raw on a qcow2 file exports the qcow2 container bytes; imgcheck must detect
    // qcow2 in them, as for a file. Gated on the qcow2 reader being present.
    if !need_qemu() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let raw = dir.path().join("src.raw");
    make_pattern_raw(&raw, 3 * 1024 * 1024, 41);
    let q = dir.path().join("disk.qcow2");
    qemu_img(&[
        "convert",
        "-f",
        "raw",
        "-O",
        "qcow2",
        &raw.display().to_string(),
        &q.display().to_string(),
    ]);
    let (_srv, uri) = qemu_nbd(&q, "container", "raw", dir.path());
    let o = imgcheck(&["info", "--format", "json", &uri]);
    let local = imgcheck(&["info", &q.display().to_string()]);
    if !local.status.success() {
        // Without the qcow2 reader the export must still be recognised as qcow2, and refused
        // the same way as the file.
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2));
        assert!(err.contains(&uri), "{err}");
        eprintln!("SKIP part: qcow2 reader not built yet ({err})");
        return;
    }
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["format"], "qcow2");
    assert_eq!(v["virtual_size"], 3 * 1024 * 1024);
    let ours = imgcheck_guest_bytes_of(&uri, dir.path());
    assert_same_guest(&ours, &std::fs::read(&raw).unwrap(), "qcow2 read over NBD");
}

#[test]
fn odd_sized_image_round_trips_through_our_server_and_client() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("odd.raw");
    let size = 1024 * 1024 + 123;
    make_pattern_raw(&img, size, 77);
    let s = serve_tcp(&img, "odd");
    let ours = imgcheck_guest_bytes_of(&s.uri, dir.path());
    assert_same_guest(&ours, &std::fs::read(&img).unwrap(), "odd size over NBD");
    let o = imgcheck(&["info", "--format", "json", &s.uri]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["virtual_size"], size);
    assert_eq!(v["allocated"], imgcheck_info(&img)["allocated"]);
    // A proxy: serve the NBD source again, read it through two servers.
    let s2 = serve(&["--listen", "127.0.0.1:0", &s.uri]);
    let twice = imgcheck_guest_bytes_of(&s2.uri, dir.path());
    assert_same_guest(&twice, &std::fs::read(&img).unwrap(), "through two servers");
}

#[test]
fn every_readable_format_is_served_identically() {
    if !need_qemu() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let raw = dir.path().join("src.raw");
    make_pattern_raw(&raw, 4 * 1024 * 1024, 55);
    let mut served = 0;
    for (fmt, ext, opts) in [
        ("raw", "raw", ""),
        ("qcow2", "qcow2", ""),
        ("vpc", "vhd", "subformat=dynamic"),
        ("vpc", "fixed.vhd", "subformat=fixed"),
        ("vmdk", "vmdk", "subformat=monolithicSparse"),
        ("vmdk", "so.vmdk", "subformat=streamOptimized"),
    ] {
        let img: PathBuf = dir.path().join(format!("disk.{ext}"));
        let mut args = vec!["convert", "-f", "raw", "-O", fmt];
        if !opts.is_empty() {
            args.extend(["-o", opts]);
        }
        let (src, dst) = (raw.display().to_string(), img.display().to_string());
        args.extend([src.as_str(), dst.as_str()]);
        qemu_img(&args);
        if !imgcheck(&["info", &dst]).status.success() {
            eprintln!("SKIP {fmt} {opts}: imgcheck cannot read it yet");
            continue;
        }
        let s = serve_tcp(&img, "disk");
        // The guest disk as qemu sees the file vs. what imgcheck serves.
        let expect = qemu_guest_bytes(&img, Some(fmt), dir.path());
        let (ok, out, err) = run_out(
            "qemu-img",
            &["compare", "-f", "raw", "-F", fmt, &s.uri, &dst],
        );
        assert!(ok && out.contains("identical"), "{fmt} {opts}: {out}{err}");
        let copy = dir.path().join("copy.raw");
        qemu_img(&[
            "convert",
            "-f",
            "raw",
            "-O",
            "raw",
            &s.uri,
            &copy.display().to_string(),
        ]);
        let got = std::fs::read(&copy).unwrap();
        // qemu rounds the size of a served VHD to its geometry; compare the common part
        assert_same_guest(
            &got[..expect.len().min(got.len())],
            &expect[..expect.len().min(got.len())],
            &format!("{fmt} {opts}"),
        );
        served += 1;
    }
    assert!(served >= 1, "not even raw was served");
}

#[test]
fn listen_with_only_a_port_stays_on_loopback() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("disk.raw");
    make_pattern_raw(&img, 64 * 1024, 1);
    let port = free_port();
    let s = serve(&["--listen", &port.to_string(), &img.display().to_string()]);
    assert_eq!(s.uri, format!("nbd://127.0.0.1:{port}/disk.raw"));
    // A busy port is a clear error
    let o = imgcheck(&[
        "serve",
        "--listen",
        &format!("127.0.0.1:{port}"),
        &img.display().to_string(),
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("cannot listen"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// A one-shot fake server on a free loopback port that sends `bytes` to the first client and
/// then keeps the connection open for a moment (so the client fails on content, not on EOF).
fn fake_server(bytes: Vec<u8>) -> (u16, std::thread::JoinHandle<()>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let t = std::thread::spawn(move || {
        if let Ok((mut s, _)) = l.accept() {
            let _ = s.write_all(&bytes);
            s.set_read_timeout(Some(Duration::from_secs(5))).ok();
            let mut sink = [0u8; 4096];
            let t0 = Instant::now();
            while t0.elapsed() < Duration::from_secs(5) {
                match s.read(&mut sink) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
            }
        }
    });
    (port, t)
}

#[test]
fn hostile_or_wrong_servers_give_clear_errors() {
    let greet = |flags: u16| {
        let mut b = b"NBDMAGICIHAVEOPT".to_vec();
        b.extend_from_slice(&flags.to_be_bytes());
        b
    };
    // An option reply that claims 1 GiB of data.
    let mut huge = greet(3);
    huge.extend_from_slice(&REPLY_MAGIC.to_be_bytes());
    huge.extend_from_slice(&8u32.to_be_bytes()); // reply to NBD_OPT_STRUCTURED_REPLY
    huge.extend_from_slice(&1u32.to_be_bytes());
    huge.extend_from_slice(&(1u32 << 30).to_be_bytes());
    // An oldstyle server.
    let mut old = b"NBDMAGIC".to_vec();
    old.extend_from_slice(&0x0000_4202_8186_1253u64.to_be_bytes());
    old.extend_from_slice(&[0u8; 8 + 4 + 124]);
    // A reply to another option than the one asked.
    let mut wrong = greet(3);
    wrong.extend_from_slice(&REPLY_MAGIC.to_be_bytes());
    wrong.extend_from_slice(&7u32.to_be_bytes());
    wrong.extend_from_slice(&1u32.to_be_bytes());
    wrong.extend_from_slice(&0u32.to_be_bytes());
    for (bytes, expect) in [
        (b"HTTP/1.1 400 Bad Request\r\n\r\n".to_vec(), "NBDMAGIC"),
        (huge, "option reply of 1073741824 bytes"),
        (old, "oldstyle"),
        (wrong, "while waiting for NBD_OPT_STRUCTURED_REPLY"),
    ] {
        let (port, t) = fake_server(bytes);
        let uri = format!("nbd://127.0.0.1:{port}/x");
        let t0 = Instant::now();
        let o = imgcheck(&["info", &uri]);
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "{expect}: took too long"
        );
        assert_eq!(o.status.code(), Some(2), "{expect}");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            err.contains(&uri) && err.contains(expect),
            "{expect}: {err}"
        );
        t.join().unwrap();
    }
    // Bad URIs are refused before connecting.
    for (uri, expect) in [
        ("nbd+unix:///x", "socket"),
        ("nbd://127.0.0.1:99999/x", "HOST[:PORT]"),
    ] {
        let o = imgcheck(&["info", uri]);
        assert_eq!(o.status.code(), Some(2));
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains(expect) && err.contains(uri), "{err}");
    }
}

#[test]
fn sigterm_with_clients_connected_stops_promptly() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("disk.raw");
    make_pattern_raw(&img, 256 * 1024, 2);
    let mut s = serve_tcp(&img, "disk");
    let port = port_of(&s.uri);
    // one client in transmission, idle...
    let mut idle = Raw::connect(port);
    let mut go = name_data("disk");
    go.extend_from_slice(&0u16.to_be_bytes());
    idle.opt(7, &go);
    while idle.opt_reply(7).0 != 1 {}
    // ...one that connected and never negotiated
    let mut silent = TcpStream::connect(("127.0.0.1", port)).unwrap();
    silent
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut hello = [0u8; 18];
    silent.read_exact(&mut hello).unwrap();

    let pid = s.child.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let t0 = Instant::now();
    let status = loop {
        if let Some(st) = s.child.try_wait().unwrap() {
            break st;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "serve did not stop with clients connected"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status:?}");
    // both clients see the connection closed
    let mut rest = Vec::new();
    idle.s.read_to_end(&mut rest).unwrap();
    silent.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty());
}

/// A device made up in memory: data extents hold a pattern, zero and unallocated extents read
/// as zeros, and reads touching `bad` fail. Served in-process through the library API.
struct Synthetic {
    size: u64,
    extents: Vec<imgcheck::image::Extent>,
    bad: Option<(u64, u64)>,
}

fn pattern_byte(off: u64) -> u8 {
    (off.wrapping_mul(2_654_435_761) >> 13) as u8 | 1
}

impl imgcheck::image::BlockDevice for Synthetic {
    fn format(&self) -> imgcheck::image::Format {
        imgcheck::image::Format::Raw
    }
    fn size(&self) -> u64 {
        self.size
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> imgcheck::Result<()> {
        imgcheck::image::check_range("synthetic", offset, buf.len() as u64, self.size)?;
        let end = offset + buf.len() as u64;
        if let Some((s, e)) = self.bad {
            if offset < e && s < end {
                return Err(imgcheck::Error::corrupt("synthetic", "unreadable sector"));
            }
        }
        for (i, b) in buf.iter_mut().enumerate() {
            let o = offset + i as u64;
            let data = self.extents.iter().any(|x| {
                x.kind == imgcheck::image::ExtentKind::Data
                    && x.offset <= o
                    && o < x.offset + x.length
            });
            *b = if data { pattern_byte(o) } else { 0 };
        }
        Ok(())
    }
    fn map(&self, offset: u64, len: u64) -> imgcheck::Result<Vec<imgcheck::image::Extent>> {
        let end = imgcheck::image::clip_end(offset, len, self.size);
        let mut out = Vec::new();
        for x in &self.extents {
            let s = x.offset.max(offset);
            let e = (x.offset + x.length).min(end);
            if s < e {
                imgcheck::image::push_extent(&mut out, s, e - s, x.kind);
            }
        }
        Ok(out)
    }
    fn actual_size(&self) -> u64 {
        self.size
    }
    fn name(&self) -> &str {
        "synthetic"
    }
}

fn serve_in_process(
    dev: Synthetic,
) -> (
    String,
    imgcheck::nbd::ShutdownHandle,
    std::thread::JoinHandle<imgcheck::Result<()>>,
) {
    use imgcheck::nbd::{Listen, ServeConfig, Server};
    let cfg = ServeConfig {
        export_name: "syn".into(),
        ..ServeConfig::default()
    };
    let server = Server::bind(
        &Listen::Tcp("127.0.0.1:0".into()),
        std::sync::Arc::new(dev),
        &cfg,
    )
    .unwrap();
    let uri = server.uri().unwrap();
    let h = server.shutdown_handle();
    (uri, h, std::thread::spawn(move || server.run()))
}

#[test]
fn zero_extents_and_read_errors_of_any_device_reach_the_client() {
    use imgcheck::image::{Extent, ExtentKind::*};
    let mib = 1024 * 1024;
    let ext = |offset, length, kind| Extent {
        offset,
        length,
        kind,
    };
    let extents = vec![
        ext(0, mib, Data),
        ext(mib, mib, Zero),
        ext(2 * mib, 2 * mib, Unallocated),
        ext(4 * mib, mib / 2, Data),
        ext(4 * mib + mib / 2, mib / 2, Zero),
        ext(5 * mib, mib, Data),
    ];
    let size = 6 * mib;
    let expect: Vec<u8> = (0..size)
        .map(|o| {
            let data = extents
                .iter()
                .any(|x| x.kind == Data && x.offset <= o && o < x.offset + x.length);
            if data {
                pattern_byte(o)
            } else {
                0
            }
        })
        .collect();
    let (uri, h, t) = serve_in_process(Synthetic {
        size,
        extents: extents.clone(),
        bad: None,
    });

    // Our own client, in-process: map and bytes.
    let dev = imgcheck::image::open_spec(&uri, &Default::default()).unwrap();
    assert_eq!(dev.size(), size);
    let mut got = vec![0u8; size as usize];
    dev.read_at(&mut got, 0).unwrap();
    assert_same_guest(&got, &expect, "synthetic over NBD");
    let map = dev.map(0, size).unwrap();
    let data: Vec<(u64, u64)> = map
        .iter()
        .filter(|e| e.kind == Data)
        .map(|e| (e.offset, e.length))
        .collect();
    assert_eq!(
        data,
        [(0, mib), (4 * mib, mib / 2), (5 * mib, mib)],
        "{map:?}"
    );

    if have("qemu-img") {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out.raw");
        qemu_img(&[
            "convert",
            "-f",
            "raw",
            "-O",
            "raw",
            &uri,
            &out.display().to_string(),
        ]);
        assert_same_guest(
            &std::fs::read(&out).unwrap(),
            &expect,
            "qemu-img convert of synthetic",
        );
        let (ok, json, err) = run_out("qemu-img", &["map", "--output=json", "-f", "raw", &uri]);
        assert!(ok, "{err}");
        let runs = map_runs(&json);
        // allocated zeros: data + zero; unallocated: zero only; data: data only
        assert!(runs.contains(&(mib, mib, true, true)), "{json}");
        assert!(runs.contains(&(2 * mib, 2 * mib, false, true)), "{json}");
        assert!(runs.contains(&(0, mib, true, false)), "{json}");
    }
    h.shutdown();
    t.join().unwrap().unwrap();

    // A device read error becomes an NBD error the client reports; the server keeps serving.
    let (uri, h, t) = serve_in_process(Synthetic {
        size,
        extents,
        bad: Some((5 * mib + 4096, 5 * mib + 8192)),
    });
    let dev = imgcheck::image::open_spec(&uri, &Default::default()).unwrap();
    let mut buf = vec![0u8; 65536];
    let e = dev.read_at(&mut buf, 5 * mib).unwrap_err().to_string();
    assert!(e.contains("EIO") && e.contains("unreadable sector"), "{e}");
    dev.read_at(&mut buf, 0).unwrap();
    assert_eq!(buf, &expect[..65536]);
    if have("qemu-img") {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out.raw");
        let (ok, _, err) = run_out(
            "qemu-img",
            &[
                "convert",
                "-f",
                "raw",
                "-O",
                "raw",
                &uri,
                &out.display().to_string(),
            ],
        );
        assert!(!ok, "convert of a failing device succeeded");
        assert!(err.contains("Input/output error"), "{err}");
    }
    h.shutdown();
    t.join().unwrap().unwrap();
}

/// `imgcheck verify --format json` of a file or URI: (exit status, report).
fn verify_of(spec: &str) -> (i32, serde_json::Value) {
    let o = imgcheck(&["verify", "--format", "json", "-q", spec]);
    let v = serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("verify {spec}: {e}: {}", String::from_utf8_lossy(&o.stderr)));
    (o.status.code().unwrap_or(-1), v)
}

/// The checks of a report, without `image.format` when `skip_format` (an export of a qcow2
/// made by qemu-nbd is raw guest data: only that check may differ).
fn checks_of(r: &serde_json::Value, skip_format: bool) -> Vec<serde_json::Value> {
    r["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| !(skip_format && c["id"] == "image.format"))
        .cloned()
        .collect()
}

#[test]
fn verify_over_nbd_gives_the_same_result_as_on_the_file() {
    if !need_qemu() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut compared = 0;
    for (name, fmt) in [
        ("good-mbr.raw", "raw"),
        ("no-virtio.raw", "raw"),
        ("gpt.raw", "raw"),
        ("good-mbr.qcow2", "qcow2"),
    ] {
        if !fixture_path(name).exists() && !fixture_path(&format!("{name}.xz")).exists() {
            eprintln!("SKIP {name}: fixture not present");
            continue;
        }
        let img = fixture(name, dir.path());
        let file = img.display().to_string();
        let (code, on_file) = verify_of(&file);
        assert!(
            code == 0 || code == 1,
            "{name}: verify on the file: {on_file}"
        );

        // served by qemu-nbd (TCP, no kernel module): the guest disk as raw data
        let (_q, uri) = qemu_nbd(&img, "guest", fmt, dir.path());
        let (c2, via_qemu) = verify_of(&uri);
        assert_eq!(c2, code, "{name} via qemu-nbd: {via_qemu}");
        assert_eq!(via_qemu["verdict"], on_file["verdict"], "{name}");
        assert_eq!(via_qemu["virtual_size"], on_file["virtual_size"], "{name}");
        assert_eq!(
            checks_of(&via_qemu, fmt != "raw"),
            checks_of(&on_file, fmt != "raw"),
            "{name} via qemu-nbd"
        );

        // served by imgcheck serve: the container is decoded by the server, verify sees raw
        let s = serve_tcp(&img, "guest");
        let (c3, via_ours) = verify_of(&s.uri);
        assert_eq!(c3, code, "{name} via imgcheck serve: {via_ours}");
        assert_eq!(
            checks_of(&via_ours, fmt != "raw"),
            checks_of(&on_file, fmt != "raw"),
            "{name} via imgcheck serve"
        );
        compared += 1;
    }
    assert!(compared > 0, "no fixture compared");
}

/// A fake server that greets, negotiates `NBD_OPT_GO` for a 1 MiB export (refusing every other
/// option) when `negotiate`, and then never answers anything; it holds the connection until the
/// client closes it (or 20 s pass).
fn stuck_server(negotiate: bool) -> (u16, std::thread::JoinHandle<()>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let t = std::thread::spawn(move || {
        let Ok((mut s, _)) = l.accept() else { return };
        s.set_read_timeout(Some(Duration::from_secs(20))).ok();
        let t0 = Instant::now();
        if negotiate {
            s.write_all(b"NBDMAGICIHAVEOPT\x00\x03").unwrap();
            let mut b4 = [0u8; 4];
            s.read_exact(&mut b4).unwrap();
            loop {
                let mut h = [0u8; 16];
                if s.read_exact(&mut h).is_err() {
                    return;
                }
                let opt = u32::from_be_bytes(h[8..12].try_into().unwrap());
                let len = u32::from_be_bytes(h[12..16].try_into().unwrap());
                let mut d = vec![0u8; len as usize];
                s.read_exact(&mut d).unwrap();
                let reply = |s: &mut TcpStream, typ: u32, data: &[u8]| {
                    let mut b = REPLY_MAGIC.to_be_bytes().to_vec();
                    b.extend_from_slice(&opt.to_be_bytes());
                    b.extend_from_slice(&typ.to_be_bytes());
                    b.extend_from_slice(&(data.len() as u32).to_be_bytes());
                    b.extend_from_slice(data);
                    s.write_all(&b).unwrap();
                };
                if opt == 7 {
                    let mut info = 0u16.to_be_bytes().to_vec();
                    info.extend_from_slice(&(1u64 << 20).to_be_bytes());
                    info.extend_from_slice(&3u16.to_be_bytes());
                    reply(&mut s, 3, &info);
                    reply(&mut s, 1, &[]);
                    break;
                }
                reply(&mut s, 0x8000_0001, &[]);
            }
        }
        let mut sink = [0u8; 4096];
        while t0.elapsed() < Duration::from_secs(20) {
            match s.read(&mut sink) {
                Ok(0) => return,
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(_) => return,
            }
        }
    });
    (port, t)
}

#[test]
fn a_dead_server_gives_a_timeout_error_not_a_hang() {
    use imgcheck::image::Storage;
    use imgcheck::nbd::client::NbdStorage;
    let timeout = Duration::from_secs(1);

    // never greets
    let (port, t) = stuck_server(false);
    let uri = imgcheck::nbd::uri::parse(&format!("nbd://127.0.0.1:{port}/x")).unwrap();
    let t0 = Instant::now();
    let e = NbdStorage::connect_with_timeout("silent", &uri, timeout)
        .err()
        .expect("connected to a silent server");
    assert!(t0.elapsed() < Duration::from_secs(5));
    assert!(
        e.to_string()
            .contains("did not complete the handshake within 1.0 s"),
        "{e}"
    );
    drop(e);
    t.join().unwrap();

    // negotiates, then never answers a read
    let (port, t) = stuck_server(true);
    let uri = imgcheck::nbd::uri::parse(&format!("nbd://127.0.0.1:{port}/x")).unwrap();
    let st = NbdStorage::connect_with_timeout("stuck", &uri, timeout).unwrap();
    assert_eq!(st.len(), 1 << 20);
    assert!(!st.info().structured);
    let mut buf = vec![0u8; 4096];
    let t0 = Instant::now();
    let e = st.read_at(&mut buf, 0).unwrap_err();
    assert!(t0.elapsed() < Duration::from_secs(5));
    assert!(
        e.to_string()
            .contains("did not answer a 4096-byte read at offset 0 within 1.0 s"),
        "{e}"
    );
    // The export is now known dead: the next request fails at once, with the same error.
    let t0 = Instant::now();
    let again = st.read_at(&mut buf, 4096).unwrap_err();
    assert!(t0.elapsed() < Duration::from_millis(100));
    assert_eq!(again.to_string(), e.to_string());
    drop(st);
    t.join().unwrap();
}

#[test]
fn serve_client_answers_one_connected_socket() {
    // `nbd::server::serve_client` on one end of a socket pair (a socket handed over by
    // another program; the NBD fuzz target drives the server this way), the nbd crate's
    // client on the other.
    use imgcheck::nbd::{server::serve_client, ServeConfig};
    use std::os::unix::net::UnixStream;
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("disk.raw");
    make_pattern_raw(&img, 1024 * 1024, 23);
    let file = std::fs::read(&img).unwrap();
    let dev = imgcheck::image::open(&img, &Default::default()).unwrap();
    let (server, mut client) = UnixStream::pair().unwrap();
    let cfg = ServeConfig {
        export_name: "disk".into(),
        ..Default::default()
    };
    let t = std::thread::spawn(move || serve_client(server, dev, &cfg));
    client
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let export = nbd::client::handshake(&mut client, b"disk").unwrap();
    assert_eq!(export.size, file.len() as u64);
    let mut c = nbd::client::NbdClient::new(&mut client, &export);
    use std::io::{Seek, SeekFrom};
    c.seek(SeekFrom::Start(512 * 1024 + 3)).unwrap();
    let mut buf = vec![0u8; 100_000];
    c.read_exact(&mut buf).unwrap();
    assert_eq!(buf, &file[512 * 1024 + 3..512 * 1024 + 100_003]);
    // the client hanging up (the nbd crate's client sends no NBD_CMD_DISC) ends the session
    // without an error
    drop(client);
    t.join().unwrap().unwrap();
}
