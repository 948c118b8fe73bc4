//! The guest disk as a whole: the [`Disk`] context every check, `inspect`, `ls`/`cat` and the
//! reports work from.
//!
//! Why a context: deciding "which partition holds Windows", "where is the BCD" and "which
//! volume boots" means probing and opening partitions. Written once per question, that was
//! five loops (find Windows, the default `ls` volume, the partition summary, the BCD search,
//! the verify inspection), each probing and opening the same partitions again and each with
//! its own idea of which failures to skip. Here the partition table is read once, every data
//! partition is probed and opened once ([`Part`]), and the questions are answered from that:
//! the Windows volume ([`Disk::windows`]), the boot (active) volume ([`Disk::active`]), the BCD
//! ([`Disk::bcd`]) and the registry hives ([`Disk::registry`]), the last two read on first use
//! and kept.
//!
//! Layering: this sits above [`crate::disk`] (the table), [`crate::fs`] (one volume) and
//! [`crate::windows`] (hive bytes), which know nothing of each other's questions; the checks
//! sit above it.
//!
//! Errors stay typed ([`crate::Error`]) and stay where they happened: a partition that does
//! not open keeps its error in its [`Part`], so a check can say why, and an unreadable table is
//! kept as the table's result (verify reports it; `ls`/`cat` use [`Disk::open`], for which it
//! is an error).

mod boot;
pub mod hives;

use std::sync::{Arc, OnceLock};

use serde::Serialize;

pub use boot::{FoundBcd, BCD_PATHS};
pub use hives::{LoadedHive, Registry, RegistryError, CONFIG_DIR};

use crate::disk::{self, Partition, PartitionTable};
use crate::error::{Error, Result};
use crate::fs::{self, FsKind, Hibernation, Volume, VolumeInfo};
use crate::image::BlockDevice;

/// Path whose presence marks the Windows system partition.
pub const WINDOWS_CONFIG_DIR: &str = CONFIG_DIR;

/// One data partition, probed once and (when probing worked) opened once.
pub struct Part {
    /// The table entry.
    pub entry: Partition,
    /// What its boot sector says it holds.
    pub kind: Result<FsKind>,
    /// The volume, or why it does not open as NTFS; `None` when it could not even be probed.
    pub volume: Option<Result<Volume>>,
    /// Whether `\Windows\System32\config` exists on it (`None` when it did not open).
    pub has_windows: Option<Result<bool>>,
}

impl Part {
    fn probe(dev: &Arc<dyn BlockDevice>, table: &PartitionTable, p: &Partition) -> Part {
        let kind = fs::probe(dev, p.start, p.size);
        let volume = kind
            .is_ok()
            .then(|| Volume::open_partition(dev, table, p.index));
        let has_windows = match &volume {
            Some(Ok(v)) => Some(v.exists(WINDOWS_CONFIG_DIR)),
            _ => None,
        };
        Part {
            entry: p.clone(),
            kind,
            volume,
            has_windows,
        }
    }

    /// The volume, when the partition is NTFS and opened.
    pub fn ntfs(&self) -> Option<&Volume> {
        match (&self.kind, &self.volume) {
            (Ok(FsKind::Ntfs), Some(Ok(v))) => Some(v),
            _ => None,
        }
    }

    fn is_windows(&self) -> bool {
        self.ntfs().is_some() && matches!(self.has_windows, Some(Ok(true)))
    }
}

/// What one image holds: its table, its partitions and where Windows is.
pub struct Disk {
    dev: Arc<dyn BlockDevice>,
    table: Result<PartitionTable>,
    /// Data partitions in disk order (by start).
    parts: Vec<Part>,
    /// Index in `parts` of the Windows volume.
    windows: Option<usize>,
    bcd: OnceLock<Option<FoundBcd>>,
    registry: OnceLock<Option<Registry>>,
}

impl Disk {
    /// Read the table and probe and open every data partition. Nothing here fails: an
    /// unreadable table or partition is kept as its error.
    pub fn new(dev: Arc<dyn BlockDevice>) -> Disk {
        let table = disk::analyze(&dev);
        Disk::with_table(dev, table)
    }

    /// Like [`Disk::new`], for commands that cannot go on without a partition table.
    pub fn open(dev: Arc<dyn BlockDevice>) -> Result<Disk> {
        let table = disk::analyze(&dev)?;
        Ok(Disk::with_table(dev, Ok(table)))
    }

    fn with_table(dev: Arc<dyn BlockDevice>, table: Result<PartitionTable>) -> Disk {
        let parts: Vec<Part> = match &table {
            Ok(t) => t
                .data_partitions()
                .into_iter()
                .map(|p| Part::probe(&dev, t, p))
                .collect(),
            Err(_) => Vec::new(),
        };
        let windows = choose_windows(&parts, table.as_ref().ok());
        Disk {
            dev,
            table,
            parts,
            windows,
            bcd: OnceLock::new(),
            registry: OnceLock::new(),
        }
    }

    pub fn device(&self) -> &Arc<dyn BlockDevice> {
        &self.dev
    }

    /// The partition table, or why it could not be read.
    pub fn table(&self) -> std::result::Result<&PartitionTable, &Error> {
        self.table.as_ref()
    }

    /// The data partitions, in disk order.
    pub fn parts(&self) -> &[Part] {
        &self.parts
    }

    /// The data partition numbered `index`.
    pub fn part(&self, index: u32) -> Option<&Part> {
        self.parts.iter().find(|p| p.entry.index == index)
    }

    /// The first partition in table order (lowest number) that holds data.
    pub fn first(&self) -> Option<&Part> {
        let index = self.table.as_ref().ok()?.first_partition()?.index;
        self.part(index)
    }

    /// The volume holding `\Windows\System32\config`: the first partition's when it has it,
    /// else the first in disk order that does.
    pub fn windows(&self) -> Option<&Volume> {
        self.parts[self.windows?].ntfs()
    }

    /// The active (BIOS-bootable) data partition, the first in disk order.
    pub fn active(&self) -> Option<&Part> {
        self.parts.iter().find(|p| p.entry.bootable)
    }

    /// The BCD store: on the active partition first, then the others (read on first use).
    pub fn bcd(&self) -> Option<&FoundBcd> {
        self.bcd
            .get_or_init(|| boot::find_bcd(&self.parts))
            .as_ref()
    }

    /// SYSTEM and SOFTWARE from the Windows volume, transaction logs replayed (read on first
    /// use); `None` without Windows.
    pub fn registry(&self) -> Option<&Registry> {
        self.registry
            .get_or_init(|| self.windows().map(Registry::load))
            .as_ref()
    }

    /// What each partition holds, for reports and tests. Nothing here is an error; each
    /// partition carries its own outcome.
    pub fn scan(&self) -> Vec<PartitionFs> {
        self.parts.iter().map(PartitionFs::of).collect()
    }

    /// The volume `ls` and `cat` work on: partition `index` (0: the whole disk), or by default
    /// the Windows partition, else the first NTFS partition that opens, else the whole disk
    /// when it is an NTFS volume with no partition table.
    pub fn into_volume(mut self, index: Option<u32>) -> Result<Volume> {
        let table = self.table?;
        let take = |parts: &mut Vec<Part>, i: usize| -> Result<Volume> {
            let p = parts.swap_remove(i);
            match (p.volume, p.kind) {
                (Some(v), _) => v,
                (None, Err(e)) => Err(e),
                (None, Ok(_)) => unreachable!("a probed partition is opened"),
            }
        };
        match index {
            Some(0) => return fs::open_index(&self.dev, &table, 0),
            Some(n) => {
                return match self.parts.iter().position(|p| p.entry.index == n) {
                    Some(i) => take(&mut self.parts, i),
                    // Not a data partition: opening it says why (no such number, extended).
                    None => Volume::open_partition(&self.dev, &table, n),
                };
            }
            None => {}
        }
        if let Some(i) = self.windows {
            return take(&mut self.parts, i);
        }
        let ntfs = |p: &Part| matches!(p.kind, Ok(FsKind::Ntfs));
        if let Some(i) = self
            .parts
            .iter()
            .position(|p| ntfs(p) && p.ntfs().is_some())
        {
            return take(&mut self.parts, i);
        }
        if let Some(i) = self.parts.iter().position(ntfs) {
            return take(&mut self.parts, i);
        }
        // No NTFS anywhere: the first partition's own error says what it is (BitLocker, FAT...).
        if let Some(first) = table.first_partition() {
            if let Some(i) = self.parts.iter().position(|p| p.entry.index == first.index) {
                take(&mut self.parts, i)?;
            }
        }
        if table.partitions.is_empty() && table.boot_sector_at_0.as_deref() == Some("NTFS") {
            return fs::open_index(&self.dev, &table, 0);
        }
        Err(Error::Other(format!(
            "{}: no NTFS partition found ({} partition table, {} partitions)",
            self.dev.name(),
            table.kind,
            table.data_partitions().len()
        )))
    }
}

/// The Windows partition: the first partition when it holds Windows, else the first in disk
/// order that does.
fn choose_windows(parts: &[Part], table: Option<&PartitionTable>) -> Option<usize> {
    let first = table?.first_partition().map(|p| p.index);
    parts
        .iter()
        .position(|p| Some(p.entry.index) == first && p.is_windows())
        .or_else(|| parts.iter().position(Part::is_windows))
}

/// What one partition holds, as [`Disk::scan`] found it.
#[derive(Debug, Clone, Serialize)]
pub struct PartitionFs {
    /// Partition number (as in the [`PartitionTable`]).
    pub index: u32,
    pub start: u64,
    pub size: u64,
    /// What the boot sector says; `None` when even that could not be read.
    pub fs: Option<FsKind>,
    /// Volume facts when it opened as NTFS.
    pub volume: Option<VolumeInfo>,
    /// Why it did not open (or could not be probed).
    pub error: Option<String>,
    /// `\Windows\System32\config` exists on it.
    pub windows: bool,
    /// A hibernated Windows (hiberfil.sys signature), when it opened.
    pub hibernation: Option<Hibernation>,
}

impl PartitionFs {
    fn of(p: &Part) -> PartitionFs {
        let mut r = PartitionFs {
            index: p.entry.index,
            start: p.entry.start,
            size: p.entry.size,
            fs: p.kind.as_ref().ok().cloned(),
            volume: None,
            error: p.kind.as_ref().err().map(|e| e.to_string()),
            windows: false,
            hibernation: None,
        };
        match &p.volume {
            Some(Ok(v)) => {
                r.volume = Some(v.info().clone());
                match &p.has_windows {
                    Some(Ok(w)) => r.windows = *w,
                    Some(Err(e)) => r.error = Some(e.to_string()),
                    None => {}
                }
                match v.hibernation() {
                    Ok(h) => r.hibernation = h,
                    Err(e) => {
                        r.error.get_or_insert(e.to_string());
                    }
                }
            }
            Some(Err(e)) => r.error = Some(e.to_string()),
            None => {}
        }
        r
    }
}
