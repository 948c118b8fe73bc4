//! `imgcheck inspect`: what is inside the image, in full (virt-inspector's job): the disk, the
//! Windows identity, boot configuration, drivers, applications and services.

use serde::Serialize;

use crate::disk::PartitionTable;
use crate::error::{Error, Result};
use crate::fs::Volume;
use crate::guest::{Disk, FoundBcd, Registry};
use crate::image::{self, Format, OpenOptions};
use crate::windows::analysis::{
    self, CloudbaseStatus, Conflict, ExtraWarning, OsInfo, StorageFilters, VirtioStatus,
};
use crate::windows::bcd::BcdInfo;

/// Everything `inspect` reports. Field names are a stable interface (JSON).
#[derive(Debug, Serialize)]
pub struct InspectReport {
    pub image: String,
    pub format: Format,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subformat: Option<String>,
    pub virtual_size: u64,
    pub partition_table: Option<PartitionTable>,
    /// Number of the partition holding Windows.
    pub windows_partition: Option<u32>,
    pub os: Option<OsInfo>,
    pub boot: Option<BootInfo>,
    pub virtio: Option<VirtioStatus>,
    /// The storage class filters on the boot path and whether each loads.
    pub storage_filters: Option<StorageFilters>,
    pub cloudbase_init: Option<CloudbaseStatus>,
    pub conflicts: Vec<Conflict>,
    pub warnings: Vec<ExtraWarning>,
    /// Why a part could not be read (a hive, the BCD).
    pub errors: Vec<String>,
}

/// The BCD store and where it was found.
#[derive(Debug, Serialize)]
pub struct BootInfo {
    pub partition: u32,
    pub path: String,
    pub bcd: BcdInfo,
}

/// Inspect the image named by `spec`.
pub fn inspect(spec: &str, options: &OpenOptions) -> Result<InspectReport> {
    let dev = image::open_spec(spec, options)?;
    let disk = Disk::new(dev.clone());
    let mut errors = Vec::new();
    let mut report = InspectReport {
        image: spec.to_string(),
        format: dev.format(),
        subformat: dev.subformat(),
        virtual_size: dev.size(),
        partition_table: None,
        windows_partition: disk.windows().and_then(|w| w.partition_index()),
        os: None,
        boot: None,
        virtio: None,
        storage_filters: None,
        cloudbase_init: None,
        conflicts: Vec::new(),
        warnings: Vec::new(),
        errors: Vec::new(),
    };
    match disk.table() {
        Ok(t) => report.partition_table = Some(t.clone()),
        Err(e) => errors.push(format!("partition table: {e}")),
    }
    match (disk.windows(), disk.registry()) {
        (Some(win), Some(reg)) => {
            match disk.bcd() {
                Some(FoundBcd {
                    partition,
                    path,
                    info: Ok(bcd),
                }) => {
                    report.boot = Some(BootInfo {
                        partition: *partition,
                        path: path.clone(),
                        bcd: bcd.clone(),
                    })
                }
                Some(FoundBcd { info: Err(e), .. }) => errors.push(format!("BCD: {e}")),
                None => errors.push("no BCD store found".into()),
            }
            analyse(&mut report, &mut errors, win, reg);
        }
        _ => errors.push("no partition holds \\Windows\\System32\\config".into()),
    }
    if report.os.is_none() && disk.windows().is_none() && disk.table().is_err() {
        return Err(Error::Other(format!(
            "{spec}: nothing could be inspected: {}",
            errors.join("; ")
        )));
    }
    report.errors = errors;
    Ok(report)
}

/// Every registry analysis, each error noted and the others still run.
fn analyse(report: &mut InspectReport, errors: &mut Vec<String>, win: &Volume, reg: &Registry) {
    let (system, software) = match (&reg.system, &reg.software) {
        (Ok(system), Ok(software)) => (&system.hive, &software.hive),
        (Err(e), _) => return errors.push(format!("SYSTEM hive: {e}")),
        (_, Err(e)) => return errors.push(format!("SOFTWARE hive: {e}")),
    };
    let exists = |p: &str| matches!(win.exists(p), Ok(true));
    let mut note = |r: Result<()>| {
        if let Err(e) = r {
            errors.push(e.to_string());
        }
    };
    note(analysis::os_identity(system, software).map(|v| report.os = Some(v)));
    note(analysis::virtio_storage(system, software, &exists).map(|v| report.virtio = Some(v)));
    let exists_or_err = |p: &str| win.exists(p);
    note(
        analysis::storage_filters(system, software, &exists_or_err)
            .map(|v| report.storage_filters = Some(v)),
    );
    note(analysis::cloudbase_init(system, software).map(|v| report.cloudbase_init = Some(v)));
    note(analysis::conflicts(system, software).map(|v| report.conflicts = v));
    note(analysis::extra_warnings(system, software).map(|v| report.warnings = v));
}
