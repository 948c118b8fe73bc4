//! `software.cloudbase-init`: Cloudbase-Init is installed (an Uninstall entry and its
//! service), so the instance gets its host name, password and network on first boot.

use super::{CheckError, CheckResult};
use crate::guest::Disk;
use crate::windows::cloudbase::cloudbase_init;

pub const ID: &str = "software.cloudbase-init";

/// `software.cloudbase-init`.
pub fn run(disk: &Disk) -> Result<CheckResult, CheckError> {
    let id = ID;
    let (system, software) = super::hives(disk)?;
    let st = cloudbase_init(system, software)?;
    let install_hint = "install Cloudbase-Init as the platform's guide describes (it sets the \
                        host name, password and network on first boot), then export again";
    Ok(match (&st.uninstall_entry, &st.service) {
        (Some(app), Some(svc)) => CheckResult::pass(
            id,
            format!(
                "{} is installed{}; service cloudbase-init starts {}",
                app.name,
                st.version
                    .as_deref()
                    .map(|v| format!(" (version {v})"))
                    .unwrap_or_default(),
                svc.start_name
            ),
        )
        .with_evidence(app.registry_path.clone())
        .with_evidence(svc.registry_path.clone()),
        (Some(app), None) => CheckResult::fail(
            id,
            format!(
                "{} is listed as installed but its service is missing ({})",
                app.name, st.service_registry_path
            ),
            "the installation is broken: reinstall Cloudbase-Init, then export again",
        )
        .with_evidence(app.registry_path.clone()),
        (None, Some(svc)) => CheckResult::fail(
            id,
            "the cloudbase-init service exists but Cloudbase-Init is not in the installed \
             programs",
            "the installation is incomplete: reinstall Cloudbase-Init, then export again",
        )
        .with_evidence(svc.registry_path.clone()),
        (None, None) => {
            CheckResult::fail(id, "Cloudbase-Init is not installed", install_hint).with_evidence(
                format!("no Uninstall entry; no {}", st.service_registry_path),
            )
        }
    })
}
