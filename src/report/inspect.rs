//! Text rendering of `imgcheck inspect`.

use std::fmt::Write;

use crate::checks::image_format::human_size;
use crate::checks::inspect::InspectReport;
use crate::windows::OsInfo;

fn field(out: &mut String, name: &str, v: Option<impl std::fmt::Display>) {
    if let Some(v) = v {
        let _ = writeln!(out, "  {name:18} {v}");
    }
}

/// Render an inspection as text.
pub fn render(r: &InspectReport) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{}: {}{}, {} ({} bytes)",
        r.image,
        r.format,
        r.subformat
            .as_deref()
            .map(|s| format!(" {s}"))
            .unwrap_or_default(),
        human_size(r.virtual_size),
        r.virtual_size
    );
    if let Some(t) = &r.partition_table {
        let _ = writeln!(out, "\nPartitions ({}):", t.kind);
        for p in &t.partitions {
            let _ = writeln!(
                out,
                "  {:2}  {:>10} at {:>10}  {}{}{}",
                p.index,
                human_size(p.size),
                human_size(p.start),
                p.type_name,
                if p.bootable { ", active" } else { "" },
                if Some(p.index) == r.windows_partition {
                    ", Windows"
                } else {
                    ""
                }
            );
        }
    }
    if let Some(os) = &r.os {
        windows(&mut out, os);
    }
    boot_and_drivers(&mut out, r);
    software(&mut out, r);
    for e in &r.errors {
        let _ = writeln!(out, "\nnot read: {e}");
    }
    out
}

/// The Windows identity.
fn windows(out: &mut String, os: &OsInfo) {
    let _ = writeln!(out, "\nWindows:");
    field(out, "product", os.product_name.as_ref());
    field(out, "edition", os.edition_id.as_ref());
    field(out, "installation type", os.installation_type.as_ref());
    field(out, "version", os.version.as_ref());
    field(out, "display version", os.display_version.as_ref());
    field(out, "architecture", os.architecture.as_ref());
    field(out, "system root", os.system_root.as_ref());
    field(out, "host name", os.host_name.as_ref());
    field(out, "time zone", os.time_zone.as_ref());
    field(out, "registered owner", os.registered_owner.as_ref());
    field(
        out,
        "control set",
        Some(format!("{} ({})", os.control_set, os.control_set_source)),
    );
    for (name, h) in [("SYSTEM", &os.system_hive), ("SOFTWARE", &os.software_hive)] {
        if h.dirty || h.logs_applied {
            field(
                out,
                &format!("{name} hive"),
                Some(if h.logs_applied {
                    "dirty; transaction logs replayed"
                } else {
                    "dirty; logs not replayed (recent changes may be missing)"
                }),
            );
        }
    }
    if !os.drive_letters.is_empty() {
        let letters: Vec<&str> = os.drive_letters.iter().map(|d| d.letter.as_str()).collect();
        field(out, "drive letters", Some(letters.join(" ")));
    }
}

/// The BCD, Virtio storage and Cloudbase-Init.
fn boot_and_drivers(out: &mut String, r: &InspectReport) {
    if let Some(b) = &r.boot {
        let _ = writeln!(out, "\nBoot (BCD {} on partition {}):", b.path, b.partition);
        field(
            out,
            "firmware",
            Some(format!("{:?}", b.bcd.firmware).to_uppercase()),
        );
        field(out, "loader", b.bcd.loader_path.as_ref());
        field(out, "description", b.bcd.loader_description.as_ref());
        field(out, "evidence", Some(&b.bcd.evidence));
    }
    if let Some(v) = &r.virtio {
        let _ = writeln!(out, "\nVirtio storage: {}", v.state_text);
        let _ = writeln!(out, "  {}", v.message);
        let _ = writeln!(
            out,
            "  netkvm: {}",
            if v.netkvm.present {
                "installed"
            } else {
                "not installed"
            }
        );
    }
    if let Some(f) = &r.storage_filters {
        let broken: Vec<String> = f
            .broken()
            .map(|b| format!("{} {} {}", b.class_name, b.value, b.filter))
            .collect();
        let _ = writeln!(
            out,
            "\nStorage class filters: {} set, {}",
            f.filters.len(),
            if broken.is_empty() {
                "all load".to_string()
            } else {
                format!("broken: {}", broken.join(", "))
            }
        );
    }
    if let Some(c) = &r.cloudbase_init {
        let _ = writeln!(
            out,
            "\nCloudbase-Init: {}",
            if c.installed {
                format!(
                    "installed{}",
                    c.version
                        .as_deref()
                        .map(|v| format!(" ({v})"))
                        .unwrap_or_default()
                )
            } else {
                "not installed".into()
            }
        );
    }
}

/// Conflicting guest tools, warnings, applications and services.
fn software(out: &mut String, r: &InspectReport) {
    if !r.conflicts.is_empty() {
        let _ = writeln!(out, "\nConflicting guest tools:");
        for c in &r.conflicts {
            let _ = writeln!(
                out,
                "  {:26} {:24} {:8}  {}",
                c.suite_name,
                c.name,
                if c.enabled { "enabled" } else { "disabled" },
                c.registry_path
            );
        }
    }
    if !r.warnings.is_empty() {
        let _ = writeln!(out, "\nWarnings:");
        for w in &r.warnings {
            let _ = writeln!(out, "  {}", w.message);
        }
    }
    if let Some(os) = &r.os {
        let _ = writeln!(out, "\nApplications ({}):", os.applications.len());
        for a in &os.applications {
            let _ = writeln!(
                out,
                "  {}{}{}",
                a.name,
                a.version
                    .as_deref()
                    .map(|v| format!("  {v}"))
                    .unwrap_or_default(),
                if a.wow64 { "  (32-bit)" } else { "" }
            );
        }
        let _ = writeln!(out, "\nServices ({}):", os.services.len());
        for s in &os.services {
            let _ = writeln!(out, "  {:28} {}", s.name, s.start_name);
        }
    }
}
