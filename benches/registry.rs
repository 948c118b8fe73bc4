//! Benchmark: parse a SOFTWARE-sized hive (~100 MB, generated here, not committed) and run every
//! registry analysis against it and the real Windows 7 SYSTEM hive (fixtures/realdata).
//!
//! Run: `cargo bench --bench registry` (release) or `cargo bench --profile dev --bench registry`.
//! Options after `--`: `--mib N` (target size, default 100), `--write PATH` (save the hive),
//! `--runs N` (default 5).
//!
//! The generator writes regf directly (base block, hive bins of 1 MiB, sk/nk/vk/lh/ri cells as
//! in the "Windows registry file format specification"): Microsoft\Windows NT\CurrentVersion,
//! 3000 + 1500 Uninstall entries (native and WOW6432Node), and Classes\CLSID filled with CLSID
//! keys (each with an InprocServer32 subkey and values) up to the target size.

use std::io::Read;
use std::time::{Duration, Instant};

use imgcheck::windows::{
    analyse, bcd_boot, cloudbase_init, conflicts, extra_warnings, os_identity, virtio_storage, Hive,
};

const HBIN: usize = 1 << 20;
const LH_MAX: usize = 512;

enum Data {
    Sz(String),
    Dword(u32),
}

/// A key to write: name, values, children.
struct Node {
    name: String,
    values: Vec<(String, Data)>,
    children: Vec<Node>,
}

fn node(name: &str, values: Vec<(&str, Data)>, children: Vec<Node>) -> Node {
    Node {
        name: name.to_string(),
        values: values
            .into_iter()
            .map(|(n, d)| (n.to_string(), d))
            .collect(),
        children,
    }
}

fn sz(s: &str) -> Data {
    Data::Sz(s.to_string())
}

struct Writer {
    /// Hive bins data; cell offsets are relative to its start.
    bins: Vec<u8>,
    hbin_end: usize,
    next: usize,
    sk: u32,
}

fn name_hash(name: &str) -> u32 {
    name.bytes().fold(0u32, |h, c| {
        h.wrapping_mul(37)
            .wrapping_add(c.to_ascii_uppercase() as u32)
    })
}

fn put32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

impl Writer {
    fn new() -> Writer {
        let mut w = Writer {
            bins: Vec::with_capacity(112 << 20),
            hbin_end: 0,
            next: 0,
            sk: 0,
        };
        w.new_hbin();
        w
    }

    /// One security descriptor for every key: revision 1, self-relative, no owner or ACLs.
    fn write_sk(&mut self) -> u32 {
        let sd = [
            1u8, 0, 0x00, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        ];
        let off = self.alloc(24 + sd.len());
        let c = off + 4;
        self.bins[c..c + 2].copy_from_slice(b"sk");
        put32(&mut self.bins, c + 4, off as u32);
        put32(&mut self.bins, c + 8, off as u32);
        put32(&mut self.bins, c + 12, 1);
        put32(&mut self.bins, c + 16, sd.len() as u32);
        self.bins[c + 20..c + 20 + sd.len()].copy_from_slice(&sd);
        off as u32
    }

    fn new_hbin(&mut self) {
        let start = self.bins.len();
        self.bins.resize(start + HBIN, 0);
        self.bins[start..start + 4].copy_from_slice(b"hbin");
        put32(&mut self.bins, start + 4, start as u32);
        put32(&mut self.bins, start + 8, HBIN as u32);
        self.hbin_end = start + HBIN;
        self.next = start + 32;
        self.mark_free();
    }

    /// The rest of the current bin is one free cell.
    fn mark_free(&mut self) {
        if self.next < self.hbin_end {
            let n = (self.hbin_end - self.next) as u32;
            put32(&mut self.bins, self.next, n);
        }
    }

    /// Allocates a cell of `len` bytes (size field included); returns its offset.
    fn alloc(&mut self, len: usize) -> usize {
        let len = len.div_ceil(8) * 8;
        assert!(len <= HBIN - 32, "cell too big");
        if self.next + len > self.hbin_end {
            self.new_hbin();
        }
        let at = self.next;
        put32(&mut self.bins, at, (-(len as i32)) as u32);
        self.next += len;
        self.mark_free();
        at
    }

    fn value(&mut self, name: &str, data: &Data) -> u32 {
        let (ty, bytes): (u32, Vec<u8>) = match data {
            Data::Sz(s) => (
                1,
                s.encode_utf16()
                    .chain([0])
                    .flat_map(|u| u.to_le_bytes())
                    .collect(),
            ),
            Data::Dword(v) => (4, v.to_le_bytes().to_vec()),
        };
        let (size_field, data_off) = if bytes.len() <= 4 {
            let mut inline = [0u8; 4];
            inline[..bytes.len()].copy_from_slice(&bytes);
            (bytes.len() as u32 | 0x8000_0000, u32::from_le_bytes(inline))
        } else {
            let d = self.alloc(4 + bytes.len());
            self.bins[d + 4..d + 4 + bytes.len()].copy_from_slice(&bytes);
            (bytes.len() as u32, d as u32)
        };
        let vk = self.alloc(24 + name.len());
        let c = vk + 4;
        self.bins[c..c + 2].copy_from_slice(b"vk");
        self.bins[c + 2..c + 4].copy_from_slice(&(name.len() as u16).to_le_bytes());
        put32(&mut self.bins, c + 4, size_field);
        put32(&mut self.bins, c + 8, data_off);
        put32(&mut self.bins, c + 12, ty);
        self.bins[c + 16..c + 18].copy_from_slice(&1u16.to_le_bytes()); // ASCII name
        self.bins[c + 20..c + 20 + name.len()].copy_from_slice(name.as_bytes());
        vk as u32
    }

    /// Writes a key and its subtree; returns the nk offset.
    fn key(&mut self, n: &Node, parent: u32, root: bool) -> u32 {
        // The root key is the first cell: notatin reads the root from the first cell of the
        // first hive bin (as Windows writes it), not from the base block's root offset.
        let nk = self.alloc(80 + n.name.len()) as u32;
        if root {
            self.sk = self.write_sk();
        }
        let mut value_offs = Vec::with_capacity(n.values.len());
        for (name, d) in &n.values {
            value_offs.push(self.value(name, d));
        }
        let value_list = if value_offs.is_empty() {
            u32::MAX
        } else {
            let l = self.alloc(4 + 4 * value_offs.len());
            for (i, v) in value_offs.iter().enumerate() {
                put32(&mut self.bins, l + 4 + 4 * i, *v);
            }
            l as u32
        };
        let mut kids: Vec<(u32, &str)> = n
            .children
            .iter()
            .map(|c| (self.key(c, nk, false), c.name.as_str()))
            .collect();
        kids.sort_by_key(|(_, name)| name.to_ascii_uppercase());
        let sub_list = if kids.is_empty() {
            u32::MAX
        } else {
            let lists: Vec<u32> = kids
                .chunks(LH_MAX)
                .map(|chunk| {
                    let l = self.alloc(8 + 8 * chunk.len());
                    self.bins[l + 4..l + 6].copy_from_slice(b"lh");
                    self.bins[l + 6..l + 8].copy_from_slice(&(chunk.len() as u16).to_le_bytes());
                    for (i, (off, name)) in chunk.iter().enumerate() {
                        put32(&mut self.bins, l + 8 + 8 * i, *off);
                        put32(&mut self.bins, l + 12 + 8 * i, name_hash(name));
                    }
                    l as u32
                })
                .collect();
            if lists.len() == 1 {
                lists[0]
            } else {
                let r = self.alloc(8 + 4 * lists.len());
                self.bins[r + 4..r + 6].copy_from_slice(b"ri");
                self.bins[r + 6..r + 8].copy_from_slice(&(lists.len() as u16).to_le_bytes());
                for (i, l) in lists.iter().enumerate() {
                    put32(&mut self.bins, r + 8 + 4 * i, *l);
                }
                r as u32
            }
        };
        let c = nk as usize + 4;
        let max_name = n
            .children
            .iter()
            .map(|c| c.name.len() * 2)
            .max()
            .unwrap_or(0);
        let max_vname = n.values.iter().map(|v| v.0.len() * 2).max().unwrap_or(0);
        let b = &mut self.bins;
        b[c..c + 2].copy_from_slice(b"nk");
        let flags: u16 = if root { 0x2c } else { 0x20 };
        b[c + 2..c + 4].copy_from_slice(&flags.to_le_bytes());
        put32(b, c + 16, parent);
        put32(b, c + 20, n.children.len() as u32);
        put32(b, c + 28, sub_list);
        put32(b, c + 32, u32::MAX);
        put32(b, c + 36, n.values.len() as u32);
        put32(b, c + 40, value_list);
        put32(b, c + 44, self.sk);
        put32(b, c + 48, u32::MAX);
        put32(b, c + 52, max_name as u32);
        put32(b, c + 60, max_vname as u32);
        put32(b, c + 64, 512);
        b[c + 72..c + 74].copy_from_slice(&(n.name.len() as u16).to_le_bytes());
        b[c + 76..c + 76 + n.name.len()].copy_from_slice(n.name.as_bytes());
        nk
    }

    fn finish(mut self, root: u32) -> Vec<u8> {
        let bins_len = self.bins.len();
        let mut base = vec![0u8; 4096];
        base[0..4].copy_from_slice(b"regf");
        put32(&mut base, 4, 7);
        put32(&mut base, 8, 7);
        put32(&mut base, 20, 1);
        put32(&mut base, 24, 5);
        put32(&mut base, 28, 0);
        put32(&mut base, 32, 1);
        put32(&mut base, 36, root);
        put32(&mut base, 40, bins_len as u32);
        put32(&mut base, 44, 1);
        for (i, u) in "SOFTWARE".encode_utf16().enumerate() {
            base[48 + 2 * i..50 + 2 * i].copy_from_slice(&u.to_le_bytes());
        }
        let mut x = 0u32;
        for i in 0..127 {
            x ^= u32::from_le_bytes(base[i * 4..i * 4 + 4].try_into().unwrap());
        }
        put32(&mut base, 508, x);
        base.append(&mut self.bins);
        base
    }
}

fn guid(i: u64) -> String {
    let x = i.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    format!(
        "{{{:08X}-{:04X}-{:04X}-{:04X}-{:012X}}}",
        x as u32,
        (x >> 32) as u16,
        (x >> 48) as u16,
        i as u16,
        i & 0xFFFF_FFFF_FFFF
    )
}

fn uninstall(count: u64, tag: &str) -> Node {
    let mut kids: Vec<Node> = (0..count)
        .map(|i| {
            node(
                &guid(i + 1_000_000),
                vec![
                    ("DisplayName", Data::Sz(format!("{tag} Application {i}"))),
                    (
                        "DisplayVersion",
                        Data::Sz(format!("{}.{}.{}", i % 10, i % 7, i)),
                    ),
                    ("Publisher", sz("Example Software Ltd")),
                    ("InstallDate", sz("20240115")),
                    (
                        "InstallLocation",
                        Data::Sz(format!("C:\\Program Files\\Example\\{i}")),
                    ),
                    (
                        "UninstallString",
                        Data::Sz(format!("MsiExec.exe /X{}", guid(i))),
                    ),
                    ("EstimatedSize", Data::Dword(1234)),
                    ("NoModify", Data::Dword(1)),
                ],
                vec![],
            )
        })
        .collect();
    if tag == "Native" {
        kids.push(node(
            "VMware Tools",
            vec![
                ("DisplayName", sz("VMware Tools")),
                ("DisplayVersion", sz("12.3.0.22234872")),
            ],
            vec![],
        ));
    }
    node("Uninstall", vec![], kids)
}

fn generate(target: usize) -> Vec<u8> {
    let mut w = Writer::new();
    // Estimate the size of one CLSID entry by writing the fixed part first.
    let cv = node(
        "CurrentVersion",
        vec![
            ("ProductName", sz("Windows Server 2022 Datacenter")),
            ("EditionID", sz("ServerDatacenter")),
            ("InstallationType", sz("Server")),
            ("CurrentVersion", sz("6.3")),
            ("CurrentMajorVersionNumber", Data::Dword(10)),
            ("CurrentMinorVersionNumber", Data::Dword(0)),
            ("CurrentBuildNumber", sz("20348")),
            ("UBR", Data::Dword(2113)),
            ("SystemRoot", sz("C:\\Windows")),
            ("RegisteredOwner", sz("Windows User")),
        ],
        vec![],
    );
    let clsid_size = 640; // bytes per CLSID entry written below, measured
    let n_clsid = (target.saturating_sub(8 << 20) / clsid_size) as u64;
    let clsids: Vec<Node> = (0..n_clsid)
        .map(|i| {
            node(
                &guid(i),
                vec![("", Data::Sz(format!("Example COM Class {i}")))],
                vec![
                    node(
                        "InprocServer32",
                        vec![
                            (
                                "",
                                Data::Sz(format!("C:\\Windows\\System32\\example{}.dll", i % 977)),
                            ),
                            ("ThreadingModel", sz("Both")),
                        ],
                        vec![],
                    ),
                    node(
                        "ProgID",
                        vec![("", Data::Sz(format!("Example.Class.{i}")))],
                        vec![],
                    ),
                ],
            )
        })
        .collect();
    let root = node(
        "ROOT",
        vec![],
        vec![
            node("Classes", vec![], vec![node("CLSID", vec![], clsids)]),
            node(
                "Microsoft",
                vec![],
                vec![
                    node("Windows NT", vec![], vec![cv]),
                    node(
                        "Windows",
                        vec![],
                        vec![node(
                            "CurrentVersion",
                            vec![],
                            vec![uninstall(3000, "Native")],
                        )],
                    ),
                ],
            ),
            node(
                "WOW6432Node",
                vec![],
                vec![node(
                    "Microsoft",
                    vec![],
                    vec![node(
                        "Windows",
                        vec![],
                        vec![node(
                            "CurrentVersion",
                            vec![],
                            vec![uninstall(1500, "Wow64")],
                        )],
                    )],
                )],
            ),
        ],
    );
    let r = w.key(&root, 0, true);
    w.finish(r)
}

fn xz(path: &str) -> Vec<u8> {
    let raw = std::fs::read(path).unwrap();
    let mut out = Vec::new();
    xz2::read::XzDecoder::new(&raw[..])
        .read_to_end(&mut out)
        .unwrap();
    out
}

fn main() {
    let mut mib = 100usize;
    let mut runs = 5usize;
    let mut write: Option<String> = None;
    let args: Vec<String> = std::env::args().collect();
    let mut i = 1;
    while i < args.len() {
        match args[i].as_str() {
            "--mib" if i + 1 < args.len() => {
                mib = args[i + 1].parse().expect("--mib N");
                i += 1;
            }
            "--runs" if i + 1 < args.len() => {
                runs = args[i + 1].parse().expect("--runs N");
                i += 1;
            }
            "--write" if i + 1 < args.len() => {
                write = Some(args[i + 1].clone());
                i += 1;
            }
            _ => {}
        }
        i += 1;
    }
    let dir = env!("CARGO_MANIFEST_DIR");
    let t = Instant::now();
    let software_bytes = generate(mib << 20);
    println!(
        "generated SOFTWARE hive: {:.1} MiB in {:.2?}",
        software_bytes.len() as f64 / (1 << 20) as f64,
        t.elapsed()
    );
    if let Some(p) = &write {
        std::fs::write(p, &software_bytes).unwrap();
        println!("written to {p}");
    }
    let system_bytes = xz(&format!("{dir}/fixtures/realdata/win7-vmware-SYSTEM.xz"));
    let bcd_bytes = xz(&format!("{dir}/fixtures/realdata/uefi-BCD.xz"));

    let mut best = Duration::MAX;
    let mut best_open = Duration::MAX;
    for run in 0..runs {
        // The caller owns the bytes it read from the image: hand them over (open_vec).
        let (sw, sy, bc) = (
            software_bytes.clone(),
            system_bytes.clone(),
            bcd_bytes.clone(),
        );
        let t = Instant::now();
        let software = Hive::open_vec("SOFTWARE", sw, &[]).unwrap();
        let system = Hive::open_vec("SYSTEM", sy, &[]).unwrap();
        let bcd = Hive::open_vec("BCD", bc, &[]).unwrap();
        let opened = t.elapsed();
        let all = analyse(&system, &software, &|_| true).unwrap();
        let b = bcd_boot(&bcd).unwrap();
        let total = t.elapsed();
        if run == 0 {
            println!(
                "os: {:?} {:?}, {} applications, {} services; virtio: {}; cloudbase-init installed: {}; {} conflicts; {} warnings; firmware {:?}",
                all.os.product_name,
                all.os.version,
                all.os.applications.len(),
                all.os.services.len(),
                all.virtio.state_text,
                all.cloudbase_init.installed,
                all.conflicts.len(),
                all.warnings.len(),
                b.firmware
            );
            assert_eq!(all.os.applications.len(), 4501);
        }
        println!("run {run}: open {opened:.2?}, open + all analyses {total:.2?}");
        best = best.min(total);
        best_open = best_open.min(opened);
    }
    println!("best: open {best_open:.2?}, open + all analyses {best:.2?}");

    // Breakdown on fresh hives (each analysis after the previous ones: lookups are memoised).
    let software = Hive::open_vec("SOFTWARE", software_bytes.clone(), &[]).unwrap();
    let system = Hive::open_vec("SYSTEM", system_bytes.clone(), &[]).unwrap();
    let mut lap = Instant::now();
    let mut steps = Vec::new();
    let mut step = |name: &str| {
        steps.push(format!("{name} {:.0?}", lap.elapsed()));
        lap = Instant::now();
    };
    os_identity(&system, &software).unwrap();
    step("os_identity");
    virtio_storage(&system, &software, &|_| true).unwrap();
    step("virtio_storage");
    cloudbase_init(&system, &software).unwrap();
    step("cloudbase_init");
    conflicts(&system, &software).unwrap();
    step("conflicts");
    extra_warnings(&system, &software).unwrap();
    step("extra_warnings");
    println!("breakdown: {}", steps.join(", "));
}
