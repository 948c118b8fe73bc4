//! `drivers.virtio`: a Virtio storage driver (viostor or vioscsi) will take the boot disk,
//! and netkvm gives the instance a network. The registry analysis is
//! [`crate::windows::virtio`]; this file turns its verdict into a check result.

use super::{CheckError, CheckResult};
use crate::guest::Disk;
use crate::windows::virtio::{virtio_storage, VirtioState, VirtioStatus};

pub const ID: &str = "drivers.virtio";

/// `drivers.virtio`: a Virtio storage driver that will take the boot disk; netkvm.
pub fn run(disk: &Disk) -> Result<CheckResult, CheckError> {
    let (system, software) = super::hives(disk)?;
    let win = disk
        .windows()
        .ok_or_else(|| CheckError::Skip("no Windows installation was found".into()))?;
    let exists = |p: &str| matches!(win.exists(p), Ok(true));
    let st = virtio_storage(system, software, &exists)?;
    let mut r = match (st.state, st.netkvm.present) {
        (VirtioState::Ok, true) => CheckResult::pass(ID, st.message.clone()),
        (VirtioState::Ok, false) => CheckResult::warn(
            ID,
            format!(
                "{}; but netkvm (the Virtio network driver) is not installed",
                st.message
            ),
            "install the Virtio network driver (netkvm) from the virtio-win package, or the \
             instance will have no network on the target platform",
        )
        .with_evidence(st.netkvm.registry_path.clone()),
        _ => CheckResult::fail(
            ID,
            format!("{} [{}]", st.message, driver_states(&st)),
            st.hint.clone(),
        ),
    };
    for d in &st.drivers {
        r.evidence.push(format!(
            "{}: {} ({})",
            d.name,
            d.state.as_str(),
            d.service_registry_path
        ));
        if let Some(o) = &d.start_override {
            r.evidence.push(format!(
                "{}: {}",
                o.registry_path,
                match o.disabling() {
                    v if v.is_empty() => "overrides nothing (every value is 0)".to_string(),
                    v => v.join(", "),
                }
            ));
        }
        for b in &d.bindings {
            r.evidence.push(format!(
                "{} bound via {} ({})",
                b.hardware_id, b.source, b.registry_path
            ));
        }
    }
    Ok(r)
}

/// Every driver's state in the issue's words ("not installed", "installed but not
/// boot-start", ...), not only the one that decided.
fn driver_states(st: &VirtioStatus) -> String {
    let states: Vec<String> = st
        .drivers
        .iter()
        .map(|d| {
            let missing = match (&d.driver_file, d.driver_file_exists) {
                (Some(f), Some(false)) => format!(" ({f} missing)"),
                _ => String::new(),
            };
            format!("{}: {}{missing}", d.name, d.state.as_str())
        })
        .collect();
    if states.is_empty() {
        st.state_text.clone()
    } else {
        states.join("; ")
    }
}
