//! Many images at once: collecting image names from arguments, directories and lists, and
//! verifying them in parallel.

use std::collections::HashMap;
use std::io::BufRead;
use std::path::{Path, PathBuf};

use rayon::prelude::*;

use crate::checks::{verify, ImageReport, VerifyOptions};
use crate::error::{Error, Result};
use crate::image::{is_nbd_uri, FileId};

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

/// Options for [`batch_convert`].
pub struct BatchConvertOptions {
    pub convert: crate::convert::ConvertOptions,
    pub out_dir: std::path::PathBuf,
    /// Verify each image first and skip those that fail (unless `force_failed`).
    pub verify_first: bool,
    pub force_failed: bool,
    pub verify: VerifyOptions,
}

/// What happened to one image in a batch conversion.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BatchItem {
    pub image: String,
    pub output: String,
    /// converted, skipped-complete (output already there), skipped-verify (failed verify),
    /// error
    pub outcome: String,
    pub message: Option<String>,
    pub virtual_size: u64,
    pub bytes_read: u64,
    pub seconds: f64,
}

/// A batch conversion's items and totals (the JSON of `batch-convert --format json`).
#[derive(Debug, Clone, serde::Serialize)]
pub struct BatchSummary {
    pub items: Vec<BatchItem>,
    pub bytes_read: u64,
    pub seconds: f64,
    pub bytes_per_second: f64,
}

impl BatchSummary {
    pub fn of(items: &[BatchItem]) -> Self {
        let bytes_read = items.iter().map(|i| i.bytes_read).sum();
        let seconds: f64 = items.iter().map(|i| i.seconds).sum();
        BatchSummary {
            items: items.to_vec(),
            bytes_read,
            seconds,
            bytes_per_second: if seconds > 0.0 {
                bytes_read as f64 / seconds
            } else {
                0.0
            },
        }
    }

    /// Items with this outcome.
    pub fn count(&self, outcome: &str) -> usize {
        self.items.iter().filter(|i| i.outcome == outcome).count()
    }
}

/// Output file name for `image` in `out_dir`: its stem plus the output format's extension.
pub fn output_name(
    image: &str,
    out_dir: &Path,
    format: crate::convert::OutputFormat,
) -> std::path::PathBuf {
    use crate::convert::OutputFormat;
    let stem = Path::new(image.split('?').next().unwrap_or(image))
        .file_stem()
        .map(|s| s.to_string_lossy().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "image".to_string());
    let ext = match format {
        OutputFormat::Raw => "raw",
        OutputFormat::Qcow2 => "qcow2",
        OutputFormat::Vhd => "vhd",
        OutputFormat::Vmdk => "vmdk",
    };
    out_dir.join(format!("{stem}.{ext}"))
}

/// Remove temporary files left in `dir` by conversions that died (their process is gone).
pub fn remove_stale_temporaries(dir: &Path) -> Result<Vec<std::path::PathBuf>> {
    let mut removed = Vec::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(removed),
        Err(e) => return Err(Error::io(dir.display(), e)),
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        let Some(rest) = name.strip_suffix(".tmp-imgcheck") else {
            continue;
        };
        // .NAME.PID.tmp-imgcheck
        let pid: Option<i32> = rest.rsplit('.').next().and_then(|p| p.parse().ok());
        let alive = pid.is_some_and(|p| Path::new(&format!("/proc/{p}")).exists());
        if !alive {
            std::fs::remove_file(e.path()).map_err(|err| Error::io(e.path().display(), err))?;
            removed.push(e.path());
        }
    }
    Ok(removed)
}

/// Why an image of a batch is not converted: its output is already complete, or it failed
/// verification.
fn skip_reason(
    image: &str,
    out: &Path,
    opts: &BatchConvertOptions,
) -> Option<(&'static str, String)> {
    if out.exists() && !opts.convert.force {
        return Some((
            "skipped-complete",
            "output already exists (complete); kept".into(),
        ));
    }
    if !opts.verify_first {
        return None;
    }
    let r = verify(image, &opts.verify);
    if r.verdict == crate::checks::Verdict::Pass || opts.force_failed {
        return None;
    }
    let failed: Vec<String> = r.failed().map(|c| c.id.clone()).collect();
    Some((
        "skipped-verify",
        match &r.error {
            Some(e) => e.clone(),
            None => format!("verify failed: {}", failed.join(", ")),
        },
    ))
}

/// Refuse a batch whose outputs would replace one of its inputs (an output folder that is the
/// input folder, with an input already named like an output: `x.qcow2` converted to qcow2), or
/// whose inputs would all write one output (`x.vhd` and `x.vmdk`). Nothing is converted then.
/// Returns the identities of the local inputs, which no output may replace later either.
fn refuse_clashes(images: &[String], opts: &BatchConvertOptions) -> Result<Vec<FileId>> {
    let dir = opts
        .out_dir
        .canonicalize()
        .map_err(|e| Error::io(opts.out_dir.display(), e))?;
    let local = images.iter().filter(|i| !is_nbd_uri(i));
    let inputs: Vec<(PathBuf, Option<FileId>)> = local
        .filter_map(|i| {
            let canon = Path::new(i).canonicalize().ok()?;
            let id = std::fs::metadata(&canon).ok().map(|m| FileId::of(&m));
            Some((canon, id))
        })
        .collect();
    let ids: Vec<FileId> = inputs.iter().filter_map(|(_, id)| *id).collect();
    let mut outputs: HashMap<PathBuf, &str> = HashMap::new();
    for image in images {
        let out = output_name(image, &opts.out_dir, opts.convert.format);
        let name = out.file_name().map(PathBuf::from).unwrap_or_default();
        let at = dir.join(name);
        let same_id = std::fs::metadata(&at)
            .ok()
            .is_some_and(|m| ids.contains(&FileId::of(&m)));
        if same_id || inputs.iter().any(|(p, _)| *p == at) {
            return Err(Error::refused(
                out.display(),
                format!(
                    "this output of {image} would replace an input of the batch (the output \
                     folder holds the inputs, and one is named like an output); choose another \
                     --out-dir — nothing was converted"
                ),
            ));
        }
        if let Some(other) = outputs.insert(at, image) {
            return Err(Error::refused(
                out.display(),
                format!(
                    "both {other} and {image} would be converted to this output; give them \
                     different names or convert them separately — nothing was converted"
                ),
            ));
        }
    }
    Ok(ids)
}

/// Convert many images into `out_dir`, one after another (each conversion is parallel inside).
/// An output that already exists is complete (outputs appear only by an atomic rename) and
/// is kept, so a batch interrupted and run again redoes only what was not finished.
pub fn batch_convert(
    images: &[String],
    opts: &BatchConvertOptions,
    done: &dyn Fn(&BatchItem),
) -> Result<Vec<BatchItem>> {
    std::fs::create_dir_all(&opts.out_dir).map_err(|e| Error::io(opts.out_dir.display(), e))?;
    let protect = refuse_clashes(images, opts)?;
    remove_stale_temporaries(&opts.out_dir)?;
    let mut convert_opts = opts.convert.clone();
    convert_opts.protect.extend(protect);
    let mut items = Vec::new();
    for image in images {
        if crate::convert::cancelled() {
            // Ctrl-C: the interrupted conversion removed its temporary output; stop here.
            break;
        }
        let out = output_name(image, &opts.out_dir, opts.convert.format);
        let mut item = BatchItem {
            image: image.clone(),
            output: out.display().to_string(),
            outcome: String::new(),
            message: None,
            virtual_size: 0,
            bytes_read: 0,
            seconds: 0.0,
        };
        let start = std::time::Instant::now();
        if let Some((outcome, message)) = skip_reason(image, &out, opts) {
            item.outcome = outcome.into();
            item.message = Some(message);
        } else {
            let result = crate::image::open_spec(image, &opts.verify.open).and_then(|dev| {
                item.virtual_size = dev.size();
                crate::convert::convert(dev, &out, &convert_opts, &|_| {})
            });
            match result {
                Ok(stats) => {
                    item.outcome = "converted".into();
                    item.bytes_read = stats.bytes_read;
                }
                Err(e) => {
                    item.outcome = "error".into();
                    item.message = Some(e.to_string());
                }
            }
        }
        item.seconds = start.elapsed().as_secs_f64();
        done(&item);
        items.push(item);
    }
    Ok(items)
}
