//! Analyses over the SYSTEM and SOFTWARE hives. Results are plain serde structs carrying what a
//! check's message and hint need, including the registry path proving each finding (relative
//! to the hive root: prefix `HKLM\SYSTEM\` or `HKLM\SOFTWARE\` for display).

use serde::Serialize;

use super::hive::{Hive, ReplayInfo};
use super::software::{self, Application, WindowsVersion};
use super::system::{self, ControlSet, DriveLetter, Service, StaticIp};
use crate::Result;

// ---------------------------------------------------------------------------------------------
// OS identity

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

// ---------------------------------------------------------------------------------------------
// Driver file paths

/// The Windows directory relative to the volume root ("Windows") from SystemRoot
/// ("C:\\Windows"); "Windows" when unknown.
pub fn windows_dir(system_root: Option<&str>) -> String {
    let r = system_root.unwrap_or("C:\\Windows").trim();
    let r = strip_drive(r);
    let r = r.trim_matches(['\\', '/']);
    if r.is_empty() {
        "Windows".into()
    } else {
        r.replace('\\', "/")
    }
}

fn strip_drive(p: &str) -> &str {
    let b = p.as_bytes();
    if b.len() >= 2 && b[1] == b':' && b[0].is_ascii_alphabetic() {
        &p[2..]
    } else {
        p
    }
}

fn strip_prefix_ci<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    if s.len() >= prefix.len() && s.is_char_boundary(prefix.len()) {
        let (a, b) = s.split_at(prefix.len());
        if a.eq_ignore_ascii_case(prefix) {
            return Some(b);
        }
    }
    None
}

/// Normalises a driver's ImagePath to a path relative to the Windows volume root with `/`
/// separators, e.g. "Windows/System32/drivers/viostor.sys". Forms handled:
/// `system32\drivers\x.sys` (relative to SystemRoot), `\SystemRoot\...`, `%SystemRoot%\...`,
/// `%windir%\...`, `\??\C:\...`, `C:\...`, `\Windows\...` (volume root), and absent (the
/// default `System32\drivers\<service>.sys`). Quotes around the path are removed. The file
/// system is case-insensitive: the caller should compare paths that way.
pub fn driver_file_path(
    image_path: Option<&str>,
    service: &str,
    system_root: Option<&str>,
) -> String {
    let windir = windows_dir(system_root);
    let Some(p) = image_path.map(str::trim).filter(|p| !p.is_empty()) else {
        return format!("{windir}/System32/drivers/{service}.sys");
    };
    let p = p.trim_matches('"');
    let rel = if let Some(r) = strip_prefix_ci(p, "\\SystemRoot\\") {
        format!("{windir}\\{r}")
    } else if let Some(r) = strip_prefix_ci(p, "%SystemRoot%\\") {
        format!("{windir}\\{r}")
    } else if let Some(r) = strip_prefix_ci(p, "%windir%\\") {
        format!("{windir}\\{r}")
    } else if let Some(r) = p.strip_prefix("\\??\\") {
        strip_drive(r).trim_start_matches('\\').to_string()
    } else if strip_drive(p).len() != p.len() {
        strip_drive(p).trim_start_matches('\\').to_string()
    } else if let Some(r) = p.strip_prefix('\\') {
        r.to_string()
    } else {
        format!("{windir}\\{p}")
    };
    rel.replace('\\', "/")
}

// ---------------------------------------------------------------------------------------------
// Virtio storage

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
        let state = match &service {
            None if staged.is_empty() => VirtioState::NotInstalled,
            None => VirtioState::StagedNoService,
            Some(s) if s.start != Some(0) => VirtioState::NotBootStart,
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

// ---------------------------------------------------------------------------------------------
// cloudbase-init

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

// ---------------------------------------------------------------------------------------------
// Conflicting guest tools

/// A hypervisor guest-tools suite that conflicts with the target platform.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Suite {
    VmwareTools,
    /// Xen PV drivers: Citrix / XenServer / Xen Project / Red Hat PV.
    XenPv,
    VirtualboxGuestAdditions,
    /// Parallels / Virtuozzo Tools.
    ParallelsTools,
}

impl Suite {
    pub fn as_str(self) -> &'static str {
        match self {
            Suite::VmwareTools => "VMware Tools",
            Suite::XenPv => "Xen PV drivers",
            Suite::VirtualboxGuestAdditions => "VirtualBox Guest Additions",
            Suite::ParallelsTools => "Parallels/Virtuozzo Tools",
        }
    }
}

/// What was found.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ConflictKind {
    /// A service or driver key.
    Service,
    /// An Uninstall entry.
    UninstallEntry,
    /// A class's UpperFilters/LowerFilters names a conflicting driver.
    ClassFilter,
    /// A service's own UpperFilters/LowerFilters names a conflicting driver.
    ServiceFilter,
}

/// One conflicting item.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Conflict {
    pub suite: Suite,
    pub suite_name: String,
    pub kind: ConflictKind,
    /// Service name, application DisplayName, or the filter driver named.
    pub name: String,
    pub display_name: Option<String>,
    pub version: Option<String>,
    pub start: Option<u32>,
    /// Enabled: a service with Start != 4; a filter whose driver is enabled or has no service
    /// (a dangling filter breaks the whole device class); an Uninstall entry unless every
    /// service of its suite that exists is disabled.
    pub enabled: bool,
    /// The registry path that proves it (a key, or a value `Key\ValueName`).
    pub registry_path: String,
    /// Extra words for the message (e.g. which class, "service missing").
    pub detail: Option<String>,
}

/// Exact service names (case-insensitive) of each suite. `vmbus`, `VMBusHID`, `storvsc`... are
/// Hyper-V's in-box drivers and deliberately absent.
const SERVICE_TABLE: &[(Suite, &[&str])] = &[
    (
        Suite::VmwareTools,
        &[
            "vmci",
            "vsock",
            "vmhgfs",
            "vm3dmp",
            "vm3dmp_loader",
            "vm3dmp-debug",
            "vm3dmp-stats",
            "vm3dservice",
            "vmmouse",
            "vmusbmouse",
            "vmrawdsk",
            "vmmemctl",
            "vmxnet",
            "vmxnet3",
            "vmxnet3ndis5",
            "vmxnet3ndis6",
            "pvscsi",
            "VMTools",
            "vmvss",
            "vmx_svga",
            "vmdebug",
            "VMUpgradeHelper",
            "VGAuthService",
            "vmwefifw",
            "vnetWFP",
            "vmStatsProvider",
            "vmusb",
            "vmkbd",
            "vmscsi",
            "vmaudio",
            "VMwareCAFManagementAgentHost",
            "VMwareCAFCommAmqpListener",
            "vmci_host",
        ],
    ),
    (
        Suite::XenPv,
        &[
            "xenbus",
            "xenvbd",
            "xennet",
            "xenfilt",
            "xeniface",
            "xendisk",
            "xenvif",
            "xenhid",
            "xenvkbd",
            "xencons",
            "xenbus_monitor",
            "xenagent",
            "xensvc",
            "xenpci",
            "xenscsi",
            "xenusb",
            "xenconfig",
            "xenevtchn",
            "xennet6",
            "xenvbd_disk",
            "XenPVDAccess",
            "rhelscsi",
            "rhelnet",
            "rhelfltr",
            "XenTools",
            "LiteAgent",
            "citrix_xenbus",
        ],
    ),
    (
        Suite::VirtualboxGuestAdditions,
        &[
            "VBoxGuest",
            "VBoxMouse",
            "VBoxSF",
            "VBoxService",
            "VBoxVideo",
            "VBoxVideoW8",
            "VBoxWddm",
            "VBoxMRXNP",
            "VBoxTray",
        ],
    ),
    (Suite::ParallelsTools, &["prl_tools", "prl_tools_service"]),
];

/// Vendor-unique name prefixes (safe: no in-box driver starts with them).
const SERVICE_PREFIXES: &[(Suite, &str)] = &[
    (Suite::VirtualboxGuestAdditions, "vboxvideo"),
    (Suite::ParallelsTools, "prl_"),
];

/// Directories that only guest tools install services into.
const IMAGE_DIRS: &[(Suite, &str)] = &[
    (Suite::VmwareTools, "\\vmware\\vmware tools\\"),
    (
        Suite::VirtualboxGuestAdditions,
        "\\oracle\\virtualbox guest additions\\",
    ),
    (Suite::ParallelsTools, "\\parallels\\parallels tools\\"),
    (
        Suite::ParallelsTools,
        "\\virtuozzo\\virtuozzo guest tools\\",
    ),
    (Suite::XenPv, "\\citrix\\xentools\\"),
    (Suite::XenPv, "\\xenserver\\"),
];

/// Uninstall DisplayName patterns (case-insensitive substring).
const APP_TABLE: &[(Suite, &str)] = &[
    (Suite::VmwareTools, "vmware tools"),
    (
        Suite::VirtualboxGuestAdditions,
        "virtualbox guest additions",
    ),
    (Suite::ParallelsTools, "parallels tools"),
    (Suite::ParallelsTools, "virtuozzo guest tools"),
    (Suite::ParallelsTools, "virtuozzo tools"),
    (Suite::XenPv, "xenserver vm tools"),
    (Suite::XenPv, "xenserver pv tools"),
    (Suite::XenPv, "xenserver tools"),
    (Suite::XenPv, "citrix xenserver"),
    (Suite::XenPv, "citrix hypervisor"),
    (Suite::XenPv, "citrix vm tools"),
    (Suite::XenPv, "xen pv"),
    (Suite::XenPv, "xen project"),
    (Suite::XenPv, "xen windows"),
    (Suite::XenPv, "xen guest"),
    (Suite::XenPv, "gplpv"),
    (Suite::XenPv, "red hat paravirtualized xen"),
    (Suite::XenPv, "red hat pv"),
];

/// The suite a service belongs to, by exact name, vendor prefix, or tool directory.
pub fn suite_of_service(name: &str, image_path: Option<&str>) -> Option<Suite> {
    let l = name.to_ascii_lowercase();
    for (suite, names) in SERVICE_TABLE {
        if names.iter().any(|n| n.eq_ignore_ascii_case(name)) {
            return Some(*suite);
        }
    }
    for (suite, p) in SERVICE_PREFIXES {
        if l.starts_with(p) {
            return Some(*suite);
        }
    }
    if let Some(ip) = image_path {
        let ip = ip.to_ascii_lowercase();
        for (suite, d) in IMAGE_DIRS {
            if ip.contains(d) {
                return Some(*suite);
            }
        }
    }
    None
}

/// The suite an Uninstall DisplayName belongs to.
pub fn suite_of_application(display_name: &str) -> Option<Suite> {
    let l = display_name.to_ascii_lowercase();
    APP_TABLE
        .iter()
        .find(|(_, p)| l.contains(p))
        .map(|(s, _)| *s)
}

/// Finds conflicting guest tools: services, Uninstall entries, and class/service filters naming
/// their drivers.
pub fn conflicts(system: &Hive, software: &Hive) -> Result<Vec<Conflict>> {
    let cs = system::require_control_set(system)?;
    let services = system::services(system, &cs)?;
    let mut out = Vec::new();
    for s in &services {
        if let Some(suite) = suite_of_service(&s.name, s.image_path.as_deref()) {
            out.push(Conflict {
                suite,
                suite_name: suite.as_str().into(),
                kind: ConflictKind::Service,
                name: s.name.clone(),
                display_name: s.display_name.clone(),
                version: None,
                start: s.start,
                enabled: s.enabled(),
                registry_path: s.registry_path.clone(),
                detail: Some(format!(
                    "Start={} ({})",
                    s.start
                        .map(|v| v.to_string())
                        .unwrap_or_else(|| "not set".into()),
                    s.start_name
                )),
            });
        }
    }
    let find_service = |n: &str| services.iter().find(|s| s.name.eq_ignore_ascii_case(n));
    let mut filter = |suite: Suite, kind, driver: &str, path: String, detail: String| {
        let svc = find_service(driver);
        out.push(Conflict {
            suite,
            suite_name: suite.as_str().into(),
            kind,
            name: driver.to_string(),
            display_name: svc.and_then(|s| s.display_name.clone()),
            version: None,
            start: svc.and_then(|s| s.start),
            enabled: svc.map(|s| s.enabled()).unwrap_or(true),
            registry_path: path,
            detail: Some(match svc {
                Some(s) => format!("{detail}; driver Start={}", s.start_name),
                None => format!("{detail}; no service {driver} exists (a dangling filter stops every device of the class)"),
            }),
        });
    };
    for c in system::class_filters(system, &cs)? {
        for (list, vname) in [
            (&c.upper_filters, "UpperFilters"),
            (&c.lower_filters, "LowerFilters"),
        ] {
            for f in list {
                let image = find_service(f).and_then(|s| s.image_path.as_deref());
                if let Some(suite) = suite_of_service(f, image) {
                    filter(
                        suite,
                        ConflictKind::ClassFilter,
                        f,
                        format!("{}\\{vname}", c.registry_path),
                        format!(
                            "{vname} of class {}{}",
                            c.class_guid,
                            c.class_name
                                .as_deref()
                                .map(|n| format!(" ({n})"))
                                .unwrap_or_default()
                        ),
                    );
                }
            }
        }
    }
    for s in &services {
        for (list, vname) in [
            (&s.upper_filters, "UpperFilters"),
            (&s.lower_filters, "LowerFilters"),
        ] {
            for f in list {
                let image = find_service(f).and_then(|x| x.image_path.as_deref());
                if let Some(suite) = suite_of_service(f, image) {
                    filter(
                        suite,
                        ConflictKind::ServiceFilter,
                        f,
                        format!("{}\\{vname}", s.registry_path),
                        format!("{vname} of service {}", s.name),
                    );
                }
            }
        }
    }
    for a in software::applications(software)? {
        if let Some(suite) = suite_of_application(&a.name) {
            let suite_services: Vec<&Conflict> = out
                .iter()
                .filter(|c| c.suite == suite && c.kind == ConflictKind::Service)
                .collect();
            let enabled = suite_services.is_empty() || suite_services.iter().any(|c| c.enabled);
            out.push(Conflict {
                suite,
                suite_name: suite.as_str().into(),
                kind: ConflictKind::UninstallEntry,
                name: a.name.clone(),
                display_name: Some(a.name.clone()),
                version: a.version.clone(),
                start: None,
                enabled,
                registry_path: a.registry_path.clone(),
                detail: a.publisher.clone().map(|p| format!("publisher {p}")),
            });
        }
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// Extra warnings

/// Kind of an extra warning.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum WarningKind {
    /// Component Based Servicing RebootPending or Windows Update RebootRequired.
    PendingReboot,
    /// Session Manager PendingFileRenameOperations.
    PendingFileRenames,
    /// HiberbootEnabled=1: the image may be a hibernated kernel, not a clean shutdown.
    FastStartup,
    /// HibernateEnabled=1.
    Hibernation,
    /// A network interface with a static address (lost when the NIC becomes Virtio).
    StaticIp,
    /// RealTimeIsUniversal=1: the clock will be off on a platform with a local-time RTC.
    RealTimeIsUniversal,
    /// The hive was dirty and its logs were not replayed: recent changes may be missing.
    DirtyHiveNotReplayed,
}

/// One extra warning.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ExtraWarning {
    pub kind: WarningKind,
    pub message: String,
    /// Registry path (key, or `Key\ValueName`) that proves it; the hive's name for
    /// DirtyHiveNotReplayed.
    pub registry_path: String,
    /// "SYSTEM" or "SOFTWARE": the hive `registry_path` is in.
    pub hive: String,
    pub details: Vec<String>,
}

/// Pending reboot/renames, Fast Startup, hibernation, static IPs, RealTimeIsUniversal, dirty
/// hives whose logs were not replayed.
pub fn extra_warnings(system: &Hive, software: &Hive) -> Result<Vec<ExtraWarning>> {
    let cs = system::require_control_set(system)?;
    let mut out = Vec::new();
    let w = |kind, message: String, path: String, hive: &str, details: Vec<String>| ExtraWarning {
        kind,
        message,
        registry_path: path,
        hive: hive.into(),
        details,
    };
    for p in software::pending_reboot_markers(software)? {
        out.push(w(
            WarningKind::PendingReboot,
            format!("a reboot is pending ({p} exists): boot the VM once and shut it down cleanly before exporting"),
            p,
            "SOFTWARE",
            vec![],
        ));
    }
    if let Some(k) = system.key(&format!("{}\\Control\\Session Manager", cs.name))? {
        for v in [
            "PendingFileRenameOperations",
            "PendingFileRenameOperations2",
        ] {
            let list = k.multi_sz(v).unwrap_or_default();
            let list: Vec<String> = list.into_iter().filter(|s| !s.is_empty()).collect();
            if !list.is_empty() {
                out.push(w(
                    WarningKind::PendingFileRenames,
                    format!(
                        "{} file operations are pending until the next boot ({})",
                        list.len().div_ceil(2),
                        k.value_path(v)
                    ),
                    k.value_path(v),
                    "SYSTEM",
                    list.into_iter().take(20).collect(),
                ));
            }
        }
    }
    if let Some(k) = system.key(&format!("{}\\Control\\Session Manager\\Power", cs.name))? {
        if k.dword("HiberbootEnabled").is_some_and(|v| v != 0) {
            out.push(w(
                WarningKind::FastStartup,
                "Fast Startup is enabled (HiberbootEnabled=1): a shutdown leaves a hibernated kernel and a dirty NTFS; disable it (powercfg /h off) and shut down again".into(),
                k.value_path("HiberbootEnabled"),
                "SYSTEM",
                vec![],
            ));
        }
    }
    if let Some(k) = system.key(&format!("{}\\Control\\Power", cs.name))? {
        if k.dword("HibernateEnabled").is_some_and(|v| v != 0) {
            out.push(w(
                WarningKind::Hibernation,
                "hibernation is enabled (HibernateEnabled=1): hiberfil.sys wastes space and a resumed image does not boot on new hardware; powercfg /h off".into(),
                k.value_path("HibernateEnabled"),
                "SYSTEM",
                vec![],
            ));
        }
    }
    for ip in system::static_ips(system, &cs)? {
        out.push(w(
            WarningKind::StaticIp,
            format!(
                "interface {} has static address(es) {}: they are lost when the NIC becomes Virtio; switch to DHCP or note them",
                ip.interface,
                ip.addresses.join(", ")
            ),
            ip.registry_path.clone(),
            "SYSTEM",
            static_ip_details(&ip),
        ));
    }
    if let Some(k) = system.key(&format!("{}\\Control\\TimeZoneInformation", cs.name))? {
        if k.dword("RealTimeIsUniversal").is_some_and(|v| v != 0)
            || k.qword("RealTimeIsUniversal").is_some_and(|v| v != 0)
        {
            out.push(w(
                WarningKind::RealTimeIsUniversal,
                "RealTimeIsUniversal=1: Windows reads the hardware clock as UTC; the clock will be off if the platform keeps it in local time".into(),
                k.value_path("RealTimeIsUniversal"),
                "SYSTEM",
                vec![],
            ));
        }
    }
    for (hive, label) in [(system, "SYSTEM"), (software, "SOFTWARE")] {
        let r = hive.replay();
        if r.dirty && !r.logs_applied {
            out.push(w(
                WarningKind::DirtyHiveNotReplayed,
                format!(
                    "the {label} hive is dirty (sequence numbers {} and {}) and {}: the last changes may be missing",
                    r.primary_sequence,
                    r.secondary_sequence,
                    if r.logs_supplied == 0 { "no transaction logs were found".to_string() } else { "its transaction logs could not be replayed".to_string() }
                ),
                hive.name().to_string(),
                label,
                r.notes.clone(),
            ));
        }
    }
    Ok(out)
}

fn static_ip_details(ip: &StaticIp) -> Vec<String> {
    let mut d = vec![format!("addresses: {}", ip.addresses.join(", "))];
    if !ip.subnet_masks.is_empty() {
        d.push(format!("subnet masks: {}", ip.subnet_masks.join(", ")));
    }
    if !ip.gateways.is_empty() {
        d.push(format!("gateways: {}", ip.gateways.join(", ")));
    }
    if !ip.name_servers.is_empty() {
        d.push(format!("name servers: {}", ip.name_servers.join(", ")));
    }
    d
}

/// Convenience for callers that only have the version: Windows 8 / Server 2012 (6.2) or later.
pub fn is_win8_or_later(v: &WindowsVersion) -> bool {
    v.major_minor().is_some_and(|(a, b)| (a, b) >= (6, 2))
}
