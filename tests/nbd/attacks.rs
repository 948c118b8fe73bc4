//! Attacks on `imgcheck serve` through the binary, on loopback, bounded in count and time:
//! connection floods (idle clients, slowloris handshakes, bare TCP connections), clients that
//! pipeline reads and never read the replies, huge block-status requests. While each attack
//! runs, `qemu-img info` must be served within 1 s and the server's resident memory stay under
//! 200 MiB; once it ends, the server must stop promptly on SIGTERM (no connection left stuck).
//! The real client comes from 127.0.0.1, the attackers from several loopback addresses, so
//! that both limits are reached: the idle and bare-connection floods include 127.0.0.1 (the
//! real client's own address is full: room is made there), the slowloris flood does not (the
//! server is full: room is made on the busiest other address). Flooding attackers reconnect
//! when the server closes them.

use super::wire::*;
use super::*;
use std::io;
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

/// A field of /proc/PID/status in MiB (`VmHWM`: peak resident memory, `VmRSS`: now).
fn proc_status_mib(pid: u32, field: &str) -> u64 {
    let st = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: u64 = st
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("{field} in /proc/{pid}/status"));
    kb / 1024
}

/// Run `qemu-img info URI`; it must succeed within `limit`. Returns the time it took.
fn qemu_info_within(uri: &str, limit: Duration, what: &str) -> Duration {
    let t0 = Instant::now();
    let mut child = Command::new("qemu-img")
        .args(["info", uri])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break Some(st);
        }
        if t0.elapsed() > Duration::from_secs(10) {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let took = t0.elapsed();
    let mut err = String::new();
    child.stderr.take().unwrap().read_to_string(&mut err).ok();
    assert!(
        status.is_some_and(|s| s.success()),
        "{what}: qemu-img info failed after {took:?}: {err}"
    );
    assert!(took < limit, "{what}: qemu-img info took {took:?}");
    took
}

/// Attack threads; stopped and joined on drop. Each counts what it achieved in `done`, and
/// how often the server closed it in `closed`.
struct Attack {
    stop: Arc<AtomicBool>,
    done: Arc<AtomicUsize>,
    closed: Arc<AtomicUsize>,
    /// What `done` counts.
    unit: &'static str,
    threads: Vec<JoinHandle<()>>,
}

/// What an attack thread gets: its index, the stop flag, and the two counters.
struct Ctx<'a> {
    i: usize,
    stop: &'a AtomicBool,
    done: &'a AtomicUsize,
    closed: &'a AtomicUsize,
}

impl Ctx<'_> {
    fn stopped(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }
    /// Sleep `ms` milliseconds in small steps, or until stopped.
    fn pause(&self, ms: u64) {
        let t0 = Instant::now();
        while !self.stopped() && t0.elapsed() < Duration::from_millis(ms) {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Attack {
    /// `n` threads running `body`; errors end a thread quietly.
    fn start(
        n: usize,
        unit: &'static str,
        body: impl Fn(&Ctx) -> io::Result<()> + Send + Sync + 'static,
    ) -> Attack {
        let stop = Arc::new(AtomicBool::new(false));
        let done = Arc::new(AtomicUsize::new(0));
        let closed = Arc::new(AtomicUsize::new(0));
        let body = Arc::new(body);
        let threads = (0..n)
            .map(|i| {
                let (stop, done, closed, body) =
                    (stop.clone(), done.clone(), closed.clone(), body.clone());
                std::thread::spawn(move || {
                    let _ = body(&Ctx {
                        i,
                        stop: &stop,
                        done: &done,
                        closed: &closed,
                    });
                })
            })
            .collect();
        Attack {
            stop,
            done,
            closed,
            unit,
            threads,
        }
    }

    /// Wait until `n` things are done (or 10 s pass); returns how many are.
    fn wait_done(&self, n: usize) -> usize {
        let t0 = Instant::now();
        while self.done.load(Ordering::SeqCst) < n && t0.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(20));
        }
        self.done.load(Ordering::SeqCst)
    }
}

impl Drop for Attack {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// Whether the server has closed `s` (end of stream or an error), waiting up to `ms`.
fn closed_by_server(s: &mut TcpStream, ms: u64) -> bool {
    s.set_read_timeout(Some(Duration::from_millis(ms))).ok();
    match s.read(&mut [0u8; 4096]) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => !matches!(
            e.kind(),
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
        ),
    }
}

/// Attacker address `k` of a flood that includes the real client's own address: 127.0.0.1,
/// then 127.0.0.2 and up.
fn with_own(k: usize) -> Ipv4Addr {
    if k == 0 {
        Ipv4Addr::LOCALHOST
    } else {
        source(k - 1)
    }
}

/// 128 clients on 4 addresses, 127.0.0.1 among them (32 each: the per-address limit; 128 in
/// all: the server's) that negotiate and then sit idle, reconnecting 50 ms after the server
/// closes them.
fn idle_clients(port: u16) -> (Attack, usize) {
    let a = Attack::start(128, "clients negotiated", move |c| {
        let mut counted = false;
        while !c.stopped() {
            let Ok(mut s) = connect_from(with_own(c.i % 4), port) else {
                c.pause(50);
                continue;
            };
            if negotiate(&mut s, false).is_ok() {
                if !std::mem::replace(&mut counted, true) {
                    c.done.fetch_add(1, Ordering::SeqCst);
                }
                while !c.stopped() && !closed_by_server(&mut s, 20) {}
            }
            c.closed.fetch_add(1, Ordering::SeqCst);
            c.pause(50);
        }
        Ok(())
    });
    (a, 128)
}

/// 130 clients on 5 addresses that drip a never-ending handshake, a byte every 200 ms, and
/// reconnect 50 ms after the server closes them.
fn slowloris(port: u16) -> (Attack, usize) {
    let a = Attack::start(130, "handshakes begun", move |c| {
        let mut counted = false;
        while !c.stopped() {
            let Ok(mut s) = connect_from(source(c.i % 5), port) else {
                c.pause(50);
                continue;
            };
            let mut hello = [0u8; 18];
            if s.read_exact(&mut hello).is_ok() {
                if !std::mem::replace(&mut counted, true) {
                    c.done.fetch_add(1, Ordering::SeqCst);
                }
                let mut msg = 3u32.to_be_bytes().to_vec();
                msg.extend_from_slice(&option(7, &[0u8; 4000]));
                for b in msg {
                    if c.stopped() || s.write_all(&[b]).is_err() || closed_by_server(&mut s, 200) {
                        break;
                    }
                }
            }
            c.closed.fetch_add(1, Ordering::SeqCst);
            c.pause(50);
        }
        Ok(())
    });
    (a, 130)
}

/// 1,000 TCP connections on 8 addresses, 127.0.0.1 among them, that never send a byte
/// (opened by 4 threads, held open).
fn bare_connections(port: u16) -> (Attack, usize) {
    let a = Attack::start(4, "connections opened", move |c| {
        let mut held = Vec::new();
        for j in 0..250 {
            held.push(connect_from(with_own((c.i * 250 + j) % 8), port)?);
            c.done.fetch_add(1, Ordering::SeqCst);
        }
        c.pause(u64::MAX);
        Ok(())
    });
    (a, 1000)
}

/// 16 clients on one address that pipeline 32 MiB reads of a 64 MiB image full of data and
/// never read the replies: half with simple replies (one 32 MiB message each), half with
/// structured ones.
fn unread_reads(port: u16) -> (Attack, usize) {
    let a = Attack::start(
        16,
        "requests sent (most wait in socket buffers)",
        move |c| {
            let mut s = connect_from(source(0), port)?;
            negotiate(&mut s, c.i % 2 == 1)?;
            s.set_write_timeout(Some(Duration::from_millis(200)))?;
            let mut cookie = 0u64;
            while !c.stopped() {
                cookie += 1;
                let r = request(0, cookie, (cookie % 2) << 25, 32 << 20);
                match s.write_all(&r) {
                    Ok(()) => {
                        c.done.fetch_add(1, Ordering::SeqCst);
                    }
                    Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock) => {}
                    Err(e) => return Err(e),
                }
            }
            Ok(())
        },
    );
    (a, 16 * 8)
}

/// 4 clients that each ask, again and again, for the block status of 4 GiB of a fragmented
/// image (reading the replies; each reply covers a shorter range, as the protocol allows).
fn huge_block_status(port: u16) -> (Attack, usize) {
    let a = Attack::start(4, "requests answered", move |c| {
        let mut s = connect_from(source(c.i), port)?;
        negotiate(&mut s, true)?;
        let mut cookie = 0u64;
        while !c.stopped() {
            cookie += 1;
            s.write_all(&request(7, cookie, 0, u32::MAX - 511))?;
            let mut h = [0u8; 20];
            s.read_exact(&mut h)?;
            let len = u32::from_be_bytes(h[16..20].try_into().unwrap());
            std::io::copy(&mut (&mut s).take(len as u64), &mut std::io::sink())?;
            c.done.fetch_add(1, Ordering::SeqCst);
        }
        Ok(())
    });
    (a, 8)
}

/// A qcow2 v3 image of `size` bytes with 512-byte clusters whose every cluster alternates
/// between data and zero: one block-status descriptor per 512 bytes. Every L1 entry shares
/// one L2 table and every data cluster one host cluster, so the file stays small.
fn make_fragmented_qcow2(path: &Path, size: u64) {
    let cs = 512u64;
    let per_l2 = cs / 8;
    let n_l2 = (size / cs).div_ceil(per_l2);
    let l1_off = 3 * cs;
    let l1_clusters = (n_l2 * 8).div_ceil(cs);
    let data_off = l1_off + l1_clusters * cs;
    let l2_off = data_off + cs;
    let mut f = vec![0u8; (l2_off + cs) as usize];
    let put32 =
        |f: &mut Vec<u8>, at: usize, v: u32| f[at..at + 4].copy_from_slice(&v.to_be_bytes());
    let put64 =
        |f: &mut Vec<u8>, at: usize, v: u64| f[at..at + 8].copy_from_slice(&v.to_be_bytes());
    f[..4].copy_from_slice(b"QFI\xfb");
    put32(&mut f, 4, 3);
    put32(&mut f, 20, 9); // cluster bits
    put64(&mut f, 24, size);
    put32(&mut f, 36, n_l2 as u32);
    put64(&mut f, 40, l1_off);
    put64(&mut f, 48, cs); // refcount table (empty)
    put32(&mut f, 56, 1);
    put32(&mut f, 96, 4); // refcount order
    put32(&mut f, 100, 104); // header length
    for i in 0..n_l2 {
        put64(&mut f, (l1_off + 8 * i) as usize, (1 << 63) | l2_off);
    }
    f[data_off as usize..(data_off + cs) as usize].fill(0xab);
    for i in 0..per_l2 {
        let e = if i % 2 == 0 { (1 << 63) | data_off } else { 1 };
        put64(&mut f, (l2_off + 8 * i) as usize, e);
    }
    std::fs::write(path, f).unwrap();
}

type AttackFn = fn(u16) -> (Attack, usize);

#[test]
fn real_clients_are_served_during_attacks() {
    if !need_qemu() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let small = dir.path().join("disk.raw");
    make_pattern_raw(&small, 4 << 20, 31);
    let full = dir.path().join("full.raw");
    std::fs::write(&full, vec![0x5au8; 64 << 20]).unwrap();
    let frag = dir.path().join("frag.qcow2");
    make_fragmented_qcow2(&frag, 5 << 30);
    let attacks: [(&str, &Path, AttackFn, Option<&str>); 5] = [
        ("128 idle clients", &small, idle_clients, Some("idle for")),
        (
            "130 slowloris clients",
            &small,
            slowloris,
            Some("still negotiating"),
        ),
        (
            "1000 bare TCP connections",
            &small,
            bare_connections,
            Some("still negotiating"),
        ),
        (
            "16 clients not reading 32 MiB reads",
            &full,
            unread_reads,
            None,
        ),
        (
            "4 clients asking for 4 GiB block status",
            &frag,
            huge_block_status,
            None,
        ),
    ];
    for (what, img, attack, displaced) in attacks {
        let mut s = serve(&[
            "--listen",
            "127.0.0.1:0",
            "--export-name",
            "disk",
            &img.display().to_string(),
        ]);
        let pid = s.child.id();
        let base = proc_status_mib(pid, "VmRSS");
        let (a, expect) = attack(port_of(&s.uri));
        let got = a.wait_done(expect);
        assert!(
            got >= expect,
            "{what}: the attack itself did not get going ({got})"
        );
        // Past the grace times, so that idle and stalled attackers count as such; then a real
        // client now and then while the attack goes on.
        std::thread::sleep(Duration::from_millis(1500));
        let (mut times, mut rss) = (Vec::new(), 0);
        for _ in 0..5 {
            times.push(qemu_info_within(&s.uri, Duration::from_secs(1), what));
            rss = rss.max(proc_status_mib(pid, "VmRSS"));
            std::thread::sleep(Duration::from_millis(300));
        }
        let hwm = proc_status_mib(pid, "VmHWM");
        let (done, closed, unit) = (
            a.done.load(Ordering::SeqCst),
            a.closed.load(Ordering::SeqCst),
            a.unit,
        );
        drop(a);
        times.sort();
        eprintln!(
            "{what}: qemu-img info in {:?}..{:?} (median {:?}); server VmRSS {base} MiB before, \
             up to {rss} MiB during, VmHWM {hwm} MiB; attack: {done} {unit}, {closed} \
             reconnections",
            times[0], times[4], times[2]
        );
        assert!(hwm < 200, "{what}: the server's RSS peaked at {hwm} MiB");
        if let Some(m) = displaced {
            let log = s.log();
            assert!(
                log.contains(&format!("({m}")) && log.contains("to make room"),
                "{what}: {log}"
            );
        }
        // Nothing left stuck: the server stops at once once the attackers have gone.
        let t0 = Instant::now();
        let st = s.terminate(Duration::from_secs(5));
        assert!(
            st.is_some_and(|st| st.success()),
            "{what}: the server did not stop within 5 s of SIGTERM after the attack ({st:?})"
        );
        eprintln!("{what}: server stopped {:?} after SIGTERM", t0.elapsed());
    }
}

#[test]
fn block_status_replies_are_bounded_and_real_clients_stitch_them() {
    let dir = tempfile::tempdir().unwrap();
    let frag = dir.path().join("frag.qcow2");
    // Longer than one reply can describe in 512-byte descriptors (32,765 of them: 16 MiB).
    let size = 24u64 << 20;
    make_fragmented_qcow2(&frag, size);
    let s = serve(&[
        "--listen",
        "127.0.0.1:0",
        "--export-name",
        "disk",
        &frag.display().to_string(),
    ]);
    // One request for the whole export: a shorter answer, as many 512-byte descriptors as
    // fit in one reply piece, alternating data and zero.
    let mut c = connect(port_of(&s.uri)).unwrap();
    negotiate(&mut c, true).unwrap();
    c.write_all(&request(7, 1, 0, size as u32)).unwrap();
    let mut h = [0u8; 20];
    c.read_exact(&mut h).unwrap();
    let len = u32::from_be_bytes(h[16..20].try_into().unwrap()) as usize;
    assert!(
        len <= imgcheck::nbd::server::PIECE,
        "{len}-byte block status reply"
    );
    let mut d = vec![0u8; len];
    c.read_exact(&mut d).unwrap();
    let descs: Vec<(u32, u32)> = d[4..]
        .chunks_exact(8)
        .map(|e| {
            let v = |i: usize| u32::from_be_bytes(e[i..i + 4].try_into().unwrap());
            (v(0), v(4))
        })
        .collect();
    assert_eq!(descs.len(), (imgcheck::nbd::server::PIECE - 24) / 8);
    for (i, &(l, st)) in descs.iter().enumerate() {
        assert_eq!(
            (l, st),
            (512, if i % 2 == 0 { 0 } else { 2 }),
            "descriptor {i}"
        );
    }
    // imgcheck's own client asks again from where each reply stopped.
    {
        use imgcheck::image::Storage;
        let uri = imgcheck::nbd::uri::parse(&s.uri).unwrap();
        let st = imgcheck::nbd::client::NbdStorage::connect("frag", &uri).unwrap();
        let ranges = st.data_ranges(0, size).unwrap();
        assert_eq!(ranges.len() as u64, size / 1024);
        for (i, &r) in ranges.iter().enumerate() {
            assert_eq!(r, (i as u64 * 1024, 512), "data range {i}");
        }
    }
    drop(c);
    if !need_qemu() {
        return;
    }
    // qemu-img (which asks for one extent at a time, NBD_CMD_FLAG_REQ_ONE): the whole map,
    // cluster by cluster.
    let o = qemu_img(&["map", "--output=json", "-f", "raw", &s.uri]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let runs = map_runs(&String::from_utf8_lossy(&o.stdout));
    assert_eq!(runs.len() as u64, size / 512);
    for (i, r) in runs.iter().enumerate() {
        assert_eq!(
            (r.0, r.1, r.3),
            (i as u64 * 512, 512, i % 2 == 1),
            "run {i}"
        );
    }
    // and the bytes: data clusters of 0xab, zero clusters
    let o = qemu_img(&[
        "compare",
        "-f",
        "raw",
        "-F",
        "qcow2",
        &s.uri,
        &frag.display().to_string(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stdout));
}

#[test]
fn a_client_that_does_not_read_its_replies_is_disconnected() {
    use imgcheck::nbd::{Listen, ServeConfig, Server};
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("sparse.raw");
    std::fs::File::create(&img)
        .unwrap()
        .set_len(64 << 20)
        .unwrap();
    let dev = imgcheck::image::open(&img, &Default::default()).unwrap();
    let cfg = ServeConfig {
        export_name: "disk".into(),
        send_timeout: Duration::from_secs(1),
        reply_memory: 1 << 20,
        ..ServeConfig::default()
    };
    let server = Server::bind(&Listen::Tcp("127.0.0.1:0".into()), dev, &cfg).unwrap();
    let port = port_of(&server.uri().unwrap());
    let stop = server.shutdown_handle();
    let t = std::thread::spawn(move || server.run());
    let mut c = connect(port).unwrap();
    negotiate(&mut c, false).unwrap();
    c.set_write_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let t0 = Instant::now();
    for cookie in 0..64 {
        if c.write_all(&request(0, cookie, 0, 32 << 20)).is_err() {
            break;
        }
    }
    // The server gave up on it (1 s per reply, plus 1 s per 256 KiB of the write blocked):
    // what it managed to send is followed by the end of the stream.
    std::thread::sleep(Duration::from_secs(4));
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut got = Vec::new();
    let r = c.read_to_end(&mut got);
    assert!(
        !matches!(&r, Err(e) if e.kind() == io::ErrorKind::WouldBlock),
        "still connected after {:?}",
        t0.elapsed()
    );
    assert!((got.len() as u64) < 64 * (32 << 20));
    // Others are still served.
    let mut ok = connect(port).unwrap();
    negotiate(&mut ok, false).unwrap();
    ok.write_all(&request(0, 1, 0, 4096)).unwrap();
    let mut reply = vec![0u8; 16 + 4096];
    ok.read_exact(&mut reply).unwrap();
    assert_eq!(&reply[4..8], &[0; 4]);
    stop.shutdown();
    t.join().unwrap().unwrap();
}

#[test]
fn connection_limits_make_room_from_the_right_address() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("disk.raw");
    make_pattern_raw(&img, 1 << 20, 9);
    let s = serve(&[
        "--listen",
        "127.0.0.1:0",
        "--export-name",
        "disk",
        "--max-clients",
        "3",
        "--max-clients-per-address",
        "2",
        &img.display().to_string(),
    ]);
    let port = port_of(&s.uri);
    let client = |n: usize| {
        let mut c = connect_from(source(n), port).unwrap();
        negotiate(&mut c, false).unwrap();
        c
    };
    let (mut a1, mut a2, mut b1) = (client(0), client(0), client(1));
    std::thread::sleep(Duration::from_millis(1200)); // idle past the grace time
                                                     // A third connection from a's address: a's longest idle one makes room.
    let mut a3 = client(0);
    assert!(closed_by_server(&mut a1, 2000), "a1 kept");
    assert!(!closed_by_server(&mut a2, 300) && !closed_by_server(&mut b1, 10));
    // The server is full (a2, a3, b1): a newcomer from a third address takes room from the
    // address with most connections, and there from its connection idle past the grace time
    // (a2; a3 is too fresh); b's single connection is kept.
    let mut c1 = client(2);
    assert!(closed_by_server(&mut a2, 2000), "a2 kept");
    for (c, what) in [(&mut a3, "a3"), (&mut b1, "b1"), (&mut c1, "c1")] {
        assert!(!closed_by_server(c, 100), "{what} closed");
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        c.write_all(&request(0, 1, 0, 512)).unwrap();
        let mut reply = [0u8; 16 + 512];
        c.read_exact(&mut reply).unwrap();
        assert_eq!(&reply[4..8], &[0; 4], "{what} served");
    }
    let log = s.log();
    assert!(
        log.contains("closed a connection of 127.0.0.2 (idle for")
            && log.contains("to make room: at most 2 per client address")
            && log.contains("to make room: at most 3 clients in all"),
        "{log}"
    );
}

#[test]
fn a_write_payload_dripped_slowly_does_not_keep_a_connection_busy() {
    // Connections busy with a request are never closed to make room; a write's payload (which
    // the server must read before refusing it) dripped a byte at a time must not count as one.
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("disk.raw");
    make_pattern_raw(&img, 1 << 20, 9);
    let s = serve(&[
        "--listen",
        "127.0.0.1:0",
        "--export-name",
        "disk",
        "--max-clients-per-address",
        "2",
        &img.display().to_string(),
    ]);
    let port = port_of(&s.uri);
    let stop = Arc::new(AtomicBool::new(false));
    let drippers: Vec<_> = (0..2)
        .map(|_| {
            let mut c = connect_from(source(0), port).unwrap();
            negotiate(&mut c, false).unwrap();
            c.write_all(&request(1, 1, 0, 1 << 20)).unwrap(); // NBD_CMD_WRITE, 1 MiB
            let stop = stop.clone();
            std::thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) && c.write_all(&[0]).is_ok() {
                    std::thread::sleep(Duration::from_millis(100));
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(1300));
    let mut c = connect_from(source(0), port).unwrap();
    let served = negotiate(&mut c, false);
    stop.store(true, Ordering::SeqCst);
    for t in drippers {
        t.join().unwrap();
    }
    let log = s.log();
    served.unwrap_or_else(|e| panic!("refused: {e}\n{log}"));
    assert!(
        log.contains("(idle for") && log.contains("to make room"),
        "{log}"
    );
}
