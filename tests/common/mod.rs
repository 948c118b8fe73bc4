//! Helpers shared by the integration tests: run imgcheck and qemu-img, make source disks.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Path of the imgcheck binary built for the tests.
pub fn imgcheck_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_imgcheck"))
}

/// Run imgcheck with `args`; returns the output (any exit status).
pub fn imgcheck(args: &[&str]) -> Output {
    Command::new(imgcheck_bin())
        .args(args)
        .output()
        .expect("run imgcheck")
}

/// Whether qemu-img is installed (tests that use it as the oracle skip loudly when not).
pub fn have(tool: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool}"))
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// Run a command, panicking with its stderr when it fails.
pub fn run(cmd: &str, args: &[&str]) -> Output {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd}: {e}"));
    assert!(
        out.status.success(),
        "{cmd} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Run qemu-img with `args`, panicking on failure.
pub fn qemu_img(args: &[&str]) -> Output {
    run("qemu-img", args)
}

/// Tiny deterministic PRNG (xorshift64*) so test data needs no extra crate.
pub struct Rng(u64);
impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed.max(1))
    }
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545F4914F6CDD1D)
    }
    pub fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let v = self.next().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
}

/// Write a sparse raw disk of `size` bytes at `path` holding random data runs, explicit zero
/// runs and holes at unaligned offsets (not multiples of 512, of clusters or of grains), plus
/// data in the very last bytes.
pub fn make_pattern_raw(path: &Path, size: u64, seed: u64) {
    use std::os::unix::fs::FileExt;
    let f = std::fs::File::create(path).unwrap();
    f.set_len(size).unwrap();
    let mut rng = Rng::new(seed);
    let mut pos = 0u64;
    let mut i = 0u64;
    while pos < size {
        let run = 1 + rng.next() % (size / 12).max(4096);
        let len = run.min(size - pos);
        match i % 3 {
            0 => {
                let mut buf = vec![0u8; len as usize];
                rng.fill(&mut buf);
                f.write_all_at(&buf, pos).unwrap();
            }
            1 => {
                // explicit zeros: allocated on the host, zero in the guest
                let buf = vec![0u8; len as usize];
                f.write_all_at(&buf, pos).unwrap();
            }
            _ => {} // hole
        }
        pos += len;
        i += 1;
    }
    let tail = size.min(777);
    let mut buf = vec![0u8; tail as usize];
    rng.fill(&mut buf);
    f.write_all_at(&buf, size - tail).unwrap();
}

/// The guest bytes of `img` as qemu-img reads them (`qemu-img convert -O raw`), with the
/// source format forced when given (a fixed VHD is detected as raw by qemu-img otherwise).
pub fn qemu_guest_bytes(img: &Path, fmt: Option<&str>, dir: &Path) -> Vec<u8> {
    let out = dir.join(format!(
        "qemu-view-{}.raw",
        img.file_name().unwrap().to_string_lossy()
    ));
    let mut args: Vec<String> = vec!["convert".into()];
    if let Some(f) = fmt {
        args.push("-f".into());
        args.push(f.into());
    }
    args.extend([
        "-O".into(),
        "raw".into(),
        img.display().to_string(),
        out.display().to_string(),
    ]);
    let a: Vec<&str> = args.iter().map(|s| s.as_str()).collect();
    qemu_img(&a);
    let v = std::fs::read(&out).unwrap();
    std::fs::remove_file(&out).ok();
    v
}

/// The guest bytes of `img` as imgcheck reads them (`imgcheck convert -O raw`).
pub fn imgcheck_guest_bytes(img: &Path, dir: &Path, extra: &[&str]) -> Vec<u8> {
    let out = dir.join(format!(
        "imgcheck-view-{}.raw",
        img.file_name().unwrap().to_string_lossy()
    ));
    let _ = std::fs::remove_file(&out);
    let mut args = vec!["convert", "-O", "raw"];
    args.extend_from_slice(extra);
    let src = img.display().to_string();
    let dst = out.display().to_string();
    args.push(&src);
    args.push(&dst);
    let o = imgcheck(&args);
    assert!(
        o.status.success(),
        "imgcheck convert {} failed: {}",
        img.display(),
        String::from_utf8_lossy(&o.stderr)
    );
    let v = std::fs::read(&out).unwrap();
    std::fs::remove_file(&out).ok();
    v
}

/// Assert two guest views are equal, reporting the first differing offset.
pub fn assert_same_guest(a: &[u8], b: &[u8], what: &str) {
    assert_eq!(a.len(), b.len(), "{what}: sizes differ");
    if let Some(i) = a.iter().zip(b).position(|(x, y)| x != y) {
        panic!("{what}: first difference at byte {i}");
    }
}

/// JSON from `qemu-img info --output=json`.
pub fn qemu_info(img: &Path, fmt: Option<&str>) -> serde_json::Value {
    let mut args = vec!["info", "--output=json"];
    if let Some(f) = fmt {
        args.push("-f");
        args.push(f);
    }
    let p = img.display().to_string();
    args.push(&p);
    serde_json::from_slice(&qemu_img(&args).stdout).unwrap()
}

/// JSON from `imgcheck info --format json` (panics unless it succeeds).
pub fn imgcheck_info(img: &Path) -> serde_json::Value {
    let o = imgcheck(&["info", "--format", "json", &img.display().to_string()]);
    assert!(
        o.status.success(),
        "imgcheck info {} failed: {}",
        img.display(),
        String::from_utf8_lossy(&o.stderr)
    );
    serde_json::from_slice(&o.stdout).unwrap()
}

/// Path of a committed fixture file.
pub fn fixture_path(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(name)
}

/// Make fixture `name` (e.g. "good-mbr.raw") usable in `dir`: decompressed from `name.xz` when
/// that is how it is stored, else copied. Returns its path.
pub fn fixture(name: &str, dir: &Path) -> PathBuf {
    use std::io::Read;
    let out = dir.join(name);
    if out.exists() {
        return out;
    }
    let xz = fixture_path(&format!("{name}.xz"));
    if xz.exists() {
        let mut dec = xz2::read::XzDecoder::new(std::fs::File::open(&xz).unwrap());
        let mut data = Vec::new();
        dec.read_to_end(&mut data).unwrap();
        write_sparse(&out, &data);
    } else {
        std::fs::copy(fixture_path(name), &out).unwrap_or_else(|e| panic!("fixture {name}: {e}"));
    }
    out
}

/// Write `data` to `path`, leaving runs of zeros as holes.
pub fn write_sparse(path: &Path, data: &[u8]) {
    use std::os::unix::fs::FileExt;
    let f = std::fs::File::create(path).unwrap();
    f.set_len(data.len() as u64).unwrap();
    for (i, chunk) in data.chunks(64 * 1024).enumerate() {
        if chunk.iter().any(|&b| b != 0) {
            f.write_all_at(chunk, (i * 64 * 1024) as u64).unwrap();
        }
    }
}

/// `imgcheck verify --format json` of one image, parsed, with its exit status.
pub fn verify_json(img: &Path, extra: &[&str]) -> (i32, serde_json::Value) {
    let mut args = vec!["verify", "--format", "json"];
    args.extend_from_slice(extra);
    let p = img.display().to_string();
    args.push(&p);
    let o = imgcheck(&args);
    let v = serde_json::from_slice(&o.stdout).unwrap_or_else(|e| {
        panic!(
            "verify {} gave no JSON ({e}): {}",
            img.display(),
            String::from_utf8_lossy(&o.stderr)
        )
    });
    (o.status.code().unwrap_or(-1), v)
}

/// The check with `id` in a verify report.
pub fn check<'a>(report: &'a serde_json::Value, id: &str) -> &'a serde_json::Value {
    report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == id)
        .unwrap_or_else(|| panic!("no check {id} in {report:#}"))
}

/// A 3 MiB qcow2 overlay `name` in `dir` on `backing` (format `fmt`; `opts` are appended to
/// the `-o` options, e.g. ",extended_l2=on"), with data, a zero write and a write that
/// crosses the 2 MiB mark (the end of a 2 MiB backing file) made by qemu-io.
pub fn make_overlay(dir: &Path, name: &str, backing: &str, fmt: &str, opts: &str) -> PathBuf {
    let img = dir.join(name);
    let path = img.display().to_string();
    let o = format!("backing_file={backing},backing_fmt={fmt}{opts}");
    qemu_img(&["create", "-q", "-f", "qcow2", "-o", &o, &path, "3M"]);
    run(
        "qemu-io",
        &[
            "-c",
            "write -P 0x99 64k 100k",
            "-c",
            "write -z 1M 64k",
            "-c",
            "write -P 0x42 2047k 3k",
            &path,
        ],
    );
    img
}

/// The Python that has the oracle packages (junitparser, regipy, python-registry): `$IMGCHECK_PYTHON`
/// when set (`.ci/run` sets it to the virtual environment it makes), else `python3` on the PATH.
#[allow(dead_code)]
pub fn python() -> String {
    std::env::var("IMGCHECK_PYTHON").unwrap_or_else(|_| "python3".into())
}

#[allow(dead_code)]
pub struct Run {
    pub code: Option<i32>,
    pub signal: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    pub wall: std::time::Duration,
    pub max_rss_kib: i64,
}

/// Run imgcheck with `args`, output to files, and reap it with wait4 to get its peak RSS.
#[allow(dead_code)]
pub fn run_measured(args: &[String], dir: &Path) -> Run {
    let out = dir.join("stdout");
    let err = dir.join("stderr");
    let t = std::time::Instant::now();
    // Reaped below with wait4 (for its rusage), not with Child::wait.
    let mut cmd = Command::new(imgcheck_bin());
    cmd.args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(std::fs::File::create(&err).unwrap());
    // A pre_exec hook makes the standard library fork instead of vfork/posix_spawn: with vfork
    // the child execs from the parent's address space, and Linux then charges the parent's peak
    // RSS (the test's own buffers) to the child's ru_maxrss.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut cmd, || Ok(()));
    }
    #[allow(clippy::zombie_processes)]
    let child = cmd.spawn().expect("spawn imgcheck");
    let pid = child.id() as libc::pid_t;
    let mut status: libc::c_int = 0;
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // Poll with WNOHANG: a hung child (still ours, not yet reaped) is killed after 20 s so the
    // test fails on time instead of hanging.
    loop {
        let r = unsafe { libc::wait4(pid, &mut status, libc::WNOHANG, &mut ru) };
        if r == pid {
            break;
        }
        assert_eq!(r, 0, "wait4");
        if t.elapsed() > std::time::Duration::from_secs(20) {
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    let wall = t.elapsed();
    let st = <std::process::ExitStatus as std::os::unix::process::ExitStatusExt>::from_raw(status);
    let mut stdout = String::new();
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut std::fs::File::open(&out).unwrap(), &mut stdout).unwrap();
    std::io::Read::read_to_string(&mut std::fs::File::open(&err).unwrap(), &mut stderr).unwrap();
    Run {
        code: st.code(),
        signal: std::os::unix::process::ExitStatusExt::signal(&st),
        stdout,
        stderr,
        wall,
        max_rss_kib: ru.ru_maxrss,
    }
}
