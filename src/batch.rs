//! Many images at once: collecting image names from arguments, directories and lists, and
//! verifying them in parallel.

use std::io::BufRead;
use std::path::Path;

use rayon::prelude::*;

use crate::checks::{verify, ImageReport, VerifyOptions};
use crate::error::{Error, Result};
use crate::image::is_nbd_uri;

/// File name extensions taken from a directory.
const IMAGE_EXTENSIONS: [&str; 10] = [
    "raw", "img", "vhd", "vpc", "vmdk", "qcow2", "qcow", "vhdx", "dd", "bin",
];

/// Expand arguments into image specs: files and URIs as given, directories into the images
/// they hold (sorted, not recursive), plus the lines of `from_file` ("-" = standard input).
pub fn collect_images(args: &[String], from_file: Option<&str>) -> Result<Vec<String>> {
    let mut out = Vec::new();
    let mut list: Vec<String> = args.to_vec();
    if let Some(f) = from_file {
        let lines: Vec<String> = if f == "-" {
            std::io::stdin()
                .lock()
                .lines()
                .collect::<std::io::Result<_>>()
                .map_err(|e| Error::io("standard input", e))?
        } else {
            std::fs::read_to_string(f)
                .map_err(|e| Error::io(f, e))?
                .lines()
                .map(str::to_string)
                .collect()
        };
        list.extend(
            lines
                .into_iter()
                .map(|l| l.trim().to_string())
                .filter(|l| !l.is_empty() && !l.starts_with('#')),
        );
    }
    for a in list {
        if a == "-" {
            return Err(Error::Other(
                "\"-\" is read with --from-file -, not as an image".into(),
            ));
        }
        let p = Path::new(&a);
        if !is_nbd_uri(&a) && p.is_dir() {
            let mut found: Vec<String> = std::fs::read_dir(p)
                .map_err(|e| Error::io(&a, e))?
                .filter_map(|e| e.ok())
                .map(|e| e.path())
                .filter(|p| p.is_file() && has_image_extension(p))
                .map(|p| p.display().to_string())
                .collect();
            found.sort();
            out.extend(found);
        } else {
            out.push(a);
        }
    }
    Ok(out)
}

fn has_image_extension(p: &Path) -> bool {
    p.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
}

/// Verify every image with `jobs` threads (0 = one per core). `done` is called as each image
/// finishes (for streaming output and progress); the result keeps the input order.
pub fn verify_all(
    specs: &[String],
    opts: &VerifyOptions,
    jobs: usize,
    done: &(dyn Fn(&ImageReport) + Sync),
) -> Result<Vec<ImageReport>> {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(jobs)
        .build()
        .map_err(|e| Error::Other(format!("cannot start worker threads: {e}")))?;
    Ok(pool.install(|| {
        specs
            .par_iter()
            .map(|s| {
                let r = verify(s, opts);
                done(&r);
                r
            })
            .collect()
    }))
}
