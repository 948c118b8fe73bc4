//! Reports: human text, JSON (one document), JSON lines (one object per image), JUnit XML.

pub mod html;
pub mod inspect;
pub mod junit;
pub mod text;

use serde::Serialize;

use crate::checks::{ImageReport, Verdict};

/// One image's JSON object: the report plus the schema version.
#[derive(Debug, Serialize)]
struct Versioned<'a> {
    /// Bumped only on incompatible changes to the fields of [`ImageReport`].
    schema_version: u32,
    #[serde(flatten)]
    report: &'a ImageReport,
}

/// Current JSON schema version (docs/schema.json).
pub const SCHEMA_VERSION: u32 = 1;

/// Render the run as JSON: the image's object when one image was checked, an array of objects
/// when several were (use JSON lines to stream many).
pub fn json(reports: &[ImageReport]) -> String {
    let v: Vec<Versioned> = reports
        .iter()
        .map(|report| Versioned {
            schema_version: SCHEMA_VERSION,
            report,
        })
        .collect();
    let out = if v.len() == 1 {
        serde_json::to_string_pretty(&v[0])
    } else {
        serde_json::to_string_pretty(&v)
    };
    out.expect("reports serialise")
}

/// One JSON line for one image.
pub fn json_line(report: &ImageReport) -> String {
    serde_json::to_string(&Versioned {
        schema_version: SCHEMA_VERSION,
        report,
    })
    .expect("reports serialise")
}

/// How many images passed, failed and could not be read.
pub fn tally(reports: &[ImageReport]) -> (usize, usize, usize) {
    let count = |v: Verdict| reports.iter().filter(|r| r.verdict == v).count();
    (
        count(Verdict::Pass),
        count(Verdict::Fail),
        count(Verdict::Error),
    )
}

/// "N images: P passed, F failed, E could not be read".
pub fn tally_sentence(reports: &[ImageReport]) -> String {
    let (pass, fail, err) = tally(reports);
    format!(
        "{} images: {pass} passed, {fail} failed, {err} could not be read",
        reports.len()
    )
}

/// Exit status for a run: 2 if any image could not be read, else 1 if any failed, else 0.
pub fn exit_status(reports: &[ImageReport]) -> u8 {
    if reports.iter().any(|r| r.verdict == Verdict::Error) {
        2
    } else if reports.iter().any(|r| r.verdict == Verdict::Fail) {
        1
    } else {
        0
    }
}
