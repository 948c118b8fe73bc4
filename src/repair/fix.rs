//! `imgcheck fix`: the repairs one registry change can make, planned on the source, applied to
//! a copy.
//!
//! What is repaired (all in the SYSTEM hive's current control set):
//! - a Virtio storage driver (viostor, vioscsi) that is installed but not boot-start gets
//!   `Start` = 0 (what `drivers.virtio` fails on; virt-v2v does the same);
//! - a `StartOverride` key under it, which keeps a boot-start driver from starting, is deleted;
//! - enabled VMware, Xen, VirtualBox and Parallels services get `Start` = 4 (disabled), as
//!   virt-v2v disables them; the files stay;
//! - a boot-critical storage class filter (UpperFilters/LowerFilters of DiskDrive, SCSIAdapter,
//!   HDC, Volume, ...) that names a missing, disabled or leftover service, or one whose driver
//!   file is gone, is removed from its list (what `drivers.storage-filters` fails on: the disk
//!   stack cannot start with it);
//! - Fast Startup turned on (`HiberbootEnabled` = 1, a `system.state` warning) is turned off, so
//!   that the next shutdown in the cloud is a full one.
//!
//! What is refused, with the reason, before anything is written: Windows hibernated or shut
//! down with Fast Startup (Windows would resume the old kernel state over the change), a volume
//! marked dirty (as ntfs-3g refuses to write one), a dirty SYSTEM hive (its logs would be replayed over the change), a damaged hive, and a SYSTEM file
//! whose data cannot be rewritten in place (see [`crate::fs::FileExtents`]). What cannot be
//! repaired offline (no Virtio driver at all) is reported as not repairable.
//!
//! The hive is edited in place ([`super::hive_edit`]), so it keeps its length and its clusters:
//! the destination is the source with those clusters' bytes replaced ([`super::overlay`]).

use std::sync::Arc;

use serde::Serialize;

use super::hive_edit::{filetime_now, HiveEditor};
use super::overlay::Overlay;
use crate::guest::hives::CONFIG_DIR;
use crate::guest::Disk;
use crate::image::BlockDevice;
use crate::windows::hive::MAX_HIVE_SIZE;
use crate::windows::{conflicts, system, ConflictKind, Hive};
use crate::{Error, Result};

/// The Virtio storage drivers a repair can make boot-start.
const VIRTIO_STORAGE: [&str; 2] = ["viostor", "vioscsi"];

/// One change made (or, with `--dry-run`, to be made).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Repair {
    /// The check whose finding this repairs.
    pub check: String,
    /// Registry key, from the SYSTEM hive's root.
    pub key: String,
    /// What changes.
    pub change: String,
}

/// A finding no offline change can mend.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct NotRepairable {
    pub check: String,
    pub why: String,
}

/// What `fix` does to an image.
#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    pub repairs: Vec<Repair>,
    pub not_repairable: Vec<NotRepairable>,
    /// The SYSTEM hive's path on the Windows volume.
    pub hive: String,
    /// Guest disk byte ranges rewritten.
    pub bytes_changed: u64,
    #[serde(skip)]
    patches: Vec<(u64, Vec<u8>)>,
}

impl Plan {
    /// The source seen with the repairs applied (the source itself when there are none).
    pub fn apply(&self, src: Arc<dyn BlockDevice>) -> Result<Arc<dyn BlockDevice>> {
        if self.patches.is_empty() {
            return Ok(src);
        }
        Ok(Arc::new(Overlay::new(src, self.patches.clone())?))
    }
}

fn refuse(dev: &dyn BlockDevice, why: String) -> Error {
    Error::refused(dev.name(), format!("fix: {why}"))
}

/// The checks whose findings `fix` repairs.
pub const REPAIRABLE: [&str; 4] = [
    "drivers.virtio",
    "software.conflicts",
    "drivers.storage-filters",
    "system.state",
];

/// Plans the repairs of `dev` (reading only); `only`, when not empty, limits them to those
/// checks (ids of [`REPAIRABLE`]).
pub fn plan(dev: &Arc<dyn BlockDevice>, only: &[String]) -> Result<Plan> {
    if let Some(bad) = only.iter().find(|c| !REPAIRABLE.contains(&c.as_str())) {
        return Err(Error::Other(format!(
            "fix --only {bad}: not a check fix repairs (one of: {})",
            REPAIRABLE.join(", ")
        )));
    }
    let wants = |id: &str| only.is_empty() || only.iter().any(|c| c == id);
    let disk = Disk::open(dev.clone())?;
    let vol = disk
        .windows()
        .ok_or_else(|| refuse(dev.as_ref(), "no NTFS partition holds Windows".into()))?;
    if let Some(h) = vol.hibernation()? {
        return Err(refuse(
            dev.as_ref(),
            format!("Windows is hibernated or was shut down with Fast Startup ({h:?}): it would resume over an offline change; shut it down fully (`shutdown /s /t 0` with Fast Startup off) and export again"),
        ));
    }
    if vol.is_dirty() {
        return Err(refuse(
            dev.as_ref(),
            "the Windows volume is marked dirty (not cleanly unmounted; chkdsk runs at the next boot): as ntfs-3g does, imgcheck does not change such a volume; start Windows once, or run chkdsk, and export again".into(),
        ));
    }
    let registry = disk
        .registry()
        .ok_or_else(|| refuse(dev.as_ref(), "no registry was found".into()))?;
    let (system, software) = registry
        .hives()
        .map_err(|e| refuse(dev.as_ref(), e.to_string()))?;
    let r = system.replay();
    if r.dirty {
        return Err(refuse(
            dev.as_ref(),
            format!("the SYSTEM hive is dirty (sequence numbers {} and {}): Windows would replay its logs over a change; start Windows once and shut it down, then export again", r.primary_sequence, r.secondary_sequence),
        ));
    }
    if !system.damage().is_empty() {
        return Err(refuse(
            dev.as_ref(),
            format!("the SYSTEM hive is damaged: {}", system.damage().summary()),
        ));
    }
    let path = format!("{CONFIG_DIR}/SYSTEM");
    let original = vol.read_capped(&path, MAX_HIVE_SIZE as u64)?;
    let extents = vol.data_extents(&path)?;
    let mut ed = HiveEditor::new(system.name(), original.clone())?;
    let mut plan = Plan {
        repairs: Vec::new(),
        not_repairable: Vec::new(),
        hive: format!("\\{}", path.replace('/', "\\")),
        bytes_changed: 0,
        patches: Vec::new(),
    };
    let cs = system::require_control_set(system)?;
    if wants("drivers.virtio") {
        virtio_repairs(system, &mut ed, &cs.name, &mut plan)?;
    }
    if wants("software.conflicts") {
        conflict_repairs(system, software, &mut ed, &mut plan)?;
    }
    if wants("drivers.storage-filters") {
        filter_repairs(system, software, vol, &mut ed, &mut plan)?;
    }
    if wants("system.state") {
        fast_startup_repair(system, &mut ed, &cs.name, &mut plan)?;
    }
    if plan.repairs.is_empty() {
        return Ok(plan);
    }
    let edited = ed.finish(filetime_now(), r.primary_sequence.max(r.secondary_sequence));
    if edited.len() != original.len() {
        return Err(Error::Other(format!(
            "{}: fix: the edited hive changed length ({} to {} bytes)",
            dev.name(),
            original.len(),
            edited.len()
        )));
    }
    let mut pos = 0usize;
    for &(at, len) in &extents.extents {
        let (a, b) = (pos, pos + len as usize);
        if original[a..b] != edited[a..b] {
            plan.patches.push((at, edited[a..b].to_vec()));
            plan.bytes_changed += len;
        }
        pos = b;
    }
    Ok(plan)
}

/// Virtio storage drivers installed but not boot-start, and their StartOverride keys.
fn virtio_repairs(system: &Hive, ed: &mut HiveEditor, cs: &str, plan: &mut Plan) -> Result<()> {
    let mut installed = false;
    for name in VIRTIO_STORAGE {
        let path = format!("{cs}\\Services\\{name}");
        let Some(k) = system.key(&path)? else {
            continue;
        };
        if k.nonempty_string("ImagePath").is_none() && k.dword("Start").is_none() {
            continue;
        }
        installed = true;
        let cell = ed
            .key(&path)?
            .ok_or_else(|| Error::Other(format!("fix: {path} not found by the editor")))?;
        if let Some(start) = k.dword("Start").filter(|&s| s != 0) {
            ed.set_dword(cell, "Start", 0, &path)?;
            plan.repairs.push(Repair {
                check: "drivers.virtio".into(),
                key: path.clone(),
                change: format!("Start {start} -> 0 (boot-start)"),
            });
        }
        if system.key(&format!("{path}\\StartOverride"))?.is_some() {
            ed.delete_key(cell, "StartOverride", &path)?;
            plan.repairs.push(Repair {
                check: "drivers.virtio".into(),
                key: format!("{path}\\StartOverride"),
                change: "deleted (it kept the boot driver from starting)".into(),
            });
        }
    }
    if !installed {
        plan.not_repairable.push(NotRepairable {
            check: "drivers.virtio".into(),
            why: "no Virtio storage driver (viostor, vioscsi) is installed; install virtio-win in the source VM and export again (drivers cannot be added offline)".into(),
        });
    }
    Ok(())
}

/// Boot-critical class filters that cannot load: removed from their lists.
fn filter_repairs(
    system: &Hive,
    software: &Hive,
    vol: &crate::fs::Volume,
    ed: &mut HiveEditor,
    plan: &mut Plan,
) -> Result<()> {
    let exists = |p: &str| vol.exists(p);
    let found = crate::windows::storage_filters::storage_filters(system, software, &exists)?;
    // (class key, value) -> the filters to drop.
    let mut drop: Vec<(String, String, Vec<String>)> = Vec::new();
    for f in found.broken().filter(|f| f.boot_critical) {
        let key = f
            .registry_path
            .rsplit_once('\\')
            .map_or(f.registry_path.as_str(), |(k, _)| k)
            .to_string();
        match drop.iter_mut().find(|(k, v, _)| *k == key && *v == f.value) {
            Some((_, _, names)) => names.push(f.filter.clone()),
            None => drop.push((key, f.value.clone(), vec![f.filter.clone()])),
        }
    }
    for (key, value, names) in drop {
        let Some(k) = system.key(&key)? else {
            continue;
        };
        let Some(list) = k.multi_sz(&value) else {
            continue;
        };
        let kept: Vec<String> = list
            .iter()
            .filter(|n| !names.iter().any(|d| d.eq_ignore_ascii_case(n)))
            .cloned()
            .collect();
        let cell = ed
            .key(&key)?
            .ok_or_else(|| Error::Other(format!("fix: {key} not found by the editor")))?;
        ed.set_multi_sz(cell, &value, &kept, &key)?;
        plan.repairs.push(Repair {
            check: "drivers.storage-filters".into(),
            key: format!("{key}\\{value}"),
            change: format!(
                "{} removed ({} -> {})",
                names.join(", "),
                list.join(" "),
                if kept.is_empty() {
                    "(empty)".to_string()
                } else {
                    kept.join(" ")
                }
            ),
        });
    }
    Ok(())
}

/// Fast Startup (HiberbootEnabled) turned off.
fn fast_startup_repair(
    system: &Hive,
    ed: &mut HiveEditor,
    cs: &str,
    plan: &mut Plan,
) -> Result<()> {
    let path = format!("{cs}\\Control\\Session Manager\\Power");
    let Some(k) = system.key(&path)? else {
        return Ok(());
    };
    if let Some(v) = k.dword("HiberbootEnabled").filter(|&v| v != 0) {
        let cell = ed
            .key(&path)?
            .ok_or_else(|| Error::Other(format!("fix: {path} not found by the editor")))?;
        ed.set_dword(cell, "HiberbootEnabled", 0, &path)?;
        plan.repairs.push(Repair {
            check: "system.state".into(),
            key: format!("{path}\\HiberbootEnabled"),
            change: format!("{v} -> 0 (Fast Startup off)"),
        });
    }
    Ok(())
}

/// Enabled services of other hypervisors' tools: disabled.
fn conflict_repairs(
    system: &Hive,
    software: &Hive,
    ed: &mut HiveEditor,
    plan: &mut Plan,
) -> Result<()> {
    for c in conflicts(system, software)? {
        if c.kind != ConflictKind::Service || !c.enabled {
            continue;
        }
        let Some(cell) = ed.key(&c.registry_path)? else {
            continue;
        };
        let Some(start) = c.start else {
            continue;
        };
        ed.set_dword(cell, "Start", 4, &c.registry_path)?;
        plan.repairs.push(Repair {
            check: "software.conflicts".into(),
            key: c.registry_path.clone(),
            change: format!(
                "Start {start} -> 4 (disabled; {} left installed)",
                c.suite_name
            ),
        });
    }
    Ok(())
}
