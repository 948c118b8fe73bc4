//! The BCD store (a registry hive): boot manager, default OS loader, firmware type.
//!
//! Layout: `Objects\{guid}\Elements\<element type in hex>\Element`. The boot manager is
//! `{9dea862c-5cdd-4e70-acc1-f32b344d4795}`; its element 23000003 (REG_SZ) names the default
//! loader object; an application's element 12000002 is its path and 11000001 its device.

use serde::Serialize;

use super::hive::{Hive, Key};
use crate::Result;

pub const BOOTMGR_GUID: &str = "{9dea862c-5cdd-4e70-acc1-f32b344d4795}";
pub const ELEM_APP_DEVICE: &str = "11000001";
pub const ELEM_APP_PATH: &str = "12000002";
pub const ELEM_DESCRIPTION: &str = "12000004";
pub const ELEM_DEFAULT_OBJECT: &str = "23000003";
/// Objects scanned when the boot manager has no usable default.
const MAX_OBJECTS: usize = 4096;

/// Firmware a Windows installation boots with, as the BCD says.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Firmware {
    Efi,
    Bios,
    Unknown,
}

/// What the BCD store says.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct BcdInfo {
    /// `{bootmgr}` is present.
    pub bootmgr_present: bool,
    /// Boot manager's own application path (12000002), e.g. `\EFI\Microsoft\Boot\bootmgfw.efi`;
    /// often absent in BIOS stores.
    pub bootmgr_path: Option<String>,
    /// Default loader object GUID (bootmgr element 23000003).
    pub default_loader: Option<String>,
    /// Registry path of the 23000003 element.
    pub default_loader_registry_path: Option<String>,
    /// Loader application path (12000002), e.g. `\Windows\system32\winload.efi`.
    pub loader_path: Option<String>,
    pub loader_path_registry_path: Option<String>,
    /// Loader description (12000004), e.g. "Windows 10".
    pub loader_description: Option<String>,
    /// Loader device element (11000001), hex.
    pub loader_device_hex: Option<String>,
    pub firmware: Firmware,
    /// Which evidence decided the firmware, in words.
    pub evidence: String,
}

fn element(bcd: &Hive, object: &str, elem: &str) -> Result<Option<Key>> {
    bcd.key(&format!("Objects\\{object}\\Elements\\{elem}"))
}

fn element_string(bcd: &Hive, object: &str, elem: &str) -> Result<Option<(String, String)>> {
    Ok(element(bcd, object, elem)?.and_then(|k| {
        k.nonempty_string("Element")
            .map(|s| (s, k.value_path("Element")))
    }))
}

fn firmware_of_path(p: &str) -> Option<Firmware> {
    let l = p.trim().to_ascii_lowercase();
    if l.ends_with("winload.efi") || l.ends_with("bootmgfw.efi") || l.ends_with(".efi") {
        Some(Firmware::Efi)
    } else if l.ends_with("winload.exe") {
        Some(Firmware::Bios)
    } else {
        None
    }
}

/// Reads the boot manager and its default loader, and decides the firmware: a loader path
/// ending in `winload.efi` means EFI, `winload.exe` BIOS (case-insensitive). When bootmgr has no
/// usable default, the OS loader objects are examined: all EFI or all BIOS decides; else the
/// boot manager's own path (`.efi`) decides; else Unknown.
pub fn bcd_boot(bcd: &Hive) -> Result<BcdInfo> {
    let bootmgr_present = bcd.key(&format!("Objects\\{BOOTMGR_GUID}"))?.is_some();
    let bootmgr_path = element_string(bcd, BOOTMGR_GUID, ELEM_APP_PATH)?.map(|x| x.0);
    let default = element_string(bcd, BOOTMGR_GUID, ELEM_DEFAULT_OBJECT)?;
    let mut info = BcdInfo {
        bootmgr_present,
        bootmgr_path: bootmgr_path.clone(),
        default_loader: default.as_ref().map(|d| d.0.clone()),
        default_loader_registry_path: default.as_ref().map(|d| d.1.clone()),
        loader_path: None,
        loader_path_registry_path: None,
        loader_description: None,
        loader_device_hex: None,
        firmware: Firmware::Unknown,
        evidence: String::new(),
    };
    if let Some((guid, _)) = &default {
        if let Some((p, rp)) = element_string(bcd, guid, ELEM_APP_PATH)? {
            info.loader_path = Some(p);
            info.loader_path_registry_path = Some(rp);
        }
        info.loader_description = element_string(bcd, guid, ELEM_DESCRIPTION)?.map(|x| x.0);
        info.loader_device_hex = element(bcd, guid, ELEM_APP_DEVICE)?.and_then(|k| {
            k.binary("Element")
                .map(|b| b.iter().map(|x| format!("{x:02x}")).collect())
        });
    }
    if let Some(p) = &info.loader_path {
        if let Some(fw) = firmware_of_path(p) {
            info.firmware = fw;
            info.evidence = format!(
                "default loader {} ({{bootmgr}} element {ELEM_DEFAULT_OBJECT}) has application path {p} (element {ELEM_APP_PATH})",
                info.default_loader.as_deref().unwrap_or("?")
            );
            return Ok(info);
        }
    }
    // No usable default: look at every object's application path.
    let mut efi = Vec::new();
    let mut bios = Vec::new();
    for obj in bcd.subkeys_of("Objects")?.iter().take(MAX_OBJECTS) {
        if obj.name().eq_ignore_ascii_case(BOOTMGR_GUID) {
            continue;
        }
        if let Some((p, _)) = element_string(bcd, obj.name(), ELEM_APP_PATH)? {
            let l = p.to_ascii_lowercase();
            if l.ends_with("winload.efi") {
                efi.push(format!("{} {p}", obj.name()));
            } else if l.ends_with("winload.exe") {
                bios.push(format!("{} {p}", obj.name()));
            }
        }
    }
    if !efi.is_empty() && bios.is_empty() {
        info.firmware = Firmware::Efi;
        info.evidence = format!("no usable default loader; OS loader(s) {}", efi.join(", "));
    } else if !bios.is_empty() && efi.is_empty() {
        info.firmware = Firmware::Bios;
        info.evidence = format!("no usable default loader; OS loader(s) {}", bios.join(", "));
    } else if let Some(fw) = bootmgr_path.as_deref().and_then(firmware_of_path) {
        info.firmware = fw;
        info.evidence = format!(
            "boot manager application path {} ({{bootmgr}} element {ELEM_APP_PATH})",
            bootmgr_path.as_deref().unwrap_or_default()
        );
    } else {
        info.evidence = if efi.is_empty() {
            "no OS loader with a winload.efi or winload.exe path found".to_string()
        } else {
            format!(
                "both EFI and BIOS loaders and no default: {}",
                efi.iter()
                    .chain(bios.iter())
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        };
    }
    Ok(info)
}
