//! `system.state` (warnings only): state that survives a migration poorly: a pending reboot
//! or file renames, Fast Startup or hibernation enabled, static IP addresses,
//! RealTimeIsUniversal, a dirty hive whose logs were not replayed. The analysis is
//! [`crate::windows::system_state`].

use super::{CheckError, CheckResult};
use crate::guest::Disk;
use crate::windows::system_state::extra_warnings;

pub const ID: &str = "system.state";

/// `system.state`: things that survive a migration poorly (pending reboot or renames, Fast
/// Startup or hibernation enabled, static IP addresses, RealTimeIsUniversal, a dirty hive).
pub fn run(disk: &Disk) -> Result<CheckResult, CheckError> {
    let id = ID;
    let (system, software) = super::hives(disk)?;
    let warnings = extra_warnings(system, software)?;
    let mut replayed = Vec::new();
    for h in disk.registry().into_iter().flat_map(|r| r.loaded()) {
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
        return Ok(CheckResult::pass(id, msg));
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
    Ok(r)
}
