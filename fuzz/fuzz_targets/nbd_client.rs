#![no_main]
//! nbd_client: the input is everything an NBD server sends (greeting, option replies, export
//! info, reply headers, structured chunks). A thread plays that server on a Unix socket in a
//! temporary directory, sending the same bytes on every connection; the client connects to
//! `nbd+unix:///disk?socket=...`, detects the export's format and reads and maps it as the CLI
//! would. Errors are expected; panics, hangs and unbounded allocations are findings.
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use libfuzzer_sys::fuzz_target;

use imgcheck::image::{open_storage, Storage};
use imgcheck::nbd::client::NbdStorage;
use imgcheck::nbd::uri;

#[path = "common.rs"]
mod common;
#[path = "nbd_fake_server.rs"]
mod nbd_fake_server;

fuzz_target!(|data: &[u8]| {
    let dir = tempfile_dir();
    nbd_fake_server::with_fake_server(data, &dir, |text| {
        let Ok(parsed) = uri::parse(text) else {
            return;
        };
        if let Ok(st) = NbdStorage::connect_with_timeout(text, &parsed, Duration::from_secs(2)) {
            let st: Arc<dyn Storage> = Arc::new(st);
            if let Ok(dev) = open_storage(st, &common::ctx()) {
                common::exercise(dev.as_ref());
            }
        }
    });
    let _ = std::fs::remove_dir_all(&dir);
});

/// A fresh private directory for the socket (no tempfile dependency in the fuzz crate).
fn tempfile_dir() -> std::path::PathBuf {
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
