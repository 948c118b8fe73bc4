//! Offline repair (`imgcheck fix`): findings of `verify` that one registry change can mend,
//! planned, applied to a copy of the guest disk, and checked again.
//!
//! - [`hive_edit`]: in-place edits of a registry hive (values rewritten in their cells, keys
//!   unlinked and freed), leaving a clean, consistent base block.

pub mod hive_edit;
