//! Facts read from the SOFTWARE hive. Registry paths are relative to the hive root (prefix
//! `HKLM\SOFTWARE\` when showing them to a user).

use serde::Serialize;

use super::hive::Hive;
use crate::Result;

pub const CURRENT_VERSION: &str = "Microsoft\\Windows NT\\CurrentVersion";
pub const UNINSTALL: &str = "Microsoft\\Windows\\CurrentVersion\\Uninstall";
pub const UNINSTALL_WOW64: &str = "WOW6432Node\\Microsoft\\Windows\\CurrentVersion\\Uninstall";
pub const CBS_REBOOT_PENDING: &str =
    "Microsoft\\Windows\\CurrentVersion\\Component Based Servicing\\RebootPending";
pub const WU_REBOOT_REQUIRED: &str =
    "Microsoft\\Windows\\CurrentVersion\\WindowsUpdate\\Auto Update\\RebootRequired";

/// `Microsoft\Windows NT\CurrentVersion`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct WindowsVersion {
    pub product_name: Option<String>,
    pub edition_id: Option<String>,
    /// "Client", "Server", "Server Core"...
    pub installation_type: Option<String>,
    /// CurrentVersion, e.g. "6.1" (Windows 10 and later still say "6.3").
    pub current_version: Option<String>,
    pub major: Option<u32>,
    pub minor: Option<u32>,
    pub build: Option<String>,
    pub ubr: Option<u32>,
    pub display_version: Option<String>,
    pub system_root: Option<String>,
    pub registered_owner: Option<String>,
    pub registry_path: String,
}

impl WindowsVersion {
    /// "major.minor.build.ubr" from what is known: CurrentMajor/MinorVersionNumber when
    /// present (Windows 10+), else CurrentVersion.
    pub fn version_string(&self) -> Option<String> {
        let mm = match (self.major, self.minor) {
            (Some(a), Some(b)) => format!("{a}.{b}"),
            _ => self.current_version.clone()?,
        };
        let mut s = mm;
        if let Some(b) = &self.build {
            s.push('.');
            s.push_str(b);
            if let Some(u) = self.ubr {
                s.push_str(&format!(".{u}"));
            }
        }
        Some(s)
    }

    /// (major, minor) from the numbers or from CurrentVersion.
    pub fn major_minor(&self) -> Option<(u32, u32)> {
        if let (Some(a), Some(b)) = (self.major, self.minor) {
            return Some((a, b));
        }
        let cv = self.current_version.as_deref()?;
        let mut it = cv.split('.');
        Some((
            it.next()?.trim().parse().ok()?,
            it.next()?.trim().parse().ok()?,
        ))
    }

    /// The build number as a number.
    pub fn build_number(&self) -> Option<u32> {
        self.build.as_deref()?.trim().parse().ok()
    }
}

/// Reads `Microsoft\Windows NT\CurrentVersion`; `Ok(None)` when the key is absent.
pub fn windows_version(software: &Hive) -> Result<Option<WindowsVersion>> {
    let Some(k) = software.key(CURRENT_VERSION)? else {
        return Ok(None);
    };
    Ok(Some(WindowsVersion {
        product_name: k.nonempty_string("ProductName"),
        edition_id: k.nonempty_string("EditionID"),
        installation_type: k.nonempty_string("InstallationType"),
        current_version: k.nonempty_string("CurrentVersion"),
        major: k.dword("CurrentMajorVersionNumber"),
        minor: k.dword("CurrentMinorVersionNumber"),
        build: k
            .nonempty_string("CurrentBuildNumber")
            .or_else(|| k.nonempty_string("CurrentBuild")),
        ubr: k.dword("UBR"),
        display_version: k
            .nonempty_string("DisplayVersion")
            .or_else(|| k.nonempty_string("ReleaseId")),
        system_root: k
            .nonempty_string("SystemRoot")
            .or_else(|| k.nonempty_string("PathName")),
        registered_owner: k.nonempty_string("RegisteredOwner"),
        registry_path: k.path().to_string(),
    }))
}

/// An installed application (an Uninstall entry with a DisplayName).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Application {
    pub name: String,
    pub version: Option<String>,
    pub publisher: Option<String>,
    pub install_date: Option<String>,
    /// Found under WOW6432Node (a 32-bit application on 64-bit Windows).
    pub wow64: bool,
    /// The Uninstall subkey name (a product code GUID or a name).
    pub key_name: String,
    pub registry_path: String,
}

/// Installed applications from both Uninstall keys, sorted by name.
pub fn applications(software: &Hive) -> Result<Vec<Application>> {
    let mut out = Vec::new();
    for (path, wow64) in [(UNINSTALL, false), (UNINSTALL_WOW64, true)] {
        for k in software.subkeys_of(path)?.iter() {
            let Some(name) = k.nonempty_string("DisplayName") else {
                continue;
            };
            out.push(Application {
                name,
                version: k.nonempty_string("DisplayVersion"),
                publisher: k.nonempty_string("Publisher"),
                install_date: k.nonempty_string("InstallDate"),
                wow64,
                key_name: k.name().to_string(),
                registry_path: k.path().to_string(),
            });
        }
    }
    out.sort_by_cached_key(|a| (a.name.to_lowercase(), a.wow64));
    Ok(out)
}

/// Registry paths of the pending-reboot markers that exist.
pub fn pending_reboot_markers(software: &Hive) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for p in [CBS_REBOOT_PENDING, WU_REBOOT_REQUIRED] {
        if let Some(k) = software.key(p)? {
            out.push(k.path().to_string());
        }
    }
    Ok(out)
}

/// Convenience for callers that only have the version: Windows 8 / Server 2012 (6.2) or later.
pub fn is_win8_or_later(v: &WindowsVersion) -> bool {
    v.major_minor().is_some_and(|(a, b)| (a, b) >= (6, 2))
}
