//! Virtio storage: will a Virtio driver take the boot disk on the target platform?
//!
//! A viostor or vioscsi service with Start=0, its driver file present, and the Virtio PCI IDs
//! bound to it (DriverDatabase on Windows 8 / Server 2012 and later, else
//! CriticalDeviceDatabase): each missing piece is its own [`VirtioState`], so the message says
//! which one and the hint how to fix it.

use serde::Serialize;

use super::hive::Hive;
use super::paths::driver_file_path;
use super::software;
use super::system::{self, ControlSet, Service, StartOverride};
use crate::Result;

/// Verdict on the Virtio storage drivers, worst to best.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum VirtioState {
    /// No viostor/vioscsi service and no package in the driver store.
    NotInstalled,
    /// A viostor/vioscsi package is in the driver store but there is no service.
    StagedNoService,
    /// The service exists but Start is not 0 (boot).
    NotBootStart,
    /// Start is 0 but `StartOverride` overrides it: the driver does not load at boot.
    StartOverridden,
    /// The service is boot-start but the file its ImagePath names is missing.
    MissingSys,
    /// The driver is installed but the Virtio PCI IDs are not bound to it.
    NotBound,
    /// Boot-start, file present, PCI IDs bound.
    Ok,
}

impl VirtioState {
    pub fn as_str(self) -> &'static str {
        match self {
            VirtioState::NotInstalled => "not installed",
            VirtioState::StagedNoService => "staged in the driver store but no boot-start service",
            VirtioState::NotBootStart => "installed but not boot-start",
            VirtioState::StartOverridden => "boot-start overridden by StartOverride",
            VirtioState::MissingSys => "service without its .sys",
            VirtioState::NotBound => "not bound to the Virtio PCI IDs",
            VirtioState::Ok => "ok",
        }
    }
}

/// A Virtio PCI ID bound to a driver.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct VirtioBinding {
    /// `PCI\VEN_1AF4&DEV_1001...` (DriverDatabase) or `pci#ven_1af4&dev_1001...` (CDDB).
    pub hardware_id: String,
    /// "DriverDatabase" or "CriticalDeviceDatabase".
    pub source: String,
    pub registry_path: String,
    /// The INF the DriverDatabase entry names (e.g. `oem3.inf`).
    pub inf: Option<String>,
    /// The driver package the INF maps to (e.g. `viostor.inf_amd64_...`).
    pub package: Option<String>,
}

/// One Virtio storage driver (viostor or vioscsi).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct VirtioDriver {
    /// "viostor" or "vioscsi".
    pub name: String,
    pub state: VirtioState,
    /// PCI device IDs this driver serves, e.g. ["VEN_1AF4&DEV_1001", "VEN_1AF4&DEV_1042"].
    pub pci_ids: Vec<String>,
    /// The service key (path given even when absent, for messages).
    pub service_registry_path: String,
    pub service: Option<Service>,
    /// The service's StartOverride key, when it has one.
    pub start_override: Option<StartOverride>,
    /// ImagePath normalised relative to the Windows volume root.
    pub driver_file: Option<String>,
    pub driver_file_exists: Option<bool>,
    /// Driver store packages named `<driver>.inf_*`.
    pub staged_packages: Vec<String>,
    pub bindings: Vec<VirtioBinding>,
    /// Where bindings were looked for: "DriverDatabase" (Windows 8+) or "CriticalDeviceDatabase".
    pub binding_source: String,
}

/// netkvm (the Virtio network driver).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct NetkvmStatus {
    pub present: bool,
    pub start: Option<u32>,
    pub registry_path: String,
}

/// The verdict on Virtio storage.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct VirtioStatus {
    /// Best state over viostor and vioscsi.
    pub state: VirtioState,
    /// `state` in words, as in the issue.
    pub state_text: String,
    /// The driver that gave `state` (None when neither is present at all).
    pub driver: Option<String>,
    pub drivers: Vec<VirtioDriver>,
    pub netkvm: NetkvmStatus,
    pub control_set: String,
    /// A one-line explanation with the registry path that proves it.
    pub message: String,
    /// What to do about it (empty when ok).
    pub hint: String,
}

const VIRTIO_DRIVERS: [(&str, [&str; 2]); 2] = [
    ("viostor", ["VEN_1AF4&DEV_1001", "VEN_1AF4&DEV_1042"]),
    ("vioscsi", ["VEN_1AF4&DEV_1004", "VEN_1AF4&DEV_1048"]),
];

fn virtio_bindings(
    system: &Hive,
    cs: &ControlSet,
    driver: &str,
    ids: &[&str],
    driver_db: bool,
) -> Result<Vec<VirtioBinding>> {
    let mut out = Vec::new();
    let driver_l = driver.to_ascii_lowercase();
    if driver_db {
        for id in ids {
            for dev in system::driver_database_ids(system, "PCI", id)? {
                for inf in &dev.infs {
                    let inf_l = inf.to_ascii_lowercase();
                    let mut matched: Option<Option<String>> = None;
                    for pkg in system::packages_for_inf(system, inf)? {
                        let by_service = system::driver_package(system, &pkg)?
                            .map(|p| p.services.iter().any(|s| s.eq_ignore_ascii_case(driver)))
                            .unwrap_or(false);
                        let by_name = pkg
                            .to_ascii_lowercase()
                            .starts_with(&format!("{driver_l}.inf_"));
                        if by_service || by_name {
                            matched = Some(Some(pkg));
                            break;
                        }
                    }
                    if matched.is_none() && inf_l == format!("{driver_l}.inf") {
                        matched = Some(None);
                    }
                    if let Some(package) = matched {
                        out.push(VirtioBinding {
                            hardware_id: dev.hardware_id.clone(),
                            source: "DriverDatabase".into(),
                            registry_path: dev.registry_path.clone(),
                            inf: Some(inf.clone()),
                            package,
                        });
                    }
                }
            }
        }
    } else {
        for id in ids {
            let prefix = format!("pci#{}", id.to_ascii_lowercase());
            for d in system::critical_devices(system, cs, &prefix)? {
                if d.service
                    .as_deref()
                    .is_some_and(|s| s.eq_ignore_ascii_case(driver))
                {
                    out.push(VirtioBinding {
                        hardware_id: d.device_id,
                        source: "CriticalDeviceDatabase".into(),
                        registry_path: d.registry_path,
                        inf: None,
                        package: None,
                    });
                }
            }
        }
    }
    Ok(out)
}

/// Decides whether a Virtio storage driver will take the boot disk: a viostor or vioscsi
/// service with Start=0, its ImagePath file present (asked through `file_exists` with a path
/// relative to the Windows volume root, e.g. "Windows/System32/drivers/viostor.sys"; compare
/// case-insensitively), and the Virtio PCI IDs bound to it (DriverDatabase on Windows 8 /
/// Server 2012 and later, else CriticalDeviceDatabase).
pub fn virtio_storage(
    system: &Hive,
    software: &Hive,
    file_exists: &dyn Fn(&str) -> bool,
) -> Result<VirtioStatus> {
    let cs = system::require_control_set(system)?;
    let system_root = software::windows_version(software)?.and_then(|v| v.system_root);
    let driver_db = system::has_driver_database(system)?;
    let mut drivers = Vec::new();
    for (name, ids) in VIRTIO_DRIVERS {
        let service = system::service(system, &cs, name)?;
        let staged: Vec<String> = if driver_db {
            system::driver_packages_named(system, name)?
                .into_iter()
                .map(|p| p.name)
                .collect()
        } else {
            Vec::new()
        };
        let bindings = virtio_bindings(system, &cs, name, &ids, driver_db)?;
        let (driver_file, exists) = match &service {
            Some(s) => {
                let f = driver_file_path(s.image_path.as_deref(), &s.name, system_root.as_deref());
                let e = file_exists(&f);
                (Some(f), Some(e))
            }
            None => (None, None),
        };
        let start_override = match &service {
            Some(s) => system::start_override(system, s)?,
            None => None,
        };
        let overridden = start_override
            .as_ref()
            .is_some_and(|o| !o.disabling().is_empty());
        let state = match &service {
            None if staged.is_empty() => VirtioState::NotInstalled,
            None => VirtioState::StagedNoService,
            Some(s) if s.start != Some(0) => VirtioState::NotBootStart,
            Some(_) if overridden => VirtioState::StartOverridden,
            Some(_) if exists == Some(false) => VirtioState::MissingSys,
            Some(_) if bindings.is_empty() => VirtioState::NotBound,
            Some(_) => VirtioState::Ok,
        };
        drivers.push(VirtioDriver {
            name: name.to_string(),
            state,
            pci_ids: ids.iter().map(|s| s.to_string()).collect(),
            service_registry_path: service
                .as_ref()
                .map(|s| s.registry_path.clone())
                .unwrap_or_else(|| format!("{}\\Services\\{name}", cs.name)),
            service,
            start_override,
            driver_file,
            driver_file_exists: exists,
            staged_packages: staged,
            bindings,
            binding_source: if driver_db {
                "DriverDatabase".into()
            } else {
                "CriticalDeviceDatabase".into()
            },
        });
    }
    let best = drivers.iter().max_by_key(|d| d.state).expect("two drivers");
    let state = best.state;
    let driver = (state != VirtioState::NotInstalled).then(|| best.name.clone());
    let net = system::service(system, &cs, "netkvm")?;
    let netkvm = NetkvmStatus {
        present: net.is_some(),
        start: net.as_ref().and_then(|s| s.start),
        registry_path: net
            .map(|s| s.registry_path)
            .unwrap_or_else(|| format!("{}\\Services\\netkvm", cs.name)),
    };
    let (message, hint) = virtio_message(best, &cs);
    Ok(VirtioStatus {
        state,
        state_text: state.as_str().to_string(),
        driver,
        drivers,
        netkvm,
        control_set: cs.name,
        message,
        hint,
    })
}

fn virtio_message(d: &VirtioDriver, cs: &ControlSet) -> (String, String) {
    let install = "install the Virtio drivers (virtio-win: viostor or vioscsi) with pnputil /add-driver <inf> /install, or run virtio-win-guest-tools, before exporting the image";
    match d.state {
        VirtioState::NotInstalled => (
            format!(
                "no Virtio storage driver: neither {}\\Services\\viostor nor {}\\Services\\vioscsi exists and no viostor/vioscsi package is in the driver store",
                cs.name, cs.name
            ),
            install.into(),
        ),
        VirtioState::StagedNoService => (
            format!(
                "{} is staged in the driver store ({}) but there is no service {}",
                d.name,
                d.staged_packages.join(", "),
                d.service_registry_path
            ),
            format!("the driver is only staged: install it for a device so it gets a boot-start service, e.g. pnputil /add-driver {}.inf /install, then set {}\\Start to 0", d.name, d.service_registry_path),
        ),
        VirtioState::NotBootStart => (
            format!(
                "{} is installed but {}\\Start is {} ({}), not 0 (boot): Windows will stop with INACCESSIBLE_BOOT_DEVICE",
                d.name,
                d.service_registry_path,
                d.service.as_ref().and_then(|s| s.start).map(|v| v.to_string()).unwrap_or_else(|| "not set".into()),
                d.service.as_ref().map(|s| s.start_name.as_str()).unwrap_or("not set"),
            ),
            format!("set {}\\Start to 0 (reg add HKLM\\SYSTEM\\CurrentControlSet\\Services\\{} /v Start /t REG_DWORD /d 0 /f)", d.service_registry_path, d.name),
        ),
        VirtioState::StartOverridden => {
            let o = d.start_override.as_ref();
            let path = o.map(|o| o.registry_path.as_str()).unwrap_or("StartOverride");
            (
                format!(
                    "{} is boot-start but {path} overrides it ({}): Windows set it when the \
                     device was absent, and the driver will not load at boot \
                     (INACCESSIBLE_BOOT_DEVICE)",
                    d.name,
                    o.map(|o| o.disabling().join(", ")).unwrap_or_default()
                ),
                format!(
                    "delete the StartOverride key on the source (reg delete \
                     HKLM\\SYSTEM\\CurrentControlSet\\Services\\{}\\StartOverride /f), then \
                     export again",
                    d.name
                ),
            )
        }
        VirtioState::MissingSys => (
            format!(
                "{} is a boot-start service but its driver file {} (ImagePath {}) is missing",
                d.name,
                d.driver_file.as_deref().unwrap_or("?"),
                d.service.as_ref().and_then(|s| s.image_path.as_deref()).unwrap_or("not set, default"),
            ),
            format!("reinstall the Virtio storage driver so that {} exists", d.driver_file.as_deref().unwrap_or("the .sys")),
        ),
        VirtioState::NotBound => (
            format!(
                "{} is boot-start and its file exists, but the Virtio PCI IDs ({}) are not bound to it in {}",
                d.name,
                d.pci_ids.join(", "),
                if d.binding_source == "DriverDatabase" {
                    "DriverDatabase\\DeviceIds\\PCI".to_string()
                } else {
                    format!("{}\\Control\\CriticalDeviceDatabase", cs.name)
                }
            ),
            format!("install the driver for the Virtio device (pnputil /add-driver {}.inf /install) so the PCI IDs map to it", d.name),
        ),
        VirtioState::Ok => (
            format!(
                "{} is boot-start ({}), {} exists and {} binds {}",
                d.name,
                d.service_registry_path,
                d.driver_file.as_deref().unwrap_or("?"),
                d.binding_source,
                d.bindings.iter().map(|b| b.hardware_id.as_str()).collect::<Vec<_>>().join(", ")
            ),
            String::new(),
        ),
    }
}
