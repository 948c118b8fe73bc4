//! Deadlines: the server's for the handshake and for idle connections, and the client's for
//! the negotiation and for each request against servers that drip their bytes.

use super::wire::*;
use super::*;
use std::thread::JoinHandle;

/// A one-client fake server that drips bytes: the 18-byte greeting itself, a byte every 2 s
/// (`drip_greeting`: the whole greeting would take 36 s), or else — after a prompt
/// negotiation of a 1 MiB export — the reply to the first request, a byte a second, for ever.
/// It stops when the client hangs up (or after 60 s).
fn dripping_server(drip_greeting: bool) -> (u16, JoinHandle<()>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let t = std::thread::spawn(move || {
        let Ok((mut s, _)) = l.accept() else { return };
        s.set_read_timeout(Some(Duration::from_secs(60))).ok();
        let t0 = Instant::now();
        let drip = |s: &mut TcpStream, bytes: &[u8], every: Duration| {
            for b in bytes.iter().cycle() {
                if t0.elapsed() > Duration::from_secs(60) || s.write_all(&[*b]).is_err() {
                    return;
                }
                std::thread::sleep(every);
            }
        };
        let greeting = b"NBDMAGICIHAVEOPT\x00\x03";
        if drip_greeting {
            return drip(&mut s, greeting, Duration::from_secs(2));
        }
        s.write_all(greeting).unwrap();
        let mut b4 = [0u8; 4];
        if s.read_exact(&mut b4).is_err() {
            return;
        }
        loop {
            let mut h = [0u8; 16];
            if s.read_exact(&mut h).is_err() {
                return;
            }
            let opt = u32::from_be_bytes(h[8..12].try_into().unwrap());
            let len = u32::from_be_bytes(h[12..16].try_into().unwrap());
            let mut d = vec![0u8; len as usize];
            if s.read_exact(&mut d).is_err() {
                return;
            }
            let reply = |s: &mut TcpStream, typ: u32, data: &[u8]| {
                let mut b = REPLY_MAGIC.to_be_bytes().to_vec();
                b.extend_from_slice(&opt.to_be_bytes());
                b.extend_from_slice(&typ.to_be_bytes());
                b.extend_from_slice(&(data.len() as u32).to_be_bytes());
                b.extend_from_slice(data);
                let _ = s.write_all(&b);
            };
            if opt == 7 {
                let mut info = 0u16.to_be_bytes().to_vec();
                info.extend_from_slice(&(1u64 << 20).to_be_bytes());
                info.extend_from_slice(&3u16.to_be_bytes());
                reply(&mut s, 3, &info);
                reply(&mut s, 1, &[]);
                break;
            }
            reply(&mut s, 0x8000_0001, &[]); // NBD_REP_ERR_UNSUP
        }
        let mut req = [0u8; 28];
        if s.read_exact(&mut req).is_err() {
            return;
        }
        let mut answer = 0x6744_6698u32.to_be_bytes().to_vec();
        answer.extend_from_slice(&0u32.to_be_bytes());
        answer.extend_from_slice(&req[8..16]);
        answer.extend_from_slice(&[0x55; 64]);
        drip(&mut s, &answer, Duration::from_secs(1));
    });
    (port, t)
}

#[test]
fn the_client_gives_up_on_a_dripping_server_within_its_deadline() {
    // Both cases at once (the defaults: 10 s for the negotiation, 30 s for a small request).
    let cases = [
        (true, "did not complete the handshake within 10.0 s", 10),
        (false, "-byte read at offset 0 within 3", 30),
    ];
    let runs: Vec<_> = cases
        .into_iter()
        .map(|(greeting, expect, secs)| {
            std::thread::spawn(move || {
                let (port, server) = dripping_server(greeting);
                let uri = format!("nbd://127.0.0.1:{port}/x");
                let t0 = Instant::now();
                let o = imgcheck(&["verify", &uri]);
                let took = t0.elapsed();
                server.join().unwrap();
                (uri, o, took, expect, secs)
            })
        })
        .collect();
    for r in runs {
        let (uri, o, took, expect, secs) = r.join().unwrap();
        // verify reports on standard output (image.format fails, the rest is skipped)
        let err = format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        let line = err.lines().find(|l| l.contains(expect)).unwrap_or("");
        eprintln!("{uri}: gave up after {took:?}: {}", line.trim());
        assert_eq!(o.status.code(), Some(2), "{err}");
        assert!(err.contains(&uri) && err.contains(expect), "{err}");
        assert!(
            took >= Duration::from_secs(secs) && took < Duration::from_secs(secs + 5),
            "{expect}: gave up after {took:?}"
        );
    }
}

#[test]
fn handshake_and_idle_deadlines_close_connections() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("disk.raw");
    make_pattern_raw(&img, 1 << 20, 5);
    let s = serve(&[
        "--listen",
        "127.0.0.1:0",
        "--export-name",
        "disk",
        "--handshake-timeout",
        "1",
        "--idle-timeout",
        "2",
        &img.display().to_string(),
    ]);
    let port = port_of(&s.uri);
    // Closed (end of stream) by the server after `after`, not before `min`.
    let closed_within = |mut c: TcpStream, min: Duration, max: Duration, what: &str| {
        let t0 = Instant::now();
        c.set_read_timeout(Some(max + Duration::from_secs(2)))
            .unwrap();
        let mut sink = [0u8; 256];
        loop {
            match c.read(&mut sink) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
        let took = t0.elapsed();
        assert!(took >= min && took <= max, "{what}: closed after {took:?}");
    };
    // A handshake dripped a byte every 300 ms is cut at the 1 s deadline.
    let mut drip = connect(port).unwrap();
    let dripper = drip.try_clone().unwrap();
    let t = std::thread::spawn(move || {
        let mut msg = 3u32.to_be_bytes().to_vec();
        msg.extend_from_slice(&option(7, &[0u8; 100]));
        for b in msg {
            if drip.write_all(&[b]).is_err() {
                return;
            }
            std::thread::sleep(Duration::from_millis(300));
        }
    });
    closed_within(
        dripper,
        Duration::from_millis(800),
        Duration::from_millis(2500),
        "dripped handshake",
    );
    t.join().unwrap();
    // A negotiated client that sends nothing is closed after 2 s; one that keeps sending
    // requests is not.
    let mut idle = connect(port).unwrap();
    negotiate(&mut idle, false).unwrap();
    let mut busy = connect(port).unwrap();
    negotiate(&mut busy, false).unwrap();
    let t0 = Instant::now();
    let keep = std::thread::spawn(move || {
        let mut reply = vec![0u8; 16 + 4096];
        for cookie in 0..8 {
            busy.write_all(&request(0, cookie, 0, 4096)).unwrap();
            busy.read_exact(&mut reply).unwrap();
            std::thread::sleep(Duration::from_millis(500));
        }
    });
    closed_within(
        idle,
        Duration::from_millis(1800),
        Duration::from_millis(4000),
        "idle client",
    );
    keep.join().unwrap();
    assert!(t0.elapsed() > Duration::from_secs(3));
    let log = s.log();
    assert!(log.contains("no NBD handshake within 1 s"), "{log}");
    assert!(log.contains("closed: no request for 2 s"), "{log}");
}
