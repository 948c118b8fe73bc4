#![no_main]
//! nbd_client: the input is everything an NBD server sends (greeting, option replies, export
//! info, reply headers, structured chunks). A thread plays that server on a Unix socket in a
//! temporary directory, sending the same bytes on every connection; the client connects to
//! `nbd+unix:///disk?socket=...`, detects the export's format and reads and maps it as the CLI
//! would. Errors are expected; panics, hangs and unbounded allocations are findings.
use std::io::{ErrorKind, Read, Write};
use std::net::Shutdown;
use std::os::unix::net::UnixListener;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use libfuzzer_sys::fuzz_target;

use imgcheck::image::{open_storage, Storage};
use imgcheck::nbd::client::NbdStorage;
use imgcheck::nbd::uri;

#[path = "common.rs"]
mod common;

/// Connections served per input (the client opens more for parallel reads).
const MAX_CONNECTIONS: usize = 4;

fuzz_target!(|data: &[u8]| {
    let dir = tempfile_dir();
    let sock = dir.join("nbd.sock");
    let listener = UnixListener::bind(&sock).unwrap();
    listener.set_nonblocking(true).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let input = data.to_vec();
    let stop2 = stop.clone();
    let server = thread::spawn(move || {
        let mut conns = Vec::new();
        while !stop2.load(Ordering::SeqCst) && conns.len() < MAX_CONNECTIONS {
            match listener.accept() {
                Ok((s, _)) => {
                    let input = input.clone();
                    conns.push(thread::spawn(move || {
                        s.set_nonblocking(false).unwrap();
                        let mut w = s.try_clone().unwrap();
                        let _ = w.write_all(&input);
                        let _ = w.shutdown(Shutdown::Write);
                        let mut r = s;
                        let mut buf = [0u8; 65536];
                        while matches!(r.read(&mut buf), Ok(n) if n > 0) {}
                    }));
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    thread::sleep(Duration::from_micros(200))
                }
                Err(_) => break,
            }
        }
        for c in conns {
            let _ = c.join();
        }
    });
    let text = format!("nbd+unix:///disk?socket={}", sock.display());
    if let Ok(parsed) = uri::parse(&text) {
        if let Ok(st) = NbdStorage::connect_with_timeout(&text, &parsed, Duration::from_secs(2)) {
            let st: Arc<dyn Storage> = Arc::new(st);
            if let Ok(dev) = open_storage(st, &common::ctx()) {
                common::exercise(dev.as_ref());
            }
        }
    }
    stop.store(true, Ordering::SeqCst);
    server.join().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
});

/// A fresh private directory for the socket (no tempfile dependency in the fuzz crate).
fn tempfile_dir() -> std::path::PathBuf {
    use std::sync::atomic::AtomicU64;
    static N: AtomicU64 = AtomicU64::new(0);
    let d = std::env::temp_dir().join(format!(
        "imgcheck-fuzz-nbd-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    ));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}
