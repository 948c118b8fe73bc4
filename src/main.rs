//! imgcheck command line. Only argument parsing and dispatch live here; the work is in the
//! library.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand, ValueEnum};

use imgcheck::convert::{self, ConvertOptions, OutputFormat};
use imgcheck::image::{self, ImageInfo, OpenOptions};

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

#[derive(Subcommand)]
enum Command {
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
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { EXIT_ERROR } else { EXIT_OK });
        }
    };
    match run(cli) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("imgcheck: {e:#}");
            ExitCode::from(EXIT_ERROR)
        }
    }
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

/// A progress bar on stderr, or none.
fn progress_bar(show: bool, len: u64, what: &str) -> Option<indicatif::ProgressBar> {
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
        Command::Convert {
            output_format,
            options,
            compress,
            jobs,
            force,
            quiet,
            verify,
            open,
            src,
            dst,
        } => {
            let format: OutputFormat = output_format.parse()?;
            let mut kv = Vec::new();
            for group in &options {
                for item in group.split(',').filter(|s| !s.is_empty()) {
                    let (k, v) = item.split_once('=').unwrap_or((item, "on"));
                    kv.push((k.trim().to_string(), v.trim().to_string()));
                }
            }
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
            install_cancel_handler();
            let show = !quiet && std::io::stderr().is_terminal();
            let bar = progress_bar(show, dev.size(), "converting");
            let inc = |n: u64| {
                if let Some(b) = &bar {
                    b.inc(n)
                }
            };
            let stats = convert::convert(dev.clone(), &dst, &opts, &inc)
                .with_context(|| format!("converting {} to {}", src, dst.display()))?;
            if let Some(b) = &bar {
                b.finish_and_clear();
            }
            if verify {
                let out = image::open(&dst, &OpenOptions::default())
                    .with_context(|| format!("verify: cannot open {}", dst.display()))?;
                let bar = progress_bar(show, out.size(), "verifying");
                let inc = |n: u64| {
                    if let Some(b) = &bar {
                        b.inc(n)
                    }
                };
                convert::verify::compare(dev.as_ref(), out.as_ref(), opts.threads(), &inc)?;
                if let Some(b) = &bar {
                    b.finish_and_clear();
                }
                if !quiet {
                    eprintln!(
                        "imgcheck: verified: {} reads the same guest bytes as {}",
                        dst.display(),
                        src
                    );
                }
            }
            let _ = stats;
            Ok(EXIT_OK)
        }
    }
}
