//! Raw images and format detection.
mod common;
use common::*;

#[test]
fn raw_reads_back_identically_and_stays_sparse() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("disk.raw");
    make_pattern_raw(&src, 5 * 1024 * 1024 + 123, 7);
    let ours = imgcheck_guest_bytes(&src, dir.path(), &[]);
    let theirs = std::fs::read(&src).unwrap();
    assert_same_guest(&ours, &theirs, "raw");
    let info = imgcheck_info(&src);
    assert_eq!(info["format"], "raw");
    assert_eq!(info["virtual_size"], 5 * 1024 * 1024 + 123);
    let q = qemu_info(&src, None);
    // qemu-img rounds a raw file's size up to a whole 512-byte sector; imgcheck reports the
    // exact number of bytes the guest can read.
    let ours = info["virtual_size"].as_u64().unwrap();
    assert_eq!(
        q["virtual-size"].as_u64().unwrap(),
        ours.div_ceil(512) * 512
    );
    // holes are not counted as allocated
    assert!(info["allocated"].as_u64().unwrap() < 5 * 1024 * 1024);
}

#[test]
fn vhdx_is_refused_with_exit_2_and_advice() {
    if !have("qemu-img") {
        eprintln!("SKIP: qemu-img not installed");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("disk.vhdx");
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "vhdx",
        &img.display().to_string(),
        "16M",
    ]);
    let o = imgcheck(&["info", &img.display().to_string()]);
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("VHDX"), "{err}");
    assert!(err.contains("Use Vhdx"), "{err}");
    assert!(err.contains("disk.vhdx"), "{err}");
}

#[test]
fn extension_that_disagrees_with_content_warns() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("disk.qcow2");
    make_pattern_raw(&img, 1024 * 1024, 3);
    let info = imgcheck_info(&img);
    assert_eq!(info["format"], "raw");
    let w = info["warnings"].to_string();
    assert!(w.contains(".qcow2") && w.contains("raw"), "{w}");
}

#[test]
fn missing_file_is_exit_2_naming_it() {
    let o = imgcheck(&["info", "/nonexistent/dir/x.vhd"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("/nonexistent/dir/x.vhd"));
}
