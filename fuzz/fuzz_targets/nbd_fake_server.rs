//! The fake NBD server of the nbd_client fuzz target, shared with its replay in
//! tests/fuzz_regressions.rs (std only, so both crates can include this file with `#[path]`).
#![allow(dead_code)]

use std::io::{ErrorKind, Read, Write};
use std::net::Shutdown;
use std::os::unix::net::UnixListener;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

/// Connections served per input (the client opens more for parallel reads).
pub const MAX_CONNECTIONS: usize = 4;

/// Play an NBD server on a Unix socket in `dir` that sends `data` (then end-of-file) on each of
/// up to [`MAX_CONNECTIONS`] connections and drains what the client sends; run `client` with
/// the export's URI (`nbd+unix:///disk?socket=...`), then stop the server and wait for it.
pub fn with_fake_server(data: &[u8], dir: &Path, client: impl FnOnce(&str)) {
    let sock = dir.join("nbd.sock");
    let listener = UnixListener::bind(&sock).unwrap();
    listener.set_nonblocking(true).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let (input, stop2) = (data.to_vec(), stop.clone());
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
    client(&format!("nbd+unix:///disk?socket={}", sock.display()));
    stop.store(true, Ordering::SeqCst);
    server.join().unwrap();
}
