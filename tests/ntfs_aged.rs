//! NTFS volumes shaped like aged Windows Server system disks, written by libntfs-3g (through
//! scripts/fixtures/ntfsput.c) and read back by imgcheck and by ntfs-3g's own tools:
//! fragmented files whose `$DATA` lives in extension records behind an `$ATTRIBUTE_LIST`,
//! directories whose index allocation is fragmented, an `$MFT` that itself needs an attribute
//! list, clusters from 512 bytes to 64 KiB (index blocks smaller than a cluster), many hard
//! links, and hostile attribute lists. Every file is compared with `ntfscat` and every directory
//! with `ntfsls`. These are the cases behind vendor/ntfs/PATCHES.md.

mod common;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

fn need_tools() -> bool {
    for t in ["mkntfs", "ntfsls", "ntfscat", "ntfsinfo", "gcc"] {
        if !common::have(t) {
            eprintln!("SKIP: {t} is not installed (apt-get install -y ntfs-3g ntfs-3g-dev gcc)");
            return false;
        }
    }
    if !Path::new("/usr/include/ntfs-3g/volume.h").exists() {
        eprintln!("SKIP: ntfs-3g-dev is not installed");
        return false;
    }
    true
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// scripts/fixtures/ntfsput.c, compiled once per source version.
fn ntfsput() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        use std::hash::{Hash, Hasher};
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/fixtures/ntfsput.c");
        let text = std::fs::read_to_string(&src).unwrap();
        let mut h = std::collections::hash_map::DefaultHasher::new();
        text.hash(&mut h);
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
        let bin = dir.join(format!("ntfsput-{:016x}", h.finish()));
        if !bin.exists() {
            let tmp = dir.join(format!("ntfsput-{}.tmp", std::process::id()));
            common::run(
                "gcc",
                &["-O1", "-Wall", "-o", s(&tmp), s(&src), "-lntfs-3g"],
            );
            std::fs::rename(&tmp, &bin).unwrap();
        }
        bin
    })
}

/// A fresh NTFS volume of `mib` MiB with `cluster`-byte clusters, filled by `manifest`
/// (ntfsput's manifest language; `{dir}` stands for the test's folder).
fn volume(dir: &Path, name: &str, mib: u64, cluster: u32, manifest: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::File::create(&p)
        .unwrap()
        .set_len(mib << 20)
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
            &cluster.to_string(),
            "-L",
            "aged",
            s(&p),
        ],
    );
    put(&p, &manifest.replace("{dir}", s(dir)));
    p
}

/// Runs ntfsput on `vol` with the manifest `text` (written next to it).
fn put(vol: &Path, text: &str) {
    let man = vol.with_extension("manifest");
    std::fs::write(&man, text).unwrap();
    let o = std::process::Command::new(ntfsput())
        .arg(vol)
        .stdin(std::fs::File::open(&man).unwrap())
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "ntfsput {}: {}",
        vol.display(),
        String::from_utf8_lossy(&o.stderr)
    );
}

/// The byte range of the good fixture disk's one NTFS partition.
const GOOD_PART: (usize, usize) = (1 << 20, 129_024 * 512);

/// `disk` with its partition replaced by the volume file `part`.
fn with_partition(disk: &[u8], part: &Path) -> Vec<u8> {
    let mut b = disk.to_vec();
    let (start, len) = GOOD_PART;
    b[start..start + len].copy_from_slice(&std::fs::read(part).unwrap());
    b
}

fn random(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// What `ntfsinfo -v` says of the file at `path` (`-F`) or record `n` (`-i`).
fn ntfsinfo(vol: &Path, what: &[&str]) -> String {
    let mut args = vec!["-v"];
    args.extend_from_slice(what);
    args.push(s(vol));
    String::from_utf8_lossy(&common::run("ntfsinfo", &args).stdout).into_owned()
}

fn assert_has_attribute_list(vol: &Path, what: &[&str]) {
    let info = ntfsinfo(vol, what);
    assert!(
        info.contains("$ATTRIBUTE_LIST"),
        "the fixture is not what the test needs: {what:?} has no attribute list:\n{info}"
    );
}

/// Names of directory `path` as `ntfsls -F` prints them (without ./ and ../), sorted.
fn ntfsls(vol: &Path, path: &str) -> Vec<String> {
    let out = common::run("ntfsls", &["-F", "-p", path, s(vol)]);
    let mut v: Vec<String> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .filter(|l| *l != "./" && *l != "../")
        .map(str::to_string)
        .collect();
    v.sort();
    v
}

/// `imgcheck ls` of `path`, sorted (imgcheck lists in collation order, ntfsls in block order).
fn imgcheck_ls(vol: &Path, path: &str) -> Vec<String> {
    let o = common::imgcheck(&["ls", s(vol), path]);
    assert!(
        o.status.success(),
        "imgcheck ls {path}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let mut v: Vec<String> = String::from_utf8(o.stdout)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    v.sort();
    v
}

/// `(size, name)` of every entry of `imgcheck ls -l`.
fn imgcheck_ls_long(vol: &Path, path: &str) -> Vec<(u64, String)> {
    let o = common::imgcheck(&["ls", "-l", s(vol), path]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let mut v: Vec<(u64, String)> = String::from_utf8(o.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            let l = l.trim_start();
            let (size, name) = l.split_once(' ').unwrap();
            (size.parse().unwrap(), name.trim_start().to_string())
        })
        .collect();
    v.sort_by(|a, b| a.1.cmp(&b.1));
    v
}

/// `(size, name)` of every entry of `ntfsls -l` (directories have no size there).
fn ntfsls_long(vol: &Path, path: &str) -> Vec<(u64, String)> {
    let out = common::run("ntfsls", &["-l", "-p", path, s(vol)]);
    let mut v: Vec<(u64, String)> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .filter_map(|l| {
            // "   SIZE Mon DD HH:MM YYYY NAME": skip five fields, the rest is the name.
            let mut rest = l;
            let mut f = Vec::new();
            for _ in 0..5 {
                rest = rest.trim_start();
                let end = rest.find(' ')?;
                f.push(&rest[..end]);
                rest = &rest[end..];
            }
            let name = rest.trim_start().to_string();
            (name != "." && name != "..").then(|| (f[0].parse().unwrap(), name))
        })
        .collect();
    v.sort_by(|a, b| a.1.cmp(&b.1));
    v
}

fn imgcheck_cat(vol: &Path, path: &str) -> std::process::Output {
    common::imgcheck(&["cat", s(vol), path])
}

/// Every file under `dirs` (one level) read by imgcheck equals ntfscat's bytes, and every
/// directory lists the same names.
fn assert_agrees_with_ntfs_3g(vol: &Path, dirs: &[&str]) {
    for dir in dirs {
        let want = ntfsls(vol, dir);
        assert!(!want.is_empty(), "ntfsls {dir} listed nothing");
        assert_eq!(imgcheck_ls(vol, dir), want, "ls {dir}");
        for name in want.iter().filter(|n| !n.ends_with('/')) {
            let path = format!("{}/{name}", dir.trim_end_matches('/'));
            let theirs = common::run("ntfscat", &[s(vol), &path]).stdout;
            let ours = imgcheck_cat(vol, &path);
            assert!(
                ours.status.success(),
                "imgcheck cat {path}: {}",
                String::from_utf8_lossy(&ours.stderr)
            );
            assert!(
                ours.stdout == theirs,
                "cat {path}: imgcheck read {} bytes, ntfscat {}",
                ours.stdout.len(),
                theirs.len()
            );
        }
    }
}

#[test]
fn fragmented_file_behind_an_attribute_list_reads_like_ntfscat() {
    if !need_tools() {
        return;
    }
    let td = tempfile::tempdir().unwrap();
    std::fs::write(td.path().join("big.bin"), random(6_000_000, 1)).unwrap();
    std::fs::write(td.path().join("small.bin"), random(70_000, 2)).unwrap();
    let vol = volume(
        td.path(),
        "frag.img",
        64,
        4096,
        "F\t/Windows/big.bin\t{dir}/big.bin\t/Windows/filler.bin\t4096\n\
         F\t/Windows/small.bin\t{dir}/small.bin\t/Windows/filler2.bin\t4096\n",
    );
    assert_has_attribute_list(&vol, &["-F", "/Windows/big.bin"]);
    assert_agrees_with_ntfs_3g(&vol, &["/", "/Windows"]);
    let long = imgcheck_ls_long(&vol, "/Windows");
    assert!(long.contains(&(6_000_000, "big.bin".into())), "{long:?}");
    assert_eq!(long, ntfsls_long(&vol, "/Windows"));
}

#[test]
fn fragmented_directory_indexes_list_like_ntfsls() {
    if !need_tools() {
        return;
    }
    let td = tempfile::tempdir().unwrap();
    // Two directories that grow in turns: both index allocations end up fragmented, System32's
    // in several extents behind an attribute list.
    let vol = volume(
        td.path(),
        "dirs.img",
        256,
        4096,
        "n\t/Windows/System32\t6000\t/Windows/WinSxS\n",
    );
    assert_has_attribute_list(&vol, &["-F", "/Windows/System32"]);
    for dir in ["/Windows/System32", "/Windows/WinSxS"] {
        let want = ntfsls(&vol, dir);
        assert_eq!(want.len(), 6000);
        assert_eq!(imgcheck_ls(&vol, dir), want, "ls {dir}");
    }
    // A lookup deep in the B-tree finds its file.
    let name = "/Windows/System32/amd64_microsoft-windows-component-005999_31bf3856ad364e35_6.3.9600.05999_none_";
    let o = common::imgcheck(&["ls", s(&vol), "/Windows/System32"]);
    let listing = String::from_utf8(o.stdout).unwrap();
    let last = listing.lines().find(|l| l.contains("005999")).unwrap();
    assert!(format!("/Windows/System32/{last}").starts_with(name));
    let o = imgcheck_cat(&vol, &format!("/Windows/System32/{last}"));
    assert!(o.status.success() && o.stdout.is_empty(), "{o:?}");
}

#[test]
fn mft_with_an_attribute_list_reads_every_record() {
    if !need_tools() {
        return;
    }
    let td = tempfile::tempdir().unwrap();
    let system = random(300_000, 3);
    std::fs::write(td.path().join("SYSTEM"), &system).unwrap();
    // The $MFT grows in turns with file data in the last free clusters until it needs an
    // attribute list; SYSTEM, written after, has a record past the base extent.
    let vol = volume(
        td.path(),
        "mft.img",
        256,
        4096,
        "mftfrag\t/F\t200\t38000\nx\t/F/ballast\n\
         f\t/Windows/System32/config/SYSTEM\t{dir}/SYSTEM\n",
    );
    assert_has_attribute_list(&vol, &["-i", "0"]);
    let o = imgcheck_cat(&vol, "/Windows/System32/config/SYSTEM");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(o.stdout == system, "SYSTEM read back wrong");
    assert_agrees_with_ntfs_3g(&vol, &["/Windows/System32/config"]);
    // All 47,000 names of /F agree with ntfsls.
    assert_eq!(imgcheck_ls(&vol, "/F"), ntfsls(&vol, "/F"));
}

#[test]
fn every_cluster_size_from_512_bytes_to_64_kib() {
    if !need_tools() {
        return;
    }
    let td = tempfile::tempdir().unwrap();
    std::fs::write(td.path().join("data.bin"), random(1_500_000, 4)).unwrap();
    for cluster in [512u32, 1024, 2048, 4096, 8192, 16384, 32768, 65536] {
        let chunk = cluster.max(4096);
        let vol = volume(
            td.path(),
            &format!("c{cluster}.img"),
            128,
            cluster,
            &format!(
                "n\t/Dir\t700\t/Other\n\
                 F\t/Dir2/data.bin\t{{dir}}/data.bin\t/Dir2/filler.bin\t{chunk}\n"
            ),
        );
        for dir in ["/Dir", "/Other"] {
            assert_eq!(
                imgcheck_ls(&vol, dir),
                ntfsls(&vol, dir),
                "ls {dir} with {cluster}-byte clusters"
            );
        }
        assert_agrees_with_ntfs_3g(&vol, &["/Dir2"]);
    }
}

#[test]
fn many_hard_links_to_a_fragmented_file() {
    if !need_tools() {
        return;
    }
    let td = tempfile::tempdir().unwrap();
    std::fs::write(td.path().join("big.bin"), random(2_000_000, 5)).unwrap();
    let mut man = String::from("F\t/Links/target.bin\t{dir}/big.bin\t/filler.bin\t4096\n");
    for i in 0..400 {
        man.push_str(&format!("l\t/Links/target.bin\t/Links/link{i:03}.bin\n"));
    }
    let vol = volume(td.path(), "links.img", 64, 4096, &man);
    assert_has_attribute_list(&vol, &["-F", "/Links/target.bin"]);
    let ours = imgcheck_ls_long(&vol, "/Links");
    assert_eq!(ours.len(), 401);
    assert!(ours.iter().all(|(size, _)| *size == 2_000_000), "{ours:?}");
    assert_eq!(ours, ntfsls_long(&vol, "/Links"));
    let o = imgcheck_cat(&vol, "/Links/link399.bin");
    assert!(o.stdout == std::fs::read(td.path().join("big.bin")).unwrap());
}

/// Edit MFT record `n` of a freshly made volume (its `$MFT` starts contiguous at the boot
/// sector's MFT cluster), undoing and redoing the update-sequence fixups around `f`.
fn edit_record(vol: &Path, n: u64, f: impl FnOnce(&mut [u8])) {
    use std::os::unix::fs::FileExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(vol)
        .unwrap();
    let mut bs = [0u8; 512];
    file.read_exact_at(&mut bs, 0).unwrap();
    let cluster = u64::from(u16::from_le_bytes([bs[11], bs[12]])) * u64::from(bs[13]);
    let mft = u64::from_le_bytes(bs[0x30..0x38].try_into().unwrap()) * cluster;
    let off = mft + n * 1024;
    let mut rec = vec![0u8; 1024];
    file.read_exact_at(&mut rec, off).unwrap();
    assert_eq!(&rec[..4], b"FILE");
    let u16at = |r: &[u8], o: usize| usize::from(u16::from_le_bytes([r[o], r[o + 1]]));
    let (usa, count) = (u16at(&rec, 4), u16at(&rec, 6));
    for i in 1..count {
        rec[i * 512 - 2] = rec[usa + 2 * i];
        rec[i * 512 - 1] = rec[usa + 2 * i + 1];
    }
    f(&mut rec);
    for i in 1..count {
        rec[usa + 2 * i] = rec[i * 512 - 2];
        rec[usa + 2 * i + 1] = rec[i * 512 - 1];
        rec[i * 512 - 2] = rec[usa];
        rec[i * 512 - 1] = rec[usa + 1];
    }
    file.write_all_at(&rec, off).unwrap();
}

/// Offset of the first attribute of type `ty` in a record.
fn attribute(rec: &[u8], ty: u32) -> usize {
    let mut a = usize::from(u16::from_le_bytes([rec[0x14], rec[0x15]]));
    loop {
        let t = u32::from_le_bytes(rec[a..a + 4].try_into().unwrap());
        assert_ne!(t, 0xFFFF_FFFF, "no attribute {ty:#x}");
        if t == ty {
            return a;
        }
        a += u32::from_le_bytes(rec[a + 4..a + 8].try_into().unwrap()) as usize;
    }
}

/// Edit the `$ATTRIBUTE_LIST` value of record `n` (resident, or non-resident in one run) with
/// `f`, which gets the list's bytes and may shorten them.
fn edit_attribute_list(vol: &Path, n: u64, f: impl FnOnce(&mut Vec<u8>)) {
    use std::os::unix::fs::FileExt;
    let mut f = Some(f);
    let mut outside: Option<(u64, u64)> = None; // (byte offset, length) of a non-resident list
    edit_record(vol, n, |rec| {
        let a = attribute(rec, 0x20);
        let u32at = |r: &[u8], o: usize| u32::from_le_bytes(r[o..o + 4].try_into().unwrap());
        if rec[a + 8] == 0 {
            let voff = a + usize::from(u16::from_le_bytes([rec[a + 0x14], rec[a + 0x15]]));
            let vlen = u32at(rec, a + 0x10) as usize;
            let mut list = rec[voff..voff + vlen].to_vec();
            (f.take().unwrap())(&mut list);
            rec[voff..voff + list.len()].copy_from_slice(&list);
            rec[a + 0x10..a + 0x14].copy_from_slice(&(list.len() as u32).to_le_bytes());
        } else {
            let size = u64::from_le_bytes(rec[a + 0x30..a + 0x38].try_into().unwrap());
            let runs = a + usize::from(u16::from_le_bytes([rec[a + 0x20], rec[a + 0x21]]));
            let (len_size, off_size) = (usize::from(rec[runs] & 15), usize::from(rec[runs] >> 4));
            let mut lcn = 0u64;
            for k in 0..off_size {
                lcn |= u64::from(rec[runs + 1 + len_size + k]) << (8 * k);
            }
            outside = Some((lcn, size));
        }
    });
    if let Some((lcn, size)) = outside {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(vol)
            .unwrap();
        let mut bs = [0u8; 512];
        file.read_exact_at(&mut bs, 0).unwrap();
        let cluster = u64::from(u16::from_le_bytes([bs[11], bs[12]])) * u64::from(bs[13]);
        let mut list = vec![0u8; size as usize];
        file.read_exact_at(&mut list, lcn * cluster).unwrap();
        (f.take().unwrap())(&mut list);
        file.write_all_at(&list, lcn * cluster).unwrap();
        let new_len = list.len() as u64;
        if new_len != size {
            edit_record(vol, n, |rec| {
                let a = attribute(rec, 0x20);
                rec[a + 0x30..a + 0x38].copy_from_slice(&new_len.to_le_bytes());
                rec[a + 0x38..a + 0x40].copy_from_slice(&new_len.to_le_bytes());
            });
        }
    }
}

fn record_number(vol: &Path, path: &str) -> u64 {
    let info = ntfsinfo(vol, &["-F", path]);
    let line = info
        .lines()
        .find(|l| l.starts_with("Dumping Inode"))
        .unwrap();
    line.split_whitespace().nth(2).unwrap().parse().unwrap()
}

/// Hostile attribute lists: every read is a clear error naming the file, never data, a hang or
/// a panic (the crate used to panic on both: PATCHES.md §4).
#[test]
fn hostile_attribute_lists_are_errors_not_panics() {
    if !need_tools() {
        return;
    }
    let td = tempfile::tempdir().unwrap();
    std::fs::write(td.path().join("big.bin"), random(3_000_000, 6)).unwrap();
    let good = volume(
        td.path(),
        "good.img",
        64,
        4096,
        "F\t/big.bin\t{dir}/big.bin\t/filler.bin\t4096\n",
    );
    let n = record_number(&good, "/big.bin");
    let seq = {
        let info = ntfsinfo(&good, &["-F", "/big.bin"]);
        let line = info
            .lines()
            .find(|l| l.starts_with("MFT Record Seq. Numb."))
            .unwrap();
        line.split_whitespace()
            .nth(4)
            .unwrap()
            .parse::<u64>()
            .unwrap()
    };
    let pieces = |list: &[u8]| {
        let mut at = Vec::new();
        let mut e = 0;
        while e + 0x1A <= list.len() {
            if u64::from_le_bytes(list[e + 8..e + 16].try_into().unwrap()) != 0 {
                at.push(e);
            }
            e += usize::from(u16::from_le_bytes([list[e + 4], list[e + 5]])).max(1);
        }
        at
    };
    type Edit = Box<dyn Fn(&mut Vec<u8>)>;
    let edits: Vec<(&str, Edit)> = vec![
        // Every later piece's entry names the base record itself.
        (
            "self-referencing",
            Box::new(move |list| {
                for e in pieces(list) {
                    list[e + 0x10..e + 0x18].copy_from_slice(&(n | seq << 48).to_le_bytes());
                }
            }),
        ),
        // The list ends in the middle of its last entry.
        ("cut short", Box::new(|list| list.truncate(list.len() - 12))),
        // A later piece's lowest VCN moved: the pieces no longer follow each other.
        (
            "pieces out of order",
            Box::new(move |list| {
                let e = pieces(list)[0];
                let vcn = u64::from_le_bytes(list[e + 8..e + 16].try_into().unwrap());
                list[e + 8..e + 16].copy_from_slice(&(vcn + 1).to_le_bytes());
            }),
        ),
    ];
    for (what, edit) in edits {
        let bad = td.path().join(format!("{}.img", what.replace(' ', "-")));
        std::fs::copy(&good, &bad).unwrap();
        edit_attribute_list(&bad, n, |list| edit(list));
        let o = imgcheck_cat(&bad, "/big.bin");
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{what}: {err}");
        assert!(o.stdout.is_empty(), "{what}: data was written");
        assert!(err.contains("big.bin"), "{what}: {err}");
        assert!(!err.contains("panicked"), "{what}: {err}");
    }
}

/// `Volume::data_extents` (used by offline repair to rewrite a hive in place) names the disk
/// ranges that hold a fragmented file: reading those ranges straight from the volume image gives
/// the file's bytes exactly, and files whose data is not in clusters are refused.
#[test]
fn data_extents_of_a_fragmented_file_hold_its_bytes() {
    if !need_tools() {
        return;
    }
    use std::io::{Read, Seek, SeekFrom};
    let td = tempfile::tempdir().unwrap();
    let data = random(3_000_000, 7);
    std::fs::write(td.path().join("big.bin"), &data).unwrap();
    std::fs::write(td.path().join("tiny.txt"), b"resident").unwrap();
    let vol = volume(
        td.path(),
        "ext.img",
        32,
        4096,
        "F\t/Windows/big.bin\t{dir}/big.bin\t/Windows/filler.bin\t4096\n\
         f\t/tiny.txt\t{dir}/tiny.txt\n",
    );
    let dev = imgcheck::image::open(&vol, &Default::default()).unwrap();
    let len = dev.size();
    let v = imgcheck::fs::Volume::open(&dev, 0, len).unwrap();
    let ext = v.data_extents("/Windows/big.bin").unwrap();
    assert_eq!(ext.size, data.len() as u64);
    assert!(
        ext.extents.len() > 50,
        "not fragmented: {} extents",
        ext.extents.len()
    );
    let mut f = std::fs::File::open(&vol).unwrap();
    let mut got = Vec::new();
    for &(off, l) in &ext.extents {
        let mut b = vec![0u8; l as usize];
        f.seek(SeekFrom::Start(off)).unwrap();
        f.read_exact(&mut b).unwrap();
        got.extend_from_slice(&b);
    }
    assert!(got == data, "the extents do not hold the file's bytes");
    let err = v.data_extents("/tiny.txt").unwrap_err().to_string();
    assert!(err.contains("inside its MFT record"), "{err}");
    let err = v.data_extents("/Windows").unwrap_err().to_string();
    assert!(err.contains("is a directory"), "{err}");
}

/// Two names that differ only in case (POSIX namespace, as libntfs-3g and WSL create them) each
/// open their own file, as ntfscat does; a name in another case still opens the file.
#[test]
fn names_differing_only_in_case_open_their_own_file() {
    if !need_tools() {
        return;
    }
    let td = tempfile::tempdir().unwrap();
    std::fs::write(td.path().join("a"), b"upper case\n").unwrap();
    std::fs::write(td.path().join("b"), b"lower case\n").unwrap();
    let vol = volume(
        td.path(),
        "case.img",
        16,
        4096,
        "d\t/Windows\n\
         f\t/Windows/Foo.txt\t{dir}/a\n\
         f\t/Windows/foo.txt\t{dir}/b\n",
    );
    let names = ntfsls(&vol, "/Windows");
    assert!(
        names.contains(&"Foo.txt".to_string()) && names.contains(&"foo.txt".to_string()),
        "{names:?}"
    );
    for (name, want) in [("Foo.txt", "upper case\n"), ("foo.txt", "lower case\n")] {
        let o = imgcheck_cat(&vol, &format!("/Windows/{name}"));
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        assert_eq!(String::from_utf8_lossy(&o.stdout), want, "{name}");
        let nc = std::process::Command::new("ntfscat")
            .arg(&vol)
            .arg(format!("/Windows/{name}"))
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&nc.stdout), want, "ntfscat {name}");
    }
    let o = imgcheck_cat(&vol, "/WINDOWS/FOO.TXT");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

/// Alternate data streams read as `FILE:STREAM` (also `FILE:STREAM:$DATA`; `FILE::$DATA` is the
/// unnamed stream), like `ntfscat -a DATA -n STREAM`; a missing stream is "no such data stream".
#[test]
fn alternate_data_streams_read_like_ntfscat() {
    if !need_tools() {
        return;
    }
    let td = tempfile::tempdir().unwrap();
    std::fs::write(td.path().join("main"), b"main stream\n").unwrap();
    std::fs::write(td.path().join("zone"), b"[ZoneTransfer]\r\nZoneId=3\r\n").unwrap();
    std::fs::write(td.path().join("big"), random(300_000, 9)).unwrap();
    let vol = volume(
        td.path(),
        "ads.img",
        16,
        4096,
        "f\t/setup.exe\t{dir}/main\n\
         s\t/setup.exe\tZone.Identifier\t{dir}/zone\n\
         s\t/setup.exe\tbig\t{dir}/big\n",
    );
    for (spec, stream) in [
        ("/setup.exe:Zone.Identifier", "Zone.Identifier"),
        ("/setup.exe:zone.identifier:$DATA", "Zone.Identifier"),
        ("/setup.exe:big", "big"),
    ] {
        let want = std::process::Command::new("ntfscat")
            .args(["-a", "DATA", "-n", stream])
            .arg(&vol)
            .arg("/setup.exe")
            .output()
            .unwrap();
        assert!(want.status.success() && !want.stdout.is_empty());
        let o = imgcheck_cat(&vol, spec);
        assert!(
            o.status.success(),
            "{spec}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        assert!(o.stdout == want.stdout, "{spec}: differs from ntfscat");
    }
    let o = imgcheck_cat(&vol, "/setup.exe::$DATA");
    assert_eq!(String::from_utf8_lossy(&o.stdout), "main stream\n");
    let o = imgcheck_cat(&vol, "/setup.exe:nope");
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("no such data stream"));
}

/// A disk with 4 KiB logical sectors (4Kn): the MBR's LBAs count 4096-byte sectors and the
/// NTFS boot sector says 4096 bytes per sector. The disk is read as such: the partition lies at
/// LBA × 4096, and `ls`/`cat` agree with ntfsls/ntfscat on the partition.
#[test]
fn disk_with_4k_logical_sectors() {
    if !need_tools() {
        return;
    }
    let td = tempfile::tempdir().unwrap();
    std::fs::write(td.path().join("data"), random(200_000, 5)).unwrap();
    let part = td.path().join("part.img");
    std::fs::File::create(&part)
        .unwrap()
        .set_len(32 << 20)
        .unwrap();
    let start_lba: u64 = 256; // 1 MiB in 4 KiB sectors
    common::run(
        "mkntfs",
        &[
            "-Q",
            "-F",
            "-T",
            "-q",
            "-s",
            "4096",
            "-p",
            &start_lba.to_string(),
            "-c",
            "4096",
            s(&part),
        ],
    );
    put(
        &part,
        &format!("f\t/Windows/data.bin\t{}/data\n", s(td.path())),
    );
    // The disk: an MBR whose one entry counts 4096-byte sectors, then the partition.
    let bytes = std::fs::read(&part).unwrap();
    let mut disk = vec![0u8; (start_lba * 4096) as usize];
    let e = &mut disk[446..462];
    e[4] = 0x07;
    e[8..12].copy_from_slice(&(start_lba as u32).to_le_bytes());
    e[12..16].copy_from_slice(&((bytes.len() / 4096) as u32).to_le_bytes());
    disk[510] = 0x55;
    disk[511] = 0xAA;
    disk.extend_from_slice(&bytes);
    let img = td.path().join("disk4kn.raw");
    std::fs::write(&img, &disk).unwrap();
    let ls = common::imgcheck(&["ls", s(&img), "/Windows"]);
    assert!(
        ls.status.success(),
        "{}",
        String::from_utf8_lossy(&ls.stderr)
    );
    assert_eq!(imgcheck_ls(&img, "/Windows"), ntfsls(&part, "/Windows"));
    let o = imgcheck_cat(&img, "/Windows/data.bin");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let want = std::process::Command::new("ntfscat")
        .arg(&part)
        .arg("/Windows/data.bin")
        .output()
        .unwrap();
    assert!(o.stdout == want.stdout && o.stdout.len() == 200_000);
    let info = common::imgcheck(&["inspect", "--format", "json", s(&img)]);
    let text = String::from_utf8_lossy(&info.stdout);
    assert!(
        text.contains("\"sector_size\": 4096") || text.contains("\"sector_size\":4096"),
        "{text}"
    );
}

/// The whole-disk rows of issue 20: the good fixture disk aged in place (its SYSTEM hive
/// rewritten as a 6 MB file in about 1,500 runs behind an attribute list, System32 grown by
/// 6,000 files interleaved with another directory) still passes `verify`, as raw, VHD and
/// qcow2, with every check as on the original.
#[test]
fn aged_system_volume_passes_verify_in_every_container() {
    if !need_tools() || !common::have("qemu-img") {
        eprintln!("SKIP: needs ntfs-3g tools and qemu-img");
        return;
    }
    let td = tempfile::tempdir().unwrap();
    let disk = common::fixture("good-mbr.raw", td.path());
    let bytes = std::fs::read(&disk).unwrap();
    let (start, len) = GOOD_PART;
    let part = td.path().join("part.img");
    std::fs::write(&part, &bytes[start..start + len]).unwrap();
    let cfg = "/Windows/System32/config/SYSTEM";
    let hive = std::process::Command::new("ntfscat")
        .arg(&part)
        .arg(cfg)
        .output()
        .unwrap();
    assert!(hive.status.success() && hive.stdout.len() > 4096);
    // A hive file is often larger than its hive bins (Windows preallocates): pad to 6 MB.
    let mut big = hive.stdout.clone();
    big.resize(6_000_000, 0);
    std::fs::write(td.path().join("SYSTEM"), &big).unwrap();
    put(
        &part,
        &format!(
            "x\t{cfg}\nF\t{cfg}\t{}/SYSTEM\t/filler.bin\t4096\n\
             n\t/Windows/System32\t6000\t/Windows/Temp\n",
            s(td.path())
        ),
    );
    assert_has_attribute_list(&part, &["-F", cfg]);
    let aged = td.path().join("aged.raw");
    std::fs::write(&aged, with_partition(&bytes, &part)).unwrap();
    let (rc0, orig) = common::verify_json(&disk, &[]);
    assert_eq!(rc0, 0);
    let statuses = |r: &serde_json::Value| -> Vec<(String, String)> {
        r["checks"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| {
                (
                    c["id"].as_str().unwrap().to_string(),
                    c["status"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    };
    let mut images = vec![aged.clone()];
    for (fmt, ext) in [("vpc", "vhd"), ("qcow2", "qcow2")] {
        let out = td.path().join(format!("aged.{ext}"));
        common::qemu_img(&["convert", "-f", "raw", "-O", fmt, s(&aged), s(&out)]);
        images.push(out);
    }
    for img in images {
        let (rc, rep) = common::verify_json(&img, &[]);
        assert_eq!(rc, 0, "{}: {rep:#}", img.display());
        let mut got = statuses(&rep);
        let mut want = statuses(&orig);
        got.retain(|(id, _)| id != "image.format");
        want.retain(|(id, _)| id != "image.format");
        assert_eq!(got, want, "{}", img.display());
    }
    assert_eq!(
        ntfsls(&part, "/Windows/System32").len(),
        imgcheck_ls(&aged, "/Windows/System32").len()
    );
}

/// A new-format log entry (HvLE) with valid hashes and the given fields.
fn hvle(size: usize, sequence: u32, bins: u32) -> Vec<u8> {
    use imgcheck::windows::hive::{marvin32, LOG_HASH_SEED};
    let mut e = vec![0u8; size.max(40)];
    e[..4].copy_from_slice(b"HvLE");
    e[4..8].copy_from_slice(&(size as u32).to_le_bytes());
    e[12..16].copy_from_slice(&sequence.to_le_bytes());
    e[16..20].copy_from_slice(&bins.to_le_bytes());
    let h1 = marvin32(LOG_HASH_SEED, &e[40..]);
    e[24..32].copy_from_slice(&h1.to_le_bytes());
    let h2 = marvin32(LOG_HASH_SEED, &e[..32]);
    e[32..40].copy_from_slice(&h2.to_le_bytes());
    e.truncate(size.max(16));
    e
}

/// Issue 21's log-replay bombs, through the binary on a real Windows volume: a dirty SYSTEM
/// hive with a 5 KiB SYSTEM.LOG1 whose three entries each claim 2 GiB of hive bins (the
/// unpatched notatin grew the hive by that much per entry: 4.1 GiB RSS, then 8.2, then an
/// aborted 16 GiB allocation), and a log whose entry is shorter than its 40-byte header (an
/// underflow panic inside notatin). `verify` stays under 200 MiB, prints no panic, and says the
/// log was not applied.
#[test]
fn hostile_transaction_logs_are_bounded_and_do_not_panic() {
    if !need_tools() {
        return;
    }
    use imgcheck::repair::hive_edit::base_block_checksum;
    let td = tempfile::tempdir().unwrap();
    let disk = common::fixture("good-mbr.raw", td.path());
    let bytes = std::fs::read(&disk).unwrap();
    let (start, len) = GOOD_PART;
    let cfg = "/Windows/System32/config/SYSTEM";
    let part0 = td.path().join("part0.img");
    std::fs::write(&part0, &bytes[start..start + len]).unwrap();
    let hive = std::process::Command::new("ntfscat")
        .arg(&part0)
        .arg(cfg)
        .output()
        .unwrap()
        .stdout;
    let seq = u32::from_le_bytes(hive[8..12].try_into().unwrap());
    let mut dirty = hive.clone();
    dirty[4..8].copy_from_slice(&(seq + 1).to_le_bytes());
    let sum = base_block_checksum(&dirty);
    dirty[508..512].copy_from_slice(&sum.to_le_bytes());
    std::fs::write(td.path().join("SYSTEM"), &dirty).unwrap();
    let mut base = dirty[..512].to_vec();
    base[28..32].copy_from_slice(&6u32.to_le_bytes());
    let sum = base_block_checksum(&base);
    base[508..512].copy_from_slice(&sum.to_le_bytes());
    let mut bomb = base.clone();
    for k in 0..3 {
        bomb.extend_from_slice(&hvle(1536, seq + k, 0x7FFF_F000));
    }
    let mut short = base.clone();
    short.extend_from_slice(&hvle(16, seq, 4096));
    short.resize(4096, 0);
    let mut images = Vec::new();
    for (name, log) in [("bomb", bomb), ("short", short)] {
        assert!(log.len() <= 5120, "{name}: {} bytes", log.len());
        std::fs::write(td.path().join("SYSTEM.LOG1"), &log).unwrap();
        let part = td.path().join(format!("{name}.img"));
        std::fs::copy(&part0, &part).unwrap();
        put(
            &part,
            &format!(
                "x\t{cfg}\nf\t{cfg}\t{d}/SYSTEM\nf\t{cfg}.LOG1\t{d}/SYSTEM.LOG1\n",
                d = s(td.path())
            ),
        );
        let p = td.path().join(format!("{name}.raw"));
        std::fs::write(&p, with_partition(&bytes, &part)).unwrap();
        images.push((name, p));
    }
    // The images are on disk: free this process's copies before measuring (a child's peak RSS
    // counts what it shared with its parent before exec).
    drop((bytes, hive, dirty));
    for (name, p) in images {
        let r = common::run_measured(
            &[
                "verify".into(),
                "--format".into(),
                "json".into(),
                s(&p).to_string(),
            ],
            td.path(),
        );
        assert!(r.signal.is_none(), "{name}: killed");
        eprintln!(
            "{name}: exit {:?}, peak RSS {} KiB, {:?}",
            r.code, r.max_rss_kib, r.wall
        );
        assert!(r.max_rss_kib < 200 * 1024, "{name}: {} KiB", r.max_rss_kib);
        assert!(!r.stderr.contains("panicked"), "{name}: {}", r.stderr);
        assert!(r.stdout.contains("SYSTEM"), "{name}: {}", r.stdout);
        assert!(
            r.stdout.contains("hive is dirty"),
            "{name}: the log was not looked at: {}",
            r.stdout
        );
        assert!(
            !r.stdout.contains("its transaction logs were replayed"),
            "{name}: {}",
            r.stdout
        );
    }
}

/// A file record whose `$DATA` attribute is gone (its type overwritten, as a damaged record
/// leaves it) reads as an error naming the record, never as an empty file with exit 0.
#[test]
fn file_without_a_data_attribute_is_an_error_not_empty() {
    if !need_tools() {
        return;
    }
    let td = tempfile::tempdir().unwrap();
    std::fs::write(td.path().join("a"), b"some bytes\n").unwrap();
    let vol = volume(td.path(), "nodata.img", 16, 4096, "f\t/a.txt\t{dir}/a\n");
    let n = record_number(&vol, "/a.txt");
    edit_record(&vol, n, |rec| {
        let a = attribute(rec, 0x80);
        rec[a..a + 4].copy_from_slice(&0x100u32.to_le_bytes());
    });
    let o = imgcheck_cat(&vol, "/a.txt");
    assert_eq!(o.status.code(), Some(2), "{o:?}");
    assert!(o.stdout.is_empty());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("has no $DATA attribute"),
        "{o:?}"
    );
}
