//! NBD: serve an image read-only, and read `nbd://` sources.
