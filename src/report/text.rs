//! Human-readable report: per image, a table with one line per check and the hint under each
//! failure or warning.

use std::fmt::Write;

use crate::checks::image_format::human_size;
use crate::checks::{ImageReport, Status, Verdict};

/// Whether to colour the output (honours NO_COLOR; the caller decides about terminals).
#[derive(Debug, Clone, Copy)]
pub struct Style {
    pub color: bool,
}

fn paint(style: Style, code: &str, s: &str) -> String {
    if style.color {
        format!("\x1b[{code}m{s}\x1b[0m")
    } else {
        s.to_string()
    }
}

fn status_label(style: Style, s: Status) -> String {
    let (code, label) = match s {
        Status::Pass => ("32", "PASS"),
        Status::Warn => ("33", "WARN"),
        Status::Fail => ("31;1", "FAIL"),
        Status::Skip => ("2", "SKIP"),
    };
    paint(style, code, label)
}

fn verdict_code(v: Verdict) -> &'static str {
    match v {
        Verdict::Pass => "32;1",
        Verdict::Fail | Verdict::Error => "31;1",
    }
}

fn verdict_label(style: Style, v: Verdict) -> String {
    paint(style, verdict_code(v), &v.as_str().to_uppercase())
}

/// Render one image's report.
pub fn render(r: &ImageReport, style: Style) -> String {
    let mut out = String::new();
    let mut head = r.image.clone();
    if let Some(f) = r.format {
        head.push_str(&format!(": {f}"));
        if let Some(s) = &r.subformat {
            head.push_str(&format!(" {s}"));
        }
    }
    if let Some(v) = r.virtual_size {
        head.push_str(&format!(", {}", human_size(v)));
    }
    let _ = writeln!(out, "{head}");
    if let Some(os) = &r.os {
        let parts: Vec<String> = [
            os.product_name.clone(),
            os.version.clone(),
            os.architecture.clone(),
            os.host_name.as_ref().map(|h| format!("host {h}")),
        ]
        .into_iter()
        .flatten()
        .collect();
        if !parts.is_empty() {
            let _ = writeln!(out, "  os: {}", parts.join(", "));
        }
    }
    let width = r.checks.iter().map(|c| c.id.len()).max().unwrap_or(0);
    for c in &r.checks {
        let _ = writeln!(
            out,
            "  {}  {:width$}  {}",
            status_label(style, c.status),
            c.id,
            c.message
        );
        if let Some(h) = &c.hint {
            if matches!(c.status, Status::Fail | Status::Warn) {
                let _ = writeln!(out, "        {:width$}  → {h}", "");
            }
        }
    }
    let _ = writeln!(out, "  verdict: {}", verdict_label(style, r.verdict));
    out
}

/// Summary table over many images: image, format, virtual size, verdict, failed checks.
pub fn summary(reports: &[ImageReport], style: Style) -> String {
    let rows: Vec<[String; 5]> = reports
        .iter()
        .map(|r| {
            let failed: Vec<&str> = r.failed().map(|c| c.id.as_str()).collect();
            [
                r.image.clone(),
                r.format
                    .map(|f| f.to_string())
                    .unwrap_or_else(|| "-".into()),
                r.virtual_size.map(human_size).unwrap_or_else(|| "-".into()),
                r.verdict.as_str().to_string(),
                if failed.is_empty() {
                    "-".into()
                } else {
                    failed.join(",")
                },
            ]
        })
        .collect();
    let header = ["IMAGE", "FORMAT", "SIZE", "VERDICT", "FAILED CHECKS"];
    let mut w = header.map(str::len);
    for row in &rows {
        for (i, cell) in row.iter().enumerate() {
            w[i] = w[i].max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:w0$}  {:w1$}  {:>w2$}  {:w3$}  {}",
        header[0],
        header[1],
        header[2],
        header[3],
        header[4],
        w0 = w[0],
        w1 = w[1],
        w2 = w[2],
        w3 = w[3]
    );
    for (row, r) in rows.iter().zip(reports) {
        let pad = w[3].saturating_sub(row[3].len());
        let _ = writeln!(
            out,
            "{:w0$}  {:w1$}  {:>w2$}  {}{}  {}",
            row[0],
            row[1],
            row[2],
            paint(style, verdict_code(r.verdict), r.verdict.as_str()),
            " ".repeat(pad),
            row[4],
            w0 = w[0],
            w1 = w[1],
            w2 = w[2],
        );
    }
    let _ = writeln!(out, "{}", super::tally_sentence(reports));
    out
}

/// The table `batch-convert` ends with: per image its outcome, size, time and throughput.
pub fn batch_summary(s: &crate::batch::BatchSummary) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:40}  {:16}  {:>10}  {:>8}  {:>12}",
        "IMAGE", "OUTCOME", "SIZE", "SECONDS", "MB/s"
    );
    for i in &s.items {
        let mbps = if i.seconds > 0.0 {
            i.bytes_read as f64 / i.seconds / 1e6
        } else {
            0.0
        };
        let _ = writeln!(
            out,
            "{:40}  {:16}  {:>10}  {:>8.2}  {:>12.1}",
            i.image,
            i.outcome,
            human_size(i.virtual_size),
            i.seconds,
            mbps
        );
    }
    let _ = writeln!(
        out,
        "{} images: {} converted, {} kept (already complete), {} skipped by verify, {} errors; \
         {:.1} MB/s overall",
        s.items.len(),
        s.count("converted"),
        s.count("skipped-complete"),
        s.count("skipped-verify"),
        s.count("error"),
        s.bytes_per_second / 1e6
    );
    out
}
