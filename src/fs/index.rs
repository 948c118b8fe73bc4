//! Directory indexes: resolving a path component by component and listing a directory.
//!
//! Lookups use the `$I30` index (NTFS's case-insensitive collation, as Windows does); listings
//! drop DOS 8.3 aliases and, unless asked, the metadata files. Index roots are checked before
//! the crate walks them (their record size sizes its allocations), and every walk runs under
//! the volume's read budget.

use std::io::{self, Read, Seek};

use ntfs::indexes::NtfsFileNameIndex;
use ntfs::structured_values::{NtfsFileNamespace, NtfsIndexRoot};
use ntfs::{NtfsAttributeType, NtfsError, NtfsFile};
use serde::Serialize;

use super::budget::{
    guard, Budgeted, MAX_DIR_ENTRIES, MAX_PATH_DEPTH, MAX_RECORD_SIZE, METADATA_BUDGET,
};
use super::volume::{Volume, FIRST_USER_RECORD, ROOT_RECORD};
use crate::error::{Error, Result};

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DirEntry {
    pub name: String,
    pub is_dir: bool,
    /// Size of the unnamed data stream (0 for directories).
    pub size: u64,
    /// MFT record number.
    pub record: u64,
}

/// Split a path on `/` and `\`, dropping empty and "." components and resolving "..".
pub fn split_path(path: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for c in path.split(['/', '\\']) {
        match c {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            c => out.push(c.to_string()),
        }
    }
    out
}

pub(super) fn display_path(parts: &[String]) -> String {
    if parts.is_empty() {
        "\\".to_string()
    } else {
        format!("\\{}", parts.join("\\"))
    }
}

pub(super) fn not_found(name: &str, path: &str) -> Error {
    Error::io(
        format!("{name}: {path}"),
        io::Error::new(io::ErrorKind::NotFound, "no such file or directory"),
    )
}

/// Whether an error from this module means "no such file" (as opposed to a damaged volume).
pub fn is_not_found(e: &Error) -> bool {
    matches!(e, Error::Io { err, .. } if err.kind() == io::ErrorKind::NotFound)
}

impl Volume {
    /// Resolve `path` to an MFT record number and the components as stored.
    pub(super) fn resolve(&self, fs: &mut Budgeted, path: &str) -> Result<(u64, Vec<String>)> {
        let parts = split_path(path);
        if parts.len() > MAX_PATH_DEPTH {
            return Err(Error::Other(format!(
                "{}: path {path} has more than {MAX_PATH_DEPTH} components",
                self.name
            )));
        }
        let mut rec = ROOT_RECORD;
        let mut stored: Vec<String> = Vec::new();
        for (i, comp) in parts.iter().enumerate() {
            let here = display_path(&stored);
            let dir = self.file(fs, rec, &here)?;
            if !dir.is_directory() {
                return Err(Error::io(
                    format!("{}: {}", self.name, display_path(&parts[..i + 1])),
                    io::Error::new(
                        io::ErrorKind::NotADirectory,
                        format!("{here} is not a directory"),
                    ),
                ));
            }
            self.check_index_root(&dir, fs, &here)?;
            let what = format!("looking up {comp:?} in {here}");
            let found = guard(&self.name, &what, || {
                let index = dir.directory_index(fs)?;
                let mut finder = index.finder();
                match NtfsFileNameIndex::find(&mut finder, &self.ntfs, fs, comp) {
                    None => Ok(None),
                    Some(Err(e)) => Err(e),
                    Some(Ok(entry)) => {
                        let r = entry.file_reference().file_record_number();
                        let stored = match entry.key() {
                            Some(Ok(k)) => k.name().to_string_lossy(),
                            _ => comp.clone(),
                        };
                        Ok(Some((r, stored)))
                    }
                }
            })?
            .map_err(|e| self.err(&what, e, fs.budget()))?;
            // The index collates case-insensitively, so `find` may return another name that
            // differs only in case (two POSIX-namespace names, "Foo" and "foo"): an exact match
            // in the directory wins, as ntfs-3g does it.
            let found = match found {
                Some((_, ref s)) if s != comp => {
                    let exact = self
                        .list_record(rec, &here, true, false)?
                        .into_iter()
                        .find(|e| e.name == *comp);
                    exact.map(|e| (e.record, e.name)).or(found)
                }
                f => f,
            };
            match found {
                Some((r, s)) => {
                    rec = r;
                    stored.push(s);
                }
                None => return Err(not_found(&self.name, &display_path(&parts[..i + 1]))),
            }
        }
        Ok((rec, stored))
    }

    /// Refuse index roots whose record size would make the crate allocate without bound.
    fn check_index_root<T: Read + Seek>(
        &self,
        dir: &NtfsFile,
        fs: &mut T,
        here: &str,
    ) -> Result<()> {
        let what = format!("reading the index root of {here}");
        let size = guard(
            &self.name,
            &what,
            || -> std::result::Result<Option<u32>, NtfsError> {
                let mut it = dir.attributes();
                while let Some(item) = it.next(fs) {
                    let item = item?;
                    let a = item.to_attribute()?;
                    if a.ty()? == NtfsAttributeType::IndexRoot && a.name()? == "$I30" {
                        let root = a.resident_structured_value::<NtfsIndexRoot>()?;
                        return Ok(Some(root.index_record_size()));
                    }
                }
                Ok(None)
            },
        )?
        .map_err(|e| self.err(&what, e, METADATA_BUDGET))?;
        match size {
            None => Err(Error::corrupt(
                &self.name,
                format!("{here} is marked as a directory but has no $I30 index root"),
            )),
            Some(s) if !(512..=MAX_RECORD_SIZE).contains(&s) => Err(Error::corrupt(
                &self.name,
                format!("{here}: its index root claims index records of {s} bytes"),
            )),
            Some(_) => Ok(()),
        }
    }

    /// Whether `path` exists (a damaged volume is an error, not `false`).
    pub fn exists(&self, path: &str) -> Result<bool> {
        let mut fs = self.reader(METADATA_BUDGET);
        match self.resolve(&mut fs, path) {
            Ok(_) => Ok(true),
            Err(e) if is_not_found(&e) => Ok(false),
            Err(e) if matches!(&e, Error::Io { err, .. } if err.kind() == io::ErrorKind::NotADirectory) => {
                Ok(false)
            }
            Err(e) => Err(e),
        }
    }

    /// The entries of directory `path` in index order (NTFS's case-insensitive collation, as
    /// `ntfsls` prints them), without DOS 8.3 aliases, "." and the NTFS metadata files.
    pub fn list(&self, path: &str) -> Result<Vec<DirEntry>> {
        self.list_opts(path, false)
    }

    /// Like [`Volume::list`]; `system` also returns the metadata files ($MFT, $Volume, ...).
    pub fn list_opts(&self, path: &str, system: bool) -> Result<Vec<DirEntry>> {
        let mut fs = self.reader(METADATA_BUDGET);
        let (rec, stored) = self.resolve(&mut fs, path)?;
        self.list_record(rec, &display_path(&stored), system, true)
    }

    /// Like [`Volume::list_opts`] but without reading each file's record: sizes come from the
    /// directory index, which Windows refreshes only lazily (fast for huge directories).
    pub fn list_names(&self, path: &str, system: bool) -> Result<Vec<DirEntry>> {
        let mut fs = self.reader(METADATA_BUDGET);
        let (rec, stored) = self.resolve(&mut fs, path)?;
        self.list_record(rec, &display_path(&stored), system, false)
    }

    pub(super) fn list_record(
        &self,
        rec: u64,
        shown: &str,
        system: bool,
        sizes: bool,
    ) -> Result<Vec<DirEntry>> {
        let mut fs = self.reader(METADATA_BUDGET);
        let dir = self.file(&mut fs, rec, shown)?;
        if !dir.is_directory() {
            return Err(Error::io(
                format!("{}: {shown}", self.name),
                io::Error::new(io::ErrorKind::NotADirectory, "not a directory"),
            ));
        }
        self.check_index_root(&dir, &mut fs, shown)?;
        let what = format!("reading the directory index of {shown} (MFT record {rec})");
        let raw = guard(
            &self.name,
            &what,
            || -> std::result::Result<Vec<(String, bool, u64, u64)>, NtfsError> {
                let index = dir.directory_index(&mut fs)?;
                let mut it = index.entries();
                let mut out = Vec::new();
                while let Some(e) = it.next(&mut fs) {
                    let e = e?;
                    let Some(key) = e.key() else { continue };
                    let key = key?;
                    if key.namespace() == NtfsFileNamespace::Dos {
                        continue;
                    }
                    let r = e.file_reference().file_record_number();
                    let name = key.name().to_string_lossy();
                    if name == "." || (!system && r < FIRST_USER_RECORD) {
                        continue;
                    }
                    out.push((name, key.is_directory(), r, key.data_size()));
                    if out.len() > MAX_DIR_ENTRIES {
                        break;
                    }
                }
                Ok(out)
            },
        )?
        .map_err(|e| self.err(&what, e, METADATA_BUDGET))?;
        if raw.len() > MAX_DIR_ENTRIES {
            return Err(Error::corrupt(
                &self.name,
                format!("{shown} has more than {MAX_DIR_ENTRIES} entries (a loop in its index?)"),
            ));
        }
        let mut out = Vec::with_capacity(raw.len());
        for (name, is_dir, record, index_size) in raw {
            // The size in the index is only refreshed on rename, so `ls -l` takes the record's;
            // a record that cannot be read is an error naming it, not the index's stale size.
            let size = if is_dir {
                0
            } else if !sizes {
                index_size
            } else {
                let mut fs = self.reader(METADATA_BUDGET);
                let entry = format!("{}\\{name}", shown.trim_end_matches('\\'));
                let f = self.file(&mut fs, record, &entry)?;
                self.data_facts(&f, &mut fs, &entry)?.size
            };
            out.push(DirEntry {
                name,
                is_dir,
                size,
                record,
            });
        }
        Ok(out)
    }
}
