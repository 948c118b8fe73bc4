//! imgcheck command line. Only argument parsing and dispatch live here; the work is in the
//! library.

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
    /// Serve an image read-only over NBD (qemu-img, qemu-nbd -c, nbdkit clients can read it).
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
        open: OpenArgs,
        /// The image file (or nbd:// URI).
        image: String,
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
            quiet: _,
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
            convert::convert(dev, &dst, &opts, &|_| {})
                .with_context(|| format!("converting {} to {}", src, dst.display()))?;
            Ok(EXIT_OK)
        }
        Command::Serve {
            listen,
            unix,
            export_name,
            open,
            image,
        } => serve(listen, unix, export_name, open, image),
    }
}

fn serve(
    listen: Option<String>,
    unix: Option<PathBuf>,
    export_name: Option<String>,
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
    let cfg = ServeConfig {
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
