//! Attacks on `imgcheck serve` and on imgcheck's NBD client, on loopback, bounded in count and
//! time: connection floods (idle clients, slowloris handshakes, bare TCP connections), clients
//! that pipeline reads and never read the replies, huge block-status requests, and servers
//! that drip their bytes. While each server attack runs, `qemu-img info` must be served within
//! 1 s and the server's peak RSS (VmHWM) stay under 200 MiB; the client must give up within
//! its deadline with a clear error and exit status 2.

use super::*;
use std::io;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

/// Peak resident memory of a process, in MiB (VmHWM).
fn vm_hwm_mib(pid: u32) -> u64 {
    let st = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: u64 = st
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc/PID/status");
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

/// Attack threads; stopped and joined on drop. Each counts what it achieved in `done`.
struct Attack {
    stop: Arc<AtomicBool>,
    done: Arc<AtomicUsize>,
    threads: Vec<JoinHandle<()>>,
}

impl Attack {
    /// `n` threads running `body(stop, done)`; errors end a thread quietly (the server is
    /// allowed to close attackers).
    fn start(
        n: usize,
        body: impl Fn(&AtomicBool, &AtomicUsize) -> io::Result<()> + Send + Sync + 'static,
    ) -> Attack {
        let stop = Arc::new(AtomicBool::new(false));
        let done = Arc::new(AtomicUsize::new(0));
        let body = Arc::new(body);
        let threads = (0..n)
            .map(|_| {
                let (stop, done, body) = (stop.clone(), done.clone(), body.clone());
                std::thread::spawn(move || {
                    let _ = body(&stop, &done);
                })
            })
            .collect();
        Attack {
            stop,
            done,
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

/// Sleep in small steps until `stop`.
fn hold(stop: &AtomicBool) {
    while !stop.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn connect(port: u16) -> io::Result<TcpStream> {
    let s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.set_write_timeout(Some(Duration::from_secs(5)))?;
    Ok(s)
}

fn option(opt: u32, data: &[u8]) -> Vec<u8> {
    let mut b = IHAVEOPT.to_be_bytes().to_vec();
    b.extend_from_slice(&opt.to_be_bytes());
    b.extend_from_slice(&(data.len() as u32).to_be_bytes());
    b.extend_from_slice(data);
    b
}

/// Read option replies to `opt` up to its final one; its type.
fn final_reply(s: &mut TcpStream) -> io::Result<u32> {
    loop {
        let mut h = [0u8; 20];
        s.read_exact(&mut h)?;
        let typ = u32::from_be_bytes(h[12..16].try_into().unwrap());
        let len = u32::from_be_bytes(h[16..20].try_into().unwrap());
        std::io::copy(&mut (&mut *s).take(len as u64), &mut std::io::sink())?;
        if typ != 4 && typ != 3 {
            return Ok(typ); // not NBD_REP_META_CONTEXT / NBD_REP_INFO
        }
    }
}

/// Negotiate up to transmission with NBD_OPT_GO on export "disk" (structured replies and
/// base:allocation when `structured`).
fn negotiate(s: &mut TcpStream, structured: bool) -> io::Result<()> {
    let mut hello = [0u8; 18];
    s.read_exact(&mut hello)?;
    s.write_all(&3u32.to_be_bytes())?;
    if structured {
        s.write_all(&option(8, &[]))?;
        final_reply(s)?;
        let mut d = name_data("disk");
        d.extend_from_slice(&1u32.to_be_bytes());
        d.extend_from_slice(&(15u32).to_be_bytes());
        d.extend_from_slice(b"base:allocation");
        s.write_all(&option(10, &d))?;
        final_reply(s)?;
    }
    let mut d = name_data("disk");
    d.extend_from_slice(&0u16.to_be_bytes());
    s.write_all(&option(7, &d))?;
    match final_reply(s)? {
        1 => Ok(()),
        t => Err(io::Error::other(format!("NBD_OPT_GO answered {t:#x}"))),
    }
}

fn request(typ: u16, cookie: u64, offset: u64, len: u32) -> Vec<u8> {
    let mut b = 0x2560_9513u32.to_be_bytes().to_vec();
    b.extend_from_slice(&0u16.to_be_bytes());
    b.extend_from_slice(&typ.to_be_bytes());
    b.extend_from_slice(&cookie.to_be_bytes());
    b.extend_from_slice(&offset.to_be_bytes());
    b.extend_from_slice(&len.to_be_bytes());
    b
}

/// 128 clients that negotiate and then sit idle.
fn idle_clients(port: u16) -> (Attack, usize) {
    let a = Attack::start(128, move |stop, done| {
        let mut s = connect(port)?;
        negotiate(&mut s, false)?;
        done.fetch_add(1, Ordering::SeqCst);
        hold(stop);
        Ok(())
    });
    (a, 32)
}

/// 130 clients that drip a never-ending handshake, a byte every 200 ms.
fn slowloris(port: u16) -> (Attack, usize) {
    let a = Attack::start(130, move |stop, done| {
        let mut s = connect(port)?;
        let mut hello = [0u8; 18];
        s.read_exact(&mut hello)?;
        done.fetch_add(1, Ordering::SeqCst);
        let mut msg = 3u32.to_be_bytes().to_vec();
        msg.extend_from_slice(&option(7, &[0u8; 4000]));
        for b in msg {
            if stop.load(Ordering::SeqCst) {
                break;
            }
            s.write_all(&[b])?;
            std::thread::sleep(Duration::from_millis(200));
        }
        Ok(())
    });
    (a, 100)
}

/// 1,000 TCP connections that never send a byte (opened by 4 threads, held open).
fn bare_connections(port: u16) -> (Attack, usize) {
    let a = Attack::start(4, move |stop, done| {
        let mut held = Vec::new();
        for _ in 0..250 {
            held.push(connect(port)?);
            done.fetch_add(1, Ordering::SeqCst);
        }
        hold(stop);
        Ok(())
    });
    (a, 1000)
}

/// 16 clients that pipeline 32 MiB reads (simple replies) and never read the replies.
fn unread_reads(port: u16) -> (Attack, usize) {
    let a = Attack::start(16, move |stop, done| {
        let mut s = connect(port)?;
        negotiate(&mut s, false)?;
        s.set_write_timeout(Some(Duration::from_millis(200)))?;
        let mut cookie = 0u64;
        while !stop.load(Ordering::SeqCst) {
            cookie += 1;
            let r = request(0, cookie, (cookie % 2) << 25, 32 << 20);
            match s.write_all(&r) {
                Ok(()) => {
                    done.fetch_add(1, Ordering::SeqCst);
                }
                Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    });
    (a, 64)
}

/// 4 clients that each ask, again and again, for the block status of 4 GiB of a fragmented
/// image (reading the replies).
fn huge_block_status(port: u16) -> (Attack, usize) {
    let a = Attack::start(4, move |stop, done| {
        let mut s = connect(port)?;
        negotiate(&mut s, true)?;
        let mut cookie = 0u64;
        while !stop.load(Ordering::SeqCst) {
            cookie += 1;
            s.write_all(&request(7, cookie, 0, u32::MAX - 511))?;
            let mut h = [0u8; 20];
            s.read_exact(&mut h)?;
            let len = u32::from_be_bytes(h[16..20].try_into().unwrap());
            std::io::copy(&mut (&mut s).take(len as u64), &mut std::io::sink())?;
            done.fetch_add(1, Ordering::SeqCst);
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
    let sparse = dir.path().join("sparse.raw");
    std::fs::File::create(&sparse)
        .unwrap()
        .set_len(64 << 20)
        .unwrap();
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
            &sparse,
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
        let s = serve(&[
            "--listen",
            "127.0.0.1:0",
            "--export-name",
            "disk",
            &img.display().to_string(),
        ]);
        let (a, expect) = attack(port_of(&s.uri));
        let got = a.wait_done(expect);
        assert!(
            got >= expect,
            "{what}: the attack itself did not get going ({got})"
        );
        // Past the grace times, so that idle and stalled attackers count as such.
        std::thread::sleep(Duration::from_millis(1500));
        let mut worst = Duration::ZERO;
        for _ in 0..3 {
            worst = worst.max(qemu_info_within(&s.uri, Duration::from_secs(1), what));
        }
        let hwm = vm_hwm_mib(s.child.id());
        eprintln!("{what}: qemu-img info within {worst:?}, server VmHWM {hwm} MiB");
        assert!(hwm < 200, "{what}: the server's RSS peaked at {hwm} MiB");
        drop(a);
        if let Some(m) = displaced {
            let log = s.log();
            assert!(
                log.contains(&format!("({m}")) && log.contains("to make room"),
                "{what}: {log}"
            );
        }
    }
}

/// A one-client fake server that drips bytes, one a second: the greeting itself
/// (`drip_greeting`), or else — after a prompt negotiation of a 1 MiB export — the reply to the
/// first request. It stops when the client hangs up (or after 60 s).
fn dripping_server(drip_greeting: bool) -> (u16, JoinHandle<()>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let t = std::thread::spawn(move || {
        let Ok((mut s, _)) = l.accept() else { return };
        s.set_read_timeout(Some(Duration::from_secs(60))).ok();
        let t0 = Instant::now();
        let drip = |s: &mut TcpStream, bytes: &[u8]| {
            for b in bytes.iter().cycle() {
                if t0.elapsed() > Duration::from_secs(60) || s.write_all(&[*b]).is_err() {
                    return;
                }
                std::thread::sleep(Duration::from_secs(1));
            }
        };
        let greeting = b"NBDMAGICIHAVEOPT\x00\x03";
        if drip_greeting {
            return drip(&mut s, greeting);
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
        drip(&mut s, &answer);
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

#[test]
fn block_status_replies_are_bounded_and_real_clients_stitch_them() {
    let dir = tempfile::tempdir().unwrap();
    let frag = dir.path().join("frag.qcow2");
    let size = 64u64 << 20;
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
    drop(c);
    if !need_qemu() {
        return;
    }
    // qemu-img asks again from where each reply stopped: the whole map, cluster by cluster.
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
