//! `software.conflicts`: guest tools of other hypervisors (VMware Tools, Xen PV drivers,
//! VirtualBox Guest Additions, Parallels Tools) are not left enabled; they conflict with the
//! target platform's devices. The analysis is [`crate::windows::conflicts`].

use super::{CheckError, CheckResult};
use crate::guest::Disk;
use crate::windows::conflicts::{conflicts, Conflict};

pub const ID: &str = "software.conflicts";

fn describe_conflict(c: &Conflict) -> String {
    let mut s = format!("{}: {}", c.suite_name, c.name);
    if let Some(d) = &c.detail {
        s.push_str(&format!(" ({d})"));
    }
    s.push_str(if c.enabled {
        ", enabled"
    } else if c.remnant {
        ", a remnant"
    } else {
        ", disabled"
    });
    s
}

/// `software.conflicts`: guest tools of other hypervisors.
pub fn run(disk: &Disk) -> Result<CheckResult, CheckError> {
    let id = ID;
    let (system, software) = super::hives(disk)?;
    let found = conflicts(system, software)?;
    let mut suites: Vec<&str> = Vec::new();
    for c in &found {
        if !suites.contains(&c.suite_name.as_str()) {
            suites.push(&c.suite_name);
        }
    }
    let enabled: Vec<&Conflict> = found.iter().filter(|c| c.enabled).collect();
    let hint = "uninstall them on the source before exporting (Control Panel > Programs and \
                Features; for drivers left behind, `sc delete NAME` and remove the name from the \
                class's UpperFilters/LowerFilters), as the guide requires: they conflict with \
                the target platform's devices";
    let mut r = if !enabled.is_empty() {
        let names: Vec<String> = enabled.iter().map(|c| c.name.clone()).collect();
        CheckResult::fail(
            id,
            format!(
                "conflicting guest tools are installed and enabled: {} ({})",
                suites.join(", "),
                names.join(", ")
            ),
            hint,
        )
    } else if !found.is_empty() {
        let names: Vec<String> = found.iter().map(|c| c.name.clone()).collect();
        CheckResult::warn(
            id,
            format!(
                "leftovers of {} are present but disabled{} ({})",
                suites.join(", "),
                if found.iter().any(|c| c.remnant) {
                    " or left as remnant keys Windows cannot start (no Type, Start or ImagePath)"
                } else {
                    ""
                },
                names.join(", ")
            ),
            hint,
        )
    } else {
        CheckResult::pass(
            id,
            "no VMware Tools, Xen PV drivers, VirtualBox Guest Additions or Parallels Tools found",
        )
    };
    for c in &found {
        r.evidence
            .push(format!("{} — {}", describe_conflict(c), c.registry_path));
    }
    Ok(r)
}
