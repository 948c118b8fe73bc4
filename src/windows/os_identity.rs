//! Who the Windows installation is: product, version, architecture, host name, time zone,
//! drive letters, applications and services, as `inspect` and the reports show it.

use serde::Serialize;

use super::hive::{Hive, ReplayInfo};
use super::software::{self, Application};
use super::system::{self, DriveLetter};
use crate::Result;

/// A service in the OS summary.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ServiceSummary {
    pub name: String,
    pub start: Option<u32>,
    pub start_name: String,
    #[serde(rename = "type")]
    pub service_type: Option<u32>,
    pub display_name: Option<String>,
    pub image_path: Option<String>,
}

/// Who the Windows installation is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct OsInfo {
    pub product_name: Option<String>,
    pub edition_id: Option<String>,
    pub installation_type: Option<String>,
    /// CurrentVersion ("6.1", "6.3").
    pub current_version: Option<String>,
    pub major_version: Option<u32>,
    pub minor_version: Option<u32>,
    pub build: Option<String>,
    pub ubr: Option<u32>,
    /// "10.0.19045.3803" or "6.1.7601".
    pub version: Option<String>,
    pub display_version: Option<String>,
    /// PROCESSOR_ARCHITECTURE: AMD64, x86, ARM64.
    pub architecture: Option<String>,
    /// SystemRoot, e.g. "C:\\Windows".
    pub system_root: Option<String>,
    pub registered_owner: Option<String>,
    pub host_name: Option<String>,
    pub time_zone: Option<String>,
    pub control_set: String,
    /// How the control set was chosen ("Select\\Current").
    pub control_set_source: String,
    pub drive_letters: Vec<DriveLetter>,
    pub applications: Vec<Application>,
    pub services: Vec<ServiceSummary>,
    pub system_hive: ReplayInfo,
    pub software_hive: ReplayInfo,
}

/// Collects the OS identity from SYSTEM and SOFTWARE.
pub fn os_identity(system: &Hive, software: &Hive) -> Result<OsInfo> {
    let cs = system::require_control_set(system)?;
    let v = software::windows_version(software)?.unwrap_or_default();
    let services = system::services(system, &cs)?
        .into_iter()
        .map(|s| ServiceSummary {
            name: s.name,
            start: s.start,
            start_name: s.start_name,
            service_type: s.service_type,
            display_name: s.display_name,
            image_path: s.image_path,
        })
        .collect();
    Ok(OsInfo {
        version: v.version_string(),
        product_name: v.product_name,
        edition_id: v.edition_id,
        installation_type: v.installation_type,
        current_version: v.current_version,
        major_version: v.major,
        minor_version: v.minor,
        build: v.build,
        ubr: v.ubr,
        display_version: v.display_version,
        architecture: system::processor_architecture(system, &cs)?,
        system_root: v.system_root,
        registered_owner: v.registered_owner,
        host_name: system::computer_name(system, &cs)?.map(|x| x.0),
        time_zone: system::time_zone(system, &cs)?,
        control_set: cs.name.clone(),
        control_set_source: cs.source.clone(),
        drive_letters: system::drive_letters(system)?,
        applications: software::applications(software)?,
        services,
        system_hive: system.replay().clone(),
        software_hive: software.replay().clone(),
    })
}
