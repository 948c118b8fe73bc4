//! Facts read from the SYSTEM hive. Every fact carries the registry path that proves it,
//! relative to the hive root (prefix `HKLM\SYSTEM\` when showing it to a user).

use serde::Serialize;

use super::hive::{join, Hive, Key};
use crate::Result;

/// The control set Windows will boot with.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ControlSet {
    /// Key name, e.g. "ControlSet001".
    pub name: String,
    /// The number, e.g. 1.
    pub number: u32,
    /// Where it came from: "Select\\Current", "Select\\Default" or "first ControlSetNNN present".
    pub source: String,
}

/// Resolves the current control set: `Select\Current`, else `Select\Default`, else the first
/// `ControlSet00N` that exists (hives written by tools sometimes have no Select key).
pub fn current_control_set(system: &Hive) -> Result<Option<ControlSet>> {
    if let Some(select) = system.key("Select")? {
        for v in ["Current", "Default"] {
            if let Some(n) = select.dword(v).filter(|&n| n > 0 && n < 1000) {
                let name = format!("ControlSet{n:03}");
                if let Some(k) = system.key(&name)? {
                    return Ok(Some(ControlSet {
                        name: k.name().to_string(),
                        number: n,
                        source: format!("Select\\{v}"),
                    }));
                }
            }
        }
    }
    for n in 1..=9 {
        let name = format!("ControlSet{n:03}");
        if let Some(k) = system.key(&name)? {
            return Ok(Some(ControlSet {
                name: k.name().to_string(),
                number: n,
                source: "first ControlSetNNN present (no usable Select key)".into(),
            }));
        }
    }
    Ok(None)
}

/// The control set name, or a clear error when the hive has none.
pub fn require_control_set(system: &Hive) -> Result<ControlSet> {
    current_control_set(system)?.ok_or_else(|| {
        crate::Error::corrupt(
            system.name(),
            "SYSTEM hive has no control set (no Select\\Current and no ControlSet001)",
        )
    })
}

/// Start type of a service.
pub fn start_name(start: Option<u32>) -> &'static str {
    match start {
        Some(0) => "boot",
        Some(1) => "system",
        Some(2) => "automatic",
        Some(3) => "manual",
        Some(4) => "disabled",
        Some(_) => "unknown",
        None => "not set",
    }
}

/// One service or driver under `<ControlSet>\Services`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Service {
    /// Key name (the service name).
    pub name: String,
    /// Registry path of the service key, e.g. `ControlSet001\Services\viostor`.
    pub registry_path: String,
    /// Start value: 0 boot, 1 system, 2 automatic, 3 manual, 4 disabled.
    pub start: Option<u32>,
    /// "boot", "system", "automatic", "manual", "disabled", "not set", "unknown".
    pub start_name: String,
    /// Type value: 1 kernel driver, 2 file-system driver, 0x10/0x20 Win32 service...
    #[serde(rename = "type")]
    pub service_type: Option<u32>,
    pub image_path: Option<String>,
    pub display_name: Option<String>,
    pub group: Option<String>,
    pub upper_filters: Vec<String>,
    pub lower_filters: Vec<String>,
    /// The names of the key's values (for describing a remnant key).
    #[serde(skip)]
    pub values: Vec<String>,
}

impl Service {
    fn from_key(k: &Key) -> Service {
        let start = k.dword("Start");
        Service {
            name: k.name().to_string(),
            registry_path: k.path().to_string(),
            start,
            start_name: start_name(start).to_string(),
            service_type: k.dword("Type"),
            image_path: k.nonempty_string("ImagePath"),
            display_name: k.nonempty_string("DisplayName"),
            group: k.nonempty_string("Group"),
            upper_filters: k.multi_sz("UpperFilters").unwrap_or_default(),
            lower_filters: k.multi_sz("LowerFilters").unwrap_or_default(),
            values: k.values().iter().map(|v| v.name.clone()).collect(),
        }
    }

    /// Start is not 4 (disabled). A service without Start is treated as enabled.
    pub fn enabled(&self) -> bool {
        self.start != Some(4)
    }

    /// A key left behind by an uninstaller: none of Type, Start and ImagePath (e.g. `pvscsi`
    /// holding only an installer's `vwdk.installers` value). Windows cannot start it; it is a
    /// leftover, not an installed service.
    pub fn is_remnant(&self) -> bool {
        self.service_type.is_none() && self.start.is_none() && self.image_path.is_none()
    }

    /// A kernel or file-system driver (Type 1, 2 or 8).
    pub fn is_driver(&self) -> bool {
        matches!(self.service_type, Some(1) | Some(2) | Some(8))
    }
}

/// All services of the control set.
pub fn services(system: &Hive, cs: &ControlSet) -> Result<Vec<Service>> {
    Ok(system
        .subkeys_of(&join(&cs.name, "Services"))?
        .iter()
        .map(Service::from_key)
        .collect())
}

/// One service by name (case-insensitive).
pub fn service(system: &Hive, cs: &ControlSet, name: &str) -> Result<Option<Service>> {
    Ok(system
        .key(&format!("{}\\Services\\{}", cs.name, name))?
        .map(|k| Service::from_key(&k)))
}

/// `Services\<name>\StartOverride`: start types that override `Start`. Windows writes it
/// (values "0", "1", ... each holding a start type) for a boot driver whose device was absent
/// at a boot, typically 3 (manual); the driver then does not load at boot although Start is 0,
/// and a disk that needs it is an INACCESSIBLE_BOOT_DEVICE. Deleting the key restores `Start`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct StartOverride {
    pub registry_path: String,
    /// Each value: its name and its data as a start type (`None` when not a DWORD).
    pub values: Vec<(String, Option<u32>)>,
}

impl StartOverride {
    /// The values that override the start type to anything but boot (0), as `name=data`.
    pub fn disabling(&self) -> Vec<String> {
        self.values
            .iter()
            .filter(|(_, v)| *v != Some(0))
            .map(|(n, v)| match v {
                Some(v) => format!("{n}={v} ({})", start_name(Some(*v))),
                None => format!("{n} (not a DWORD)"),
            })
            .collect()
    }
}

/// The StartOverride key of `service`, when it has one.
pub fn start_override(system: &Hive, service: &Service) -> Result<Option<StartOverride>> {
    let path = join(&service.registry_path, "StartOverride");
    Ok(system.key(&path)?.map(|k| StartOverride {
        registry_path: k.path().to_string(),
        values: k
            .values()
            .iter()
            .map(|v| (v.name.clone(), v.data.as_u32()))
            .collect(),
    }))
}

/// Upper/lower filters of a device setup class.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ClassFilters {
    /// The class GUID (key name).
    pub class_guid: String,
    /// The class name (Class value), e.g. "DiskDrive", "Mouse".
    pub class_name: Option<String>,
    pub registry_path: String,
    pub upper_filters: Vec<String>,
    pub lower_filters: Vec<String>,
}

/// Classes under `<ControlSet>\Control\Class` that have UpperFilters or LowerFilters.
pub fn class_filters(system: &Hive, cs: &ControlSet) -> Result<Vec<ClassFilters>> {
    let mut out = Vec::new();
    for k in system
        .subkeys_of(&format!("{}\\Control\\Class", cs.name))?
        .iter()
    {
        let upper = k.multi_sz("UpperFilters").unwrap_or_default();
        let lower = k.multi_sz("LowerFilters").unwrap_or_default();
        if upper.is_empty() && lower.is_empty() {
            continue;
        }
        out.push(ClassFilters {
            class_guid: k.name().to_string(),
            class_name: k.nonempty_string("Class"),
            registry_path: k.path().to_string(),
            upper_filters: upper,
            lower_filters: lower,
        });
    }
    Ok(out)
}

/// Upper/lower filters of one device instance under `<ControlSet>\Enum`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DeviceFilters {
    /// Device instance path, e.g. `ACPI\PNP0F13\4&25ee97c0&0`.
    pub instance_id: String,
    pub registry_path: String,
    /// The device's function driver (Service value).
    pub service: Option<String>,
    pub upper_filters: Vec<String>,
    pub lower_filters: Vec<String>,
}

/// Most device instance keys walked under Enum.
pub const MAX_DEVICE_KEYS: usize = 100_000;

/// Device instances under `<ControlSet>\Enum\<enumerator>\<device>\<instance>` that have
/// UpperFilters or LowerFilters. Errors beyond [`MAX_DEVICE_KEYS`] instance keys.
pub fn device_filters(system: &Hive, cs: &ControlSet) -> Result<Vec<DeviceFilters>> {
    let mut out = Vec::new();
    let mut seen = 0usize;
    for bus in system.subkeys_of(&format!("{}\\Enum", cs.name))?.iter() {
        for dev in system.subkeys(bus)? {
            let instances = system.subkeys(&dev)?;
            seen += instances.len();
            if seen > MAX_DEVICE_KEYS {
                return Err(crate::Error::corrupt(
                    system.name(),
                    format!(
                        "{}\\Enum holds more than {MAX_DEVICE_KEYS} device instances",
                        cs.name
                    ),
                ));
            }
            for inst in instances {
                let upper = inst.multi_sz("UpperFilters").unwrap_or_default();
                let lower = inst.multi_sz("LowerFilters").unwrap_or_default();
                if upper.is_empty() && lower.is_empty() {
                    continue;
                }
                out.push(DeviceFilters {
                    instance_id: format!("{}\\{}\\{}", bus.name(), dev.name(), inst.name()),
                    registry_path: inst.path().to_string(),
                    service: inst.nonempty_string("Service"),
                    upper_filters: upper,
                    lower_filters: lower,
                });
            }
        }
    }
    Ok(out)
}

/// An entry of `Control\CriticalDeviceDatabase`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CriticalDevice {
    /// Key name, e.g. `pci#ven_1af4&dev_1001&subsys_00021af4&rev_00`.
    pub device_id: String,
    pub service: Option<String>,
    pub class_guid: Option<String>,
    pub registry_path: String,
}

/// CriticalDeviceDatabase entries whose device ID starts with `prefix` (case-insensitive).
pub fn critical_devices(
    system: &Hive,
    cs: &ControlSet,
    prefix: &str,
) -> Result<Vec<CriticalDevice>> {
    let prefix = prefix.to_ascii_lowercase();
    Ok(system
        .subkeys_of(&format!("{}\\Control\\CriticalDeviceDatabase", cs.name))?
        .iter()
        .filter(|k| k.name().to_ascii_lowercase().starts_with(&prefix))
        .map(|k| CriticalDevice {
            device_id: k.name().to_string(),
            service: k.nonempty_string("Service"),
            class_guid: k.nonempty_string("ClassGUID"),
            registry_path: k.path().to_string(),
        })
        .collect())
}

/// A device ID in `DriverDatabase\DeviceIds` and the INF files it is bound to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DeviceIdBinding {
    /// Hardware ID, e.g. `PCI\VEN_1AF4&DEV_1001&SUBSYS_00021AF4&REV_00`.
    pub hardware_id: String,
    pub registry_path: String,
    /// INF names (value names), e.g. `oem3.inf`.
    pub infs: Vec<String>,
}

/// `DriverDatabase\DeviceIds\<bus>\<id>` keys whose ID starts with `prefix`
/// (case-insensitive), e.g. bus "PCI", prefix "VEN_1AF4&DEV_1001".
pub fn driver_database_ids(system: &Hive, bus: &str, prefix: &str) -> Result<Vec<DeviceIdBinding>> {
    let prefix = prefix.to_ascii_lowercase();
    Ok(system
        .subkeys_of(&format!("DriverDatabase\\DeviceIds\\{bus}"))?
        .iter()
        .filter(|k| k.name().to_ascii_lowercase().starts_with(&prefix))
        .map(|k| DeviceIdBinding {
            hardware_id: format!("{bus}\\{}", k.name()),
            registry_path: k.path().to_string(),
            infs: k
                .values()
                .iter()
                .map(|v| v.name.clone())
                .filter(|n| n.to_ascii_lowercase().ends_with(".inf"))
                .collect(),
        })
        .collect())
}

/// A driver package in the driver store, from `DriverDatabase\DriverPackages`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DriverPackage {
    /// Package name, e.g. `viostor.inf_amd64_0123456789abcdef`.
    pub name: String,
    pub registry_path: String,
    pub provider: Option<String>,
    pub version: Option<String>,
    /// Services named by the package's configurations (`Configurations\*\Service`).
    pub services: Vec<String>,
}

/// True when the SYSTEM hive has a DriverDatabase (Windows 8 / Server 2012 and later).
pub fn has_driver_database(system: &Hive) -> Result<bool> {
    Ok(system.key("DriverDatabase")?.is_some())
}

/// Packages mapped from an INF name through `DriverDatabase\DriverInfFiles\<inf>` (its default
/// value lists package names).
pub fn packages_for_inf(system: &Hive, inf: &str) -> Result<Vec<String>> {
    let Some(k) = system.key(&format!("DriverDatabase\\DriverInfFiles\\{inf}"))? else {
        return Ok(Vec::new());
    };
    let mut names = k.multi_sz("").unwrap_or_default();
    if let Some(active) = k.nonempty_string("Active") {
        if !names.iter().any(|n| n.eq_ignore_ascii_case(&active)) {
            names.push(active);
        }
    }
    Ok(names)
}

/// One driver package by name, with the services its configurations install.
pub fn driver_package(system: &Hive, name: &str) -> Result<Option<DriverPackage>> {
    let Some(k) = system.key(&format!("DriverDatabase\\DriverPackages\\{name}"))? else {
        return Ok(None);
    };
    let mut services = Vec::new();
    for cfg in system.subkeys_of(&join(k.path(), "Configurations"))?.iter() {
        if let Some(s) = cfg.nonempty_string("Service") {
            if !services.iter().any(|x: &String| x.eq_ignore_ascii_case(&s)) {
                services.push(s);
            }
        }
    }
    Ok(Some(DriverPackage {
        name: k.name().to_string(),
        registry_path: k.path().to_string(),
        provider: k.nonempty_string("Provider"),
        version: k.nonempty_string("Version"),
        services,
    }))
}

/// Driver packages whose name starts with `<inf_stem>.inf_` (case-insensitive).
pub fn driver_packages_named(system: &Hive, inf_stem: &str) -> Result<Vec<DriverPackage>> {
    let prefix = format!("{}.inf_", inf_stem.to_ascii_lowercase());
    let mut out = Vec::new();
    for k in system.subkeys_of("DriverDatabase\\DriverPackages")?.iter() {
        if k.name().to_ascii_lowercase().starts_with(&prefix) {
            if let Some(p) = driver_package(system, k.name())? {
                out.push(p);
            }
        }
    }
    Ok(out)
}

/// The computer name: `Control\ComputerName\ComputerName\ComputerName`, else Tcpip's Hostname.
pub fn computer_name(system: &Hive, cs: &ControlSet) -> Result<Option<(String, String)>> {
    if let Some(k) = system.key(&format!("{}\\Control\\ComputerName\\ComputerName", cs.name))? {
        if let Some(n) = k.nonempty_string("ComputerName") {
            return Ok(Some((n, k.value_path("ComputerName"))));
        }
    }
    if let Some(k) = system.key(&format!("{}\\Services\\Tcpip\\Parameters", cs.name))? {
        for v in ["Hostname", "NV Hostname"] {
            if let Some(n) = k.nonempty_string(v) {
                return Ok(Some((n, k.value_path(v))));
            }
        }
    }
    Ok(None)
}

/// The time zone: TimeZoneKeyName (Vista+), else StandardName.
pub fn time_zone(system: &Hive, cs: &ControlSet) -> Result<Option<String>> {
    let Some(k) = system.key(&format!("{}\\Control\\TimeZoneInformation", cs.name))? else {
        return Ok(None);
    };
    Ok(k.nonempty_string("TimeZoneKeyName")
        .or_else(|| k.nonempty_string("StandardName")))
}

/// What a MountedDevices entry points at.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum MountTarget {
    /// MBR disk signature and partition byte offset.
    Mbr { disk_signature: String, offset: u64 },
    /// GPT partition GUID.
    Gpt { partition_guid: String },
    /// A device path string (removable or virtual devices).
    Device { path: String },
    /// Anything else, as hex.
    Other { hex: String },
}

/// A drive letter from `MountedDevices\\DosDevices\\X:`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DriveLetter {
    /// "C:".
    pub letter: String,
    pub target: MountTarget,
    pub registry_path: String,
}

/// Formats a little-endian GUID (Windows layout) as `{xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx}`.
pub fn guid_string(b: &[u8]) -> Option<String> {
    if b.len() < 16 {
        return None;
    }
    let d1 = u32::from_le_bytes(b[0..4].try_into().ok()?);
    let d2 = u16::from_le_bytes(b[4..6].try_into().ok()?);
    let d3 = u16::from_le_bytes(b[6..8].try_into().ok()?);
    Some(format!(
        "{{{d1:08x}-{d2:04x}-{d3:04x}-{:02x}{:02x}-{:02x}{:02x}{:02x}{:02x}{:02x}{:02x}}}",
        b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15]
    ))
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn mount_target(b: &[u8]) -> MountTarget {
    if b.len() == 12 {
        return MountTarget::Mbr {
            disk_signature: format!("{:08x}", u32::from_le_bytes(b[0..4].try_into().unwrap())),
            offset: u64::from_le_bytes(b[4..12].try_into().unwrap()),
        };
    }
    if b.len() == 24 && &b[..8] == b"DMIO:ID:" {
        if let Some(g) = guid_string(&b[8..24]) {
            return MountTarget::Gpt { partition_guid: g };
        }
    }
    if b.len() >= 4 && b.len() % 2 == 0 && b[1] == 0 && b[0].is_ascii_graphic() {
        let units: Vec<u16> = b
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .take_while(|&u| u != 0)
            .collect();
        return MountTarget::Device {
            path: String::from_utf16_lossy(&units),
        };
    }
    MountTarget::Other { hex: hex(b) }
}

/// Drive letters from MountedDevices, sorted by letter.
pub fn drive_letters(system: &Hive) -> Result<Vec<DriveLetter>> {
    let Some(k) = system.key("MountedDevices")? else {
        return Ok(Vec::new());
    };
    let mut out: Vec<DriveLetter> = k
        .values()
        .iter()
        .filter_map(|v| {
            let rest = v
                .name
                .strip_prefix("\\DosDevices\\")
                .or_else(|| v.name.strip_prefix("\\dosdevices\\"))?;
            if rest.len() != 2 || !rest.ends_with(':') {
                return None;
            }
            let bytes = v.data.as_bytes()?;
            Some(DriveLetter {
                letter: rest.to_ascii_uppercase(),
                target: mount_target(bytes),
                registry_path: k.value_path(&v.name),
            })
        })
        .collect();
    out.sort_by(|a, b| a.letter.cmp(&b.letter));
    Ok(out)
}

/// PROCESSOR_ARCHITECTURE from `Control\Session Manager\Environment` (AMD64, x86, ARM64).
pub fn processor_architecture(system: &Hive, cs: &ControlSet) -> Result<Option<String>> {
    Ok(system
        .key(&format!(
            "{}\\Control\\Session Manager\\Environment",
            cs.name
        ))?
        .and_then(|k| k.nonempty_string("PROCESSOR_ARCHITECTURE")))
}

/// A static IPv4 configuration of a network interface.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct StaticIp {
    /// Interface GUID (key name).
    pub interface: String,
    pub addresses: Vec<String>,
    pub subnet_masks: Vec<String>,
    pub gateways: Vec<String>,
    pub name_servers: Vec<String>,
    pub registry_path: String,
}

/// Interfaces under `Services\Tcpip\Parameters\Interfaces` with EnableDHCP=0 and an address.
pub fn static_ips(system: &Hive, cs: &ControlSet) -> Result<Vec<StaticIp>> {
    let mut out = Vec::new();
    for k in system
        .subkeys_of(&format!(
            "{}\\Services\\Tcpip\\Parameters\\Interfaces",
            cs.name
        ))?
        .iter()
    {
        if k.dword("EnableDHCP") != Some(0) {
            continue;
        }
        let addresses: Vec<String> = k
            .multi_sz("IPAddress")
            .unwrap_or_default()
            .into_iter()
            .filter(|a| !a.is_empty() && a != "0.0.0.0")
            .collect();
        if addresses.is_empty() {
            continue;
        }
        let list = |n: &str| -> Vec<String> {
            match k.data(n) {
                Some(d) => d
                    .as_multi()
                    .unwrap_or_default()
                    .iter()
                    .flat_map(|s| s.split([',', ' ']))
                    .filter(|s| !s.is_empty())
                    .map(str::to_string)
                    .collect(),
                None => Vec::new(),
            }
        };
        out.push(StaticIp {
            interface: k.name().to_string(),
            subnet_masks: list("SubnetMask"),
            gateways: list("DefaultGateway"),
            name_servers: list("NameServer"),
            addresses,
            registry_path: k.path().to_string(),
        });
    }
    Ok(out)
}
