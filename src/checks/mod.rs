//! One check per rule of the migration guide, each with a stable ID.
