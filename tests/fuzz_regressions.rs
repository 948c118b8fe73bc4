//! Regression tests for what fuzzing found (see FUZZING.md): every input under
//! fixtures/fuzz/<target>/ is replayed through the same code as the cargo-fuzz target of that
//! name (fuzz/fuzz_targets/<target>.rs) and must finish quickly without a panic; the specific
//! findings also assert the error they now give.
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use imgcheck::fs::Volume;
use imgcheck::image::raw::RawImage;
use imgcheck::image::resolve::Resolver;
use imgcheck::image::storage::MemStorage;
use imgcheck::image::{open_storage, BlockDevice, OpenContext, OpenOptions};
use imgcheck::windows::analysis;
use imgcheck::windows::bcd::bcd_boot;
use imgcheck::windows::hive::Hive;

fn open(name: &str, data: &[u8]) -> imgcheck::Result<Arc<dyn BlockDevice>> {
    let ctx = OpenContext::new(OpenOptions::default(), Resolver::none());
    open_storage(Arc::new(MemStorage::new(name, data.to_vec())), &ctx)
}

/// The body of the container targets (qcow2, vhd, vmdk_sparse, vmdk_descriptor).
fn container(data: &[u8]) {
    if let Ok(dev) = open("fuzz.img", data) {
        exercise(dev.as_ref());
    }
}

/// What the container and NBD client targets do with an opened device (fuzz/common.rs).
fn exercise(dev: &dyn BlockDevice) {
    let size = dev.size();
    let _ = dev.warnings();
    let mut buf = vec![0u8; 65536];
    for off in [
        0,
        size / 2,
        size.saturating_sub(4096),
        size.saturating_sub(1),
    ] {
        let len = (size - off.min(size)).min(buf.len() as u64) as usize;
        let _ = dev.read_at(&mut buf[..len], off);
    }
    let _ = dev.read_at(&mut buf[..512], size);
    let _ = dev.map(0, size.min(1 << 30));
    let _ = dev.map(size / 3, 1 << 20);
}

fn raw_dev(data: &[u8]) -> Arc<dyn BlockDevice> {
    Arc::new(RawImage::new(Arc::new(MemStorage::new(
        "fuzz.raw",
        data.to_vec(),
    ))))
}

fn mbr_gpt(data: &[u8]) {
    let dev = raw_dev(data);
    // The table, then every partition probed and opened, as verify does.
    let _ = imgcheck::guest::Disk::new(dev).scan();
}

fn ntfs(data: &[u8]) {
    let dev = raw_dev(data);
    let Ok(vol) = Volume::open(&dev, 0, data.len() as u64) else {
        return;
    };
    let _ = vol.list("/");
    let _ = vol.list_opts("/", true);
    let _ = vol.list("Windows/System32");
    let _ = vol.stat("Windows/System32/config/SYSTEM");
    let _ = vol.read_capped("Windows/System32/config/SYSTEM", 1 << 20);
    let _ = vol.read_head("Boot/BCD", 4096);
    let _ = vol.hibernation();
}

fn hive(data: &[u8]) {
    let Ok(h) = Hive::open("fuzz-hive", data, &[]) else {
        return;
    };
    let _ = h.subkeys(&h.root());
    let _ = analysis::os_identity(&h, &h);
    let _ = analysis::virtio_storage(&h, &h, &|_p: &str| true);
    let _ = analysis::cloudbase_init(&h, &h);
    let _ = analysis::conflicts(&h, &h);
    let _ = analysis::extra_warnings(&h, &h);
}

fn bcd(data: &[u8]) {
    if let Ok(h) = Hive::open("fuzz-BCD", data, &[]) {
        let _ = bcd_boot(&h);
    }
}

#[path = "../fuzz/fuzz_targets/nbd_fake_server.rs"]
mod nbd_fake_server;

/// The body of the nbd_client target: a thread plays an NBD server that sends `data` on every
/// connection; the client connects, detects the format and reads and maps it.
fn nbd_client(data: &[u8]) {
    let dir = tempfile::tempdir().unwrap();
    nbd_fake_server::with_fake_server(data, dir.path(), |text| {
        let Ok(parsed) = imgcheck::nbd::uri::parse(text) else {
            return;
        };
        if let Ok(st) = imgcheck::nbd::client::NbdStorage::connect_with_timeout(
            text,
            &parsed,
            Duration::from_secs(2),
        ) {
            let ctx = OpenContext::new(OpenOptions::default(), Resolver::none());
            if let Ok(dev) = open_storage(Arc::new(st), &ctx) {
                exercise(dev.as_ref());
            }
        }
    });
}

fn corpus(target: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/fuzz")
        .join(target);
    let mut v: Vec<PathBuf> = match std::fs::read_dir(&dir) {
        Ok(rd) => rd.map(|e| e.unwrap().path()).collect(),
        Err(_) => Vec::new(),
    };
    v.sort();
    v
}

#[test]
fn replay_every_saved_fuzz_input() {
    type Body = fn(&[u8]);
    let targets: [(&str, Body); 9] = [
        ("qcow2", container),
        ("vhd", container),
        ("vmdk_sparse", container),
        ("vmdk_descriptor", container),
        ("mbr_gpt", mbr_gpt),
        ("ntfs", ntfs),
        ("hive", hive),
        ("bcd", bcd),
        ("nbd_client", nbd_client),
    ];
    // imgcheck turns a dependency's panic into an error with catch_unwind (last line of
    // defence), so a panic would not fail this test by itself: count them with a hook.
    static PANICS: AtomicUsize = AtomicUsize::new(0);
    let prev = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        PANICS.fetch_add(1, Ordering::SeqCst);
        prev(info);
    }));
    for (t, f) in targets {
        for p in corpus(t) {
            let data = std::fs::read(&p).unwrap();
            let start = Instant::now();
            let before = PANICS.load(Ordering::SeqCst);
            f(&data);
            assert_eq!(
                PANICS.load(Ordering::SeqCst),
                before,
                "{}: a panic (caught or not)",
                p.display()
            );
            assert!(
                start.elapsed() < Duration::from_secs(5),
                "{}: took {:?}",
                p.display(),
                start.elapsed()
            );
        }
    }
}

/// A qcow2 image whose only L1 entry points its L2 table back at the L1 table: refused with a
/// message, instead of reading L1 entries as data cluster pointers (found building the hostile
/// table; see tests/hostile.rs).
#[test]
fn qcow2_l2_table_overlapping_the_l1_table_is_refused() {
    // Header v2, 512-byte clusters (an L2 table of 64 entries covers 32 KiB), 1 MiB virtual
    // size: 32 L1 entries at cluster 1, the first pointing its L2 table at cluster 1 itself.
    let cs = 512usize;
    let mut b = vec![0u8; cs * 4];
    b[..4].copy_from_slice(b"QFI\xfb");
    b[4..8].copy_from_slice(&2u32.to_be_bytes());
    b[20..24].copy_from_slice(&9u32.to_be_bytes());
    b[24..32].copy_from_slice(&(1u64 << 20).to_be_bytes());
    b[36..40].copy_from_slice(&32u32.to_be_bytes());
    b[40..48].copy_from_slice(&(cs as u64).to_be_bytes());
    b[48..56].copy_from_slice(&(2 * cs as u64).to_be_bytes()); // refcount table
    b[56..60].copy_from_slice(&1u32.to_be_bytes());
    b[cs..cs + 8].copy_from_slice(&(0x8000_0000_0000_0000u64 | cs as u64).to_be_bytes());
    let dev = open("loop.qcow2", &b).expect("the header itself is valid");
    let mut buf = vec![0u8; 4096];
    let e = dev.read_at(&mut buf, 0).unwrap_err().to_string();
    assert!(
        e.starts_with("loop.qcow2") && e.contains("overlaps the L1 table"),
        "{e}"
    );
    let e = dev.map(0, 1 << 20).unwrap_err().to_string();
    assert!(e.contains("overlaps the L1 table"), "{e}");
}

/// Found by the ntfs target: a 453-byte "volume" with an NTFS boot sector signature; the ntfs
/// crate hit `unreachable!` on the short boot sector read.
#[test]
fn ntfs_volume_shorter_than_a_boot_sector_is_an_error() {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/fuzz/ntfs/short-volume-binrw-unreachable");
    let data = std::fs::read(p).unwrap();
    let dev = raw_dev(&data);
    let e = Volume::open(&dev, 0, data.len() as u64)
        .map(|_| ())
        .expect_err("must fail")
        .to_string();
    assert!(e.contains("shorter than its 512-byte boot sector"), "{e}");
}

/// Found by the bcd target: an lf subkey list entry of 0xfffff... made notatin add 4096 to it in
/// a u32 (overflow panic with overflow checks on).
#[test]
fn hive_subkey_offset_overflow_is_an_error() {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/fuzz/bcd/lf-offset-overflow");
    let data = std::fs::read(p).unwrap();
    let h = Hive::open("lf-overflow", &data, &[]).expect("the header is valid");
    let e = bcd_boot(&h).map(|_| ()).expect_err("must fail").to_string();
    assert!(
        e.starts_with("lf-overflow") && e.contains("beyond any hive"),
        "{e}"
    );
}
