//! State that survives a migration poorly, read from the registry: a pending reboot or file
//! renames, Fast Startup or hibernation enabled, static IP addresses (lost when the NIC
//! becomes Virtio), RealTimeIsUniversal, and a dirty hive whose logs were not replayed.

use serde::Serialize;

use super::hive::Hive;
use super::software;
use super::system::{self, ControlSet, StaticIp};
use crate::Result;

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
    /// The hive's integrity walk found damage (checks that read the damaged keys fail on
    /// their own; this says the hive is damaged even where no check looked).
    DamagedHive,
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
    pending(system, software, &cs, &mut out)?;
    power(system, &cs, &mut out)?;
    network_and_clock(system, &cs, &mut out)?;
    dirty_hives(system, software, &mut out);
    damaged_hives(system, software, &mut out);
    Ok(out)
}

fn warning(
    kind: WarningKind,
    message: String,
    registry_path: String,
    hive: &str,
    details: Vec<String>,
) -> ExtraWarning {
    ExtraWarning {
        kind,
        message,
        registry_path,
        hive: hive.into(),
        details,
    }
}

/// A pending reboot (CBS, Windows Update) and pending file renames.
fn pending(
    system: &Hive,
    software: &Hive,
    cs: &ControlSet,
    out: &mut Vec<ExtraWarning>,
) -> Result<()> {
    for p in software::pending_reboot_markers(software)? {
        out.push(warning(
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
                out.push(warning(
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
    Ok(())
}

/// Fast Startup and hibernation.
fn power(system: &Hive, cs: &ControlSet, out: &mut Vec<ExtraWarning>) -> Result<()> {
    if let Some(k) = system.key(&format!("{}\\Control\\Session Manager\\Power", cs.name))? {
        if k.dword("HiberbootEnabled").is_some_and(|v| v != 0) {
            out.push(warning(
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
            out.push(warning(
                WarningKind::Hibernation,
                "hibernation is enabled (HibernateEnabled=1): hiberfil.sys wastes space and a resumed image does not boot on new hardware; powercfg /h off".into(),
                k.value_path("HibernateEnabled"),
                "SYSTEM",
                vec![],
            ));
        }
    }
    Ok(())
}

/// Static IP addresses and RealTimeIsUniversal.
fn network_and_clock(system: &Hive, cs: &ControlSet, out: &mut Vec<ExtraWarning>) -> Result<()> {
    for ip in system::static_ips(system, cs)? {
        out.push(warning(
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
            out.push(warning(
                WarningKind::RealTimeIsUniversal,
                "RealTimeIsUniversal=1: Windows reads the hardware clock as UTC; the clock will be off if the platform keeps it in local time".into(),
                k.value_path("RealTimeIsUniversal"),
                "SYSTEM",
                vec![],
            ));
        }
    }
    Ok(())
}

/// Hives whose integrity walk found damage.
fn damaged_hives(system: &Hive, software: &Hive, out: &mut Vec<ExtraWarning>) {
    for (hive, label) in [(system, "SYSTEM"), (software, "SOFTWARE")] {
        let d = hive.damage();
        if d.is_empty() {
            continue;
        }
        out.push(warning(
            WarningKind::DamagedHive,
            format!(
                "the {label} hive is damaged ({}): keys there may be missing; restore the hive or run chkdsk on the source and export again",
                d.summary()
            ),
            hive.name().to_string(),
            label,
            d.keys
                .iter()
                .take(8)
                .map(|k| format!("{} (offset {:#x}): {}", k.path, k.offset, k.problem))
                .collect(),
        ));
    }
}

/// Dirty hives whose transaction logs were not replayed.
fn dirty_hives(system: &Hive, software: &Hive, out: &mut Vec<ExtraWarning>) {
    for (hive, label) in [(system, "SYSTEM"), (software, "SOFTWARE")] {
        let r = hive.replay();
        if r.dirty && !r.logs_applied {
            out.push(warning(
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
