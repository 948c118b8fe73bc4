//! `imgcheck convert`: every target format/subformat against qemu-img as the oracle.
mod common;
use common::*;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use imgcheck::convert::{self, ConvertOptions, OutputFormat};
use imgcheck::image::{self, BlockDevice, Extent, ExtentKind, Format};

/// Odd virtual sizes: not multiples of a sector, a cluster, a grain or a VHD block.
const SIZES: [u64; 2] = [5 * 1024 * 1024 + 123, 3 * 1024 * 1024 + 7 * 512];

/// A target: imgcheck's -O, extra args, qemu's format name, whether `qemu-img check` works.
struct Target {
    name: &'static str,
    out_fmt: &'static str,
    args: &'static [&'static str],
    qemu_fmt: &'static str,
    checkable: bool,
}

const TARGETS: &[Target] = &[
    Target {
        name: "raw",
        out_fmt: "raw",
        args: &[],
        qemu_fmt: "raw",
        checkable: false,
    },
    Target {
        name: "qcow2",
        out_fmt: "qcow2",
        args: &[],
        qemu_fmt: "qcow2",
        checkable: true,
    },
    Target {
        name: "qcow2-c",
        out_fmt: "qcow2",
        args: &["-c"],
        qemu_fmt: "qcow2",
        checkable: true,
    },
    Target {
        name: "qcow2-4k",
        out_fmt: "qcow2",
        args: &["-o", "cluster_size=4k"],
        qemu_fmt: "qcow2",
        checkable: true,
    },
    Target {
        name: "qcow2-2m",
        out_fmt: "qcow2",
        args: &["-o", "cluster_size=2M"],
        qemu_fmt: "qcow2",
        checkable: true,
    },
    Target {
        name: "qcow2-c-4k",
        out_fmt: "qcow2",
        args: &["-c", "-o", "cluster_size=4096"],
        qemu_fmt: "qcow2",
        checkable: true,
    },
    Target {
        name: "vhd-fixed",
        out_fmt: "vhd",
        args: &["-o", "subformat=fixed"],
        qemu_fmt: "vpc",
        checkable: false,
    },
    Target {
        name: "vhd-dynamic",
        out_fmt: "vpc",
        args: &["-o", "subformat=dynamic"],
        qemu_fmt: "vpc",
        checkable: false,
    },
    Target {
        name: "vmdk-sparse",
        out_fmt: "vmdk",
        args: &[],
        qemu_fmt: "vmdk",
        checkable: true,
    },
    Target {
        name: "vmdk-stream",
        out_fmt: "vmdk",
        args: &["-o", "subformat=streamOptimized"],
        qemu_fmt: "vmdk",
        checkable: true,
    },
];

fn target(name: &str) -> &'static Target {
    TARGETS.iter().find(|t| t.name == name).unwrap()
}

fn s(p: &Path) -> String {
    p.display().to_string()
}

/// Run `imgcheck convert` and assert success.
fn convert_ok(src: &Path, dst: &Path, t: &Target, extra: &[&str], env: &[(&str, &str)]) {
    let mut args = vec!["convert", "-q", "-O", t.out_fmt];
    args.extend_from_slice(t.args);
    args.extend_from_slice(extra);
    let (a, b) = (s(src), s(dst));
    args.push(&a);
    args.push(&b);
    let o = Command::new(imgcheck_bin())
        .args(&args)
        .envs(env.iter().copied())
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "imgcheck {args:?} failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// The virtual size qemu-img must report for a target made from a `size`-byte source.
fn expected_size(t: &Target, size: u64) -> u64 {
    let sectors = size.div_ceil(512) * 512;
    match t.qemu_fmt {
        "vpc" => {
            // CHS geometry rounds up (see src/convert/vhd.rs); never down, by under 2 MiB
            let (_, v) = imgcheck::convert::vhd::vhd_size(size).unwrap();
            assert!(v >= sectors && v - sectors < 16 * 255 * 512);
            v
        }
        _ => sectors,
    }
}

/// The oracle checks for one converted image.
fn check_with_qemu(src: &Path, src_fmt: &str, dst: &Path, t: &Target, size: u64, dir: &Path) {
    // qemu-img compare: identical (exit 0); VHD may be larger, the excess zeros
    let o = Command::new("qemu-img")
        .args(["compare", "-f", src_fmt, "-F", t.qemu_fmt, &s(src), &s(dst)])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&o.stdout).to_string() + &String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(0), "{}: compare: {text}", t.name);
    assert!(text.contains("Images are identical"), "{}: {text}", t.name);
    // qemu-img check: no errors, no leaks
    let o = Command::new("qemu-img")
        .args(["check", "-f", t.qemu_fmt, &s(dst)])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&o.stdout).to_string() + &String::from_utf8_lossy(&o.stderr);
    if t.checkable {
        assert_eq!(o.status.code(), Some(0), "{}: check: {text}", t.name);
        assert!(text.contains("No errors were found"), "{}: {text}", t.name);
        assert!(!text.contains("leaked"), "{}: {text}", t.name);
    } else {
        // raw and vpc: qemu-img has no checker for these formats (exit 63)
        assert_eq!(o.status.code(), Some(63), "{}: check: {text}", t.name);
        assert!(
            text.contains("does not support checks"),
            "{}: {text}",
            t.name
        );
    }
    // qemu-img info: expected virtual size and format
    let info = qemu_info(dst, Some(t.qemu_fmt));
    let want = expected_size(t, size);
    assert_eq!(
        info["virtual-size"].as_u64().unwrap(),
        want,
        "{}: virtual size",
        t.name
    );
    if want > size.div_ceil(512) * 512 {
        // the excess (VHD geometry rounding) reads as zeros, and the rest is the source
        let guest = qemu_guest_bytes(dst, Some(t.qemu_fmt), dir);
        let orig = qemu_guest_bytes(src, Some(src_fmt), dir);
        assert_eq!(guest.len() as u64, want);
        assert_same_guest(&guest[..orig.len()], &orig, t.name);
        assert!(guest[orig.len()..].iter().all(|&b| b == 0), "{}", t.name);
    }
}

/// Convert pattern raw sources of odd sizes into target `name` and check them with qemu-img;
/// also check that -j 1 and -j 4 give byte-identical files.
fn roundtrip_from_raw(name: &str) {
    if !have("qemu-img") {
        eprintln!("SKIP: qemu-img not installed");
        return;
    }
    let t = target(name);
    let dir = tempfile::tempdir().unwrap();
    for (i, &size) in SIZES.iter().enumerate() {
        let src = dir.path().join(format!("src{i}.raw"));
        make_pattern_raw(&src, size, 11 + i as u64);
        let env = [("SOURCE_DATE_EPOCH", "1700000000")];
        // same file name in two folders: the VMDK descriptor names its own file
        for j in ["j1", "j4"] {
            std::fs::create_dir_all(dir.path().join(j)).unwrap();
        }
        let d1 = dir.path().join("j1").join(format!("{i}.{}", t.qemu_fmt));
        let d4 = dir.path().join("j4").join(format!("{i}.{}", t.qemu_fmt));
        convert_ok(&src, &d1, t, &["-j", "1"], &env);
        convert_ok(&src, &d4, t, &["-j", "4"], &env);
        check_with_qemu(&src, "raw", &d4, t, size, dir.path());
        let (a, b) = (std::fs::read(&d1).unwrap(), std::fs::read(&d4).unwrap());
        assert!(a == b, "{name}: -j 1 and -j 4 outputs differ");
        // the output stays sparse: holes of the source are not allocated in the output
        if t.qemu_fmt != "raw" && t.name != "qcow2-2m" {
            assert!(std::fs::metadata(&d4).unwrap().len() < size + (2 << 20));
        }
    }
}

#[test]
fn raw_target() {
    roundtrip_from_raw("raw");
}
#[test]
fn qcow2_target() {
    roundtrip_from_raw("qcow2");
}
#[test]
fn qcow2_compressed_target() {
    roundtrip_from_raw("qcow2-c");
}
#[test]
fn qcow2_4k_clusters_target() {
    roundtrip_from_raw("qcow2-4k");
}
#[test]
fn qcow2_2m_clusters_target() {
    roundtrip_from_raw("qcow2-2m");
}
#[test]
fn qcow2_compressed_4k_clusters_target() {
    roundtrip_from_raw("qcow2-c-4k");
}
#[test]
fn vhd_fixed_target() {
    roundtrip_from_raw("vhd-fixed");
}
#[test]
fn vhd_dynamic_target() {
    roundtrip_from_raw("vhd-dynamic");
}
#[test]
fn vmdk_monolithic_sparse_target() {
    roundtrip_from_raw("vmdk-sparse");
}
#[test]
fn vmdk_stream_optimized_target() {
    roundtrip_from_raw("vmdk-stream");
}

/// A compressible source really gets compressed clusters that qemu-img reads back (raw
/// deflate with qemu's 4 KiB window), and the file is much smaller than the data.
#[test]
fn compressed_qcow2_and_stream_vmdk_are_compressed_and_read_by_qemu() {
    if !have("qemu-img") {
        eprintln!("SKIP: qemu-img not installed");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("text.raw");
    let mut data = Vec::new();
    let mut rng = Rng::new(5);
    while data.len() < 4 << 20 {
        // text-like: compressible, but with matches further back than 4 KiB
        let w = rng.next() % 4000;
        data.extend_from_slice(
            format!("line {w} of a log file with some words {} \n", w * 7).as_bytes(),
        );
    }
    data.truncate((4 << 20) + 100);
    std::fs::write(&src, &data).unwrap();
    let q = dir.path().join("c.qcow2");
    convert_ok(&src, &q, target("qcow2-c"), &[], &[]);
    check_with_qemu(
        &src,
        "raw",
        &q,
        target("qcow2-c"),
        data.len() as u64,
        dir.path(),
    );
    let o = qemu_img(&["check", "--output=json", &s(&q)]);
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let comp = j["compressed-clusters"].as_u64().unwrap();
    let alloc = j["allocated-clusters"].as_u64().unwrap();
    assert!(comp > 0 && comp == alloc, "{j}");
    assert!(std::fs::metadata(&q).unwrap().len() < data.len() as u64 / 2);
    let v = dir.path().join("c.vmdk");
    convert_ok(&src, &v, target("vmdk-stream"), &[], &[]);
    check_with_qemu(
        &src,
        "raw",
        &v,
        target("vmdk-stream"),
        data.len() as u64,
        dir.path(),
    );
    assert!(std::fs::metadata(&v).unwrap().len() < data.len() as u64 / 2);
}

/// `-c` qcow2 and streamOptimized VMDK output are at most 1 % larger than qemu-img's on the
/// benchmark sources (scripts/bench-sources/gen.py): plain text with few repeats (which the old
/// static-Huffman probe stored raw), log-like text, binaries from /usr, random data and a mix.
#[test]
fn compressed_output_is_as_small_as_qemu_imgs() {
    if !have("qemu-img") || !have("python3") {
        eprintln!("SKIP: qemu-img or python3 not installed");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let gen = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/bench-sources/gen.py");
    for kind in ["text", "logs", "binary", "random", "mixed"] {
        let src = dir.path().join(format!("{kind}.raw"));
        let o = Command::new("python3")
            .args([&s(&gen), kind, "8", &s(&src)])
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        for (t, qemu_args) in [
            ("qcow2-c", &["-c", "-O", "qcow2"][..]),
            (
                "vmdk-stream",
                &["-O", "vmdk", "-o", "subformat=streamOptimized"][..],
            ),
        ] {
            let ours = dir.path().join(format!("{kind}.{t}"));
            convert_ok(&src, &ours, target(t), &[], &[]);
            let theirs = dir.path().join(format!("{kind}.qemu.{t}"));
            let mut args = vec!["convert", "-f", "raw"];
            args.extend_from_slice(qemu_args);
            let (a, b) = (s(&src), s(&theirs));
            args.push(&a);
            args.push(&b);
            let o = qemu_img(&args);
            assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
            let (n_ours, n_theirs) = (
                std::fs::metadata(&ours).unwrap().len(),
                std::fs::metadata(&theirs).unwrap().len(),
            );
            assert!(
                n_ours * 100 <= n_theirs * 101,
                "{kind} -> {t}: imgcheck wrote {n_ours} bytes, qemu-img {n_theirs}"
            );
            check_with_qemu(&src, "raw", &ours, target(t), 8 << 20, dir.path());
        }
    }
}

/// The streamOptimized file has open-vmdk's layout: version 3, flags, GD after the
/// descriptor, descriptor keys, grain markers and an end-of-stream marker.
#[test]
fn stream_optimized_layout_matches_open_vmdk() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("s.raw");
    make_pattern_raw(&src, SIZES[0], 3);
    let v = dir.path().join("s.vmdk");
    convert_ok(&src, &v, target("vmdk-stream"), &[], &[]);
    let f = std::fs::read(&v).unwrap();
    let le32 = |o: usize| u32::from_le_bytes(f[o..o + 4].try_into().unwrap());
    let le64 = |o: usize| u64::from_le_bytes(f[o..o + 8].try_into().unwrap());
    assert_eq!(&f[0..4], b"KDMV");
    assert_eq!(le32(4), 3);
    assert_eq!(le32(8), 0x30001);
    assert_eq!(le64(12), SIZES[0].div_ceil(512)); // capacity
    assert_eq!(le64(20), 128); // grain
    assert_eq!((le64(28), le64(36)), (1, 20)); // descriptor
    assert_eq!(le32(44), 512);
    assert_eq!(le64(48), 0); // no redundant GD
    assert_eq!(le64(56), 21); // GD right after the descriptor
    assert_eq!(u16::from_le_bytes([f[77], f[78]]), 1); // deflate
    let desc = String::from_utf8_lossy(&f[512..512 * 21]);
    let desc = desc.trim_end_matches('\0');
    for key in [
        "createType=\"streamOptimized\"",
        "encoding=\"UTF-8\"",
        "ddb.longContentID = \"",
        "ddb.virtualHWVersion = \"4\"",
        "ddb.geometry.cylinders = \"1\"",
        "ddb.geometry.heads = \"255\"",
        "ddb.geometry.sectors = \"63\"",
        "ddb.adapterType = \"lsilogic\"",
        "ddb.toolsVersion = \"2147483647\"",
    ] {
        assert!(desc.contains(key), "{key} missing from\n{desc}");
    }
    // first grain right at overHead: a marker whose LBA is a multiple of the grain, then a
    // zlib stream (0x78 header byte)
    let overhead = le64(64) as usize * 512;
    let lba = le64(overhead);
    assert_eq!(lba % 128, 0);
    let clen = le32(overhead + 8) as usize;
    assert!(clen > 0 && clen < 65536 + 1024);
    assert_eq!(f[overhead + 12], 0x78);
    // the file ends with the end-of-stream marker (a zero sector)
    assert_eq!(f.len() % 512, 0);
    assert!(f[f.len() - 512..].iter().all(|&b| b == 0));
}

#[test]
fn existing_destination_needs_force() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("a.raw");
    make_pattern_raw(&src, 1 << 20, 1);
    let dst = dir.path().join("b.qcow2");
    std::fs::write(&dst, b"precious").unwrap();
    let o = imgcheck(&["convert", "-O", "qcow2", &s(&src), &s(&dst)]);
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("--force") && err.contains("b.qcow2"), "{err}");
    assert_eq!(std::fs::read(&dst).unwrap(), b"precious");
    let o = imgcheck(&["convert", "-O", "qcow2", "--force", &s(&src), &s(&dst)]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(&std::fs::read(&dst).unwrap()[..4], b"QFI\xfb");
    assert_no_temp_files(dir.path());
}

/// `-t writeback` (the default) fsyncs the output before the rename; `-t unsafe` (qemu-img
/// convert's default) makes no flush at all, and writes the same image. strace is the oracle.
#[test]
fn cache_mode_decides_the_fsync() {
    if !have("strace") {
        eprintln!("skipped: strace not installed");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("a.raw");
    make_pattern_raw(&src, SIZES[0], 3);
    let mut outputs = Vec::new();
    for (mode, fmt) in [
        ("writeback", "qcow2"),
        ("unsafe", "qcow2"),
        ("writeback", "vmdk"),
        ("unsafe", "vmdk"),
    ] {
        let dst = dir.path().join(format!("{mode}.{fmt}"));
        let trace = dir.path().join(format!("{mode}.{fmt}.trace"));
        let o = run(
            "strace",
            &[
                "-f",
                "-qq",
                "-o",
                &s(&trace),
                "-e",
                "trace=fsync,fdatasync,sync_file_range,sync,syncfs,renameat,renameat2,rename",
                &s(&imgcheck_bin()),
                "convert",
                "-q",
                "-O",
                fmt,
                "-t",
                mode,
                &s(&src),
                &s(&dst),
            ],
        );
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let calls = std::fs::read_to_string(&trace).unwrap();
        let flushes = calls
            .lines()
            .filter(|l| l.contains("fsync(") || l.contains("fdatasync(") || l.contains("sync("))
            .count();
        assert!(calls.contains("rename"), "{mode}: no rename?\n{calls}");
        if mode == "writeback" {
            // The file, then the directory after the rename.
            assert!(flushes >= 2, "{mode}: expected fsyncs\n{calls}");
            let fsync_at = calls.find("fsync(").unwrap();
            assert!(fsync_at < calls.find("rename").unwrap(), "{calls}");
        } else {
            assert_eq!(flushes, 0, "{mode}: no flush expected\n{calls}");
            assert!(!calls.contains("sync_file_range"), "{calls}");
        }
        let cmp = qemu_img(&["compare", "-f", "raw", &s(&src), &s(&dst)]);
        assert!(cmp.status.success(), "{mode} {fmt}: qemu-img compare");
        outputs.push(std::fs::read(&dst).unwrap());
    }
    // The mode changes nothing in the file: the qcow2 writer is deterministic, so its two
    // outputs are byte for byte the same (VMDK's CID is random, so only qemu-img compare there).
    assert_eq!(outputs[0], outputs[1], "qcow2 differs between cache modes");
    assert_no_temp_files(dir.path());
}

fn assert_no_temp_files(dir: &Path) {
    for e in std::fs::read_dir(dir).unwrap() {
        let n = e.unwrap().file_name().to_string_lossy().to_string();
        assert!(!n.contains("tmp-imgcheck"), "temporary file left: {n}");
    }
}

/// A source whose reads fail past a point, like a truncated image or a failing disk.
struct FailingDevice {
    size: u64,
    fail_at: u64,
}

impl BlockDevice for FailingDevice {
    fn format(&self) -> Format {
        Format::Raw
    }
    fn size(&self) -> u64 {
        self.size
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> imgcheck::Result<()> {
        image::check_range("failing.img", offset, buf.len() as u64, self.size)?;
        if offset + buf.len() as u64 > self.fail_at {
            return Err(imgcheck::Error::corrupt(
                "failing.img",
                "truncated at 3 MiB",
            ));
        }
        for (i, b) in buf.iter_mut().enumerate() {
            *b = ((offset + i as u64) % 251) as u8 | 1;
        }
        Ok(())
    }
    fn map(&self, offset: u64, len: u64) -> imgcheck::Result<Vec<Extent>> {
        let end = image::clip_end(offset, len, self.size);
        Ok(vec![Extent {
            offset,
            length: end - offset,
            kind: ExtentKind::Data,
        }])
    }
    fn actual_size(&self) -> u64 {
        self.size
    }
    fn name(&self) -> &str {
        "failing.img"
    }
}

#[test]
fn failed_source_read_leaves_no_destination() {
    let dir = tempfile::tempdir().unwrap();
    for (fmt, opts, compress) in [
        (OutputFormat::Raw, vec![], false),
        (OutputFormat::Qcow2, vec![], false),
        (OutputFormat::Qcow2, vec![], true),
        (OutputFormat::Vhd, vec![("subformat", "fixed")], false),
        (OutputFormat::Vhd, vec![], false),
        (OutputFormat::Vmdk, vec![], false),
        (
            OutputFormat::Vmdk,
            vec![("subformat", "streamOptimized")],
            false,
        ),
    ] {
        let dst = dir.path().join("out.img");
        let src: Arc<dyn BlockDevice> = Arc::new(FailingDevice {
            size: 8 << 20,
            fail_at: 3 << 20,
        });
        let o = ConvertOptions {
            format: fmt,
            options: opts
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            compress,
            jobs: 3,
            ..Default::default()
        };
        let r = convert::convert(src, &dst, &o, &|_| {});
        let e = r.expect_err("conversion of a failing source must fail");
        assert!(e.to_string().contains("failing.img"), "{e}");
        assert!(!dst.exists(), "{fmt:?}: destination left behind");
        assert_no_temp_files(dir.path());
    }
}

/// A qcow2 source truncated midway (made by qemu-img).
#[test]
fn truncated_qcow2_source_leaves_no_destination() {
    if !have("qemu-img") {
        eprintln!("SKIP: qemu-img not installed");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let raw = dir.path().join("a.raw");
    make_pattern_raw(&raw, 6 << 20, 9);
    let q = dir.path().join("a.qcow2");
    qemu_img(&["convert", "-O", "qcow2", &s(&raw), &s(&q)]);
    assert_readable(&q);
    let len = std::fs::metadata(&q).unwrap().len();
    let f = std::fs::OpenOptions::new().write(true).open(&q).unwrap();
    f.set_len(len / 2).unwrap();
    drop(f);
    let dst = dir.path().join("out.raw");
    let o = imgcheck(&["convert", "-O", "raw", &s(&q), &s(&dst)]);
    assert_eq!(
        o.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(!dst.exists());
    assert_no_temp_files(dir.path());
}

/// `imgcheck info` opens `img` (the source a test made with qemu-img).
fn assert_readable(img: &Path) {
    let o = imgcheck(&["info", &s(img)]);
    assert!(
        o.status.success(),
        "imgcheck info {} failed: {}",
        img.display(),
        String::from_utf8_lossy(&o.stderr)
    );
}

#[test]
fn ctrl_c_leaves_no_destination() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("big.raw");
    let mut data = vec![0u8; 48 << 20];
    Rng::new(77).fill(&mut data);
    std::fs::write(&src, &data).unwrap();
    drop(data);
    let dst = dir.path().join("out.qcow2");
    let mut child = Command::new(imgcheck_bin())
        .args([
            "convert",
            "-q",
            "-j",
            "1",
            "-O",
            "qcow2",
            "-c",
            &s(&src),
            &s(&dst),
        ])
        .spawn()
        .unwrap();
    // wait until the temporary output exists: the conversion is under way
    let start = std::time::Instant::now();
    loop {
        let busy = std::fs::read_dir(dir.path()).unwrap().any(|e| {
            e.unwrap()
                .file_name()
                .to_string_lossy()
                .contains("tmp-imgcheck")
        });
        if busy || start.elapsed().as_secs() > 20 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    // SAFETY: kill(2) on our own child's pid.
    unsafe {
        libc_kill(child.id() as i32, 2);
    }
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(2), "interrupted conversion must fail");
    assert!(!dst.exists());
    assert_no_temp_files(dir.path());
}

extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, sig: i32) -> i32;
}

#[test]
fn verify_reads_back_with_imgchecks_reader() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("a.raw");
    make_pattern_raw(&src, SIZES[0], 4);
    for t in TARGETS {
        let dst = dir.path().join(format!("v-{}", t.name));
        let mut args = vec!["convert", "--verify", "-O", t.out_fmt];
        args.extend_from_slice(t.args);
        let (a, b) = (s(&src), s(&dst));
        args.push(&a);
        args.push(&b);
        let o = imgcheck(&args);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(o.status.success(), "{}: {err}", t.name);
        assert!(err.contains("verified"), "{}: {err}", t.name);
    }
}

/// `--verify` catches a destination that differs from the source (library level).
#[test]
fn verify_detects_a_difference() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a.raw");
    make_pattern_raw(&a, 2 << 20, 8);
    let b = dir.path().join("b.raw");
    std::fs::copy(&a, &b).unwrap();
    {
        use std::os::unix::fs::FileExt;
        let f = std::fs::OpenOptions::new().write(true).open(&b).unwrap();
        f.write_all_at(b"X", 1_000_003).unwrap();
    }
    let opts = image::OpenOptions::default();
    let (da, db) = (
        image::open(&a, &opts).unwrap(),
        image::open(&b, &opts).unwrap(),
    );
    let e = convert::verify::compare(da.as_ref(), db.as_ref(), 2, &|_| {}).unwrap_err();
    assert!(e.to_string().contains("1000003"), "{e}");
    let dc = image::open(&a, &opts).unwrap();
    convert::verify::compare(da.as_ref(), dc.as_ref(), 2, &|_| {}).unwrap();
}

/// Sources in every other format and subformat, made by qemu-img, converted to every target.
#[test]
fn sources_in_other_formats() {
    if !have("qemu-img") {
        eprintln!("SKIP: qemu-img not installed");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let raw = dir.path().join("base.raw");
    let size = SIZES[0];
    make_pattern_raw(&raw, size, 21);
    let sources: [(&str, &str, &[&str]); 11] = [
        ("qcow2", "qcow2", &[]),
        ("qcow2-v2", "qcow2", &["-o", "compat=0.10"]),
        ("qcow2-compressed", "qcow2", &["-c"]),
        (
            "qcow2-extended-l2",
            "qcow2",
            &["-o", "extended_l2=on,cluster_size=128k"],
        ),
        ("qcow2-512b", "qcow2", &["-o", "cluster_size=512"]),
        ("vmdk-flat", "vmdk", &["-o", "subformat=monolithicFlat"]),
        (
            "vmdk-2gb-sparse",
            "vmdk",
            &["-o", "subformat=twoGbMaxExtentSparse"],
        ),
        ("vmdk-sparse", "vmdk", &[]),
        ("vmdk-stream", "vmdk", &["-o", "subformat=streamOptimized"]),
        ("vhd-dynamic", "vpc", &["-o", "subformat=dynamic"]),
        ("vhd-fixed", "vpc", &["-o", "subformat=fixed"]),
    ];
    for (sname, sfmt, sargs) in sources {
        let src = dir.path().join(format!("src-{sname}"));
        let mut args = vec!["convert", "-O", sfmt];
        args.extend_from_slice(sargs);
        let (r, p) = (s(&raw), s(&src));
        args.push(&r);
        args.push(&p);
        qemu_img(&args);
        assert_readable(&src);
        let src_size = qemu_info(&src, Some(sfmt))["virtual-size"]
            .as_u64()
            .unwrap();
        for t in TARGETS {
            let dst = dir.path().join(format!("{sname}-to-{}", t.name));
            convert_ok(&src, &dst, t, &[], &[]);
            check_with_qemu(&src, sfmt, &dst, t, src_size, dir.path());
        }
    }
}

#[test]
fn bad_options_are_refused_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("a.raw");
    make_pattern_raw(&src, 1 << 20, 1);
    let dst: PathBuf = dir.path().join("o");
    for (args, want) in [
        (
            vec!["-O", "qcow2", "-o", "cluster_size=3000"],
            "cluster_size",
        ),
        (vec!["-O", "vhd", "-o", "subformat=weird"], "subformat"),
        (
            vec!["-O", "vmdk", "-o", "subformat=twoGbMaxExtentSparse"],
            "subformat",
        ),
        (vec!["-O", "raw", "-c"], "-c"),
        (vec!["-O", "vhdx"], "VHDX"),
        (vec!["-O", "qcow2", "-o", "frobnicate=1"], "frobnicate"),
        (vec!["-O", "qcow2", "-t", "none"], "-t none"),
        (vec!["-O", "qcow2", "-t", "sometimes"], "cache mode"),
    ] {
        let mut a = vec!["convert"];
        a.extend_from_slice(&args);
        let (x, y) = (s(&src), s(&dst));
        a.push(&x);
        a.push(&y);
        let o = imgcheck(&a);
        assert_eq!(o.status.code(), Some(2), "{a:?}");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains(want), "{a:?}: {err}");
        assert!(!dst.exists());
    }
    assert_no_temp_files(dir.path());
}

/// A file-size limit (as a full disk would) gives a clear error and leaves nothing behind.
#[test]
fn file_size_limit_gives_a_clear_error_and_no_destination() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("a.raw");
    make_pattern_raw(&src, SIZES[0], 6);
    for fmt in ["raw", "qcow2", "vpc", "vmdk"] {
        let dst = dir.path().join(format!("out.{fmt}"));
        let cmd = format!(
            "ulimit -f 1024; exec '{}' convert -q -O {fmt} '{}' '{}'",
            imgcheck_bin().display(),
            s(&src),
            s(&dst)
        );
        let o = Command::new("sh").arg("-c").arg(&cmd).output().unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{fmt}: {err}");
        assert!(err.contains("file too large"), "{fmt}: {err}");
        assert!(err.contains(&format!("out.{fmt}")), "{fmt}: {err}");
        assert!(!dst.exists());
        assert_no_temp_files(dir.path());
    }
}

/// A qcow2 overlay on a raw backing file: refused without `--allow-backing`, and flattened
/// into every target with it (the output has no backing file and equals the chain).
#[test]
fn overlay_is_flattened_with_allow_backing() {
    if !have("qemu-img") || !have("qemu-io") {
        eprintln!("SKIP: qemu-img/qemu-io not installed");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // the overlay (3 MiB) is larger than its backing file (2 MiB): past its end reads zeros
    make_pattern_raw(&dir.path().join("base.raw"), 2 << 20, 31);
    let top = make_overlay(dir.path(), "top.qcow2", "base.raw", "raw", "");

    let refused = dir.path().join("refused.qcow2");
    let o = imgcheck(&["convert", "-O", "qcow2", &s(&top), &s(&refused)]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("--allow-backing"), "{err}");
    assert!(!refused.exists());

    for t in TARGETS {
        let dst = dir.path().join(format!("flat-{}", t.name));
        convert_ok(&top, &dst, t, &["--allow-backing"], &[]);
        check_with_qemu(&top, "qcow2", &dst, t, 3 << 20, dir.path());
        let info = qemu_info(&dst, Some(t.qemu_fmt));
        assert!(info.get("backing-filename").is_none(), "{}: {info}", t.name);
    }
}
