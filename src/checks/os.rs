//! The report's OS section: a short identity of the Windows installation (the full one is
//! `imgcheck inspect`). Its field names are a stable interface (JSON).
//!
//! Informational: it is absent, not an error, when the hives cannot be read, because the
//! registry checks already fail and say why.

use serde::Serialize;

use crate::guest::Disk;
use crate::windows::os_identity::{os_identity, OsInfo};

/// A short OS summary for reports (the full identity is in `imgcheck inspect`).
#[derive(Debug, Clone, Serialize)]
pub struct OsSummary {
    pub product_name: Option<String>,
    pub edition_id: Option<String>,
    pub installation_type: Option<String>,
    pub version: Option<String>,
    pub architecture: Option<String>,
    pub host_name: Option<String>,
    pub system_root: Option<String>,
    pub time_zone: Option<String>,
    pub control_set: String,
    pub drive_letters: Vec<String>,
    pub applications: usize,
    pub services: usize,
    pub hives_replayed: Vec<String>,
}

impl OsSummary {
    /// The summary of the Windows on `disk`, when its hives are readable.
    pub fn of_disk(disk: &Disk) -> Option<Self> {
        let (system, software) = disk.registry()?.hives().ok()?;
        os_identity(system, software).ok().map(|o| Self::of(&o))
    }

    pub fn of(os: &OsInfo) -> Self {
        OsSummary {
            product_name: os.product_name.clone(),
            edition_id: os.edition_id.clone(),
            installation_type: os.installation_type.clone(),
            version: os.version.clone(),
            architecture: os.architecture.clone(),
            host_name: os.host_name.clone(),
            system_root: os.system_root.clone(),
            time_zone: os.time_zone.clone(),
            control_set: os.control_set.clone(),
            drive_letters: os.drive_letters.iter().map(|d| d.letter.clone()).collect(),
            applications: os.applications.len(),
            services: os.services.len(),
            hives_replayed: [("SYSTEM", &os.system_hive), ("SOFTWARE", &os.software_hive)]
                .iter()
                .filter(|(_, r)| r.logs_applied)
                .map(|(n, _)| n.to_string())
                .collect(),
        }
    }
}
