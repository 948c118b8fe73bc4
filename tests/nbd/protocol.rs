//! The protocol at the byte level, with a hand-written client and the `nbd` crate's old-style
//! one: negotiation, pipelining, refusals, zero extents and read errors of any device, and
//! `serve_client` on one connected socket.

use super::*;

/// Minimal hand-written NBD client for protocol-level checks.
pub(crate) struct Raw {
    pub(crate) s: TcpStream,
}

impl Raw {
    pub(crate) fn connect(port: u16) -> Raw {
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
    pub(crate) fn opt(&mut self, opt: u32, data: &[u8]) {
        let mut b = IHAVEOPT.to_be_bytes().to_vec();
        b.extend_from_slice(&opt.to_be_bytes());
        b.extend_from_slice(&(data.len() as u32).to_be_bytes());
        b.extend_from_slice(data);
        self.s.write_all(&b).unwrap();
    }
    pub(crate) fn opt_reply(&mut self, opt: u32) -> (u32, Vec<u8>) {
        assert_eq!(self.u64(), REPLY_MAGIC);
        assert_eq!(self.u32(), opt);
        let typ = self.u32();
        let len = self.u32() as usize;
        let mut d = vec![0u8; len];
        self.s.read_exact(&mut d).unwrap();
        (typ, d)
    }
    pub(crate) fn u16(&mut self) -> u16 {
        let mut b = [0u8; 2];
        self.s.read_exact(&mut b).unwrap();
        u16::from_be_bytes(b)
    }
    pub(crate) fn u32(&mut self) -> u32 {
        let mut b = [0u8; 4];
        self.s.read_exact(&mut b).unwrap();
        u32::from_be_bytes(b)
    }
    pub(crate) fn u64(&mut self) -> u64 {
        let mut b = [0u8; 8];
        self.s.read_exact(&mut b).unwrap();
        u64::from_be_bytes(b)
    }
    pub(crate) fn request(&mut self, flags: u16, typ: u16, cookie: u64, offset: u64, len: u32) {
        let mut b = 0x2560_9513u32.to_be_bytes().to_vec();
        b.extend_from_slice(&flags.to_be_bytes());
        b.extend_from_slice(&typ.to_be_bytes());
        b.extend_from_slice(&cookie.to_be_bytes());
        b.extend_from_slice(&offset.to_be_bytes());
        b.extend_from_slice(&len.to_be_bytes());
        self.s.write_all(&b).unwrap();
    }
    /// One structured chunk: (flags, type, cookie, payload).
    pub(crate) fn chunk(&mut self) -> (u16, u16, u64, Vec<u8>) {
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
