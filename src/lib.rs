//! imgcheck: offline checks and fast conversion of Windows system-disk images.
//!
//! Layers, bottom up:
//! - [`image`]: container formats (raw, VHD, VMDK, qcow2; VHDX detected and refused) behind one
//!   read-only [`image::BlockDevice`] trait;
//! - [`disk`]: partition tables (MBR, GPT, LDM);
//! - [`fs`]: offline NTFS access;
//! - [`guest`]: the disk as a whole: which partition holds Windows;
//! - [`windows`]: registry hives, BCD, drivers and installed software;
//! - [`checks`]: one check per rule of the migration guide, with stable IDs;
//! - [`report`]: text, JSON and JUnit output;
//! - [`convert`]: writers for every output format;
//! - [`nbd`]: NBD server and client.

pub mod batch;
pub mod checks;
pub mod convert;
pub mod disk;
pub mod error;
pub mod fs;
pub mod guest;
pub mod image;
pub mod nbd;
pub mod repair;
pub mod report;
pub mod windows;

pub use error::{Error, Result};
