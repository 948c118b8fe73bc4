//! JUnit XML: one testsuite per image, one testcase per check, so CI systems show every check.
//! Failed checks are `<failure>`, skipped checks `<skipped>`, an unreadable image is an
//! `<error>`; warnings pass and carry their message in `<system-out>`, except under `--strict`,
//! where they fail the run and so are `<failure>`s too: the report and the exit status agree.

use std::fmt::Write;

use crate::checks::{CheckResult, ImageReport, Status, Verdict};

/// Escape text for XML attributes and content.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for ch in s.chars() {
        match ch {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            // Characters XML 1.0 cannot carry at all.
            c if (c as u32) < 0x20 && !matches!(c, '\t' | '\n' | '\r') => {
                out.push_str(&format!("\\x{:02x}", c as u32))
            }
            c => out.push(c),
        }
    }
    out
}

/// Render the run as JUnit XML.
pub fn render(reports: &[ImageReport]) -> String {
    let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let tests: usize = reports.iter().map(|r| r.checks.len()).sum();
    let failures: usize = reports
        .iter()
        .filter(|r| r.verdict != Verdict::Error)
        .map(|r| r.failed().count())
        .sum();
    let errors = reports
        .iter()
        .filter(|r| r.verdict == Verdict::Error)
        .count();
    let _ = writeln!(
        out,
        "<testsuites name=\"imgcheck\" tests=\"{tests}\" failures=\"{failures}\" errors=\"{errors}\">"
    );
    for r in reports {
        let n = r.checks.len();
        let skipped = r.checks.iter().filter(|c| c.status == Status::Skip).count();
        let (f, e) = if r.verdict == Verdict::Error {
            (0, 1)
        } else {
            (r.failed().count(), 0)
        };
        let _ = writeln!(
            out,
            "  <testsuite name=\"{}\" tests=\"{n}\" failures=\"{f}\" errors=\"{e}\" skipped=\"{skipped}\">",
            escape(&r.image)
        );
        for c in &r.checks {
            testcase(&mut out, r, c);
        }
        let _ = writeln!(out, "  </testsuite>");
    }
    out.push_str("</testsuites>\n");
    out
}

/// One check as a testcase: an error when the image could not be read, a failure when it
/// fails the run (a warning does under `--strict`), skipped, or passed with its message.
fn testcase(out: &mut String, r: &ImageReport, c: &CheckResult) {
    let _ = write!(
        out,
        "    <testcase classname=\"{}\" name=\"{}\"",
        escape(&r.image),
        escape(&c.id)
    );
    let text = match &c.hint {
        Some(h) => format!("{}\nWhat to do: {h}", c.message),
        None => c.message.clone(),
    };
    let body = match c.status {
        Status::Fail if r.verdict == Verdict::Error => format!(
            "<error message=\"{}\">{}</error>",
            escape(&c.message),
            escape(&text)
        ),
        Status::Fail => format!(
            "<failure message=\"{}\" type=\"{}\">{}</failure>",
            escape(&c.message),
            escape(&c.id),
            escape(&text)
        ),
        Status::Warn if c.fails_run(r.strict) => format!(
            "<failure message=\"{}\" type=\"{}\">WARNING (fails the run under --strict): {}</failure>",
            escape(&c.message),
            escape(&c.id),
            escape(&text)
        ),
        Status::Skip => format!("<skipped message=\"{}\"/>", escape(&c.message)),
        Status::Warn => format!("<system-out>WARNING: {}</system-out>", escape(&text)),
        Status::Pass => format!("<system-out>{}</system-out>", escape(&text)),
    };
    let _ = writeln!(out, ">\n      {body}\n    </testcase>");
}
