//! Offline repair (`imgcheck fix`): findings of `verify` that one registry change can mend,
//! planned, applied to a copy of the guest disk, and checked again.
//!
//! - [`hive_edit`]: in-place edits of a registry hive (values rewritten in their cells, keys
//!   unlinked and freed), leaving a clean, consistent base block;
//! - [`overlay`]: the source disk seen with replaced byte ranges;
//! - [`fix`]: the plan (what is repaired, what is refused and why).

pub mod fix;
pub mod hive_edit;
pub mod overlay;
