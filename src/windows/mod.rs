//! Windows inside the image: registry hives, the BCD store, drivers and installed software.
//!
//! Everything here works on hive bytes (and, for driver files, a callback that says whether a
//! file exists on the Windows volume), so it is testable without a disk image and fuzzable:
//! - [`hive`]: [`Hive`], a case-insensitive view of a regf hive, with log replay (notatin);
//! - [`system`]: facts read from SYSTEM (control set, services, filters, devices, settings);
//! - [`software`]: facts read from SOFTWARE (version, applications, pending reboot);
//! - [`bcd`]: the BCD store, boot manager, default loader, firmware;
//! - one file per analysis a check or report is built on: [`os_identity`], [`virtio`],
//!   [`storage_filters`], [`cloudbase`], [`conflicts`], [`system_state`]; [`paths`] maps an
//!   ImagePath to a file;
//! - [`analysis`]: all of them at once, and the names they are re-exported under.
//!
//! Analyses propagate every hive error with `?`: a key that cannot be read (a damaged hive)
//! is an error naming the hive and the key, never "absent", so no check reports "not
//! installed" or "no conflicts" from a registry it could not read.

pub mod analysis;
pub mod bcd;
pub mod cloudbase;
pub mod conflicts;
pub mod hive;
pub mod os_identity;
pub mod paths;
pub mod software;
pub mod storage_filters;
pub mod system;
pub mod system_state;
pub mod virtio;

pub use analysis::*;
pub use bcd::{bcd_boot, BcdInfo, Firmware};
pub use hive::{Hive, Key, RegData, ReplayInfo, Value};
