//! `imgcheck fix`: repairs planned on the source, written to a new image, verified again; the
//! source never written. Oracles: imgcheck verify, qemu-img check, ntfscat + hivexregedit on the
//! repaired hive.

mod common;
use common::*;

use std::path::Path;

fn sha(p: &Path) -> Vec<u8> {
    run("sha256sum", &[p.to_str().unwrap()]).stdout
}

fn status(report: &serde_json::Value, id: &str) -> String {
    check(report, id)["status"].as_str().unwrap().to_string()
}

/// The SYSTEM hive of a repaired image, as ntfscat reads it from the converted raw disk.
fn system_hive_of(img: &Path, dir: &Path) -> std::path::PathBuf {
    let raw = dir.join("out.raw");
    qemu_img(&[
        "convert",
        "-O",
        "raw",
        img.to_str().unwrap(),
        raw.to_str().unwrap(),
    ]);
    let bytes = std::fs::read(&raw).unwrap();
    let part = dir.join("out-part.img");
    std::fs::write(&part, &bytes[1 << 20..(1 << 20) + 129_024 * 512]).unwrap();
    let o = run(
        "ntfscat",
        &[part.to_str().unwrap(), "/Windows/System32/config/SYSTEM"],
    );
    let hive = dir.join("SYSTEM.out");
    std::fs::write(&hive, o.stdout).unwrap();
    hive
}

#[test]
fn fix_makes_virtio_boot_start_and_the_result_verifies() {
    for t in ["qemu-img", "ntfscat", "hivexregedit"] {
        if !have(t) {
            eprintln!("SKIP: {t} is not installed (.ci/run installs it)");
            return;
        }
    }
    let td = tempfile::tempdir().unwrap();
    let src = fixture("virtio-demand.raw", td.path());
    let before = sha(&src);
    let (rc, rep) = verify_json(&src, &[]);
    assert_eq!((rc, status(&rep, "drivers.virtio").as_str()), (1, "fail"));
    let dst = td.path().join("fixed.qcow2");
    let o = imgcheck(&[
        "fix",
        "--format",
        "json",
        src.to_str().unwrap(),
        dst.to_str().unwrap(),
    ]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let out: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let repairs = out["plan"]["repairs"].as_array().unwrap();
    assert!(
        repairs
            .iter()
            .any(|r| r["key"] == "ControlSet001\\Services\\viostor"),
        "{out:#}"
    );
    assert_eq!(out["verify"]["verdict"], "pass", "{out:#}");
    assert_eq!(sha(&src), before, "the source was written");
    // Independent readers: qemu-img check, and hivex on the hive as ntfs-3g reads it.
    let c = qemu_img(&["check", dst.to_str().unwrap()]);
    assert!(
        String::from_utf8_lossy(&c.stdout).contains("No errors"),
        "{c:?}"
    );
    let hive = system_hive_of(&dst, td.path());
    let v = run(
        "hivexregedit",
        &[
            "--export",
            hive.to_str().unwrap(),
            "\\ControlSet001\\Services\\viostor",
        ],
    );
    assert!(
        String::from_utf8_lossy(&v.stdout).contains("\"Start\"=dword:00000000"),
        "{v:?}"
    );
    // A second fix has nothing left to do.
    let o = imgcheck(&["fix", "--dry-run", dst.to_str().unwrap()]);
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("nothing to repair"),
        "{o:?}"
    );
}

#[test]
fn fix_removes_startoverride_dangling_filters_and_disables_vmware() {
    let td = tempfile::tempdir().unwrap();
    for (name, id) in [
        ("virtio-startoverride", "drivers.virtio"),
        ("vmware", "software.conflicts"),
        ("filter-missing", "drivers.storage-filters"),
        ("filter-disabled", "drivers.storage-filters"),
    ] {
        let src = fixture(&format!("{name}.raw"), td.path());
        let dst = td.path().join(format!("{name}.fixed.raw"));
        let o = imgcheck(&[
            "fix",
            "-O",
            "raw",
            src.to_str().unwrap(),
            dst.to_str().unwrap(),
        ]);
        assert!(
            o.status.code().is_some_and(|c| c < 2),
            "{name}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let (_, before) = verify_json(&src, &[]);
        let (_, after) = verify_json(&dst, &[]);
        assert_eq!(status(&before, id), "fail", "{name}");
        assert_ne!(status(&after, id), "fail", "{name}: {after:#}");
    }
    // hivex reads the shortened filter list from the hive as ntfs-3g reads it.
    if have("hivexregedit") && have("ntfscat") && have("qemu-img") {
        let hive = system_hive_of(&td.path().join("filter-missing.fixed.raw"), td.path());
        let class = "\\ControlSet001\\Control\\Class\\{4d36e967-e325-11ce-bfc1-08002be10318}";
        let v = run("hivexregedit", &["--export", hive.to_str().unwrap(), class]);
        let text = String::from_utf8_lossy(&v.stdout);
        assert!(text.contains("UpperFilters"), "{text}");
        // "snapman" in UTF-16LE hex is gone; "partmgr" stays.
        assert!(!text.contains("73,00,6e,00,61,00,70,00"), "{text}");
        assert!(text.contains("70,00,61,00,72,00,74,00"), "{text}");
    } else {
        eprintln!(
            "SKIP: hivexregedit, ntfscat or qemu-img missing: filter list not checked with hivex"
        );
    }
}

#[test]
fn fix_refuses_hibernated_windows_and_dirty_volumes_and_says_what_cannot_be_repaired() {
    let td = tempfile::tempdir().unwrap();
    let src = fixture("hibernated.raw", td.path());
    let dst = td.path().join("h.qcow2");
    let o = imgcheck(&["fix", src.to_str().unwrap(), dst.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("hibernated"));
    assert!(!dst.exists());
    let src = fixture("dirty.raw", td.path());
    let o = imgcheck(&["fix", src.to_str().unwrap(), dst.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("marked dirty"),
        "{o:?}"
    );
    assert!(!dst.exists());
    let src = fixture("no-virtio.raw", td.path());
    let o = imgcheck(&[
        "fix",
        "--dry-run",
        "--format",
        "json",
        src.to_str().unwrap(),
    ]);
    let out: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        out["plan"]["not_repairable"][0]["check"], "drivers.virtio",
        "{out:#}"
    );
}

#[test]
fn fix_turns_fast_startup_off() {
    let td = tempfile::tempdir().unwrap();
    let src = fixture("fast-startup.raw", td.path());
    let dst = td.path().join("fs.qcow2");
    let (_, before) = verify_json(&src, &[]);
    let msg = |r: &serde_json::Value| {
        check(r, "system.state")["message"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert!(msg(&before).contains("Fast Startup is enabled"));
    let o = imgcheck(&["fix", src.to_str().unwrap(), dst.to_str().unwrap()]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(String::from_utf8_lossy(&o.stdout).contains("HiberbootEnabled: 1 -> 0"));
    let (_, after) = verify_json(&dst, &[]);
    assert!(
        !msg(&after).contains("Fast Startup is enabled"),
        "{}",
        msg(&after)
    );
}

#[test]
fn fix_only_repairs_the_checks_named() {
    let td = tempfile::tempdir().unwrap();
    let src = fixture("fast-startup.raw", td.path());
    let o = imgcheck(&[
        "fix",
        "--dry-run",
        "--only",
        "drivers.virtio",
        src.to_str().unwrap(),
    ]);
    assert!(
        !String::from_utf8_lossy(&o.stdout).contains("HiberbootEnabled"),
        "{o:?}"
    );
    let o = imgcheck(&[
        "fix",
        "--dry-run",
        "--only",
        "system.state",
        src.to_str().unwrap(),
    ]);
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("HiberbootEnabled"),
        "{o:?}"
    );
    let o = imgcheck(&[
        "fix",
        "--dry-run",
        "--only",
        "image.format",
        src.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("not a check fix repairs"));
}
