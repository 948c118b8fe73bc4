//! One self-contained HTML page per run (no scripts, fonts or images fetched from anywhere):
//! a card per image with its verdict, each check with its hint, the OS identity, and the disk's
//! partitions and allocated regions drawn to scale as inline SVG.

use std::fmt::Write;

use super::junit::escape;
use crate::checks::image_format::human_size;
use crate::checks::os::OsSummary;
use crate::checks::{ImageReport, Status};

const CSS: &str = r#"
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:2em;background:#f4f5f7;color:#1d2330}
h1{font-size:1.4em;margin:0 0 .3em}
.summary{margin:0 0 1.5em;color:#444}
.card{background:#fff;border-radius:8px;box-shadow:0 1px 3px rgba(0,0,0,.15);padding:1em 1.3em;margin:0 0 1.2em;border-left:6px solid #999}
.card.pass{border-left-color:#2e7d32}.card.fail{border-left-color:#c62828}.card.error{border-left-color:#6a1b9a}
.card h2{font-size:1.1em;margin:0 0 .4em;word-break:break-all}
.badge{display:inline-block;padding:.1em .6em;border-radius:4px;font-weight:bold;color:#fff;font-size:.85em;margin-right:.5em}
.b-pass{background:#2e7d32}.b-fail{background:#c62828}.b-error{background:#6a1b9a}.b-warn{background:#ef6c00}.b-skip{background:#90a4ae}
table{border-collapse:collapse;width:100%;margin:.5em 0}
td,th{text-align:left;padding:.3em .5em;vertical-align:top;border-bottom:1px solid #eee;font-size:.92em}
th{color:#555;font-weight:600}
td.id{font-family:ui-monospace,monospace;white-space:nowrap}
.hint{color:#8a4b00;margin-top:.2em}
.evidence{color:#666;font-family:ui-monospace,monospace;font-size:.85em}
.meta{color:#555;font-size:.9em}
svg{width:100%;height:auto;display:block;margin:.4em 0}
.legend{font-size:.8em;color:#555}
"#;

fn badge(label: &str, class: &str) -> String {
    format!("<span class=\"badge b-{class}\">{}</span>", escape(label))
}

fn status_class(s: Status) -> &'static str {
    s.as_str()
}

/// Render the run.
pub fn render(reports: &[ImageReport], title: &str) -> String {
    let mut out = String::new();
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
         <title>{}</title><style>{CSS}</style></head><body>\n<h1>{}</h1>\n\
         <p class=\"summary\">{}</p>\n",
        escape(title),
        escape(title),
        escape(&super::tally_sentence(reports))
    );
    for r in reports {
        card(&mut out, r);
    }
    out.push_str("</body></html>\n");
    out
}

fn card(out: &mut String, r: &ImageReport) {
    let v = r.verdict.as_str();
    let _ = writeln!(
        out,
        "<section class=\"card {v}\"><h2>{}{}</h2>",
        badge(&v.to_uppercase(), v),
        escape(&r.image)
    );
    let mut meta = Vec::new();
    if let Some(f) = r.format {
        meta.push(match &r.subformat {
            Some(s) => format!("{f} ({s})"),
            None => f.to_string(),
        });
    }
    if let Some(s) = r.virtual_size {
        meta.push(format!("virtual size {}", human_size(s)));
    }
    if !meta.is_empty() {
        let _ = writeln!(
            out,
            "<div class=\"meta\">{}</div>",
            escape(&meta.join(", "))
        );
    }
    if let Some(e) = &r.error {
        let _ = writeln!(out, "<p class=\"hint\">{}</p>", escape(e));
    }
    out.push_str("<table><tr><th>status</th><th>check</th><th>finding</th></tr>\n");
    for c in &r.checks {
        let _ = write!(
            out,
            "<tr><td>{}</td><td class=\"id\">{}</td><td>{}",
            badge(c.status.as_str(), status_class(c.status)),
            escape(&c.id),
            escape(&c.message)
        );
        if let Some(h) = &c.hint {
            if matches!(c.status, Status::Fail | Status::Warn) {
                let _ = write!(out, "<div class=\"hint\">What to do: {}</div>", escape(h));
            }
        }
        for e in &c.evidence {
            let _ = write!(out, "<div class=\"evidence\">{}</div>", escape(e));
        }
        out.push_str("</td></tr>\n");
    }
    out.push_str("</table>\n");
    if let Some(os) = &r.os {
        os_table(out, os);
    }
    if let (Some(layout), Some(size)) = (&r.layout, r.virtual_size) {
        disk_svg(out, layout, size);
    }
    out.push_str("</section>\n");
}

/// The OS fields in the order people read them, with their labels; absent and empty ones are
/// left out.
fn os_rows(os: &OsSummary) -> Vec<(&'static str, String)> {
    let list = |v: &[String]| (!v.is_empty()).then(|| v.join(", "));
    [
        ("product", os.product_name.clone()),
        ("edition", os.edition_id.clone()),
        ("installation type", os.installation_type.clone()),
        ("version", os.version.clone()),
        ("architecture", os.architecture.clone()),
        ("host name", os.host_name.clone()),
        ("system root", os.system_root.clone()),
        ("time zone", os.time_zone.clone()),
        ("control set", Some(os.control_set.clone())),
        ("drive letters", list(&os.drive_letters)),
        ("installed applications", Some(os.applications.to_string())),
        ("services", Some(os.services.to_string())),
        ("hives replayed from their logs", list(&os.hives_replayed)),
    ]
    .into_iter()
    .filter_map(|(label, v)| v.map(|v| (label, v)))
    .collect()
}

fn os_table(out: &mut String, os: &OsSummary) {
    out.push_str("<table><tr><th colspan=\"2\">Windows</th></tr>\n");
    for (label, text) in os_rows(os) {
        let _ = writeln!(
            out,
            "<tr><td class=\"id\">{}</td><td>{}</td></tr>",
            escape(label),
            escape(&text)
        );
    }
    out.push_str("</table>\n");
}

fn disk_svg(out: &mut String, layout: &crate::checks::layout::Layout, size: u64) {
    const W: f64 = 1000.0;
    let scale = |b: u64| b as f64 / size.max(1) as f64 * W;
    let _ = write!(
        out,
        "<svg viewBox=\"0 0 {W} 74\" role=\"img\" aria-label=\"disk layout\">\
         <rect x=\"0\" y=\"0\" width=\"{W}\" height=\"40\" fill=\"#eceff1\" stroke=\"#b0bec5\"/>"
    );
    let colors = [
        "#42a5f5", "#66bb6a", "#ffa726", "#ab47bc", "#26c6da", "#ef5350",
    ];
    for (i, p) in layout.partitions.iter().enumerate() {
        let x = scale(p.start);
        let w = scale(p.size).max(1.0);
        let _ = write!(
            out,
            "<rect x=\"{x:.2}\" y=\"0\" width=\"{w:.2}\" height=\"40\" fill=\"{}\" fill-opacity=\"0.75\" stroke=\"#fff\">\
             <title>partition {}: {} at {} ({} bytes){}</title></rect>",
            colors[i % colors.len()],
            p.index,
            escape(&p.kind),
            human_size(p.start),
            p.size,
            if p.bootable { ", active" } else { "" }
        );
        if w > 60.0 {
            let _ = write!(
                out,
                "<text x=\"{:.2}\" y=\"25\" font-size=\"12\" fill=\"#0d1b2a\">{} {} {}</text>",
                x + 4.0,
                p.index,
                escape(&p.kind),
                human_size(p.size)
            );
        }
    }
    let n = layout.allocation.len().max(1) as f64;
    for (i, f) in layout.allocation.iter().enumerate() {
        if *f <= 0.0 {
            continue;
        }
        let _ = write!(
            out,
            "<rect x=\"{:.2}\" y=\"46\" width=\"{:.2}\" height=\"12\" fill=\"#37474f\" fill-opacity=\"{:.2}\"/>",
            i as f64 * W / n,
            W / n,
            0.15 + 0.85 * f
        );
    }
    let _ = writeln!(
        out,
        "<text x=\"0\" y=\"72\" font-size=\"11\" fill=\"#555\">0</text>\
         <text x=\"{W}\" y=\"72\" font-size=\"11\" fill=\"#555\" text-anchor=\"end\">{}</text></svg>\
         <div class=\"legend\">Top: partitions to scale. Bottom: allocated regions (darker = more data).</div>",
        human_size(size)
    );
}
