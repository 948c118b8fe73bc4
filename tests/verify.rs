//! `imgcheck verify` over every fixture (see fixtures/README.md): each check's status, the key
//! words of its message, the verdict and the exit status.
mod common;
use common::*;

const IDS: [&str; 8] = [
    "image.format",
    "disk.partition-table",
    "disk.first-partition",
    "boot.firmware",
    "drivers.virtio",
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
        "PPPPPPPP",
        &[
            ("boot.firmware", "winload.exe"),
            ("drivers.virtio", "boot-start"),
        ],
    ),
    (
        "good-sysres.raw",
        "PPPPPPPP",
        &[("disk.first-partition", "Windows is on partition 2")],
    ),
    (
        "ws2008r2.raw",
        "PPPPPPPP",
        &[("drivers.virtio", "CriticalDeviceDatabase")],
    ),
    ("ws2019.raw", "PPPPPPPP", &[]),
    (
        "gpt.raw",
        "PFPFPPPP",
        &[("disk.partition-table", "GPT"), ("boot.firmware", "GPT")],
    ),
    (
        "hybrid-mbr.raw",
        "PFPFPPPP",
        &[("disk.partition-table", "hybrid")],
    ),
    (
        "bare-ntfs.raw",
        "PFFSSSSS",
        &[("disk.partition-table", "image of one partition")],
    ),
    (
        "zeros.raw",
        "PFFSSSSS",
        &[("disk.partition-table", "no partition table")],
    ),
    (
        "dynamic-ldm.raw",
        "PFPFPPPP",
        &[("disk.partition-table", "dynamic disk")],
    ),
    (
        "overlap.raw",
        "PFPPPPPP",
        &[("disk.partition-table", "overlap")],
    ),
    (
        "past-end.raw",
        "PFPPPPPP",
        &[("disk.partition-table", "past the end")],
    ),
    (
        "fat-first.raw",
        "PPFSSSSS",
        &[("disk.first-partition", "FAT16, not NTFS")],
    ),
    (
        "zeros-first.raw",
        "PPFSSSSS",
        &[("disk.first-partition", "all zeros")],
    ),
    (
        "bad-bootsector.raw",
        "PPFSSSSS",
        &[("disk.first-partition", "does not open")],
    ),
    (
        "bad-mft-record.raw",
        "PPFSSSSS",
        &[("disk.first-partition", "does not open")],
    ),
    (
        "dirty.raw",
        "PPWPPPPP",
        &[("disk.first-partition", "dirty")],
    ),
    (
        "bitlocker.raw",
        "PPFSSSSS",
        &[("disk.first-partition", "BitLocker")],
    ),
    (
        "hibernated.raw",
        "PPFPPPPP",
        &[("disk.first-partition", "HIBR")],
    ),
    (
        "odd-size.raw",
        "WPPPPPPP",
        &[("image.format", "not a multiple of 1 MiB")],
    ),
    (
        "efi.raw",
        "PPPFPPPP",
        &[("boot.firmware", "EFI system partition")],
    ),
    (
        "no-virtio.raw",
        "PPPPFPPP",
        &[("drivers.virtio", "no Virtio storage driver")],
    ),
    (
        "virtio-demand.raw",
        "PPPPFPPP",
        &[("drivers.virtio", "not 0 (boot)")],
    ),
    (
        "virtio-staged.raw",
        "PPPPFPPP",
        &[("drivers.virtio", "staged in the driver store")],
    ),
    (
        "virtio-sys-missing.raw",
        "PPPPFPPP",
        &[("drivers.virtio", "vioscsi.sys")],
    ),
    (
        "virtio-unbound.raw",
        "PPPPFPPP",
        &[("drivers.virtio", "VEN_1AF4&DEV_1004")],
    ),
    ("no-netkvm.raw", "PPPPWPPP", &[("drivers.virtio", "netkvm")]),
    (
        "no-cloudbase.raw",
        "PPPPPFPP",
        &[("software.cloudbase-init", "not installed")],
    ),
    (
        "vmware.raw",
        "PPPPPPFP",
        &[
            ("software.conflicts", "VMware Tools"),
            ("software.conflicts", "vmci"),
        ],
    ),
    (
        "vmware-disabled.raw",
        "PPPPPPWP",
        &[("software.conflicts", "disabled")],
    ),
    (
        "xen.raw",
        "PPPPPPFP",
        &[
            ("software.conflicts", "Xen PV"),
            ("software.conflicts", "xenvbd"),
        ],
    ),
    (
        "xen-disabled.raw",
        "PPPPPPWP",
        &[("software.conflicts", "disabled")],
    ),
    (
        "vbox.raw",
        "PPPPPPFP",
        &[
            ("software.conflicts", "VirtualBox"),
            ("software.conflicts", "VBoxGuest"),
        ],
    ),
    (
        "vbox-disabled.raw",
        "PPPPPPWP",
        &[("software.conflicts", "disabled")],
    ),
    (
        "parallels.raw",
        "PPPPPPFP",
        &[
            ("software.conflicts", "Parallels"),
            ("software.conflicts", "prl_"),
        ],
    ),
    (
        "parallels-disabled.raw",
        "PPPPPPWP",
        &[("software.conflicts", "disabled")],
    ),
    (
        "pending-rename.raw",
        "PPPPPPPW",
        &[("system.state", "pending")],
    ),
    (
        "fast-startup.raw",
        "PPPPPPPW",
        &[("system.state", "Fast Startup")],
    ),
    (
        "static-ip.raw",
        "PPPPPPPW",
        &[("system.state", "192.168.10.25")],
    ),
    (
        "rtu.raw",
        "PPPPPPPW",
        &[("system.state", "RealTimeIsUniversal")],
    ),
    (
        "too-big.qcow2",
        "PFPPPPPP",
        &[("disk.partition-table", "2 TiB")],
    ),
    // viostor is boot-start only in SYSTEM.LOG1: passes only when the log is replayed.
    (
        "dirty-log.raw",
        "PPPPPPPP",
        &[("system.state", "transaction logs were replayed")],
    ),
    // Select\Current = 2: ControlSet001 is stale and has no Virtio.
    ("controlset2.raw", "PPPPPPPP", &[]),
    // The good disk in every container format qemu-img makes.
    ("good-mbr.vpc-fixed.vhd", "PPPPPPPP", &[]),
    ("good-mbr.vpc-dynamic.vhd", "PPPPPPPP", &[]),
    ("good-mbr.qcow2", "PPPPPPPP", &[]),
    ("good-mbr.compressed.qcow2", "PPPPPPPP", &[]),
    ("good-mbr.monolithicSparse.vmdk", "PPPPPPPP", &[]),
    ("good-mbr.streamOptimized.vmdk", "PPPPPPPP", &[]),
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
