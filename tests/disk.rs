//! Partition-table analysis against sfdisk (util-linux) as the oracle: sfdisk writes the tables,
//! `sfdisk -J` reads them back, and imgcheck must agree; damaged tables are made by patching
//! the table bytes.

mod common;

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;

use imgcheck::disk::{self, EntryKind, PartitionTable, ProblemCode, TableKind};
use imgcheck::image::{self, BlockDevice, OpenOptions};

fn need(tool: &str) -> bool {
    if common::have(tool) {
        true
    } else {
        eprintln!("SKIP: {tool} is not installed (apt-get install -y fdisk ntfs-3g)");
        false
    }
}

/// Create a sparse disk of `size` bytes and partition it with the sfdisk `script`.
fn sfdisk_disk(dir: &Path, name: &str, size: u64, script: &str) -> PathBuf {
    let p = dir.join(name);
    let f = std::fs::File::create(&p).unwrap();
    f.set_len(size).unwrap();
    drop(f);
    let mut child = Command::new("sfdisk")
        .args(["-q", "--no-reread", "--no-tell-kernel"])
        .arg(&p)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run sfdisk");
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
        "sfdisk failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    p
}

fn open(p: &Path) -> Arc<dyn BlockDevice> {
    image::open(p, &OpenOptions::default()).unwrap()
}

fn analyze(p: &Path) -> PartitionTable {
    disk::analyze(&open(p)).unwrap()
}

fn patch(p: &Path, off: u64, bytes: &[u8]) {
    let f = std::fs::OpenOptions::new().write(true).open(p).unwrap();
    f.write_all_at(bytes, off).unwrap();
}

/// One partition as sfdisk shows it: (index, start bytes, size bytes, type, bootable, name).
type SfdiskPart = (u32, u64, u64, String, bool, Option<String>);

/// sfdisk's view of a disk: its JSON and the partitions.
fn sfdisk_view(p: &Path) -> (serde_json::Value, Vec<SfdiskPart>) {
    let out = common::run("sfdisk", &["-J", p.to_str().unwrap()]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let t = &v["partitiontable"];
    let ss = t["sectorsize"].as_u64().unwrap();
    let mut parts = Vec::new();
    for e in t["partitions"].as_array().unwrap() {
        let node = e["node"].as_str().unwrap();
        let digits: String = node
            .chars()
            .rev()
            .take_while(|c| c.is_ascii_digit())
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        parts.push((
            digits.parse().unwrap(),
            e["start"].as_u64().unwrap() * ss,
            e["size"].as_u64().unwrap() * ss,
            e["type"].as_str().unwrap().to_string(),
            e["bootable"].as_bool().unwrap_or(false),
            e["name"].as_str().map(str::to_string),
        ));
    }
    (v, parts)
}

fn codes(t: &PartitionTable) -> Vec<ProblemCode> {
    t.problems.iter().map(|p| p.code).collect()
}

#[test]
fn mbr_with_logical_partitions_matches_sfdisk() {
    if !need("sfdisk") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let p = sfdisk_disk(
        dir.path(),
        "mbr.raw",
        64 << 20,
        "label: dos\nlabel-id: 0x1234abcd\n\
         start=2048,size=4096,type=7,bootable\n\
         start=8192,size=4096,type=c\n\
         start=16384,size=80000,type=f\n\
         start=18432,size=2048,type=83\n\
         start=22528,size=4096,type=7\n\
         start=28672,size=2048,type=ef\n",
    );
    let t = analyze(&p);
    assert_eq!(t.kind, TableKind::Mbr, "{t:?}");
    assert!(t.problems.is_empty(), "{:?}", t.problems);
    assert_eq!(t.disk_signature, Some(0x1234abcd));
    let (_, want) = sfdisk_view(&p);
    assert_eq!(t.partitions.len(), want.len(), "{t:?} vs {want:?}");
    for (got, w) in t.partitions.iter().zip(&want) {
        assert_eq!(got.index, w.0);
        assert_eq!(got.start, w.1, "start of {}", w.0);
        assert_eq!(got.size, w.2, "size of {}", w.0);
        assert_eq!(format!("{:x}", got.mbr_type.unwrap()), w.3);
        assert_eq!(got.bootable, w.4, "bootable of {}", w.0);
    }
    let kinds: Vec<EntryKind> = t.partitions.iter().map(|p| p.kind).collect();
    assert_eq!(
        kinds,
        [
            EntryKind::Primary,
            EntryKind::Primary,
            EntryKind::Extended,
            EntryKind::Logical,
            EntryKind::Logical,
            EntryKind::Logical
        ]
    );
    assert_eq!(t.efi_system_partitions, vec![7]);
    assert_eq!(t.first_partition().unwrap().index, 1);
    // Serializable for reports.
    let j = serde_json::to_value(&t).unwrap();
    assert_eq!(j["kind"], "mbr");
    assert_eq!(j["partitions"][3]["kind"], "logical");
}

#[test]
fn gpt_matches_sfdisk_and_is_reported() {
    if !need("sfdisk") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let p = sfdisk_disk(
        dir.path(),
        "gpt.raw",
        64 << 20,
        "label: gpt\n\
         start=2048,size=4096,type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B,name=\"EFI system partition\"\n\
         start=8192,size=4096,type=E3C9E316-0B5C-4DB8-817D-F92DF00215AE\n\
         start=12288,size=20000,type=EBD0A0A2-B9E5-4433-87C0-68B6B72699C7,name=\"Basic data\"\n",
    );
    let t = analyze(&p);
    assert_eq!(t.kind, TableKind::Gpt);
    assert_eq!(codes(&t), vec![ProblemCode::Gpt], "{:?}", t.problems);
    let (v, want) = sfdisk_view(&p);
    assert_eq!(
        t.disk_guid.as_deref(),
        v["partitiontable"]["id"].as_str(),
        "disk GUID"
    );
    assert_eq!(t.partitions.len(), want.len());
    for (got, w) in t.partitions.iter().zip(&want) {
        assert_eq!((got.index, got.start, got.size), (w.0, w.1, w.2));
        assert_eq!(got.gpt_type.as_deref(), Some(w.3.as_str()));
        let name = got.name.clone().filter(|n| !n.is_empty());
        assert_eq!(name, w.5);
    }
    assert_eq!(t.efi_system_partitions, vec![1]);
    assert_eq!(t.partitions[0].type_name, "EFI system");
    // The protective MBR is visible as a raw entry.
    assert_eq!(t.mbr_entries.len(), 1);
    assert_eq!(t.mbr_entries[0].mbr_type, Some(0xEE));

    // Damage the primary header: the backup is used, and that is reported.
    patch(&p, 512 + 100, b"garbage");
    patch(&p, 512 + 16, &[1, 2, 3, 4]);
    let t2 = analyze(&p);
    assert_eq!(t2.kind, TableKind::Gpt);
    assert!(t2.has(ProblemCode::GptHeader), "{:?}", t2.problems);
    assert_eq!(t2.partitions, t.partitions);
}

#[test]
fn hybrid_mbr() {
    if !need("sfdisk") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let p = sfdisk_disk(
        dir.path(),
        "hybrid.raw",
        64 << 20,
        "label: gpt\nstart=2048,size=20000,type=EBD0A0A2-B9E5-4433-87C0-68B6B72699C7\n",
    );
    // Add an MBR entry for the same partition next to the 0xEE entry (what gdisk's hybrid does).
    let mut e = [0u8; 16];
    e[0] = 0x80;
    e[4] = 0x07;
    e[8..12].copy_from_slice(&2048u32.to_le_bytes());
    e[12..16].copy_from_slice(&20000u32.to_le_bytes());
    patch(&p, 446 + 16, &e);
    let t = analyze(&p);
    assert_eq!(t.kind, TableKind::HybridMbr, "{t:?}");
    assert!(
        t.has(ProblemCode::HybridMbr) && t.has(ProblemCode::Gpt),
        "{:?}",
        t.problems
    );
    assert!(!t.has(ProblemCode::Overlap), "{:?}", t.problems);
    assert_eq!(t.partitions.len(), 1);
    assert_eq!(t.mbr_entries.len(), 2);
}

#[test]
fn no_table_empty_table_and_partition_image() {
    if !need("sfdisk") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // All zeros.
    let z = dir.path().join("zeros.raw");
    std::fs::File::create(&z).unwrap().set_len(8 << 20).unwrap();
    let t = analyze(&z);
    assert_eq!(t.kind, TableKind::None);
    assert_eq!(codes(&t), vec![ProblemCode::NoSignature]);
    assert!(
        t.problems[0].message.contains("all zeros"),
        "{:?}",
        t.problems
    );
    assert!(t.partitions.is_empty());

    // A valid MBR with no entries.
    let e = sfdisk_disk(dir.path(), "empty.raw", 8 << 20, "label: dos\n");
    let t = analyze(&e);
    assert_eq!(t.kind, TableKind::None);
    assert_eq!(codes(&t), vec![ProblemCode::EmptyTable]);
    assert!(t.disk_signature.is_some());

    // Random bytes without the signature.
    let r = dir.path().join("random.raw");
    let mut buf = vec![0u8; 1 << 20];
    common::Rng::new(7).fill(&mut buf);
    buf[510] = 0;
    std::fs::write(&r, &buf).unwrap();
    let t = analyze(&r);
    assert_eq!(t.kind, TableKind::None);
    assert_eq!(codes(&t), vec![ProblemCode::NoSignature]);
    assert!(t.problems[0].message.contains("0x55AA"));

    // An image of one NTFS volume (no table): sector 0 is a volume boot sector.
    if need("mkntfs") {
        let v = dir.path().join("volume.raw");
        std::fs::File::create(&v)
            .unwrap()
            .set_len(16 << 20)
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
                v.to_str().unwrap(),
            ],
        );
        let t = analyze(&v);
        assert_eq!(t.kind, TableKind::None);
        assert_eq!(codes(&t), vec![ProblemCode::NotAnMbr]);
        assert_eq!(t.boot_sector_at_0.as_deref(), Some("NTFS"));
        assert!(t.problems[0]
            .message
            .contains("boot sector of an NTFS volume"));
        assert!(t.problems[0].message.starts_with("no partition table"));
    }
}

#[test]
fn dynamic_disk_ldm() {
    if !need("sfdisk") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let p = sfdisk_disk(
        dir.path(),
        "ldm.raw",
        32 << 20,
        "label: dos\nstart=63,size=60000,type=42\n",
    );
    let t = analyze(&p);
    assert_eq!(t.kind, TableKind::Ldm);
    assert_eq!(codes(&t), vec![ProblemCode::Ldm]);
    assert!(t.problems[0].message.contains("0x42"));
    let (_, want) = sfdisk_view(&p);
    assert_eq!(
        (t.partitions[0].start, t.partitions[0].size),
        (want[0].1, want[0].2)
    );
}

#[test]
fn overlapping_and_past_the_end_entries() {
    if !need("sfdisk") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let script = "label: dos\nstart=2048,size=8192,type=7\nstart=10240,size=8192,type=7\n";
    let p = sfdisk_disk(dir.path(), "overlap.raw", 16 << 20, script);
    assert!(analyze(&p).problems.is_empty());
    // Move entry 2's start into entry 1.
    patch(&p, 446 + 16 + 8, &6000u32.to_le_bytes());
    let t = analyze(&p);
    assert_eq!(t.kind, TableKind::Mbr);
    assert_eq!(codes(&t), vec![ProblemCode::Overlap], "{:?}", t.problems);
    assert!(t.problems[0].message.contains("partitions 1"));
    assert!(t.problems[0].message.contains("and 2"));

    let q = sfdisk_disk(dir.path(), "pastend.raw", 16 << 20, script);
    // Grow entry 2 past the 16 MiB disk.
    patch(&q, 446 + 16 + 12, &40000u32.to_le_bytes());
    let t = analyze(&q);
    assert_eq!(codes(&t), vec![ProblemCode::PastEnd], "{:?}", t.problems);
    assert!(t.problems[0].message.contains("partition 2"));
    assert!(t.problems[0].message.contains("past the end"));
    // sfdisk sees the same (damaged) entry.
    let (_, want) = sfdisk_view(&q);
    assert_eq!(t.partitions[1].size, want[1].2);
}

#[test]
fn larger_than_mbr_can_address() {
    if !need("sfdisk") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // 3 TiB sparse file: nothing is written but the table.
    let p = sfdisk_disk(
        dir.path(),
        "huge.raw",
        3 << 40,
        "label: dos\nstart=2048,size=409600,type=7,bootable\n",
    );
    let t = analyze(&p);
    assert_eq!(t.kind, TableKind::Mbr);
    assert_eq!(
        codes(&t),
        vec![ProblemCode::TooLargeForMbr],
        "{:?}",
        t.problems
    );
    assert!(t.problems[0].message.contains("2 TiB"));
}

#[test]
fn extended_chain_loop_is_cut() {
    if !need("sfdisk") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let p = sfdisk_disk(
        dir.path(),
        "ebr.raw",
        32 << 20,
        "label: dos\nstart=2048,size=40000,type=5\nstart=4096,size=2048,type=7\nstart=8192,size=2048,type=7\n",
    );
    let t = analyze(&p);
    assert_eq!(
        t.partitions
            .iter()
            .filter(|p| p.kind == EntryKind::Logical)
            .count(),
        2
    );
    assert!(t.problems.is_empty(), "{:?}", t.problems);
    // The second EBR's link entry: point it back at the first EBR (relative sector 0).
    let (_, want) = sfdisk_view(&p);
    // sfdisk puts each EBR 2048 sectors before its logical partition.
    let ebr_off = want.iter().find(|w| w.0 == 6).unwrap().1 - 2048 * 512;
    let mut sig = [0u8; 2];
    std::fs::File::open(&p)
        .unwrap()
        .read_exact_at(&mut sig, ebr_off + 510)
        .unwrap();
    assert_eq!(sig, [0x55, 0xAA], "the second EBR is where expected");
    let mut link = [0u8; 16];
    link[4] = 0x05;
    link[8..12].copy_from_slice(&0u32.to_le_bytes());
    link[12..16].copy_from_slice(&2048u32.to_le_bytes());
    patch(&p, ebr_off + 462, &link);
    let t = analyze(&p);
    assert!(t.has(ProblemCode::ExtendedChain), "{:?}", t.problems);
    assert_eq!(
        t.partitions
            .iter()
            .filter(|p| p.kind == EntryKind::Logical)
            .count(),
        2
    );
}

#[test]
fn invalid_boot_flag_is_not_an_mbr() {
    if !need("sfdisk") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let p = sfdisk_disk(
        dir.path(),
        "flag.raw",
        8 << 20,
        "label: dos\nstart=2048,size=4096,type=7\n",
    );
    patch(&p, 446, &[0x33]);
    let t = analyze(&p);
    assert_eq!(t.kind, TableKind::None);
    assert_eq!(codes(&t), vec![ProblemCode::NotAnMbr]);
    assert!(
        t.problems[0].message.contains("boot flag 0x33"),
        "{:?}",
        t.problems
    );
}

/// CRC-32 (IEEE), as GPT uses it.
fn crc32(data: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for &b in data {
        crc ^= b as u32;
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// Rewrite a field of the primary GPT header and fix its CRC, so only our own checks stand
/// between the value and the gpt crate (which asserts on it or allocates from it).
fn patch_gpt_header(p: &Path, field: usize, bytes: &[u8]) {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(p)
        .unwrap();
    let mut h = [0u8; 92];
    f.read_exact_at(&mut h, 512).unwrap();
    h[field..field + bytes.len()].copy_from_slice(bytes);
    h[16..20].copy_from_slice(&[0; 4]);
    let c = crc32(&h);
    h[16..20].copy_from_slice(&c.to_le_bytes());
    f.write_all_at(&h, 512).unwrap();
}

#[test]
fn hostile_gpt_headers_are_problems_not_panics() {
    if !need("sfdisk") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let script = "label: gpt\nstart=2048,size=20000,type=EBD0A0A2-B9E5-4433-87C0-68B6B72699C7\n";
    for (field, bytes, want) in [
        (
            84usize,
            256u32.to_le_bytes().to_vec(),
            "entries of 256 bytes",
        ),
        (
            80,
            u32::MAX.to_le_bytes().to_vec(),
            "claims 4294967295 entries",
        ),
        (
            72,
            (1u64 << 60).to_le_bytes().to_vec(),
            "past the end of the disk",
        ),
    ] {
        let p = sfdisk_disk(dir.path(), "hostile.raw", 16 << 20, script);
        // Break the backup header too, so the damaged primary is all there is.
        patch(&p, (16 << 20) - 512, &[0u8; 8]);
        patch_gpt_header(&p, field, &bytes);
        let t = analyze(&p);
        assert!(t.has(ProblemCode::GptHeader), "{:?}", t.problems);
        assert!(
            t.problems.iter().any(|pr| pr.message.contains(want)),
            "{want}: {:?}",
            t.problems
        );
        // The protective MBR still says GPT.
        assert_eq!(t.kind, TableKind::Gpt);
    }
}
