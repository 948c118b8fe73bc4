//! The checks that read Windows itself: `boot.firmware` (BCD and partitions),
//! `drivers.virtio`, `software.cloudbase-init`, `software.conflicts` and `system.state`, plus the
//! OS identity shown by `verify` and `inspect`.

use serde::Serialize;

use super::inspection::Inspection;
use super::{
    CheckResult, ID_BOOT_FIRMWARE, ID_CLOUDBASE_INIT, ID_CONFLICTS, ID_DRIVERS_VIRTIO,
    ID_SYSTEM_STATE,
};
use crate::disk::{PartitionTable, TableKind};
use crate::fs::{self, FsKind, Volume};
use crate::windows::analysis::{self, Conflict, OsInfo, VirtioState, VirtioStatus};
use crate::windows::bcd::{self, BcdInfo, Firmware};
use crate::windows::hive::{Hive, MAX_HIVE_SIZE, MAX_LOG_SIZE};

/// Where the hives live on the Windows volume.
const CONFIG_DIR: &str = "Windows/System32/config";
/// BCD locations: BIOS installs keep it on the active partition, UEFI ones on the ESP.
const BCD_PATHS: [&str; 2] = ["Boot/BCD", "EFI/Microsoft/Boot/BCD"];

/// A hive read from the image, with its transaction logs replayed when they are there.
pub struct LoadedHive {
    pub hive: Hive,
    /// The transaction log files that were found and given to the replay (e.g. "SYSTEM.LOG1").
    pub logs: Vec<String>,
}

fn load_hive(vol: &Volume, name: &str) -> Result<LoadedHive, String> {
    let path = format!("{CONFIG_DIR}/{name}");
    let primary = vol
        .read_capped(&path, MAX_HIVE_SIZE as u64)
        .map_err(|e| e.to_string())?;
    let mut logs = Vec::new();
    let mut log_names = Vec::new();
    for ext in ["LOG1", "LOG2"] {
        let p = format!("{path}.{ext}");
        if let Ok(true) = vol.exists(&p) {
            if let Ok(b) = vol.read_capped(&p, MAX_LOG_SIZE as u64) {
                logs.push(b);
                log_names.push(format!("{name}.{ext}"));
            }
        }
    }
    let refs: Vec<&[u8]> = logs.iter().map(Vec::as_slice).collect();
    let hive = Hive::open(
        &format!("{}: \\{}", vol.name(), path.replace('/', "\\")),
        &primary,
        &refs,
    )
    .map_err(|e| e.to_string())?;
    Ok(LoadedHive {
        hive,
        logs: log_names,
    })
}

/// The BCD store found on the disk, with where it was found.
pub struct FoundBcd {
    pub partition: u32,
    pub path: String,
    pub info: Result<BcdInfo, String>,
}

/// Look for a BCD store: the active partition first, then the others.
fn find_bcd(insp: &Inspection, table: &PartitionTable) -> Option<FoundBcd> {
    let mut parts = table.data_partitions();
    parts.sort_by_key(|p| (!p.bootable, p.index));
    for p in parts {
        if !matches!(fs::probe(&insp.dev, p.start, p.size), Ok(FsKind::Ntfs)) {
            continue;
        }
        let Ok(vol) = Volume::open_partition(&insp.dev, table, p.index) else {
            continue;
        };
        for path in BCD_PATHS {
            if !matches!(vol.exists(path), Ok(true)) {
                continue;
            }
            let info = vol
                .read_capped(path, MAX_HIVE_SIZE as u64)
                .map_err(|e| e.to_string())
                .and_then(|b| {
                    Hive::open(
                        &format!("{}: \\{}", vol.name(), path.replace('/', "\\")),
                        &b,
                        &[],
                    )
                    .map_err(|e| e.to_string())
                })
                .and_then(|h| bcd::bcd_boot(&h).map_err(|e| e.to_string()));
            return Some(FoundBcd {
                partition: p.index,
                path: format!("\\{}", path.replace('/', "\\")),
                info,
            });
        }
    }
    None
}

/// Everything the registry checks need, read once.
pub struct WindowsFacts {
    pub system: Result<LoadedHive, String>,
    pub software: Result<LoadedHive, String>,
    pub bcd: Option<FoundBcd>,
}

impl WindowsFacts {
    /// Read the hives from the Windows volume and the BCD store; `None` without Windows.
    pub fn gather(insp: &Inspection) -> Option<Self> {
        let win = insp.windows.as_ref()?;
        let table = insp.table.as_ref().ok()?;
        Some(WindowsFacts {
            system: load_hive(win, "SYSTEM"),
            software: load_hive(win, "SOFTWARE"),
            bcd: find_bcd(insp, table),
        })
    }

    /// Both hives, or the reason one could not be read.
    fn hives(&self) -> Result<(&Hive, &Hive), String> {
        match (&self.system, &self.software) {
            (Ok(a), Ok(b)) => Ok((&a.hive, &b.hive)),
            (Err(e), _) => Err(format!("the SYSTEM hive could not be read: {e}")),
            (_, Err(e)) => Err(format!("the SOFTWARE hive could not be read: {e}")),
        }
    }
}

const HIVE_HINT: &str = "the registry in the image is damaged or incomplete: export again from a \
                         consistent copy (disk2vhd with \"Use Volume Shadow Copy\", or with the \
                         machine shut down)";

/// Both hives, or the result a registry check gives without them (skip without Windows, fail
/// when a hive cannot be read).
fn hives_for<'a>(
    id: &str,
    insp: &Inspection,
    facts: Option<&'a WindowsFacts>,
) -> Result<(&'a Hive, &'a Hive), CheckResult> {
    match facts {
        None if insp.windows.is_none() => Err(CheckResult::skip(
            id,
            "no Windows installation was found on the disk (see disk.first-partition)",
        )),
        None => Err(CheckResult::skip(
            id,
            "the partition table could not be read",
        )),
        Some(f) => f.hives().map_err(|e| CheckResult::fail(id, e, HIVE_HINT)),
    }
}

/// `boot.firmware`: Windows must boot by BIOS from an active MBR partition, not by EFI.
pub fn boot_firmware(insp: &Inspection, facts: Option<&WindowsFacts>) -> CheckResult {
    let id = ID_BOOT_FIRMWARE;
    let Ok(table) = &insp.table else {
        return CheckResult::skip(id, "the partition table could not be read");
    };
    let efi_hint = "the target platform boots only by BIOS (the guide refuses EFI): the \
                    installation must be converted to BIOS boot on an MBR disk (for example \
                    MBR conversion and `bcdboot C:\\Windows /f BIOS` on an active partition), \
                    or open a ticket with the platform as its guide says";
    if let Some(&esp) = table.efi_system_partitions.first() {
        let mut r = CheckResult::fail(
            id,
            format!(
                "the disk has an EFI system partition (partition {esp}): Windows boots by UEFI"
            ),
            efi_hint,
        );
        if let Some(FoundBcd { info: Ok(b), .. }) = facts.and_then(|f| f.bcd.as_ref()) {
            r.evidence.push(b.evidence.clone());
        }
        return r.with_evidence(format!("partition {esp} is an EFI system partition"));
    }
    let Some(facts) = facts else {
        return CheckResult::skip(id, "no Windows installation was found on the disk");
    };
    let Some(found) = &facts.bcd else {
        return CheckResult::fail(
            id,
            "no BCD store (\\Boot\\BCD) was found on any NTFS partition: the disk cannot boot",
            "the boot files are missing: run `bcdboot C:\\Windows /s C: /f BIOS` (or on the \
             System Reserved partition) on the source and mark that partition active, then \
             export again",
        );
    };
    let info = match &found.info {
        Ok(i) => i,
        Err(e) => {
            return CheckResult::fail(
                id,
                format!(
                    "the BCD store {} on partition {} could not be read: {e}",
                    found.path, found.partition
                ),
                "rebuild the boot configuration on the source (`bcdboot C:\\Windows /f BIOS`) \
                 and export again",
            )
        }
    };
    let where_ = format!("BCD {} on partition {}", found.path, found.partition);
    match info.firmware {
        Firmware::Efi => CheckResult::fail(
            id,
            format!(
                "Windows boots by EFI: the default loader is {} ({where_})",
                info.loader_path.as_deref().unwrap_or("an EFI application")
            ),
            efi_hint,
        )
        .with_evidence(info.evidence.clone()),
        Firmware::Unknown => CheckResult::warn(
            id,
            format!(
                "the {where_} does not say how Windows boots: {}",
                info.evidence
            ),
            "check on the source with `bcdedit /enum {current}`: its path must end in \
             winload.exe (BIOS), not winload.efi",
        )
        .with_evidence(info.evidence.clone()),
        Firmware::Bios if matches!(table.kind, TableKind::Gpt | TableKind::HybridMbr) => {
            CheckResult::fail(
                id,
                format!(
                    "the BCD names a BIOS loader ({}, {where_}) but the disk is GPT, and Windows \
                     boots from a GPT disk only by UEFI: the disk cannot boot as exported",
                    info.loader_path.as_deref().unwrap_or("winload.exe")
                ),
                efi_hint,
            )
            .with_evidence(info.evidence.clone())
        }
        Firmware::Bios => {
            let active = table
                .data_partitions()
                .into_iter()
                .find(|p| p.bootable)
                .map(|p| p.index);
            let loader = info.loader_path.as_deref().unwrap_or("winload.exe");
            let Some(active) = active else {
                return CheckResult::fail(
                    id,
                    format!(
                        "Windows boots by BIOS ({loader}, {where_}) but no partition is active"
                    ),
                    "mark the partition holding bootmgr active (diskpart: select partition N, \
                     active) and export again",
                )
                .with_evidence(info.evidence.clone());
            };
            let bootmgr = Volume::open_partition(&insp.dev, table, active)
                .ok()
                .and_then(|v| v.exists("bootmgr").ok())
                .unwrap_or(false);
            if !bootmgr {
                return CheckResult::fail(
                    id,
                    format!(
                        "Windows boots by BIOS ({loader}, {where_}) but the active partition \
                         {active} has no \\bootmgr"
                    ),
                    "make the partition with bootmgr active, or rebuild the boot files with \
                     `bcdboot C:\\Windows /f BIOS`, and export again",
                )
                .with_evidence(info.evidence.clone());
            }
            CheckResult::pass(
                id,
                format!(
                    "Windows boots by BIOS: {loader} ({where_}); bootmgr on active partition {active}"
                ),
            )
            .with_evidence(info.evidence.clone())
        }
    }
}

/// `drivers.virtio`: a Virtio storage driver that will take the boot disk; netkvm.
pub fn virtio(
    insp: &Inspection,
    facts: Option<&WindowsFacts>,
) -> (CheckResult, Option<VirtioStatus>) {
    let id = ID_DRIVERS_VIRTIO;
    let (system, software) = match hives_for(id, insp, facts) {
        Ok(h) => h,
        Err(r) => return (r, None),
    };
    let win = insp
        .windows
        .as_ref()
        .expect("hives come from the Windows volume");
    let exists = |p: &str| matches!(win.exists(p), Ok(true));
    let st = match analysis::virtio_storage(system, software, &exists) {
        Ok(s) => s,
        Err(e) => return (CheckResult::fail(id, e.to_string(), HIVE_HINT), None),
    };
    let mut r =
        if st.state == VirtioState::Ok {
            if st.netkvm.present {
                CheckResult::pass(id, st.message.clone())
            } else {
                CheckResult::warn(
                id,
                format!("{}; but netkvm (the Virtio network driver) is not installed", st.message),
                "install the Virtio network driver (netkvm) from the virtio-win package, or the \
                 instance will have no network on the target platform",
            )
            .with_evidence(st.netkvm.registry_path.clone())
            }
        } else {
            // Name every driver's state in the issue's words ("not installed", "installed but
            // not boot-start", ...), not only the one that decided.
            let states: Vec<String> = st
                .drivers
                .iter()
                .map(|d| {
                    let missing = match (&d.driver_file, d.driver_file_exists) {
                        (Some(f), Some(false)) => format!(" ({f} missing)"),
                        _ => String::new(),
                    };
                    format!("{}: {}{missing}", d.name, d.state.as_str())
                })
                .collect();
            let states = if states.is_empty() {
                st.state_text.clone()
            } else {
                states.join("; ")
            };
            CheckResult::fail(id, format!("{} [{states}]", st.message), st.hint.clone())
        };
    for d in &st.drivers {
        r.evidence.push(format!(
            "{}: {} ({})",
            d.name,
            d.state.as_str(),
            d.service_registry_path
        ));
        for b in &d.bindings {
            r.evidence.push(format!(
                "{} bound via {} ({})",
                b.hardware_id, b.source, b.registry_path
            ));
        }
    }
    (r, Some(st))
}

/// `software.cloudbase-init`.
pub fn cloudbase(insp: &Inspection, facts: Option<&WindowsFacts>) -> CheckResult {
    let id = ID_CLOUDBASE_INIT;
    let (system, software) = match hives_for(id, insp, facts) {
        Ok(h) => h,
        Err(r) => return r,
    };
    let st = match analysis::cloudbase_init(system, software) {
        Ok(s) => s,
        Err(e) => return CheckResult::fail(id, e.to_string(), HIVE_HINT),
    };
    let install_hint = "install Cloudbase-Init as the platform's guide describes (it sets the \
                        host name, password and network on first boot), then export again";
    match (&st.uninstall_entry, &st.service) {
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
    }
}

fn describe_conflict(c: &Conflict) -> String {
    let mut s = format!("{}: {}", c.suite_name, c.name);
    if let Some(d) = &c.detail {
        s.push_str(&format!(" ({d})"));
    }
    s.push_str(if c.enabled { ", enabled" } else { ", disabled" });
    s
}

/// `software.conflicts`: guest tools of other hypervisors.
pub fn conflicts(insp: &Inspection, facts: Option<&WindowsFacts>) -> CheckResult {
    let id = ID_CONFLICTS;
    let (system, software) = match hives_for(id, insp, facts) {
        Ok(h) => h,
        Err(r) => return r,
    };
    let found = match analysis::conflicts(system, software) {
        Ok(f) => f,
        Err(e) => return CheckResult::fail(id, e.to_string(), HIVE_HINT),
    };
    let mut suites: Vec<&str> = Vec::new();
    for c in &found {
        if !suites.contains(&c.suite_name.as_str()) {
            suites.push(&c.suite_name);
        }
    }
    let enabled: Vec<&Conflict> = found.iter().filter(|c| c.enabled).collect();
    let hint = "uninstall them on the source before exporting (Control Panel > Programs and \
                Features; for drivers left behind, `sc delete NAME` and remove the name from the \
                class's UpperFilters/LowerFilters), as the guide requires: they conflict with \
                the target platform's devices";
    let mut r = if !enabled.is_empty() {
        let names: Vec<String> = enabled.iter().map(|c| c.name.clone()).collect();
        CheckResult::fail(
            id,
            format!(
                "conflicting guest tools are installed and enabled: {} ({})",
                suites.join(", "),
                names.join(", ")
            ),
            hint,
        )
    } else if !found.is_empty() {
        let names: Vec<String> = found.iter().map(|c| c.name.clone()).collect();
        CheckResult::warn(
            id,
            format!(
                "leftovers of {} are present but disabled ({})",
                suites.join(", "),
                names.join(", ")
            ),
            hint,
        )
    } else {
        CheckResult::pass(
            id,
            "no VMware Tools, Xen PV drivers, VirtualBox Guest Additions or Parallels Tools found",
        )
    };
    for c in &found {
        r.evidence
            .push(format!("{} — {}", describe_conflict(c), c.registry_path));
    }
    r
}

/// `system.state`: things that survive a migration poorly (pending reboot or renames, Fast
/// Startup or hibernation enabled, static IP addresses, RealTimeIsUniversal, a dirty hive).
pub fn system_state(insp: &Inspection, facts: Option<&WindowsFacts>) -> CheckResult {
    let id = ID_SYSTEM_STATE;
    let (system, software) = match hives_for(id, insp, facts) {
        Ok(h) => h,
        Err(r) => return r,
    };
    let warnings = match analysis::extra_warnings(system, software) {
        Ok(w) => w,
        Err(e) => return CheckResult::fail(id, e.to_string(), HIVE_HINT),
    };
    let mut replayed = Vec::new();
    let loaded = facts.into_iter().flat_map(|f| [&f.system, &f.software]);
    for h in loaded.flatten() {
        if h.hive.replay().logs_applied {
            replayed.push(format!(
                "{} was dirty; its transaction logs were replayed ({})",
                h.hive.name(),
                h.logs.join(", ")
            ));
        }
    }
    if warnings.is_empty() {
        let mut msg = "no pending reboot, Fast Startup, static IP address or other state that \
                       breaks a migration"
            .to_string();
        if !replayed.is_empty() {
            msg.push_str(&format!(" ({})", replayed.join("; ")));
        }
        return CheckResult::pass(id, msg);
    }
    let msg = warnings
        .iter()
        .map(|w| w.message.as_str())
        .collect::<Vec<_>>()
        .join("; ");
    let mut r = CheckResult::warn(
        id,
        msg,
        "on the source: restart once to finish pending updates, turn off Fast Startup and \
         hibernation (`powercfg /h off`), switch network interfaces to DHCP (the NIC becomes \
         a new Virtio NIC), then shut down and export again",
    );
    for w in &warnings {
        r.evidence
            .push(format!("HKLM\\{}\\{}", w.hive, w.registry_path));
    }
    r.evidence.extend(replayed);
    r
}

/// The OS identity for reports, when the hives are readable.
pub fn os_identity(facts: Option<&WindowsFacts>) -> Option<OsInfo> {
    let (system, software) = facts?.hives().ok()?;
    analysis::os_identity(system, software).ok()
}

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
