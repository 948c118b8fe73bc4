//! Guest tools of other hypervisors (VMware, Xen PV, VirtualBox, Parallels) found in the
//! registry: their services, Uninstall entries, and the class, device and service filters
//! naming their drivers (a filter left behind stops the device stack it filters).
//!
//! Which names belong to which suite is a table ([`suite_of_service`],
//! [`suite_of_application`]); Hyper-V's in-box drivers are deliberately not in it.

use serde::Serialize;

use super::hive::Hive;
use super::software;
use super::system::{self, ControlSet, Service};
use crate::Result;

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
    /// A device instance's (`Enum\...`) UpperFilters/LowerFilters names a conflicting driver.
    DeviceFilter,
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
    /// Enabled: a service with Start != 4 that is not a remnant; a filter whose driver is
    /// enabled or has no service (a dangling filter breaks the whole device class); an
    /// Uninstall entry unless every service of its suite that exists is disabled or a remnant.
    pub enabled: bool,
    /// A service key an uninstaller left behind, with none of Type, Start and ImagePath:
    /// nothing Windows can start, so a leftover (warning), not an enabled conflict.
    pub remnant: bool,
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

/// Finds conflicting guest tools: services, Uninstall entries, and class, device (`Enum`) and
/// service filters naming their drivers.
pub fn conflicts(system: &Hive, software: &Hive) -> Result<Vec<Conflict>> {
    let cs = system::require_control_set(system)?;
    let services = system::services(system, &cs)?;
    let mut out: Vec<Conflict> = services.iter().filter_map(service_conflict).collect();
    for site in filter_sites(system, &cs, &services)? {
        for (list, vname) in [(&site.upper, "UpperFilters"), (&site.lower, "LowerFilters")] {
            for f in list {
                if let Some(c) = filter_conflict(&services, &site, vname, f) {
                    out.push(c);
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
                remnant: false,
                registry_path: a.registry_path.clone(),
                detail: a.publisher.clone().map(|p| format!("publisher {p}")),
            });
        }
    }
    Ok(out)
}

/// A service of a conflicting suite.
fn service_conflict(s: &Service) -> Option<Conflict> {
    let suite = suite_of_service(&s.name, s.image_path.as_deref())?;
    let remnant = s.is_remnant();
    let detail = if remnant {
        let names: Vec<&str> = s.values.iter().map(String::as_str).collect();
        format!(
            "a remnant: no Type, Start or ImagePath{}",
            if names.is_empty() {
                String::new()
            } else {
                format!(", only {}", names.join(", "))
            }
        )
    } else {
        format!(
            "Start={} ({})",
            s.start
                .map(|v| v.to_string())
                .unwrap_or_else(|| "not set".into()),
            s.start_name
        )
    };
    Some(Conflict {
        suite,
        suite_name: suite.as_str().into(),
        kind: ConflictKind::Service,
        name: s.name.clone(),
        display_name: s.display_name.clone(),
        version: None,
        start: s.start,
        enabled: s.enabled() && !remnant,
        remnant,
        registry_path: s.registry_path.clone(),
        detail: Some(detail),
    })
}

/// A key that can hold UpperFilters/LowerFilters: a device class, a device instance, a
/// service.
pub struct FilterSite {
    pub kind: ConflictKind,
    /// The key's registry path.
    pub registry_path: String,
    /// What the key is, for messages: "class {GUID} (DiskDrive)", "device ...", "service ...".
    pub owner: String,
    pub upper: Vec<String>,
    pub lower: Vec<String>,
}

/// Every class, device instance and service key with filters.
pub fn filter_sites(
    system: &Hive,
    cs: &ControlSet,
    services: &[Service],
) -> Result<Vec<FilterSite>> {
    let mut out = Vec::new();
    for c in system::class_filters(system, cs)? {
        out.push(FilterSite {
            kind: ConflictKind::ClassFilter,
            owner: format!(
                "class {}{}",
                c.class_guid,
                c.class_name
                    .as_deref()
                    .map(|n| format!(" ({n})"))
                    .unwrap_or_default()
            ),
            registry_path: c.registry_path,
            upper: c.upper_filters,
            lower: c.lower_filters,
        });
    }
    for d in system::device_filters(system, cs)? {
        out.push(FilterSite {
            kind: ConflictKind::DeviceFilter,
            owner: format!("device {}", d.instance_id),
            registry_path: d.registry_path,
            upper: d.upper_filters,
            lower: d.lower_filters,
        });
    }
    for s in services {
        out.push(FilterSite {
            kind: ConflictKind::ServiceFilter,
            owner: format!("service {}", s.name),
            registry_path: s.registry_path.clone(),
            upper: s.upper_filters.clone(),
            lower: s.lower_filters.clone(),
        });
    }
    Ok(out)
}

/// Filter `driver` in value `vname` of `site`, when it belongs to a conflicting suite.
fn filter_conflict(
    services: &[Service],
    site: &FilterSite,
    vname: &str,
    driver: &str,
) -> Option<Conflict> {
    let svc = services
        .iter()
        .find(|s| s.name.eq_ignore_ascii_case(driver));
    let suite = suite_of_service(driver, svc.and_then(|s| s.image_path.as_deref()))?;
    let detail = format!("{vname} of {}", site.owner);
    Some(Conflict {
        suite,
        suite_name: suite.as_str().into(),
        kind: site.kind,
        name: driver.to_string(),
        display_name: svc.and_then(|s| s.display_name.clone()),
        version: None,
        start: svc.and_then(|s| s.start),
        enabled: svc.map(|s| s.enabled()).unwrap_or(true),
        remnant: false,
        registry_path: format!("{}\\{vname}", site.registry_path),
        detail: Some(match svc {
            Some(s) => format!("{detail}; driver Start={}", s.start_name),
            None => format!(
                "{detail}; no service {driver} exists (a filter whose driver is missing stops \
                 what it filters)"
            ),
        }),
    })
}
