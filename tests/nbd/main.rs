//! NBD: `imgcheck serve` against real clients (qemu-img, qemu-io, qemu-nbd -L, nbdinfo, the
//! `nbd` crate's client, and a hand-written protocol client for pipelining and refusals), and
//! `nbd://` sources read by imgcheck from qemu-nbd and from `imgcheck serve`.
//! Everything listens on 127.0.0.1 (or a Unix socket in the test's temp folder); every server
//! is killed when its guard is dropped. One test binary, by concern: `serving.rs` (our server
//! with real clients), `protocol.rs` (byte-level checks), `client.rs` (imgcheck reading NBD),
//! `attacks.rs` (floods, clients that do not read, huge block-status requests, limits),
//! `deadlines.rs` (the server's handshake and idle deadlines, the client's against dripping
//! servers); `wire.rs` has the hand-written client pieces the last two share. Shared helpers
//! are here.
#[path = "../common/mod.rs"]
mod common;
use common::*;

mod attacks;
mod client;
mod deadlines;
mod protocol;
mod serving;
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

const IHAVEOPT: u64 = 0x4948_4156_454f_5054;
const REPLY_MAGIC: u64 = 0x0003_e889_0455_65a9;

/// An export name as NBD_OPT_GO/INFO carry it (length, then the bytes).
fn name_data(name: &str) -> Vec<u8> {
    let mut d = (name.len() as u32).to_be_bytes().to_vec();
    d.extend_from_slice(name.as_bytes());
    d
}
