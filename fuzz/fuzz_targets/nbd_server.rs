#![no_main]
//! nbd_server: the input is everything a client sends (handshake flags, options, requests,
//! write payloads). `imgcheck serve`'s connection handler answers it over a socket pair,
//! serving a 1 MiB raw image (data, then zeros); replies are read and discarded.
use std::io::{Read, Write};
use std::net::Shutdown;
use std::os::unix::net::UnixStream;
use std::sync::{Arc, OnceLock};
use std::thread;

use libfuzzer_sys::fuzz_target;

use imgcheck::image::BlockDevice;
use imgcheck::nbd::server::serve_client;
use imgcheck::nbd::ServeConfig;

#[path = "common.rs"]
mod common;

/// 1 MiB: a pattern, then zeros (so reads and block status see data and zero runs).
fn device() -> Arc<dyn BlockDevice> {
    static DEV: OnceLock<Vec<u8>> = OnceLock::new();
    let data = DEV.get_or_init(|| {
        let mut v = vec![0u8; 1 << 20];
        for (i, b) in v[..256 * 1024].iter_mut().enumerate() {
            *b = (i % 251) as u8 + 1;
        }
        v
    });
    common::open("served.raw", data).expect("a raw image always opens")
}

fuzz_target!(|data: &[u8]| {
    let (server, client) = UnixStream::pair().unwrap();
    let input = data.to_vec();
    let mut sender = client.try_clone().unwrap();
    let send = thread::spawn(move || {
        let _ = sender.write_all(&input);
        let _ = sender.shutdown(Shutdown::Write);
    });
    let mut receiver = client;
    let drain = thread::spawn(move || {
        let mut buf = [0u8; 65536];
        while matches!(receiver.read(&mut buf), Ok(n) if n > 0) {}
    });
    let cfg = ServeConfig {
        export_name: "disk".into(),
        description: "fuzz".into(),
        workers: 2,
        max_clients: 1,
    };
    let _ = serve_client(server, device(), &cfg);
    send.join().unwrap();
    drain.join().unwrap();
});
