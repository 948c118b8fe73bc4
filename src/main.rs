//! imgcheck command line. Only argument parsing and dispatch live here; the work is in the
//! library.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Args, CommandFactory, Parser, Subcommand, ValueEnum};

use std::io::{IsTerminal, Write};

use imgcheck::checks::{Policy, VerifyOptions};
use imgcheck::convert::{self, ConvertOptions};
use imgcheck::fs;
use imgcheck::image::{self, ImageInfo, OpenOptions};
use imgcheck::report;

mod cli;

/// Exit status when every check passed.
const EXIT_OK: u8 = 0;
/// Exit status when the image could not be read, or the usage is wrong.
const EXIT_ERROR: u8 = 2;

#[derive(Parser)]
#[command(
    name = "imgcheck",
    version,
    about = "Check a Windows system-disk image offline before a cloud migration, and convert it",
    long_about = "Check a Windows system-disk image (raw, VHD, VMDK, qcow2) offline, as an ordinary \
user, before uploading it to a cloud: MBR partition table, NTFS first partition, BIOS boot, Virtio \
drivers, cloudbase-init, no conflicting VMware/Xen/VirtualBox tools. Convert between formats.\n\n\
Exit status: 0 all checks passed, 1 a check failed, 2 the image could not be read or usage error."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Args, Clone)]
struct OpenArgs {
    /// Follow qcow2 backing files and VHD differencing parents (inside the image's directory).
    #[arg(long)]
    allow_backing: bool,
    /// Let backing files, parents and VMDK extents lie outside the image's directory.
    /// Only for images you trust: a hostile image can name any host file.
    #[arg(long)]
    allow_outside_dir: bool,
    /// Let backing files, parents and VMDK extents be block devices (only regular files
    /// otherwise; FIFOs, sockets and character devices are always refused).
    #[arg(long)]
    allow_block_devices: bool,
}

impl OpenArgs {
    fn options(&self) -> OpenOptions {
        OpenOptions {
            allow_backing: self.allow_backing,
            allow_outside_dir: self.allow_outside_dir,
            allow_block_devices: self.allow_block_devices,
        }
    }
}

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq)]
enum InfoFormat {
    Text,
    Json,
}

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq)]
enum VerifyFormat {
    Text,
    Json,
    Jsonl,
    Junit,
    Html,
}

#[derive(Subcommand)]
enum Command {
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions { shell: clap_complete::Shell },
    /// Print the man page (roff) to standard output.
    Man,
    /// Check images against the migration guide (exit 0 pass, 1 a check failed, 2 unreadable).
    Verify {
        /// Output format.
        #[arg(long, value_enum, default_value = "text")]
        format: VerifyFormat,
        /// Images to check in parallel (default: one per core).
        #[arg(short = 'j', long, default_value_t = 0)]
        jobs: usize,
        /// Warnings fail the verdict too.
        #[arg(long)]
        strict: bool,
        /// Policy file (TOML) that turns checks into fail, warn or off.
        #[arg(long, value_name = "FILE.toml")]
        policy: Option<PathBuf>,
        /// Turn one check into fail, warn or off (repeatable), e.g. --set boot.firmware=off.
        #[arg(long = "set", value_name = "CHECK=LEVEL")]
        set: Vec<String>,
        /// No progress bar.
        #[arg(short = 'q', long)]
        quiet: bool,
        /// Also print the time taken and the bytes read from image files (on stderr).
        #[arg(short = 'v', long)]
        verbose: bool,
        /// Read more image paths from this file, one per line ("-" for standard input).
        #[arg(long, value_name = "LIST")]
        from_file: Option<String>,
        #[command(flatten)]
        open: OpenArgs,
        /// Image files, directories (their images are checked) or nbd:// URIs.
        images: Vec<String>,
    },
    /// Show what is inside the image: partitions, Windows identity, boot, drivers, software.
    Inspect {
        /// Output format.
        #[arg(long, value_enum, default_value = "text")]
        format: InfoFormat,
        #[command(flatten)]
        open: OpenArgs,
        /// The image file (or nbd:// URI).
        image: String,
    },
    /// Show an image's format, virtual size, size on disk and allocated bytes.
    Info {
        /// Output format.
        #[arg(long, value_enum, default_value = "text")]
        format: InfoFormat,
        #[command(flatten)]
        open: OpenArgs,
        /// The image file (or nbd:// URI).
        image: String,
    },
    /// Convert many images into a directory; resumable (complete outputs are kept).
    BatchConvert {
        /// Output format: raw, qcow2, vhd (or vpc), vmdk.
        #[arg(short = 'O', long = "output-format", default_value = "qcow2")]
        output_format: String,
        /// Format options, comma-separated key=value (subformat=..., cluster_size=...).
        #[arg(short = 'o', long = "options")]
        options: Vec<String>,
        /// Compress the output (qcow2).
        #[arg(short = 'c', long)]
        compress: bool,
        /// Worker threads per conversion (default: one per core).
        #[arg(short = 'j', long, default_value_t = 0)]
        jobs: usize,
        /// Cache mode of the output, qemu-img's names: writeback (default: fsync before the
        /// rename, so DST is on the disk when imgcheck returns) or unsafe (no fsync, as
        /// qemu-img convert does by default).
        #[arg(
            short = 't',
            long = "cache",
            value_name = "CACHE",
            default_value = "writeback"
        )]
        cache: String,
        /// Directory the outputs go to (NAME.FORMAT).
        #[arg(long, value_name = "DIR")]
        out_dir: PathBuf,
        /// Verify each image first; skip those that fail (convert anyway with --force).
        #[arg(long)]
        verify_first: bool,
        /// Convert images that fail verification, and redo existing outputs.
        #[arg(long)]
        force: bool,
        /// Output format of the summary.
        #[arg(long, value_enum, default_value = "text")]
        format: InfoFormat,
        /// Read more image paths from this file, one per line ("-" for standard input).
        #[arg(long, value_name = "LIST")]
        from_file: Option<String>,
        #[command(flatten)]
        open: OpenArgs,
        /// Image files, directories or nbd:// URIs.
        images: Vec<String>,
    },
    /// Convert an image to another format.
    Convert {
        /// Output format: raw, qcow2, vhd (or vpc), vmdk.
        #[arg(short = 'O', long = "output-format", default_value = "raw")]
        output_format: String,
        /// Format options, comma-separated key=value (subformat=..., cluster_size=...).
        #[arg(short = 'o', long = "options")]
        options: Vec<String>,
        /// Compress the output (qcow2; streamOptimized VMDK is always compressed).
        #[arg(short = 'c', long)]
        compress: bool,
        /// Worker threads (default: one per core).
        #[arg(short = 'j', long, default_value_t = 0)]
        jobs: usize,
        /// Cache mode of the output, qemu-img's names: writeback (default: fsync before the
        /// rename, so DST is on the disk when imgcheck returns) or unsafe (no fsync, as
        /// qemu-img convert does by default).
        #[arg(
            short = 't',
            long = "cache",
            value_name = "CACHE",
            default_value = "writeback"
        )]
        cache: String,
        /// Overwrite DST if it exists.
        #[arg(long)]
        force: bool,
        /// No progress bar (there is none anyway when stderr is not a terminal).
        #[arg(short = 'q', long)]
        quiet: bool,
        /// After converting, read DST back with imgcheck's reader and compare it with SRC.
        #[arg(long)]
        verify: bool,
        #[command(flatten)]
        open: OpenArgs,
        /// Source image (file or nbd:// URI).
        src: String,
        /// Destination file.
        dst: PathBuf,
    },
    /// Repair what one registry change can mend (Virtio storage driver not boot-start, a
    /// StartOverride on it, a boot-critical storage filter that cannot load, Fast Startup on,
    /// enabled VMware/Xen/VirtualBox/Parallels services), writing the
    /// repaired disk to DST (SRC is never written), then verify DST. Refuses hibernated
    /// Windows and dirty or damaged hives.
    Fix {
        /// Output format of DST: raw, qcow2, vhd (or vpc), vmdk.
        #[arg(short = 'O', long = "output-format", default_value = "qcow2")]
        output_format: String,
        /// Only say what would be repaired; write nothing.
        #[arg(long)]
        dry_run: bool,
        /// Report format: text or json.
        #[arg(long, default_value = "text")]
        format: String,
        /// Overwrite DST if it exists.
        #[arg(long)]
        force: bool,
        /// Repair only the findings of these checks (drivers.virtio, software.conflicts,
        /// drivers.storage-filters, system.state); repeatable.
        #[arg(long)]
        only: Vec<String>,
        #[command(flatten)]
        open: OpenArgs,
        /// Source image.
        src: String,
        /// Destination file (not needed with --dry-run).
        dst: Option<PathBuf>,
    },
    /// List a directory inside the image's NTFS file system, offline: one name per line, a
    /// trailing / on directories, in NTFS collation order (the names `ntfsls -F` prints; ntfsls
    /// prints large directories in on-disk block order instead). No DOS 8.3 aliases.
    Ls {
        /// Partition number (as Linux numbers them; 0 = the whole disk is one volume).
        /// Default: the partition holding \Windows, else the first NTFS partition.
        #[arg(short = 'p', long)]
        partition: Option<u32>,
        /// Long listing: size, then name.
        #[arg(short = 'l', long)]
        long: bool,
        /// Also list NTFS metadata files ($MFT, $Volume, ...).
        #[arg(short = 's', long)]
        system: bool,
        #[command(flatten)]
        open: OpenArgs,
        /// The image file (or nbd:// URI).
        image: String,
        /// Directory inside the file system (/ or \ separated, case-insensitive).
        #[arg(default_value = "/")]
        path: String,
    },
    /// Write a file from inside the image's NTFS file system to stdout, offline.
    Cat {
        /// Partition number (as Linux numbers them; 0 = the whole disk is one volume).
        /// Default: the partition holding \Windows, else the first NTFS partition.
        #[arg(short = 'p', long)]
        partition: Option<u32>,
        #[command(flatten)]
        open: OpenArgs,
        /// The image file (or nbd:// URI).
        image: String,
        /// File inside the file system (/ or \ separated, case-insensitive).
        path: String,
    },
    /// Serve an image read-only over NBD (for qemu-img, qemu-nbd -c, nbdinfo, nbdcopy, imgcheck).
    ///
    /// Prints one line, "listening on URI", on standard output once clients can connect.
    /// Stops on SIGINT or SIGTERM.
    Serve {
        /// TCP address to listen on: ADDR:PORT, HOST:PORT or PORT (then on 127.0.0.1).
        /// Port 0 picks a free port. Default: 127.0.0.1:10809 (loopback only).
        #[arg(long, conflicts_with = "unix")]
        listen: Option<String>,
        /// Listen on this Unix-domain socket instead of TCP (removed again on exit).
        #[arg(long)]
        unix: Option<PathBuf>,
        /// Export name (default: the image's file name; the empty default name is accepted too).
        #[arg(long)]
        export_name: Option<String>,
        #[command(flatten)]
        limits: ServeLimits,
        #[command(flatten)]
        open: OpenArgs,
        /// The image file (or nbd:// URI).
        image: String,
    },
}

/// `serve`'s limits (defaults: `imgcheck::nbd::ServeConfig::default()`, explained in
/// src/nbd/server/mod.rs).
#[derive(clap::Args, Debug)]
struct ServeLimits {
    /// Connections served at once [default: 128]. When full, a connection still negotiating,
    /// not reading its replies or idle is closed to make room for a new one.
    #[arg(long, value_name = "N")]
    max_clients: Option<usize>,
    /// Connections served at once from one client address (IPv4 address, IPv6 /64, Unix-socket
    /// user) [default: 32].
    #[arg(long, value_name = "N")]
    max_clients_per_address: Option<usize>,
    /// Seconds a client gets to complete the NBD handshake [default: 10].
    #[arg(long, value_name = "SECS")]
    handshake_timeout: Option<f64>,
    /// Close a connection with no request for this many seconds; 0: never [default: 3600].
    #[arg(long, value_name = "SECS")]
    idle_timeout: Option<f64>,
}

impl ServeLimits {
    fn apply(&self, cfg: &mut imgcheck::nbd::ServeConfig) -> Result<()> {
        let secs = |v: f64, what: &str| {
            std::time::Duration::try_from_secs_f64(v)
                .map_err(|_| anyhow::anyhow!("--{what} {v}: not a number of seconds"))
        };
        if let Some(n) = self.max_clients {
            cfg.max_clients = n.max(1);
        }
        if let Some(n) = self.max_clients_per_address {
            cfg.max_clients_per_address = n.max(1);
        }
        if let Some(v) = self.handshake_timeout {
            cfg.handshake_timeout = secs(v, "handshake-timeout")?;
        }
        if let Some(v) = self.idle_timeout {
            cfg.idle_timeout = Some(secs(v, "idle-timeout")?).filter(|d| !d.is_zero());
        }
        Ok(())
    }
}

/// Open the volume `ls` and `cat` work on.
fn open_volume(image: &str, open: &OpenArgs, partition: Option<u32>) -> Result<fs::Volume> {
    let dev = image::open_spec(image, &open.options())?;
    for w in dev.warnings() {
        eprintln!("imgcheck: warning: {w}");
    }
    Ok(imgcheck::guest::Disk::open(dev)?.into_volume(partition)?)
}

/// `-o key=value,key2=value2` (repeatable) into pairs; a bare key means "on".
fn parse_format_options(options: &[String]) -> Vec<(String, String)> {
    let mut kv = Vec::new();
    for group in options {
        for item in group.split(',').filter(|s| !s.is_empty()) {
            let (k, v) = item.split_once('=').unwrap_or((item, "on"));
            kv.push((k.trim().to_string(), v.trim().to_string()));
        }
    }
    kv
}

/// A progress bar on standard error when it is a terminal, unless `hidden`.
fn progress_bar(len: u64, hidden: bool, unit: &str) -> Option<indicatif::ProgressBar> {
    if hidden || !std::io::stderr().is_terminal() {
        return None;
    }
    let bar = indicatif::ProgressBar::new(len);
    let style = indicatif::ProgressStyle::with_template(&format!(
        "{{bar:40}} {{pos}}/{{len}} {unit} {{elapsed}} {{wide_msg}}"
    ))
    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
    bar.set_style(style);
    Some(bar)
}

fn main() -> ExitCode {
    // Past a file-size limit (`ulimit -f`), write() would raise SIGXFSZ and kill us silently,
    // leaving no message; ignored, the write fails with EFBIG and the error names the file.
    // SAFETY: setting a signal to SIG_IGN at startup, before any thread exists.
    unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
    }
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { EXIT_ERROR } else { EXIT_OK });
        }
    };
    match run(cli) {
        Ok(code) => ExitCode::from(code),
        Err(e) if is_broken_pipe(&e) => ExitCode::from(EXIT_OK),
        Err(e) => {
            eprintln!("imgcheck: {e:#}");
            ExitCode::from(EXIT_ERROR)
        }
    }
}

/// Whether an error is a write to a closed pipe (`imgcheck ... | head`): not worth a message.
fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// SIGINT/SIGTERM: ask the running conversion to stop; it removes its temporary output.
extern "C" fn on_signal(_sig: libc::c_int) {
    convert::request_cancel();
}

fn install_cancel_handler() {
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe; sigaction is
    // given a zeroed, fully initialised struct.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_signal as *const () as usize;
        libc::sigemptyset(&mut sa.sa_mask);
        sa.sa_flags = libc::SA_RESTART;
        libc::sigaction(libc::SIGINT, &sa, std::ptr::null_mut());
        libc::sigaction(libc::SIGTERM, &sa, std::ptr::null_mut());
    }
}

/// A progress bar in bytes on stderr, or none.
fn byte_progress_bar(show: bool, len: u64, what: &str) -> Option<indicatif::ProgressBar> {
    if !show {
        return None;
    }
    let b = indicatif::ProgressBar::new(len);
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "{msg} [{bar:40}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
    ) {
        b.set_style(style.progress_chars("=> "));
    }
    b.set_message(what.to_string());
    Some(b)
}

fn run(cli: Cli) -> Result<u8> {
    match cli.command {
        Command::Completions { shell } => {
            let mut cmd = Cli::command();
            clap_complete::generate(shell, &mut cmd, "imgcheck", &mut std::io::stdout());
            Ok(EXIT_OK)
        }
        Command::Man => {
            clap_mangen::Man::new(Cli::command()).render(&mut std::io::stdout())?;
            Ok(EXIT_OK)
        }
        Command::Verify {
            format,
            jobs,
            strict,
            policy,
            set,
            quiet,
            verbose,
            from_file,
            open,
            images,
        } => {
            let mut policy = match policy {
                Some(p) => Policy::load(&p)?,
                None => Policy::default(),
            };
            for s in &set {
                policy.set(s)?;
            }
            policy.strict |= strict;
            let specs = imgcheck::batch::collect_images(&images, from_file.as_deref())?;
            if specs.is_empty() {
                eprintln!("imgcheck: verify: no images given");
                return Ok(EXIT_ERROR);
            }
            let opts = VerifyOptions {
                open: open.options(),
                policy,
            };
            let bar = progress_bar(specs.len() as u64, quiet || specs.len() < 2, "images");
            let started = std::time::Instant::now();
            let color = std::env::var_os("NO_COLOR").is_none() && std::io::stdout().is_terminal();
            let style = report::text::Style { color };
            let stdout = std::sync::Mutex::new(std::io::stdout());
            let reports = imgcheck::batch::verify_all(&specs, &opts, jobs, &|r| {
                if let Some(b) = &bar {
                    b.inc(1);
                    b.set_message(r.image.clone());
                }
                if format == VerifyFormat::Jsonl {
                    let mut out = stdout.lock().unwrap();
                    let _ = writeln!(out, "{}", report::json_line(r));
                    let _ = out.flush();
                }
            })?;
            if let Some(b) = bar {
                b.finish_and_clear();
            }
            if verbose {
                eprintln!(
                    "imgcheck: verified {} image(s) in {:.3} s, reading {} bytes from image files",
                    reports.len(),
                    started.elapsed().as_secs_f64(),
                    image::storage::file_bytes_read()
                );
            }
            let status = report::exit_status(&reports);
            let write = || -> std::io::Result<()> {
                let mut out = std::io::stdout().lock();
                match format {
                    VerifyFormat::Text => {
                        for r in &reports {
                            writeln!(out, "{}", report::text::render(r, style))?;
                        }
                        if reports.len() > 1 {
                            write!(out, "{}", report::text::summary(&reports, style))?;
                        }
                    }
                    VerifyFormat::Json => writeln!(out, "{}", report::json(&reports))?,
                    VerifyFormat::Jsonl => {}
                    VerifyFormat::Junit => write!(out, "{}", report::junit::render(&reports))?,
                    VerifyFormat::Html => write!(
                        out,
                        "{}",
                        report::html::render(&reports, "imgcheck verify report")
                    )?,
                }
                out.flush()
            };
            match write() {
                // A reader that stopped early (`verify DIR | head -1`) does not change the
                // verdict: the exit status is still the images' (never 0 when one failed).
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(status),
                r => r.map(|()| status).map_err(Into::into),
            }
        }
        Command::Inspect {
            format,
            open,
            image,
        } => {
            let r = imgcheck::checks::inspect::inspect(&image, &open.options())?;
            match format {
                InfoFormat::Json => println!("{}", serde_json::to_string_pretty(&r)?),
                InfoFormat::Text => print!("{}", report::inspect::render(&r)),
            }
            Ok(EXIT_OK)
        }
        Command::Info {
            format,
            open,
            image,
        } => {
            let dev = image::open_spec(&image, &open.options())?;
            let info = ImageInfo::of(dev.as_ref())?;
            match format {
                InfoFormat::Json => println!("{}", serde_json::to_string_pretty(&info)?),
                InfoFormat::Text => {
                    println!("image: {}", info.filename);
                    println!("format: {}", info.format);
                    if let Some(s) = &info.subformat {
                        println!("subformat: {s}");
                    }
                    println!("virtual_size: {}", info.virtual_size);
                    println!("actual_size: {}", info.actual_size);
                    println!("allocated: {}", info.allocated);
                    for w in &info.warnings {
                        println!("warning: {w}");
                    }
                }
            }
            Ok(EXIT_OK)
        }
        Command::BatchConvert {
            output_format,
            options,
            compress,
            jobs,
            cache,
            out_dir,
            verify_first,
            force,
            format,
            from_file,
            open,
            images,
        } => {
            let specs = imgcheck::batch::collect_images(&images, from_file.as_deref())?;
            install_cancel_handler();
            let opts = imgcheck::batch::BatchConvertOptions {
                convert: ConvertOptions {
                    format: output_format.parse()?,
                    options: parse_format_options(&options),
                    compress,
                    jobs,
                    force,
                    cache: cache.parse()?,
                    protect: Vec::new(),
                },
                out_dir,
                verify_first,
                force_failed: force,
                verify: VerifyOptions {
                    open: open.options(),
                    policy: Policy::default(),
                },
            };
            let items = imgcheck::batch::batch_convert(&specs, &opts, &|item| {
                if format == InfoFormat::Text {
                    eprintln!(
                        "{}: {}{}",
                        item.image,
                        item.outcome,
                        item.message
                            .as_deref()
                            .map(|m| format!(" ({m})"))
                            .unwrap_or_default()
                    );
                }
            })?;
            let summary = imgcheck::batch::BatchSummary::of(&items);
            match format {
                InfoFormat::Json => println!("{}", serde_json::to_string_pretty(&summary)?),
                InfoFormat::Text => print!("{}", report::text::batch_summary(&summary)),
            }
            Ok(if summary.count("error") > 0 {
                EXIT_ERROR
            } else if summary.count("skipped-verify") > 0 {
                1
            } else {
                EXIT_OK
            })
        }
        cmd @ Command::Convert { .. } => cli::convert::run(cmd),
        cmd @ Command::Fix { .. } => cli::fix::run(cmd),
        Command::Ls {
            partition,
            long,
            system,
            open,
            image,
            path,
        } => {
            use std::io::Write;
            let vol = open_volume(&image, &open, partition)?;
            let st = vol.stat(&path)?;
            let entries = if st.is_dir && long {
                vol.list_opts(&path, system)?
            } else if st.is_dir {
                vol.list_names(&path, system)?
            } else {
                vec![fs::DirEntry {
                    name: st.name.clone(),
                    is_dir: false,
                    size: st.size,
                    record: st.record,
                }]
            };
            let stdout = std::io::stdout();
            let mut out = std::io::BufWriter::new(stdout.lock());
            for e in &entries {
                let slash = if e.is_dir { "/" } else { "" };
                let r = if long {
                    writeln!(out, "{:>12} {}{}", e.size, e.name, slash)
                } else {
                    writeln!(out, "{}{}", e.name, slash)
                };
                if let Err(e) = r {
                    if e.kind() == std::io::ErrorKind::BrokenPipe {
                        return Ok(EXIT_OK);
                    }
                    return Err(e.into());
                }
            }
            match out.flush() {
                Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
                _ => Ok(EXIT_OK),
            }
        }
        Command::Cat {
            partition,
            open,
            image,
            path,
        } => {
            use std::io::Write;
            let vol = open_volume(&image, &open, partition)?;
            let stdout = std::io::stdout();
            let mut out = std::io::BufWriter::with_capacity(1 << 20, stdout.lock());
            match vol.read_to(&path, &mut out) {
                Err(imgcheck::Error::Io { err: source, .. })
                    if source.kind() == std::io::ErrorKind::BrokenPipe =>
                {
                    return Ok(EXIT_OK)
                }
                r => {
                    r?;
                }
            }
            match out.flush() {
                Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
                _ => Ok(EXIT_OK),
            }
        }
        Command::Serve {
            listen,
            unix,
            export_name,
            limits,
            open,
            image,
        } => serve(listen, unix, export_name, &limits, open, image),
    }
}

fn serve(
    listen: Option<String>,
    unix: Option<PathBuf>,
    export_name: Option<String>,
    limits: &ServeLimits,
    open: OpenArgs,
    image: String,
) -> Result<u8> {
    use imgcheck::nbd::{self, Listen, ServeConfig, Server, TermSignals};
    use std::io::Write;
    // Before any other thread exists, so that every thread inherits the blocked mask.
    let signals = TermSignals::block().context("blocking SIGINT/SIGTERM")?;
    let dev = image::open_spec(&image, &open.options())?;
    for w in dev.warnings() {
        eprintln!("imgcheck: warning: {w}");
    }
    let export_name = export_name.unwrap_or_else(|| default_export_name(&image));
    let mut cfg = ServeConfig {
        // The file name only: clients need not learn the server's directory layout.
        description: format!(
            "{} image {} ({} bytes), read-only, served by imgcheck",
            dev.format(),
            default_export_name(&image),
            dev.size()
        ),
        export_name,
        ..ServeConfig::default()
    };
    limits.apply(&mut cfg)?;
    let where_ = match unix {
        Some(p) => Listen::Unix(p),
        None => {
            Listen::Tcp(listen.unwrap_or_else(|| format!("127.0.0.1:{}", nbd::proto::DEFAULT_PORT)))
        }
    };
    let server = Server::bind(&where_, dev, &cfg)?;
    let handle = server.shutdown_handle();
    signals.on_signal(move |sig| {
        eprintln!("imgcheck serve: signal {sig}, stopping");
        handle.shutdown();
    });
    let mut out = std::io::stdout().lock();
    writeln!(out, "listening on {}", server.uri()?)?;
    out.flush()?;
    drop(out);
    server.run()?;
    Ok(EXIT_OK)
}

/// The export name used when none is given: the image's file name (or an NBD source's export).
fn default_export_name(image: &str) -> String {
    if image::is_nbd_uri(image) {
        if let Ok(u) = imgcheck::nbd::uri::parse(image) {
            if !u.export.is_empty() {
                return u.export;
            }
        }
        return "disk".into();
    }
    std::path::Path::new(image)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "disk".into())
}
