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

/// Fixtures and the verdict each must get.
const VERDICTS: &[(&str, &str)] = &[
    ("good-mbr.raw", "pass"),
    ("good-sysres.raw", "pass"),
    ("ws2019.raw", "pass"),
    ("ws2008r2.raw", "pass"),
    ("dirty.raw", "pass"),
    ("no-netkvm.raw", "pass"),
    ("vmware-disabled.raw", "pass"),
    ("static-ip.raw", "pass"),
    ("gpt.raw", "fail"),
    ("hybrid-mbr.raw", "fail"),
    ("zeros.raw", "fail"),
    ("fat-first.raw", "fail"),
    ("bitlocker.raw", "fail"),
    ("hibernated.raw", "fail"),
    ("efi.raw", "fail"),
    ("no-virtio.raw", "fail"),
    ("virtio-demand.raw", "fail"),
    ("no-cloudbase.raw", "fail"),
    ("vmware.raw", "fail"),
    ("xen.raw", "fail"),
    ("vbox.raw", "fail"),
    ("good-mbr.compressed.qcow2", "pass"),
    ("good-mbr.streamOptimized.vmdk", "pass"),
    ("good-mbr.vpc-dynamic.vhd", "pass"),
];

fn many_fixtures(dir: &std::path::Path) -> Vec<String> {
    let mut paths: Vec<String> = VERDICTS
        .iter()
        .map(|(n, _)| fixture(n, dir).display().to_string())
        .collect();
    // An unreadable image too: verdict error.
    let bad = dir.join("truncated.qcow2");
    std::fs::write(&bad, b"QFI\xfb\0\0\0\x03").unwrap();
    paths.push(bad.display().to_string());
    paths
}

fn expected_verdict(path: &str) -> &'static str {
    VERDICTS
        .iter()
        .find(|(n, _)| path.ends_with(&format!("/{n}")))
        .map(|(_, v)| *v)
        .unwrap_or("error")
}

#[test]
fn many_images_in_one_call_jsonl_and_summary() {
    let dir = tempfile::tempdir().unwrap();
    let paths = many_fixtures(dir.path());
    assert!(paths.len() >= 20);
    let mut args = vec!["verify", "--format", "jsonl", "-j", "2"];
    args.extend(paths.iter().map(String::as_str));
    let o = imgcheck(&args);
    assert_eq!(
        o.status.code(),
        Some(2),
        "an unreadable image makes the run exit 2"
    );
    let lines: Vec<serde_json::Value> = std::str::from_utf8(&o.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), paths.len());
    for r in &lines {
        let img = r["image"].as_str().unwrap();
        assert_eq!(r["verdict"], expected_verdict(img), "{img}");
    }
    // Text: the summary table has one row per image with its verdict and failed checks.
    let mut args = vec!["verify"];
    args.extend(paths.iter().map(String::as_str));
    let o = imgcheck(&args);
    let text = String::from_utf8(o.stdout).unwrap();
    let table_start = text
        .lines()
        .position(|l| l.starts_with("IMAGE"))
        .expect("summary table");
    let rows: Vec<&str> = text
        .lines()
        .skip(table_start + 1)
        .take(paths.len())
        .collect();
    for (row, p) in rows.iter().zip(&paths) {
        assert!(row.starts_with(p.as_str()), "{row}");
        assert!(row.contains(expected_verdict(p)), "{row}");
    }
    let gpt_row = rows.iter().find(|r| r.contains("/gpt.raw")).unwrap();
    assert!(gpt_row.contains("disk.partition-table"), "{gpt_row}");
    let n = paths.len();
    let pass = VERDICTS.iter().filter(|(_, v)| *v == "pass").count();
    let fail = VERDICTS.iter().filter(|(_, v)| *v == "fail").count();
    assert!(
        text.contains(&format!(
            "{n} images: {pass} passed, {fail} failed, 1 could not be read"
        )),
        "{text}"
    );
    // Directories and --from-file give the same set.
    let list = dir.path().join("list.txt");
    std::fs::write(&list, paths.join("\n")).unwrap();
    let o = imgcheck(&[
        "verify",
        "--format",
        "jsonl",
        "--from-file",
        &list.display().to_string(),
    ]);
    assert_eq!(
        std::str::from_utf8(&o.stdout).unwrap().lines().count(),
        paths.len()
    );
}

#[test]
fn junit_report_is_read_by_a_real_junit_parser() {
    if !have("python3")
        || !std::process::Command::new("python3")
            .args(["-c", "import junitparser"])
            .status()
            .is_ok_and(|s| s.success())
    {
        eprintln!("SKIP: python3 junitparser not installed (.ci/run installs it)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let paths = many_fixtures(dir.path());
    let mut args = vec!["verify", "--format", "junit"];
    args.extend(paths.iter().map(String::as_str));
    let o = imgcheck(&args);
    let xml = dir.path().join("junit.xml");
    std::fs::write(&xml, &o.stdout).unwrap();
    // junitparser reads the report; print one line per testcase: suite, case, result.
    let script = r#"
import sys
from junitparser import JUnitXml, Failure, Error, Skipped
xml = JUnitXml.fromfile(sys.argv[1])
for suite in xml:
    for case in suite:
        kinds = [type(r).__name__ for r in case.result]
        print(f"{suite.name}\t{case.name}\t{','.join(kinds) or 'ok'}")
"#;
    let out = run("python3", &["-c", script, &xml.display().to_string()]);
    let text = String::from_utf8(out.stdout).unwrap();
    let cases: Vec<Vec<&str>> = text.lines().map(|l| l.split('\t').collect()).collect();
    assert_eq!(
        cases.len(),
        paths.len() * imgcheck::checks::CHECK_IDS.len(),
        "one testcase per image and check"
    );
    for p in &paths {
        let mine: Vec<&Vec<&str>> = cases.iter().filter(|c| c[0] == p).collect();
        assert_eq!(mine.len(), imgcheck::checks::CHECK_IDS.len(), "{p}");
        let failed = mine.iter().any(|c| c[2].contains("Failure"));
        let errored = mine.iter().any(|c| c[2].contains("Error"));
        match expected_verdict(p) {
            "pass" => assert!(!failed && !errored, "{p}: {mine:?}"),
            "fail" => assert!(failed && !errored, "{p}: {mine:?}"),
            _ => assert!(errored, "{p}: {mine:?}"),
        }
    }
    assert!(cases.iter().any(|c| c[0].ends_with("/vmware.raw")
        && c[1] == "software.conflicts"
        && c[2] == "Failure"));
}

#[test]
fn html_report_renders_in_headless_chromium() {
    let chromium = ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists());
    let Some(chromium) = chromium else {
        eprintln!("SKIP: chromium not installed (.ci/run installs it)");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let paths = many_fixtures(dir.path());
    let mut args = vec!["verify", "--format", "html"];
    args.extend(paths.iter().map(String::as_str));
    let o = imgcheck(&args);
    let html = String::from_utf8(o.stdout).unwrap();
    // Self-contained: nothing fetched from anywhere.
    for needle in ["http://", "https://", "<script", "<link", "src=\""] {
        assert!(!html.contains(needle), "html contains {needle}");
    }
    let page = dir.path().join("report.html");
    std::fs::write(&page, &html).unwrap();
    let profile = dir.path().join("profile");
    let chrome = |extra: &[&str]| {
        let mut c = std::process::Command::new(chromium);
        c.args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--window-size=1280,2000",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(extra)
        .arg(format!("file://{}", page.display()));
        c.output().expect("run chromium")
    };
    // What the browser renders (the DOM after layout), not just our string.
    let dom = String::from_utf8(chrome(&["--dump-dom"]).stdout).unwrap();
    let pass = VERDICTS.iter().filter(|(_, v)| *v == "pass").count();
    let fail = VERDICTS.iter().filter(|(_, v)| *v == "fail").count();
    let summary = format!(
        "{} images: {pass} passed, {fail} failed, 1 could not be read",
        paths.len()
    );
    assert!(
        dom.contains(&summary),
        "{summary} not in {}",
        &dom[..dom.len().min(2000)]
    );
    for p in &paths {
        assert!(dom.contains(p.as_str()), "{p} not in the rendered page");
    }
    for id in [
        "image.format",
        "disk.partition-table",
        "boot.firmware",
        "software.conflicts",
        "system.state",
    ] {
        assert!(dom.matches(id).count() >= paths.len(), "{id}");
    }
    assert!(dom.contains("Windows Server 2012 R2"), "OS identity shown");
    assert!(dom.contains("<svg"), "disk drawn");
    // And a screenshot, kept next to the test's output for people to look at.
    let shot = dir.path().join("report.png");
    let o = chrome(&[&format!("--screenshot={}", shot.display())]);
    let png = std::fs::read(&shot).unwrap_or_else(|e| {
        panic!(
            "no screenshot ({e}): {}",
            String::from_utf8_lossy(&o.stderr)
        )
    });
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 20_000,
        "screenshot is a real picture"
    );
    let keep = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("verify-report.png");
    std::fs::copy(&shot, &keep).unwrap();
    eprintln!("screenshot: {}", keep.display());
}

/// `--strict`: a warning fails the run, so the JUnit report shows it as a failure too; without
/// `--strict` it stays a passing testcase with its warning in system-out.
#[test]
fn junit_shows_warnings_as_failures_under_strict() {
    let dir = tempfile::tempdir().unwrap();
    let img = fixture("dirty.raw", dir.path()).display().to_string();
    let case = |xml: &str| {
        let start = xml.find("name=\"disk.first-partition\"").expect("testcase");
        let end = start + xml[start..].find("</testcase>").unwrap();
        xml[start..end].to_string()
    };
    let o = imgcheck(&["verify", "--format", "junit", &img]);
    assert_eq!(o.status.code(), Some(0));
    let xml = String::from_utf8(o.stdout).unwrap();
    assert!(case(&xml).contains("<system-out>WARNING"), "{xml}");
    assert!(xml.contains("failures=\"0\""), "{xml}");

    let o = imgcheck(&["verify", "--strict", "--format", "junit", &img]);
    assert_eq!(o.status.code(), Some(1));
    let xml = String::from_utf8(o.stdout).unwrap();
    let c = case(&xml);
    assert!(c.contains("<failure") && c.contains("--strict"), "{c}");
    assert!(
        xml.contains("<testsuites name=\"imgcheck\"") && xml.contains("failures=\"1\""),
        "{xml}"
    );
    // The JSON says strict and keeps the check's own status.
    let (code, r) = verify_json(std::path::Path::new(&img), &["--strict"]);
    assert_eq!((code, &r["strict"]), (1, &serde_json::Value::Bool(true)));
    assert_eq!(check(&r, "disk.first-partition")["status"], "warn");
}

/// A reader that closes standard output early (`imgcheck verify DIR | head -1`) does not turn a
/// failed run into exit 0: the status is still the images' verdict, in every format.
#[test]
fn closed_stdout_keeps_the_verdict() {
    let dir = tempfile::tempdir().unwrap();
    let good = fixture("good-mbr.raw", dir.path()).display().to_string();
    let bad = fixture("vmware.raw", dir.path()).display().to_string();
    for format in ["text", "json", "jsonl", "junit", "html"] {
        for (imgs, want) in [(vec![&good, &bad], 1), (vec![&good], 0)] {
            let mut child = Command::new(imgcheck_bin())
                .args(["verify", "--format", format])
                .args(&imgs)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            // Close the read end before imgcheck writes anything: every write gets EPIPE.
            drop(child.stdout.take());
            let o = child.wait_with_output().unwrap();
            assert_eq!(
                o.status.code(),
                Some(want),
                "{format} {imgs:?}: {}",
                String::from_utf8_lossy(&o.stderr)
            );
        }
    }
    // As a shell pipeline would: read the first line, then close.
    let mut child = Command::new(imgcheck_bin())
        .args(["verify", &good, &bad])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut first = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().unwrap()),
        &mut first,
    )
    .unwrap();
    assert!(first.contains("good-mbr.raw"), "{first}");
    assert_eq!(child.wait().unwrap().code(), Some(1));
}
