//! Offline repair: hives edited in place by `imgcheck::repair::hive_edit` are read by independent
//! readers (hivex's hivexregedit, regipy, python-registry) and by imgcheck's own reader, with the
//! new values and nothing else changed.

mod common;

use std::path::Path;

use imgcheck::repair::hive_edit::HiveEditor;
use imgcheck::windows::hive::Hive;

fn need_tools() -> bool {
    if !common::have("hivexregedit") {
        eprintln!("SKIP: hivexregedit is not installed (apt-get install -y libwin-hivex-perl)");
        return false;
    }
    let o = std::process::Command::new("python3")
        .args(["-c", "import regipy, Registry"])
        .output();
    if !o.is_ok_and(|o| o.status.success()) {
        eprintln!("SKIP: python packages regipy and python-registry are not installed");
        return false;
    }
    true
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// fixtures/hives/NAME/SYSTEM, decompressed.
fn system_hive(name: &str) -> Vec<u8> {
    use std::io::Read;
    let f = std::fs::File::open(common::fixture_path(&format!("hives/{name}/SYSTEM.xz"))).unwrap();
    let mut out = Vec::new();
    xz2::read::XzDecoder::new(f).read_to_end(&mut out).unwrap();
    out
}

/// A copy of fixtures/hives/NAME/SYSTEM with `reg` merged by hivexregedit (prefix HKLM\SYSTEM).
fn hive_with(dir: &Path, name: &str, reg: &str) -> std::path::PathBuf {
    let p = dir.join(format!("{name}.hive"));
    std::fs::write(&p, system_hive(name)).unwrap();
    if !reg.is_empty() {
        let r = dir.join(format!("{name}.reg"));
        std::fs::write(&r, format!("Windows Registry Editor Version 5.00\n\n{reg}")).unwrap();
        common::run(
            "hivexregedit",
            &[
                "--merge",
                "--prefix",
                "HKEY_LOCAL_MACHINE\\SYSTEM",
                s(&p),
                s(&r),
            ],
        );
    }
    p
}

/// `hivexregedit --export` of `key`.
fn export(hive: &Path, key: &str) -> String {
    let o = common::run(
        "hivexregedit",
        &[
            "--export",
            "--prefix",
            "HKEY_LOCAL_MACHINE\\SYSTEM",
            s(hive),
            key,
        ],
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Every key and value of the hive, as regipy and python-registry walk it: both must read the
/// whole hive without an error; returns regipy's lines `path\tname=value`.
fn walk_with_python(hive: &Path) -> Vec<String> {
    let script = r#"
import sys
from regipy.registry import RegistryHive
from Registry import Registry
h = RegistryHive(sys.argv[1])
out = []
for sk in h.recurse_subkeys(as_json=False):
    for v in (sk.values or []):
        out.append("%s\t%s=%r" % (sk.path, v.name, v.value))
def walk(k, n=[0]):
    n[0] += 1
    for v in k.values():
        v.value()
    for s in k.subkeys():
        walk(s)
    return n[0]
walk(Registry.Registry(sys.argv[1]).root())
print("\n".join(sorted(out)))
"#;
    let o = std::process::Command::new("python3")
        .args(["-c", script, s(hive)])
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "python readers failed on {}: {}",
        hive.display(),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

fn edit(path: &Path, f: impl FnOnce(&mut HiveEditor)) -> Vec<u8> {
    let bytes = std::fs::read(path).unwrap();
    let mut ed = HiveEditor::new("test hive", bytes).unwrap();
    f(&mut ed);
    let out = ed.finish(imgcheck::repair::hive_edit::filetime_now(), 0);
    std::fs::write(path, &out).unwrap();
    out
}

#[test]
fn dword_multi_sz_and_key_deletion_are_read_by_hivex_regipy_and_python_registry() {
    if !need_tools() {
        return;
    }
    let td = tempfile::tempdir().unwrap();
    let reg = "[HKEY_LOCAL_MACHINE\\SYSTEM\\ControlSet001\\Services\\viostor\\StartOverride]\n\
               \"0\"=dword:00000003\n\n\
               [HKEY_LOCAL_MACHINE\\SYSTEM\\ControlSet001\\Control\\Class]\n\n\
               [HKEY_LOCAL_MACHINE\\SYSTEM\\ControlSet001\\Control\\Class\\{4d36e967-e325-11ce-bfc1-08002be10318}]\n\
               \"UpperFilters\"=hex(7):70,00,61,00,72,00,74,00,6d,00,67,00,72,00,00,00,76,00,73,00,6e,00,61,00,70,00,00,00,00,00\n";
    let hive = hive_with(td.path(), "virtio-demand", reg);
    let before = walk_with_python(&hive);
    let original = std::fs::read(&hive).unwrap();
    let out = edit(&hive, |ed| {
        let viostor = ed.key("ControlSet001\\Services\\viostor").unwrap().unwrap();
        ed.set_dword(viostor, "Start", 0, "viostor").unwrap();
        ed.delete_key(viostor, "StartOverride", "viostor").unwrap();
        let class = ed
            .key("ControlSet001\\Control\\Class\\{4d36e967-e325-11ce-bfc1-08002be10318}")
            .unwrap()
            .unwrap();
        ed.set_multi_sz(class, "UpperFilters", &["partmgr".into()], "DiskDrive")
            .unwrap();
    });
    assert_eq!(out.len(), original.len(), "the hive keeps its length");
    // hivex
    let v = export(&hive, "\\ControlSet001\\Services\\viostor");
    assert!(v.contains("\"Start\"=dword:00000000"), "{v}");
    assert!(!v.contains("StartOverride"), "{v}");
    let c = export(&hive, "\\ControlSet001\\Control\\Class");
    assert!(c.contains("UpperFilters"), "{c}");
    assert!(!c.contains("76,00,73,00"), "vsnap still listed: {c}");
    // regipy and python-registry read the whole hive; only the edited values differ.
    let after = walk_with_python(&hive);
    let gone: Vec<&String> = before.iter().filter(|l| !after.contains(l)).collect();
    let new: Vec<&String> = after.iter().filter(|l| !before.contains(l)).collect();
    assert_eq!(gone.len(), 3, "{gone:?}");
    assert!(gone.iter().any(|l| l.contains("StartOverride")), "{gone:?}");
    assert_eq!(new.len(), 2, "{new:?}");
    assert!(
        new.iter().any(|l| l.contains("viostor\tStart=0")),
        "{new:?}"
    );
    assert!(
        new.iter().any(|l| l.contains("UpperFilters=['partmgr']")),
        "{new:?}"
    );
    // imgcheck's reader: clean, and the values it will check.
    let h = Hive::open("edited", &out, &[]).unwrap();
    let k = h.key("ControlSet001\\Services\\viostor").unwrap().unwrap();
    assert_eq!(k.dword("Start"), Some(0));
    assert!(h
        .key("ControlSet001\\Services\\viostor\\StartOverride")
        .unwrap()
        .is_none());
}

#[test]
fn base_block_is_clean_and_above_the_logs_sequence() {
    if !need_tools() {
        return;
    }
    let td = tempfile::tempdir().unwrap();
    let hive = hive_with(td.path(), "virtio-demand", "");
    let bytes = std::fs::read(&hive).unwrap();
    let seq = u32::from_le_bytes(bytes[4..8].try_into().unwrap());
    let mut ed = HiveEditor::new("t", bytes).unwrap();
    let k = ed.key("ControlSet001\\Services\\vioscsi").unwrap().unwrap();
    ed.set_dword(k, "Start", 0, "vioscsi").unwrap();
    let out = ed.finish(133_000_000_000_000_000, seq + 40);
    let s1 = u32::from_le_bytes(out[4..8].try_into().unwrap());
    let s2 = u32::from_le_bytes(out[8..12].try_into().unwrap());
    assert_eq!((s1, s2), (seq + 41, seq + 41));
    assert_eq!(
        u32::from_le_bytes(out[508..512].try_into().unwrap()),
        imgcheck::repair::hive_edit::base_block_checksum(&out)
    );
    std::fs::write(&hive, &out).unwrap();
    walk_with_python(&hive);
    // A dirty hive is refused: it must be replayed first.
    let mut dirty = out.clone();
    dirty[4] ^= 1;
    let sum = imgcheck::repair::hive_edit::base_block_checksum(&dirty);
    dirty[508..512].copy_from_slice(&sum.to_le_bytes());
    assert!(HiveEditor::new("t", dirty).is_err());
}

#[test]
fn edits_that_do_not_fit_are_refused_and_change_nothing() {
    let bytes = system_hive("virtio-demand");
    let mut ed = HiveEditor::new("t", bytes.clone()).unwrap();
    let k = ed.key("ControlSet001\\Services\\viostor").unwrap().unwrap();
    // A value that is not there, a string where a DWORD is expected, a key that is not there.
    assert!(ed.set_dword(k, "NoSuchValue", 0, "viostor").is_err());
    assert!(ed.set_dword(k, "ImagePath", 0, "viostor").is_err());
    assert!(ed.delete_key(k, "NoSuchKey", "viostor").is_err());
    let huge: Vec<String> = (0..2000).map(|i| format!("filter{i}")).collect();
    let class = ed.key("ControlSet001\\Services").unwrap().unwrap();
    assert!(ed.set_multi_sz(class, "NoSuchValue", &huge, "x").is_err());
    let out = ed.finish(0, 0);
    // Only the base block changed (sequence, time, checksum).
    assert_eq!(out[4096..], bytes[4096..]);
}
