//! Cloudbase-Init: its Uninstall entry and its service, both needed for a first boot that sets
//! the host name, password and network.

use serde::Serialize;

use super::hive::Hive;
use super::software::{self, Application};
use super::system::{self, Service};
use crate::Result;

/// cloudbase-init presence.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CloudbaseStatus {
    /// Both the Uninstall entry and the service exist.
    pub installed: bool,
    pub uninstall_entry: Option<Application>,
    pub version: Option<String>,
    pub service: Option<Service>,
    /// Where the service was looked for.
    pub service_registry_path: String,
}

/// Looks for the Cloudbase-Init Uninstall entry (DisplayName starting "Cloudbase-Init") and the
/// `cloudbase-init` service.
pub fn cloudbase_init(system: &Hive, software: &Hive) -> Result<CloudbaseStatus> {
    let cs = system::require_control_set(system)?;
    let entry = software::applications(software)?.into_iter().find(|a| {
        a.name
            .trim_start()
            .to_ascii_lowercase()
            .starts_with("cloudbase-init")
    });
    let service = system::service(system, &cs, "cloudbase-init")?;
    Ok(CloudbaseStatus {
        installed: entry.is_some() && service.is_some(),
        version: entry.as_ref().and_then(|e| e.version.clone()),
        service_registry_path: service
            .as_ref()
            .map(|s| s.registry_path.clone())
            .unwrap_or_else(|| format!("{}\\Services\\cloudbase-init", cs.name)),
        uninstall_entry: entry,
        service,
    })
}
