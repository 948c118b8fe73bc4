//! JUnit XML: one testsuite per image, one testcase per check, so CI systems show every check.
//! Failed checks are `<failure>`, skipped checks `<skipped>`, an unreadable image is an
//! `<error>`; warnings pass and carry their message in `<system-out>`.

use std::fmt::Write;

use crate::checks::{ImageReport, Status, Verdict};

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
            match c.status {
                Status::Fail if r.verdict == Verdict::Error => {
                    let _ = writeln!(
                        out,
                        ">\n      <error message=\"{}\">{}</error>\n    </testcase>",
                        escape(&c.message),
                        escape(&text)
                    );
                }
                Status::Fail => {
                    let _ = writeln!(
                        out,
                        ">\n      <failure message=\"{}\" type=\"{}\">{}</failure>\n    </testcase>",
                        escape(&c.message),
                        escape(&c.id),
                        escape(&text)
                    );
                }
                Status::Skip => {
                    let _ = writeln!(
                        out,
                        ">\n      <skipped message=\"{}\"/>\n    </testcase>",
                        escape(&c.message)
                    );
                }
                Status::Warn => {
                    let _ = writeln!(
                        out,
                        ">\n      <system-out>WARNING: {}</system-out>\n    </testcase>",
                        escape(&text)
                    );
                }
                Status::Pass => {
                    let _ = writeln!(
                        out,
                        ">\n      <system-out>{}</system-out>\n    </testcase>",
                        escape(&text)
                    );
                }
            }
        }
        let _ = writeln!(out, "  </testsuite>");
    }
    out.push_str("</testsuites>\n");
    out
}
