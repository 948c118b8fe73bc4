//! `imgcheck serve` with real clients: qemu-img, qemu-io, qemu-nbd -L, nbdinfo, many at once,
//! every readable format; listening and stopping (loopback by default, Unix sockets, SIGTERM).

use super::protocol::Raw;
use super::*;

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
