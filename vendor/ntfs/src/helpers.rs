// Copyright 2021 Colin Finck <colin@reactos.org>
// SPDX-License-Identifier: MIT OR Apache-2.0

macro_rules! iter_try {
    ($e:expr) => {
        match $e {
            Ok(x) => x,
            Err(e) => return Some(Err(e.into())),
        }
    };
}

#[cfg(test)]
pub mod tests {
    use std::fs::File;
    use std::io::{Cursor, Read, Seek, SeekFrom};

    use crate::file::NtfsFile;
    use crate::indexes::NtfsFileNameIndex;
    use crate::ntfs::Ntfs;

    pub fn testfs1() -> Cursor<Vec<u8>> {
        let mut buffer = Vec::new();
        File::open("testdata/testfs1")
            .unwrap()
            .read_to_end(&mut buffer)
            .unwrap();
        Cursor::new(buffer)
    }

    /// A volume made by imgcheck's scripts/make-aged-ntfs.sh (libntfs-3g; see PATCHES.md),
    /// stored as testdata/NAME.img.xz.
    pub fn aged_image(name: &str) -> Vec<u8> {
        let f = File::open(format!("testdata/{name}.img.xz")).unwrap();
        let mut data = Vec::new();
        xz2::read::XzDecoder::new(f).read_to_end(&mut data).unwrap();
        data
    }

    /// What make-aged-ntfs.sh writes into its files: 512-byte blocks starting "NAME block N".
    pub fn blocks(name: &str, size: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(size + 512);
        let mut i = 0;
        while out.len() < size {
            let mut b = format!("{name} block {i:08}").into_bytes();
            b.resize(511, b'.');
            b.push(b'\n');
            out.extend_from_slice(&b);
            i += 1;
        }
        out.truncate(size);
        out
    }

    /// Open `path` ('/'-separated) from the root directory.
    pub fn open_path<'n, T: Read + Seek>(ntfs: &'n Ntfs, fs: &mut T, path: &str) -> NtfsFile<'n> {
        let mut file = ntfs.root_directory(fs).unwrap();
        for part in path.split('/').filter(|p| !p.is_empty()) {
            let index = file.directory_index(fs).unwrap();
            let mut finder = index.finder();
            let entry = NtfsFileNameIndex::find(&mut finder, ntfs, fs, part)
                .unwrap_or_else(|| panic!("{part} of {path} not found"))
                .unwrap();
            let next = entry.to_file(ntfs, fs).unwrap();
            file = next;
        }
        file
    }

    /// A reader that counts the reads it serves and the bytes they return.
    pub struct Counting<T> {
        pub inner: T,
        pub reads: u64,
        pub bytes: u64,
    }

    impl<T> Counting<T> {
        pub fn new(inner: T) -> Self {
            Self {
                inner,
                reads: 0,
                bytes: 0,
            }
        }
    }

    impl<T: Read> Read for Counting<T> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let n = self.inner.read(buf)?;
            self.reads += 1;
            self.bytes += n as u64;
            Ok(n)
        }
    }

    impl<T: Seek> Seek for Counting<T> {
        fn seek(&mut self, pos: SeekFrom) -> std::io::Result<u64> {
            self.inner.seek(pos)
        }
    }
}
