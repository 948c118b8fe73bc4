//! imgcheck command line. Only argument parsing and dispatch live here; the work is in the
//! library.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand, ValueEnum};

use imgcheck::convert::{self, ConvertOptions, OutputFormat};
use imgcheck::image::{self, ImageInfo, OpenOptions};
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
