//! `imgcheck verify` over every fixture (see fixtures/README.md): each check's status, the key
//! words of its message, the verdict and the exit status.
mod common;
use common::*;

const IDS: [&str; 9] = [
    "image.format",
    "disk.partition-table",
    "disk.first-partition",
    "boot.firmware",
    "drivers.virtio",
    "drivers.storage-filters",
    "software.cloudbase-init",
    "software.conflicts",
    "system.state",
];

/// (fixture, statuses in IDS order as P/W/F/S, [(check id, words its message must contain)]).
type Case = (
    &'static str,
    &'static str,
    &'static [(&'static str, &'static str)],
);

const CASES: &[Case] = &[
    (
        "good-mbr.raw",
        "PPPPPPPPP",
        &[
            ("boot.firmware", "winload.exe"),
            ("drivers.virtio", "boot-start"),
        ],
    ),
    (
        "good-sysres.raw",
        "PPPPPPPPP",
        &[("disk.first-partition", "Windows is on partition 2")],
    ),
    (
        "ws2008r2.raw",
        "PPPPPPPPP",
        &[("drivers.virtio", "CriticalDeviceDatabase")],
    ),
    ("ws2019.raw", "PPPPPPPPP", &[]),
    (
        "gpt.raw",
        "PFPFPPPPP",
        &[("disk.partition-table", "GPT"), ("boot.firmware", "GPT")],
    ),
    (
        "hybrid-mbr.raw",
        "PFPFPPPPP",
        &[("disk.partition-table", "hybrid")],
    ),
    (
        "bare-ntfs.raw",
        "PFFSSSSSS",
        &[("disk.partition-table", "image of one partition")],
    ),
    (
        "zeros.raw",
        "PFFSSSSSS",
        &[("disk.partition-table", "no partition table")],
    ),
    (
        "dynamic-ldm.raw",
        "PFPFPPPPP",
        &[("disk.partition-table", "dynamic disk")],
    ),
    (
        "overlap.raw",
        "PFPPPPPPP",
        &[("disk.partition-table", "overlap")],
    ),
    (
        "past-end.raw",
        "PFPPPPPPP",
        &[("disk.partition-table", "past the end")],
    ),
    (
        "fat-first.raw",
        "PPFSSSSSS",
        &[("disk.first-partition", "FAT16, not NTFS")],
    ),
    (
        "zeros-first.raw",
        "PPFSSSSSS",
        &[("disk.first-partition", "all zeros")],
    ),
    (
        "bad-bootsector.raw",
        "PPFSSSSSS",
        &[("disk.first-partition", "does not open")],
    ),
    (
        "bad-mft-record.raw",
        "PPFSSSSSS",
        &[("disk.first-partition", "does not open")],
    ),
    (
        "dirty.raw",
        "PPWPPPPPP",
        &[("disk.first-partition", "dirty")],
    ),
    (
        "bitlocker.raw",
        "PPFSSSSSS",
        &[("disk.first-partition", "BitLocker")],
    ),
    (
        "hibernated.raw",
        "PPFPPPPPP",
        &[("disk.first-partition", "HIBR")],
    ),
    (
        "odd-size.raw",
        "WPPPPPPPP",
        &[("image.format", "not a multiple of 1 MiB")],
    ),
    (
        "efi.raw",
        "PPPFPPPPP",
        &[("boot.firmware", "EFI system partition")],
    ),
    (
        "no-virtio.raw",
        "PPPPFPPPP",
        &[("drivers.virtio", "no Virtio storage driver")],
    ),
    (
        "virtio-demand.raw",
        "PPPPFPPPP",
        &[("drivers.virtio", "not 0 (boot)")],
    ),
    (
        "virtio-staged.raw",
        "PPPPFPPPP",
        &[("drivers.virtio", "staged in the driver store")],
    ),
    (
        "virtio-sys-missing.raw",
        "PPPPFPPPP",
        &[("drivers.virtio", "vioscsi.sys")],
    ),
    (
        "virtio-unbound.raw",
        "PPPPFPPPP",
        &[("drivers.virtio", "VEN_1AF4&DEV_1004")],
    ),
    (
        "no-netkvm.raw",
        "PPPPWPPPP",
        &[("drivers.virtio", "netkvm")],
    ),
    (
        "no-cloudbase.raw",
        "PPPPPPFPP",
        &[("software.cloudbase-init", "not installed")],
    ),
    (
        "vmware.raw",
        "PPPPPPPFP",
        &[
            ("software.conflicts", "VMware Tools"),
            ("software.conflicts", "vmci"),
        ],
    ),
    (
        "vmware-disabled.raw",
        "PPPPPPPWP",
        &[("software.conflicts", "disabled")],
    ),
    (
        "xen.raw",
        "PPPPPPPFP",
        &[
            ("software.conflicts", "Xen PV"),
            ("software.conflicts", "xenvbd"),
        ],
    ),
    (
        "xen-disabled.raw",
        "PPPPPPPWP",
        &[("software.conflicts", "disabled")],
    ),
    (
        "vbox.raw",
        "PPPPPPPFP",
        &[
            ("software.conflicts", "VirtualBox"),
            ("software.conflicts", "VBoxGuest"),
        ],
    ),
    (
        "vbox-disabled.raw",
        "PPPPPPPWP",
        &[("software.conflicts", "disabled")],
    ),
    (
        "parallels.raw",
        "PPPPPPPFP",
        &[
            ("software.conflicts", "Parallels"),
            ("software.conflicts", "prl_"),
        ],
    ),
    (
        "parallels-disabled.raw",
        "PPPPPPPWP",
        &[("software.conflicts", "disabled")],
    ),
    (
        "pending-rename.raw",
        "PPPPPPPPW",
        &[("system.state", "pending")],
    ),
    (
        "fast-startup.raw",
        "PPPPPPPPW",
        &[("system.state", "Fast Startup")],
    ),
    (
        "static-ip.raw",
        "PPPPPPPPW",
        &[("system.state", "192.168.10.25")],
    ),
    (
        "rtu.raw",
        "PPPPPPPPW",
        &[("system.state", "RealTimeIsUniversal")],
    ),
    (
        "too-big.qcow2",
        "PFPPPPPPP",
        &[("disk.partition-table", "2 TiB")],
    ),
    // viostor is boot-start only in SYSTEM.LOG1: passes only when the log is replayed.
    (
        "dirty-log.raw",
        "PPPPPPPPP",
        &[("system.state", "transaction logs were replayed")],
    ),
    // Select\Current = 2: ControlSet001 is stale and has no Virtio.
    ("controlset2.raw", "PPPPPPPPP", &[]),
    // Windows wrote a StartOverride (0=3) for viostor and vioscsi: Start=0 is not enough.
    (
        "virtio-startoverride.raw",
        "PPPPFPPPP",
        &[
            ("drivers.virtio", "StartOverride"),
            ("drivers.virtio", "will not load at boot"),
        ],
    ),
    // A disk-class upper filter whose service is gone, a SCSI-class lower filter whose service
    // is disabled: the disk stack cannot start.
    (
        "filter-missing.raw",
        "PPPPPFPPP",
        &[
            ("drivers.storage-filters", "DiskDrive"),
            ("drivers.storage-filters", "UpperFilters names snapman"),
            ("drivers.storage-filters", "no service"),
        ],
    ),
    (
        "filter-disabled.raw",
        "PPPPPFPPP",
        &[
            ("drivers.storage-filters", "SCSIAdapter"),
            ("drivers.storage-filters", "LowerFilters names sptd"),
            ("drivers.storage-filters", "disabled"),
        ],
    ),
    // pvscsi with only the installer's value: a remnant (warn), not an enabled conflict.
    (
        "remnant.raw",
        "PPPPPPPWP",
        &[
            ("software.conflicts", "remnant"),
            ("software.conflicts", "pvscsi"),
        ],
    ),
    // The good disk in every container format qemu-img makes.
    ("good-mbr.vpc-fixed.vhd", "PPPPPPPPP", &[]),
    ("good-mbr.vpc-dynamic.vhd", "PPPPPPPPP", &[]),
    ("good-mbr.qcow2", "PPPPPPPPP", &[]),
    ("good-mbr.compressed.qcow2", "PPPPPPPPP", &[]),
    ("good-mbr.monolithicSparse.vmdk", "PPPPPPPPP", &[]),
    ("good-mbr.streamOptimized.vmdk", "PPPPPPPPP", &[]),
];

fn status_letter(s: &serde_json::Value) -> char {
    match s.as_str().unwrap() {
        "pass" => 'P',
        "warn" => 'W',
        "fail" => 'F',
        "skip" => 'S',
        other => panic!("unknown status {other}"),
    }
}

#[test]
fn every_fixture_gives_the_documented_report() {
    let dir = tempfile::tempdir().unwrap();
    let mut problems = Vec::new();
    for (name, expected, words) in CASES {
        let img = fixture(name, dir.path());
        let (code, r) = verify_json(&img, &[]);
        let got: String = IDS
            .iter()
            .map(|id| status_letter(&check(&r, id)["status"]))
            .collect();
        if got != *expected {
            problems.push(format!(
                "{name}: statuses {got}, expected {expected}: {r:#}"
            ));
            continue;
        }
        let failed = expected.contains('F');
        assert_eq!(r["verdict"], if failed { "fail" } else { "pass" }, "{name}");
        assert_eq!(code, if failed { 1 } else { 0 }, "{name}: exit status");
        for (id, w) in *words {
            let msg = check(&r, id)["message"].as_str().unwrap().to_string();
            if !msg.contains(w) {
                problems.push(format!("{name}: {id} message lacks {w:?}: {msg}"));
            }
        }
        // Every failure and warning says what to do.
        for c in r["checks"].as_array().unwrap() {
            if c["status"] == "fail" || c["status"] == "warn" {
                assert!(
                    c["hint"].as_str().is_some_and(|h| h.len() > 20),
                    "{name}: {} has no useful hint",
                    c["id"]
                );
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn os_identity_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let (_, r) = verify_json(&fixture("good-mbr.raw", dir.path()), &[]);
    let os = &r["os"];
    assert!(
        os["product_name"]
            .as_str()
            .unwrap()
            .contains("Windows Server 2012 R2"),
        "{os:#}"
    );
    assert_eq!(os["control_set"], "ControlSet001");
    assert!(
        os["version"].as_str().unwrap().starts_with("6.3.9600"),
        "{os:#}"
    );
    let (_, r) = verify_json(&fixture("dirty-log.raw", dir.path()), &[]);
    assert_eq!(r["os"]["hives_replayed"][0], "SYSTEM");
    let (_, r) = verify_json(&fixture("controlset2.raw", dir.path()), &[]);
    assert_eq!(r["os"]["control_set"], "ControlSet002");
    let (_, r) = verify_json(&fixture("ws2019.raw", dir.path()), &[]);
    assert!(
        r["os"]["version"]
            .as_str()
            .unwrap()
            .starts_with("10.0.17763"),
        "{:#}",
        r["os"]
    );
}

#[test]
fn text_report_has_one_line_per_check_and_hints_under_failures() {
    let dir = tempfile::tempdir().unwrap();
    let img = fixture("vmware.raw", dir.path());
    let o = imgcheck(&["verify", &img.display().to_string()]);
    assert_eq!(o.status.code(), Some(1));
    let text = String::from_utf8(o.stdout).unwrap();
    for id in IDS {
        assert_eq!(
            text.lines().filter(|l| l.contains(id)).count(),
            1,
            "{id} in\n{text}"
        );
    }
    let fail_line = text
        .lines()
        .position(|l| l.contains("FAIL") && l.contains("software.conflicts"))
        .unwrap();
    let next = text.lines().nth(fail_line + 1).unwrap();
    assert!(next.contains("→") && next.contains("uninstall"), "{text}");
    assert!(text.contains("verdict: FAIL"));
    assert!(
        text.contains("os: Windows Server 2012 R2 Standard, 6.3.9600"),
        "{text}"
    );
}

#[test]
fn policy_turns_checks_off_or_into_warnings() {
    let dir = tempfile::tempdir().unwrap();
    let img = fixture("efi.raw", dir.path());
    let (code, _) = verify_json(&img, &[]);
    assert_eq!(code, 1);
    let (code, r) = verify_json(&img, &["--set", "boot.firmware=warn"]);
    assert_eq!(code, 0);
    assert_eq!(check(&r, "boot.firmware")["status"], "warn");
    let pol = dir.path().join("uefi-cloud.toml");
    std::fs::write(&pol, "[checks]\n\"boot.firmware\" = \"off\"\n").unwrap();
    let (code, r) = verify_json(&img, &["--policy", &pol.display().to_string()]);
    assert_eq!(code, 0);
    assert_eq!(check(&r, "boot.firmware")["status"], "skip");
    // --strict: a warning fails.
    let (code, r) = verify_json(&fixture("dirty.raw", dir.path()), &["--strict"]);
    assert_eq!(code, 1);
    assert_eq!(r["verdict"], "fail");
    // A policy naming an unknown check is a usage error.
    std::fs::write(&pol, "[checks]\n\"boot.firmwar\" = \"off\"\n").unwrap();
    let o = imgcheck(&[
        "verify",
        "--policy",
        &pol.display().to_string(),
        &img.display().to_string(),
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("boot.firmwar"));
}

#[test]
fn inspect_reports_identity_boot_drivers_software_and_services() {
    let dir = tempfile::tempdir().unwrap();
    let img = fixture("vmware.raw", dir.path());
    let o = imgcheck(&["inspect", "--format", "json", &img.display().to_string()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(r["partition_table"]["kind"], "mbr");
    assert_eq!(r["windows_partition"], 1);
    let os = &r["os"];
    for f in [
        "product_name",
        "edition_id",
        "installation_type",
        "version",
        "build",
        "architecture",
        "system_root",
        "host_name",
        "time_zone",
    ] {
        assert!(os[f].is_string(), "os.{f} missing: {os:#}");
    }
    assert_eq!(os["drive_letters"][0]["letter"], "C:");
    assert!(os["applications"]
        .as_array()
        .unwrap()
        .iter()
        .any(|a| a["wow64"] == true));
    let services = os["services"].as_array().unwrap();
    assert!(services
        .iter()
        .any(|s| s["name"] == "vioscsi" && s["start"] == 0));
    assert_eq!(r["boot"]["bcd"]["firmware"], "bios");
    assert_eq!(r["virtio"]["state"], "ok");
    assert_eq!(r["cloudbase_init"]["installed"], true);
    let conflicts = r["conflicts"].as_array().unwrap();
    assert!(conflicts
        .iter()
        .any(|c| c["name"] == "vmci" && c["enabled"] == true));
    assert!(conflicts
        .iter()
        .all(|c| c["registry_path"].as_str().unwrap().len() > 5));
    // Text output carries the same facts.
    let o = imgcheck(&["inspect", &img.display().to_string()]);
    let text = String::from_utf8(o.stdout).unwrap();
    assert!(
        text.contains("Windows Server 2012 R2") && text.contains("vmci") && text.contains("BIOS"),
        "{text}"
    );
}

/// fixtures/expected.tsv (written with the fixtures, the same as fixtures/README.md) against
/// what verify reports: every check's status and keyword, the verdict, and the extra warnings
/// (reported by `system.state`).
#[test]
fn fixtures_expected_tsv_holds() {
    let dir = tempfile::tempdir().unwrap();
    let tsv = std::fs::read_to_string(fixture_path("expected.tsv")).unwrap();
    let mut reports: std::collections::BTreeMap<String, serde_json::Value> = Default::default();
    let mut problems = Vec::new();
    let mut rows = 0;
    for line in tsv
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
    {
        let cols: Vec<&str> = line.split('\t').collect();
        let (file, what, status) = (cols[0], cols[1], cols.get(2).copied().unwrap_or(""));
        let keyword = cols.get(3).copied().unwrap_or("").to_lowercase();
        let name = file.strip_suffix(".xz").unwrap_or(file);
        let r = reports
            .entry(name.to_string())
            .or_insert_with(|| verify_json(&fixture(name, dir.path()), &[]).1);
        rows += 1;
        let (got, text) = match what {
            "verdict" => (r["verdict"].as_str().unwrap().to_string(), String::new()),
            "note" => (String::new(), r.to_string()),
            "warning" => {
                let c = check(r, "system.state");
                (
                    c["status"].as_str().unwrap().to_string(),
                    c["message"].to_string(),
                )
            }
            id => {
                let c = check(r, id);
                (
                    c["status"].as_str().unwrap().to_string(),
                    c["message"].to_string(),
                )
            }
        };
        if !status.is_empty() && got != status {
            problems.push(format!("{name} {what}: {got}, expected {status}"));
        }
        if !keyword.is_empty() && !text.to_lowercase().contains(&keyword) {
            problems.push(format!("{name} {what}: {keyword:?} not in {text}"));
        }
    }
    assert!(rows > 300, "expected.tsv has {rows} rows");
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn an_image_with_a_backing_file_must_be_flattened_first() {
    if !have("qemu-img") {
        eprintln!("SKIP: qemu-img not installed");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let base = fixture("good-mbr.raw", dir.path());
    let over = dir.path().join("overlay.qcow2");
    let o = over.display().to_string();
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-b",
        &base.display().to_string(),
        "-F",
        "raw",
        &o,
    ]);
    // Without --allow-backing the backing file is not followed: the image cannot be read.
    let (code, r) = verify_json(&over, &[]);
    assert_eq!(code, 2);
    assert!(r["error"].as_str().unwrap().contains("--allow-backing"));
    // With it, everything inside is checked, and image.format says to flatten.
    let (code, r) = verify_json(&over, &["--allow-backing"]);
    assert_eq!(code, 1);
    let f = check(&r, "image.format");
    assert_eq!(f["status"], "fail");
    assert!(
        f["message"].as_str().unwrap().contains("good-mbr.raw"),
        "{f:#}"
    );
    assert!(f["hint"].as_str().unwrap().contains("flatten"));
    assert_eq!(check(&r, "drivers.virtio")["status"], "pass");
    // Flattened as the hint says, it passes.
    let flat = dir.path().join("flat.qcow2");
    let fl = flat.display().to_string();
    let out = imgcheck(&["convert", "-q", "-O", "qcow2", "--allow-backing", &o, &fl]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (code, r) = verify_json(&flat, &[]);
    assert_eq!(code, 0, "{r:#}");
}

/// A bare hive of a registry variant (fixtures/hives/VARIANT/NAME.xz), decompressed into `dir`.
fn variant_hive(variant: &str, name: &str, dir: &std::path::Path) -> std::path::PathBuf {
    use std::io::Read;
    let xz = fixture_path(&format!("hives/{variant}/{name}.xz"));
    let mut data = Vec::new();
    xz2::read::XzDecoder::new(std::fs::File::open(&xz).unwrap())
        .read_to_end(&mut data)
        .unwrap();
    let out = dir.join(format!("{variant}-{name}"));
    std::fs::write(&out, data).unwrap();
    out
}

/// `hivexsh`'s values of `key` (`"name"=rendering` lines), or None when the key does not exist.
fn hivexsh_values(hive: &std::path::Path, key: &str) -> Option<Vec<(String, String)>> {
    use std::io::Write;
    let mut child = std::process::Command::new("hivexsh")
        .arg(hive)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    write!(child.stdin.take().unwrap(), "cd {key}\nlsval\n").unwrap();
    let o = child.wait_with_output().unwrap();
    if !o.status.success() || !o.stderr.is_empty() {
        return None;
    }
    Some(
        String::from_utf8_lossy(&o.stdout)
            .lines()
            .filter_map(|l| {
                let (n, v) = l.split_once('=')?;
                Some((n.trim_matches('"').to_string(), v.to_string()))
            })
            .collect(),
    )
}

/// hivexsh's `hex(7):` rendering of a REG_MULTI_SZ as its strings.
fn multi_sz(rendering: &str) -> Vec<String> {
    let hex = rendering.strip_prefix("hex(7):").expect("a REG_MULTI_SZ");
    let bytes: Vec<u8> = hex
        .split(',')
        .map(|b| u8::from_str_radix(b, 16).unwrap())
        .collect();
    let units: Vec<u16> = bytes
        .chunks(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .collect();
    String::from_utf16(&units)
        .unwrap()
        .split('\0')
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

fn inspect_json(img: &std::path::Path) -> serde_json::Value {
    let o = imgcheck(&["inspect", "--format", "json", &img.display().to_string()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&o.stdout).unwrap()
}

/// The StartOverride, dangling-filter and remnant fixtures: what imgcheck reads from the image
/// is what hivexsh reads from the same hive, and the verdicts follow from it (the statuses are
/// in CASES above).
#[test]
fn start_override_filters_and_remnants_agree_with_hivexsh() {
    if !have("hivexsh") {
        eprintln!("SKIP: hivexsh not installed (.ci/run installs it)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let cs = "ControlSet001";

    // StartOverride: hivexsh sees "0"=dword:3 under both drivers; imgcheck reports the same.
    let sys = variant_hive("virtio-startoverride", "SYSTEM", dir.path());
    let r = inspect_json(&fixture("virtio-startoverride.raw", dir.path()));
    assert_eq!(
        r["virtio"]["state"], "start_overridden",
        "{:#}",
        r["virtio"]
    );
    for d in r["virtio"]["drivers"].as_array().unwrap() {
        let name = d["name"].as_str().unwrap();
        let key = format!("{cs}\\Services\\{name}\\StartOverride");
        let hv = hivexsh_values(&sys, &key).expect("StartOverride key");
        assert_eq!(hv, vec![("0".to_string(), "dword:00000003".to_string())]);
        assert_eq!(d["start_override"]["registry_path"], key);
        assert_eq!(d["start_override"]["values"], serde_json::json!([["0", 3]]));
        assert_eq!(d["state"], "start_overridden");
    }
    let (code, v) = verify_json(&fixture("virtio-startoverride.raw", dir.path()), &[]);
    assert_eq!(code, 1);
    let hint = check(&v, "drivers.virtio")["hint"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        hint.contains("reg delete") && hint.contains("StartOverride"),
        "{hint}"
    );

    // Dangling filters: the filter lists as hivexsh decodes them, and the service's state.
    for (variant, guid, value, filter, problem) in [
        (
            "filter-missing",
            "{4d36e967-e325-11ce-bfc1-08002be10318}",
            "UpperFilters",
            "snapman",
            "missing",
        ),
        (
            "filter-disabled",
            "{4d36e97b-e325-11ce-bfc1-08002be10318}",
            "LowerFilters",
            "sptd",
            "disabled",
        ),
    ] {
        let sys = variant_hive(variant, "SYSTEM", dir.path());
        let class = hivexsh_values(&sys, &format!("{cs}\\Control\\Class\\{guid}")).unwrap();
        let listed = multi_sz(&class.iter().find(|(n, _)| n == value).unwrap().1);
        let r = inspect_json(&fixture(&format!("{variant}.raw"), dir.path()));
        let mine: Vec<&serde_json::Value> = r["storage_filters"]["filters"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|f| f["class_guid"] == guid && f["value"] == value)
            .collect();
        let names: Vec<&str> = mine.iter().map(|f| f["filter"].as_str().unwrap()).collect();
        assert_eq!(names, listed, "{variant}");
        assert!(
            listed.contains(&filter.to_string()),
            "{variant}: {listed:?}"
        );
        let broken = mine.iter().find(|f| f["filter"] == filter).unwrap();
        assert_eq!(broken["problem"]["kind"], problem, "{variant}");
        let service = hivexsh_values(&sys, &format!("{cs}\\Services\\{filter}"));
        match problem {
            "missing" => assert!(service.is_none(), "{variant}: hivexsh finds {filter}"),
            _ => assert!(service
                .unwrap()
                .contains(&("Start".to_string(), "dword:00000004".to_string()))),
        }
        // The other entries load (partmgr on the disk class).
        for f in mine.iter().filter(|f| f["filter"] != filter) {
            assert!(f["problem"].is_null(), "{variant}: {f}");
        }
        let (code, v) = verify_json(&fixture(&format!("{variant}.raw"), dir.path()), &[]);
        assert_eq!(code, 1);
        let msg = check(&v, "drivers.storage-filters")["message"]
            .as_str()
            .unwrap()
            .to_string();
        for w in [guid, value, filter] {
            assert!(msg.contains(w), "{variant}: {w} not in {msg}");
        }
    }

    // A remnant: hivexsh lists only the installer's value; imgcheck calls it a remnant (a
    // warning), not an enabled conflict, and the image passes.
    let sys = variant_hive("remnant", "SYSTEM", dir.path());
    let vals = hivexsh_values(&sys, &format!("{cs}\\Services\\pvscsi")).unwrap();
    let names: Vec<&str> = vals.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["vwdk.installers"]);
    let r = inspect_json(&fixture("remnant.raw", dir.path()));
    let c = r["conflicts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "pvscsi")
        .expect("pvscsi reported");
    assert_eq!(
        (&c["remnant"], &c["enabled"]),
        (&true.into(), &false.into())
    );
    let (code, v) = verify_json(&fixture("remnant.raw", dir.path()), &[]);
    assert_eq!((code, v["verdict"].as_str()), (0, Some("pass")));
    assert_eq!(check(&v, "software.conflicts")["status"], "warn");
}
