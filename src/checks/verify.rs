//! Run every check on one image and collect the report.

use serde::Serialize;

use super::{verdict_of, CheckResult, Policy, Verdict, CHECK_IDS, ID_IMAGE_FORMAT};
use crate::image::{self, Format, OpenOptions};

/// Options for `verify`.
#[derive(Debug, Clone, Default)]
pub struct VerifyOptions {
    pub open: OpenOptions,
    /// Which checks fail, warn or are off; `policy.strict` makes warnings fail.
    pub policy: Policy,
}

/// Everything `verify` found about one image. Field names are a stable interface (JSON).
#[derive(Debug, Clone, Serialize)]
pub struct ImageReport {
    pub image: String,
    pub format: Option<Format>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subformat: Option<String>,
    pub virtual_size: Option<u64>,
    pub verdict: Verdict,
    pub checks: Vec<CheckResult>,
    /// Why the image could not be read (verdict `error`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl ImageReport {
    /// Results of checks that failed.
    pub fn failed(&self) -> impl Iterator<Item = &CheckResult> {
        self.checks
            .iter()
            .filter(|c| c.status == super::Status::Fail)
    }
}

/// Verify the image named by `spec` (a path or an NBD URI).
pub fn verify(spec: &str, opts: &VerifyOptions) -> ImageReport {
    let dev = match image::open_spec(spec, &opts.open) {
        Ok(d) => d,
        Err(e) => {
            let msg = e.to_string();
            let mut checks = vec![CheckResult::fail(
                ID_IMAGE_FORMAT,
                msg.clone(),
                "the image could not be read; see the message",
            )];
            for id in &CHECK_IDS[1..] {
                checks.push(CheckResult::skip(id, "the image could not be read"));
            }
            return ImageReport {
                image: spec.to_string(),
                format: None,
                subformat: None,
                virtual_size: None,
                verdict: Verdict::Error,
                checks,
                error: Some(msg),
            };
        }
    };
    let mut checks = vec![super::image_format::check(dev.as_ref())];
    for id in &CHECK_IDS[1..] {
        checks.push(CheckResult::skip(id, "not checked yet by this build"));
    }
    let checks: Vec<CheckResult> = checks.into_iter().map(|c| opts.policy.apply(c)).collect();
    let verdict = verdict_of(&checks, opts.policy.strict);
    ImageReport {
        image: spec.to_string(),
        format: Some(dev.format()),
        subformat: dev.subformat(),
        virtual_size: Some(dev.size()),
        verdict,
        checks,
        error: None,
    }
}
