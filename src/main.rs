//! imgcheck command line. Only argument parsing and dispatch live here; the work is in the
//! library.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Args, CommandFactory, Parser, Subcommand, ValueEnum};

use std::io::{IsTerminal, Write};

use imgcheck::checks::{Policy, VerifyOptions};
use imgcheck::convert::{self, ConvertOptions, OutputFormat};
use imgcheck::image::{self, ImageInfo, OpenOptions};
use imgcheck::report;
use imgcheck::{disk, fs};

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
}

impl OpenArgs {
    fn options(&self) -> OpenOptions {
        OpenOptions {
            allow_backing: self.allow_backing,
            allow_outside_dir: self.allow_outside_dir,
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
        /// Compress the output (qcow2).
        #[arg(short = 'c', long)]
        compress: bool,
        /// Worker threads (default: one per core).
        #[arg(short = 'j', long, default_value_t = 0)]
        jobs: usize,
        /// Overwrite DST if it exists.
        #[arg(long)]
        force: bool,
        /// No progress bar.
        #[arg(short = 'q', long)]
        quiet: bool,
        #[command(flatten)]
        open: OpenArgs,
        /// Source image (file or nbd:// URI).
        src: String,
        /// Destination file.
        dst: PathBuf,
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
}

/// Open the volume `ls` and `cat` work on.
fn open_volume(image: &str, open: &OpenArgs, partition: Option<u32>) -> Result<fs::Volume> {
    let dev = image::open_spec(image, &open.options())?;
    for w in dev.warnings() {
        eprintln!("imgcheck: warning: {w}");
    }
    let table = disk::analyze(&dev)?;
    match partition {
        Some(n) => fs::open_index(&dev, &table, n),
        None => fs::default_volume(&dev, &table),
    }
    .map_err(flat)
}

/// An error whose message already carries its cause (imgcheck's I/O errors print their
/// source), so `{:#}` does not print the cause twice.
fn flat(e: imgcheck::Error) -> anyhow::Error {
    anyhow::anyhow!("{e}")
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
            Ok(report::exit_status(&reports))
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
            out_dir,
            verify_first,
            force,
            format,
            from_file,
            open,
            images,
        } => {
            let specs = imgcheck::batch::collect_images(&images, from_file.as_deref())?;
            let opts = imgcheck::batch::BatchConvertOptions {
                convert: ConvertOptions {
                    format: output_format.parse()?,
                    options: parse_format_options(&options),
                    compress,
                    jobs,
                    force,
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
            let total_read: u64 = items.iter().map(|i| i.bytes_read).sum();
            let secs: f64 = items.iter().map(|i| i.seconds).sum();
            let rate = if secs > 0.0 {
                total_read as f64 / secs
            } else {
                0.0
            };
            let count = |o: &str| items.iter().filter(|i| i.outcome == o).count();
            match format {
                InfoFormat::Json => println!(
                    "{}",
                    serde_json::to_string_pretty(&serde_json::json!({
                        "items": items,
                        "bytes_read": total_read,
                        "seconds": secs,
                        "bytes_per_second": rate,
                    }))?
                ),
                InfoFormat::Text => {
                    println!(
                        "{:40}  {:16}  {:>10}  {:>8}  {:>12}",
                        "IMAGE", "OUTCOME", "SIZE", "SECONDS", "MB/s"
                    );
                    for i in &items {
                        let mbps = if i.seconds > 0.0 {
                            i.bytes_read as f64 / i.seconds / 1e6
                        } else {
                            0.0
                        };
                        println!(
                            "{:40}  {:16}  {:>10}  {:>8.2}  {:>12.1}",
                            i.image,
                            i.outcome,
                            imgcheck::checks::image_format::human_size(i.virtual_size),
                            i.seconds,
                            mbps
                        );
                    }
                    println!(
                        "{} images: {} converted, {} kept (already complete), {} skipped by verify, {} errors; {:.1} MB/s overall",
                        items.len(),
                        count("converted"),
                        count("skipped-complete"),
                        count("skipped-verify"),
                        count("error"),
                        rate / 1e6
                    );
                }
            }
            Ok(if count("error") > 0 {
                EXIT_ERROR
            } else if count("skipped-verify") > 0 {
                1
            } else {
                EXIT_OK
            })
        }
        Command::Convert {
            output_format,
            options,
            compress,
            jobs,
            force,
            quiet: _,
            open,
            src,
            dst,
        } => {
            let format: OutputFormat = output_format.parse()?;
            let kv = parse_format_options(&options);
            let dev = image::open_spec(&src, &open.options())?;
            for w in dev.warnings() {
                eprintln!("imgcheck: warning: {w}");
            }
            let opts = ConvertOptions {
                format,
                options: kv,
                compress,
                jobs,
                force,
            };
            convert::convert(dev, &dst, &opts, &|_| {})
                .with_context(|| format!("converting {} to {}", src, dst.display()))?;
            Ok(EXIT_OK)
        }
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
            let st = vol.stat(&path).map_err(flat)?;
            let entries = if st.is_dir && long {
                vol.list_opts(&path, system).map_err(flat)?
            } else if st.is_dir {
                vol.list_names(&path, system).map_err(flat)?
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
                Err(imgcheck::Error::Io { source, .. })
                    if source.kind() == std::io::ErrorKind::BrokenPipe =>
                {
                    return Ok(EXIT_OK)
                }
                r => {
                    r.map_err(flat)?;
                }
            }
            match out.flush() {
                Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
                _ => Ok(EXIT_OK),
            }
        }
    }
}
