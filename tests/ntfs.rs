//! Offline NTFS against ntfs-3g as the oracle: volumes made with mkntfs, files copied in with
//! ntfscp, directories made with a small libntfs-3g program; `imgcheck ls` must list what
//! `ntfsls` lists and `imgcheck cat` must return what `ntfscat` returns. Damaged volumes are made
//! by patching bytes, and must give specific errors (never a panic or a hang).

mod common;

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, OnceLock};

use imgcheck::disk;
use imgcheck::fs::{self, FsKind, Volume};
use imgcheck::image::{self, BlockDevice, OpenOptions};
use imgcheck::Error;

const SECTOR: u64 = 512;
/// Partition start used by most tests: 1 MiB, as Windows aligns partitions.
const START_LBA: u64 = 2048;

fn need_tools() -> bool {
    for t in ["sfdisk", "mkntfs", "ntfscp", "ntfsls", "ntfscat", "gcc"] {
        if !common::have(t) {
            eprintln!(
                "SKIP: {t} is not installed (apt-get install -y ntfs-3g ntfs-3g-dev fdisk gcc)"
            );
            return false;
        }
    }
    if !Path::new("/usr/include/ntfs-3g/volume.h").exists() {
        eprintln!("SKIP: ntfs-3g-dev is not installed");
        return false;
    }
    true
}

/// A libntfs-3g program for what the ntfs-3g tools cannot do offline: make directories, make
/// many empty files at once, set a reparse point, write an NTFS-compressed file, set the dirty
/// flag.
const HELPER_C: &str = r#"
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/stat.h>
#include <time.h>
#include <ntfs-3g/types.h>
#include <ntfs-3g/volume.h>
#include <ntfs-3g/dir.h>
#include <ntfs-3g/inode.h>
#include <ntfs-3g/unistr.h>
#include <ntfs-3g/reparse.h>
#include <ntfs-3g/attrib.h>

static int create(ntfs_volume *vol, const char *parent, const char *name, mode_t type) {
    ntfs_inode *dir = ntfs_pathname_to_inode(vol, NULL, parent);
    if (!dir) { perror(parent); return 1; }
    ntfschar *u = NULL;
    int len = ntfs_mbstoucs(name, &u);
    if (len < 0) { perror(name); ntfs_inode_close(dir); return 1; }
    ntfs_inode *ni = ntfs_create(dir, const_cpu_to_le32(0), u, len, type);
    free(u);
    if (!ni) { perror(name); ntfs_inode_close(dir); return 1; }
    ntfs_inode_close(ni);
    ntfs_inode_close(dir);
    return 0;
}

int main(int argc, char **argv) {
    if (argc < 3) { fprintf(stderr, "usage: helper IMG mkdir PARENT NAME | mkfiles DIR N PREFIX | dirty\n"); return 2; }
    ntfs_volume *vol = ntfs_mount(argv[1], 0);
    if (!vol) { perror("ntfs_mount"); return 1; }
    int rc = 0;
    if (!strcmp(argv[2], "mkdir") && argc == 5) {
        rc = create(vol, argv[3], argv[4], S_IFDIR);
    } else if (!strcmp(argv[2], "mkfiles") && argc == 6) {
        int n = atoi(argv[4]);
        char name[512];
        for (int i = 0; i < n && !rc; i++) {
            snprintf(name, sizeof name, "%s %04d.txt", argv[5], i);
            rc = create(vol, argv[3], name, S_IFREG);
        }
    } else if (!strcmp(argv[2], "reparse") && argc == 5) {
        /* A reparse point with tag argv[4] and 16 bytes of data (WOF's layout for 0x80000017:
           external version 1, provider 2 (file), file version 1, algorithm 1 (LZX)). */
        ntfs_inode *ni = ntfs_pathname_to_inode(vol, NULL, argv[3]);
        if (!ni) { perror(argv[3]); rc = 1; }
        else {
            unsigned char rp[8 + 16] = {0};
            uint32_t tag = (uint32_t)strtoul(argv[4], NULL, 16);
            memcpy(rp, &tag, 4);
            rp[4] = 16;
            rp[8] = 1; rp[12] = 2; rp[16] = 1; rp[20] = 1;
            if (ntfs_set_ntfs_reparse_data(ni, (const char *)rp, sizeof rp, 0)) { perror("reparse"); rc = 1; }
            ntfs_inode_close(ni);
        }
    } else if (!strcmp(argv[2], "compressed") && argc == 6) {
        /* A compressed file: NAME in directory DIR (marked compressed), data from host file SRC. */
        NVolSetCompression(vol);
        ntfs_inode *dir = ntfs_pathname_to_inode(vol, NULL, argv[3]);
        FILE *in = fopen(argv[5], "rb");
        if (!dir || !in) { perror("compressed"); rc = 1; }
        else {
            dir->flags |= FILE_ATTR_COMPRESSED;
            ntfschar *u = NULL;
            int len = ntfs_mbstoucs(argv[4], &u);
            ntfs_inode *ni = ntfs_create(dir, const_cpu_to_le32(0), u, len, S_IFREG);
            free(u);
            ntfs_attr *na = ni ? ntfs_attr_open(ni, AT_DATA, AT_UNNAMED, 0) : NULL;
            if (!na) { perror("create"); rc = 1; }
            else {
                static char buf[1 << 16];
                s64 pos = 0; size_t n;
                while ((n = fread(buf, 1, sizeof buf, in)) > 0) {
                    if (ntfs_attr_pwrite(na, pos, n, buf) != (s64)n) { perror("write"); rc = 1; break; }
                    pos += n;
                }
                ntfs_attr_close(na);
            }
            if (ni) ntfs_inode_close(ni);
            ntfs_inode_close(dir);
            fclose(in);
        }
    } else if (!strcmp(argv[2], "writeat") && argc == 6) {
        /* Write host file SRC into existing file PATH at byte OFFSET (leaving a hole). */
        ntfs_inode *ni = ntfs_pathname_to_inode(vol, NULL, argv[3]);
        FILE *in = fopen(argv[5], "rb");
        ntfs_attr *na = ni ? ntfs_attr_open(ni, AT_DATA, AT_UNNAMED, 0) : NULL;
        if (!na || !in) { perror("writeat"); rc = 1; }
        else {
            static char buf[1 << 16];
            s64 pos = strtoll(argv[4], NULL, 10); size_t n;
            while ((n = fread(buf, 1, sizeof buf, in)) > 0) {
                if (ntfs_attr_pwrite(na, pos, n, buf) != (s64)n) { perror("write"); rc = 1; break; }
                pos += n;
            }
        }
        if (na) ntfs_attr_close(na);
        if (ni) ntfs_inode_close(ni);
        if (in) fclose(in);
    } else if (!strcmp(argv[2], "dirty") && argc == 3) {
        if (ntfs_volume_write_flags(vol, vol->flags | VOLUME_IS_DIRTY)) { perror("flags"); rc = 1; }
    } else { fprintf(stderr, "bad command\n"); rc = 2; }
    if (ntfs_umount(vol, FALSE)) { perror("umount"); rc = 1; }
    return rc;
}
"#;

/// The helper, compiled once (cached in the target's temp dir under a name that changes
/// with its source).
fn helper() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        HELPER_C.hash(&mut h);
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
        let bin = dir.join(format!("ntfs-helper-{:016x}", h.finish()));
        if bin.exists() {
            return bin;
        }
        let src = dir.join(format!("ntfs-helper-{}.c", std::process::id()));
        let tmp = dir.join(format!("ntfs-helper-{}.tmp", std::process::id()));
        std::fs::write(&src, HELPER_C).unwrap();
        common::run("gcc", &["-O1", "-o", s(&tmp), s(&src), "-lntfs-3g"]);
        std::fs::remove_file(&src).ok();
        std::fs::rename(&tmp, &bin).unwrap();
        bin
    })
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Make an NTFS file system of `sectors` sectors in its own file (mkntfs has no offset option).
fn mkntfs(path: &Path, sectors: u64, start_lba: u64, label: &str) {
    std::fs::File::create(path)
        .unwrap()
        .set_len(sectors * SECTOR)
        .unwrap();
    common::run(
        "mkntfs",
        &[
            "-Q",
            "-F",
            "-T",
            "-q",
            "-s",
            "512",
            "-c",
            "4096",
            "-p",
            &start_lba.to_string(),
            "-H",
            "255",
            "-S",
            "63",
            "-L",
            label,
            s(path),
        ],
    );
}

/// Copy `data` into the volume at `dst` with ntfscp.
fn put(part: &Path, dst: &str, data: &[u8]) {
    let tmp = part.with_extension("put.tmp");
    std::fs::write(&tmp, data).unwrap();
    common::run("ntfscp", &["-q", s(part), s(&tmp), dst]);
    std::fs::remove_file(&tmp).ok();
}

fn mkdir(part: &Path, parent: &str, name: &str) {
    common::run(s(helper()), &[s(part), "mkdir", parent, name]);
}

/// A disk of `size` bytes with an MBR made by sfdisk and each partition file written at its
/// offset (sparse: zero blocks are skipped). `parts`: (start LBA, type byte, bootable, file).
fn assemble(disk: &Path, size: u64, parts: &[(u64, u8, bool, &Path)]) {
    std::fs::File::create(disk).unwrap().set_len(size).unwrap();
    let mut script = String::from("label: dos\nlabel-id: 0x0badcafe\n");
    for (start, ty, boot, file) in parts {
        let sectors = std::fs::metadata(file).unwrap().len() / SECTOR;
        script.push_str(&format!(
            "start={start},size={sectors},type={ty:x}{}\n",
            if *boot { ",bootable" } else { "" }
        ));
    }
    let mut child = Command::new("sfdisk")
        .args(["-q", "--no-reread", "--no-tell-kernel", s(disk)])
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(script.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let d = std::fs::OpenOptions::new().write(true).open(disk).unwrap();
    for (start, _, _, file) in parts {
        let data = std::fs::read(file).unwrap();
        for (i, chunk) in data.chunks(64 * 1024).enumerate() {
            if chunk.iter().any(|&b| b != 0) {
                d.write_all_at(chunk, start * SECTOR + (i * 64 * 1024) as u64)
                    .unwrap();
            }
        }
    }
}

fn random(len: usize, seed: u64) -> Vec<u8> {
    let mut v = vec![0u8; len];
    common::Rng::new(seed).fill(&mut v);
    v
}

fn open_dev(p: &Path) -> Arc<dyn BlockDevice> {
    image::open(p, &OpenOptions::default()).unwrap()
}

fn open_vol(p: &Path) -> imgcheck::Result<Volume> {
    let dev = open_dev(p);
    let t = disk::analyze(&dev)?;
    Volume::open_partition(&dev, &t, 1)
}

const LONG_NAME: &str = "Ünïcødé long name — ✓ 文件 with spaces.txt";

/// The standard test volume, as its own file (`part`) and inside a disk (`disk`).
struct Fixture {
    _dir: tempfile::TempDir,
    part: PathBuf,
    disk: PathBuf,
    files: Vec<(String, Vec<u8>)>,
}

fn fixture() -> Fixture {
    let td = tempfile::tempdir().unwrap();
    let dir = td.path().to_path_buf();
    let part = dir.join("part.img");
    mkntfs(&part, 40 << 11, START_LBA, "TestWin");
    mkdir(&part, "/", "Windows");
    mkdir(&part, "/Windows", "System32");
    mkdir(&part, "/Windows/System32", "config");
    mkdir(&part, "/Windows/System32", "drivers");
    mkdir(&part, "/", "Program Files");
    mkdir(&part, "/", "Many");
    common::run(
        s(helper()),
        &[
            s(&part),
            "mkfiles",
            "/Many",
            "150",
            "a file with a fairly long name number",
        ],
    );
    let mut hive = random(256 * 1024, 1);
    hive[..4].copy_from_slice(b"regf");
    let files: Vec<(String, Vec<u8>)> = vec![
        ("small.txt".into(), b"hello, offline world\n".to_vec()),
        ("a.bin".into(), random(3000, 2)),
        ("big.bin".into(), random(1536 * 1024 + 123, 3)),
        (LONG_NAME.into(), random(70000, 4)),
        ("empty.txt".into(), Vec::new()),
        ("Windows/System32/config/SYSTEM".into(), hive),
        (
            "Windows/System32/drivers/viostor.sys".into(),
            random(9000, 5),
        ),
        (
            "Windows/System32/drivers/netkvm.sys".into(),
            random(12000, 6),
        ),
        ("Program Files/readme.txt".into(), b"x".repeat(5000)),
    ];
    for (p, d) in &files {
        put(&part, p, d);
    }
    let disk = dir.join("disk.raw");
    assemble(&disk, 48 << 20, &[(START_LBA, 0x07, true, &part)]);
    Fixture {
        _dir: td,
        part,
        disk,
        files,
    }
}

/// `ntfsls -F` of `path`, without the "./" and "../" it prints in subdirectories.
fn ntfsls(part: &Path, path: &str) -> Vec<String> {
    let out = common::run("ntfsls", &["-F", "-p", path, s(part)]);
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .filter(|l| *l != "./" && *l != "../")
        .map(str::to_string)
        .collect()
}

fn imgcheck_ls(args: &[&str]) -> Vec<String> {
    let o = common::imgcheck(args);
    assert!(
        o.status.success(),
        "imgcheck ls {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

fn imgcheck_cat(disk: &Path, path: &str) -> Vec<u8> {
    let o = common::imgcheck(&["cat", s(disk), path]);
    assert!(
        o.status.success(),
        "imgcheck cat {path}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    o.stdout
}

fn ntfscat(part: &Path, path: &str) -> Vec<u8> {
    common::run("ntfscat", &[s(part), path]).stdout
}

#[test]
fn ls_and_cat_agree_with_ntfs_3g() {
    if !need_tools() {
        return;
    }
    let f = fixture();
    let d = s(&f.disk);
    for path in [
        "/",
        "/Windows",
        "/Windows/System32",
        "/Windows/System32/config",
        "/Windows/System32/drivers",
        "/Program Files",
        "/Many",
    ] {
        let want = ntfsls(&f.part, path);
        assert!(!want.is_empty(), "ntfsls {path} listed nothing");
        let got = imgcheck_ls(&["ls", d, path]);
        if path == "/Many" {
            // A directory with index blocks: ntfsls prints in on-disk order (root entries,
            // then each index block by VCN), imgcheck in collation order (an in-order walk of
            // the B-tree). Same names; imgcheck's are sorted.
            let (mut g, mut w) = (got.clone(), want.clone());
            g.sort();
            w.sort();
            assert_eq!(g, w, "ls {path}");
            assert_ne!(got, want, "expected a multi-block index in {path}");
            let mut by_upcase = got.clone();
            by_upcase.sort_by_key(|n| n.to_uppercase());
            assert_eq!(got, by_upcase, "ls {path} is in NTFS collation order");
            assert_eq!(got.len(), 150);
        } else {
            assert_eq!(got, want, "ls {path}");
        }
    }
    for (p, data) in &f.files {
        let got = imgcheck_cat(&f.disk, p);
        let want = ntfscat(&f.part, p);
        assert_eq!(want.len(), data.len(), "ntfscat {p}");
        assert!(
            got == want,
            "cat {p}: {} bytes vs ntfscat's {}",
            got.len(),
            want.len()
        );
    }
    // ls -l sizes are the file sizes.
    let long = imgcheck_ls(&["ls", "-l", d, "/"]);
    let line = long.iter().find(|l| l.ends_with(" big.bin")).unwrap();
    assert_eq!(
        line.split_whitespace().next().unwrap(),
        (1536 * 1024 + 123).to_string()
    );
    // -s adds the metadata files.
    let sys = imgcheck_ls(&["ls", "-s", d, "/"]);
    assert!(sys.contains(&"$MFT".to_string()) && sys.contains(&"$Extend/".to_string()));
    // ls of a file prints its name.
    assert_eq!(
        imgcheck_ls(&["ls", d, "/windows/system32/config/system"]),
        ["SYSTEM"]
    );
}

#[test]
fn library_view_case_insensitive_paths_and_volume_info() {
    if !need_tools() {
        return;
    }
    let f = fixture();
    fn shareable<T: Send + Sync>(_: &T) {}
    let vol = open_vol(&f.disk).unwrap();
    shareable(&vol);
    let info = vol.info();
    assert_eq!(info.label.as_deref(), Some("TestWin"));
    assert_eq!(info.version, "3.1");
    assert_eq!(info.cluster_size, 4096);
    assert!(!info.dirty);
    let mut bs = [0u8; 8];
    std::fs::File::open(&f.part)
        .unwrap()
        .read_exact_at(&mut bs, 0x48)
        .unwrap();
    assert_eq!(info.serial, u64::from_le_bytes(bs));
    assert_eq!(vol.start(), START_LBA * SECTOR);

    let hive = &f
        .files
        .iter()
        .find(|(p, _)| p.ends_with("SYSTEM"))
        .unwrap()
        .1;
    for p in [
        "Windows/System32/config/SYSTEM",
        "\\WINDOWS\\system32\\Config\\system",
        "/windows//SYSTEM32/./drivers/../config/SyStEm",
    ] {
        assert_eq!(&vol.read(p).unwrap(), hive, "{p}");
    }
    assert!(vol.exists("windows\\system32\\CONFIG").unwrap());
    assert!(!vol.exists("Windows/System64").unwrap());
    assert!(!vol.exists("small.txt/child").unwrap());
    let st = vol.stat("WINDOWS/system32/config/system").unwrap();
    assert_eq!(st.name, "SYSTEM");
    assert_eq!(st.size, hive.len() as u64);
    assert!(!st.is_dir && !st.compressed && !st.encrypted && st.reparse_tag.is_none());
    assert!(vol.stat("/Windows").unwrap().is_dir);
    // Unicode names, any case.
    assert_eq!(
        vol.read(&LONG_NAME.to_uppercase()).unwrap().len(),
        70000,
        "upper-cased unicode name"
    );
    // Listing: names and sizes.
    let root = vol.list("/").unwrap();
    let big = root.iter().find(|e| e.name == "big.bin").unwrap();
    assert_eq!(big.size, 1536 * 1024 + 123);
    assert!(root.iter().any(|e| e.name == "Windows" && e.is_dir));
    // Errors: missing file, directory read, file over the cap.
    let e = vol.read("nope.txt").unwrap_err();
    assert!(fs::is_not_found(&e), "{e}");
    assert!(e.to_string().contains("\\nope.txt"), "{e}");
    assert!(vol
        .read("Windows")
        .unwrap_err()
        .to_string()
        .contains("is a directory"));
    let e = vol.read_capped("big.bin", 1 << 20).unwrap_err();
    assert!(matches!(e, Error::Refused { .. }), "{e}");
    // Ranges and heads.
    let big_data = &f.files.iter().find(|(p, _)| p == "big.bin").unwrap().1;
    assert_eq!(vol.read_head("big.bin", 10).unwrap(), big_data[..10]);
    let mut out = Vec::new();
    vol.read_range_to("big.bin", 1_000_000, 70_000, u64::MAX, &mut out)
        .unwrap();
    assert_eq!(out, big_data[1_000_000..1_070_000]);
    assert!(vol.hibernation().unwrap().is_none());
}

#[test]
fn default_partition_is_the_windows_one() {
    if !need_tools() {
        return;
    }
    let td = tempfile::tempdir().unwrap();
    let dir = td.path();
    // 'System Reserved' first (boot files only), C: second with \Windows.
    let sr = dir.join("sr.img");
    mkntfs(&sr, 8 << 11, START_LBA, "System Reserved");
    put(&sr, "bootmgr", b"bootmgr");
    let c = dir.join("c.img");
    let c_lba = START_LBA + (8 << 11);
    mkntfs(&c, 16 << 11, c_lba, "Windows");
    mkdir(&c, "/", "Windows");
    mkdir(&c, "/Windows", "System32");
    mkdir(&c, "/Windows/System32", "config");
    put(&c, "Windows/System32/config/SYSTEM", b"regf-system");
    let disk = dir.join("two.raw");
    assemble(
        &disk,
        32 << 20,
        &[(START_LBA, 0x07, true, &sr), (c_lba, 0x07, false, &c)],
    );
    let d = s(&disk);
    assert_eq!(imgcheck_ls(&["ls", d]), ntfsls(&c, "/"));
    assert_eq!(
        imgcheck_ls(&["ls", "--partition", "1", d]),
        ntfsls(&sr, "/")
    );
    assert_eq!(
        imgcheck_cat(&disk, "windows/system32/config/system"),
        b"regf-system"
    );

    let dev = open_dev(&disk);
    let ctx = imgcheck::guest::Disk::open(dev).unwrap();
    let win = ctx.windows().unwrap();
    assert_eq!(win.partition_index(), Some(2));
    assert_eq!(win.label(), Some("Windows"));
    let scan = ctx.scan();
    assert_eq!(scan.len(), 2);
    assert_eq!((scan[0].index, scan[0].windows), (1, false));
    assert_eq!((scan[1].index, scan[1].windows), (2, true));
    assert_eq!(scan[0].fs, Some(FsKind::Ntfs));
    assert_eq!(
        scan[0].volume.as_ref().unwrap().label.as_deref(),
        Some("System Reserved")
    );
    assert!(scan
        .iter()
        .all(|p| p.error.is_none() && p.hibernation.is_none()));

    // A bad partition number is an error naming the partitions.
    let o = common::imgcheck(&["ls", "--partition", "7", d]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("no partition 7"));

    // An image of one volume (no table): the whole disk is used.
    assert_eq!(imgcheck_ls(&["ls", s(&c)]), ntfsls(&c, "/"));
    assert_eq!(imgcheck_ls(&["ls", "-p", "0", s(&sr)]), ntfsls(&sr, "/"));
}

#[test]
fn gpt_and_logical_partitions() {
    if !need_tools() {
        return;
    }
    let td = tempfile::tempdir().unwrap();
    let dir = td.path();
    let v = dir.join("v.img");
    let lba = 10240u64;
    mkntfs(&v, 8 << 11, lba, "Data");
    put(&v, "data.txt", b"on a GPT disk");
    // GPT: an EFI system partition (left empty), then the NTFS basic-data partition.
    let g = dir.join("gpt.raw");
    std::fs::File::create(&g)
        .unwrap()
        .set_len(16 << 20)
        .unwrap();
    let script = format!(
        "label: gpt\nstart=2048,size=8192,type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B\n\
         start={lba},size={},type=EBD0A0A2-B9E5-4433-87C0-68B6B72699C7\n",
        8 << 11
    );
    let mut child = Command::new("sfdisk")
        .args(["-q", "--no-reread", "--no-tell-kernel", s(&g)])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(script.as_bytes())
        .unwrap();
    assert!(child.wait().unwrap().success());
    patch(&g, lba * SECTOR, &std::fs::read(&v).unwrap());
    assert_eq!(imgcheck_ls(&["ls", s(&g)]), ["data.txt"]);
    assert_eq!(imgcheck_cat(&g, "DATA.TXT"), b"on a GPT disk");
    let o = common::imgcheck(&["ls", "--partition", "1", s(&g)]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("all zeros"));

    // MBR: NTFS as logical partition 5 inside an extended partition.
    let m = dir.join("logical.raw");
    std::fs::File::create(&m)
        .unwrap()
        .set_len(16 << 20)
        .unwrap();
    let script = format!(
        "label: dos\nstart=2048,size={},type=5\nstart={lba},size={},type=7\n",
        (16 << 11) - 4096,
        8 << 11
    );
    let mut child = Command::new("sfdisk")
        .args(["-q", "--no-reread", "--no-tell-kernel", s(&m)])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(script.as_bytes())
        .unwrap();
    assert!(child.wait().unwrap().success());
    patch(&m, lba * SECTOR, &std::fs::read(&v).unwrap());
    assert_eq!(
        imgcheck_ls(&["ls", "--partition", "5", s(&m)]),
        ["data.txt"]
    );
    assert_eq!(imgcheck_ls(&["ls", s(&m)]), ["data.txt"]);
    let o = common::imgcheck(&["ls", "--partition", "1", s(&m)]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("extended-partition container"));
}

/// A disk whose only partition is `part`.
fn disk_with(dir: &Path, name: &str, part: &Path) -> PathBuf {
    let disk = dir.join(name);
    let size = START_LBA * SECTOR + std::fs::metadata(part).unwrap().len() + (1 << 20);
    assemble(&disk, size, &[(START_LBA, 0x07, true, part)]);
    disk
}

fn patch(p: &Path, off: u64, bytes: &[u8]) {
    let f = std::fs::OpenOptions::new().write(true).open(p).unwrap();
    f.write_all_at(bytes, off).unwrap();
}

/// `imgcheck ls` fails with exit status 2 and a message containing `want`.
fn ls_fails_with(disk: &Path, want: &str) {
    let o = common::imgcheck(&["ls", "--partition", "1", s(disk)]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains(want), "expected {want:?} in: {err}");
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn not_ntfs_partitions_are_named() {
    if !need_tools() {
        return;
    }
    let td = tempfile::tempdir().unwrap();
    let dir = td.path();
    let kind = |disk: &Path| {
        let dev = open_dev(disk);
        fs::probe(&dev, START_LBA * SECTOR, 16 << 20).unwrap()
    };

    // FAT32 (mkfs.fat), ext4.
    if common::have("mkfs.fat") {
        let p = dir.join("fat.img");
        std::fs::File::create(&p)
            .unwrap()
            .set_len(40 << 20)
            .unwrap();
        common::run("mkfs.fat", &["-F", "32", s(&p)]);
        let d = disk_with(dir, "fat.raw", &p);
        assert_eq!(
            kind(&d),
            FsKind::Fat {
                variant: "FAT32".into()
            }
        );
        let e = open_vol(&d).unwrap_err();
        assert!(matches!(e, Error::Unsupported { .. }), "{e}");
        ls_fails_with(&d, "not NTFS: the partition holds FAT32");
    }
    if common::have("mkfs.ext4") {
        let p = dir.join("ext.img");
        std::fs::File::create(&p).unwrap().set_len(8 << 20).unwrap();
        common::run("mkfs.ext4", &["-q", "-F", s(&p)]);
        let d = disk_with(dir, "ext.raw", &p);
        assert_eq!(kind(&d), FsKind::Ext);
        ls_fails_with(&d, "ext2/3/4");
    }
    // Zeros.
    let z = dir.join("zero.img");
    std::fs::File::create(&z).unwrap().set_len(8 << 20).unwrap();
    let d = disk_with(dir, "zero.raw", &z);
    assert_eq!(kind(&d), FsKind::Zeros { backup_ntfs: false });
    ls_fails_with(&d, "all zeros");

    // NTFS whose first sector was wiped: the backup boot sector is still there.
    let n = dir.join("wiped.img");
    mkntfs(&n, 16 << 11, START_LBA, "x");
    patch(&n, 0, &[0u8; 512]);
    let d = disk_with(dir, "wiped.raw", &n);
    assert_eq!(kind(&d), FsKind::Zeros { backup_ntfs: true });
    ls_fails_with(&d, "backup boot sector");

    // BitLocker: the "-FVE-FS-" OEM ID.
    let b = dir.join("bitlocker.img");
    mkntfs(&b, 16 << 11, START_LBA, "x");
    patch(&b, 3, b"-FVE-FS-");
    let d = disk_with(dir, "bitlocker.raw", &b);
    assert_eq!(kind(&d), FsKind::BitLocker);
    let e = open_vol(&d).unwrap_err();
    assert!(matches!(e, Error::Refused { .. }), "{e}");
    ls_fails_with(&d, "BitLocker");
    // Without --partition too: the only partition's own reason is given.
    let o = common::imgcheck(&["ls", s(&d)]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("BitLocker"));

    // A broken NTFS boot sector (OEM ID right, BPB wrong): each gives a specific message.
    for (off, bytes, want) in [
        (0x40u64, vec![0x7Fu8], "file record size"),
        (0x0D, vec![0], "sectors per cluster"),
        (0x0B, vec![0x00, 0x01], "NTFS boot sector is invalid"),
        (0x0B, vec![0x00, 0x00], "bytes per sector is 0"),
        (0x30, vec![0xFF; 8], "NTFS boot sector is invalid"),
    ] {
        let p = dir.join("broken.img");
        mkntfs(&p, 16 << 11, START_LBA, "x");
        patch(&p, off, &bytes);
        let d = disk_with(dir, "broken.raw", &p);
        let e = open_vol(&d).unwrap_err();
        assert!(matches!(e, Error::Corrupt { .. }), "{e}");
        assert!(e.to_string().contains(want), "{off:#x}: {e}");
        assert!(e.to_string().contains("partition 1"), "{e}");
        ls_fails_with(&d, want);
    }
}

#[test]
fn dirty_volume_is_reported() {
    if !need_tools() {
        return;
    }
    let td = tempfile::tempdir().unwrap();
    let p = td.path().join("dirty.img");
    mkntfs(&p, 16 << 11, START_LBA, "x");
    let clean = disk_with(td.path(), "clean.raw", &p);
    assert!(!open_vol(&clean).unwrap().is_dirty());
    common::run(s(helper()), &[s(&p), "dirty"]);
    // ntfs-3g agrees that the volume is now dirty.
    let info = Command::new("ntfsinfo")
        .args(["-f", "-m", s(&p)])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&info.stdout).contains("DIRTY"));
    let d = disk_with(td.path(), "dirty.raw", &p);
    let vol = open_vol(&d).unwrap();
    assert!(vol.is_dirty());
    assert_eq!(vol.info().flags & 1, 1);
    // A dirty volume still reads.
    assert!(vol.list("/").is_ok());
}

#[test]
fn hibernation_file_signatures() {
    if !need_tools() {
        return;
    }
    let td = tempfile::tempdir().unwrap();
    for (head, want) in [
        (&b"HIBR"[..], Some("HIBR")),
        (b"wake", Some("wake")),
        (b"RSTR", Some("RSTR")),
        (b"\0\0\0\0", None),
        (b"PAGE", None),
    ] {
        let p = td.path().join("h.img");
        mkntfs(&p, 16 << 11, START_LBA, "x");
        let mut data = head.to_vec();
        data.extend(random(64 * 1024, 9));
        put(&p, "hiberfil.sys", &data);
        let d = disk_with(td.path(), "h.raw", &p);
        let vol = open_vol(&d).unwrap();
        let h = vol.hibernation().unwrap();
        assert_eq!(h.as_ref().map(|h| h.signature.as_str()), want);
        if let Some(h) = h {
            assert_eq!(h.file_size, data.len() as u64);
        }
    }
    // No hiberfil.sys at all.
    let p = td.path().join("none.img");
    mkntfs(&p, 16 << 11, START_LBA, "x");
    let d = disk_with(td.path(), "none.raw", &p);
    assert_eq!(open_vol(&d).unwrap().hibernation().unwrap(), None);
}

/// Byte offset (in the partition) of MFT record `n` on a fresh volume (contiguous $MFT).
fn record_offset(part: &Path, n: u64) -> u64 {
    let mut bs = [0u8; 512];
    let f = std::fs::File::open(part).unwrap();
    f.read_exact_at(&mut bs, 0).unwrap();
    let cluster = u16::from_le_bytes([bs[11], bs[12]]) as u64 * bs[13] as u64;
    let lcn = u64::from_le_bytes(bs[0x30..0x38].try_into().unwrap());
    let off = lcn * cluster + n * 1024;
    let mut sig = [0u8; 4];
    f.read_exact_at(&mut sig, off).unwrap();
    assert_eq!(&sig, b"FILE", "record {n}");
    off
}

/// Partition offset of the header of the unnamed $DATA attribute in MFT record `n`.
fn data_attr_offset(part: &Path, n: u64) -> u64 {
    let off = record_offset(part, n);
    let mut rec = vec![0u8; 1024];
    std::fs::File::open(part)
        .unwrap()
        .read_exact_at(&mut rec, off)
        .unwrap();
    let mut a = u16::from_le_bytes([rec[0x14], rec[0x15]]) as usize;
    loop {
        let ty = u32::from_le_bytes(rec[a..a + 4].try_into().unwrap());
        assert_ne!(ty, 0xFFFF_FFFF, "no $DATA in record {n}");
        let len = u32::from_le_bytes(rec[a + 4..a + 8].try_into().unwrap()) as usize;
        if ty == 0x80 && rec[a + 9] == 0 {
            return off + a as u64;
        }
        a += len;
    }
}

fn record_of(disk: &Path, path: &str) -> u64 {
    open_vol(disk).unwrap().stat(path).unwrap().record
}

#[test]
fn corrupt_mft_record_fixup_is_a_clear_error() {
    if !need_tools() {
        return;
    }
    let f = fixture();
    let rec = record_of(&f.disk, "a.bin");
    let off = START_LBA * SECTOR + record_offset(&f.part, rec);
    // The last two bytes of the record's first sector must equal the update sequence number.
    patch(&f.disk, off + 510, &[0xDE, 0xAD]);
    let vol = open_vol(&f.disk).unwrap();
    let e = vol.read("a.bin").unwrap_err();
    assert!(matches!(e, Error::Corrupt { .. }), "{e}");
    let msg = e.to_string();
    assert!(msg.contains(&format!("MFT record {rec}")), "{msg}");
    assert!(msg.contains("\\a.bin"), "{msg}");
    assert!(msg.contains("Update Sequence"), "{msg}");
    assert!(msg.contains("chkdsk"), "{msg}");
    // The rest of the volume still reads, and ls lists the damaged file's name.
    assert!(vol.read("small.txt").is_ok());
    let o = common::imgcheck(&["cat", s(&f.disk), "a.bin"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("Update Sequence"));
    assert!(imgcheck_ls(&["ls", s(&f.disk)]).contains(&"a.bin".to_string()));

    // The root directory's record: the volume does not open, and says why.
    let root = START_LBA * SECTOR + record_offset(&f.part, 5);
    patch(&f.disk, root + 1022, &[0xBE, 0xEF]);
    let e = open_vol(&f.disk).unwrap_err();
    assert!(e.to_string().contains("MFT record 5"), "{e}");
    assert!(e.to_string().contains("Update Sequence"), "{e}");
}

#[test]
fn compressed_encrypted_and_valid_data_length() {
    if !need_tools() {
        return;
    }
    let f = fixture();
    let d = &f.disk;
    // Valid data length: shrink big.bin's initialized size; bytes past it read as zeros, as
    // ntfs-3g reads them too.
    let rec = record_of(d, "big.bin");
    let attr = data_attr_offset(&f.part, rec);
    for part_or_disk in [&f.part, d] {
        let base = if part_or_disk == d {
            START_LBA * SECTOR
        } else {
            0
        };
        patch(part_or_disk, base + attr + 0x38, &100_000u64.to_le_bytes());
    }
    let got = imgcheck_cat(d, "big.bin");
    let want = ntfscat(&f.part, "big.bin");
    assert_eq!(got.len(), 1536 * 1024 + 123);
    assert!(
        got == want,
        "imgcheck and ntfscat disagree past the valid data length"
    );
    assert!(got[100_000..].iter().all(|&b| b == 0));
    let orig = &f.files.iter().find(|(p, _)| p == "big.bin").unwrap().1;
    assert_eq!(got[..100_000], orig[..100_000]);

    // Compressed and encrypted flags on the $DATA attribute: refused, not misread.
    let rec = record_of(d, "a.bin");
    let attr = START_LBA * SECTOR + data_attr_offset(&f.part, rec);
    patch(d, attr + 0x0C, &0x0001u16.to_le_bytes());
    let vol = open_vol(d).unwrap();
    assert!(vol.stat("a.bin").unwrap().compressed);
    let e = vol.read("a.bin").unwrap_err();
    assert!(matches!(e, Error::Unsupported { .. }), "{e}");
    assert!(e.to_string().contains("NTFS-compressed"), "{e}");
    patch(d, attr + 0x0C, &0x4000u16.to_le_bytes());
    let e = open_vol(d).unwrap().read("a.bin").unwrap_err();
    assert!(matches!(e, Error::Refused { .. }), "{e}");
    assert!(e.to_string().contains("EFS-encrypted"), "{e}");
    let o = common::imgcheck(&["cat", s(d), "a.bin"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(o.stdout.is_empty());
}

#[test]
fn reparse_points_are_refused_not_misread() {
    if !need_tools() {
        return;
    }
    let td = tempfile::tempdir().unwrap();
    let p = td.path().join("rp.img");
    mkntfs(&p, 16 << 11, START_LBA, "x");
    put(&p, "wof.dll", &random(20000, 11));
    put(&p, "plain.dll", &random(20000, 12));
    common::run(s(helper()), &[s(&p), "reparse", "/wof.dll", "80000017"]);
    let d = disk_with(td.path(), "rp.raw", &p);
    let vol = open_vol(&d).unwrap();
    assert_eq!(vol.stat("wof.dll").unwrap().reparse_tag, Some(0x8000_0017));
    assert_eq!(vol.stat("plain.dll").unwrap().reparse_tag, None);
    let e = vol.read("WOF.DLL").unwrap_err();
    assert!(matches!(e, Error::Unsupported { .. }), "{e}");
    assert!(e.to_string().contains("WOF-compressed"), "{e}");
    assert!(e.to_string().contains("0x80000017"), "{e}");
    assert_eq!(vol.read("plain.dll").unwrap().len(), 20000);
    // Listed like any file.
    let names: Vec<String> = vol.list("/").unwrap().into_iter().map(|e| e.name).collect();
    assert_eq!(names, ["plain.dll", "wof.dll"]);
    assert_eq!(imgcheck_ls(&["ls", s(&d)]), ntfsls(&p, "/"));
}

#[test]
fn ntfs_compressed_file_is_refused() {
    if !need_tools() {
        return;
    }
    let td = tempfile::tempdir().unwrap();
    let p = td.path().join("c.img");
    mkntfs(&p, 16 << 11, START_LBA, "x");
    mkdir(&p, "/", "Comp");
    let text = b"a compressible line of text\n".repeat(8000);
    let src = td.path().join("src.txt");
    std::fs::write(&src, &text).unwrap();
    common::run(
        s(helper()),
        &[s(&p), "compressed", "/Comp", "z.txt", s(&src)],
    );
    // ntfs-3g decompresses it: the file really is compressed on disk.
    assert_eq!(ntfscat(&p, "/Comp/z.txt"), text);
    let d = disk_with(td.path(), "c.raw", &p);
    let vol = open_vol(&d).unwrap();
    let st = vol.stat("comp/Z.TXT").unwrap();
    assert!(st.compressed);
    assert_eq!(st.size, text.len() as u64);
    let e = vol.read("comp/z.txt").unwrap_err();
    assert!(matches!(e, Error::Unsupported { .. }), "{e}");
    assert!(e.to_string().contains("NTFS-compressed"), "{e}");
    let o = common::imgcheck(&["cat", s(&d), "/Comp/z.txt"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(o.stdout.is_empty());
    assert_eq!(imgcheck_ls(&["ls", s(&d), "Comp"]), ntfsls(&p, "/Comp"));
}

#[test]
fn sparse_file_reads_like_ntfscat() {
    if !need_tools() {
        return;
    }
    let td = tempfile::tempdir().unwrap();
    let p = td.path().join("sp.img");
    mkntfs(&p, 16 << 11, START_LBA, "x");
    put(&p, "sparse.bin", &random(5000, 13));
    let tail = td.path().join("tail.bin");
    std::fs::write(&tail, random(7000, 14)).unwrap();
    common::run(
        s(helper()),
        &[s(&p), "writeat", "/sparse.bin", "3000000", s(&tail)],
    );
    let want = ntfscat(&p, "sparse.bin");
    assert_eq!(want.len(), 3_007_000);
    let d = disk_with(td.path(), "sp.raw", &p);
    let vol = open_vol(&d).unwrap();
    let st = vol.stat("sparse.bin").unwrap();
    assert_eq!(st.size, 3_007_000);
    assert!(imgcheck_cat(&d, "sparse.bin") == want);
    // ntfs-3g made the gap a sparse run (the attribute is flagged sparse).
    assert!(st.sparse);
}

/// Give the $MFT's own record an $ATTRIBUTE_LIST and cut its base $DATA extent to the first
/// 16 clusters (64 records), as if the rest of the $MFT were described in extension records:
/// the layout of a heavily fragmented $MFT whose list has lost the entries of its other pieces.
fn fake_mft_attribute_list(part: &Path) {
    let off = record_offset(part, 0);
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(part)
        .unwrap();
    let mut rec = vec![0u8; 1024];
    f.read_exact_at(&mut rec, off).unwrap();
    let u16at = |r: &[u8], o: usize| u16::from_le_bytes([r[o], r[o + 1]]) as usize;
    let u32at = |r: &[u8], o: usize| u32::from_le_bytes(r[o..o + 4].try_into().unwrap()) as usize;
    // Undo the fixups.
    let usa = u16at(&rec, 4);
    for i in 1..u16at(&rec, 6) {
        let (a, b) = (rec[usa + 2 * i], rec[usa + 2 * i + 1]);
        rec[i * 512 - 2] = a;
        rec[i * 512 - 1] = b;
    }
    // Find $DATA and the end marker.
    let mut a = u16at(&rec, 0x14);
    let mut instance = 0;
    let end = loop {
        let ty = u32at(&rec, a);
        if ty == 0xFFFF_FFFF {
            break a;
        }
        instance = instance.max(u16at(&rec, a + 0x0E) + 1);
        if ty == 0x80 {
            let runs = a + u16at(&rec, a + 0x20);
            let header = rec[runs];
            let len_size = (header & 0x0F) as usize;
            let off_size = (header >> 4) as usize;
            let mut len = 0u64;
            for k in 0..len_size {
                len |= (rec[runs + 1 + k] as u64) << (8 * k);
            }
            assert!(len > 16, "the first $MFT run is only {len} clusters");
            rec[runs + 1..runs + 1 + len_size].fill(0);
            rec[runs + 1] = 16;
            rec[runs + 1 + len_size + off_size] = 0; // end of the mapping pairs
            rec[a + 0x18..a + 0x20].copy_from_slice(&15u64.to_le_bytes()); // highest VCN
        }
        a += u32at(&rec, a + 4);
    };
    // Append a resident $ATTRIBUTE_LIST naming the $DATA extent in this record.
    let mut attr = vec![0u8; 0x38];
    attr[0..4].copy_from_slice(&0x20u32.to_le_bytes());
    attr[4..8].copy_from_slice(&0x38u32.to_le_bytes());
    attr[0x0A..0x0C].copy_from_slice(&0x18u16.to_le_bytes());
    attr[0x0E..0x10].copy_from_slice(&(instance as u16).to_le_bytes());
    attr[0x10..0x14].copy_from_slice(&0x20u32.to_le_bytes());
    attr[0x14..0x16].copy_from_slice(&0x18u16.to_le_bytes());
    let e = &mut attr[0x18..];
    e[0..4].copy_from_slice(&0x80u32.to_le_bytes());
    e[4..6].copy_from_slice(&0x20u16.to_le_bytes());
    e[7] = 0x1A;
    e[0x10..0x18].copy_from_slice(&(1u64 << 48).to_le_bytes()); // record 0, sequence 1
    rec[end..end + 0x38].copy_from_slice(&attr);
    rec[end + 0x38..end + 0x3C].copy_from_slice(&0xFFFF_FFFFu32.to_le_bytes());
    let used = (end + 0x40) as u32;
    rec[0x18..0x1C].copy_from_slice(&used.to_le_bytes());
    // Redo the fixups.
    let usn = [rec[usa], rec[usa + 1]];
    for i in 1..u16at(&rec, 6) {
        rec[usa + 2 * i] = rec[i * 512 - 2];
        rec[usa + 2 * i + 1] = rec[i * 512 - 1];
        rec[i * 512 - 2] = usn[0];
        rec[i * 512 - 1] = usn[1];
    }
    f.write_all_at(&rec, off).unwrap();
}

#[test]
fn mft_whose_attribute_list_maps_no_piece_for_a_record_is_reported_not_misread() {
    if !need_tools() {
        return;
    }
    let td = tempfile::tempdir().unwrap();
    let p = td.path().join("al.img");
    mkntfs(&p, 16 << 11, START_LBA, "x");
    put(&p, "user.txt", b"a user file, MFT record 64 or later");
    let d = disk_with(td.path(), "before.raw", &p);
    let rec = record_of(&d, "user.txt");
    assert!(rec >= 64, "user.txt is record {rec}");
    fake_mft_attribute_list(&p);
    let d = disk_with(td.path(), "al.raw", &p);
    // The system files (records below 64) still read: the volume opens and lists.
    let vol = open_vol(&d).unwrap();
    assert_eq!(vol.list_names("/", false).unwrap()[0].name, "user.txt");
    // A real fragmented $MFT is read through its extension records (tests/ntfs_aged.rs); here
    // the list names no piece holding the record, so the read is a clear error, never data.
    let e = vol.read("user.txt").unwrap_err();
    assert!(matches!(e, Error::Corrupt { .. }), "{e}");
    let m = e.to_string();
    assert!(m.contains("Attribute List names no piece"), "{m}");
    assert!(m.contains(&format!("MFT record {rec}")), "{m}");
}

#[test]
fn damaged_metadata_never_panics_or_hangs() {
    if !need_tools() {
        return;
    }
    let f = fixture();
    let mft = START_LBA * SECTOR + record_offset(&f.part, 0);
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&f.disk)
        .unwrap();
    // The records the reads below depend on: $MFT, $Volume, root, $UpCase, and the test paths.
    let mut records = vec![0u64, 3, 5, 10];
    {
        let vol = open_vol(&f.disk).unwrap();
        for p in [
            "Windows",
            "Windows/System32",
            "Windows/System32/config",
            "Windows/System32/config/SYSTEM",
            "big.bin",
            "Many",
        ] {
            records.push(vol.stat(p).unwrap().record);
        }
    }
    let mut rng = common::Rng::new(42);
    let mut errors = Vec::new();
    const ROUNDS: usize = 60;
    for round in 0..ROUNDS {
        // Flip a few bytes in the header and first attributes (the first 256 bytes) of the
        // records the reads use.
        let mut saved = Vec::new();
        for _ in 0..(1 + round % 4) {
            let rec = records[(rng.next() % records.len() as u64) as usize];
            let pos = mft + rec * 1024 + rng.next() % 256;
            let mut b = [0u8; 1];
            file.read_exact_at(&mut b, pos).unwrap();
            saved.push((pos, b[0]));
            file.write_all_at(&[b[0] ^ ((rng.next() as u8) | 1)], pos)
                .unwrap();
        }
        let started = std::time::Instant::now();
        let r = (|| -> imgcheck::Result<()> {
            let vol = open_vol(&f.disk)?;
            for dir in ["/", "/Windows/System32/config", "/Many"] {
                vol.list(dir)?;
            }
            vol.read("Windows/System32/config/SYSTEM")?;
            vol.read("big.bin")?;
            vol.hibernation()?;
            Ok(())
        })();
        if let Err(e) = r {
            let m = e.to_string();
            assert!(m.contains("disk.raw"), "error does not name the image: {m}");
            assert!(
                !m.contains("NTFS reader failed"),
                "the ntfs crate panicked (caught): {m}"
            );
            errors.push(m);
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(20),
            "round {round} took {:?}",
            started.elapsed()
        );
        for (pos, b) in saved.into_iter().rev() {
            file.write_all_at(&[b], pos).unwrap();
        }
    }
    // Damage that matters must be found: some rounds fail, with messages that say where.
    assert!(
        !errors.is_empty(),
        "no damage was detected in {ROUNDS} rounds"
    );
    eprintln!("{} of {ROUNDS} damaged volumes gave errors:", errors.len());
    for m in &errors {
        eprintln!("  {m}");
    }
}
