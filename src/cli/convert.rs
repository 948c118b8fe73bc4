//! `imgcheck convert`.

use std::io::IsTerminal;

use anyhow::{Context, Result};

use crate::{byte_progress_bar, install_cancel_handler, parse_format_options, Command, EXIT_OK};
use imgcheck::convert::{self, ConvertOptions, OutputFormat};
use imgcheck::image::{self, OpenOptions};

/// Converts SRC to DST (and with `--verify` compares them).
pub fn run(cmd: Command) -> Result<u8> {
    let Command::Convert {
        output_format,
        options,
        compress,
        jobs,
        cache,
        force,
        quiet,
        verify,
        open,
        src,
        dst,
    } = cmd
    else {
        unreachable!("convert::run is called for the convert command")
    };

    let format: OutputFormat = output_format.parse()?;
    let cache = cache.parse()?;
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
        cache,
        protect: Vec::new(),
    };
    install_cancel_handler();
    let show = !quiet && std::io::stderr().is_terminal();
    let bar = byte_progress_bar(show, dev.size(), "converting");
    let inc = |n: u64| {
        if let Some(b) = &bar {
            b.inc(n)
        }
    };
    convert::convert(dev.clone(), &dst, &opts, &inc)
        .with_context(|| format!("converting {} to {}", src, dst.display()))?;
    if let Some(b) = &bar {
        b.finish_and_clear();
    }
    if verify {
        let out = image::open(&dst, &OpenOptions::default())
            .with_context(|| format!("verify: cannot open {}", dst.display()))?;
        let bar = byte_progress_bar(show, out.size(), "verifying");
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
    Ok(EXIT_OK)
}
