//! One module per command whose code is more than a few lines; `main.rs` parses and dispatches.

pub mod convert;
pub mod fix;
