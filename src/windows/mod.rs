//! Windows inside the image: registry hives, the BCD store, drivers and installed software.
//!
//! Everything here works on hive bytes (and, for driver files, a callback that says whether a
//! file exists on the Windows volume), so it is testable without a disk image:
//! - [`hive`]: [`Hive`], a case-insensitive view of a regf hive, with log replay (notatin);
//! - [`system`]: facts read from SYSTEM (control set, services, filters, devices, settings);
//! - [`software`]: facts read from SOFTWARE (version, applications, pending reboot);
//! - [`bcd`]: the BCD store, boot manager, default loader, firmware;
//! - [`analysis`]: the results the checks are built on: [`os_identity`], [`virtio_storage`],
//!   [`cloudbase_init`], [`conflicts`], [`extra_warnings`].

pub mod analysis;
pub mod bcd;
pub mod hive;
pub mod software;
pub mod system;

pub use analysis::*;
pub use bcd::{bcd_boot, BcdInfo, Firmware};
pub use hive::{Hive, Key, RegData, ReplayInfo, Value};
