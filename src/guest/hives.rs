//! The registry hives of the Windows volume, read once per image.
//!
//! A hive is read with the transaction logs Windows left next to it (`SYSTEM.LOG1`,
//! `SYSTEM.LOG2`), which the hive layer replays when the hive is dirty; a check then sees
//! the registry as Windows would at its next boot, not as the last flush left it.

use crate::error::{Error, Result};
use crate::fs::Volume;
use crate::windows::hive::{Hive, MAX_HIVE_SIZE, MAX_LOG_SIZE};

/// Where the hives live on the Windows volume.
pub const CONFIG_DIR: &str = "Windows/System32/config";

/// A hive read from the image, with its transaction logs replayed when they are there.
pub struct LoadedHive {
    pub hive: Hive,
    /// The transaction log files that were found and given to the replay (e.g. "SYSTEM.LOG1").
    pub logs: Vec<String>,
}

impl LoadedHive {
    /// Read `CONFIG_DIR/name` and its logs from `vol`.
    pub fn load(vol: &Volume, name: &str) -> Result<LoadedHive> {
        let path = format!("{CONFIG_DIR}/{name}");
        let primary = vol.read_capped(&path, MAX_HIVE_SIZE as u64)?;
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
        let shown = format!("{}: \\{}", vol.name(), path.replace('/', "\\"));
        let hive = Hive::open(&shown, &primary, &refs)?;
        Ok(LoadedHive {
            hive,
            logs: log_names,
        })
    }
}

/// SYSTEM and SOFTWARE, each read or with the reason it could not be.
pub struct Registry {
    pub system: Result<LoadedHive>,
    pub software: Result<LoadedHive>,
}

/// Why the registry a check needs is not there.
#[derive(Debug)]
pub enum RegistryError<'a> {
    /// SYSTEM could not be read.
    System(&'a Error),
    /// SOFTWARE could not be read.
    Software(&'a Error),
}

impl std::fmt::Display for RegistryError<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RegistryError::System(e) => write!(f, "the SYSTEM hive could not be read: {e}"),
            RegistryError::Software(e) => write!(f, "the SOFTWARE hive could not be read: {e}"),
        }
    }
}

impl Registry {
    pub(super) fn load(win: &Volume) -> Registry {
        Registry {
            system: LoadedHive::load(win, "SYSTEM"),
            software: LoadedHive::load(win, "SOFTWARE"),
        }
    }

    /// Both hives, or the first that could not be read.
    pub fn hives(&self) -> std::result::Result<(&Hive, &Hive), RegistryError<'_>> {
        match (&self.system, &self.software) {
            (Ok(a), Ok(b)) => Ok((&a.hive, &b.hive)),
            (Err(e), _) => Err(RegistryError::System(e)),
            (_, Err(e)) => Err(RegistryError::Software(e)),
        }
    }

    /// The hives that were read, with their names.
    pub fn loaded(&self) -> impl Iterator<Item = &LoadedHive> {
        [&self.system, &self.software].into_iter().flatten()
    }
}
