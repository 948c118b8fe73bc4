//! Batch conversion: resumable after a kill; many images verified in one call.
mod common;
use common::*;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[test]
fn batch_convert_killed_midway_redoes_no_complete_output() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    // Sources large enough that the kill lands mid-run.
    let mut srcs = Vec::new();
    for i in 0..4 {
        let p = dir.path().join(format!("img{i}.raw"));
        make_pattern_raw(&p, 96 * 1024 * 1024 + 512 * i, 100 + i);
        srcs.push(p.display().to_string());
    }
    let mut args = vec![
        "batch-convert".to_string(),
        "-O".into(),
        "raw".into(),
        "-j".into(),
        "1".into(),
        "--out-dir".into(),
        out.display().to_string(),
    ];
    args.extend(srcs.iter().cloned());
    let mut child = Command::new(imgcheck_bin())
        .args(&args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Kill it as soon as the first output is complete (and before the last one is).
    let first = out.join("img0.raw");
    let last = out.join("img3.raw");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !first.exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(2));
    }
    child.kill().unwrap(); // SIGKILL: no chance to clean up
    child.wait().unwrap();
    assert!(first.exists(), "first output never appeared");
    let killed_midway = !last.exists();
    let complete: Vec<_> = (0..4)
        .map(|i| out.join(format!("img{i}.raw")))
        .filter(|p| p.exists())
        .collect();
    let mtimes: Vec<_> = complete
        .iter()
        .map(|p| std::fs::metadata(p).unwrap().modified().unwrap())
        .collect();
    // Every output present is complete (outputs appear only by rename).
    for p in &complete {
        let i: usize = p.file_stem().unwrap().to_string_lossy()[3..]
            .parse()
            .unwrap();
        assert_eq!(std::fs::read(p).unwrap(), std::fs::read(&srcs[i]).unwrap());
    }
    // Run again: complete outputs are kept, the rest converted, no temporaries remain.
    let o = Command::new(imgcheck_bin())
        .args(&args)
        .args(["--format", "json"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let items = v["items"].as_array().unwrap();
    for (p, m) in complete.iter().zip(&mtimes) {
        assert_eq!(
            std::fs::metadata(p).unwrap().modified().unwrap(),
            *m,
            "{} was redone",
            p.display()
        );
        let item = items
            .iter()
            .find(|i| i["output"] == p.display().to_string())
            .unwrap();
        assert_eq!(item["outcome"], "skipped-complete");
    }
    let converted = items.iter().filter(|i| i["outcome"] == "converted").count();
    assert_eq!(converted, 4 - complete.len());
    if killed_midway {
        assert!(converted > 0);
    }
    for (i, s) in srcs.iter().enumerate() {
        let p = out.join(format!("img{i}.raw"));
        assert_eq!(std::fs::read(&p).unwrap(), std::fs::read(s).unwrap());
    }
    let leftovers: Vec<_> = std::fs::read_dir(&out)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp-imgcheck"))
        .collect();
    assert!(leftovers.is_empty(), "temporaries left: {leftovers:?}");
}
