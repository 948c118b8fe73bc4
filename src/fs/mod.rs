//! Offline NTFS access: open a partition of a guest disk and read files by path.
